"""The pool's figures for Prometheus (`metrics.PoolCollector`), computed from the VM records. Pure."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from lando_ssh.pool.accounting import vm_uses
from lando_ssh.pool.model import LIVE, PoolState, PoolVm


@dataclass
class PoolFigures:
    by_state: dict[str, int] = field(default_factory=dict)  # live VMs by pool state (every state, 0 included)
    jobs_per_vm: dict[str, int] = field(default_factory=dict)  # live VM name -> jobs on it now
    served: int = 0  # jobs ever placed on a pool VM
    reuses: int = 0  # of those, placed on a VM that had served a job before
    idle_vm_seconds: float = 0.0  # VM-seconds pool VMs spent with no job (keep-alive, booting for none, drained)


def pool_figures(vms: Iterable[PoolVm], at: datetime) -> PoolFigures:
    f = PoolFigures(by_state={s.value: 0 for s in PoolState if s in LIVE})
    for vm in vms:
        if vm.state in LIVE:
            f.by_state[vm.state.value] += 1
            f.jobs_per_vm[vm.name] = len(vm.jobs)
        f.served += vm.served
        f.reuses += max(vm.served - 1, 0)
        f.idle_vm_seconds += sum(u.vm_hours for u in vm_uses(vm, at=at) if u.job_id is None) * 3600
    return f
