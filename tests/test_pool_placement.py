"""The pool's placement, pure: reuse, sharing policies, packing, limits with their sentences, keep-alive and
the other reasons to delete an empty VM, and never more on a VM than it has, over random job mixes."""
from __future__ import annotations

import random

from pool_helpers import FLAVORS, MEDIUM, SMALL, T0, at, job, vm

from lando_ssh.cloud import Quota
from lando_ssh.pool.model import PoolState, Resources
from lando_ssh.pool.packing import capacity
from lando_ssh.pool.placement import PoolDecision, PoolJob, plan, pool_job
from lando_ssh.pool.policy import PoolPolicy, Share
from lando_ssh.scheduler import Limits


def decide(jobs: list[PoolJob], vms: list, *, share: Share = Share.OWNER, pack: bool = True, keepalive: float = 120,
           limits: Limits = Limits(), quota: Quota | None = None, now: float = T0 + 10, **kw: object) -> PoolDecision:
    return plan(jobs, vms, flavors=FLAVORS, policy=PoolPolicy(share, pack, keepalive), limits=limits, quota=quota,
                now=now, **kw)  # type: ignore[arg-type]


def test_a_job_goes_onto_an_idle_vm_of_its_owner_instead_of_booting() -> None:
    d = decide([job(1)], [vm(7)])
    assert [(p.job_id, p.vm_id) for p in d.place] == [(1, 7)] and d.boot == [] and d.delete == []


def test_a_partly_used_vm_is_filled_before_an_idle_one_and_never_past_its_size() -> None:
    busy = vm(5, MEDIUM, jobs={9: Resources(1, 1024)})
    d = decide([job(1), job(2)], [vm(7), busy])
    assert [(p.job_id, p.vm_id) for p in d.place] == [(1, 5), (2, 7)]  # VM 5 had one vCPU left


def test_share_policies_decide_who_may_use_a_vm() -> None:
    bob = [job(1, owner="bob", project="p1")]
    ann_vm = vm(7, share_key="owner:ann")
    assert decide(bob, [ann_vm]).place == []  # owner: another user's VM is not used
    assert decide(bob, [vm(7, share_key="project:p1", project="p1")], share=Share.PROJECT).place != []
    assert decide(bob, [vm(7, share_key="any", project="p1")], share=Share.ANY).place != []
    assert decide(bob, [vm(7, share_key="any")], share=Share.ANY).place == []  # another OpenStack project
    assert decide([job(1, image="other")], [ann_vm]).place == []  # another image
    d = decide([job(2)], [vm(7, share_key="job:1")], share=Share.JOB)  # one VM per job: booted for each
    assert d.place == [] and [b.job_ids for b in d.boot] == [[2]]
    assert [x.vm_id for x in d.delete] == [7]  # and an empty one goes at once
    d = decide([job(1)], [vm(7, share_key="job:1")], share=Share.JOB)  # (job 1 restarted: its own VM, still there)
    assert [(p.job_id, p.vm_id) for p in d.place] == [(1, 7)] and d.delete == []


def test_a_job_boots_the_cheapest_allowed_flavor_that_fits_it() -> None:
    d = decide([job(1, cores=2, ram_mb=3000)], [], pack=False)
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.medium", [1])]
    assert d.boot[0].share_key == "owner:ann" and d.boot[0].owner == "ann"
    d = decide([job(1, cores=2)], [], allow="large")
    assert [b.flavor.name for b in d.boot] == ["m1.large"]


def test_packing_boots_one_larger_flavor_for_several_jobs_when_it_costs_no_more() -> None:
    jobs = [job(i) for i in range(1, 6)]
    d = decide(jobs, [])
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.large", [1, 2, 3, 4]), ("m1.small", [5])]
    d = decide(jobs[:2], [])
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.medium", [1, 2])]
    d = decide(jobs[:4], [], pack=False)
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.small", [i]) for i in range(1, 5)]
    # 3 GB each: a small does not fit one, a medium only one; one large costs what two mediums cost, boots once
    d = decide([job(1, ram_mb=3072), job(2, ram_mb=3072)], [])
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.large", [1, 2])]
    d = decide([job(1, ram_mb=5000), job(2, ram_mb=5000)], [])  # a large holds one: no packing pays
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.large", [1]), ("m1.large", [2])]


