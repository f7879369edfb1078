"""Which waiting jobs start now, on which flavor, and why the others wait. Pure logic, no I/O.

The server gathers the facts (waiting jobs, the VMs its jobs hold or are being given, the
config's limits, the cloud's live quota and flavors) and calls `schedule()`; it starts what
the `Decision` says, records each waiting job's reason, and fails the jobs that can never
start as asked.

Limits. A started job takes one job slot (`limits.max_concurrent_jobs`) and, unless its VM
already exists, one VM with its flavor's vCPUs and RAM. Two sets of limits apply, whichever
is tighter: the config's (`limits.max_vms`, `max_cores`, `max_ram_gb`; 0 = none), counted
over our own VMs, and the cloud's quota (`Quota.max_*`), counted over the cloud's own usage
plus our VMs the cloud does not count yet (being created: asked for, not yet accepted).

Order. Higher `priority` first, then older (`created`, then id). A job that fits what is
free starts; one that does not waits, and younger or lower-priority jobs behind it may still
start in what is free (backfill) -- until it has waited `limits.reserve_after` seconds.
From then on it *reserves* what it needs (a slot, a VM, its cores and RAM) in every limit:
jobs behind it start only in what is left after that reservation, so capacity freed by
ending jobs accumulates until the big job fits. A stream of small jobs therefore delays a
big job by at most `reserve_after` plus the time the running jobs take to end. A job of
higher priority still goes first: priority is the admin's word.

The server's own room (descriptors, threads, memory: `headroom.room`) is one more limit on job
slots when given: a job that would take the server past it waits, with the headroom's reason.

Flavor: see `flavors`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lando_ssh.cloud import Flavor, Quota
from lando_ssh.config import Config, LimitsConfig
from lando_ssh.flavors import FlavorChooser, Needs, as_gb, workflow_needs
from lando_ssh.headroom import Room
from lando_ssh.model import Job, JobState


# -- the facts the server gathers --------------------------------------------------------------
@dataclass
class WaitingJob:
    """A job waiting to start, as the scheduler sees it (build it with `waiting_job(job, config)`)."""

    id: int
    created: float  # epoch seconds: the job's age, for the order
    since: float | None = None  # epoch seconds it has waited since (default: created), for reservations
    priority: int = 0
    needs: Needs = field(default_factory=Needs)
    flavor: str | None = None  # the flavor the job names, if any
    volume_gb: int = 0  # its data volume (0: none), which then holds its work dir
    has_vm: bool = False  # its VM exists already (a resumed or canceling job): it needs a job slot only


@dataclass(frozen=True)
class ActiveVm:
    """A VM one of our jobs holds, or is about to be given."""

    vcpus: int
    ram_mb: int
    counted_by_cloud: bool = True  # False while being created: the cloud's quota does not count it yet


@dataclass(frozen=True)
class Limits:
    """The config's limits in scheduler units (None = no limit)."""

    max_jobs: int | None = None
    max_vms: int | None = None
    max_cores: int | None = None
    max_ram_mb: int | None = None

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> Limits:
        return cls(max_jobs=limits.max_concurrent_jobs or None, max_vms=limits.max_vms or None,
                   max_cores=limits.max_cores or None, max_ram_mb=limits.max_ram_gb * 1024 or None)


@dataclass(frozen=True)
class Placement:
    job_id: int
    flavor: Flavor | None  # None for a job whose VM exists already


@dataclass
class Decision:
    start: list[Placement] = field(default_factory=list)  # in the order they should start
    waiting: dict[int, str] = field(default_factory=dict)  # job id -> why it waits (one sentence)
    failed: dict[int, str] = field(default_factory=dict)  # job id -> why it can never start as asked
    reserving: list[int] = field(default_factory=list)  # jobs holding capacity (waited past reserve_after)
    #: job id -> the limit it waits for, as a short label (limits.max_cores, quota.cores, ...): for metrics
    blocked_by: dict[int, str] = field(default_factory=dict)


