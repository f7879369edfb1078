"""Where outputs go, and what is never overwritten there: `cwl-runner` writes what cwltool writes (the
outputs) into an outdir that may hold anything; a submitted job's output dir must be new or empty and is
checked again before its results are stored; an admin can give a failed job another output dir."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import WORKFLOWS, Lando

WF, ORDER = str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count.yml")
UPPER = "HELLO WORLD\nSECOND LINE\nMORE TEXT\n"


def files(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def someone_elses(directory: Path) -> dict[str, str]:
    held = {"docs/README.md": "my own notes\n", "notes.txt": "keep me\n"}
    for rel, text in held.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return held


def test_cwl_runner_writes_only_the_outputs_into_an_outdir_that_holds_files_as_cwltool_does(lando: Lando,
                                                                                            tmp_path: Path):
    ours, bare = tmp_path / "ours", tmp_path / "bare"
    for outdir in (ours, bare):
        outdir.mkdir()
        someone_elses(outdir)
        (outdir / "upper.txt").write_text("an older upper.txt\n")  # an output's name: cwltool replaces it
    cwltool = os.path.join(os.path.dirname(sys.executable), "cwltool")
    subprocess.run([cwltool, "--quiet", "--no-container", "--outdir", str(bare), WF, ORDER], check=True,
                   capture_output=True)

    proc = lando.cli("cwl-runner", "--quiet", WF, ORDER, cwd=ours)

    assert proc.returncode == 0, proc.stderr
    assert files(ours) == files(bare)  # the outputs, the user's files as they were, nothing of lando's
    assert files(ours)["upper.txt"] == UPPER and files(ours)["docs/README.md"] == "my own notes\n"
    job = lando.status(1)
    docs = lando.data_dir / "jobs" / "job-1" / "docs"
    assert job["run"]["docs_path"] == str(docs)
    assert (docs / "README.md").read_text().startswith("# upper_count")
    assert (docs / "logs" / "cwltool-output.log").exists() and (docs / "scripts" / "workflow.cwl").exists()
    assert f"docs:    {docs}" in lando.cli("status", "1", check=True).stdout
    logs = lando.cli("logs", "1", check=True).stdout
    assert f"lando's docs of the job: {docs}" in logs and "Final process status is success" in logs


def test_submit_refuses_an_output_dir_that_holds_files(lando: Lando, tmp_path: Path):
    held = someone_elses(tmp_path / "results")

    proc = lando.cli("submit", WF, ORDER, "--output-dir", str(tmp_path / "results"))

    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"lando-ssh: the output directory {tmp_path / 'results'} already holds files "
                                   "(docs/README.md, notes.txt); lando-ssh never overwrites files it did not "
                                   "write: give a new or empty directory")
    assert files(tmp_path / "results") == held
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []
    (tmp_path / "empty").mkdir()
    assert lando.cli("submit", WF, ORDER, "--output-dir", str(tmp_path / "empty")).returncode == 0


def test_files_that_appear_in_the_output_dir_fail_the_store_and_another_dir_takes_the_results(lando: Lando,
                                                                                              tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    job_id = lando.submit(WF, ORDER, "--output-dir", str(first))
    first.mkdir()
    held = someone_elses(first)  # after submit, before the results come

    assert lando.cli("job", str(job_id)).returncode == 1
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("E", "O") and not job["vm"]["deleted"]
    assert (f"the output directory {first} holds files this job did not write (docs/README.md, notes.txt); "
            "lando-ssh does not overwrite them") in job["reason"]
    assert f"lando-ssh set-output-dir {job_id} DIR" in job["reason"]
    assert files(first) == held

    taken = lando.cli("set-output-dir", str(job_id), str(first.parent / "first"))
    assert taken.returncode == 2 and "already holds files" in taken.stderr
    moved = lando.cli("set-output-dir", str(job_id), str(second))
    assert moved.returncode == 0, moved.stderr
    assert f"resume it with `lando-ssh job {job_id}`" in moved.stderr and "from its kept VM" in moved.stderr

    again = lando.cli("job", str(job_id))

    assert again.returncode == 0, again.stderr
    job = lando.status(job_id)
    assert job["state"] == "F" and job["output_dir"] == str(second)
    assert [h["step"] for h in job["history"]].count("R") == 1  # stored from the kept VM, not run again
    assert (second / "upper.txt").read_text() == UPPER and (second / "docs" / "README.md").exists()
    assert files(first) == held and lando.vm_dirs() == []


def test_a_restarted_job_writes_over_what_it_wrote_itself(lando: Lando, tmp_path: Path):
    flag = tmp_path / "flag"
    order = tmp_path / "flaky.yml"
    order.write_text(yaml.safe_dump({"flag": str(flag)}))
    job_id = lando.submit(WORKFLOWS / "flaky.cwl", order)
    assert lando.cli("job", str(job_id)).returncode == 1  # its logs and docs are saved into its output dir
    out = Path(lando.status(job_id)["output_dir"])
    assert (out / "docs" / "README.md").exists()

    flag.write_text("")
    again = lando.cli("job", str(job_id))

    assert again.returncode == 0, again.stderr
    assert (out / "ok.txt").read_text() == "ok\n"
    assert "Final process status is success" in (out / "docs" / "logs" / "cwltool-output.log").read_text()
