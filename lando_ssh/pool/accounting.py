"""What a shared VM's hours are spent on: each job's share, and the idle time around them. Pure.

A VM's life (created to deleted, or to now; clipped to the window) is cut at every moment a job came or went.
In a stretch with jobs on it, the VM's hours go to those jobs in proportion to the vCPUs each reserved (a job
with 2 of the 3 reserved vCPUs gets two thirds, the unreserved vCPUs included); in a stretch without jobs
(booting for nobody, keep-alive, draining empty) they are idle, charged to the VM's owner and project. So the
jobs' hours plus the idle hours add up to the VM-hours the cloud bills, and core-hours are those hours times
the VM's vCPUs (as `usage` counts them).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from lando_ssh.pool.model import PoolVm, Stay


@dataclass(frozen=True)
class VmUse:
    """Hours of one pool VM spent on one job (`job_id`), or idle (`job_id` None)."""

    vm_id: int
    job_id: int | None
    owner: str  # the VM's owner under pool.share owner, else "-"
    project: str  # the VM's OpenStack project, "-" for the configured one
    vm_hours: float
    core_hours: float


def vm_uses(vm: PoolVm, *, at: datetime, since: datetime | None = None, until: datetime | None = None) -> list[VmUse]:
    """VM `vm`'s hours within [since, until] (its life till `at` while it lives): one line per job, then idle."""
    start = max(vm.created, since) if since else vm.created
    end = vm.deleted or at
    end = min(end, until) if until else end
    if end <= start:
        return []
    stays = [*vm.past, *(Stay(t.job_id, t.needs, t.since, end) for t in vm.jobs)]
    cuts = sorted({start, end, *(t for s in stays for t in (s.since, s.until) if start < t < end)})
    seconds: dict[int | None, float] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        span = (b - a).total_seconds()
        present = [s for s in stays if s.since <= a and s.until >= b]
        if not present:
            seconds[None] = seconds.get(None, 0.0) + span
            continue
        weights = [max(s.needs.vcpus, 0) for s in present]
        total = sum(weights)
        for s, w in zip(present, weights, strict=True):
            share = w / total if total else 1 / len(present)
            seconds[s.job_id] = seconds.get(s.job_id, 0.0) + span * share
    owner, project = vm.owner or "-", vm.project or "-"
    lines = [VmUse(vm.id, job, owner, project, s / 3600, s / 3600 * vm.size.vcpus)
             for job, s in sorted(seconds.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    return lines


def pool_uses(vms: Iterable[PoolVm], *, at: datetime, since: datetime | None = None,
              until: datetime | None = None) -> list[VmUse]:
    return [u for vm in vms for u in vm_uses(vm, at=at, since=since, until=until)]


def job_hours(uses: Iterable[VmUse]) -> dict[int, tuple[float, float]]:
    """Job id -> (VM-hours, core-hours) it was charged on pool VMs."""
    out: dict[int, tuple[float, float]] = {}
    for u in uses:
        if u.job_id is not None:
            vm_h, core_h = out.get(u.job_id, (0.0, 0.0))
            out[u.job_id] = (vm_h + u.vm_hours, core_h + u.core_hours)
    return out


def idle_hours(uses: Iterable[VmUse], by: str = "owner") -> dict[str, tuple[float, float]]:
    """Idle (VM-hours, core-hours) per owner or per project."""
    if by not in ("owner", "project"):
        raise ValueError(f"idle hours are kept per owner or per project, not {by!r}")
    out: dict[str, tuple[float, float]] = {}
    for u in uses:
        if u.job_id is None:
            key = u.owner if by == "owner" else u.project
            vm_h, core_h = out.get(key, (0.0, 0.0))
            out[key] = (vm_h + u.vm_hours, core_h + u.core_hours)
    return out


@dataclass
class PoolUsageRow:
    """One group's use of pool VMs: its jobs' shares, and the idle time charged to it."""

    group: str
    jobs: int = 0
    job_vm_hours: float = 0.0
    job_core_hours: float = 0.0
    idle_vm_hours: float = 0.0
    idle_core_hours: float = 0.0

    @property
    def vm_hours(self) -> float:
        return self.job_vm_hours + self.idle_vm_hours

    def to_dict(self) -> dict[str, object]:
        return {"group": self.group, "jobs": self.jobs, "job_vm_hours": round(self.job_vm_hours, 6),
                "job_core_hours": round(self.job_core_hours, 6), "idle_vm_hours": round(self.idle_vm_hours, 6),
                "idle_core_hours": round(self.idle_core_hours, 6)}


def pool_usage(uses: Iterable[VmUse], group_of_job: Callable[[int], str], by: str) -> list[PoolUsageRow]:
    """One row per group (sorted), then TOTAL, whose VM-hours are the pool VMs' billed hours. `by`: `user` (idle
    time to the VM's owner) or `project`; `group_of_job`: a job id's group ("-" for a job no longer stored)."""
    if by not in ("user", "project"):
        raise ValueError(f"pool usage is kept per user or per project, not {by!r}")
    rows: dict[str, PoolUsageRow] = {}
    total = PoolUsageRow("TOTAL")
    counted: dict[str, set[int]] = {}
    for u in uses:
        group = group_of_job(u.job_id) if u.job_id is not None else (u.owner if by == "user" else u.project)
        row = rows.setdefault(group, PoolUsageRow(group))
        for r in (row, total):
            if u.job_id is None:
                r.idle_vm_hours += u.vm_hours
                r.idle_core_hours += u.core_hours
            else:
                r.job_vm_hours += u.vm_hours
                r.job_core_hours += u.core_hours
        if u.job_id is not None:
            counted.setdefault(group, set()).add(u.job_id)
            counted.setdefault("TOTAL", set()).add(u.job_id)
    for name, ids in counted.items():
        (total if name == "TOTAL" else rows[name]).jobs = len(ids)
    return [rows[k] for k in sorted(rows)] + [total]
