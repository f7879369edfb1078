"""What the cloud says of a job's VM that stopped answering or lost its run: a VM that went to ERROR or is gone
is the job's reason in the cloud's own words (its fault), not what SSH saw of it."""
from __future__ import annotations

import logging

from lando_ssh.errors import HostKeyMismatch, LandoError, SshAuthRefused, VmFailed, VmUnreachable
from lando_ssh.model import Job

from .runtime import Runtime

log = logging.getLogger(__name__)


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


def explain_vm_loss(rt: Runtime, job_id: int, error: LandoError) -> LandoError:
    """A step's failure to reach the job's VM, said as the cloud's fault when the VM died or is gone (VmFailed);
    any other error, or a VM the cloud says is fine, as it was."""
    if not isinstance(error, VmUnreachable) or isinstance(error, (HostKeyMismatch, SshAuthRefused)):
        return error
    fate = vm_fate(rt, rt.journal.get(job_id))
    return VmFailed(f"{fate} ({error})") if fate else error
