"""`ssh`, `delete-vm` and `vms`: an admin's look at the VMs of this installation."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime

from lando_ssh.commands.common import EXIT_INFRA, EXIT_OK, journal_of
from lando_ssh.config import Config
from lando_ssh.errors import BadInput, JobConflict
from lando_ssh.model import ACTIVE_STATES, now


def ssh_argv(base: list[str], words: list[str], where: str | None = None) -> list[str]:
    """`ssh` for a shell (no words) or, like OpenSSH's `ssh host CMD...`, the words joined with spaces
    for the remote shell; `where`: the directory both start in (a job's own on a shared pool VM). `base` is
    `openssh_argv`, the host last: `--` before it, so a command that starts with `-` is not read as one of
    ssh's options."""
    cd = f"cd {shlex.quote(where)} && " if where else ""
    if not words:  # an interactive shell: ssh may ask (a passphrase, a host's change) on the terminal
        at = base.index("BatchMode=yes")
        interactive = [*base[:at - 1], *base[at + 1:]]
        if not cd:
            return interactive
        return [*interactive[:-1], "--", interactive[-1], cd + 'exec "${SHELL:-/bin/sh}" -l']
    return [*base[:-1], "--", base[-1], cd + " ".join(words)]


def cmd_ssh(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.engine.pooled import job_dir
    from lando_ssh.keys import JobKeys
    from lando_ssh.remote import Endpoint, openssh_argv

    job = journal_of(config, reading=True).get(args.job_id)
    if not job.vm or not job.vm.address or job.vm.deleted:
        gone = f" (it was deleted {job.vm.deleted.isoformat(timespec='seconds')})" if job.vm and job.vm.deleted else ""
        raise JobConflict(f"job {job.id} has no VM to log in to{gone}")
    keys = JobKeys(config.keys_dir, job.id)
    key = job.vm.key_path or keys.private_path  # a pool VM's own key, else the job's
    if not os.path.exists(key):
        raise JobConflict(f"job {job.id}'s SSH key is gone ({key})")
    keys.pin_host(job.vm.address, job.vm.port, job.vm.host_keys)
    ep = Endpoint(job.vm.address, job.vm.port, job.vm.user or "root", key, job.vm.host_keys, keys.known_hosts_path)
    argv = ssh_argv(openssh_argv(ep, tty=not args.cmd and sys.stdin.isatty()), list(args.cmd), job_dir(job))
    os.execvp(argv[0], argv)  # noqa: S606 (argv, no shell here: the remote shell reads the words, as with ssh)
    return EXIT_INFRA  # not reached


def cmd_delete_vm(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.cloud import open_cloud
    from lando_ssh.engine import Engine

    cloud = open_cloud(config)
    try:
        name = Engine(config, journal_of(config), cloud).delete_kept_vm(args.job_id)
    finally:
        cloud.close()
    print(f"lando-ssh: deleted VM {name} of job {args.job_id}", file=sys.stderr)
    return EXIT_OK


def cmd_vms(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.cloud import META_JOB_ID, META_POOL_VM, open_cloud
    from lando_ssh.commands import pool
    from lando_ssh.installation import tagged_vms

    cloud = open_cloud(config)
    try:
        vms = [vm for group in tagged_vms(config, cloud) for vm in group]  # another installation's are not listed
    finally:
        cloud.close()
    journal = journal_of(config, reading=True)
    records = pool.pool_records(config)
    by_record = {str(r.id): r for r in records}
    rows = []
    for vm in vms:
        record = by_record.get(vm.metadata.get(META_POOL_VM, ""))
        tag = vm.metadata.get(META_JOB_ID) or ""
        job_id = int(tag) if tag.isdigit() else None
        state = step = None
        activity = "idle"
        if record is not None:
            activity = pool.activity(record)
        elif META_POOL_VM in vm.metadata:
            activity = "no record"  # a pool VM no record owns: the pool deletes it
        elif job_id is not None:
            try:
                j = journal.get(job_id)
                state, step = j.state.value, j.step.value or None
                activity = "busy" if j.state in ACTIVE_STATES and j.vm is not None and j.vm.id == vm.id else "idle"
            except BadInput:
                activity = "no job"  # a job the store does not know: the sweep deletes its VM
        age = (now() - vm.created).total_seconds() if vm.created else None
        rows.append({"name": vm.name, "id": vm.id, "project": vm.project, "job": job_id, "job_state": state,
                     "job_step": step, "activity": activity, "status": vm.status,
                     "flavor": vm.flavor.name if vm.flavor else None, "address": vm.address, "port": vm.port,
                     "age_seconds": round(age) if age is not None else None, **pool.pool_fields(record)})
    for record in pool.unlisted(records, {vm.id for vm in vms}):
        age = (now() - record.created).total_seconds()
        rows.append({"name": record.name, "id": record.cloud_id, "project": record.project, "job": None,
                     "job_state": None, "job_step": None, "activity": pool.activity(record), "status": None,
                     "flavor": record.flavor, "address": record.address, "port": record.port,
                     "age_seconds": round(age), **pool.pool_fields(record)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'NAME':<28} {'JOB':>5} {'STATE':<5} {'STEP':<4} {'USE':<6} {'STATUS':<7} {'FLAVOR':<10} "
          f"{'ADDRESS':<21} {'AGE':<7} {'FREE':<12} {'IDLE':<6} SERVED")
    for r in rows:
        where = f"{r['address']}:{r['port']}" if r["address"] else "-"
        seconds = f"{r['age_seconds']}s" if r["age_seconds"] is not None else "-"
        free = f"{r['free_vcpus']}c/{r['free_ram_mb']}M" if r["free_vcpus"] is not None else "-"
        idle = f"{(now() - datetime.fromisoformat(r['idle_since'])).total_seconds():.0f}s" if r["idle_since"] else "-"
        served = r["jobs_served"] if r["jobs_served"] is not None else "-"
        print(f"{r['name']:<28} {r['job'] or '-':>5} {r['job_state'] or '-':<5} {r['job_step'] or '-':<4} "
              f"{r['activity']:<6} {r['status'] or '-':<7} {r['flavor'] or '-':<10} {where:<21} {seconds:<7} "
              f"{free:<12} {idle:<6} {served}")
    return EXIT_OK
