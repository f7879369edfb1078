"""The VM pool from an admin's side: what `vms` shows of each pool VM, and `drain VM`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from lando_ssh.commands.common import EXIT_OK, store_missing
from lando_ssh.config import Config
from lando_ssh.errors import JobConflict
from lando_ssh.pool.model import LIVE, PoolState, PoolVm
from lando_ssh.pool.store import VmStore, find_vm, open_vm_store


def pool_records(config: Config) -> list[PoolVm]:
    """The pool's live VM records (none when the job store does not exist yet: a look creates nothing)."""
    if store_missing(config):
        return []
    store = open_vm_store(config.store_url)
    try:
        return store.list(LIVE)
    finally:
        store.close()


def pool_fields(vm: PoolVm | None) -> dict[str, Any]:
    """What `vms` adds to a VM's row: its pool state and use (None for a VM outside the pool: a job's own)."""
    if vm is None:
        return {"pool_state": None, "jobs": [], "idle_since": None, "free_vcpus": None, "free_ram_mb": None,
                "jobs_served": None, "pool_reason": None}
    free = vm.free
    return {"pool_state": vm.state.value, "jobs": vm.job_ids,
            "idle_since": vm.idle_since.isoformat(timespec="seconds") if vm.idle_since else None,
            "free_vcpus": free.vcpus, "free_ram_mb": free.ram_mb, "jobs_served": vm.served,
            "pool_reason": vm.reason or None}


def activity(vm: PoolVm) -> str:
    """The USE column: the pool state, with the jobs when busy ("busy:3,4")."""
    if vm.state == PoolState.BUSY:
        return "busy:" + ",".join(str(j) for j in vm.job_ids)
    return vm.state.value


def unlisted(records: Iterable[PoolVm], listed_ids: set[str]) -> list[PoolVm]:
    """Records of VMs the cloud does not list (yet): being asked for, or deleted behind the pool's back."""
    return [vm for vm in records if vm.cloud_id not in listed_ids]


def cmd_drain(config: Config, args: argparse.Namespace) -> int:
    store: VmStore = open_vm_store(config.store_url)
    try:
        vm = find_vm(store, args.vm)
        if vm.state in (PoolState.DELETING, PoolState.DELETED):
            raise JobConflict(f"VM {vm.name} is {vm.state.value} already")
        vm = store.update(vm.id, lambda v: v.drain("lando-ssh drain"))
    finally:
        store.close()
    left = f"once its jobs {', '.join(map(str, vm.job_ids))} are done" if vm.jobs else "now: it holds no job"
    print(f"lando-ssh: VM {vm.name} is draining: no new job goes there, and the pool deletes it {left}",
          file=sys.stderr)
    return EXIT_OK


def pool_usage_command(config: Config, since: str | None, until: str | None, by: str, form: str) -> int:
    """`lando-ssh usage --pool`: the pool VMs' hours per user or project, jobs' shares and idle time apart."""
    import csv
    import io
    import json

    from lando_ssh.errors import BadInput
    from lando_ssh.model import now
    from lando_ssh.pool.accounting import pool_usage, pool_uses
    from lando_ssh.store import open_store
    from lando_ssh.usage import configured_project, group_of, parse_when

    if by not in ("user", "project"):
        raise BadInput(f"usage --pool sums by user or project, not {by}")
    at = now()
    start = parse_when(since, at) if since else None
    end = parse_when(until, at) if until else None
    if store_missing(config):
        records, jobs = [], {}
    else:
        vm_store = open_vm_store(config.store_url)
        job_store = open_store(config.store_url)
        try:
            records = vm_store.list()
            jobs = {j.id: j for j in job_store.list()}
        finally:
            vm_store.close()
            job_store.close()
    project = configured_project(config)

    def group(job_id: int) -> str:
        job = jobs.get(job_id)
        return group_of(job, by, project) if job is not None else "-"

    rows = pool_usage(pool_uses(records, at=at, since=start, until=end), group, by)
    columns = ("group", "jobs", "job_vm_hours", "job_core_hours", "idle_vm_hours", "idle_core_hours")
    if form == "json":
        print(json.dumps([r.to_dict() for r in rows[:-1]], indent=2))
    elif form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow((by, *columns[1:]))
        for r in rows[:-1]:
            writer.writerow(r.to_dict()[c] for c in columns)
        print(out.getvalue(), end="")
    else:
        width = max([len(by), *(len(r.group) for r in rows)]) + 1
        print(f"pool VM usage, by {by}: jobs' shares (by vCPUs x time) and idle time (keep-alive, boots, drains)")
        print(f"{by.upper():<{width}} {'JOBS':>5} {'JOB-VM-H':>10} {'JOB-CORE-H':>11} {'IDLE-VM-H':>10} "
              f"{'IDLE-CORE-H':>12}")
        for r in rows:
            print(f"{r.group:<{width}} {r.jobs:>5} {r.job_vm_hours:>10.3f} {r.job_core_hours:>11.3f} "
                  f"{r.idle_vm_hours:>10.3f} {r.idle_core_hours:>12.3f}")
    return EXIT_OK