# -- the decision --------------------------------------------------------------------------------
class _Dim:
    """One limit: what it allows, what is used, what waiting jobs reserve."""

    __slots__ = ("key", "limit", "used", "reserved", "unit", "label", "source", "reserved_by")

    def __init__(self, key: str, limit: int, used: int, unit: str, label: str, source: str):
        self.key, self.limit, self.used, self.reserved = key, limit, used, 0
        self.unit, self.label, self.source = unit, label, source
        self.reserved_by: int | None = None

    def reason(self, need: int, held: bool) -> str:
        if self.unit == "server":  # the server's own room: its label is the sentence (headroom.room)
            return self.label
        where = f" ({self.source})" if self.source != "quota" else ""
        prefix = "waiting for cloud quota" if self.source == "quota" else "waiting"
        if self.unit == "slots":
            text = f"{prefix}: {self.used} of {self.limit} job slots busy{where}"
        elif self.unit == "vms":
            text = f"{prefix}: {self.used} of {self.limit} {self.label} in use{where}"
        elif self.unit == "mb":
            text = (f"{prefix}: {as_gb(self.used)} of {as_gb(self.limit)} GB RAM in use, job needs {as_gb(need)} GB"
                    f"{where}")
        else:
            text = f"{prefix}: {self.used} of {self.limit} {self.label} in use, job needs {need}{where}"
        if held:
            text += f"; the rest is held for job {self.reserved_by}, which has waited longer"
        return text


def schedule(waiting: Sequence[WaitingJob], active: Sequence[ActiveVm], *, running_jobs: int, limits: Limits,
             quota: Quota | None, flavors: Sequence[Flavor], allow: str | None = None, now: float,
             reserve_after: float = 600.0, server: Room | None = None) -> Decision:
    """Decide which of `waiting` start now (see the module's doc for the rules).

    `active`: every VM our jobs hold or are being given (including those of `waiting` jobs
    with `has_vm`); `running_jobs`: job slots in use; `quota`: the cloud's, None when unknown;
    `server`: how many more jobs the server process has room for, None when not measured.
    """
    dims = _dimensions(active, running_jobs, limits, quota)
    if server is not None and server.jobs is not None:
        dims.insert(0, _Dim("jobs", server.jobs, 0, "server", server.reason or "waiting: the server is near a limit",
                            server.source or "server"))
    slot_dims = [d for d in dims if d.key == "jobs"]
    vm_dims = dims
    chooser = FlavorChooser(flavors, allow)
    decision = Decision()
    order = sorted(waiting, key=lambda w: (-w.priority, w.created, w.id))
    for w in order:
        if w.has_vm:
            flavor: Flavor | None = None
            needs: dict[str, int] = {"jobs": 1}
            check = slot_dims
        else:
            flavor_or_error = chooser.choose(w.needs, w.volume_gb, w.flavor)
            if isinstance(flavor_or_error, str):
                decision.failed[w.id] = flavor_or_error
                continue
            flavor = flavor_or_error
            needs = {"jobs": 1, "vms": 1, "cores": flavor.vcpus, "ram": flavor.ram_mb}
            check = vm_dims
        never = _never_fits(check, needs, flavor)
        if never:
            decision.failed[w.id] = never
            continue
        blocked: _Dim | None = None
        held = False
        for d in check:
            need = needs[d.key]
            if need > d.limit - d.used - d.reserved:
                blocked, held = d, need <= d.limit - d.used
                break
        if blocked is None:
            for d in check:
                d.used += needs[d.key]
            decision.start.append(Placement(w.id, flavor))
            continue
        decision.waiting[w.id] = blocked.reason(needs[blocked.key], held)
        decision.blocked_by[w.id] = blocked.source if blocked.source != "quota" else f"quota.{blocked.key}"
        waited = now - (w.since if w.since is not None else w.created)
        if waited >= reserve_after:
            decision.reserving.append(w.id)
            for d in check:
                d.reserved += needs[d.key]
                if d.reserved_by is None:
                    d.reserved_by = w.id
    return decision


def decide(config: Config, waiting: Sequence[WaitingJob], active: Sequence[ActiveVm], *, running_jobs: int,
           quota: Quota | None, flavors: Sequence[Flavor], now: float, server: Room | None = None) -> Decision:
    """`schedule()` with the limits, allow-list and reserve_after of `config`."""
    return schedule(waiting, active, running_jobs=running_jobs, limits=Limits.from_config(config.limits), quota=quota,
                    flavors=flavors, allow=config.flavors.allow, now=now, reserve_after=config.limits.reserve_after,
                    server=server)


