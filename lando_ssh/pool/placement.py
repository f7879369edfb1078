"""Where waiting jobs go in the pool: onto a VM with room, onto a VM to boot, or nowhere yet (and why); and
which empty VMs to delete. Pure: it decides over records and returns typed decisions; `manager.py` and the
job driver apply them.

Each round, jobs in the scheduler's order (priority, then age):
1. a job goes onto a live VM (booting, idle or busy; never draining) of its image, project and share key
   whose free vCPUs, RAM and disk cover its needs: partly used VMs first (best fit), then idle ones;
2. the others get boots (`packing.bins`): each its cheapest fitting allowed flavor, or with `pool.pack` one
   larger flavor for several jobs when it costs no more; a later job may ride on a boot of this round;
3. every step passes the limits of `scheduler.py` (job slots, max VMs/cores/RAM, the cloud's quota, the
   reservation of long-waiting jobs) with the same sentences ("waiting: 4 of 4 job slots busy");
4. an empty VM is deleted when its keep-alive is over, when it stopped answering, when it is drained, under
   `pool.share: job` at once, and when a job waits for the room it holds (instances, cores, RAM).
The store's `reserve` re-checks every placement when it is applied: this plan never oversubscribes, and a
VM another server filled meanwhile refuses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lando_ssh.cloud import Flavor, Quota
from lando_ssh.flavors import FlavorChooser
from lando_ssh.pool.model import LIVE, PLACEABLE, PoolState, PoolVm, Resources
from lando_ssh.pool.packing import Bin, Candidate, bins, partial
from lando_ssh.pool.policy import PoolPolicy, Share, share_key
from lando_ssh.scheduler import ActiveVm, LimitDim, Limits, WaitingJob, limit_dimensions, never_fits, waiting_job

if TYPE_CHECKING:
    from lando_ssh.config import Config
    from lando_ssh.model import Job


@dataclass(frozen=True)
class PoolJob:
    """A waiting job as the pool sees it: the scheduler's facts, and what decides whom it may share with."""

    waiting: WaitingJob
    image: str
    project: str | None
    owner: str

    @property
    def id(self) -> int:
        return self.waiting.id


def pool_job(job: Job, config: Config) -> PoolJob:
    """A waiting job record as the pool sees it (parses its packed workflow: build it once per job). Image: the
    job's, else `vm.image`; project: the one its job source places it in (bespin-api's `vm_project`), None for
    the configured one; owner: who submitted it (the Unix user, or bespin-api's job owner)."""
    placement = (job.facts.get("bespin") or {}).get("cloud_settings") or {}
    return PoolJob(waiting_job(job, config.vm.volume_size, has_vm=False), image=job.vm_spec.image or config.vm.image,
                   project=placement.get("vm_project") or None, owner=job.user or "-")


# -- the decisions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlaceJob:
    job_id: int
    vm_id: int
    needs: Resources  # what to reserve (`VmStore.reserve`)


@dataclass(frozen=True)
class BootVm:
    flavor: Flavor
    jobs: tuple[tuple[int, Resources], ...]  # (job id, what it reserves), in order
    image: str
    project: str | None
    owner: str
    share_key: str
    volume_gb: int = 0

    @property
    def job_ids(self) -> list[int]:
        return [j for j, _ in self.jobs]


@dataclass(frozen=True)
class DeleteVm:
    vm_id: int
    reason: str


@dataclass
class PoolDecision:
    place: list[PlaceJob] = field(default_factory=list)
    boot: list[BootVm] = field(default_factory=list)
    delete: list[DeleteVm] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # job id -> why it waits (one sentence)
    failed: dict[int, str] = field(default_factory=dict)  # job id -> why it can never start as asked
    blocked_by: dict[int, str] = field(default_factory=dict)  # job id -> the limit it waits for (metrics)
    reserving: list[int] = field(default_factory=list)  # jobs holding capacity (waited past reserve_after)


