"""`cwl-runner` asks for its VM while cwltool validates the workflow (lando_ssh/earlyvm.py): a refused
workflow or job order deletes that VM and is refused with the sentence `submit` gives it; an accepted job
runs on that VM, which is then the job's as any job's VM is (the sweep leaves it alone); a job that needs
another flavor gets a VM of its own, and one that would wait for room boots nothing early. Through the CLI,
the local cloud's real sshd VMs and real cwltool."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from conftest import TEST_INSTALLATION, WORKFLOWS, Lando

EARLY = f"{TEST_INSTALLATION}-cwl-runner-"


def created(lando: Lando) -> list[tuple[str, dict[str, str]]]:
    """(name, metadata at creation) of every VM the local cloud made, in order."""
    log = lando.data_dir / "local-cloud" / "created.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(name, json.loads(meta)) for _, name, meta in (line.split(" ", 2) for line in lines)]


def jobs(lando: Lando) -> list[dict]:
    return json.loads(lando.cli("status", "--json", check=True).stdout)


def running(lando: Lando, timeout: float = 120) -> dict:
    """The one job, once its workflow runs (it is stored only once validated)."""
    deadline = time.monotonic() + timeout
    while not any(j["state"] == "R" and j["step"] == "R" for j in jobs(lando)):
        assert time.monotonic() < deadline, f"no job ran within {timeout}s: {jobs(lando)}"
    return lando.status(1)


def keys_left(lando: Lando) -> list[str]:
    keys = lando.data_dir / "keys"
    return sorted(p.name for p in keys.iterdir()) if keys.exists() else []


def test_a_refused_workflow_or_job_order_deletes_the_vm_booted_meanwhile_and_is_refused_as_submit_refuses_it(
        lando: Lando, tmp_path: Path):
    cases = [(str(WORKFLOWS / "invalid.cwl"),),
             (str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count_missing.yml"))]
    for case in cases:
        refused = lando.cli("cwl-runner", "--outdir", str(tmp_path / "out"), *case)
        submitted = lando.cli("submit", *case)

        assert (refused.returncode, refused.stderr) == (submitted.returncode, submitted.stderr), case
        assert refused.returncode == 2 and refused.stderr.startswith("lando-ssh: "), refused.stderr
    asked = created(lando)
    assert [name.startswith(EARLY) for name, _ in asked] == [True, True]  # booted while cwltool validated
    assert all("lando_job_id" not in meta for _, meta in asked)
    assert lando.vm_dirs() == []
    assert all(lando.vm_processes(name) == set() for name, _ in asked)
    assert jobs(lando) == []
    assert keys_left(lando) == []


def test_an_accepted_job_runs_on_the_vm_booted_during_its_validation_which_is_then_the_jobs(lando: Lando,
                                                                                           tmp_path: Path):
    run = lando.popen("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"), str(WORKFLOWS / "sleep.cwl"))
    try:
        job = running(lando)
        (name, _), = created(lando)
        assert name.startswith(EARLY) and job["vm"]["name"] == name
        swept = json.loads(lando.cli("sweep", "--dry-run", "--grace", "0", "--json", check=True).stdout)
        assert swept == []  # tagged with its job: no orphan
        assert keys_left(lando) == ["job-1", "job-1.known_hosts", "job-1.pub"]
    finally:
        run.send_signal(signal.SIGINT)  # canceled: the VM is deleted as any job's
        run.communicate(timeout=120)
    assert lando.status(1)["state"] == "C"
    assert lando.vm_dirs() == []


def test_a_job_that_needs_another_flavor_gets_its_own_vm_and_the_early_one_is_deleted(lando: Lando, tmp_path: Path):
    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"), str(WORKFLOWS / "needs_cores.cwl"))

    assert ran.returncode == 0, ran.stderr
    (early, _), (own, meta) = created(lando)
    assert early.startswith(EARLY) and own == f"{TEST_INSTALLATION}-job-1-1" and meta["lando_job_id"] == "1"
    job = lando.status(1)
    assert (job["state"], job["vm"]["name"], job["vm"]["flavor"]) == ("F", own, "m1.large")
    assert lando.vm_dirs() == []


def test_a_job_that_would_wait_for_room_boots_nothing_before_it_is_validated(lando: Lando, tmp_path: Path):
    lando.write_config(limits={"max_vms": 4})  # room is decided on the cloud's flavors, when the job starts

    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"), str(WORKFLOWS / "upper_count.cwl"),
                    str(WORKFLOWS / "upper_count.yml"))

    assert ran.returncode == 0, ran.stderr
    assert [name for name, _ in created(lando)] == [f"{TEST_INSTALLATION}-job-1-1"]