def test_packing_keeps_owners_apart_and_jobs_with_a_data_volume_alone() -> None:
    d = decide([job(1), job(2, owner="bob"), job(3), job(4, volume_gb=50)], [])
    assert sorted((b.owner, tuple(b.job_ids), b.volume_gb) for b in d.boot) == \
        [("ann", (1, 3), 0), ("ann", (4,), 50), ("bob", (2,), 0)]


def test_limits_hold_jobs_back_with_the_schedulers_sentences() -> None:
    d = decide([job(i) for i in range(1, 4)], [], pack=False, limits=Limits(max_vms=1))
    assert [b.job_ids for b in d.boot] == [[1]]
    assert d.waiting == {2: "waiting: 1 of 1 VMs in use (limits.max_vms)", 3: "waiting: 1 of 1 VMs in use "
                         "(limits.max_vms)"}
    assert d.blocked_by[2] == "limits.max_vms"
    busy = vm(7, jobs={9: Resources(1, 1024)})
    d = decide([job(1)], [busy], limits=Limits(max_jobs=1))
    assert d.place == [] and d.waiting == {1: "waiting: 1 of 1 job slots busy (limits.max_concurrent_jobs)"}


def test_a_packed_boot_too_big_for_the_limits_falls_back_to_small_ones() -> None:
    d = decide([job(i) for i in range(1, 5)], [], limits=Limits(max_cores=2))
    assert [(b.flavor.name, b.job_ids) for b in d.boot] == [("m1.small", [1]), ("m1.small", [2])]
    assert set(d.waiting) == {3, 4} and "cores in use" in d.waiting[3]


def test_quota_counts_booting_vms_the_cloud_does_not_count_yet() -> None:
    booting = vm(7, SMALL, state=PoolState.BOOTING, share_key="owner:bob", jobs={9: Resources(1, 1024)})
    booting.cloud_id = None
    d = decide([job(1)], [booting], pack=False, quota=Quota(max_instances=1, instances_used=0))
    assert d.boot == [] and d.waiting[1] == "waiting for cloud quota: 1 of 1 instances in use"


def test_a_job_no_flavor_fits_fails_at_once() -> None:
    d = decide([job(1, cores=16)], [])
    assert d.failed[1].startswith("no allowed flavor fits the job: it needs 16 cores")
    d = decide([job(1, cores=4)], [], limits=Limits(max_cores=2))
    assert d.failed[1] == "the job needs 4 cores on flavor m1.large but limits.max_cores is 2"


def test_empty_vms_are_deleted_after_their_keepalive_drained_or_silent() -> None:
    fresh, old = vm(1, idle_since=T0), vm(2, idle_since=T0 - 500)
    drained = vm(3, state=PoolState.DRAINING)
    drained.reason = "an admin's drain"
    silent = vm(4)
    silent.unreachable_since = silent.idle_since
    busy = vm(5, jobs={9: Resources(1, 1024)})
    d = decide([], [fresh, old, drained, silent, busy])
    assert {x.vm_id: x.reason for x in d.delete} == {
        2: "idle for 510 s (vm.keepalive 120 s)", 3: "drained (an admin's drain)", 4: "idle and stopped answering SSH"}
    assert [x.vm_id for x in decide([], [fresh], keepalive=0).delete] == [1]


def test_an_idle_vm_silent_for_less_than_the_grace_is_neither_used_nor_deleted() -> None:
    silent = vm(4)
    silent.unreachable_since = at(T0)
    d = decide([job(1)], [silent], now=T0 + 10, silence_grace=60)
    assert d.delete == [] and d.place == [] and [b.job_ids for b in d.boot] == [[1]]
    d = decide([], [silent], now=T0 + 61, silence_grace=60)
    assert [(x.vm_id, x.reason) for x in d.delete] == [(4, "idle and stopped answering SSH")]


def test_an_idle_vm_nobody_can_use_makes_room_for_a_waiting_job() -> None:
    bobs = vm(7, share_key="owner:bob")
    d = decide([job(1)], [bobs], limits=Limits(max_vms=1))
    assert d.boot == [] and d.delete[0].vm_id == 7 and "job 1 waits for the room" in d.delete[0].reason


def test_a_job_waiting_past_reserve_after_holds_what_it_needs_against_younger_jobs() -> None:
    big, small = job(1, cores=4, created=T0 - 1000), job(2)
    busy = vm(5, SMALL, share_key="owner:bob", jobs={9: Resources(1, 1024)})
    d = decide([big, small], [busy], pack=False, limits=Limits(max_cores=4), reserve_after=600)
    assert d.boot == [] and d.reserving == [1] and "held for job 1" in d.waiting[2]


