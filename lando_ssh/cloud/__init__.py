"""VM drivers behind one small interface: `local` (sshd on loopback) and `openstack`.

A driver only creates, inspects, lists and deletes VMs and reports the cloud's facts
(flavors, images, quota). It never runs anything on a VM: that is `remote.py`'s job. Every
resource a driver creates carries the metadata in `VmRequest.metadata` (lando-ssh, the
installation id and token, the job id) so that `find_vms` and the orphan sweep can find ours.

A VM id is whatever the driver returned in `VmInfo.id`; callers store it and hand it back
unchanged. A driver whose VMs live in several places (OpenStack projects) makes the id say
where, so a restarted server, the sweep and the admin's tools reach the VM with the id alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lando_ssh.config import Config

#: metadata keys every resource we create carries
META_MANAGED_BY = "managed_by"  # value: "lando-ssh"
META_INSTALLATION = "lando_installation"
META_TOKEN = "lando_installation_token"  # noqa: S105 (not a secret: the data dir's random id, installation.py)
META_JOB_ID = "lando_job_id"
META_POOL_VM = "lando_pool_vm"  # a pool VM's record id (lando_ssh/pool): such a VM carries no job id


@dataclass
class Flavor:
    name: str
    id: str
    vcpus: int
    ram_mb: int
    disk_gb: int = 0


@dataclass
class Quota:
    """What the cloud allows and what is in use; None = unlimited / unknown."""

    max_instances: int | None = None
    max_cores: int | None = None
    max_ram_mb: int | None = None
    instances_used: int = 0
    cores_used: int = 0
    ram_mb_used: int = 0


@dataclass
class VmRequest:
    name: str  # unique per job and installation; also how a resumed job finds its VM
    flavor: str  # name or id
    image: str  # name or id
    user_data: str  # cloud-init user data (rendered by cloudinit.py)
    volume_size: int = 0  # GB; 0 = no data volume
    metadata: dict[str, str] = field(default_factory=dict)
    # a job's own placement (bespin-api's per-job cloud_settings); None: the driver's configured default
    network: str | None = None
    allocate_floating_ip: bool | None = None
    floating_ip_pool: str | None = None
    key_name: str | None = None  # a cloud keypair put on the VM besides the job's own key (lando's ssh_key_name)
    # the OpenStack project to create it in (bespin-api's vm_project); None: the configured project
    project: str | None = None


@dataclass
class VmInfo:
    """What the cloud says about one VM right now."""

    id: str
    name: str
    status: str  # BUILD | ACTIVE | ERROR | DELETED (Nova's words)
    address: str | None = None
    port: int = 22
    metadata: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # why it is in ERROR (Nova's fault message)
    flavor: Flavor | None = None
    created: datetime | None = None
    volume_ids: list[str] = field(default_factory=list)
    project: str | None = None  # the OpenStack project it is in, when not the configured one


@dataclass
class Orphan:
    """A volume, floating IP or port carrying our metadata that no live server owns (`find_orphans`)."""

    kind: str  # volume | floating ip | port
    id: str  # as the driver hands it out (OpenStack: "<project>/<id>" outside the configured project)
    name: str
    server: str | None  # the id of the server it was made for, now gone; None: it never had one
    age_seconds: float | None = None  # None: the cloud gave no creation time


class Cloud(Protocol):
    """The interface every VM driver implements. Errors raised are `lando_ssh.errors.CloudError`s."""

    name: str

    def default_user(self, image: str | None = None) -> str:
        """The login user on VMs of `image` (a name or id; None: the cloud's usual one)."""
        ...

    def default_cwl_command(self) -> list[str]:
        """The cwltool command line prefix when the config sets no `cwl_base_command`."""
        ...

    def vm_work_dir(self, vm_name: str) -> str:
        """The directory on VM `vm_name` under which jobs keep their files (the volume's mount point)."""
        ...

    def create_vm(self, request: VmRequest) -> VmInfo:
        """Start creating a VM and return at once (status BUILD or ACTIVE).

        Raises CloudNotFound for an unknown flavor/image (listing what exists), QuotaExceeded
        when the cloud is full (the caller waits and retries), CloudError otherwise.
        """
        ...

    def get_vm(self, vm_id: str) -> VmInfo | None:
        """The VM's current facts, or None when it no longer exists."""
        ...

    def find_vms(self, metadata: dict[str, str]) -> list[VmInfo]:
        """Every VM whose metadata includes all of `metadata` (OpenStack: in every project it covers)."""
        ...

    def console_log(self, vm_id: str) -> str:
        """The VM's console output so far (cloud-init prints the SSH host keys there)."""
        ...

    def delete_vm(self, vm_id: str) -> None:
        """Delete the VM and everything created with it (volume, floating IP). Idempotent."""
        ...

    def flavors(self) -> list[Flavor]:
        ...

    def images(self) -> list[str]:
        ...

    def check_image(self, name_or_id: str) -> None:
        """Raise CloudNotFound (listing the images) unless the image exists: what `create_vm` says of it."""
        ...

    def quota(self) -> Quota:
        ...

    def close(self) -> None:
        ...


def open_cloud(config: Config) -> Cloud:
    """The driver the config names (imports only that driver's libraries)."""
    if config.cloud.driver == "openstack":
        from lando_ssh.cloud.openstack import OpenStackCloud

        return OpenStackCloud(config)
    from lando_ssh.cloud.local import LocalCloud

    return LocalCloud(config)
