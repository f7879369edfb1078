"""What the cloud says of a job's VM that stopped answering or lost its run: a VM that went to ERROR or is gone
is the job's reason in the cloud's own words (its fault), not what SSH saw of it."""
from __future__ import annotations

import logging

from lando_ssh.errors import LandoError, VmFailed
from lando_ssh.model import Job, JobStep

from .runtime import Runtime

log = logging.getLogger(__name__)

#: the steps that work on the VM over SSH (V has its own word for a VM in ERROR; T deletes it)
ON_THE_VM = (JobStep.STAGING, JobStep.RUNNING, JobStep.ORGANIZE_OUTPUT, JobStep.STORE_OUTPUT)


def vm_fate(rt: Runtime, job: Job) -> str | None:
    """The cloud's sentence for the job's VM when it died (ERROR, with its fault) or no longer exists; None when
    the cloud says it is fine, or could not say."""
    if not job.vm or not job.vm.id:
        return None
    try:
        info = rt.cloud.get_vm(job.vm.id)
    except LandoError as e:
        log.warning("job %s: could not ask the cloud about VM %s: %s", job.id, job.vm.name, e)
        return None
    if info is None or info.status == "DELETED":
        return f"VM {job.vm.name} no longer exists in the cloud"
    if info.status == "ERROR":
        return f"VM {job.vm.name} went to ERROR: {info.fault or 'the cloud gave no reason'}"
    return None


def explain_vm_loss(rt: Runtime, job_id: int, step: JobStep, error: LandoError) -> LandoError:
    """A failure of a step that works on the job's VM (S, R, o, O), said as the cloud's fault when the VM died or is
    gone (VmFailed, the step's own error after it): a dying VM fails its commands in many ways (a dropped
    connection, a refused key, a file gone from under a command); any other failure, or one on a VM the cloud says
    is fine, as it was."""
    if step not in ON_THE_VM or isinstance(error, VmFailed):
        return error
    fate = vm_fate(rt, rt.journal.get(job_id))
    if not fate:
        return error
    first, _, rest = str(error).partition("\n")  # (the error's first line is the job's reason's)
    return VmFailed(f"{fate} ({first})" + (f"\n{rest}" if rest else ""))
