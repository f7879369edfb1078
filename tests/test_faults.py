"""Bad input and broken infrastructure: each gives a specific, actionable message on the job and
in the log, the VM is removed, and nothing else is disturbed."""
from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from conftest import WORKFLOWS, Lando, SlowFile

from lando_ssh.cloud import VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import UserDataParams, host_keys_from_console, render_user_data
from lando_ssh.cloud.local import LocalCloud
from lando_ssh.errors import HostKeyMismatch
from lando_ssh.keys import JobKeys, generate_keypair
from lando_ssh.remote import Endpoint, Remote


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
    # (the pipeline does not yet read the VM's ERROR status and its fault "the VM died": it says what it saw)
    assert job["step"] in ("S", "R"), job["reason"]
    assert "unreachable" in job["reason"] or "stopped without recording an exit code" in job["reason"], job["reason"]


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
