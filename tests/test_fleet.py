"""Running a fleet (issue 6) with the local cloud and the daemon: VM limits, flavor choice,
health checks, boot retries, metrics."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import requests
import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, send, store_job, vms_created_for, wait_job

from lando_ssh.cloud.local import LocalCloud


def daemon_config(lando: Lando, names: dict[str, str], **settings: object) -> Daemon:
    lando.settings["work_queue"] = {**names, "heartbeat": 10}
    lando.settings.update(settings)
    lando.write_config()
    return Daemon(lando)


def test_six_jobs_under_max_vms_two_never_exceed_two_vms_and_all_finish(lando: Lando, tmp_path: Path,
                                                                         broker_names):
    daemon = daemon_config(lando, broker_names, limits={"max_vms": 2})
    order = tmp_path / "sleep.yml"
    order.write_text(yaml.safe_dump({"seconds": 2}))
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", order) for _ in range(6)]
    daemon.start()
    try:
        for job_id in ids:
            send(lando, "start_job", job_id)
        cloud = LocalCloud(lando.config())
        most, reasons, listed = 0, set(), []
        deadline = time.monotonic() + 240
        while not all(finished(store_job(lando, i)) for i in ids):
            assert time.monotonic() < deadline and daemon.alive(), daemon.text()[-2000:]
            most = max(most, len(cloud.find_vms({})))
            if most == 2 and not listed:
                listed = json.loads(lando.cli("vms", "--json", check=True).stdout)
            reasons |= {store_job(lando, i).reason for i in ids} - {""}
            time.sleep(0.05)
    finally:
        daemon.stop()
    assert most == 2
    assert listed and all(r["job"] and r["status"] in ("BUILD", "ACTIVE") and r["activity"] in ("busy", "idle")
                          for r in listed)
    assert any(r["activity"] == "busy" for r in listed)
    assert [store_job(lando, i).state.value for i in ids] == ["F"] * 6
    assert "waiting: 2 of 2 VMs in use (limits.max_vms)" in reasons, reasons


def test_a_job_gets_the_cheapest_flavor_that_fits_and_one_no_allowed_flavor_fits_fails_at_once(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "needs_cores.cwl")
    assert lando.cli("job", str(job_id)).returncode == 0
    job = lando.status(job_id)
    assert job["vm"]["flavor"] == "m1.large"
    assert (Path(job["output_dir"]) / "cores.txt").read_text() == "3\n"

    stored = lando.submit(WORKFLOWS / "needs_cores.cwl")  # (submitted now, `submit` would refuse it)
    lando.write_config(flavors={"allow": "^m1[.](small|medium)$"})
    refused = lando.cli("job", str(stored))
    assert refused.returncode == 1
    assert ("no allowed flavor fits the job: it needs 3 cores" in refused.stderr
            and "the largest allowed flavor, m1.medium, has 2 vCPUs" in refused.stderr)
    assert lando.vm_dirs() == []


def _kill_vm_network(vm_dir: Path) -> int:
    """The VM stops answering SSH: its sshd listener and its open sessions die; its workflow runs on.

    Returns how many sshd processes it killed."""
    needle = str(vm_dir / "sshd_config").encode()
    listener = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).find(needle) >= 0]
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) in listener]
    for pid in children + listener:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(listener)


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _ppid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def test_a_vm_that_stops_answering_errors_the_job_within_interval_plus_grace_and_restart_finishes_it(
        lando: Lando, tmp_path: Path, broker_names):
    daemon = daemon_config(lando, broker_names, health={"interval": 1, "grace": 3})
    order = tmp_path / "sleep.yml"
    order.write_text(yaml.safe_dump({"seconds": 20}))  # long enough to outlast a loaded machine's polling
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    daemon.start()
    try:
        send(lando, "start_job", job_id)
        job = wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)
        vm_dir = lando.data_dir / "local-cloud" / job.vm.name
        assert _kill_vm_network(vm_dir) > 0, "the VM's sshd was gone before the test could silence it"
        killed = time.monotonic()
        job = wait_job(lando, job_id, finished, timeout=60, daemon=daemon)
        took = time.monotonic() - killed
        assert (job.state.value, job.step.value) == ("E", "R"), job.reason
        assert "unreachable since" in job.reason and "health.grace 3s" in job.reason
        assert took < 1 + 3 + 5 + 5, f"the job errored {took:.1f}s after its VM went silent"
        assert not vm_dir.exists()

        send(lando, "restart_job", job_id)
        job = wait_job(lando, job_id, lambda j: j.state.value == "F" or (
            j.state.value == "E" and j.history[-1].note != job.history[-1].note), timeout=150, daemon=daemon)
        assert job.state.value == "F", job.reason
        assert len(vms_created_for(lando, job_id)) == 2
    finally:
        daemon.stop()
    assert lando.vm_dirs() == []


def test_a_vm_stuck_in_boot_is_replaced_and_the_job_finishes(lando: Lando):
    lando.write_config(vm={"boot_timeout": 2, "boot_retries": 2}, cloud={"local": {"stuck_boots": 1}})
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    proc = lando.cli("job", str(job_id))
    assert proc.returncode == 0, proc.stderr
    names = vms_created_for(lando, job_id)
    assert len(names) == 2 and names[0].endswith("-1") and names[1].endswith("-2")
    job = lando.status(job_id)
    assert any("trying a new VM (retry 1 of 2)" in h["note"] for h in job["history"])
    assert [v["name"] for v in job["past_vms"]] == [names[0]]  # still counted by `usage`
    assert lando.vm_dirs() == []


def test_the_daemon_serves_prometheus_metrics(lando: Lando, broker_names):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = daemon_config(lando, broker_names, metrics={"listen": f"127.0.0.1:{port}"})
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    daemon.start()
    try:
        send(lando, "start_job", job_id)
        wait_job(lando, job_id, finished, daemon=daemon)
        deadline = time.monotonic() + 20
        while True:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        daemon.stop()
    assert 'state="F"' in text
    for step in ("V", "S", "R", "o", "O", "T"):  # the finished job's steps, each timed once
        assert f'lando_step_seconds_count{{step="{step}"}} 1.0' in text, step
