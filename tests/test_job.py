"""`lando-ssh submit` / `job` / `cwl-runner` / `status` / `logs`, end to end through the real CLI,
a real sshd per VM (local cloud) and real cwltool."""
from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import WORKFLOWS, Lando

ALL_STEPS = ["V", "S", "R", "o", "O", "T"]


def steps_seen(job: dict) -> list[str]:
    seen: list[str] = []
    for h in job["history"]:
        if h["step"] and h["step"] not in seen:
            seen.append(h["step"])
    return seen


def test_two_step_workflow_with_local_and_url_inputs_runs_end_to_end(lando: Lando, http_files, tmp_path: Path):
    base_url, served = http_files
    (served / "more.txt").write_text("more text from the web\n")
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({
        "text": {"class": "File", "location": str(WORKFLOWS / "data" / "hello.txt")},
        "more": {"class": "File", "location": f"{base_url}/more.txt"},
    }))
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", order, "--name", "two steps")
    assert lando.status(job_id)["state"] == "N"

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    assert "step S (stage inputs)" in proc.stderr and "staged" in proc.stderr
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("F", "")
    assert steps_seen(job) == ALL_STEPS
    out = Path(job["output_dir"])
    assert (out / "upper.txt").read_bytes() == b"HELLO WORLD\nSECOND LINE\nMORE TEXT FROM THE WEB\n"
    assert (out / "count.txt").read_bytes() == b"3\n"
    for doc in ("README.md", "scripts/workflow.cwl", "scripts/job-order.json", "logs/cwltool-output.log",
                "logs/job-data.json", "logs/usage.json"):
        assert (out / "docs" / doc).is_file(), doc
        assert (out / "docs" / doc).stat().st_mode & 0o777 == 0o644, doc  # documents, not programs
    assert json.loads((out / "docs/logs/usage.json").read_text())["exit_code"] == 0
    assert job["output"]["upper"]["path"] == str(out / "upper.txt")
    assert job["vm"]["deleted"] and lando.vm_dirs() == []
    assert set(job["timings"]) == set(ALL_STEPS)


def test_a_large_input_goes_after_the_free_disk_is_known_and_arrives_whole(lando: Lando, tmp_path: Path):
    """Small inputs travel with the remote scripts in one stream; one above engine.ONE_STREAM_BYTES (and
    above remote.BULK_BYTES: through OpenSSH) goes on its own once the VM's free disk is known."""
    big = tmp_path / "big.txt"
    line = b"the same line of text, again and again\n"
    big.write_bytes(line * (9 * 1024 * 1024 // len(line) + 1))
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"text": {"class": "File", "location": str(big)},
                                     "more": {"class": "File", "location": str(WORKFLOWS / "data" / "more.txt")}}))

    proc = lando.cli("job", str(lando.submit(WORKFLOWS / "upper_count.cwl", order)))

    assert proc.returncode == 0, proc.stderr
    job = json.loads(lando.cli("status", "--json", check=True).stdout)[0]
    assert job["run"]["bytes_staged"] == big.stat().st_size + (WORKFLOWS / "data" / "more.txt").stat().st_size
    out = Path(job["output_dir"])
    lines = big.stat().st_size // len(line)
    assert (out / "count.txt").read_text() == f"{lines + 1}\n"
    assert (out / "upper.txt").stat().st_size == big.stat().st_size + len(b"MORE TEXT\n")


