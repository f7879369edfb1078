"""Usage: VM-hours and core-hours per group from the jobs' recorded VM times, and job counts."""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import WORKFLOWS, Lando

from lando_ssh.errors import BadInput
from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, VmRecord
from lando_ssh.store import open_store
from lando_ssh.usage import elapsed_text, job_lines, jobs_to_csv, jobs_to_table, parse_when, to_csv, usage, vm_hours

T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(id: int, *, user: str = "ann", state: JobState = JobState.FINISHED, vm_from: float | None = 0.0,
           vm_hours: float | None = 1.0, vcpus: int | None = 4, workflow: str = "/wf/a.cwl",
           project: str | None = None, created: float = 0.0, flavor: str = "m1.large") -> Job:
    """A job created `created` hours after T whose VM lived from `vm_from` for `vm_hours` (None: still running)."""
    job = Job(id=id, name=f"j{id}", workflow=workflow, job_order={}, user=user, created=T + timedelta(hours=created))
    if vm_from is not None:
        start = T + timedelta(hours=vm_from)
        job.vm = VmRecord(name=f"vm{id}", id=f"vm{id}", vcpus=vcpus, flavor=flavor, created=start,
                          deleted=None if vm_hours is None else start + timedelta(hours=vm_hours))
    end = job.vm.deleted if job.vm and job.vm.deleted else job.created
    job.state, job.updated = state, end
    job.history = [HistoryEntry(job.created, JobState.NEW, JobStep.NONE), HistoryEntry(end, state, JobStep.NONE)]
    if project:
        job.facts["project"] = project
    return job


def by_group(rows):  # type: ignore[no-untyped-def]
    return {r.group: r for r in rows}


def test_core_hours_are_vm_hours_times_vcpus_per_user_with_a_total():
    jobs = [record(1, user="ann", vm_hours=2.0, vcpus=4), record(2, user="bob", vm_hours=0.5, vcpus=1),
            record(3, user="ann", state=JobState.ERROR, vm_hours=1.0, vcpus=2),
            record(4, user="bob", state=JobState.CANCELED, vm_from=None)]
    rows = by_group(usage(jobs, by="user", at=T + timedelta(days=1)))
    assert list(rows) == ["ann", "bob", "TOTAL"]
    assert (rows["ann"].jobs, rows["ann"].vm_hours, rows["ann"].core_hours) == (2, 3.0, 10.0)
    assert (rows["bob"].jobs, rows["bob"].vm_hours, rows["bob"].core_hours) == (2, 0.5, 0.5)
    assert rows["TOTAL"].to_dict() == {"group": "TOTAL", "jobs": 4, "finished": 2, "error": 1, "canceled": 1,
                                       "deleted": 0, "active": 0, "vm_hours": 3.5, "core_hours": 10.5}


def test_a_running_vm_counts_until_now_and_the_window_clips_vm_time():
    running = record(1, state=JobState.RUNNING, vm_from=1.0, vm_hours=None, vcpus=2)
    assert vm_hours(running, at=T + timedelta(hours=4)) == 3.0
    done = record(2, vm_from=0.0, vm_hours=10.0, vcpus=8)
    rows = by_group(usage([running, done], since=T + timedelta(hours=2), until=T + timedelta(hours=5),
                          at=T + timedelta(hours=4)))
    assert rows["TOTAL"].vm_hours == pytest.approx(2.0 + 3.0)  # running: 2h..4h (now); done: 2h..5h
    assert rows["TOTAL"].core_hours == pytest.approx(2 * 2 + 3 * 8)
    assert rows["TOTAL"].active == 1


def test_jobs_outside_the_window_are_left_out():
    early = record(1, vm_from=0.0, vm_hours=1.0)  # ended at T+1h
    late = record(2, created=48.0, vm_from=48.0, vm_hours=1.0)
    rows = usage([early, late], since=T + timedelta(hours=2), until=T + timedelta(hours=24), at=T + timedelta(days=3))
    assert [r.group for r in rows] == ["TOTAL"] and rows[0].jobs == 0


