"""The command line as scripts drive it: stdout, stderr and exit codes, whatever the reader does."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import WORKFLOWS, Lando

from lando_ssh.model import Job
from lando_ssh.store import open_store


def test_status_piped_into_a_reader_that_stops_early_ends_quietly(lando: Lando):
    lando.write_config()
    store = open_store(lando.config().store_url)
    for n in range(40):  # enough JSON to fill the pipe before the reader goes away
        store.create(Job(0, f"job {n}", "wf.cwl", {"words": ["x" * 100] * 20}))
    store.close()
    assert len(json.loads(lando.cli("status", "--json", check=True).stdout)) == 40

    proc = subprocess.Popen([sys.executable, "-m", "lando_ssh", "--config", str(lando.config_path), "status", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10).startswith(b"[")
    proc.stdout.close()  # like `| head -c 10`
    stderr = proc.stderr.read().decode()
    code = proc.wait(timeout=60)

    assert code == 141  # as a tool ended by SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_damaged_job_store_is_one_sentence_and_exit_code_3(lando: Lando):
    lando.data_dir.mkdir(parents=True, exist_ok=True)
    (lando.data_dir / "jobs.sqlite").write_text("not a database, whatever it was\n")

    for args in (["status"], ["job", "1"], ["submit", str(WORKFLOWS / "no_inputs.cwl")]):
        proc = lando.cli(*args)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.strip().endswith("jobs.sqlite cannot be used: it is not a readable SQLite database "
                                            "(damaged, or another kind of file)"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_negative_or_fractional_volume_size_is_refused_before_anything_is_stored(lando: Lando):
    for size, says in (("-1", "cannot be negative"), ("1.5", "whole number of GB")):
        proc = lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), "--volume-size", size)
        assert proc.returncode == 2 and says in proc.stderr
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []
