"""Which flavor to boot for jobs that found no room on a VM: each job's cheapest fitting allowed flavor, or,
with `pool.pack`, one larger flavor for several jobs when it costs no more than their small ones. Pure.

Cost is a flavor's vCPUs (what clouds bill and quotas count); between flavors of equal cost, fewer boots
win: one VM of 4 vCPUs for four 1-vCPU jobs costs as much as four VMs of 1 vCPU, boots once and takes one
instance of the quota. Bins are filled in the jobs' order (priority, then age), first fit.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lando_ssh.cloud import Flavor
from lando_ssh.pool.model import Resources


@dataclass(frozen=True)
class Candidate:
    """A job to boot for: what it reserves on a VM and its own cheapest flavor."""

    job_id: int
    needs: Resources
    cheapest: Flavor
    volume_gb: int = 0  # its own data volume: it boots alone (a volume is one job's disk)
    named: bool = False  # it named its flavor: it gets that one, alone


@dataclass
class Bin:
    flavor: Flavor
    members: list[Candidate] = field(default_factory=list)

    @property
    def free(self) -> Resources:
        used = Resources()
        for c in self.members:
            used = used + c.needs
        return capacity(self.flavor, self.volume_gb) - used

    @property
    def volume_gb(self) -> int:
        return sum(c.volume_gb for c in self.members)


def cost(flavor: Flavor) -> int:
    return flavor.vcpus


def capacity(flavor: Flavor, volume_gb: int = 0) -> Resources:
    """What a VM of `flavor` holds: its vCPUs and RAM; disk: its data volume's, else the flavor's root disk."""
    return Resources(flavor.vcpus, flavor.ram_mb, (volume_gb or flavor.disk_gb) * 1024)


def bins(candidates: Sequence[Candidate], allowed: Sequence[Flavor], pack: bool) -> list[Bin]:
    """Boots for `candidates` (all of one image, project and share key), in the order of their first job."""
    out: list[Bin] = []
    rest = list(candidates)
    while rest:
        first = rest[0]
        if first.volume_gb or first.named or not pack:
            out.append(Bin(first.cheapest, [first]))
            rest.pop(0)
            continue
        best = Bin(first.cheapest, [first])
        for flavor in allowed:
            trial = _fill(flavor, [c for c in rest if not (c.volume_gb or c.named)])
            if not trial.members or trial.members[0].job_id != first.job_id:
                continue
            if cost(flavor) > sum(cost(c.cheapest) for c in trial.members):
                continue  # dearer than the jobs' own flavors
            if (len(trial.members), -cost(flavor)) > (len(best.members), -cost(best.flavor)):
                best = trial
        out.append(best)
        taken = {c.job_id for c in best.members}
        rest = [c for c in rest if c.job_id not in taken]
    return out


def partial(b: Bin, allowed: Sequence[Flavor]) -> bool:
    """Whether a larger allowed flavor would hold all of `b`'s jobs with vCPUs to spare: more jobs like them would
    pack there (never so for a job with its own flavor or data volume, which boots alone)."""
    if any(c.named or c.volume_gb for c in b.members):
        return False
    for flavor in allowed:
        if cost(flavor) > cost(b.flavor):
            trial = _fill(flavor, b.members)
            if len(trial.members) == len(b.members) and trial.free.vcpus > 0:
                return True
    return False


def _fill(flavor: Flavor, candidates: Sequence[Candidate]) -> Bin:
    b = Bin(flavor)
    free = capacity(flavor)
    for c in candidates:
        if free.covers(c.needs):
            b.members.append(c)
            free = free - c.needs
            if free.vcpus == 0:
                break
    return b
