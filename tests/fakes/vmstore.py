"""`MemoryVmStore`: `lando_ssh.pool.store.VmStore` in a dict (records kept as their dicts, so a caller's copy
never changes the stored one), for pool tests that need no database; the real stores have their own tests."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from lando_ssh.errors import UnknownVm
from lando_ssh.pool.model import PoolState, PoolVm
from lando_ssh.pool.store import Reservations, default_name


class MemoryVmStore(Reservations):
    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create(self, vm: PoolVm) -> PoolVm:
        with self._lock:
            vm.id = max(self.rows, default=0) + 1
            vm.name = vm.name or default_name(vm.installation, vm.id)
            self.rows[vm.id] = vm.to_dict()
        return PoolVm.from_dict(self.rows[vm.id])

    def get(self, vm_id: int) -> PoolVm:
        row = self.rows.get(vm_id)
        if row is None:
            raise UnknownVm(vm_id)
        return PoolVm.from_dict(row)

    def update(self, vm_id: int, change: Callable[[PoolVm], object]) -> PoolVm:
        with self._lock:
            vm = self.get(vm_id)
            change(vm)
            self.rows[vm_id] = vm.to_dict()
            return vm

    def list(self, states: Iterable[PoolState] | None = None) -> list[PoolVm]:
        wanted = None if states is None else {s.value for s in states}
        return [PoolVm.from_dict(r) for _, r in sorted(self.rows.items()) if wanted is None or r["state"] in wanted]

    def close(self) -> None:
        pass