def test_secondary_files_directory_and_scatter_workflows_run(lando: Lando):
    ids = {name: lando.submit(WORKFLOWS / f"{name}.cwl", WORKFLOWS / f"{name}.yml")
           for name in ("secondary", "directory", "scatter")}
    for job_id in ids.values():
        assert lando.cli("job", str(job_id)).returncode == 0, lando.status(job_id)["error"]

    sec = Path(lando.status(ids["secondary"])["output_dir"])
    assert (sec / "report.txt").read_text().endswith("reads.bam\nreads.bam.bai\nreads.idx\n")
    assert (sec / "sorted.txt.md5").read_text() == "2776097214 14\n"
    d = Path(lando.status(ids["directory"])["output_dir"])
    assert (d / "listing.txt").read_text() == "./a.txt: alpha\n./sub/b.txt: beta\n"
    assert (d / "copy" / "sub" / "b.txt").read_text() == "beta\n"
    sc = lando.status(ids["scatter"])
    assert [f["basename"] for f in sc["output"]["shouted"]] == ["s1.upper.txt", "s2.upper.txt", "s3.upper.txt"]
    assert (Path(sc["output_dir"]) / "upper.txt").read_text() == "SAMPLE ONE\nSAMPLE TWO\nLINE TWO\nSAMPLE THREE\n"
    assert lando.vm_dirs() == []


def test_failing_tool_ends_in_error_with_exit_code_and_stderr_tail(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "fail.cwl")

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 1
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("E", "R")
    assert "cwltool exited with code 1" in job["error"]
    assert "explode: something went wrong on purpose" in job["error"]
    # the one-line reason names the tool that failed and what it said, not just cwltool's exit code
    out = Path(job["output_dir"])
    assert job["reason"] == ("step R (run workflow) failed: cwltool exited with code 1 (tool explode exited with "
                             f"status 3: explode: something went wrong on purpose). Its partial outputs and logs "
                             f"are in {out}.")
    # what the failed run left is saved, as cwltool leaves it: the output it collected, its log, lando's docs
    assert job["run"]["partial_output"] is True
    assert job["output"]["result"]["path"] == str(out / "explode.txt")
    assert (out / "explode.txt").read_text() == "prepared\n"
    assert "Final process status is permanentFail" in (out / "docs" / "logs" / "cwltool-output.log").read_text()
    assert (out / "docs" / "README.md").is_file()
    assert job["timings"]["R"]["seconds"] > 0  # the failed step's time is recorded, not left "running"
    assert proc.stderr.count(f"lando-ssh: job {job_id} failed: step R") == 1
    assert "ERROR lando_ssh.engine" not in proc.stderr  # said once, by the command, not again by the log
    assert job["vm"]["deleted"] and lando.vm_dirs() == []
    logs = lando.cli("logs", str(job_id), check=True).stdout
    assert "explode: something went wrong on purpose" in logs and "state E" in logs


def test_pre_and_post_process_commands_run_in_the_results_dir_before_and_after_the_workflow(lando: Lando):
    # as in bespin-api's own example: the pre-process command leaves a file that the post-process one removes
    lando.write_config(
        cwl_pre_process_command=["sh", "-c", "echo prepared > stalefile.txt; echo 'pre-process chatter'"],
        cwl_post_process_command=["sh", "-c", "test -s upper.txt && cat stalefile.txt > post.txt && rm stalefile.txt"])
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml")

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    out = Path(lando.status(job_id)["output_dir"])
    assert (out / "post.txt").read_text() == "prepared\n"  # the pre-process command ran, before the workflow's end
    assert not (out / "stalefile.txt").exists()  # the post-process command ran after it, in the same dir
    assert (out / "count.txt").read_text() == "3\n"  # pre's stdout did not spoil cwltool's output object
    readme = (out / "docs" / "README.md").read_text()  # what ran, for whoever reads the results later
    assert "- ran before the workflow, in the results dir: `sh -c 'echo prepared > stalefile.txt; echo " \
           "'\"'\"'pre-process chatter'\"'\"''`" in readme
    assert "- ran the workflow, with its outdir, workflow and job order after it: `cwltool --no-container`" in readme
    assert "- ran after the workflow, in the results dir: `sh -c 'test -s upper.txt" in readme


