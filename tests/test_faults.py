"""Bad input and broken infrastructure: each gives a specific, actionable message on the job and
in the log, the VM is removed, and nothing else is disturbed."""
from __future__ import annotations

import base64
import contextlib
import copy
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from conftest import WORKFLOWS, Lando, SlowFile, store_job

from lando_ssh.cloud import VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import UserDataParams, host_keys_from_console, render_user_data
from lando_ssh.cloud.local import LocalCloud
from lando_ssh.engine import Engine
from lando_ssh.errors import HostKeyMismatch, StoreUnavailable
from lando_ssh.journal import Journal
from lando_ssh.keys import JobKeys, generate_keypair
from lando_ssh.model import Job, JobState, JobStep
from lando_ssh.remote import Endpoint, Remote
from lando_ssh.store import JobStore, open_store


def needs_root() -> None:
    """A VM disk of limited size is a tmpfs mount: the suite runs as root (see the README); fail, never skip."""
    assert os.geteuid() == 0, "this test needs root (cloud.local.disk_mb mounts a tmpfs): run the suite as root"


def run_failing(lando: Lando, job_id: int) -> dict:
    proc = lando.cli("job", str(job_id))
    assert proc.returncode == 1, proc.stderr
    job = lando.status(job_id)
    assert job["state"] == "E"
    assert job["reason"] in proc.stderr
    assert lando.vm_dirs() == []
    return job


def text_job(lando: Lando, tmp_path: Path, text: str | Path, *extra: str) -> int:
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"text": {"class": "File", "location": str(text)},
                                     "more": {"class": "File", "location": str(WORKFLOWS / "data" / "more.txt")}}))
    return lando.submit(WORKFLOWS / "upper_count.cwl", order, *extra)


def test_a_flavor_that_does_not_exist_fails_at_once_listing_the_flavors(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")  # (`submit --flavor m9.huge` is refused: test_submit_checks)
    lando.write_config(vm={"flavor": "m9.huge"})  # the config's default flavor, gone from the cloud since
    job = run_failing(lando, job_id)
    assert job["step"] == "V"
    assert "flavor 'm9.huge' does not exist; flavors: m1.small, m1.medium, m1.large" in job["reason"]


def test_a_cloud_that_refuses_to_create_vms_fails_the_job_with_its_reason(lando: Lando):
    lando.write_config(cloud={"local": {"fail_create": True}})
    job = run_failing(lando, lando.submit(WORKFLOWS / "no_inputs.cwl"))
    assert job["step"] == "V" and "refused to create the VM" in job["reason"]


def test_a_vm_slower_than_the_boot_timeout_is_removed_and_the_timeout_named(lando: Lando):
    lando.write_config(vm={"boot_timeout": 1}, cloud={"local": {"boot_delay": 5.0}})
    job = run_failing(lando, lando.submit(WORKFLOWS / "no_inputs.cwl"))
    assert job["step"] == "V" and "boot timeout (1s)" in job["reason"]


def test_a_workflow_past_max_run_time_is_stopped_and_the_limit_named(lando: Lando):
    lando.write_config(limits={"max_run_time": 2})
    job = run_failing(lando, lando.submit(WORKFLOWS / "sleep.cwl"))
    assert job["step"] == "R" and "limits.max_run_time (2s)" in job["reason"]


def test_an_input_deleted_after_submit_fails_staging_naming_the_file(lando: Lando, tmp_path: Path):
    text = tmp_path / "text.txt"
    text.write_text("soon gone\n")
    job_id = text_job(lando, tmp_path, text)
    text.unlink()
    job = run_failing(lando, job_id)
    assert job["step"] == "S" and str(text) in job["reason"]


def test_an_input_url_that_answers_404_fails_staging_with_the_http_error(lando: Lando, tmp_path: Path, http_files):
    base_url, _ = http_files
    job = run_failing(lando, text_job(lando, tmp_path, f"{base_url}/missing.txt"))
    assert job["step"] == "S"
    assert f"cannot download {base_url}/missing.txt" in job["reason"] and "404" in job["reason"]


def test_outputs_this_server_cannot_write_keep_the_vm_until_they_are_stored(lando: Lando, tmp_path: Path):
    blocker = tmp_path / "results"
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml",
                          "--output-dir", str(blocker / "job"))
    blocker.write_text("a file where the output dir's parent should be\n")  # (submit refuses it when there then)

    assert lando.cli("job", str(job_id)).returncode == 1
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("E", "O")
    assert "cannot write the outputs" in job["error"] and str(blocker / "job") in job["error"]
    assert "the results exist only on it" in job["reason"] and not job["vm"]["deleted"]
    vm_id = job["vm"]["id"]

    blocker.unlink()  # the admin frees the path (or the disk)
    again = lando.cli("job", str(job_id))

    assert again.returncode == 0, again.stderr
    job = lando.status(job_id)
    assert job["state"] == "F" and job["vm"]["id"] == vm_id  # stored from the same VM, not run again
    assert [h["step"] for h in job["history"]].count("R") == 1
    assert (blocker / "job" / "upper.txt").read_text() == "HELLO WORLD\nSECOND LINE\nMORE TEXT\n"
    assert lando.vm_dirs() == []