# -- the plan --------------------------------------------------------------------------------------
@dataclass
class _Room:
    """A live VM (or one planned this round) as the plan fills it."""

    key: tuple[str, str | None, str]  # image, project, share key
    free: Resources
    vm: PoolVm | None = None
    boot: Bin | None = None
    used_now: bool = False


def plan(jobs: Sequence[PoolJob], vms: Sequence[PoolVm], *, flavors: Sequence[Flavor], policy: PoolPolicy,
         limits: Limits, quota: Quota | None, now: float, allow: str | None = None, reserve_after: float = 600.0,
         running_jobs: int | None = None, other_vms: Sequence[ActiveVm] = (),
         silence_grace: float = 0.0, arriving: bool = False) -> PoolDecision:
    """The round's decisions (see the module's doc). `vms`: the pool's records (any state); `running_jobs`: job
    slots in use (default: the jobs on live pool VMs); `other_vms`: VMs outside the pool our jobs hold;
    `silence_grace`: seconds an idle VM may fail its health checks before it is deleted (none is placed on it
    meanwhile): one dropped probe does not cost a warm VM. `arriving`: more jobs are on their way (the daemon
    stopped gathering a burst at its cap); with `pool.pack`, jobs too few to fill a larger flavor wait for them
    (`partial`) instead of booting small VMs that would hold VM slots a packed one could share."""
    live = [vm for vm in vms if vm.state in LIVE]
    active = [ActiveVm(vm.size.vcpus, vm.size.ram_mb, counted_by_cloud=vm.cloud_id is not None) for vm in live]
    if running_jobs is None:
        running_jobs = sum(len(vm.jobs) for vm in live)
    dims = limit_dimensions([*active, *other_vms], running_jobs, limits, quota)
    slots = [d for d in dims if d.key == "jobs"]
    chooser = FlavorChooser(flavors, allow)
    rooms = _Rooms()
    for vm in live:
        if vm.state in PLACEABLE and vm.unreachable_since is None:
            rooms.add(_Room((vm.image, vm.project, vm.share_key), vm.free, vm=vm))
    decision = PoolDecision()
    to_boot: list[tuple[PoolJob, Candidate]] = []
    by_id = {j.id: j for j in jobs}
    for job in sorted(jobs, key=lambda j: (-j.waiting.priority, j.waiting.created, j.id)):
        flavor = chooser.choose(job.waiting.needs, job.waiting.volume_gb, job.waiting.flavor)
        if isinstance(flavor, str):
            decision.failed[job.id] = flavor
            continue
        needs = _needs(job, flavor)
        room = _best_room(rooms.of(_key(job, policy)), needs)
        if room is None:
            to_boot.append((job, Candidate(job.id, needs, flavor, job.waiting.volume_gb, bool(job.waiting.flavor))))
            continue
        if _admit(decision, slots, job, {"jobs": 1}, now, reserve_after):
            assert room.vm is not None
            room.free, room.used_now = room.free - needs, True
            decision.place.append(PlaceJob(job.id, room.vm.id, needs))
    boots = _boots(to_boot, policy, chooser)
    if arriving and policy.pack:
        boots = _hold_partial(decision, boots, chooser.allowed)
    starved = _admit_boots(decision, dims, boots, rooms, by_id, policy, now, reserve_after)
    _deletions(decision, live, rooms, policy, now, starved, silence_grace)
    return decision


def _needs(job: PoolJob, flavor: Flavor) -> Resources:
    """What the job reserves on a VM: its workflow's needs (a flavor it names: that flavor's vCPUs and RAM);
    disk: its data volume, else what its workflow states."""
    w = job.waiting
    disk = max(w.needs.disk_mb, w.volume_gb * 1024)
    if w.flavor:
        return Resources(flavor.vcpus, flavor.ram_mb, disk)
    return Resources(w.needs.cores, w.needs.ram_mb, disk)