def test_grouping_by_project_and_workflow():
    jobs = [record(1, project="p1", workflow="/wf/a.cwl"), record(2, project="p2", workflow="/wf/b.cwl"),
            record(3, workflow="/wf/a.cwl")]
    assert [r.group for r in usage(jobs, by="project")] == ["-", "p1", "p2", "TOTAL"]
    assert by_group(usage(jobs, by="workflow"))["/wf/a.cwl"].core_hours == 8.0
    with pytest.raises(BadInput, match="usage --by takes one of user, project, workflow"):
        usage(jobs, by="colour")


def test_csv_has_a_header_and_one_row_per_group_and_no_total_row():
    rows = usage([record(1, user="ann", vm_hours=0.25, vcpus=2), record(2, user="TOTAL", vm_hours=1.0, vcpus=1)],
                 by="user")
    assert to_csv(rows, "user").splitlines() == [
        "user,jobs,finished,error,canceled,deleted,active,vm_hours,core_hours",
        "TOTAL,1,1,0,0,0,0,1.000000,1.000000",  # a user named TOTAL, not a sum
        "ann,1,1,0,0,0,0,0.250000,0.500000"]


def with_past_vm(job: Job, flavor: str, vcpus: int, start: float, hours: float) -> Job:
    """`job` with an earlier VM (a boot retry or a restart) of `flavor`, from `start` hours after T."""
    created = T + timedelta(hours=start)
    job.past_vms.append(VmRecord(name=f"old{job.id}", id=f"old{job.id}", vcpus=vcpus, flavor=flavor,
                                 created=created, deleted=created + timedelta(hours=hours)))
    return job


def test_by_flavor_sums_each_vms_hours_under_its_own_flavor():
    restarted = with_past_vm(record(1, vm_from=2.0, vm_hours=1.0, vcpus=4, flavor="m1.large"), "m1.small", 1, 0.0, 1.5)
    small = record(2, vm_hours=2.0, vcpus=1, flavor="m1.small")
    never = record(3, state=JobState.CANCELED, vm_from=None)
    rows = by_group(usage([restarted, small, never], by="flavor", at=T + timedelta(days=1)))
    assert list(rows) == ["-", "m1.large", "m1.small", "TOTAL"]
    assert (rows["m1.small"].jobs, rows["m1.small"].vm_hours, rows["m1.small"].core_hours) == (2, 3.5, 3.5)
    assert (rows["m1.large"].jobs, rows["m1.large"].vm_hours, rows["m1.large"].core_hours) == (1, 1.0, 4.0)
    assert (rows["-"].jobs, rows["-"].states["C"]) == (1, 1)
    assert (rows["TOTAL"].jobs, rows["TOTAL"].vm_hours, rows["TOTAL"].core_hours) == (3, 4.5, 7.5)  # each job once


def test_by_day_splits_vm_hours_at_utc_midnight():
    overnight = record(1, vm_from=10.0, vm_hours=5.0, vcpus=2)  # 22:00 on March 1st to 03:00 on the 2nd
    same_day = record(2, vm_from=1.0, vm_hours=1.0, vcpus=8)
    rows = by_group(usage([overnight, same_day], by="day", at=T + timedelta(days=3)))
    assert list(rows) == ["2025-03-01", "2025-03-02", "TOTAL"]
    assert (rows["2025-03-01"].jobs, rows["2025-03-01"].vm_hours, rows["2025-03-01"].core_hours) == (2, 3.0, 12.0)
    assert (rows["2025-03-02"].jobs, rows["2025-03-02"].vm_hours, rows["2025-03-02"].core_hours) == (1, 3.0, 6.0)
    assert rows["TOTAL"].jobs == 2 and rows["TOTAL"].core_hours == 18.0
    table = "\n".join(usage_table_lines([overnight, same_day]))
    assert "DAY (UTC)" in table


def usage_table_lines(jobs):  # type: ignore[no-untyped-def]
    from lando_ssh.usage import to_table

    return to_table(usage(jobs, by="day", at=T + timedelta(days=3)), "day", None, None).splitlines()


