"""The orphan sweep: delete what this installation made in the cloud that no live job owns.

After a crash, a failed delete, or a job deleted in the job API, a VM (and its volume, floating
IP, port) can outlive its job. `sweep()` finds every VM tagged as ours (metadata
`managed_by: lando-ssh`, `lando_installation: <cloud.installation_id>` and this data dir's
`lando_installation_token`: see installation.py) and deletes it when it is older than the
grace period and its job does not own it:

- the VM names no job, or the job is not in the job store;
- the job was deleted (state D);
- the job's record says this VM was deleted (a delete that failed), or names another VM;
- a VM of the pool (it names a pool record, `lando_pool_vm`, not a job): no live pool record owns it. An
  idle pool VM kept for the next job is live: its record owns it.

A VM made before tokens (the id alone) may be another installation's sharing the id and
counting jobs the same way: it is deleted only for what this installation's record of it says
(the record names it by id and marks it deleted, or its job was deleted or ended without
keeping it), never for a job that is missing or names another VM.

A VM the job's record names and does not mark deleted is live, whatever the job's state (an
errored job's VM kept with `keep_vm_on_error` is live). The VMs are listed before the jobs are
read, and a job records its VM's name before asking the cloud for it, so a VM being created
is never mistaken for an orphan; the grace period covers clocks and clouds that list late.
Then, when the driver can list them (OpenStack: `find_orphans`), volumes, floating IPs and
ports tagged as ours that no server owns any more (one made for a server now gone at any age;
one never attached once older than the grace); and the private keys in `<data_dir>/keys/` of
jobs that are gone or ended without a VM. Nothing not tagged as ours is ever touched. An
orphan younger than the grace is listed as spared (`spared`, with its age), not deleted; a
dry run lists everything, deleting nothing.

The daemon calls `sweep(config, cloud, store)` every `sweep.interval` seconds; `lando-ssh
sweep [--dry-run] [--grace SECONDS]` runs it once.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from lando_ssh.cloud import META_JOB_ID, META_POOL_VM, Cloud, Orphan, VmInfo
from lando_ssh.config import Config
from lando_ssh.errors import LandoError, UnknownJob
from lando_ssh.installation import ours, tagged_vms
from lando_ssh.model import FINAL_STATES, Job, JobState, now

log = logging.getLogger(__name__)


class _Jobs(Protocol):
    def get(self, job_id: int) -> Job: ...


@dataclass
class Swept:
    """One resource no live job owns: deleted, or in a dry run would be, or spared for being young."""

    kind: str  # vm | volume | floating ip | port | key
    id: str
    name: str
    job_id: int | None
    why: str  # one sentence: why no live job owns it
    age_seconds: float | None = None
    deleted: bool = False  # False in a dry run, or when the delete failed (then `error` says why)
    error: str | None = None
    spared: bool = False  # younger than the grace: left for now (perhaps a create still in progress)
    orphan: Orphan | None = field(default=None, repr=False)  # what the driver listed (volume, floating ip, port)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "orphan"}


def sweep(config: Config, cloud: Cloud, store: _Jobs, dry_run: bool = False,
          grace: float | None = None) -> list[Swept]:
    """Delete (or with `dry_run` only list) this installation's resources no live job owns and
    older than `grace` seconds (default `sweep.grace`); the younger ones are listed as spared.
    Returns what was found, in order."""
    grace = config.sweep.grace if grace is None else grace
    found: list[Swept] = []
    mine, untokened = tagged_vms(config, cloud)  # listed before the jobs are read: see the module's doc
    at = now()
    pool = _PoolRecords(config)
    for vm in [*mine, *untokened]:
        age = (at - vm.created).total_seconds() if vm.created else None
        if META_POOL_VM in vm.metadata:  # the pool's: its records say (an idle one is kept for the next job)
            job_id, why = None, pool.orphan(vm) if vm in mine else None
        else:
            job_id, why = _orphan_vm(vm, store, recorded_only=vm not in mine)
        if why is not None:
            found.append(Swept("vm", vm.id, vm.name, job_id, why, _round(age),
                               spared=age is not None and age < grace))
    found.extend(_other_resources(config, cloud, grace))
    found.extend(_keys(config, store, grace))
    for item in found:
        if not dry_run and not item.spared:
            _delete(cloud, item)
        _log(item, grace)
    return found


class _PoolRecords:
    """The VM pool's live records, read once and only when a pool VM is found."""

    def __init__(self, config: Config):
        self.config = config
        self._live: list[Any] | None = None

    def orphan(self, vm: VmInfo) -> str | None:
        from lando_ssh.pool.lifecycle import pool_owner

        if self._live is None:
            from lando_ssh.pool.model import LIVE
            from lando_ssh.pool.store import open_vm_store

            store = open_vm_store(self.config.store_url)
            try:
                self._live = store.list(LIVE)
            finally:
                store.close()
        if pool_owner(vm, self._live) is not None:
            return None
        return f"it is a pool VM (record {vm.metadata.get(META_POOL_VM)}) that no live pool record owns"


