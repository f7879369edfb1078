"""What stands behind a Nova server in the local OpenStack API service.

The API layer keeps the OpenStack records (status, ports, volumes); a backend supplies the
machine: whether it has booted, its console output, and extra facts such as the SSH port.

- `MemoryBackend`: no machine at all. A server boots after `boot_delay`; its console shows
  a cloud-init-like log with a freshly generated host key. Fast; for API and driver tests.
- `LocalBackend`: each server is a `lando_ssh.cloud.local.LocalCloud` VM (a real sshd on
  127.0.0.1 with its own port), booted with the server's user data. Its address is
  127.0.0.1 and its sshd port is published in the server metadata key `lando_ssh_port`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

if TYPE_CHECKING:
    from lando_ssh.config import Config

#: server metadata key where a backend publishes the port its sshd listens on
SSH_PORT_METADATA = "lando_ssh_port"


def new_host_key() -> str:
    """A fresh `ssh-ed25519 AAAA...` public key."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def cloud_init_console(name: str, host_keys: list[str]) -> str:
    """A console log shaped like the one cloud-init writes on first boot."""
    keys = "\n".join(f"{k} root@{name}" for k in host_keys)
    return (
        f"[    0.000000] Linux version 6.1.0-13-cloud-amd64\n"
        f"Cloud-init v. 23.1.1 running 'init' ... Up 4.20 seconds.\n"
        f"ci-info: ++++++++++++++++++++++++++Net device info++++++++++++++++++++++++++\n"
        f"<14>Nov 26 12:00:00 cloud-init: #############################################################\n"
        f"<14>Nov 26 12:00:00 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        f"<14>Nov 26 12:00:00 cloud-init: 256 SHA256:fake root@{name} (ED25519)\n"
        f"<14>Nov 26 12:00:00 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\n"
        f"<14>Nov 26 12:00:00 cloud-init: #############################################################\n"
        f"-----BEGIN SSH HOST KEY KEYS-----\n{keys}\n-----END SSH HOST KEY KEYS-----\n"
        f"Cloud-init v. 23.1.1 finished. Datasource DataSourceOpenStackLocal.  Up 9.87 seconds\n"
    )


@dataclass
class BackendState:
    """What a backend says about one server's machine."""

    status: str  # BUILD | ACTIVE | ERROR
    fault: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def with_public_keys(user_data: str | None, keys: list[str]) -> str | None:
    """The user data a machine boots with when its server has a keypair: cloud-init adds the keypair's key
    (from the metadata service) to the login user's, as if the cloud-config had named it too."""
    if not keys:
        return user_data
    from lando_ssh.cloud.cloudinit import parse_user_data

    doc = parse_user_data(user_data or "#cloud-config\n{}")
    doc["ssh_authorized_keys"] = [*(doc.get("ssh_authorized_keys") or []), *keys]
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"


class ServerBackend(Protocol):
    #: every port and floating IP gets this address (a backend whose machines share one host), or None
    fixed_address: str | None

    def boot(self, server_id: str, name: str, flavor: dict[str, Any], image: str, user_data: str | None,
             boot_delay: float) -> None: ...

    def state(self, server_id: str) -> BackendState: ...

    def console(self, server_id: str) -> str: ...

    def destroy(self, server_id: str) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    """Servers with no machine behind them: ACTIVE after the boot delay, a generated console."""

    fixed_address: str | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, tuple[str, float, str]] = {}  # id -> (name, ready_at, host key)

    def boot(self, server_id: str, name: str, flavor: dict[str, Any], image: str, user_data: str | None,
             boot_delay: float) -> None:
        with self._lock:
            self._servers[server_id] = (name, time.monotonic() + boot_delay, new_host_key())

    def state(self, server_id: str) -> BackendState:
        with self._lock:
            entry = self._servers.get(server_id)
        if entry is None:
            return BackendState("ERROR", "the machine behind this server is gone")
        return BackendState("ACTIVE" if time.monotonic() >= entry[1] else "BUILD")

    def console(self, server_id: str) -> str:
        with self._lock:
            entry = self._servers.get(server_id)
        if entry is None:
            return ""
        name, ready_at, key = entry
        if time.monotonic() < ready_at:
            return "[    0.000000] Linux version 6.1.0-13-cloud-amd64\n"
        return cloud_init_console(name, [key])

    def destroy(self, server_id: str) -> None:
        with self._lock:
            self._servers.pop(server_id, None)

    def close(self) -> None:
        with self._lock:
            self._servers.clear()


