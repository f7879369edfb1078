"""Accounting of shared pool VMs: each job's share by vCPUs x time, idle time apart per owner or project, and
the totals always adding up to the VM-hours the cloud bills."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from pool_helpers import LARGE, T0, at, vm

from lando_ssh.pool.accounting import idle_hours, job_hours, pool_uses, vm_uses
from lando_ssh.pool.model import PoolState, Resources

H = 3600


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def test_a_shared_vms_hours_go_to_its_jobs_by_vcpus_and_the_rest_is_idle() -> None:
    v = vm(1, LARGE, state=PoolState.BOOTING)  # 4 vCPUs
    v.created = at(T0)
    v.reserve(10, Resources(1, 1024), at(T0 + 1 * H))
    v.mark_ready(at(T0 + 1 * H))
    v.reserve(20, Resources(3, 1024), at(T0 + 3 * H))
    v.release(10, at(T0 + 5 * H))
    v.release(20, at(T0 + 7 * H))
    v.deleted = at(T0 + 10 * H)
    uses = {u.job_id: u for u in vm_uses(v, at=at(T0 + 20 * H))}
    assert uses[10].vm_hours == pytest.approx(2.5) and uses[20].vm_hours == pytest.approx(3.5)
    assert uses[None].vm_hours == pytest.approx(4.0)  # booting for nobody 1 h, keep-alive 3 h
    assert uses[10].core_hours == pytest.approx(10.0) and uses[None].owner == "ann"
    assert sum(u.vm_hours for u in uses.values()) == pytest.approx(10.0)
    window = vm_uses(v, at=at(T0 + 20 * H), since=at(T0 + 4 * H), until=at(T0 + 6 * H))
    assert {u.job_id: round(u.vm_hours, 6) for u in window} == {10: 0.25, 20: 1.75}


def test_a_live_vm_counts_till_now_and_its_jobs_still_on_it_too() -> None:
    v = vm(1, LARGE, idle_since=None, state=PoolState.BUSY)
    v.created = at(T0)
    v.reserve(10, Resources(2, 1024), at(T0 + H))
    uses = {u.job_id: u for u in vm_uses(v, at=at(T0 + 3 * H))}
    assert uses[10].vm_hours == pytest.approx(2.0) and uses[None].vm_hours == pytest.approx(1.0)


def test_totals_add_up_to_vm_hours_over_random_pools_and_idle_is_kept_per_owner_and_project() -> None:
    rng = random.Random(5)
    vms = []
    billed = 0.0
    for i in range(30):
        v = vm(i, LARGE, state=PoolState.IDLE, share_key=f"owner:{rng.choice(['ann', 'bob'])}",
               project=rng.choice([None, "p1"]))
        v.owner = v.share_key.split(":")[1]
        v.created = at(T0)
        t = T0 + rng.uniform(0, H)
        job = i * 100
        while t < T0 + 10 * H:
            job += 1
            needs = Resources(rng.randint(1, 2), 512)
            if v.free.covers(needs):
                v.reserve(job, needs, at(t))
            t += rng.uniform(60, 3 * H)
            if v.jobs and rng.random() < 0.6:
                v.release(rng.choice(v.job_ids), at(t))
        v.evict_all(at(T0 + 10 * H))
        v.deleted = at(T0 + rng.uniform(10, 12) * H)
        billed += (v.deleted - v.created).total_seconds() / H
        vms.append(v)
    uses = pool_uses(vms, at=at(T0 + 20 * H))
    jobs = job_hours(uses)
    by_owner, by_project = idle_hours(uses, "owner"), idle_hours(uses, "project")
    assert sum(h for h, _ in jobs.values()) + sum(h for h, _ in by_owner.values()) == pytest.approx(billed)
    assert sum(h for h, _ in by_project.values()) == pytest.approx(sum(h for h, _ in by_owner.values()))
    assert set(by_owner) == {"ann", "bob"} and set(by_project) == {"-", "p1"}
    assert all(c == pytest.approx(4 * h) for h, c in jobs.values())
    with pytest.raises(ValueError, match="per owner or per project"):
        idle_hours(uses, "flavor")