def test_inputs_larger_than_the_vm_disk_fail_before_the_transfer(lando: Lando, tmp_path: Path):
    needs_root()
    lando.write_config(cloud={"local": {"disk_mb": 2}})
    big = tmp_path / "big.txt"
    big.write_bytes(b"x\n" * (3 * 1024 * 1024))
    job = run_failing(lando, text_job(lando, tmp_path, big))
    assert job["step"] == "S" and "the VM's disk is too small for the inputs: they need 6.0 MiB" in job["reason"]


def test_a_workflow_that_fills_the_vm_disk_says_so(lando: Lando, tmp_path: Path):
    needs_root()
    lando.write_config(cloud={"local": {"disk_mb": 8}})
    order = tmp_path / "big.yml"
    order.write_text(yaml.safe_dump({"megabytes": 20}))
    job = run_failing(lando, lando.submit(WORKFLOWS / "big_output.cwl", order))
    assert job["step"] == "R" and "the VM's disk filled up" in job["reason"]
    assert "No space left on device" in job["error"]


@contextlib.contextmanager
def booted_vm(lando: Lando, name: str, job_id: int) -> Iterator[tuple[VmInfo, JobKeys, list[str], str]]:
    """A local VM holding job `job_id`'s key: (its info, the job's keys, its console host keys, the login user)."""
    cloud = LocalCloud(lando.config())
    keys = JobKeys(str(lando.data_dir / "keys"), job_id)
    user_data = render_user_data(UserDataParams(keys.ensure(), cloud.default_user(), cloud.vm_work_dir(name)))
    cloud.create_vm(VmRequest(name, "m1.small", "local", user_data))
    try:
        while (info := cloud.get_vm(name)).status != "ACTIVE":  # type: ignore[union-attr]
            threading.Event().wait(0.05)
        yield info, keys, host_keys_from_console(cloud.console_log(name)), cloud.default_user()
    finally:
        cloud.delete_vm(name)


def test_a_vm_presenting_another_host_key_is_refused(lando: Lando, tmp_path: Path):
    with booted_vm(lando, "lando-test-hostkey", 1) as (info, keys, real, user):
        impostor = generate_keypair(str(tmp_path / "impostor"))
        good = Remote(Endpoint("127.0.0.1", info.port, user, keys.private_path, real))
        assert good.run(["printf", "%s", "$(id) `x`; \"q\" 'q'\n"]).stdout == "$(id) `x`; \"q\" 'q'\n"
        good.close()
        bad = Remote(Endpoint("127.0.0.1", info.port, user, keys.private_path, [impostor]))
        with pytest.raises(HostKeyMismatch, match="not the pinned one"):
            bad.run(["true"], retry=False)
        with pytest.raises(HostKeyMismatch, match="no host key is pinned"):
            Remote(Endpoint("127.0.0.1", info.port, "root", keys.private_path, [])).run(["true"], retry=False)


def test_a_dropped_connection_is_reopened_and_the_command_runs(lando: Lando):
    with booted_vm(lando, "lando-test-reconnect", 2) as (info, keys, host_keys, user):
        remote = Remote(Endpoint("127.0.0.1", info.port, user, keys.private_path, host_keys))
        assert remote.run(["echo", "one"]).stdout == "one\n"
        transport = remote.connect()
        transport.sock.close()  # the network drops under the open connection
        assert remote.run(["echo", "two"]).stdout == "two\n"
        assert remote.connect() is not transport
        remote.close()


def test_keys_are_private_and_the_host_key_lines_are_well_formed(lando: Lando):
    keys = JobKeys(str(lando.data_dir / "keys"), 3)
    public = keys.ensure()
    assert oct(os.stat(keys.private_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(keys.private_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(keys.private_path)).st_mode & 0o777) == "0o700"
    kind, data = public.split()[:2]
    assert kind == "ssh-ed25519"
    paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def test_an_unreachable_broker_is_one_sentence_and_exit_code_3(lando: Lando):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    lando.write_config(work_queue={"port": port})
    reason = f"could not send start_job for job 1: cannot connect to RabbitMQ at amqp://guest@127.0.0.1:{port}/%2F: " \
        "connection refused"
    sent = lando.cli("send", "start_job", "1")
    assert sent.returncode == 3 and sent.stderr.splitlines() == [f"lando-ssh: {reason}"]

    submitted = lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), "--start")
    assert submitted.returncode == 3 and submitted.stdout == "1\n"
    assert submitted.stderr.splitlines() == [
        f"lando-ssh: job 1 is stored (state N) but was not started: {reason}; start it later with "
        "`lando-ssh send start_job 1`"]
    assert lando.status(1)["state"] == "N"