def _key(job: PoolJob, policy: PoolPolicy) -> tuple[str, str | None, str]:
    return job.image, job.project, share_key(policy.share, job.id, job.owner, job.project)


class _Rooms:
    """The rooms by key (image, project, share key): a job looks only at those it may use."""

    def __init__(self) -> None:
        self.all: list[_Room] = []
        self.by_key: dict[tuple[str, str | None, str], list[_Room]] = {}

    def add(self, room: _Room) -> None:
        self.all.append(room)
        self.by_key.setdefault(room.key, []).append(room)

    def of(self, key: tuple[str, str | None, str], booting_now: bool = False) -> list[_Room]:
        rooms = self.by_key.get(key, [])
        return [r for r in rooms if r.boot is not None] if booting_now else rooms


def _best_room(rooms: Sequence[_Room], needs: Resources) -> _Room | None:
    fits = [r for r in rooms if r.free.covers(needs)]
    if not fits:
        return None

    def preference(r: _Room) -> tuple[int, int, int, int]:
        empty = r.vm is not None and not r.vm.jobs and not r.used_now
        left = r.free - needs
        return (1 if empty else 0, left.vcpus, left.ram_mb, r.vm.id if r.vm else 0)

    return min(fits, key=preference)


def _boots(to_boot: Sequence[tuple[PoolJob, Candidate]], policy: PoolPolicy,
           chooser: FlavorChooser) -> list[tuple[tuple[str, str | None, str], Bin]]:
    """The bins to boot, each with its key, in the order of their first job."""
    groups: dict[tuple[str, str | None, str], list[Candidate]] = {}
    for job, candidate in to_boot:
        groups.setdefault(_key(job, policy), []).append(candidate)
    order = {c.job_id: i for i, (_, c) in enumerate(to_boot)}
    out = [(key, b) for key, group in groups.items() for b in bins(group, chooser.allowed, policy.pack)]
    return sorted(out, key=lambda kb: order[kb[1].members[0].job_id])


def _admit_boots(decision: PoolDecision, dims: list[LimitDim], boots: list[tuple[tuple[str, str | None, str], Bin]],
                 rooms: _Rooms, jobs: dict[int, PoolJob], policy: PoolPolicy, now: float,
                 reserve_after: float) -> list[int]:
    """Admit the bins in order; a bin the limits refuse is tried again job by job on their own flavors (or on a
    boot of this round with room). Returns the jobs waiting for instances, cores or RAM."""
    starved: list[int] = []
    for key, b in boots:
        tries = [b]
        if len(b.members) > 1 and not _fits_now(dims, _boot_needs(b)):  # too big now: each on its own flavor
            tries = [Bin(c.cheapest, [c]) for c in b.members]
        for one in tries:
            first = one.members[0]
            if len(one.members) == 1:
                ride = _best_room(rooms.of(key, booting_now=True), first.needs)
                if ride is not None:  # on a VM booting this round, with room for it
                    if _admit(decision, [d for d in dims if d.key == "jobs"], jobs[first.job_id], {"jobs": 1}, now,
                              reserve_after):
                        assert ride.boot is not None
                        ride.boot.members.append(first)
                        ride.free = ride.free - first.needs
                    continue
            never = never_fits(dims, _boot_needs(Bin(first.cheapest, [first])), first.cheapest)
            if never:
                for c in one.members:
                    decision.failed[c.job_id] = never
                continue
            if _admit(decision, dims, jobs[first.job_id], _boot_needs(one), now, reserve_after,
                      others=[c.job_id for c in one.members[1:]]):
                rooms.add(_Room(key, one.free, boot=one))
            elif decision.blocked_by.get(first.job_id, "").rsplit(".", 1)[-1] not in ("max_concurrent_jobs", "jobs"):
                starved.append(first.job_id)
    for room in rooms.all:
        if room.boot is not None:
            b, (image, project, share) = room.boot, room.key
            owner = jobs[b.members[0].job_id].owner if policy.share == Share.OWNER else ""
            decision.boot.append(BootVm(b.flavor, tuple((c.job_id, c.needs) for c in b.members), image, project,
                                        owner, share, b.volume_gb))
    return starved


