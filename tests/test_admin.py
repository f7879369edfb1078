"""An admin's first hour (issue 16): the commands say what happened, and do what they say."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pika
from bespin_api.service import BespinApiService
from conftest import (
    BESPIN_TOKEN,
    WORKFLOWS,
    Daemon,
    Lando,
    finished,
    publish_raw,
    rabbit,
    send,
    store_job,
    vms_created_for,
    wait_job,
)

from lando_ssh.joblock import JobLock
from lando_ssh.model import Job, JobState, JobStep
from lando_ssh.store import open_store


def kept_vm_job(lando: Lando) -> int:
    """A failed job whose VM is kept (keep_vm_on_error): a real sshd to log in to."""
    lando.write_config(keep_vm_on_error=True)
    job_id = lando.submit(WORKFLOWS / "fail.cwl")
    assert lando.cli("job", str(job_id)).returncode == 1
    return job_id


def test_ssh_runs_a_shell_and_a_command_line_like_openssh(lando: Lando):
    job_id = kept_vm_job(lando)
    try:
        work = lando.status(job_id)["vm"]
        # no command: a shell, here reading its commands from stdin as `ssh host < script` does
        shell = lando.cli("ssh", str(job_id), input="echo from the shell $((2+3))\n")
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout == "from the shell 5\n"

        # the words are joined with spaces and the remote shell reads them: globs, `;`, $((...))
        line = lando.cli("ssh", str(job_id), "--", "cd", "/ && ls -d /e*c; echo $((6*7))")
        assert line.returncode == 0, line.stderr
        assert line.stdout == "/etc\n42\n"
        words = lando.cli("ssh", str(job_id), "--", "echo", "-n", "two  words")
        assert words.stdout == "two words"  # as `ssh host echo -n 'two  words'`: the remote shell splits again
        code = lando.cli("ssh", str(job_id), "--", "exit 7")
        assert code.returncode == 7
        assert work["deleted"] is None
    finally:
        assert lando.cli("delete-vm", str(job_id)).returncode == 0


def test_vms_shows_the_jobs_state_and_step_apart_and_job_ids_as_numbers(lando: Lando):
    job_id = kept_vm_job(lando)
    try:
        rows = json.loads(lando.cli("vms", "--json", check=True).stdout)
        (row,) = [r for r in rows if r["job"] == job_id]
        assert (row["job_state"], row["job_step"], row["activity"]) == ("E", "R", "idle")
        table = lando.cli("vms", check=True).stdout.splitlines()
        assert table[0].split()[:5] == ["NAME", "JOB", "STATE", "STEP", "USE"]
        line = next(t for t in table if t.startswith(row["name"]))
        assert line.split()[1:5] == [str(job_id), "E", "R", "idle"]
    finally:
        assert lando.cli("delete-vm", str(job_id)).returncode == 0


# -- the command line: one sentence for each mistake, help for each argument -----------------------
def test_a_bad_log_level_is_one_sentence_and_exit_code_2(lando: Lando):
    proc = lando.cli("--log-level", "LOUD", "status")

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["lando-ssh: argument --log-level: a log level is one of DEBUG, INFO, WARNING, "
                                        "ERROR, CRITICAL, not 'LOUD' (see lando-ssh --help)"]


def test_version_and_config_after_the_subcommand(lando: Lando):
    from lando_ssh import __version__

    version = subprocess.run([sys.executable, "-m", "lando_ssh", "--version"], capture_output=True, text=True)
    assert (version.returncode, version.stdout) == (0, f"lando-ssh {__version__}\n")
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    after = subprocess.run([sys.executable, "-m", "lando_ssh", "status", "--json", "--config", str(lando.config_path)],
                           capture_output=True, text=True, env=lando.env())
    assert after.returncode == 0, after.stderr
    assert [j["id"] for j in json.loads(after.stdout)] == [job_id]
    store = f"sqlite:///{lando.data_dir}/jobs.sqlite (config: {lando.config_path})"
    assert after.stderr == f"lando-ssh: jobs of {store}\n"
    assert f"\n  store:   {store}\n" in lando.cli("status", str(job_id), check=True).stdout


def test_every_argument_of_every_command_has_help():
    from lando_ssh.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{name} {action.dest}" for name, sub in commands.choices.items() for action in sub._actions
               if not action.help]
    missing += [action.dest for action in parser._actions if not action.help]
    assert missing == []


def test_a_yaml_mistake_in_the_config_names_the_file_line_and_column(lando: Lando):
    lando.config_path.write_text("vm:\n  image: local\n   flavor: m1.small\n")

    proc = lando.cli("status")

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"lando-ssh: {lando.config_path}: not valid YAML at line 3, column 10: "
                                        "mapping values are not allowed here"]


def test_logs_show_no_terminal_colours_and_the_stderr_tail_once(lando: Lando, tmp_path: Path):
    out = tmp_path / "out"
    (out / "docs" / "logs").mkdir(parents=True)
    red = "\x1b[31m"
    (out / "docs" / "logs" / "cwltool-output.log").write_text(
        "".join(f"{red}INFO\x1b[0m line {n}\n" for n in range(1, 31)))
    store = open_store(lando.config().store_url)
    job = store.create(Job(0, "colours", "wf.cwl", {}, output_dir=str(out)))
    tail = "".join(f"INFO line {n}\n" for n in range(21, 31))

    def failed(j: Job) -> None:
        j.set_state(JobState.STARTING)
        j.set_state(JobState.RUNNING, JobStep.RUNNING)
        j.error = f"step R (run workflow) failed: cwltool exited with code 1.\nLast 100 lines of its stderr:\n{tail}"
        j.set_state(JobState.ERROR)

    store.update(job.id, failed)
    store.close()

    text = lando.cli("logs", str(job.id), check=True).stdout
    assert "\x1b" not in text
    assert text.count("INFO line 25\n") == 1
    assert "error:\nstep R (run workflow) failed: cwltool exited with code 1.\n" in text

    last = lando.cli("logs", str(job.id), "--tail", "2", check=True).stdout
    assert last.endswith("\ncwltool log:\nINFO line 29\nINFO line 30\n")
    assert "line 28" not in last


def test_logs_follow_prints_the_job_as_it_runs_and_ends_with_it(lando: Lando, tmp_path: Path):
    order = tmp_path / "two.yml"
    order.write_text("seconds: 2\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    driver = lando.popen("job", str(job_id))
    try:
        lando.wait_for(job_id, lambda j: j["step"] == "R")
        follow = lando.cli("logs", str(job_id), "--follow", timeout=120)
    finally:
        driver.communicate(timeout=120)
    assert driver.returncode == 0
    assert follow.returncode == 0, follow.stderr
    history = [line.split()[1:5] for line in follow.stdout.splitlines() if line.startswith("  20")]
    assert history[-1] == ["state", "F", "step", "-"]  # it went on to the end, then stopped
    assert ["state", "R", "step", "O"] in history
    assert "Final process status is success" in follow.stdout


def test_the_daemon_says_each_error_once_and_a_successful_cancel_is_no_error(lando: Lando, daemon: Daemon,
                                                                              tmp_path: Path):
    daemon.start()
    failing = int(lando.cli("submit", str(WORKFLOWS / "fail.cwl"), "--start", check=True).stdout)
    assert wait_job(lando, failing, finished, daemon=daemon).state == JobState.ERROR
    said = [line for line in daemon.text().splitlines() if "explode exited with status 3" in line]
    assert len(said) == 1 and " ERROR " in said[0], said

    order = tmp_path / "long.yml"
    order.write_text("seconds: 300\n")
    long = lando.submit(WORKFLOWS / "sleep.cwl", order)
    driver = lando.popen("job", str(long))  # the foreground drives it; the daemon only records the cancel
    try:
        lando.wait_for(long, lambda j: j["step"] == "R")
        send(lando, "cancel_job", long)
        _, stderr = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1 and f"job {long} was canceled" in stderr
    assert lando.status(long)["state"] == "C"
    assert " ERROR " not in daemon.text().split(f"job {long}: state c", 1)[-1], daemon.text()


def test_cancel_of_a_job_waiting_for_a_slot_takes_effect_at_once(lando: Lando, daemon: Daemon, tmp_path: Path):
    lando.settings["limits"] = {"max_concurrent_jobs": 1}
    lando.write_config()
    order = tmp_path / "long.yml"
    order.write_text("seconds: 300\n")
    daemon.start()
    running = int(lando.cli("submit", str(WORKFLOWS / "sleep.cwl"), str(order), "--start", check=True).stdout)
    wait_job(lando, running, lambda j: j.step.value == "R", daemon=daemon)
    waiting = int(lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), "--start", check=True).stdout)
    assert wait_job(lando, waiting, lambda j: "job slots busy" in j.reason, daemon=daemon).state == JobState.STARTING

    send(lando, "cancel_job", waiting)

    job = wait_job(lando, waiting, lambda j: j.state != JobState.STARTING, timeout=10, daemon=daemon)
    assert (job.state, job.reason, job.vm) == (JobState.CANCELED, "canceled", None)
    assert store_job(lando, running).state == JobState.RUNNING  # the slot's job never noticed
    send(lando, "cancel_job", running)
    assert wait_job(lando, running, finished, daemon=daemon).state == JobState.CANCELED
    assert vms_created_for(lando, waiting) == []


def test_step_timings_after_a_restart_are_the_attempts_own(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "fail.cwl")
    assert lando.cli("job", str(job_id)).returncode == 1
    first = lando.status(job_id)["timings"]

    assert lando.cli("job", str(job_id)).returncode == 1  # restarted from V on a new VM: it fails again

    job = lando.status(job_id)
    restarted = next(h["at"] for h in reversed(job["history"]) if h["state"] == "r")
    assert set(job["timings"]) == {"V", "S", "R"}
    attempt = (datetime.fromisoformat(job["updated"]) - datetime.fromisoformat(restarted)).total_seconds()
    for code, timing in job["timings"].items():
        assert timing["started"] > restarted > first[code]["finished"], (code, timing, restarted)
        assert timing["seconds"] <= attempt  # this attempt's own time, not the sum of both


# -- the work queue: refuse before publishing what the daemon would dead-letter ----------------------
def queued(queue: str) -> int:
    """How many messages wait in `queue` (0 when nothing ever declared it)."""
    connection = rabbit()
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        connection.close()


def test_send_refuses_an_unknown_job_and_a_start_of_a_finished_one_and_warns_when_no_daemon_listens(
        lando: Lando, broker_names: dict[str, str]):
    lando.settings["work_queue"] = broker_names
    lando.write_config()
    queue = broker_names["listen_queue"]
    done = lando.submit(WORKFLOWS / "no_inputs.cwl")
    lando.cli("job", str(done), check=True)

    unknown = lando.cli("send", "start_job", "999")
    assert (unknown.returncode, unknown.stderr) == (2, "lando-ssh: there is no job 999\n")
    finished_job = lando.cli("send", "start_job", str(done))
    assert finished_job.returncode == 2
    assert finished_job.stderr == (f"lando-ssh: job {done} is in state F (finished); start_job only starts new or "
                                   "authorized jobs (use restart_job for errored or canceled ones); not sent\n")
    assert queued(queue) == 0

    fresh = lando.submit(WORKFLOWS / "no_inputs.cwl")
    sent = lando.cli("send", "start_job", str(fresh))
    assert sent.returncode == 0
    assert f"start_job for job {fresh} sent, but no daemon consumes queue {queue}" in sent.stderr
    assert queued(queue) == 1

    started = lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), "--start")
    assert started.returncode == 0
    job_id = int(started.stdout)
    assert f"no daemon consumes queue {queue}" in started.stderr
    job = lando.status(job_id)
    assert job["state"] == "N" and f"no daemon consumes queue {queue}" in job["reason"]


def test_send_checks_a_bespin_job_by_reading_bespin_api_and_writes_nothing(lando: Lando, bespin: BespinApiService,
                                                                        broker_names: dict[str, str]):
    lando.settings["work_queue"] = broker_names
    lando.settings["bespin_api"] = {"url": bespin.url, "token": BESPIN_TOKEN}
    lando.write_config()
    done = bespin.add_job("http://127.0.0.1:9/never-read.cwl", {}, state="F")
    left_running = bespin.add_job("http://127.0.0.1:9/never-read.cwl", {}, state="R")  # as lando left it

    finished_job = lando.cli("send", "start_job", str(done))
    unknown = lando.cli("send", "start_job", "4242")
    restart = lando.cli("send", "restart_job", str(left_running))  # the daemon loads it as E: restartable

    assert finished_job.returncode == 2 and f"job {done} is in state F (finished)" in finished_job.stderr
    assert unknown.returncode == 2 and f"bespin-api at {bespin.url} has no job 4242" in unknown.stderr
    assert restart.returncode == 0 and "changes nothing" not in restart.stderr, restart.stderr
    assert queued(broker_names["listen_queue"]) == 1
    assert bespin.puts_of(done) == [] and bespin.errors_of(done) == []
    assert not (lando.data_dir / "jobs.sqlite").exists()


def test_dead_letters_are_listed_and_one_requeued_once_its_cause_is_fixed(lando: Lando, daemon: Daemon,
                                                                          broker_names: dict[str, str]):
    queue = broker_names["listen_queue"]
    daemon.start()
    publish_raw(queue, b'{"command": "start_job", "payload": {"job_id": 1}}', "application/json")  # no job 1 yet
    publish_raw(queue, b"not json at all", "application/json")
    deadline = time.monotonic() + 60
    while len(letters := json.loads(lando.cli("dead-letters", "--json", check=True).stdout)) < 2:
        assert time.monotonic() < deadline and daemon.alive(), daemon.text()[-2000:]
        time.sleep(0.2)
    assert len(json.loads(lando.cli("dead-letters", "--json", check=True).stdout)) == 2  # listing takes none away
    unknown = next(letter for letter in letters if letter["reason"] == "unknown_job")
    assert (unknown["command"], unknown["job_id"], unknown["message"]) == ("start_job", 1, "there is no job 1")
    table = lando.cli("dead-letters", check=True).stdout
    assert unknown["id"] in table and "unknown_job" in table

    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")  # the cause is fixed: job 1 exists
    assert job_id == 1
    requeued = lando.cli("dead-letters", "--requeue", unknown["id"])

    assert requeued.returncode == 0, requeued.stderr
    assert wait_job(lando, job_id, finished, daemon=daemon).state == JobState.FINISHED
    left = json.loads(lando.cli("dead-letters", "--json", check=True).stdout)
    assert [letter["reason"] for letter in left] == ["bad_json"]
    again = lando.cli("dead-letters", "--requeue", unknown["id"])
    assert again.returncode == 2 and f"there is no dead letter {unknown['id']}" in again.stderr


# -- whose jobs: the service's data dir ----------------------------------------------------------------
def test_the_default_data_dir_is_the_services_for_a_system_config_or_root_else_the_users(monkeypatch):
    from lando_ssh.config import SYSTEM_DATA_DIR, default_data_dir, is_system_config

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/ann")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert is_system_config("/etc/lando_config.yml") and is_system_config("/etc/lando-ssh/site.yml")
    assert not is_system_config("/home/ann/lando.yml") and not is_system_config(None)
    assert default_data_dir(system=True) == SYSTEM_DATA_DIR == "/var/lib/lando-ssh"
    assert default_data_dir(system=False) == "/home/ann/.local/share/lando-ssh"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_data_dir(system=False) == SYSTEM_DATA_DIR


def test_status_names_the_store_it_reads_and_creates_none(lando: Lando, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    lando.config_path.write_text("cloud: {driver: local}\n")  # no data_dir: the default
    expected = "/var/lib/lando-ssh" if os.geteuid() == 0 else f"{home}/.local/share/lando-ssh"
    existed = os.path.exists(expected)

    proc = subprocess.run(lando.cli_argv("status"), capture_output=True, text=True,
                          env={**lando.env(), "HOME": str(home), "XDG_DATA_HOME": ""})

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"lando-ssh: jobs of sqlite:///{expected}/jobs.sqlite")
    assert proc.stderr.rstrip().endswith(f"(config: {lando.config_path})")
    assert os.path.exists(expected) == existed  # a command that only reads made no store


# -- progress of long transfers ---------------------------------------------------------------------
COUNT_BYTES = """cwlVersion: v1.2
class: CommandLineTool
baseCommand: [wc, -c]
inputs:
  data: {type: File, inputBinding: {position: 1}}
