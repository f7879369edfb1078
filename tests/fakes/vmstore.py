"""`MemoryVmStore`: `lando_ssh.pool.store.VmStore` in a dict (records kept as their dicts, so a caller's copy
never changes the stored one), for pool tests that need no database; the real stores have their own tests."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lando_ssh.errors import UnknownVm
from lando_ssh.pool.model import LIVE, PoolState, PoolVm
from lando_ssh.pool.store import Reservations, default_name, elsewhere


class MemoryVmStore(Reservations):
    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def create(self, vm: PoolVm) -> PoolVm:
        with self._lock:
            self._check_elsewhere(0, vm.job_ids)
            vm.id = max(self.rows, default=0) + 1
            vm.name = vm.name or default_name(vm.installation, vm.id)
            self.rows[vm.id] = vm.to_dict()
        return PoolVm.from_dict(self.rows[vm.id])

    def get(self, vm_id: int) -> PoolVm:
        row = self.rows.get(vm_id)
        if row is None:
            raise UnknownVm(vm_id)
        return PoolVm.from_dict(row)

    def update(self, vm_id: int, change: Callable[[PoolVm], object], *, placing: Sequence[int] = ()) -> PoolVm:
        with self._lock:
            self._check_elsewhere(vm_id, placing)
            vm = self.get(vm_id)
            change(vm)
            self.rows[vm_id] = vm.to_dict()
            return vm

    def _check_elsewhere(self, vm_id: int, placing: Sequence[int]) -> None:
        for job_id in placing:
            holder = next((v for v in self.list(LIVE) if v.holds(job_id) and v.id != vm_id), None)
            elsewhere(job_id, vm_id, (holder.id, holder.name) if holder else None)

    def list(self, states: Iterable[PoolState] | None = None) -> list[PoolVm]:
        wanted = None if states is None else {s.value for s in states}
        return [PoolVm.from_dict(r) for _, r in sorted(self.rows.items()) if wanted is None or r["state"] in wanted]

    def close(self) -> None:
        pass