def _delete(cloud: Cloud, item: Swept) -> None:
    try:
        if item.kind == "vm":
            cloud.delete_vm(item.id)
        elif item.kind == "key":
            for p in (item.id, item.id + ".pub", item.id + ".known_hosts"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise LandoError(f"cannot remove {p}: {e.strerror}") from None
        else:
            assert item.orphan is not None
            getattr(cloud, "delete_orphan")(item.orphan)  # noqa: B009 (only drivers that list orphans)
        item.deleted = True
    except LandoError as e:
        item.error = str(e)


def _log(item: Swept, grace: float) -> None:
    what = f"{item.kind} {item.name}" + (f" ({item.id})" if item.id != item.name else "")
    if item.error:
        log.warning("sweep: could not delete %s: %s (%s)", what, item.error, item.why)
    elif item.deleted:
        log.info("sweep: deleted %s: %s", what, item.why)
    elif item.spared:
        log.debug("sweep: spared %s for now: %s, but it is %.0f s old, younger than the grace of %g s", what,
                 item.why, item.age_seconds or 0, grace)
    else:
        log.info("sweep: would delete %s: %s", what, item.why)


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


def _other_resources(config: Config, cloud: Cloud, grace: float) -> list[Swept]:
    """Volumes, floating IPs and ports no server owns, where the driver can find them. One that was made
    for a server now gone is an orphan at any age; one never attached is spared while younger than the
    grace (a create may be in progress)."""
    find_orphans = getattr(cloud, "find_orphans", None)
    if find_orphans is None:
        return []  # the local cloud makes none
    try:
        orphans: list[Orphan] = find_orphans(ours(config))
    except LandoError as e:
        return [Swept("volume/floating ip/port", "-", "-", None, "no server owns them", error=str(e))]
    out = []
    for o in orphans:
        why = f"its server {o.server} is gone" if o.server else "it was never attached to a server"
        young = o.server is None and o.age_seconds is not None and o.age_seconds < grace
        out.append(Swept(o.kind, o.id, o.name, None, why, _round(o.age_seconds), spared=young, orphan=o))
    return out


_KEY_FILE = re.compile(r"^job-(\d+)$")


def _keys(config: Config, store: _Jobs, grace: float) -> list[Swept]:
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
        out.append(Swept("key", path, name, job_id, why, _round(age), spared=age < grace))
    return out


def _round(age: float | None) -> float | None:
    return None if age is None else round(age, 1)


def describe(items: list[Swept], dry_run: bool, grace: float) -> str:
    """The text `lando-ssh sweep` prints: one line per resource, then a summary."""
    if not items:
        return "nothing to sweep: every resource tagged as ours belongs to a live job"
    lines = [f"{'KIND':<12} {'NAME':<32} {'JOB':>5} {'AGE':>8}  {'RESULT':<14} WHY"]
    for i in items:
        result = "error" if i.error else "deleted" if i.deleted else "spared (young)" if i.spared else "would delete"
        why = i.why + (f" ({i.error})" if i.error else "")
        lines.append(f"{i.kind:<12} {i.name[:32]:<32} {i.job_id if i.job_id is not None else '-':>5} "
                     f"{_age_text(i.age_seconds):>8}  {result:<14} {why}")
    spared = sum(1 for i in items if i.spared)
    if dry_run:
        summary = f"dry run: {len(items) - spared} would be deleted"
    else:
        failed = sum(1 for i in items if i.error)
        summary = f"{sum(1 for i in items if i.deleted)} deleted" + (
            f", {failed} could not be (see above)" if failed else "")
    if spared:
        summary += f"; {spared} spared for being younger than the grace ({_age_text(grace)}; --grace SECONDS)"
    lines.append(summary + ("; nothing was deleted" if dry_run else ""))
    return "\n".join(lines)


def _age_text(seconds: float | None) -> str:
    """95 -> "1m35s", 7300 -> "2h01m", 200000 -> "2d07h"."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


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
    print(json.dumps([i.to_dict() for i in items], indent=2) if as_json
          else describe(items, dry_run, config.sweep.grace if grace is None else grace))
    return 3 if any(i.error for i in items) else 0
