"""The scheduler's rules: flavor choice, limits and quota arithmetic, order, no starvation."""
from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from lando_ssh.cloud import Flavor, Quota
from lando_ssh.config import LimitsConfig
from lando_ssh.flavors import Needs, NoFlavorFits, choose_flavor, workflow_needs
from lando_ssh.model import Job, JobState, JobStep, VmRecord, VmSpec, now
from lando_ssh.scheduler import (
    ActiveVm,
    Limits,
    WaitingJob,
    active_vms,
    schedule,
    waiting_job,
)
from lando_ssh.scheduler import (
    decide as decide_with_config,
)

SMALL = Flavor("m1.small", "1", vcpus=1, ram_mb=2048, disk_gb=20)
MEDIUM = Flavor("m1.medium", "2", vcpus=2, ram_mb=4096, disk_gb=40)
LARGE = Flavor("m1.large", "3", vcpus=4, ram_mb=8192, disk_gb=80)
HIMEM = Flavor("r1.large", "4", vcpus=4, ram_mb=32768, disk_gb=80)
GPU = Flavor("g1.large", "5", vcpus=4, ram_mb=8192, disk_gb=80)
FLAVORS = [LARGE, HIMEM, GPU, SMALL, MEDIUM]  # not in cost order on purpose
T0 = 1_700_000_000.0


def job(id: int, *, cores: int = 1, ram: int = 256, disk: int = 0, priority: int = 0, age: float = 0.0,
        waited: float | None = None, flavor: str | None = None, has_vm: bool = False) -> WaitingJob:
    created = T0 - age
    return WaitingJob(id=id, created=created, since=None if waited is None else T0 - waited, priority=priority,
                      needs=Needs(cores, ram, disk), flavor=flavor, has_vm=has_vm)


def decide(waiting: list[WaitingJob], active: list[ActiveVm] = (), *, running: int | None = None,  # type: ignore[assignment]
           limits: Limits = Limits(), quota: Quota | None = None, allow: str | None = None,
           reserve_after: float = 600.0):
    return schedule(waiting, list(active), running_jobs=len(active) if running is None else running, limits=limits,
                    quota=quota, flavors=FLAVORS, allow=allow, now=T0, reserve_after=reserve_after)


# -- what a workflow needs ---------------------------------------------------------------------
def test_needs_are_the_largest_resource_requirement_anywhere_in_a_packed_graph():
    doc = {"$graph": [
        {"class": "CommandLineTool", "id": "#align.cwl",
         "requirements": [{"class": "ResourceRequirement", "coresMin": 8, "ramMin": 16000}]},
        {"class": "CommandLineTool", "id": "#sort.cwl",
         "hints": [{"class": "ResourceRequirement", "ramMin": 30000.5, "tmpdirMin": 5000, "outdirMin": 6000}]},
        {"class": "Workflow", "id": "#main", "steps": [
            {"id": "#main/a", "run": "#align.cwl"},
            {"id": "#main/b", "run": {"class": "CommandLineTool",
                                      "requirements": {"ResourceRequirement": {"coresMax": 2.5}}},
             "hints": [{"class": "ResourceRequirement", "coresMin": "$(inputs.threads)"}]},
        ]},
    ]}
    assert workflow_needs(doc) == Needs(cores=8, ram_mb=30001, disk_mb=11000)


def test_a_workflow_stating_nothing_needs_cwls_defaults():
    assert workflow_needs({"class": "CommandLineTool", "baseCommand": "true"}) == Needs(1, 256, 0)
    assert workflow_needs(None) == Needs(1, 256, 0)


def test_needs_of_a_workflow_packed_by_cwltool_at_submit(tmp_path: Path):
    from lando_ssh.workflow import prepare

    (tmp_path / "tool.cwl").write_text(textwrap.dedent("""\
        cwlVersion: v1.2
        class: CommandLineTool
        requirements:
          ResourceRequirement: {coresMin: 3, ramMin: 5000, outdirMin: 2048}
        baseCommand: "true"
        inputs: []
        outputs: []
        """))
    (tmp_path / "wf.cwl").write_text(textwrap.dedent("""\
        cwlVersion: v1.2
        class: Workflow
        inputs: []
        outputs: []
        steps:
          one:
            run: tool.cwl
            in: []
            out: []
            hints:
              ResourceRequirement: {tmpdirMin: 10240}
        """))
    prepared = prepare(str(tmp_path / "wf.cwl"), None)
    assert workflow_needs(prepared.packed) == Needs(cores=3, ram_mb=5000, disk_mb=10240)