def test_placements_and_boots_never_oversubscribe_over_random_job_mixes() -> None:
    rng = random.Random(19)
    for _ in range(300):
        owners = ["ann", "bob"][: rng.randint(1, 2)]
        vms = []
        for i in range(rng.randint(0, 5)):
            flavor = rng.choice(FLAVORS)
            v = vm(i + 100, flavor, share_key=f"owner:{rng.choice(owners)}",
                   state=rng.choice([PoolState.IDLE, PoolState.BOOTING]))
            free = capacity(flavor)
            for j in range(rng.randint(0, 3)):
                need = Resources(1, rng.choice([512, 1024, 3000]))
                if free.covers(need):
                    v.reserve(1000 + i * 10 + j, need)
                    free = free - need
            if rng.random() < 0.2:
                v.drain("test")
            vms.append(v)
        jobs = [job(i, cores=rng.choice([1, 1, 2, 4]), ram_mb=rng.choice([256, 1024, 2048, 4000]),
                    owner=rng.choice(owners), priority=rng.randint(0, 1)) for i in range(1, rng.randint(1, 25))]
        limits = Limits(max_vms=rng.choice([None, 3, 8]), max_cores=rng.choice([None, 8, 16]))
        d = decide(jobs, vms, pack=rng.random() < 0.7, limits=limits)
        by_id = {v.id: v for v in vms}
        for p in d.place:
            by_id[p.vm_id].reserve(p.job_id, p.needs)  # raises NoRoom if the plan oversubscribed it or drained
        for b in d.boot:
            total = Resources()
            for _, needs in b.jobs:
                total = total + needs
            assert capacity(b.flavor, b.volume_gb).covers(total)
        decided = [p.job_id for p in d.place] + [j for b in d.boot for j in b.job_ids] + list(d.waiting) + \
            list(d.failed)
        assert sorted(decided) == sorted(j.id for j in jobs)  # each job decided once
        if limits.max_vms is not None and d.boot:
            assert len(vms) + len(d.boot) <= limits.max_vms
        if limits.max_cores is not None and d.boot:
            assert sum(v.size.vcpus for v in vms) + sum(b.flavor.vcpus for b in d.boot) <= limits.max_cores


def test_a_job_record_becomes_a_pool_job_with_its_image_project_and_owner() -> None:
    from lando_ssh.config import Config, VmConfig
    from lando_ssh.model import Job, VmSpec

    config = Config(vm=VmConfig(image="ubuntu", volume_size=10))
    record = Job(id=4, name="w", workflow="w.cwl", job_order={}, user="ann", vm_spec=VmSpec(flavor="m1.large"),
                 facts={"bespin": {"cloud_settings": {"vm_project": "lab"}}},
                 workflow_doc={"class": "CommandLineTool", "requirements": [{"class": "ResourceRequirement",
                                                                             "coresMin": 2, "ramMin": 3000}]})
    got = pool_job(record, config)
    assert (got.id, got.image, got.project, got.owner) == (4, "ubuntu", "lab", "ann")
    assert (got.waiting.needs.cores, got.waiting.needs.ram_mb, got.waiting.flavor, got.waiting.volume_gb) == \
        (2, 3000, "m1.large", 10)
    assert pool_job(Job(id=5, name="w", workflow="w.cwl", job_order={}), config).owner == "-"


def test_while_jobs_keep_arriving_too_few_to_fill_a_larger_flavor_wait_for_them_and_a_full_one_boots() -> None:
    five = [job(i) for i in range(1, 6)]  # 1 vCPU each; FLAVORS: 1, 2 and 4 vCPUs
    now = decide(five, [])
    assert sorted(len(b.jobs) for b in now.boot) == [1, 4]  # arrivals over: the fifth boots a small VM of its own
    held = decide(five, [], arriving=True)
    assert [(b.flavor.name, b.job_ids) for b in held.boot] == [("m1.large", [1, 2, 3, 4])]
    assert held.waiting == {5: "waiting: more jobs are arriving; it boots with them on one larger VM"}
    # a job that names its flavor, or needs the largest, is never held back
    assert decide([job(1, flavor="m1.small")], [], arriving=True).boot != []
    assert decide([job(1, cores=4)], [], arriving=True).boot != []
    assert decide([job(1)], [], arriving=True, pack=False).boot != []  # (without packing there is nothing to wait for)
