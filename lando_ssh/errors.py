"""One small exception hierarchy with meanings.

Library exceptions (paramiko, openstacksdk, pika, cwltool) are translated into these at the
boundary that calls the library, so callers catch meaning, not library types. Every message
is one readable sentence a facility admin can act on.
"""
from __future__ import annotations


class LandoError(Exception):
    """Base of every error lando-ssh raises on purpose. `exit_code` is the CLI's exit code."""

    exit_code = 1


class BadInput(LandoError):
    """The user's input is wrong: an unknown job, a bad argument, a malformed message."""

    exit_code = 2


class ConfigError(BadInput):
    """The config file is wrong: names the file and the key."""


class UnknownJob(BadInput):
    def __init__(self, job_id: object):
        super().__init__(f"there is no job {job_id}")
        self.job_id = job_id


class UnknownVm(BadInput):
    def __init__(self, vm: object):
        super().__init__(f"there is no pool VM {vm}")
        self.vm = vm


class WorkflowInvalid(BadInput):
    """The workflow or its job order does not validate (carries cwltool's own message)."""


class InputMissing(BadInput):
    """An input file or directory named by the job order does not exist or cannot be read."""


class JobConflict(BadInput):
    """The job is not in a state that allows the requested action."""


class InfrastructureError(LandoError):
    """Something outside lando-ssh is unavailable: the broker, the cloud, a VM."""

    exit_code = 3


class JobHeldElsewhere(InfrastructureError):
    """Another server holds the job's lease (it is finishing with it, or died and its lease has not run out):
    a command for it is put back on the queue and served again, never dropped."""


class BrokerUnavailable(InfrastructureError):
    pass


class StoreUnavailable(InfrastructureError):
    """The job store's database cannot be reached or refused us (names the store, never its password)."""


class ObjectStoreUnavailable(InfrastructureError):
    """An object store (Swift, S3) cannot be reached or fails (5xx): names the store, never its credential."""


class CloudError(InfrastructureError):
    """The cloud refused or failed an operation."""


class CloudNotFound(CloudError):
    """A flavor, image, network... named by the job or config does not exist in the cloud."""


class QuotaExceeded(CloudError):
    """The cloud is out of quota; the job should wait and retry, not fail."""


class VmFailed(CloudError):
    """The VM went to ERROR or never became ready."""


class VmUnreachable(InfrastructureError):
    """SSH to the VM failed (refused, timed out, dropped and not coming back)."""


class SshAuthRefused(VmUnreachable):
    """The VM's sshd answered but refused the job's key for the login user."""


class HostKeyMismatch(VmUnreachable):
    """The VM presented a host key other than the pinned one."""


class RemoteCommandFailed(LandoError):
    """A command run on the VM exited non-zero."""

    def __init__(self, message: str, exit_code: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.remote_exit_code = exit_code
        self.stderr = stderr


class StagingFailed(LandoError):
    """An input could not be moved to the VM (bad URL, size mismatch, full disk)."""


class ObjectStoreRefused(StagingFailed):
    """An object store refused lando-ssh: its credential, an object's rights, a full quota (names the object)."""


class WorkflowFailed(LandoError):
    """cwltool ran and exited non-zero."""


class JobCanceled(LandoError):
    """The job was canceled while a step ran."""


class StepTimeout(LandoError):
    """A step ran past its configured limit."""