# -- flavor choice -----------------------------------------------------------------------------
def test_the_cheapest_flavor_that_fits_is_chosen():
    assert choose_flavor(Needs(1, 256), FLAVORS) == SMALL
    assert choose_flavor(Needs(2, 1000), FLAVORS) == MEDIUM
    assert choose_flavor(Needs(1, 6000), FLAVORS) == GPU  # 4 vCPUs 8192 MB; ties on RAM and disk go by name
    assert choose_flavor(Needs(3, 16000), FLAVORS) == HIMEM
    assert choose_flavor(Needs(1, 256, disk_mb=30 * 1024), FLAVORS) == MEDIUM


def test_the_allow_list_limits_the_automatic_choice_but_not_a_named_flavor():
    assert choose_flavor(Needs(1, 6000), FLAVORS, allow=r"^m1\.") == LARGE
    assert choose_flavor(Needs(1, 256), FLAVORS, allow="m1.large") == LARGE  # searched, like grep
    assert choose_flavor(Needs(1, 256), FLAVORS, allow=r"^m1\.", named="g1.large") == GPU
    assert choose_flavor(Needs(1, 256), FLAVORS, named="4") == HIMEM  # by id


def test_no_allowed_flavor_fits_says_what_the_job_needs_and_what_the_largest_offers():
    with pytest.raises(NoFlavorFits) as e:
        choose_flavor(Needs(8, 16384, 100 * 1024), FLAVORS, allow=r"^m1\.")
    assert str(e.value) == ("no allowed flavor fits the job: it needs 8 cores, 16384 MB RAM, 100 GB disk; the largest "
                            "allowed flavor, m1.large, has 4 vCPUs, 8192 MB RAM, 80 GB disk")
    with pytest.raises(NoFlavorFits, match=r"no flavor matches flavors.allow '\^x'; flavors: m1.large"):
        choose_flavor(Needs(), FLAVORS, allow="^x")
    with pytest.raises(NoFlavorFits, match=r"flavor 'm9.huge' does not exist; flavors: m1.large, r1.large"):
        choose_flavor(Needs(), FLAVORS, named="m9.huge")


def test_a_data_volume_holds_the_disk_need_instead_of_the_flavor():
    assert choose_flavor(Needs(1, 256, disk_mb=500 * 1024), FLAVORS, volume_gb=500) == SMALL
    with pytest.raises(NoFlavorFits, match="data volume of 100 GB is smaller than the 500 GB"):
        choose_flavor(Needs(1, 256, disk_mb=500 * 1024), FLAVORS, volume_gb=100)


def test_a_job_no_flavor_fits_fails_at_once_while_the_others_start():
    d = decide([job(1, cores=64), job(2), job(3, flavor="nope")])
    assert [p.job_id for p in d.start] == [2]
    assert d.failed[1].startswith("no allowed flavor fits the job: it needs 64 cores")
    assert d.failed[3].startswith("flavor 'nope' does not exist")


# -- limits arithmetic -------------------------------------------------------------------------
def test_a_job_waits_naming_the_cores_limit():
    active = [ActiveVm(4, 8192)] * 9 + [ActiveVm(2, 4096)]  # 38 cores
    d = decide([job(1, cores=4), job(2, cores=2)], active, limits=Limits(max_cores=40))
    assert d.waiting == {1: "waiting: 38 of 40 cores in use, job needs 4 (limits.max_cores)"}
    assert [(p.job_id, p.flavor) for p in d.start] == [(2, MEDIUM)]  # the smaller one fits: backfill


def test_vms_being_created_count_against_the_quota_the_cloud_has_not_updated():
    quota = Quota(max_cores=10, cores_used=4)  # the cloud counts the 4 cores of the VM it has
    active = [ActiveVm(4, 8192, counted_by_cloud=True), ActiveVm(4, 8192, counted_by_cloud=False)]
    d = decide([job(1, cores=4)], active, quota=quota)
    assert d.waiting == {1: "waiting for cloud quota: 8 of 10 cores in use, job needs 4"}
    assert d.blocked_by == {1: "quota.cores"}
    d = decide([job(1, cores=2)], active, quota=quota)
    assert [p.flavor for p in d.start] == [MEDIUM]


def test_jobs_started_in_one_round_use_up_the_capacity_they_take():
    d = decide([job(i, cores=2) for i in range(1, 6)], limits=Limits(max_cores=7, max_vms=10))
    assert [p.job_id for p in d.start] == [1, 2, 3]
    assert d.waiting[4] == "waiting: 6 of 7 cores in use, job needs 2 (limits.max_cores)"


