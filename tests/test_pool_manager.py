"""The pool driver over the in-memory cloud, SSH and VM store (tests/fakes; the real stores have their own
tests, test_pool_store.py): boots, reuse,
keep-alive, sharing, packing, drain, health, cloud faults, adoption after a crash at each point of a VM's
life, and a chaos run that never oversubscribes a VM, finishes every job once and leaks no VM."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from fakes import Crash, FakeCloud, FakeLauncher, FakeRemotes, MemoryVmStore
from pool_helpers import FLAVORS, T0, job

from lando_ssh.cloud import VmRequest
from lando_ssh.pool.manager import PoolManager, PoolSettings, RoundResult
from lando_ssh.pool.model import LIVE, PoolState, PoolVm
from lando_ssh.pool.placement import PoolJob
from lando_ssh.pool.policy import PoolPolicy, Share
from lando_ssh.pool.store import VmStore
from lando_ssh.scheduler import Limits

TAGS = {"managed_by": "lando-ssh", "lando_installation": "t", "lando_installation_token": "abc"}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class Pool:
    store: VmStore
    cloud: FakeCloud
    clock: Clock
    remotes: FakeRemotes
    launcher: FakeLauncher = field(default_factory=lambda: FakeLauncher(TAGS))

    def manager(self, share: Share = Share.OWNER, pack: bool = True, keepalive: float = 120,
                limits: Limits = Limits(), **settings: float) -> PoolManager:
        s = PoolSettings(installation="t", tags=TAGS, health_interval=0, boot_timeout=600, adopt_grace=600)
        s = PoolSettings(**{**vars(s), **settings})  # type: ignore[arg-type]
        return PoolManager(self.store, self.cloud, self.launcher, self.remotes,
                           policy=PoolPolicy(share, pack, keepalive), limits=limits, settings=s, clock=self.clock)

    def vm(self, vm_id: int) -> PoolVm:
        return self.store.get(vm_id)

    def live(self) -> list[PoolVm]:
        return self.store.list(LIVE)


@pytest.fixture
def pool() -> Pool:
    cloud = FakeCloud(FLAVORS)
    return Pool(MemoryVmStore(), cloud, Clock(), FakeRemotes(cloud))


def ready(m: PoolManager, jobs: list[PoolJob] | None = None) -> RoundResult:
    """A round, then one more so the VMs it asked for answer (the fake cloud boots on the first look)."""
    first = m.round(jobs or [])
    second = m.round([])
    first.reconciled.booted.extend(second.reconciled.booted)
    return first


def test_a_vm_booted_for_one_job_serves_the_next_and_is_deleted_after_its_keepalive(pool: Pool) -> None:
    m = pool.manager()
    r = ready(m, [job(1)])
    vm_id = r.placed[1]
    assert r.booting == [vm_id] and r.reconciled.booted == [vm_id]
    assert pool.vm(vm_id).state == PoolState.BUSY and pool.vm(vm_id).address
    m.job_done(1)
    assert pool.vm(vm_id).state == PoolState.IDLE
    pool.clock.t += 60
    r = m.round([job(2)])
    assert r.placed == {2: vm_id} and r.booting == [] and pool.vm(vm_id).served == 2
    m.job_done(2)
    pool.clock.t += 119
    assert m.round([]).deleted == []
    pool.clock.t += 2
    assert m.round([]).deleted == [vm_id]
    assert pool.cloud.vms == {} and pool.vm(vm_id).state == PoolState.DELETED and pool.vm(vm_id).deleted
    assert len(pool.cloud.created) == 1


def test_keepalive_zero_deletes_a_vm_as_soon_as_its_jobs_are_done(pool: Pool) -> None:
    m = pool.manager(keepalive=0)
    vm_id = ready(m, [job(1)]).placed[1]
    m.job_done(1)
    assert m.round([]).deleted == [vm_id] and pool.cloud.vms == {}


def test_share_job_boots_a_vm_per_job_and_owner_keeps_users_apart(pool: Pool) -> None:
    m = pool.manager(share=Share.JOB)
    first = ready(m, [job(1)]).placed[1]
    m.job_done(1)
    r = m.round([job(2)])
    assert r.placed[2] != first and r.deleted == [first]
    m = pool.manager(share=Share.OWNER)
    ann = ready(m, [job(3)]).placed[3]
    m.job_done(3)
    r = m.round([job(4, owner="bob"), job(5)])
    assert r.placed[5] == ann and r.placed[4] not in (ann, first)


def test_packing_boots_one_vm_for_four_small_jobs_and_never_past_its_size(pool: Pool) -> None:
    m = pool.manager()
    r = ready(m, [job(i) for i in range(1, 6)])
    vms = {r.placed[i] for i in range(1, 6)}
    assert len(vms) == 2 and sorted(pool.vm(v).flavor for v in vms) == ["m1.large", "m1.small"]
    for v in pool.live():
        assert v.size.covers(v.used)


def test_a_drained_vm_takes_no_new_job_and_goes_when_its_jobs_are_done(pool: Pool) -> None:
    m = pool.manager()
    vm_id = ready(m, [job(1, cores=1)]).placed[1]
    name = pool.vm(vm_id).name
    m.drain(name)
    assert pool.vm(vm_id).state == PoolState.DRAINING
    r = m.round([job(2)])
    assert r.placed[2] != vm_id and r.deleted == []
    m.job_done(1)
    r = m.round([])
    assert r.deleted == [vm_id] and pool.vm(vm_id).reason == "drained (lando-ssh drain)"


def test_an_idle_vm_that_stops_answering_is_deleted_a_busy_one_is_left_to_its_jobs(pool: Pool) -> None:
    m = pool.manager()
    idle = ready(m, [job(1)]).placed[1]
    busy = ready(m, [job(2, owner="bob")]).placed[2]
    m.job_done(1)
    for v in (idle, busy):
        pool.cloud.silence(pool.vm(v).cloud_id or "")
    r = m.round([job(3)])  # the health check finds it silent; placement deletes it, and places nothing there
    assert r.deleted == [idle] and pool.vm(idle).unreachable_since is not None and r.placed[3] != idle
    assert pool.vm(idle).reason == "idle and stopped answering SSH"
    assert pool.vm(busy).state == PoolState.BUSY and busy not in m.round([]).deleted


def test_a_vm_the_cloud_fails_to_create_leaves_its_jobs_waiting_with_the_reason(pool: Pool) -> None:
    pool.cloud.create_error_rate = 1.0
    m = pool.manager()
    r = m.round([job(1)])
    assert r.placed == {} and "the cloud did not create a VM" in r.waiting[1]
    assert pool.live() == [] and pool.cloud.vms == {}
    pool.cloud.create_error_rate, pool.cloud.max_instances, pool.cloud.report_quota = 0.0, 0, False
    assert m.round([job(1)]).waiting[1] == "waiting for cloud quota: Quota exceeded for instances: 0 of 0 in use"
    assert pool.live() == []
    pool.cloud.report_quota = True  # a quota the cloud tells: the plan holds the job back itself
    assert m.round([job(1)]).failed[1] == ("the job needs 1 instances on flavor m1.small but the cloud's "
                                            "quota allows 0 in all")
    pool.cloud.max_instances = None
    assert "does not exist" in m.round([job(1, image="nope")]).failed[1]


def test_a_boot_that_hangs_or_dies_is_deleted_and_its_jobs_lost_to_be_restarted(pool: Pool) -> None:
    pool.cloud.hang_rate = 1.0
    m = pool.manager(boot_timeout=300)
    vm_id = m.round([job(1)]).placed[1]
    pool.clock.t += 301
    r = m.round([])
    assert r.lost == {1: f"its VM {pool.vm(vm_id).name} did not answer within vm.boot_timeout (300 s)"}
    assert pool.cloud.vms == {} and pool.vm(vm_id).state == PoolState.DELETED
    pool.cloud.hang_rate = 0.0
    vm_id = m.round([job(2)]).placed[2]
    pool.cloud.die(pool.vm(vm_id).cloud_id or "")
    r = m.round([])
    assert "failed in the cloud: the host failed" in r.lost[2] and pool.cloud.vms == {}


def test_a_busy_vm_that_vanishes_from_the_cloud_loses_its_jobs(pool: Pool) -> None:
    m = pool.manager()
    vm_id = ready(m, [job(1)]).placed[1]
    pool.cloud.vanish(pool.vm(vm_id).cloud_id or "")
    assert m.round([]).lost == {1: f"its VM {pool.vm(vm_id).name} is gone from the cloud"}


def test_a_server_learns_its_job_was_lost_when_another_server_noticed_the_vm_die(pool: Pool) -> None:
    a, b = pool.manager(), pool.manager()
    vm_id = ready(a, [job(1)]).placed[1]
    assert a.gone([1]) == {}
    pool.cloud.die(pool.vm(vm_id).cloud_id or "")
    assert list(b.round([]).lost) == [1]  # b noticed; a's own round will not report it again
    assert a.round([]).lost == {}
    assert a.gone([1]) == {1: f"its VM {pool.vm(vm_id).name} failed in the cloud: the host failed"}


# -- kill -9 at each point of a VM's life, then a new server on the same store and cloud ----------------------
def test_crash_before_the_cloud_was_asked_the_record_is_given_up_after_the_grace(pool: Pool) -> None:
    pool.launcher.crash_before_create = True
    with pytest.raises(Crash):
        pool.manager().round([job(1)])
    pool.launcher.crash_before_create = False
    (vm,) = pool.live()
    assert vm.state == PoolState.BOOTING and vm.cloud_id is None
    restarted = pool.manager(adopt_grace=600)
    assert restarted.adopt().lost == {} and pool.live() != []  # perhaps another server asking for it now
    pool.clock.t += 601
    assert restarted.adopt().lost == {1: f"its VM {vm.name} is gone from the cloud"}
    assert pool.live() == [] and pool.cloud.created == []


def test_crash_after_the_cloud_made_the_vm_it_is_adopted_and_serves_its_jobs(pool: Pool) -> None:
    pool.cloud.crash_after_create = True
    with pytest.raises(Crash):
        pool.manager().round([job(1), job(2)])
    pool.cloud.crash_after_create = False
    (vm,) = pool.live()
    assert vm.cloud_id is None and len(pool.cloud.vms) == 1
    restarted = pool.manager()
    r = restarted.adopt()
    assert r.lost == {} and r.booted == [vm.id]
    assert pool.vm(vm.id).state == PoolState.BUSY and sorted(pool.vm(vm.id).job_ids) == [1, 2]
    assert len(pool.cloud.created) == 1  # not created twice


@pytest.mark.parametrize("state", [PoolState.IDLE, PoolState.BUSY, PoolState.DRAINING, PoolState.DELETING])
def test_crash_in_each_state_adoption_keeps_or_deletes_every_vm(pool: Pool, state: PoolState) -> None:
    m = pool.manager()
    vm_id = ready(m, [job(1)]).placed[1]
    if state == PoolState.IDLE:
        m.job_done(1)
    elif state == PoolState.DRAINING:
        m.drain(str(vm_id))
    elif state == PoolState.DELETING:  # the server died between marking it and the cloud's answer
        m.job_done(1)
        pool.store.update(vm_id, lambda v: setattr(v, "state", PoolState.DELETING))
    stray = VmRequest("t-pool-999", "m1.small", "local", "", metadata={**TAGS, "lando_pool_vm": "999"})
    orphan = pool.cloud.create_vm(stray)  # a pool VM no record owns (its record lost with a restored store)
    r = pool.manager().adopt()
    assert r.swept == [orphan.id]
    if state == PoolState.DELETING:
        assert pool.live() == [] and pool.cloud.vms == {}
    else:
        assert [v.id for v in pool.live()] == [vm_id] and pool.vm(vm_id).state == state
        assert list(pool.cloud.vms) == [pool.vm(vm_id).cloud_id]


def test_an_idle_vm_of_another_installation_or_a_per_job_vm_is_never_touched(pool: Pool) -> None:
    theirs = pool.cloud.create_vm(VmRequest("x", "m1.small", "local", "", metadata={**TAGS, "lando_installation_token":
                                                                                    "other", "lando_pool_vm": "1"}))
    per_job = pool.cloud.create_vm(VmRequest("y", "m1.small", "local", "", metadata={**TAGS, "lando_job_id": "4"}))
    assert pool.manager().adopt().swept == []
    assert set(pool.cloud.vms) == {theirs.id, per_job.id}


@pytest.mark.parametrize("when", ["before_list", "after_list"])
def test_a_vm_another_server_boots_while_this_one_reconciles_is_neither_lost_nor_swept(pool: Pool, when: str) -> None:
    a, b = pool.manager(), pool.manager()
    booted: list[RoundResult] = []
    setattr(pool.cloud, when, lambda: booted.append(a.round([job(1)])))
    r = b.round([])
    assert booted and booted[0].placed and r.lost == {} and r.reconciled.swept == [] and r.deleted == []
    (vm,) = pool.live()
    assert vm.job_ids == [1] and list(pool.cloud.vms) == [vm.cloud_id]


# -- chaos: many jobs, faults everywhere, two servers -----------------------------------------------------
def test_chaos_never_oversubscribes_finishes_each_job_once_and_leaks_no_vm(pool: Pool) -> None:
    rng = random.Random(7)
    pool.cloud.create_error_rate, pool.cloud.delete_error_rate, pool.cloud.hang_rate = 0.15, 0.2, 0.05
    pool.cloud.boot_polls = 2
    pool.remotes.drop_rate = 0.05
    servers = [pool.manager(keepalive=30, limits=Limits(max_vms=6), boot_timeout=40),
               pool.manager(keepalive=30, limits=Limits(max_vms=6), boot_timeout=40)]
    jobs = {i: job(i, cores=rng.choice([1, 1, 2]), ram_mb=rng.choice([512, 1024, 3000]),
                   owner=rng.choice(["ann", "bob"])) for i in range(1, 151)}
    waiting = set(jobs)
    running: dict[int, int] = {}  # job id -> rounds left
    finished: list[int] = []
    lost = reused = 0
    for step in range(400):
        pool.clock.t += 5
        if step % 9 == 4 and running:  # a VM dies under its jobs now and then
            victim = rng.choice([v for v in pool.live() if v.cloud_id in pool.cloud.vms] or [None])
            if victim is not None:
                pool.cloud.die(victim.cloud_id or "")
        m = servers[step % 2]
        r = m.round([jobs[i] for i in sorted(waiting)])
        waiting -= set(r.placed)
        reused += sum(1 for vm_id in r.placed.values() if vm_id not in r.booting)
        lost += len(r.lost)
        for job_id in r.lost:
            running.pop(job_id, None)
            waiting.add(job_id)
        for v in pool.live():
            assert v.size.covers(v.used), f"{v.name} holds {v.used} on {v.size}"
            if v.state in (PoolState.IDLE, PoolState.BUSY):
                for job_id in v.job_ids:
                    running.setdefault(job_id, rng.randint(2, 10))
        for job_id in list(running):
            running[job_id] -= 1
            if running[job_id] == 0:
                del running[job_id]
                m.job_done(job_id)
                finished.append(job_id)
        if not waiting and not running and not any(v.jobs for v in pool.live()):
            break
    assert sorted(finished) == sorted(jobs)  # every job once
    assert lost >= 3 and reused >= 20 and len(pool.cloud.deleted) >= 3  # the faults and the reuse did happen
    pool.cloud.create_error_rate = pool.cloud.delete_error_rate = 0.0
    pool.clock.t += 1000
    for m in servers:
        m.round([])
    assert pool.live() == [] and pool.cloud.vms == {}  # 0 VMs leaked
    assert len(pool.cloud.created) == len(set(pool.cloud.created))  # no VM asked for twice


def test_a_job_canceled_after_its_placement_and_before_step_v_recorded_it_gives_its_place_back(
        pool: Pool, tmp_path) -> None:
    from lando_ssh.config import Config
    from lando_ssh.engine import Engine
    from lando_ssh.journal import Journal
    from lando_ssh.model import Job, JobState
    from lando_ssh.store import open_store

    m = pool.manager(keepalive=600)
    vm_id = ready(m, [job(1)]).placed[1]  # the daemon's round placed job 1: a place reserved, not on its record
    store = open_store(f"sqlite:///{tmp_path}/jobs.sqlite")
    try:
        store.insert(Job(id=1, name="placed", workflow="w.cwl", job_order={}, state=JobState.STARTING))
        engine = Engine(Config(data_dir=str(tmp_path)), Journal(store), pool.cloud, pool=m, keep_warm=True)
        engine.request_cancel()
        assert engine.drive(1).state == JobState.CANCELED
    finally:
        store.close()
    assert pool.vm(vm_id).jobs == [] and pool.vm(vm_id).state == PoolState.IDLE  # warm for the next job