def test_a_failing_pre_process_command_ends_the_job_in_error_naming_it_and_the_workflow_never_runs(lando: Lando):
    ran = lando.root / "workflow-ran"  # a local VM shares this machine's filesystem
    lando.write_config(cwl_pre_process_command=["sh", "-c", "echo 'no scratch space' >&2; exit 4"],
                       cwl_base_command=["sh", "-c", f"touch {ran}; exec cwltool --no-container \"$@\"", "cwltool"])
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 1
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("E", "R")
    command = shlex.join(["sh", "-c", "echo 'no scratch space' >&2; exit 4"])
    assert job["error"].startswith(f"step R (run workflow) failed: the pre-process command ({command}) exited with "
                                   "code 4; the workflow did not run.")
    assert "no scratch space" in job["error"]
    assert not ran.exists()
    assert job["vm"]["deleted"] and lando.vm_dirs() == []


def test_a_failed_jobs_kept_vm_answers_ssh_until_the_admin_deletes_it(lando: Lando):
    lando.write_config(keep_vm_on_error=True)
    job_id = lando.submit(WORKFLOWS / "fail.cwl")
    assert lando.cli("job", str(job_id)).returncode == 1
    job = lando.status(job_id)
    assert job["state"] == "E" and not job["vm"]["deleted"]
    assert f"lando-ssh delete-vm {job_id}" in job["reason"]
    assert lando.cli("ssh", str(job_id), "--", "echo", "on the VM").stdout == "on the VM\n"

    deleted = lando.cli("delete-vm", str(job_id))

    assert deleted.returncode == 0, deleted.stderr
    job = lando.status(job_id)
    assert job["state"] == "E" and job["vm"]["deleted"] and lando.vm_dirs() == []
    assert "delete-vm" not in job["reason"]
    again = lando.cli("delete-vm", str(job_id))
    assert again.returncode == 2 and "no VM left to delete" in again.stderr
    assert lando.cli("ssh", str(job_id), "--", "true").returncode == 2


def test_submit_refuses_invalid_workflow_and_incomplete_job_order_and_stores_nothing(lando: Lando):
    bad = lando.cli("submit", str(WORKFLOWS / "invalid.cwl"))
    assert bad.returncode == 2
    assert "no_such_input" in bad.stderr and "Traceback" not in bad.stderr

    missing = lando.cli("submit", str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count_missing.yml"))
    assert missing.returncode == 2
    assert "more" in missing.stderr and "Traceback" not in missing.stderr

    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []


def test_unknown_job_is_a_clear_error(lando: Lando):
    for args in (["job", "42"], ["status", "42"], ["logs", "42"]):
        proc = lando.cli(*args)
        assert proc.returncode == 2
        assert proc.stderr.strip() == "lando-ssh: there is no job 42"


def test_ctrl_c_during_run_kills_cwltool_and_its_children_and_deletes_the_vm(lando: Lando):
    job_id = lando.submit(WORKFLOWS / "sleep.cwl")
    runner = lando.popen("job", str(job_id))
    try:
        job = lando.wait_for(job_id, lambda j: j["step"] == "R" and j["run"]["run_pid"] is not None)
        vm_name = job["vm"]["name"]
        deadline = time.monotonic() + 30
        while True:  # cwltool starts the tool's two sleeps shortly after the run step begins
            sleepers = [p for p in lando.vm_processes(vm_name) if _cmdline(p).startswith("sleep 300")]
            if len(sleepers) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(sleepers) >= 2, "the workflow's processes never showed up on the VM"
        key = lando.data_dir / "keys" / f"job-{job_id}"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # a second driver of the same job (another shell, or the daemon) is turned away, and changes nothing
        second = lando.cli("job", str(job_id), timeout=60)
        assert second.returncode == 2
        assert f"job {job_id} is being run by another lando-ssh process on this machine (pid {runner.pid}" in \
            second.stderr
        assert lando.status(job_id)["state"] == "R"

        runner.send_signal(signal.SIGINT)
        runner.wait(60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    assert runner.returncode == 1
    job = lando.status(job_id)
    assert job["state"] == "C"
    assert [h["state"] for h in job["history"]][-2:] == ["c", "C"]
    assert lando.vm_processes(vm_name) == set()
    # a killed process may linger as a zombie until PID 1 reaps it; a zombie has no command line
    assert not any(_cmdline(p).startswith("sleep 300") for p in sleepers)
    assert lando.vm_dirs() == [] and not key.exists()


def test_hostile_job_data_is_passed_as_data_never_run(lando: Lando, tmp_path: Path):
    canary = tmp_path / "pwned"
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile = f"$(touch {canary}) `touch {canary}`; rm -rf {victim} 'single' \"double\"\nnext line"
    weird = tmp_path / "-n.txt"  # cwltool itself refuses names with shell characters; this one is an option
    weird.write_text("abc\n")
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"text": {"class": "File", "location": str(weird)},
                                     "more": {"class": "File", "path": str(WORKFLOWS / "data" / "more.txt")}}))
    greet = tmp_path / "greet.yml"
    greet.write_text(yaml.safe_dump({"message": hostile}))

    upper = lando.submit(WORKFLOWS / "upper_count.cwl", order, "--name", hostile)
    message = lando.submit(WORKFLOWS / "no_inputs.cwl", greet, "--name", hostile)
    for job_id in (upper, message):
        proc = lando.cli("job", str(job_id))
        assert proc.returncode == 0, proc.stderr

    assert not canary.exists() and victim.exists()
    assert (Path(lando.status(upper)["output_dir"]) / "upper.txt").read_text() == "ABC\nMORE TEXT\n"
    assert (Path(lando.status(message)["output_dir"]) / "greeting.txt").read_text() == hostile + "\n"
    assert lando.status(message)["name"] == hostile


