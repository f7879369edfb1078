"""An admin's first hour (issue 16): the commands say what happened, and do what they say."""
from __future__ import annotations

import json

from conftest import WORKFLOWS, Lando


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