#: how the local cloud's fault begins when the user data's runcmd failed (its sshd still runs)
CLOUD_INIT_FAILED = "cloud-init runcmd failed"


class LocalBackend:
    """Each server is a LocalCloud VM: a real sshd on 127.0.0.1 honouring the user data. A VM whose
    cloud-init failed (e.g. its runcmd named a user the machine does not have) is ACTIVE, as in Nova."""

    fixed_address: str | None = "127.0.0.1"

    def __init__(self, config: Config) -> None:
        from lando_ssh.cloud.local import LocalCloud

        self._cloud = LocalCloud(config)
        self._lock = threading.Lock()
        self._vms: dict[str, str] = {}  # server id -> LocalCloud vm id
        self._not_before: dict[str, float] = {}  # server id -> earliest ACTIVE (the service's boot delay)
        self._booting: set[str] = set()  # servers whose VM is being made: BUILD, not gone

    def boot(self, server_id: str, name: str, flavor: dict[str, Any], image: str, user_data: str | None,
             boot_delay: float) -> None:
        from lando_ssh.cloud import VmRequest

        local_flavor = self._local_flavor(flavor)
        # the server id names the VM: server names need not be unique, local VM names must
        request = VmRequest(name=server_id, flavor=local_flavor, image=self._cloud.images()[0],
                            user_data=user_data or "", metadata={"openstack_server_id": server_id})
        with self._lock:  # a listing that reads this server while its VM is made must see BUILD
            self._booting.add(server_id)
        try:
            vm = self._cloud.create_vm(request)
            with self._lock:
                self._vms[server_id] = vm.id
                self._not_before[server_id] = time.monotonic() + boot_delay
        finally:
            with self._lock:
                self._booting.discard(server_id)

    def _local_flavor(self, flavor: dict[str, Any]) -> str:
        # the local cloud has its own flavor names; any one will do, the smallest fitting is kindest
        flavors = sorted(self._cloud.flavors(), key=lambda f: (f.vcpus, f.ram_mb))
        fitting = [f for f in flavors if f.vcpus >= flavor.get("vcpus", 0)]
        return (fitting or flavors)[0].name

    def state(self, server_id: str) -> BackendState:
        with self._lock:
            vm_id = self._vms.get(server_id)
            not_before = self._not_before.get(server_id, 0.0)
            if vm_id is None and server_id in self._booting:
                return BackendState("BUILD", None)
        if vm_id is None:
            return BackendState("ERROR", "the machine behind this server is gone")
        vm = self._cloud.get_vm(vm_id)
        if vm is None:
            return BackendState("ERROR", "the machine behind this server is gone")
        status, fault = vm.status, vm.fault
        if status == "ERROR" and (fault or "").startswith(CLOUD_INIT_FAILED):
            status, fault = "ACTIVE", None  # as in Nova: cloud-init's failures show on the console, not the status
        if status == "ACTIVE" and time.monotonic() < not_before:
            status = "BUILD"
        return BackendState(status, fault, {SSH_PORT_METADATA: str(vm.port)})

    def console(self, server_id: str) -> str:
        with self._lock:
            vm_id = self._vms.get(server_id)
        return self._cloud.console_log(vm_id) if vm_id else ""

    def destroy(self, server_id: str) -> None:
        with self._lock:
            vm_id = self._vms.pop(server_id, None)
            self._not_before.pop(server_id, None)
        if vm_id:
            self._cloud.delete_vm(vm_id)

    def close(self) -> None:
        with self._lock:
            vm_ids = list(self._vms.values())
            self._vms.clear()
        for vm_id in vm_ids:
            self._cloud.delete_vm(vm_id)
        self._cloud.close()