def test_cwl_runner_prints_the_same_output_object_as_cwltool(lando: Lando, tmp_path: Path):
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    wf, order = str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count.yml")
    cwltool = os.path.join(os.path.dirname(sys.executable), "cwltool")
    bare = subprocess.run([cwltool, "--quiet", "--no-container", "--outdir", str(bare_dir), wf, order],
                          capture_output=True, text=True, check=True)

    ours = lando.cli("cwl-runner", f"--outdir={ours_dir}", "--quiet", wf, order)

    assert ours.returncode == 0, ours.stderr
    expected = json.loads(bare.stdout.replace(str(bare_dir), str(ours_dir)))
    assert json.loads(ours.stdout) == expected
    assert (ours_dir / "upper.txt").read_bytes() == (bare_dir / "upper.txt").read_bytes()


def test_cwl_runner_runs_a_tool_without_a_job_order_and_fails_with_nonzero(lando: Lando, tmp_path: Path):
    ok = lando.cli("cwl-runner", "--outdir", str(tmp_path / "a"), str(WORKFLOWS / "no_inputs.cwl"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["greeting"]["basename"] == "greeting.txt"

    failed = lando.cli("cwl-runner", "--outdir", str(tmp_path / "b"), str(WORKFLOWS / "fail.cwl"))
    bare = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cwltool"), "--quiet", "--no-container",
                           "--outdir", str(tmp_path / "bare"), str(WORKFLOWS / "fail.cwl")],
                          capture_output=True, text=True)
    # as cwltool: a non-zero exit, the partial output object on stdout, its files in the outdir
    assert (failed.returncode, bare.returncode) == (1, 1)
    assert json.loads(failed.stdout) == json.loads(bare.stdout.replace(str(tmp_path / "bare"), str(tmp_path / "b")))
    assert (tmp_path / "b" / "explode.txt").read_text() == "prepared\n"


def test_a_failed_run_s_outputs_are_not_saved_when_the_config_says_so(lando: Lando):
    lando.write_config(save_outputs_on_error=False)
    job_id = lando.submit(WORKFLOWS / "fail.cwl")

    assert lando.cli("job", str(job_id)).returncode == 1

    job = lando.status(job_id)
    assert (job["state"], job["step"], job["output"]) == ("E", "R", None)
    assert "partial outputs" not in job["reason"] and not Path(job["output_dir"]).exists()
    assert job["vm"]["deleted"] and lando.vm_dirs() == []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
