"""Step T: delete the job's VM, or keep it when the job source asks (bespin-api's cleanup_vm: false); and
the deletes every other part uses (a failed delete is recorded on the job for the sweep, never raised)."""
from __future__ import annotations

import logging

from lando_ssh.cloud import VmInfo
from lando_ssh.errors import CloudError
from lando_ssh.journal import recording
from lando_ssh.model import Job, now

from .pooled import forsake, leave_vm
from .runtime import Runtime

log = logging.getLogger(__name__)


def terminate_vm(rt: Runtime, job_id: int) -> None:
    job = rt.journal.get(job_id)
    if keep_vm(rt, job, failed=False):
        rt.close(job_id)
        note = f"VM kept (the job asks cleanup_vm: false): lando-ssh ssh {job_id}"
        rt.journal.update(job_id, recording(vm_kept=True, vm_kept_note=note))
        return
    # a failed delete does not fail a job whose outputs are safe: it is recorded, and the sweep retries it
    if terminate_quietly(rt, job):
        rt.journal.update(job_id, mark_vm_deleted)


def keep_vm(rt: Runtime, job: Job, failed: bool) -> bool:
    """Whether a job's VM outlives it: the job source asks (bespin's cleanup_vm: false), or
    keep_vm_on_error for a failed job."""
    if not has_vm(job):
        return False
    if (job.facts.get("bespin") or {}).get("cleanup_vm") is False:
        return True
    return failed and rt.config.keep_vm_on_error


def has_vm(job: Job) -> bool:
    return bool(job.vm and job.vm.id and not job.vm.deleted)


def terminate_quietly(rt: Runtime, job: Job) -> bool:
    """Delete the job's VM (found by name when its id was never recorded) and its key; True when it is gone. A
    job on a pool VM leaves it instead (its processes and files go; the VM is the pool's)."""
    if job.vm is not None and job.vm.pool_vm is not None and not job.vm.deleted:
        return leave_vm(rt, job)
    forsake(rt, job.id)
    rt.close(job.id)
    vm_ids: list[str] = []
    if job.vm and job.vm.id:
        vm_ids.append(job.vm.id)
    elif job.vm:  # asked for but id not recorded (crash, or cancel during the create call)
        vm_ids += [v.id for v in asked_for(rt, job)]
    deleted = [delete_vm_quietly(rt, job.id, vm_id) for vm_id in vm_ids]
    rt.keys(job).remove()
    return all(deleted)


def delete_vm_quietly(rt: Runtime, job_id: int, vm_id: str) -> bool:
    """Delete a VM; a failure is logged and recorded on the job (`vm_delete_error`) for the sweep."""
    try:
        rt.cloud.delete_vm(vm_id)
    except CloudError as e:
        message = f"could not delete VM {vm_id}: {e} (the orphan sweep retries it)"
        log.error("job %s: %s", job_id, message)
        rt.journal.update(job_id, recording(vm_delete_error=message))
        return False
    rt.journal.update(job_id, recording(vm_delete_error=""))
    return True


def asked_for(rt: Runtime, job: Job) -> list[VmInfo]:
    """The VMs named as the job's VM and tagged with its id: it was asked for, but its id never recorded."""
    name = job.vm.name if job.vm else None
    return [v for v in rt.cloud.find_vms(rt.metadata(job)) if v.name == name]


def mark_vm_deleted(job: Job) -> None:
    if job.vm is not None and job.vm.deleted is None:
        job.vm.deleted = now()