def _dimensions(active: Sequence[ActiveVm], running_jobs: int, limits: Limits, quota: Quota | None) -> list[_Dim]:
    ours_vms = len(active)
    ours_cores = sum(v.vcpus for v in active)
    ours_ram = sum(v.ram_mb for v in active)
    dims = []
    if limits.max_jobs is not None:
        dims.append(_Dim("jobs", limits.max_jobs, running_jobs, "slots", "job slots", "limits.max_concurrent_jobs"))
    if limits.max_vms is not None:
        dims.append(_Dim("vms", limits.max_vms, ours_vms, "vms", "VMs", "limits.max_vms"))
    if limits.max_cores is not None:
        dims.append(_Dim("cores", limits.max_cores, ours_cores, "cores", "cores", "limits.max_cores"))
    if limits.max_ram_mb is not None:
        dims.append(_Dim("ram", limits.max_ram_mb, ours_ram, "mb", "RAM", "limits.max_ram_gb"))
    if quota is not None:
        pending = [v for v in active if not v.counted_by_cloud]  # asked for; the cloud does not count them yet
        if quota.max_instances is not None:
            dims.append(_Dim("vms", quota.max_instances, quota.instances_used + len(pending), "vms", "instances",
                             "quota"))
        if quota.max_cores is not None:
            dims.append(_Dim("cores", quota.max_cores, quota.cores_used + sum(v.vcpus for v in pending), "cores",
                             "cores", "quota"))
        if quota.max_ram_mb is not None:
            dims.append(_Dim("ram", quota.max_ram_mb, quota.ram_mb_used + sum(v.ram_mb for v in pending), "mb",
                             "RAM", "quota"))
    return dims


def _never_fits(dims: list[_Dim], needs: dict[str, int], flavor: Flavor | None) -> str | None:
    """Why the job cannot start even on an empty cloud, or None."""
    for d in dims:
        if d.unit == "server":  # the server's room comes back as its jobs end
            continue
        need = needs[d.key]
        if need > d.limit:
            on = f" on flavor {flavor.name}" if flavor else ""
            if d.unit == "mb":
                what, has = f"{as_gb(need)} GB RAM{on}", f"{as_gb(d.limit)} GB"
            else:
                what, has = f"{need} {d.label}{on}", str(d.limit)
            if d.source == "quota":
                return f"the job needs {what} but the cloud's quota allows {has} in all"
            return f"the job needs {what} but {d.source} is {has}"
    return None


# -- building the facts from job records -------------------------------------------------------
def waiting_job(job: Job, default_volume_gb: int = 0, *, has_vm: bool | None = None) -> WaitingJob:
    """What the scheduler needs of a waiting job. Parses the packed workflow: build it once per job."""
    volume = job.vm_spec.volume_size if job.vm_spec.volume_size is not None else default_volume_gb
    if has_vm is None:
        has_vm = bool(job.vm and job.vm.id and not job.vm.deleted)
    return WaitingJob(id=job.id, created=job.created.timestamp(), since=waiting_since(job), priority=job.priority,
                      needs=workflow_needs(job.workflow_doc), flavor=job.vm_spec.flavor, volume_gb=volume or 0,
                      has_vm=has_vm)


def waiting_since(job: Job) -> float:
    """When the job's current wait began: the start of the run of S/r entries ending its history."""
    since = job.created.timestamp()
    for h in reversed(job.history):
        if h.state not in (JobState.STARTING, JobState.RESTARTING):
            break
        since = h.at.timestamp()
    return since


def active_vm(job: Job, flavors: Sequence[Flavor], placed: Flavor | None = None) -> ActiveVm | None:
    """The VM a started job holds or is being given: from its record, else from where it was placed."""
    vm = job.vm
    if vm is not None and vm.deleted is None:
        vcpus, ram = vm.vcpus, vm.ram_mb
        if vcpus is None or ram is None:
            f = next((f for f in flavors if vm.flavor in (f.name, f.id)), None) or placed
            vcpus, ram = (f.vcpus, f.ram_mb) if f else (vcpus or 0, ram or 0)
        return ActiveVm(vcpus or 0, ram or 0, counted_by_cloud=vm.id is not None)
    if placed is not None and (vm is None or vm.deleted is not None):
        return ActiveVm(placed.vcpus, placed.ram_mb, counted_by_cloud=False)
    return None


def active_vms(jobs: Iterable[Job], flavors: Sequence[Flavor],
               placed: Mapping[int, Flavor | None] | None = None) -> list[ActiveVm]:
    placed = placed or {}
    out = []
    for job in jobs:
        v = active_vm(job, flavors, placed.get(job.id))
        if v is not None:
            out.append(v)
    return out


# -- the limits as the VM pool's placement (lando_ssh/pool/placement.py) takes them: one set of limits, one set of
# sentences for both
LimitDim = _Dim
limit_dimensions = _dimensions
never_fits = _never_fits
