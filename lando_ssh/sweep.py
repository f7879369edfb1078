"""The orphan sweep: delete what this installation made in the cloud that no live job owns.

After a crash, a failed delete, or a job deleted in the job API, a VM (and its volume, floating
IP, port) can outlive its job. `sweep()` finds every VM tagged as ours (metadata
`managed_by: lando-ssh`, `lando_installation: <cloud.installation_id>` and this data dir's
`lando_installation_token`: see installation.py) and deletes it when it is older than the
grace period and its job does not own it:

- the VM names no job, or the job is not in the job store;
- the job was deleted (state D);
- the job's record says this VM was deleted (a delete that failed), or names another VM.

A VM made before tokens (the id alone) may be another installation's sharing the id and
counting jobs the same way: it is deleted only for what this installation's record of it says
(the record names it by id and marks it deleted, or its job was deleted or ended without
keeping it), never for a job that is missing or names another VM.

A VM the job's record names and does not mark deleted is live, whatever the job's state (an
errored job's VM kept with `keep_vm_on_error` is live). The VMs are listed before the jobs are
read, and a job records its VM's name before asking the cloud for it, so a VM being created
is never mistaken for an orphan; the grace period covers clocks and clouds that list late.
Then, when the driver can (OpenStack: `delete_orphans`), volumes, floating IPs and ports
tagged as ours that no server owns any more; and the private keys in `<data_dir>/keys/` of
jobs that are gone or ended without a VM. Nothing not tagged as ours is ever touched.

The daemon calls `sweep(config, cloud, store)` every `sweep.interval` seconds; `lando-ssh
sweep [--dry-run] [--grace SECONDS]` runs it once.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from lando_ssh.cloud import META_JOB_ID, Cloud, VmInfo
from lando_ssh.config import Config
from lando_ssh.errors import LandoError, UnknownJob
from lando_ssh.installation import ours, tagged_vms
from lando_ssh.model import FINAL_STATES, Job, JobState, now

log = logging.getLogger(__name__)


class _Jobs(Protocol):
    def get(self, job_id: int) -> Job: ...


@dataclass
class Swept:
    """One resource the sweep deleted (or, in a dry run, would delete)."""

    kind: str  # vm | volume | floating ip | port | key
    id: str
    name: str
    job_id: int | None
    why: str  # one sentence: why no live job owns it
    age_seconds: float | None = None
    deleted: bool = False  # False in a dry run, or when the delete failed (then `error` says why)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(config: Config, cloud: Cloud, store: _Jobs, dry_run: bool = False,
          grace: float | None = None) -> list[Swept]:
    """Delete (or with `dry_run` only list) this installation's resources no live job owns and
    older than `grace` seconds (default `sweep.grace`). Returns what was found, in order."""
    grace = config.sweep.grace if grace is None else grace
    found: list[Swept] = []
    mine, untokened = tagged_vms(config, cloud)  # listed before the jobs are read: see the module's doc
    at = now()
    for vm in [*mine, *untokened]:
        age = (at - vm.created).total_seconds() if vm.created else None
        if age is not None and age < grace:
            continue
        job_id, why = _orphan_vm(vm, store, recorded_only=vm not in mine)
        if why is None:
            continue
        item = Swept("vm", vm.id, vm.name, job_id, why, _round(age))
        if not dry_run:
            try:
                cloud.delete_vm(vm.id)
                item.deleted = True
            except LandoError as e:
                item.error = str(e)
        found.append(item)
    found.extend(_other_resources(config, cloud, grace, dry_run))
    found.extend(_keys(config, store, grace, dry_run))
    for item in found:
        what = f"{item.kind} {item.name}" + (f" ({item.id})" if item.id != item.name else "")
        if item.error:
            log.warning("sweep: could not delete %s: %s (%s)", what, item.error, item.why)
        elif item.deleted:
            log.info("sweep: deleted %s: %s", what, item.why)
        else:
            log.info("sweep: would delete %s: %s", what, item.why)
    return found


def _orphan_vm(vm: VmInfo, store: _Jobs, recorded_only: bool = False) -> tuple[int | None, str | None]:
    """(its job id, why no live job owns the VM) or (job id, None) when its job owns it. `recorded_only`
    (a VM made before tokens): (job id, None) unless the job's record names this VM by its id."""
    tag = vm.metadata.get(META_JOB_ID, "")
    if not tag.isdigit():
        return None, None if recorded_only else "it is tagged as ours but names no job"
    job_id = int(tag)
    try:
        job = store.get(job_id)
    except UnknownJob:
        return job_id, None if recorded_only else f"job {job_id} is not in the job store"
    rec = job.vm
    if recorded_only and (rec is None or rec.id != vm.id):
        return job_id, None
    if job.state == JobState.DELETED:
        return job_id, f"job {job_id} was deleted"
    if rec is None:
        return job_id, f"job {job_id} ({job.state.name.lower()}) has no VM recorded"
    same = rec.id == vm.id if rec.id else rec.name == vm.name  # no id yet: it was asked for, by name
    if not same:
        return job_id, f"job {job_id}'s VM is {rec.id or rec.name}, not this one"
    if rec.deleted is not None:
        return job_id, (f"job {job_id} ({job.state.name.lower()}) recorded this VM as deleted at "
                        f"{rec.deleted.isoformat(timespec='seconds')}")
    if job.state in FINAL_STATES and not job.facts.get("vm_kept"):  # e.g. its delete failed
        return job_id, f"job {job_id} is {job.state.name.lower()} and its VM is not kept"
    return job_id, None


