"""`lando-ssh run`, the daemon, through the real RabbitMQ (127.0.0.1:5672), real sshd VMs and cwltool:
many jobs at once, cancel in every step, restart, crashes, broker restarts, hostile messages, SIGTERM."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
import uuid
from pathlib import Path

import yaml
from conftest import (
    WORKFLOWS,
    Daemon,
    Lando,
    SlowFile,
    finished,
    publish_raw,
    rabbit,
    send,
    store_job,
    vms_created_for,
    wait_job,
)


def url_job(lando: Lando, tmp_path: Path, url: str) -> int:
    order = tmp_path / f"url-{uuid.uuid4().hex[:6]}.yml"
    order.write_text(yaml.safe_dump({"text": {"class": "File", "location": url},
                                     "more": {"class": "File", "location": str(WORKFLOWS / "data" / "more.txt")}}))
    return lando.submit(WORKFLOWS / "upper_count.cwl", order)


# -- the tests ---------------------------------------------------------------------------------
def test_ten_jobs_sent_at_once_all_finish_and_every_change_is_published(lando: Lando, daemon: Daemon,
                                                                          broker_names: dict[str, str]):
    connection = rabbit()
    channel = connection.channel()
    channel.exchange_declare(broker_names["status_exchange"], "fanout")
    events_queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events_queue, broker_names["status_exchange"])
    ids = []
    for i in range(10):
        greet = lando.root / f"greet-{i}.yml"
        greet.write_text(yaml.safe_dump({"message": f"job number {i}"}))
        ids.append(int(lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), str(greet), "--start",
                                 check=True).stdout))
    daemon.start()

    jobs = [wait_job(lando, i, finished, timeout=240, daemon=daemon) for i in ids]

    assert [j.state.value for j in jobs] == ["F"] * 10, [j.reason for j in jobs]
    for i, job in enumerate(jobs):
        assert (Path(job.output_dir) / "greeting.txt").read_text() == f"job number {i}\n"
        assert len(vms_created_for(lando, job.id)) == 1
    events: dict[int, list[tuple[str, str]]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(events.get(i, [("", "")])[-1] == ("F", "") for i in ids):
        method, _, body = channel.basic_get(events_queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        event = json.loads(body)
        events.setdefault(event["job"], []).append((event["state"], event["step"]))
    connection.close()
    for i in ids:
        steps = [step for state, step in events[i] if state == "R"]
        assert steps == ["V", "S", "R", "o", "O", "T"], events[i]
        assert events[i][-1] == ("F", "")
    assert lando.vm_dirs() == []


def test_cancel_during_boot_staging_and_run_leaves_no_vm_or_process(lando: Lando, daemon: Daemon, tmp_path: Path,
                                                                     slow_url: str):
    SlowFile.seconds = 30.0
    daemon.start()
    # during boot: VMs take 30 s to boot here
    lando.settings["cloud"] = {"local": {"boot_delay": 30.0}}
    lando.write_config()
    booting = lando.submit(WORKFLOWS / "no_inputs.cwl")
    daemon.stop()
    daemon.start()
    send(lando, "start_job", booting)
    wait_job(lando, booting, lambda j: j.step.value == "V" and j.vm and j.vm.id, daemon=daemon)
    send(lando, "cancel_job", booting)
    job = wait_job(lando, booting, finished, timeout=30, daemon=daemon)
    assert job.state.value == "C"
    assert lando.vm_processes(job.vm.name) == set()

    lando.settings["cloud"] = {"local": {"boot_delay": 0.0}}
    lando.write_config()
    daemon.stop()
    daemon.start()
    staging = url_job(lando, tmp_path, slow_url)
    running = lando.submit(WORKFLOWS / "sleep.cwl")
    send(lando, "start_job", staging)
    send(lando, "start_job", running)
    wait_job(lando, staging, lambda j: j.step.value == "S", daemon=daemon)
    wait_job(lando, running, lambda j: j.run.run_pid is not None, daemon=daemon)
    time.sleep(1.0)  # the download and the workflow are under way
    send(lando, "cancel_job", staging)
    send(lando, "cancel_job", running)

    for job_id in (staging, running):
        job = wait_job(lando, job_id, finished, timeout=30, daemon=daemon)
        assert job.state.value == "C", job.reason
        assert [h.state.value for h in job.history][-2:] == ["c", "C"]
        assert lando.vm_processes(job.vm.name) == set()
    assert lando.vm_dirs() == []
    assert daemon.alive()


def test_restart_after_a_failure_in_the_run_step_completes_on_the_same_vm(lando: Lando, daemon: Daemon,
                                                                          tmp_path: Path):
    lando.settings["keep_vm_on_error"] = True
    lando.write_config()
    flag = tmp_path / "flag"
    order = tmp_path / "flaky.yml"
    order.write_text(yaml.safe_dump({"flag": str(flag)}))
    job_id = lando.submit(WORKFLOWS / "flaky.cwl", order)
    daemon.start()
    send(lando, "start_job", job_id)
    job = wait_job(lando, job_id, finished, daemon=daemon)
    assert (job.state.value, job.step.value) == ("E", "R")
    assert "is missing" in job.error and "VM kept" in job.reason
    first_vm = job.vm.id

    flag.write_text("now it works")
    send(lando, "restart_job", job_id)
    job = wait_job(lando, job_id, lambda j: j.state.value == "F" or (j.state.value == "E" and
                                                                      j.history[-1].state.value != "E"),
                   daemon=daemon)

    assert job.state.value == "F", job.reason
    assert job.vm.id == first_vm and vms_created_for(lando, job_id) == [first_vm]
    assert "r" in [h.state.value for h in job.history]
    assert (Path(job.output_dir) / "ok.txt").read_text() == "ok\n"
    assert lando.vm_dirs() == []


def test_daemon_killed_in_staging_run_and_store_steps_resumes_each_job_once_on_one_vm(
        lando: Lando, daemon: Daemon, tmp_path: Path, slow_url: str):
    SlowFile.seconds = 3.0
    sleeper_order = tmp_path / "sleep.yml"
    sleeper_order.write_text(yaml.safe_dump({"seconds": 4}))
    big_order = tmp_path / "big.yml"
    big_order.write_text(yaml.safe_dump({"megabytes": 400}))
    cases = [("S", url_job(lando, tmp_path, slow_url)),
             ("R", lando.submit(WORKFLOWS / "sleep.cwl", sleeper_order)),
             ("O", lando.submit(WORKFLOWS / "big_output.cwl", big_order))]
    for step, job_id in cases:
        daemon.start()
        send(lando, "start_job", job_id)
        wait_job(lando, job_id, lambda j, s=step: j.step.value == s, daemon=daemon)
        daemon.stop(signal.SIGKILL)
        daemon.start()
        job = wait_job(lando, job_id, finished, daemon=daemon)
        daemon.stop()

        assert job.state.value == "F", f"killed in {step}: {job.reason}"
        assert [h.state.value for h in job.history].count("F") == 1
        assert len(vms_created_for(lando, job_id)) == 1, f"killed in {step}"
        outputs = {f.name for f in Path(job.output_dir).iterdir()}
        assert outputs >= set(job.output and [o["basename"] for o in job.output.values()])
    assert (Path(store_job(lando, cases[2][1]).output_dir) / "big.bin").stat().st_size == 400 * 1048576
    assert lando.vm_dirs() == []


def test_broker_restart_mid_run_the_job_finishes_and_later_messages_are_served(lando: Lando, daemon: Daemon,
                                                                               tmp_path: Path):
    order = tmp_path / "sleep.yml"
    order.write_text(yaml.safe_dump({"seconds": 6}))
    long_job = lando.submit(WORKFLOWS / "sleep.cwl", order)
    later_job = lando.submit(WORKFLOWS / "no_inputs.cwl")
    daemon.start()
    send(lando, "start_job", long_job)
    wait_job(lando, long_job, lambda j: j.run.run_pid is not None, daemon=daemon)
    try:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(2)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    send(lando, "start_job", later_job)

    for job_id in (long_job, later_job):
        job = wait_job(lando, job_id, finished, daemon=daemon)
        assert job.state.value == "F", job.reason
    assert daemon.alive()


HOSTILE_BODIES: list[bytes] = [
    b"", b"not json", b"{", b"[]", b"null", b"42", b'"start_job"',
    b'{"command": "start_job"}',
    b'{"command": "start_job", "payload": {}}',
    b'{"command": "start_job", "payload": {"job_id": -1}}',
    b'{"command": "start_job", "payload": {"job_id": 0}}',
    b'{"command": "start_job", "payload": {"job_id": "1; DROP TABLE jobs"}}',
    b'{"command": "start_job", "payload": {"job_id": true}}',
    b'{"command": "start_job", "payload": {"job_id": 1.5}}',
    b'{"command": "start_job", "payload": {"job_id": 99999}}',
    b'{"command": "rm -rf /", "payload": {"job_id": 1}}',
    b'{"command": "start_job", "payload": [1]}',
    b'{"command": "start_job", "payload": {"job_id": 100000000000000000000000000000}}',
    b'\xff\xfe\x00garbage',
    b'{"command": "start_job", "payload": {"job_id": 1}, "padding": "' + b"x" * 70000 + b'"}',
]


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch /tmp/lando-test-pwned",))


def test_malformed_and_hostile_messages_are_dead_lettered_and_the_daemon_serves_on(lando: Lando, daemon: Daemon,
                                                                                  broker_names: dict[str, str]):
    queue = broker_names["listen_queue"]
    bodies = HOSTILE_BODIES + [pickle.dumps(_Evil()), pickle.dumps({"command": "start_job", "payload": {"job_id": 1}})]
    assert len(bodies) >= 20
    good = lando.submit(WORKFLOWS / "no_inputs.cwl")
    daemon.start()
    for body in bodies:
        publish_raw(queue, body)
    send(lando, "start_job", good)

    job = wait_job(lando, good, finished, daemon=daemon)
    assert job.state.value == "F"
    assert daemon.alive() and not os.path.exists("/tmp/lando-test-pwned")
    connection = rabbit()
    channel = connection.channel()
    reasons = []
    for _ in range(len(bodies)):
        method, properties, _ = channel.basic_get(queue + ".dead", auto_ack=True)
        assert method is not None, f"only {len(reasons)} of {len(bodies)} messages were dead-lettered"
        reasons.append(properties.headers["x-lando-error"])
    connection.close()
    assert all(reasons), reasons
    assert "unknown_job" in reasons and "too_large" in reasons
    assert daemon.text().count(queue + ".dead") >= len(bodies)  # one log line per dead-lettered message


def test_sigterm_while_three_jobs_run_exits_within_ten_seconds_and_they_finish_after_restart(
        lando: Lando, daemon: Daemon, tmp_path: Path):
    order = tmp_path / "sleep.yml"
    order.write_text(yaml.safe_dump({"seconds": 5}))
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", order) for _ in range(3)]
    daemon.start()
    for job_id in ids:
        send(lando, "start_job", job_id)
    for job_id in ids:
        wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)

    took = daemon.stop(signal.SIGTERM)

    assert took < 10, f"the daemon took {took:.1f}s to stop"
    assert all(store_job(lando, i).state.value == "R" for i in ids)
    daemon.start()
    for job_id in ids:
        job = wait_job(lando, job_id, finished, daemon=daemon)
        assert job.state.value == "F", job.reason
        assert len(vms_created_for(lando, job_id)) == 1
        assert (Path(job.output_dir) / "done.txt").read_text() == "done\n"
