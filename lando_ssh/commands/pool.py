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
