"""A job on a VM of the pool (`pool.share` other than `job`; docs/vm-pool.md).

Step V takes the VM the pool placed the job on (the daemon's rounds place its jobs before it starts them; a
foreground `lando-ssh job N` places its one job here), waits until the VM answers, and records it on the job:
address, pinned host keys, the VM's own key (a job on a pool VM has no key of its own), the share it reserved.
The job's files live in its own directory under the VM's work dir (`JobPaths`) and its workflow in its own
process group (lando-start's setsid), so nothing of one job touches another's.

When the job leaves its VM (done, failed, canceled, restarted elsewhere: `leave_vm`, called where a job's own
VM would be deleted) what is left of its processes is killed, its directory removed, and its room given back to
the pool. A VM whose job's files could not be removed takes no new job (drained). The VM itself is the pool's:
a daemon keeps it `vm.keepalive` seconds for the next job; a foreground run deletes it once empty.
"""
from __future__ import annotations

import functools
import logging

from lando_ssh.backoff import Backoff
from lando_ssh.errors import BadInput, LandoError, VmFailed
from lando_ssh.journal import setting
from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, VmRecord, now
from lando_ssh.pool.manager import PoolManager
from lando_ssh.pool.model import PoolState, PoolVm
from lando_ssh.pool.placement import pool_job

from .paths import JobPaths
from .runtime import Runtime

log = logging.getLogger(__name__)

#: the states of a VM a placed job may start on (a draining VM still serves the jobs it holds)
READY = frozenset({PoolState.IDLE, PoolState.BUSY, PoolState.DRAINING})
#: seconds between looks at a booting VM, doubling up to the longest
LOOK_FIRST = 0.05
LOOK_LONGEST = 5.0

# sh -c: kill what is left of the job's run (its own process group), then remove its directory
_LEAVE = ('d=$1; if [ -f "$d/bin/lando-kill" ]; then sh "$d/bin/lando-kill" "$d/run" 10 >/dev/null; fi; '
          'rm -rf -- "$d"')


def take_vm(rt: Runtime, job_id: int) -> None:
    """Step V on the pool: the job placed (if no one did), its VM booted and answering, recorded on the job."""
    assert rt.pool is not None
    look = Backoff(LOOK_FIRST, LOOK_LONGEST)
    told = ""
    while True:
        rt.check_cancel(job_id)
        job = rt.journal.get(job_id)
        vm = rt.pool.vm_for(job_id)
        if vm is None:
            if job.vm is not None and job.vm.pool_vm is not None and job.vm.deleted is None:
                _lost_before_start(rt, job)  # its VM failed to boot or vanished: placed again (bounded)
                continue
            told = _place(rt, job, told)
            if rt.pool.vm_for(job_id) is None:
                rt.sleep(job_id, look.next())
            continue
        if job.vm is None or job.vm.pool_vm != vm.id:
            rt.journal.update(job_id, functools.partial(_placed, vm=vm))
        if vm.state == PoolState.BOOTING:
            vm = rt.pool.watch(vm.id)
        if vm.state in READY and vm.address and vm.holds(job_id):
            if _arrive(rt, job_id, vm):
                return
            continue
        if vm.state == PoolState.BOOTING:
            rt.sleep(job_id, look.next())


def _place(rt: Runtime, job: Job, told: str) -> str:
    """One round of the pool for this job alone; returns the reason it waits (written on the job when new)."""
    assert rt.pool is not None
    result = rt.pool.round([pool_job(job, rt.config)])
    if job.id in result.failed:
        raise BadInput(result.failed[job.id])
    why = result.waiting.get(job.id, "")
    if why and why != told:
        rt.journal.update(job.id, setting(reason=why))
    return why


def _placed(job: Job, vm: PoolVm) -> None:
    """The job's record of its place: the VM's name, the pool record, the share it reserved."""
    share = vm.tenancy(job.id)
    assert share is not None
    if job.vm is not None:
        job.retire_vm()
    job.vm = VmRecord(name=vm.name, flavor=vm.flavor, vcpus=share.needs.vcpus, ram_mb=share.needs.ram_mb,
                      created=now(), pool_vm=vm.id)
    _endpoint(job.vm, vm)
    job.reason = f"on VM {vm.name} ({vm.state.value})"
    job.set_state(JobState.RUNNING, JobStep.CREATE_VM)


def _endpoint(record: VmRecord, vm: PoolVm) -> None:
    """Where the job's VM is, as the pool knows it now: its cloud id, address, pinned host keys, login, own key."""
    record.id, record.address, record.port, record.host_keys = vm.cloud_id, vm.address, vm.port, list(vm.host_keys)
    record.user, record.work_dir, record.key_path = vm.user, vm.work_dir, vm.key_path