def test_staging_past_its_timeout_is_stopped_and_the_limit_named(lando: Lando, tmp_path: Path,
                                                                 slow_url: str):
    SlowFile.seconds = 30.0  # the download would take 30 s
    lando.write_config(limits={"staging_timeout": 1})
    job_id = text_job(lando, tmp_path, slow_url)
    started = time.monotonic()
    job = run_failing(lando, job_id)
    assert time.monotonic() - started < 20
    assert job["step"] == "S"
    assert "staging took longer than limits.staging_timeout (1s) and was stopped" in job["reason"]


def test_an_internal_error_in_a_step_is_not_the_job_s_failure_the_step_runs_again(lando: Lando):
    lando.write_config(cloud={"local": {"internal_errors": 1}})  # the create step's first console read raises
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    job = lando.status(job_id)
    assert job["state"] == "F" and job["error"] is None and job["reason"] == ""
    notes = [h["note"] for h in job["history"] if "internal error" in h["note"]]
    assert notes == ["step V (create VM) runs again in 1s after an internal error of this server (RuntimeError: "
                     "cloud.local.internal_errors: injected internal error 1)"]
    assert len(job["past_vms"]) == 0  # the same VM, found again: not a second one
    assert "Traceback" in proc.stderr and "injected internal error 1" in proc.stderr  # the log has it for the admin


def test_a_job_s_own_failure_after_an_internal_error_ends_in_e_with_its_sentence(lando: Lando):
    lando.write_config(cloud={"local": {"internal_errors": 1}})
    job = run_failing(lando, lando.submit(WORKFLOWS / "fail.cwl"))
    assert (job["state"], job["step"]) == ("E", "R")
    assert job["reason"].startswith("step R (run workflow) failed: cwltool exited with code 1 (tool explode exited "
                                    "with status 3: explode: something went wrong on purpose)")
    assert "internal error" not in job["error"]
    assert any("after an internal error" in h["note"] for h in job["history"])


def test_the_local_clouds_random_faults_name_their_knob_and_a_vm_that_dies_mid_run_fails_its_job(lando: Lando,
                                                                                                 tmp_path: Path):
    lando.write_config(cloud={"local": {"fail_create_fraction": 1.0}})
    job = run_failing(lando, lando.submit(WORKFLOWS / "no_inputs.cwl"))
    assert "injected: cloud.local.fail_create_fraction" in job["reason"]

    # a VM that dies 1 s after it booted, while the workflow sleeps: the job ends in E, its VM deleted
    lando.write_config(cloud={"local": {"die_fraction": 1.0, "die_after": 1.0}}, health={"interval": 0.5, "grace": 2},
                       cwl_base_command=["sh", "-c", 'sleep "$0"; echo "{}"', "30"])
    order = tmp_path / "order.yml"
    order.write_text("seconds: 30\n")
    job = run_failing(lando, lando.submit(WORKFLOWS / "sleep.cwl", order))
    assert job["step"] in ("S", "R"), job["reason"]  # (it dies as the inputs go or as the workflow runs)
    vm = job["vm"]["name"]
    assert f"VM {vm} went to ERROR: the VM died (the local cloud's fault knob cloud.local.die_fraction)" \
        in job["reason"], job["reason"]