stdout: count.txt
outputs:
  count: {type: File, outputBinding: {glob: count.txt}}
"""


def test_staging_and_storing_show_bytes_rate_and_time_left_on_stderr_and_in_status(lando: Lando, tmp_path: Path):
    lando.write_config(progress_interval=0.05)
    data = tmp_path / "data.bin"
    with open(data, "wb") as f:
        f.truncate(150 * 1024 * 1024)  # sparse: quick to make, 150 MiB on the wire
    (tmp_path / "count.cwl").write_text(COUNT_BYTES)
    (tmp_path / "count.yml").write_text(f"data: {{class: File, location: {data}}}\n")
    (tmp_path / "big.yml").write_text("megabytes: 150\n")
    counting = lando.submit(tmp_path / "count.cwl", tmp_path / "count.yml")
    writing = lando.submit(WORKFLOWS / "big_output.cwl", tmp_path / "big.yml")

    seen: dict[str, dict] = {}
    for job_id in (counting, writing):
        driver = lando.popen("job", str(job_id))
        while driver.poll() is None:  # what `status` reads, while the job runs
            progress = store_job(lando, job_id).run.progress
            if progress:
                seen.setdefault(progress["what"], progress)
        stderr = driver.communicate(timeout=120)[1]
        assert driver.returncode == 0, stderr
        what = "staging" if job_id == counting else "storing"
        said = [line for line in stderr.splitlines() if f": {what}: " in line]
        assert said, stderr
        assert all(re.search(rf"{what}: [\d.]+ (B|KiB|MiB) of 150\.0 MiB, [\d.]+ (B|KiB|MiB|GiB)/s"
                             r"(, \d+ (s|min \d\d s|h \d\d min) left)?$", line) for line in said), said
        assert any(line.endswith(" left") for line in said), said
        assert lando.status(job_id)["run"]["progress"] is None  # done: shown no more
    assert set(seen) == {"staging", "storing"}, seen
    for progress in seen.values():
        assert 0 <= progress["bytes"] <= progress["total"] + 1024 * 1024 and progress["total"] >= 150 * 1024 * 1024
        assert progress["rate"] >= 0 and "eta_seconds" in progress


def test_status_shows_a_transfers_progress_where_a_reason_would_be(lando: Lando):
    store = open_store(lando.config().store_url)
    job = store.create(Job(0, "moving", "wf.cwl", {}))

    def storing(j: Job) -> None:
        j.set_state(JobState.STARTING)
        j.set_state(JobState.RUNNING, JobStep.STORE_OUTPUT)
        j.run.progress = {"what": "storing", "bytes": 100 * 1024 ** 2, "total": 200 * 1024 ** 2,
                               "rate": 50 * 1024 ** 2, "eta_seconds": 2.0, "at": "2026-12-04T21:00:00.000+00:00"}

    store.update(job.id, storing)
    store.close()
    driver = JobLock(str(lando.data_dir / "locks"), job.id)  # this process drives it
    driver.acquire()
    try:
        table = lando.cli("status", check=True).stdout.splitlines()
        described = lando.cli("status", "1").stdout
        as_json = lando.status(job.id)
    finally:
        driver.release()
    assert table[1].endswith("storing: 100.0 MiB of 200.0 MiB, 50.0 MiB/s, 2 s left")
    assert "  doing:   storing: 100.0 MiB of 200.0 MiB, 50.0 MiB/s, 2 s left" in described
    assert as_json["progress"]["eta_seconds"] == 2.0
    assert as_json["driven"] is True and as_json["driver"].startswith(f"pid {os.getpid()}: ")


# -- the foreground job N: limits, and a driver that died ------------------------------------------
def test_a_foreground_job_waits_in_S_for_a_job_slot_like_the_daemons_jobs(lando: Lando, tmp_path: Path):
    lando.write_config(limits={"max_concurrent_jobs": 1})
    order = tmp_path / "long.yml"
    order.write_text("seconds: 300\n")
    first = lando.submit(WORKFLOWS / "sleep.cwl", order)
    second = lando.submit(WORKFLOWS / "no_inputs.cwl")
    one = lando.popen("job", str(first))
    two = None
    try:
        lando.wait_for(first, lambda j: j["step"] == "R")
        two = lando.popen("job", str(second))
        waiting = lando.wait_for(second, lambda j: j["reason"] != "")
        assert (waiting["state"], waiting["step"]) == ("S", "")
        assert waiting["reason"] == "waiting: 1 of 1 job slots busy (limits.max_concurrent_jobs)"
        assert waiting["driven"] is True and vms_created_for(lando, second) == []
        one.send_signal(signal.SIGINT)  # Ctrl-C: the first job is canceled, its slot frees
        assert one.wait(timeout=60) == 1
        _, stderr = two.communicate(timeout=120)
    finally:
        for proc in (one, two):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert two.returncode == 0, stderr
    assert "waiting: 1 of 1 job slots busy" in stderr  # said on stderr as it waited
    assert lando.status(second)["state"] == "F" and len(vms_created_for(lando, second)) == 1


def test_a_job_whose_driver_died_says_so_and_job_N_resumes_it(lando: Lando, tmp_path: Path):
    order = tmp_path / "short.yml"
    order.write_text("seconds: 4\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    driver = lando.popen("job", str(job_id))
    lando.wait_for(job_id, lambda j: j["step"] == "R")
    assert lando.status(job_id)["driven"] is True
    driver.kill()  # kill -9: no time to say anything
    driver.communicate(timeout=30)

    job = lando.status(job_id)
    assert (job["state"], job["step"], job["driven"], job["driver"]) == ("R", "R", False, None)
    table = lando.cli("status", check=True).stdout
    assert f"no process drives this job: `lando-ssh job {job_id}` resumes it" in table
    assert "driver:  no process drives this job" in lando.cli("status", str(job_id), check=True).stdout

    resumed = lando.cli("job", str(job_id), timeout=120)

    assert resumed.returncode == 0, resumed.stderr
    job = lando.status(job_id)
    assert job["state"] == "F" and len(vms_created_for(lando, job_id)) == 1  # the same VM and run, waited on
    assert (Path(job["output_dir"]) / "done.txt").read_text() == "done\n"
