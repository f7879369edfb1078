"""What the pool asks of the cloud for a VM, and how it reaches it: the launcher (a request with the VM's own
keypair and cloud-init user data) and the SSH probe. The pool manager takes both as parameters, so tests give
it in-memory ones (tests/fakes)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lando_ssh.cloud import META_POOL_VM, VmRequest
from lando_ssh.pool.model import PoolVm

if TYPE_CHECKING:
    from lando_ssh.cloud import Cloud
    from lando_ssh.config import Config
    from lando_ssh.remote import Result


@dataclass(frozen=True)
class Launch:
    request: VmRequest
    key_path: str | None  # the VM's own private key
    user: str
    work_dir: str


class Launcher(Protocol):
    def launch(self, vm: PoolVm) -> Launch:
        """The cloud request for pool VM `vm` (named, sized and placed as its record says)."""
        ...


class RemoteLike(Protocol):
    """The part of `lando_ssh.remote.Remote` the pool uses (`tests/fakes.FakeRemote` is one too)."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            retry: bool = True, what: str | None = None) -> Result:
        ...

    def close(self) -> None:
        ...


class Remotes(Protocol):
    def remote_for(self, vm: PoolVm) -> RemoteLike:
        """A connection to `vm` as its record says (address, port, user, its own key, pinned host keys)."""
        ...


def metadata(tags: dict[str, str], vm: PoolVm) -> dict[str, str]:
    """What a pool VM carries in the cloud: the installation's tags and its record's id (no job id: the pool
    owns it, and the sweep asks the pool's records about it)."""
    return {**tags, META_POOL_VM: str(vm.id)}


class CloudInitLauncher:
    """The production launcher: an ed25519 keypair per VM in `<data_dir>/keys/pool/` (0600), cloud-init user
    data that authorises it for the image's login user and prepares the work dir."""

    def __init__(self, config: Config, cloud: Cloud, tags: dict[str, str]):
        self.config, self.cloud, self.tags = config, cloud, tags

    def launch(self, vm: PoolVm) -> Launch:
        from lando_ssh.cloud.cloudinit import UserDataParams, render_user_data
        from lando_ssh.keys import generate_keypair

        key_dir = os.path.join(self.config.keys_dir, "pool")
        os.makedirs(key_dir, mode=0o700, exist_ok=True)
        key_path = os.path.join(key_dir, vm.name)
        if os.path.exists(key_path):  # a launch retried after a crash: the VM's key is the one made then
            with open(key_path + ".pub") as f:
                public = f.read().strip()
        else:
            public = generate_keypair(key_path, comment=vm.name)
        user = self.cloud.default_user(vm.image)
        work_dir = self.cloud.vm_work_dir(vm.name)
        user_data = render_user_data(UserDataParams(public_key=public, user=user, work_dir=work_dir,
                                                    volume_device="/dev/vdb" if vm.volume_gb else None))
        request = VmRequest(name=vm.name, flavor=vm.flavor, image=vm.image, user_data=user_data,
                            volume_size=vm.volume_gb, metadata=metadata(self.tags, vm), project=vm.project)
        return Launch(request, key_path, user, work_dir)


class SshRemotes:
    """Connections to pool VMs over SSH with their own keys and pinned host keys; no retries (a probe)."""

    def __init__(self, connect_timeout: float = 10.0):
        self.connect_timeout = connect_timeout

    def remote_for(self, vm: PoolVm) -> RemoteLike:
        from lando_ssh.remote import Endpoint, Remote

        ep = Endpoint(vm.address or "", vm.port, vm.user or "root", vm.key_path or "", list(vm.host_keys))
        return Remote(ep, connect_timeout=self.connect_timeout, retry_for=0)