def test_jobs_list_one_line_per_job_like_sacct():
    done = with_past_vm(record(1, user="ann", vm_from=1.0, vm_hours=2.0, vcpus=4, flavor="m1.large"), "m1.small",
                        1, 0.5, 0.5)
    running = record(2, user="bob", state=JobState.RUNNING, vm_from=3.0, vm_hours=None, vcpus=2, flavor="m1.medium",
                     project="lab")
    waiting = record(3, user="bob", state=JobState.STARTING, vm_from=None, created=3.0)
    lines = job_lines([running, waiting, done], at=T + timedelta(hours=4))
    assert [x.job for x in lines] == [1, 2, 3]
    one, two, three = (x.to_dict() for x in lines)
    assert one == {"job": 1, "name": "j1", "user": "ann", "project": "-", "state": "finished",
                   "flavor": "m1.small+m1.large", "cores": 4, "start": "2025-03-01T12:30:00+00:00",
                   "end": "2025-03-01T15:00:00+00:00", "elapsed": 9000.0, "core_hours": 8.5, "vm_hours": 2.5}
    assert (two["state"], two["project"], two["start"], two["end"], two["elapsed"], two["core_hours"]) == \
        ("running", "lab", "2025-03-01T15:00:00+00:00", None, 3600.0, 2.0)
    assert (three["flavor"], three["cores"], three["start"], three["elapsed"], three["vm_hours"]) == \
        ("-", None, None, None, 0.0)
    assert jobs_to_csv(lines).splitlines()[:2] == [
        "job,name,user,project,state,flavor,cores,start,end,elapsed,core_hours,vm_hours",
        "1,j1,ann,-,finished,m1.small+m1.large,4,2025-03-01T12:30:00+00:00,2025-03-01T15:00:00+00:00,9000.0,"
        "8.500000,2.500000"]
    table = jobs_to_table(lines).splitlines()
    assert table[0].split() == ["JOBID", "NAME", "USER", "PROJECT", "STATE", "FLAVOR", "CORES", "START", "END",
                                "ELAPSED", "CORE-HOURS", "VM-HOURS"]
    assert table[1].split()[9:] == ["02:30:00", "8.500", "2.500"]
    assert table[-1].split() == ["TOTAL", "10.500", "3.500"]
    assert (elapsed_text(59), elapsed_text(90061), elapsed_text(None)) == ("00:00:59", "1-01:01:01", "-")


def test_dates_and_ages():
    at = datetime(2025, 3, 10, tzinfo=UTC)
    assert parse_when("7d", at) == datetime(2025, 3, 3, tzinfo=UTC)
    assert parse_when("90m", at) == at - timedelta(minutes=90)
    assert parse_when("2025-01-31T08:00+00:00") == datetime(2025, 1, 31, 8, tzinfo=UTC)
    assert parse_when("2025-01-31").tzinfo is not None  # local midnight
    with pytest.raises(BadInput, match="is not a date"):
        parse_when("last tuesday")


