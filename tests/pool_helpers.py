"""Building blocks of the pool tests: flavors, waiting jobs and VM records in a line each."""
from __future__ import annotations

from datetime import UTC, datetime

from lando_ssh.cloud import Flavor
from lando_ssh.flavors import Needs
from lando_ssh.pool.model import PoolState, PoolVm, Resources, Tenancy
from lando_ssh.pool.placement import PoolJob
from lando_ssh.scheduler import WaitingJob

SMALL = Flavor("m1.small", "1", 1, 2048, 20)
MEDIUM = Flavor("m1.medium", "2", 2, 4096, 40)
LARGE = Flavor("m1.large", "3", 4, 8192, 80)
FLAVORS = [SMALL, MEDIUM, LARGE]
T0 = 1_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def job(job_id: int, cores: int = 1, ram_mb: int = 1024, *, owner: str = "ann", project: str | None = None,
        image: str = "local", priority: int = 0, flavor: str | None = None, disk_mb: int = 0,
        volume_gb: int = 0, created: float = T0) -> PoolJob:
    w = WaitingJob(id=job_id, created=created + job_id / 1000, priority=priority, needs=Needs(cores, ram_mb, disk_mb),
                   flavor=flavor, volume_gb=volume_gb)
    return PoolJob(w, image=image, project=project, owner=owner)


def vm(vm_id: int, flavor: Flavor = LARGE, *, state: PoolState = PoolState.IDLE, share_key: str = "owner:ann",
       jobs: dict[int, Resources] | None = None, idle_since: float | None = T0, image: str = "local",
       project: str | None = None) -> PoolVm:
    v = PoolVm(id=vm_id, name=f"vm-{vm_id}" if vm_id else "", flavor=flavor.name,
               size=Resources(flavor.vcpus, flavor.ram_mb, flavor.disk_gb * 1024), image=image, project=project,
               owner="ann", share_key=share_key, installation="t", state=state, cloud_id=f"c{vm_id}")
    for job_id, needs in (jobs or {}).items():
        v.jobs.append(Tenancy(job_id, needs, at(T0)))
    if v.jobs and state == PoolState.IDLE:
        v.state = PoolState.BUSY
    v.idle_since = None if v.jobs or idle_since is None else at(idle_since)
    return v
