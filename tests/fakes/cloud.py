"""`FakeCloud`: VMs as records in memory. Knobs (attributes; change them at any moment):

- `create_error_rate`, `delete_error_rate`: the share of create/delete calls that fail with a CloudError;
- `max_instances`: the quota of VMs (QuotaExceeded beyond it); None: unlimited; `report_quota`: False, and
  `quota()` does not tell it (only `create_vm` finds out);
- `before_list`, `after_list`: run once by the next `find_vms`, before or after it reads its listing (another
  server acting while this one reconciles);
- `crash_after_create`: the VM is made, then the calling server "dies" (`fakes.launch.Crash`);
- `boot_polls`: how many looks (`get_vm`/`find_vms`) a VM takes to go from BUILD to ACTIVE;
- `hang_rate`: the share of VMs that stay in BUILD for ever;
- `die(vm_id)`: the VM goes to ERROR (a host failure); `vanish(vm_id)`: it is gone without a delete;
- `silence(vm_id)` / `answer(vm_id)`: its sshd stops (or starts again) answering (`FakeRemote` asks `answers`).

What it did is kept for the test to assert on: `created` (every name asked for, in order), `deleted` (ids).
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lando_ssh.cloud import Flavor, Quota, VmInfo, VmRequest
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyOfAnInMemoryVm0000000000000"


@dataclass
class FakeVm:
    info: VmInfo
    request: VmRequest
    looks: int = 0
    hangs: bool = False
    answering: bool = True


@dataclass
class FakeCloud:
    flavor_list: list[Flavor]
    image_list: list[str] = field(default_factory=lambda: ["local"])
    seed: int = 0
    create_error_rate: float = 0.0
    delete_error_rate: float = 0.0
    max_instances: int | None = None
    boot_polls: int = 1
    hang_rate: float = 0.0
    # run once by the next `find_vms`, before or after it reads its listing (another server acting meanwhile)
    before_list: Callable[[], object] | None = None
    after_list: Callable[[], object] | None = None
    report_quota: bool = True  # False: `quota()` tells nothing (a cloud whose quota API is silent)
    crash_after_create: bool = False  # the VM is made, then the server dies before it hears the answer
    name: str = "fake"

    def __post_init__(self) -> None:
        self.vms: dict[str, FakeVm] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._serial = 0

    # -- the Cloud interface ---------------------------------------------------------------------------
    def default_user(self, image: str | None = None) -> str:
        return "lando"

    def default_cwl_command(self) -> list[str]:
        return ["cwltool", "--no-container"]

    def vm_work_dir(self, vm_name: str) -> str:
        return "/work"

    def create_vm(self, request: VmRequest) -> VmInfo:
        with self._lock:
            flavor = next((f for f in self.flavor_list if request.flavor in (f.name, f.id)), None)
            if flavor is None:
                raise CloudNotFound(f"flavor {request.flavor} does not exist")
            self.check_image(request.image)
            if self.max_instances is not None and len(self.vms) >= self.max_instances:
                raise QuotaExceeded(f"Quota exceeded for instances: {len(self.vms)} of {self.max_instances} in use")
            if self._rng.random() < self.create_error_rate:
                raise CloudError(f"the fake cloud failed to create {request.name} (create_error_rate)")
            if any(v.info.name == request.name for v in self.vms.values()):
                raise CloudError(f"a VM named {request.name} already exists")
            self._serial += 1
            vm_id = f"fake-{self._serial}"
            info = VmInfo(vm_id, request.name, "BUILD", metadata=dict(request.metadata), flavor=flavor,
                          created=datetime.now(UTC), project=request.project)
            self.vms[vm_id] = FakeVm(info, request, hangs=self._rng.random() < self.hang_rate)
            self.created.append(request.name)
        if self.crash_after_create:
            from fakes.launch import Crash

            raise Crash(f"killed before recording {request.name}'s id")
        return _copy(info)

    def get_vm(self, vm_id: str) -> VmInfo | None:
        with self._lock:
            vm = self.vms.get(vm_id)
            if vm is None:
                return None
            self._look(vm)
            return _copy(vm.info)

    def find_vms(self, metadata: dict[str, str]) -> list[VmInfo]:
        hook, self.before_list = self.before_list, None
        if hook is not None:
            hook()
        with self._lock:
            found = [v for v in self.vms.values() if metadata.items() <= v.info.metadata.items()]
            for vm in found:
                self._look(vm)
            listing = [_copy(v.info) for v in found]
        hook, self.after_list = self.after_list, None
        if hook is not None:
            hook()
        return listing

    def console_log(self, vm_id: str) -> str:
        with self._lock:
            vm = self.vms.get(vm_id)
            if vm is None or vm.info.status != "ACTIVE":
                return ""
        return f"-----BEGIN SSH HOST KEY KEYS-----\n{HOST_KEY} root@{vm.info.name}\n-----END SSH HOST KEY KEYS-----\n"

    def delete_vm(self, vm_id: str) -> None:
        with self._lock:
            if self._rng.random() < self.delete_error_rate:
                raise CloudError(f"the fake cloud failed to delete {vm_id} (delete_error_rate)")
            if self.vms.pop(vm_id, None) is not None:
                self.deleted.append(vm_id)

    def flavors(self) -> list[Flavor]:
        return list(self.flavor_list)

    def images(self) -> list[str]:
        return list(self.image_list)

    def check_image(self, name_or_id: str) -> None:
        if name_or_id not in self.image_list:
            raise CloudNotFound(f"image {name_or_id} does not exist; images: {', '.join(self.image_list)}")

    def quota(self) -> Quota:
        if not self.report_quota:
            return Quota()
        with self._lock:
            return Quota(max_instances=self.max_instances, instances_used=len(self.vms),
                         cores_used=sum(v.info.flavor.vcpus for v in self.vms.values() if v.info.flavor))

    def close(self) -> None:
        pass

    # -- faults ------------------------------------------------------------------------------------------
    def die(self, vm_id: str) -> None:
        with self._lock:
            vm = self.vms[vm_id]
            vm.info.status, vm.info.fault, vm.answering = "ERROR", "the host failed", False

    def vanish(self, vm_id: str) -> None:
        with self._lock:
            self.vms.pop(vm_id)

    def silence(self, vm_id: str) -> None:
        self.vms[vm_id].answering = False

    def answer(self, vm_id: str) -> None:
        self.vms[vm_id].answering = True

    def answers(self, address: str | None) -> bool:
        """Whether the VM at `address` answers SSH (an ACTIVE VM whose sshd was not silenced)."""
        with self._lock:
            vm = next((v for v in self.vms.values() if v.info.address == address), None)
            return vm is not None and vm.answering and vm.info.status == "ACTIVE"

    def alive(self) -> list[VmInfo]:
        with self._lock:
            return [_copy(v.info) for v in self.vms.values()]

    def _look(self, vm: FakeVm) -> None:
        vm.looks += 1
        if vm.info.status == "BUILD" and not vm.hangs and vm.looks >= self.boot_polls:
            vm.info.status = "ACTIVE"
            vm.info.address = f"10.0.{int(vm.info.id.split('-')[1]) // 250}.{int(vm.info.id.split('-')[1]) % 250}"


def _copy(info: VmInfo) -> VmInfo:
    return VmInfo(info.id, info.name, info.status, info.address, info.port, dict(info.metadata), info.fault,
                  info.flavor, info.created, list(info.volume_ids), info.project)
