"""A job's run state (`Job.run`): typed, stored with the job, read from records written before it was typed."""
from __future__ import annotations

import json
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from conftest import WORKFLOWS, Lando, store_job

from lando_ssh.model import Job, JobState, JobStep, RunState
from lando_ssh.store.sqlite import SqliteStore


def _old_record(job: Job) -> dict:
    """The job as a server from before the typed run state wrote it: the engine's keys among the facts."""
    d = job.to_dict()
    run = {k: v for k, v in d.pop("run").items() if v not in (None, False, 0, "")}
    d["facts"] = {**d["facts"], **run}
    return d


def test_a_record_from_before_the_run_state_was_typed_reads_its_engine_keys_as_run_state():
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = Job(7, "old", "wf.cwl", {}, facts={"bespin": {"job_id": 7}, "cwltool_args": ["--relax-path-checks"]})
    job.run = RunState(vm_attempt=2, flavor="m1.small", boot_retries=1, run_pid=4242, run_started=started,
                       commands={"cwl_base_command": ["cwltool"]}, bytes_staged=10, vm_kept=True)

    again = Job.from_dict(json.loads(json.dumps(_old_record(job))))

    assert again.run == job.run
    assert again.facts == {"bespin": {"job_id": 7}, "cwltool_args": ["--relax-path-checks"]}  # only the extras


def test_a_new_attempt_is_a_fresh_run_state_that_keeps_the_vm_count_and_placement():
    run = RunState(vm_attempt=3, flavor="m1.large", run_pid=12, exit_code=1, vm_output={"x": 1}, vm_kept=True,
                   restart_pending=True, docs_path="/out/docs",
                   unreachable_since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    fresh = run.next_attempt(rerun=True)

    assert fresh == RunState(vm_attempt=3, flavor="m1.large", rerun=True)
    assert RunState.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_a_server_upgraded_mid_run_resumes_the_run_it_left(lando: Lando, tmp_path: Path):
    order = tmp_path / "job.yml"
    order.write_text("seconds: 3\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    runner = lando.popen("job", str(job_id))
    try:
        running = lando.wait_for(job_id, lambda j: j["step"] == "R" and j["run"]["run_pid"] is not None)
    finally:
        runner.send_signal(signal.SIGKILL)  # the old server dies with cwltool running on the VM
        runner.wait()
    store = SqliteStore(lando.config().store_url)
    path = store.path
    job = store.get(job_id)
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:  # its record, as the old server wrote it
        db.execute("UPDATE jobs SET data=? WHERE id=?", (json.dumps(_old_record(job)), job_id))
        assert "run" not in json.loads(db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()[0])
    finally:
        db.close()

    lando.cli("job", str(job_id), check=True)  # the new server takes it up

    done = store_job(lando, job_id)
    assert done.state.value == "F"
    assert done.run.run_pid == running["run"]["run_pid"]  # the run it left, waited on: not started again
    assert done.run.run_started == job.run.run_started and done.run.vm_attempt == 1
    assert done.vm is not None and done.vm.name == running["vm"]["name"] and not done.past_vms
    assert "r" not in [h.state.value for h in done.history]  # resumed, not restarted
    assert (Path(done.output_dir) / "done.txt").read_text() == "done\n"


def test_a_restart_the_daemon_recorded_but_never_ran_is_run_by_the_foreground_command_too(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    store = SqliteStore(lando.config().store_url)
    try:
        def failed_then_restart_requested(j: Job) -> None:  # E, then restart_job taken by a daemon that died
            j.set_state(JobState.ERROR, JobStep.RUNNING, note="failed")
            j.run = RunState(vm_attempt=1, run_pid=99, exit_code=1, restart_pending=True)
            j.set_state(JobState.RESTARTING, note="restart_job received")

        store.update(job_id, failed_then_restart_requested)
    finally:
        store.close()

    proc = lando.cli("job", str(job_id))  # the same restart rule as the daemon's: it restarts first

    assert proc.returncode == 0, proc.stderr
    assert "was restarting; restarting it" in proc.stderr
    done = store_job(lando, job_id)
    assert done.state == JobState.FINISHED and not done.run.restart_pending
    assert done.run.vm_attempt == 2 and done.run.exit_code == 0 and done.run.run_pid != 99  # a fresh attempt