def test_a_vm_deleted_behind_lando_s_back_mid_run_fails_its_job_saying_it_no_longer_exists(lando: Lando,
                                                                                         tmp_path: Path):
    lando.write_config(health={"interval": 0.5, "grace": 60},  # (not waited out: the cloud says the VM is gone)
                       cwl_base_command=["sh", "-c", 'sleep "$0"; echo "{}"', "30"])
    order = tmp_path / "order.yml"
    order.write_text("seconds: 30\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    runner = lando.popen("job", str(job_id))
    try:
        running = lando.wait_for(job_id, lambda j: j["step"] == "R" and j["run"]["run_pid"] is not None)
        LocalCloud(lando.config()).delete_vm(running["vm"]["id"])  # an admin's `openstack server delete`
        assert runner.wait(timeout=60) == 1
    finally:
        runner.kill()
        runner.wait()
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("E", "R")
    assert job["reason"].startswith(f"step R (run workflow) failed: VM {running['vm']['name']} no longer exists in "
                                    "the cloud"), job["reason"]
    assert lando.vm_dirs() == []


def test_a_vm_whose_ssh_connections_are_cut_still_runs_its_job(lando: Lando, tmp_path: Path):
    lando.write_config(cloud={"local": {"drop_ssh_every": 1.5}}, health={"interval": 0.5, "grace": 30},
                       cwl_base_command=["sh", "-c", 'sleep "$0"; echo "{}"', "5"])
    order = tmp_path / "order.yml"
    order.write_text("seconds: 5\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    proc = lando.cli("job", str(job_id))
    assert proc.returncode == 0, proc.stderr
    assert lando.status(job_id)["state"] == "F"
    assert lando.vm_dirs() == []


Write = Callable[[Job, Job], bool]  # (the job before a change, after it): is this the write that fails?


class StoreThatFailsOnce:
    """The job store, refusing once each of the writes `fails` picks as a locked SQLite file refuses it (a
    PostgreSQL store that lost its connection raises the same StoreUnavailable); every other call is the store's."""

    def __init__(self, store: JobStore, *fails: Write):
        self.store = store
        self.fails = list(fails)
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        before = self.store.get(job_id)
        after = copy.deepcopy(before)
        change(after)
        for fail in self.fails:
            if fail(before, after):
                self.fails.remove(fail)
                self.refused.append(f"{after.state.value}/{after.step.value}")
                raise StoreUnavailable(f"the job store {self.store.path} cannot be used: database is locked")
        return self.store.update(job_id, change)


def records_exit_code(before: Job, after: Job) -> bool:  # in step R, as cwltool's exit is noted
    return before.run.exit_code is None and after.run.exit_code is not None


def drive_with(lando: Lando, job_id: int, store: StoreThatFailsOnce) -> Job:
    """Drive the job in this process as `lando-ssh job` does, with the failing store under the journal."""
    config = lando.config()
    cloud = LocalCloud(config)
    try:
        return Engine(config, Journal(store), cloud).drive(job_id)
    finally:
        cloud.close()
        store.store.close()


def test_a_job_store_that_fails_in_a_step_and_between_steps_is_not_the_job_s_failure(lando: Lando,
                                                                                     caplog: pytest.LogCaptureFixture):
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    store = StoreThatFailsOnce(
        open_store(lando.config().store_url),
        records_exit_code,
        lambda before, after: before.step == JobStep.RUNNING and after.step == JobStep.ORGANIZE_OUTPUT,
        lambda before, after: after.state == JobState.FINISHED)  # the job's end, written after the last step

    with caplog.at_level(logging.WARNING):
        job = drive_with(lando, job_id, store)

    assert store.refused == ["R/R", "R/o", "F/"]  # each write was refused once
    job = store_job(lando, job_id)
    assert (job.state, job.error, job.reason) == (JobState.FINISHED, None, "")
    notes = [h.note for h in job.history if "runs again" in h.note]
    said = f"step R (run workflow) runs again in 1s after the job store failed (the job store {store.store.path} " \
        "cannot be used: database is locked)"
    assert notes == [said[:200]]  # (a history note is at most 200 characters)
    assert job.run.exit_code == 0 and (Path(job.output_dir) / "docs").is_dir()
    logged = [r.getMessage() for r in caplog.records if "database is locked" in r.getMessage()]
    assert any("step R (run workflow)" in m and "the step runs again in 1s" in m for m in logged), logged
    assert any("the start of step o (organize output) could not be stored" in m for m in logged), logged
    assert any("the job's end could not be stored" in m for m in logged), logged
    assert lando.vm_dirs() == []


def test_a_job_s_own_failure_met_by_a_job_store_failure_still_ends_in_e_with_its_sentence(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "fail.cwl")
    store = StoreThatFailsOnce(open_store(lando.config().store_url), records_exit_code,
                               lambda before, after: after.state == JobState.ERROR)  # the failure's record

    drive_with(lando, job_id, store)

    assert store.refused == ["R/R", "E/R"]
    job = store_job(lando, job_id)
    assert (job.state, job.step) == (JobState.ERROR, JobStep.RUNNING)
    assert job.reason.startswith("step R (run workflow) failed: cwltool exited with code 1 (tool explode exited "
                                 "with status 3: explode: something went wrong on purpose)")
    assert "Its partial outputs and logs are in" in job.reason  # saved once, not lost as the record was written again
    assert "job store" not in job.error
    assert any("after the job store failed" in h.note for h in job.history)
    assert lando.vm_dirs() == []