def _arrive(rt: Runtime, job_id: int, vm: PoolVm) -> bool:
    """The VM answers: its address, host keys and key on the job, and its free disk checked over the job's
    SSH connection. False when the disk has less free than the job reserved (files another job or the system
    left): the job leaves the VM, which takes no new job, and is placed again (up to vm.boot_retries times)."""
    def record(j: Job) -> None:
        assert j.vm is not None
        _endpoint(j.vm, vm)
        j.vm.active = j.vm.active or now()
        j.reason = ""

    job = rt.journal.update(job_id, record)
    assert job.vm is not None and vm.address and vm.work_dir
    rt.keys(job).pin_host(vm.address, vm.port, list(vm.host_keys))
    out = rt.remote(job).run(["df", "-Pk", "--", vm.work_dir], retry=False,
                             what=f"the free disk of pool VM {vm.name}").stdout
    free_mb = _free_mb(out)
    share = vm.tenancy(job_id)
    if free_mb is None or share is None or free_mb >= share.needs.disk_mb:
        return True
    why = f"VM {vm.name} has {free_mb} MB of disk free, less than the job reserved ({share.needs.disk_mb} MB)"
    leave_vm(rt, job)
    _drain(_pool(rt), vm.id, why)  # it takes no new job
    _place_again(rt, rt.journal.get(job_id), why)
    return False


def _free_mb(df_output: str) -> int | None:
    """The free MB `df -Pk` printed (its second line's fourth column), or None when it printed none."""
    lines = df_output.strip().splitlines()
    try:
        return int(lines[-1].split()[3]) // 1024 if len(lines) >= 2 else None
    except (IndexError, ValueError):
        return None


def _lost_before_start(rt: Runtime, job: Job) -> None:
    """The job's VM went before the job started on it (a failed boot, a VM that vanished)."""
    assert rt.pool is not None
    _place_again(rt, job, rt.pool.gone([job.id]).get(job.id, "its VM is gone"))


def _place_again(rt: Runtime, job: Job, why: str) -> None:
    """The job could not start on its VM (`why`): it is placed again, up to vm.boot_retries times, else it fails
    with `why`."""
    retries = job.run.boot_retries
    if retries >= rt.config.vm.boot_retries:
        raise VmFailed(f"job {job.id} could not start on a VM: {why}")
    note = f"{why}; placed again (retry {retries + 1} of {rt.config.vm.boot_retries})"
    log.warning("job %s: %s", job.id, note)

    def again(j: Job) -> None:
        j.run.boot_retries = retries + 1
        j.history.append(HistoryEntry(now(), j.state, j.step, note[:200]))
        j.retire_vm()

    rt.journal.update(job.id, again)


def leave_vm(rt: Runtime, job: Job) -> bool:
    """The job is done with its pool VM: its leftover processes killed, its directory removed, its room given
    back (a daemon keeps the VM warm; a foreground run deletes it once empty). True (the job's hold is gone)."""
    assert job.vm is not None and job.vm.pool_vm is not None
    pool = _pool(rt)
    if job.vm.address and job.vm.host_keys and job.vm.work_dir:
        job_dir = rt.paths(job).job_dir
        try:
            rt.remote(job).run(["sh", "-c", _LEAVE, "sh", job_dir], retry=False, timeout=60,
                               what=f"removing job {job.id}'s files from its VM")
        except LandoError as e:  # its files may be left on the VM: no other job goes there
            log.warning("job %s: its files could not be removed from VM %s: %s; the VM takes no new job",
                        job.id, job.vm.name, e)
            _drain(pool, job.vm.pool_vm, f"job {job.id}'s files could not be removed ({str(e)[:120]})")
    rt.close(job.id)
    pool.let_go(job.id, job.vm.pool_vm, keep_warm=rt.keep_warm)
    rt.keys(job).remove()  # (its known_hosts: the VM's key is the pool's)
    return True


def forsake(rt: Runtime, job_id: int) -> None:
    """Give back a place the pool reserved for the job that its record does not name yet (the daemon placed it,
    then it was canceled or failed before step V recorded the VM)."""
    if rt.pool is not None and (vm := rt.pool.vm_for(job_id)) is not None:
        rt.pool.let_go(job_id, vm.id, keep_warm=rt.keep_warm)


def _pool(rt: Runtime) -> PoolManager:
    """The pool, also where the config no longer uses one (pool.share turned to job): a job placed on a pool
    VM before leaves it through the pool, never deleting a VM other jobs may be on."""
    if rt.pool is None:
        from lando_ssh.pool.store import open_vm_store

        rt.pool = PoolManager.from_config(rt.config, open_vm_store(rt.journal.store), rt.cloud)  # type: ignore[arg-type]
    return rt.pool


def _drain(pool: PoolManager, vm_id: int, reason: str) -> None:
    try:
        pool.drain(str(vm_id), reason)
    except LandoError as e:
        log.warning("pool VM %s could not be drained: %s", vm_id, e)


def job_dir(job: Job) -> str | None:
    """Where `lando-ssh ssh N` lands on a pool VM: the job's own directory."""
    if job.vm is None or job.vm.pool_vm is None or not job.vm.work_dir:
        return None
    return JobPaths.under(job.vm.work_dir, job.id).job_dir
