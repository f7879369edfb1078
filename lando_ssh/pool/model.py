"""A pool VM as a record of its own: its size, what it holds, where it is in its life. Pure, no I/O.

`PoolVm.reserve` and `PoolVm.release` are the only ways jobs come onto and leave a VM; the store runs them
inside one transaction on the VM's row (`VmStore.reserve`), so the check "does it still fit" and the write
are one step, between threads and between servers. A VM is never given more vCPUs, RAM or disk than its
flavor (or data volume) has.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lando_ssh.model import iso, now, parse_time


class PoolState(enum.StrEnum):
    BOOTING = "booting"  # asked of the cloud, not yet answering SSH
    IDLE = "idle"  # answering, no job on it (since `idle_since`)
    BUSY = "busy"  # answering, one job or more on it
    DRAINING = "draining"  # no new job is placed on it; deleted once empty
    DELETING = "deleting"  # its deletion was asked of the cloud
    DELETED = "deleted"  # gone (the record stays, for usage reports)


#: states in which a VM may take a new job
PLACEABLE = frozenset({PoolState.BOOTING, PoolState.IDLE, PoolState.BUSY})
#: states of a VM that exists (or may) in the cloud
LIVE = frozenset({PoolState.BOOTING, PoolState.IDLE, PoolState.BUSY, PoolState.DRAINING, PoolState.DELETING})


@dataclass(frozen=True, order=True)
class Resources:
    """vCPUs, RAM and disk in MiB (as CWL and Nova count)."""

    vcpus: int = 0
    ram_mb: int = 0
    disk_mb: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.vcpus + other.vcpus, self.ram_mb + other.ram_mb, self.disk_mb + other.disk_mb)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.vcpus - other.vcpus, self.ram_mb - other.ram_mb, self.disk_mb - other.disk_mb)

    def covers(self, need: Resources) -> bool:
        return self.vcpus >= need.vcpus and self.ram_mb >= need.ram_mb and self.disk_mb >= need.disk_mb

    def describe(self) -> str:
        disk = f", {self.disk_mb} MB disk" if self.disk_mb else ""
        return f"{self.vcpus} vCPUs, {self.ram_mb} MB RAM{disk}"


@dataclass(frozen=True)
class Tenancy:
    """A job on a VM: what it reserved, since when."""

    job_id: int
    needs: Resources
    since: datetime


@dataclass(frozen=True)
class Stay:
    """A job that was on a VM: what it reserved, from when until when (for accounting)."""

    job_id: int
    needs: Resources
    since: datetime
    until: datetime


class NoRoom(Exception):
    """`reserve` refused: the VM cannot take the job now (the sentence says why)."""


@dataclass
class PoolVm:
    """One VM of the pool. `id` is the store's; `cloud_id` the cloud's (None until the cloud answered)."""

    id: int
    name: str
    flavor: str
    size: Resources  # the flavor's vCPUs and RAM; disk: the data volume's size, else the flavor's root disk
    image: str
    project: str | None  # the OpenStack project it is in (None: the configured one)
    owner: str  # whose jobs it serves under pool.share owner ("" under other policies)
    share_key: str  # jobs with this key may share it: "job:N", "owner:NAME", "project:P", "any"
    installation: str  # cloud.installation_id of the server that made it
    state: PoolState = PoolState.BOOTING
    cloud_id: str | None = None
    volume_gb: int = 0
    address: str | None = None
    port: int = 22
    user: str | None = None
    work_dir: str | None = None  # under which its jobs keep their directories
    host_keys: list[str] = field(default_factory=list)
    key_path: str | None = None  # the VM's own private key (not a job's), 0600
    jobs: list[Tenancy] = field(default_factory=list)
    past: list[Stay] = field(default_factory=list)  # the jobs it held before, in the order they left
    served: int = 0  # jobs ever placed on it
    idle_since: datetime | None = None
    unreachable_since: datetime | None = None  # the last health check failed (None: it answered)
    created: datetime = field(default_factory=now)
    deleted: datetime | None = None
    reason: str = ""  # why it is draining or was deleted, one sentence

    # -- what it holds ------------------------------------------------------------------------------
    @property
    def used(self) -> Resources:
        total = Resources()
        for t in self.jobs:
            total = total + t.needs
        return total

    @property
    def free(self) -> Resources:
        return self.size - self.used

    @property
    def job_ids(self) -> list[int]:
        return [t.job_id for t in self.jobs]

    def holds(self, job_id: int) -> bool:
        return self.tenancy(job_id) is not None

    def tenancy(self, job_id: int) -> Tenancy | None:
        """Job `job_id`'s place on this VM (what it reserved, since when), or None."""
        return next((t for t in self.jobs if t.job_id == job_id), None)

    # -- jobs coming and going (run inside the store's transaction) ---------------------------------
    def reserve(self, job_id: int, needs: Resources, at: datetime | None = None) -> None:
        """Put job `job_id` on this VM, or raise NoRoom. Reserving a job already here changes nothing."""
        if self.holds(job_id):
            return
        if self.state not in PLACEABLE:
            raise NoRoom(f"VM {self.name} is {self.state.value}: it takes no new job")
        if not self.free.covers(needs):
            raise NoRoom(f"VM {self.name} has {self.free.describe()} free; job {job_id} needs {needs.describe()}")
        self.jobs.append(Tenancy(job_id, needs, at or now()))
        self.served += 1
        self.idle_since = None
        if self.state == PoolState.IDLE:
            self.state = PoolState.BUSY

    def release(self, job_id: int, at: datetime | None = None) -> None:
        """Take job `job_id` off this VM (nothing happens when it is not here); an answering VM left empty is
        idle from now, a draining one stays draining (the pool deletes it)."""
        at = at or now()
        leaving = [t for t in self.jobs if t.job_id == job_id]
        if not leaving:
            return
        self.jobs = [t for t in self.jobs if t.job_id != job_id]
        self.past.extend(Stay(t.job_id, t.needs, t.since, max(at, t.since)) for t in leaving)
        if self.jobs:
            return
        if self.state == PoolState.BUSY:
            self.state = PoolState.IDLE
        if self.state in (PoolState.IDLE, PoolState.DRAINING):
            self.idle_since = at

    def evict_all(self, at: datetime | None = None) -> list[int]:
        """Take every job off (the VM is going away under them); returns their ids."""
        gone = self.job_ids
        for job_id in gone:
            self.release(job_id, at)
        return gone

    def mark_ready(self, at: datetime | None = None) -> None:
        """The VM answered SSH for the first time: idle or busy, by what it holds."""
        if self.state != PoolState.BOOTING:
            return
        self.state = PoolState.BUSY if self.jobs else PoolState.IDLE
        self.idle_since = None if self.jobs else (at or now())

    def drain(self, reason: str) -> None:
        if self.state in (PoolState.DELETING, PoolState.DELETED):
            return
        self.state = PoolState.DRAINING
        self.reason = reason
        if not self.jobs and self.idle_since is None:
            self.idle_since = now()

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["state"] = self.state.value
        d["size"] = dataclasses.asdict(self.size)
        d["host_keys"] = list(self.host_keys)
        d["jobs"] = [{"job_id": t.job_id, "needs": dataclasses.asdict(t.needs), "since": iso(t.since)}
                     for t in self.jobs]
        d["past"] = [{"job_id": s.job_id, "needs": dataclasses.asdict(s.needs), "since": iso(s.since),
                      "until": iso(s.until)} for s in self.past]
        for key in ("idle_since", "unreachable_since", "created", "deleted"):
            d[key] = iso(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolVm:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}  # (a field a later version dropped is ignored)
        d["state"] = PoolState(d["state"])
        d["size"] = Resources(**d["size"])
        d["jobs"] = [Tenancy(int(t["job_id"]), Resources(**t["needs"]), parse_time(t["since"]) or now())
                     for t in d.get("jobs", [])]
        d["past"] = [Stay(int(s["job_id"]), Resources(**s["needs"]), parse_time(s["since"]) or now(),
                          parse_time(s["until"]) or now()) for s in d.get("past", [])]
        for key in ("idle_since", "unreachable_since", "deleted"):
            d[key] = parse_time(d.get(key))
        d["created"] = parse_time(d.get("created")) or now()
        return cls(**d)