def test_the_tighter_of_config_and_quota_wins():
    quota = Quota(max_instances=3, instances_used=2, max_ram_mb=100 * 1024, ram_mb_used=10 * 1024)
    d = decide([job(1), job(2)], [ActiveVm(1, 2048)], limits=Limits(max_vms=5), quota=quota)
    assert [p.job_id for p in d.start] == [1]
    assert d.waiting[2] == "waiting for cloud quota: 3 of 3 instances in use"
    d = decide([job(1, ram=5000), job(2, ram=5000)], [ActiveVm(1, 2048)], limits=Limits(max_ram_mb=12 * 1024),
               quota=quota)
    assert [p.job_id for p in d.start] == [1]
    assert d.waiting[2] == "waiting: 10 of 12 GB RAM in use, job needs 8 GB (limits.max_ram_gb)"


def test_max_vms_and_job_slots():
    d = decide([job(1), job(2)], [ActiveVm(1, 2048)], limits=Limits(max_vms=2, max_jobs=10))
    assert d.waiting == {2: "waiting: 2 of 2 VMs in use (limits.max_vms)"}
    assert d.blocked_by == {2: "limits.max_vms"}
    d = decide([job(1), job(2)], [ActiveVm(1, 2048)], running=3, limits=Limits(max_jobs=4))
    assert d.waiting == {2: "waiting: 4 of 4 job slots busy (limits.max_concurrent_jobs)"}


def test_limits_from_config_use_gb_and_zero_for_none():
    assert Limits.from_config(LimitsConfig(max_concurrent_jobs=5, max_ram_gb=2)) == \
        Limits(max_jobs=5, max_vms=None, max_cores=None, max_ram_mb=2048)


def test_a_job_bigger_than_a_limit_itself_fails_rather_than_waiting_forever():
    d = decide([job(1, flavor="m1.large")], limits=Limits(max_cores=2))
    assert d.failed == {1: "the job needs 4 cores on flavor m1.large but limits.max_cores is 2"}
    d = decide([job(1, ram=20000)], quota=Quota(max_ram_mb=16384))
    assert d.failed == {1: "the job needs 32 GB RAM on flavor r1.large but the cloud's quota allows 16 GB in all"}


def test_a_job_whose_vm_exists_needs_only_a_slot():
    full = [ActiveVm(4, 8192)] * 2
    d = decide([job(1, has_vm=True), job(2)], full, running=1, limits=Limits(max_vms=2, max_jobs=5))
    assert [(p.job_id, p.flavor) for p in d.start] == [(1, None)]
    assert d.waiting == {2: "waiting: 2 of 2 VMs in use (limits.max_vms)"}


# -- order and starvation ----------------------------------------------------------------------
def test_priority_first_then_age():
    waiting = [job(1, age=10), job(2, age=50), job(3, age=5, priority=5), job(4, age=50)]
    d = decide(waiting, limits=Limits(max_vms=3))
    assert [p.job_id for p in d.start] == [3, 2, 4]
    assert list(d.waiting) == [1]


def test_small_jobs_fill_in_around_a_big_one_until_it_has_waited_reserve_after():
    busy = [ActiveVm(1, 2048)] * 6  # 6 of 8 cores
    big = job(1, cores=4, age=1000, waited=100)
    smalls = [job(i, age=10) for i in range(2, 5)]
    d = decide([big, *smalls], busy, limits=Limits(max_cores=8), reserve_after=600)
    assert [p.job_id for p in d.start] == [2, 3]  # backfill: the big job has not waited long enough
    assert d.reserving == []


def test_a_big_job_waiting_past_reserve_after_is_not_starved_by_small_ones():
    big = job(1, cores=4, age=1000, waited=700)
    smalls = [job(i, age=10) for i in range(2, 5)]
    busy = [ActiveVm(1, 2048)] * 6  # 6 of 8 cores: the big job does not fit, two small ones would
    d = decide([big, *smalls], busy, limits=Limits(max_cores=8), reserve_after=600)
    assert d.start == [] and d.reserving == [1]
    assert d.waiting[1] == "waiting: 6 of 8 cores in use, job needs 4 (limits.max_cores)"
    assert d.waiting[2] == ("waiting: 6 of 8 cores in use, job needs 1 (limits.max_cores); the rest is held for "
                            "job 1, which has waited longer")
    # two small jobs end: 4 of 8 cores in use; the big job starts before any small one
    d = decide([big, *smalls], busy[:4], limits=Limits(max_cores=8), reserve_after=600)
    assert [p.job_id for p in d.start] == [1]
    # a small job of higher priority still goes first: priority is the admin's word
    d = decide([big, job(9, priority=1)], busy, limits=Limits(max_cores=8), reserve_after=600)
    assert [p.job_id for p in d.start] == [9]


