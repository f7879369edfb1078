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
from lando_ssh.usage import parse_when, to_csv, usage, vm_hours

T = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(id: int, *, user: str = "ann", state: JobState = JobState.FINISHED, vm_from: float | None = 0.0,
           vm_hours: float | None = 1.0, vcpus: int | None = 4, workflow: str = "/wf/a.cwl",
           project: str | None = None, created: float = 0.0) -> Job:
    """A job created `created` hours after T whose VM lived from `vm_from` for `vm_hours` (None: still running)."""
    job = Job(id=id, name=f"j{id}", workflow=workflow, job_order={}, user=user, created=T + timedelta(hours=created))
    if vm_from is not None:
        start = T + timedelta(hours=vm_from)
        job.vm = VmRecord(name=f"vm{id}", id=f"vm{id}", vcpus=vcpus, created=start,
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


def test_csv_has_a_header_and_one_row_per_group():
    rows = usage([record(1, user="ann", vm_hours=0.25, vcpus=2)], by="user")
    assert to_csv(rows, "user").splitlines() == [
        "user,jobs,finished,error,canceled,deleted,active,vm_hours,core_hours",
        "ann,1,1,0,0,0,0,0.250000,0.500000",
        "TOTAL,1,1,0,0,0,0,0.250000,0.500000"]


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
    assert [r["user"] for r in rows][-1] == "TOTAL" and len(rows) == 2
    assert int(rows[0]["jobs"]) == 2 and int(rows[0]["finished"]) == 2
    assert float(rows[-1]["core_hours"]) == pytest.approx(expected, abs=2e-6)

    table = lando.cli("usage", "--by", "workflow", check=True).stdout
    assert str(WORKFLOWS / "no_inputs.cwl") in table and "CORE-HOURS" in table
    assert json.loads(lando.cli("usage", "--since", "1h", "--json", check=True).stdout)[-1]["jobs"] == 2
    assert json.loads(lando.cli("usage", "--until", "1h", "--json", check=True).stdout)[-1]["jobs"] == 0


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
        ("ann", 2, 1, 16.0), ("bob", 1, 0, 3.0), ("TOTAL", 3, 1, 19.0)]
    proc = lando.cli("usage", "--since", until, "--until", since)
    assert proc.returncode == 2 and "--since" in proc.stderr and "must be before --until" in proc.stderr
