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

Flavor. A job that names a flavor gets it (it must exist; it is not checked against the
allow-list or the workflow's needs: the user asked for it). Otherwise the cheapest flavor
(fewest vCPUs, then RAM, then disk) that meets the workflow's ResourceRequirement and whose
name matches `flavors.allow` (a regex searched in the name, as wr's `--flavor`). Disk: the
job's data volume holds its work dir when it has one, so then the volume must hold
tmpdirMin + outdirMin, otherwise the flavor's root disk (a flavor with disk 0, "the image's
size", meets no stated disk need). A job no allowed flavor fits fails at once, saying what
it needs and what the largest allowed flavor offers.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lando_ssh.cloud import Flavor, Quota
from lando_ssh.config import Config, LimitsConfig
from lando_ssh.model import Job, JobState

#: CWL's defaults when a workflow states nothing (v1.2: 1 core, 256 MiB RAM)
DEFAULT_CORES = 1
DEFAULT_RAM_MB = 256


# -- what a workflow needs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Needs:
    """What a workflow asks of its VM: the largest ResourceRequirement of any of its processes.

    MiB, as CWL counts (Nova's "MB" are MiB too). cwltool runs a workflow's steps on the one
    VM, so the VM must fit the most demanding step; disk is tmpdirMin + outdirMin of that step.
    """

    cores: int = DEFAULT_CORES
    ram_mb: int = DEFAULT_RAM_MB
    disk_mb: int = 0

    def describe(self) -> str:
        disk = f", {_gb(self.disk_mb)} GB disk" if self.disk_mb else ""
        return f"{self.cores} {'core' if self.cores == 1 else 'cores'}, {self.ram_mb} MB RAM{disk}"


def workflow_needs(doc: Any) -> Needs:
    """The needs stated by every ResourceRequirement (requirements or hints) anywhere in a packed
    workflow: the top process, `$graph` entries, steps, inline `run`s. Values given as
    expressions cannot be known before the run and are left out."""
    cores, ram, disk = DEFAULT_CORES, DEFAULT_RAM_MB, 0
    for req in _resource_requirements(doc):
        c = _amount(req, "cores")
        r = _amount(req, "ram")
        t, o = _amount(req, "tmpdir"), _amount(req, "outdir")
        if c is not None:
            cores = max(cores, math.ceil(c))
        if r is not None:
            ram = max(ram, math.ceil(r))
        if t is not None or o is not None:
            disk = max(disk, math.ceil((t or 0) + (o or 0)))
    return Needs(cores, ram, disk)


def _resource_requirements(node: Any) -> Iterable[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in ("requirements", "hints"):
                reqs = item.get(key)
                if isinstance(reqs, dict):  # the map form: {ResourceRequirement: {...}}
                    reqs = [dict(v, **{"class": k}) for k, v in reqs.items() if isinstance(v, dict)]
                if isinstance(reqs, list):
                    for r in reqs:
                        if isinstance(r, dict) and str(r.get("class", "")).rsplit(":", 1)[-1].rsplit("#", 1)[-1] \
                                == "ResourceRequirement":
                            yield r
            stack.extend(v for k, v in item.items() if k not in ("requirements", "hints")
                         and isinstance(v, (dict, list)))


def _amount(req: dict[str, Any], what: str) -> float | None:
    """`<what>Min`, else `<what>Max` (CWL: a max alone is also the min); None when unstated or an expression."""
    for key in (f"{what}Min", f"{what}Max"):
        v = req.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


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
        where = f" ({self.source})" if self.source != "quota" else ""
        prefix = "waiting for cloud quota" if self.source == "quota" else "waiting"
        if self.unit == "slots":
            text = f"{prefix}: {self.used} of {self.limit} job slots busy{where}"
        elif self.unit == "vms":
            text = f"{prefix}: {self.used} of {self.limit} {self.label} in use{where}"
        elif self.unit == "mb":
            text = (f"{prefix}: {_gb(self.used)} of {_gb(self.limit)} GB RAM in use, job needs {_gb(need)} GB"
                    f"{where}")
        else:
            text = f"{prefix}: {self.used} of {self.limit} {self.label} in use, job needs {need}{where}"
        if held:
            text += f"; the rest is held for job {self.reserved_by}, which has waited longer"
        return text


def schedule(waiting: Sequence[WaitingJob], active: Sequence[ActiveVm], *, running_jobs: int, limits: Limits,
             quota: Quota | None, flavors: Sequence[Flavor], allow: str | None = None, now: float,
             reserve_after: float = 600.0) -> Decision:
    """Decide which of `waiting` start now (see the module's doc for the rules).

    `active`: every VM our jobs hold or are being given (including those of `waiting` jobs
    with `has_vm`); `running_jobs`: job slots in use; `quota`: the cloud's, None when unknown.
    """
    dims = _dimensions(active, running_jobs, limits, quota)
    slot_dims = [d for d in dims if d.key == "jobs"]
    vm_dims = dims
    chooser = _FlavorChooser(flavors, allow)
    decision = Decision()
    order = sorted(waiting, key=lambda w: (-w.priority, w.created, w.id))
    for w in order:
        if w.has_vm:
            flavor: Flavor | None = None
            needs: dict[str, int] = {"jobs": 1}
            check = slot_dims
        else:
            flavor_or_error = chooser.choose(w)
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
           quota: Quota | None, flavors: Sequence[Flavor], now: float) -> Decision:
    """`schedule()` with the limits, allow-list and reserve_after of `config`."""
    return schedule(waiting, active, running_jobs=running_jobs, limits=Limits.from_config(config.limits), quota=quota,
                    flavors=flavors, allow=config.flavors.allow, now=now, reserve_after=config.limits.reserve_after)


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
        need = needs[d.key]
        if need > d.limit:
            on = f" on flavor {flavor.name}" if flavor else ""
            if d.unit == "mb":
                what, has = f"{_gb(need)} GB RAM{on}", f"{_gb(d.limit)} GB"
            else:
                what, has = f"{need} {d.label}{on}", str(d.limit)
            if d.source == "quota":
                return f"the job needs {what} but the cloud's quota allows {has} in all"
            return f"the job needs {what} but {d.source} is {has}"
    return None


class _FlavorChooser:
    """Flavor choice, memoized by what jobs ask (many jobs ask the same)."""

    def __init__(self, flavors: Sequence[Flavor], allow: str | None):
        self.all = list(flavors)
        self.allow = allow
        self.allowed = sorted((f for f in self.all if flavor_allowed(f.name, allow)),
                              key=lambda f: (f.vcpus, f.ram_mb, f.disk_gb, f.name))
        self.by_name = {f.id: f for f in self.all} | {f.name: f for f in self.all}  # a name wins over an id
        self.memo: dict[tuple[Needs, int], Flavor | str] = {}

    def choose(self, w: WaitingJob) -> Flavor | str:
        if w.flavor:
            found = self.by_name.get(w.flavor)
            if found is None:
                return f"flavor {w.flavor!r} does not exist; flavors: {', '.join(f.name for f in self.all)}"
            return found
        key = (w.needs, w.volume_gb)
        got = self.memo.get(key)
        if got is None:
            got = self.memo[key] = self._cheapest(w.needs, w.volume_gb)
        return got

    def _cheapest(self, needs: Needs, volume_gb: int) -> Flavor | str:
        if volume_gb and volume_gb * 1024 < needs.disk_mb:
            return (f"the job's data volume of {volume_gb} GB is smaller than the {_gb(needs.disk_mb)} GB its "
                    "workflow needs (tmpdirMin + outdirMin)")
        for f in self.allowed:
            if f.vcpus >= needs.cores and f.ram_mb >= needs.ram_mb and (volume_gb or f.disk_gb * 1024 >= needs.disk_mb):
                return f
        if not self.allowed:
            names = ", ".join(f.name for f in self.all) or "none"
            return f"no flavor matches flavors.allow {self.allow!r}; flavors: {names}"
        big = self.allowed[-1]
        return (f"no allowed flavor fits the job: it needs {needs.describe()}; the largest allowed flavor, "
                f"{big.name}, has {big.vcpus} vCPUs, {big.ram_mb} MB RAM, {big.disk_gb} GB disk")


def flavor_allowed(name: str, allow: str | None) -> bool:
    """Whether `flavors.allow` lets the scheduler pick flavor `name`: the regex is searched in the
    name (as wr's `--flavor`): anchor it (`^m1[.]`) to mean a prefix."""
    return allow is None or _compiled(allow).search(name) is not None


@functools.lru_cache(maxsize=16)
def _compiled(allow: str) -> re.Pattern[str]:
    return re.compile(allow)


def choose_flavor(needs: Needs, flavors: Sequence[Flavor], allow: str | None = None, *,
                  named: str | None = None, volume_gb: int = 0) -> Flavor:
    """The flavor a job gets (see the module's doc); raises NoFlavorFits saying why none does."""
    got = _FlavorChooser(flavors, allow).choose(WaitingJob(id=0, created=0.0, needs=needs, flavor=named,
                                                           volume_gb=volume_gb))
    if isinstance(got, str):
        raise NoFlavorFits(got)
    return got


class NoFlavorFits(ValueError):
    pass


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


def _gb(mb: int) -> str:
    return f"{mb / 1024:.1f}".removesuffix(".0")