def test_a_reserving_job_holds_back_only_what_it_needs():
    big = job(1, cores=4, waited=700, age=700)  # needs 4 of the 10 cores, 6 are free
    d = decide([big, job(2), job(3)], [ActiveVm(4, 8192)], limits=Limits(max_cores=10), reserve_after=600)
    assert [p.job_id for p in d.start] == [1, 2, 3]
    busy = [ActiveVm(1, 2048)] * 7  # 3 of 10 free: the big job waits and holds them; nothing else fits
    d = decide([big, job(2)], busy, limits=Limits(max_cores=10), reserve_after=600)
    assert d.start == [] and d.reserving == [1]
    # a job whose VM exists needs no cores: the reservation does not hold it back
    d = decide([big, job(2), job(3, has_vm=True)], busy, running=7, limits=Limits(max_cores=10, max_jobs=20),
               reserve_after=600)
    assert [p.job_id for p in d.start] == [3]


# -- from job records --------------------------------------------------------------------------
def test_waiting_job_and_active_vms_from_job_records():
    t = now()
    j = Job(id=7, name="x", workflow="wf.cwl", job_order={}, priority=3, created=t - timedelta(hours=2),
            vm_spec=VmSpec(flavor=None, volume_size=None),
            workflow_doc={"class": "CommandLineTool", "requirements": [{"class": "ResourceRequirement",
                                                                         "coresMin": 2}]})
    j.set_state(JobState.STARTING, JobStep.NONE, note="start_job received")
    w = waiting_job(j, default_volume_gb=50)
    assert (w.id, w.priority, w.needs, w.volume_gb, w.has_vm) == (7, 3, Needs(2, 256, 0), 50, False)
    assert w.created == pytest.approx((t - timedelta(hours=2)).timestamp())
    assert w.since is not None and w.since >= t.timestamp()

    created = Job(id=8, name="y", workflow="", job_order={}, vm=VmRecord(name="v8", flavor="m1.large"))
    booted = Job(id=9, name="z", workflow="", job_order={},
                 vm=VmRecord(name="v9", id="v9", flavor="m1.medium", vcpus=2, ram_mb=4096))
    gone = Job(id=10, name="g", workflow="", job_order={}, vm=VmRecord(name="v10", id="v10", deleted=now()))
    placed = Job(id=11, name="p", workflow="", job_order={})
    assert active_vms([created, booted, gone, placed], FLAVORS, {11: SMALL}) == [
        ActiveVm(4, 8192, counted_by_cloud=False), ActiveVm(2, 4096, counted_by_cloud=True),
        ActiveVm(1, 2048, counted_by_cloud=False)]


def test_the_fleet_keys_load_from_the_config_file_and_a_bad_regex_is_refused(tmp_path: Path):
    from lando_ssh.config import load_config
    from lando_ssh.errors import ConfigError

    path = tmp_path / "lando.yml"
    path.write_text("flavors: {allow: '^m1[.]'}\nlimits: {max_cores: 40, reserve_after: 120}\n"
                    "sweep: {grace: 60}\nmetrics: {listen: '127.0.0.1:9464'}\n")
    config = load_config(str(path), env={})
    assert (config.flavors.allow, config.limits.reserve_after, config.sweep.grace, config.metrics.listen) == \
        ("^m1[.]", 120.0, 60.0, "127.0.0.1:9464")
    assert Limits.from_config(config.limits).max_cores == 40
    d = decide_with_config(config, [job(1, cores=2, waited=200), job(2)], [ActiveVm(4, 8192)] * 9 + [ActiveVm(3, 1)],
                           running_jobs=10, quota=None, flavors=FLAVORS, now=T0)
    assert d.waiting[1].startswith("waiting: 39 of 40 cores in use, job needs 2") and d.reserving == [1]
    assert d.start == [] and d.waiting[2].endswith("the rest is held for job 1, which has waited longer")
    path.write_text("flavors: {allow: 'm1.(small'}\n")
    with pytest.raises(ConfigError, match="flavors.allow is not a valid regular expression"):
        load_config(str(path), env={})