ARRIVING = "waiting: more jobs are arriving; it boots with them on one larger VM"


def _hold_partial(decision: PoolDecision, boots: list[tuple[tuple[str, str | None, str], Bin]],
                  allowed: Sequence[Flavor]) -> list[tuple[tuple[str, str | None, str], Bin]]:
    """The boots to make now; a bin a larger allowed flavor would hold with room to spare waits (its jobs are
    told why) for the jobs still arriving, to be packed with them in the next round."""
    kept = []
    for key, b in boots:
        if partial(b, allowed):
            decision.waiting.update({c.job_id: ARRIVING for c in b.members})
        else:
            kept.append((key, b))
    return kept


def _boot_needs(b: Bin) -> dict[str, int]:
    return {"jobs": len(b.members), "vms": 1, "cores": b.flavor.vcpus, "ram": b.flavor.ram_mb}


def _fits_now(dims: Sequence[LimitDim], needs: dict[str, int]) -> bool:
    return all(needs[d.key] <= d.limit - d.used - d.reserved for d in dims)


def _admit(decision: PoolDecision, dims: Sequence[LimitDim], job: PoolJob, needs: dict[str, int], now: float,
           reserve_after: float, others: Sequence[int] = ()) -> bool:
    """Take `needs` from the limits for `job` (and `others` riding with it), or record why they wait."""
    for d in dims:
        need = needs[d.key]
        if need > d.limit - d.used - d.reserved:
            reason = d.reason(need, held=need <= d.limit - d.used)
            for job_id in (job.id, *others):
                decision.waiting[job_id] = reason
                decision.blocked_by[job_id] = d.source if d.source != "quota" else f"quota.{d.key}"
            w = job.waiting
            if now - (w.since if w.since is not None else w.created) >= reserve_after:
                decision.reserving.append(job.id)
                for r in dims:
                    r.reserved += needs[r.key]
                    if r.reserved_by is None:
                        r.reserved_by = job.id
            return False
    for d in dims:
        d.used += needs[d.key]
    return True


def _deletions(decision: PoolDecision, live: Sequence[PoolVm], rooms: _Rooms, policy: PoolPolicy,
               now: float, starved: Sequence[int], silence_grace: float) -> None:
    used = {r.vm.id for r in rooms.all if r.vm is not None and r.used_now}
    spare: list[PoolVm] = []
    for vm in live:
        if vm.jobs or vm.id in used or vm.state not in (PoolState.IDLE, PoolState.DRAINING):
            continue
        idle_for = now - vm.idle_since.timestamp() if vm.idle_since else 0.0
        if vm.state == PoolState.DRAINING:
            why = f"drained ({vm.reason})" if vm.reason else "drained"
        elif vm.unreachable_since is not None:
            if now - vm.unreachable_since.timestamp() < silence_grace:
                continue  # (not placed on meanwhile, nor given up for a waiting job's room: it may answer again)
            why = "idle and stopped answering SSH"
        elif vm.share_key.startswith("job:"):
            why = "its job is done (pool.share job: a VM serves one job)"
        elif idle_for >= policy.keepalive:
            why = f"idle for {idle_for:.0f} s (vm.keepalive {policy.keepalive:g} s)"
        else:
            spare.append(vm)
            continue
        decision.delete.append(DeleteVm(vm.id, why))
    spare.sort(key=lambda vm: vm.idle_since.timestamp() if vm.idle_since else now)  # the longest idle first
    for job_id, vm in zip(starved, spare, strict=False):
        decision.delete.append(DeleteVm(vm.id, f"idle; job {job_id} waits for the room it holds"))