_ORPHAN_TEXT = re.compile(r"^(volume|floating ip|port) (\S+)(?: \(of server (\S+)\))?$")


def _other_resources(config: Config, cloud: Cloud, grace: float, dry_run: bool) -> list[Swept]:
    """Volumes, floating IPs and ports no server owns, where the driver can find them."""
    delete_orphans = getattr(cloud, "delete_orphans", None)
    if delete_orphans is None:
        return []  # the local cloud makes none
    if dry_run:
        log.info("sweep: a dry run does not list orphaned volumes, floating IPs and ports (the %s driver "
                 "finds and deletes them in one pass)", cloud.name)
        return []
    try:
        texts = delete_orphans(ours(config), min_age=grace)
    except LandoError as e:
        return [Swept("volume/floating ip/port", "-", "-", None, "no server owns them", error=str(e))]
    out = []
    for text in texts:
        m = _ORPHAN_TEXT.match(text)
        kind, rid, server = (m.group(1), m.group(2), m.group(3)) if m else ("resource", text, None)
        why = f"its server {server} is gone" if server else "it was never attached to a server"
        out.append(Swept(kind, rid, rid, None, why, deleted=True))
    return out


_KEY_FILE = re.compile(r"^job-(\d+)$")


def _keys(config: Config, store: _Jobs, grace: float, dry_run: bool) -> list[Swept]:
    """Private keys (and their .pub and .known_hosts) of jobs that are gone or ended without a VM."""
    try:
        names = sorted(os.listdir(config.keys_dir))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _KEY_FILE.match(name)
        if not m:
            continue
        path = os.path.join(config.keys_dir, name)
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            continue
        if age < grace:
            continue
        job_id = int(m.group(1))
        try:
            job = store.get(job_id)
        except UnknownJob:
            why = f"job {job_id} is not in the job store"
        else:
            vm_gone = job.vm is None or job.vm.deleted is not None
            if job.state == JobState.DELETED:
                why = f"job {job_id} was deleted"
            elif job.state in FINAL_STATES and vm_gone:
                why = f"job {job_id} ended ({job.state.name.lower()}) and has no VM"
            else:
                continue
        item = Swept("key", path, name, job_id, why, _round(age))
        if not dry_run:
            for p in (path, path + ".pub", path + ".known_hosts"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    item.error = f"cannot remove {p}: {e.strerror}"
            item.deleted = item.error is None
        out.append(item)
    return out


def _round(age: float | None) -> float | None:
    return None if age is None else round(age, 1)


def describe(items: list[Swept], dry_run: bool) -> str:
    """The text `lando-ssh sweep` prints: one line per resource, then a summary."""
    if not items:
        return "nothing to sweep: every resource tagged as ours belongs to a live job (or is within the grace period)"
    lines = [f"{'KIND':<12} {'NAME':<32} {'JOB':>5} {'AGE':>8}  {'RESULT':<14} WHY"]
    for i in items:
        result = "error" if i.error else ("deleted" if i.deleted else "would delete")
        age = f"{i.age_seconds:.0f}s" if i.age_seconds is not None else "-"
        why = i.why + (f" ({i.error})" if i.error else "")
        lines.append(f"{i.kind:<12} {i.name[:32]:<32} {i.job_id if i.job_id is not None else '-':>5} {age:>8}  "
                     f"{result:<14} {why}")
    done = sum(1 for i in items if i.deleted)
    failed = sum(1 for i in items if i.error)
    if dry_run:
        lines.append(f"dry run: {len(items)} would be deleted; nothing was")
    else:
        lines.append(f"{done} deleted" + (f", {failed} could not be (see above)" if failed else ""))
    return "\n".join(lines)




def sweep_command(config: Config, dry_run: bool, grace: float | None, as_json: bool) -> int:
    """`lando-ssh sweep [--dry-run] [--grace SECONDS] [--json]`: 0, or 3 when a delete failed."""
    import json

    from lando_ssh.cloud import open_cloud
    from lando_ssh.store import open_store

    if grace is not None and grace < 0:
        from lando_ssh.errors import BadInput

        raise BadInput(f"--grace must be 0 or more seconds, not {grace:g}")
    cloud = open_cloud(config)
    store = open_store(config.store_url)
    try:
        items = sweep(config, cloud, store, dry_run=dry_run, grace=grace)
    finally:
        store.close()
        cloud.close()
    print(json.dumps([i.to_dict() for i in items], indent=2) if as_json else describe(items, dry_run))
    return 3 if any(i.error for i in items) else 0