# -- through the CLI -----------------------------------------------------------------------------
def test_usage_csv_over_finished_jobs_adds_up_to_their_recorded_vm_times(lando: Lando):
    small = lando.submit(WORKFLOWS / "no_inputs.cwl")
    medium = lando.submit(WORKFLOWS / "no_inputs.cwl", None, "--flavor", "m1.medium")
    for job_id in (small, medium):
        assert lando.cli("job", str(job_id)).returncode == 0
    expected = 0.0
    for job_id in (small, medium):
        vm = lando.status(job_id)["vm"]
        seconds = (datetime.fromisoformat(vm["deleted"]) - datetime.fromisoformat(vm["created"])).total_seconds()
        assert seconds > 0
        vcpus = {"m1.small": 1, "m1.medium": 2}[vm["flavor"]]
        expected += seconds * vcpus / 3600

    proc = lando.cli("usage", "--csv", check=True)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 1 and "TOTAL" not in proc.stdout
    assert int(rows[0]["jobs"]) == 2 and int(rows[0]["finished"]) == 2
    assert float(rows[0]["core_hours"]) == pytest.approx(expected, abs=2e-6)

    table = lando.cli("usage", "--by", "workflow", check=True).stdout
    assert str(WORKFLOWS / "no_inputs.cwl") in table and "CORE-HOURS" in table and "TOTAL" in table
    assert json.loads(lando.cli("usage", "--since", "1h", "--json", check=True).stdout)[0]["jobs"] == 2
    assert json.loads(lando.cli("usage", "--until", "1h", "--json", check=True).stdout) == []

    by_flavor = json.loads(lando.cli("usage", "--by", "flavor", "--json", check=True).stdout)
    assert [(r["group"], r["jobs"]) for r in by_flavor] == [("m1.medium", 1), ("m1.small", 1)]
    listed = list(csv.DictReader(io.StringIO(lando.cli("usage", "--jobs", "--csv", check=True).stdout)))
    assert [(int(r["job"]), r["state"], r["flavor"], r["cores"]) for r in listed] == [
        (small, "finished", "m1.small", "1"), (medium, "finished", "m1.medium", "2")]
    assert sum(float(r["core_hours"]) for r in listed) == pytest.approx(expected, abs=2e-6)
    assert all(float(r["elapsed"]) > 0 and r["start"] and r["end"] for r in listed)
    assert json.loads(lando.cli("usage", "--jobs", "--json", check=True).stdout)[0]["job"] == small


def test_usage_through_the_cli_on_synthetic_records(lando: Lando):
    store = open_store(lando.config().store_url)
    try:
        for job in (record(1, user="ann", vm_hours=2.0, vcpus=4), record(2, user="bob", vm_hours=3.0, vcpus=1),
                    record(3, user="ann", state=JobState.ERROR, vm_hours=1.0, vcpus=8)):
            store.create(job)
    finally:
        store.close()
    since, until = "2025-03-01T00:00+00:00", "2025-03-02T00:00+00:00"
    rows = json.loads(lando.cli("usage", "--since", since, "--until", until, "--json", check=True).stdout)
    assert [(r["group"], r["jobs"], r["error"], r["core_hours"]) for r in rows] == [
        ("ann", 2, 1, 16.0), ("bob", 1, 0, 3.0)]
    table = lando.cli("usage", "--since", since, "--until", until, check=True).stdout.splitlines()
    assert table[-1].split() == ["TOTAL", "3", "2", "1", "0", "0", "0", "6.000", "19.000"]
    proc = lando.cli("usage", "--since", until, "--until", since)
    assert proc.returncode == 2 and "--since" in proc.stderr and "must be before --until" in proc.stderr


def test_openstack_jobs_are_accounted_to_their_project(lando: Lando):
    """The job source's project, else the project a VM was made in (its id says), else the configured one."""
    lando.write_config(cloud={"driver": "openstack"},
                       cloud_settings={"auth_url": "http://127.0.0.1:9/identity", "project_name": "facility"})
    bespin = record(1, vcpus=1)
    bespin.facts["bespin"] = {"cloud_settings": {"vm_project": "genomics"}}
    elsewhere = record(2, vcpus=2)
    assert elsewhere.vm is not None
    elsewhere.vm.id = "lab/0d4f6a3e"  # the driver's id of a VM outside the configured project
    home = record(3, vcpus=4)
    store = open_store(lando.config().store_url)
    try:
        for job in (bespin, elsewhere, home):
            store.create(job)
    finally:
        store.close()
    rows = json.loads(lando.cli("usage", "--by", "project", "--json", check=True).stdout)
    assert [(r["group"], r["core_hours"]) for r in rows] == [("facility", 4.0), ("genomics", 1.0), ("lab", 2.0)]
    listed = json.loads(lando.cli("usage", "--jobs", "--json", check=True).stdout)
    assert [r["project"] for r in listed] == ["genomics", "lab", "facility"]
