"""bespin-api as the job source, where the real bespin-api (tests/test_bespin_real.py) cannot serve the test:
faults (bespin-api stopping mid-job, a share group it cannot serve), on the stand-in of tests/bespin_api,
which answers as the real one does (state set, lando-messaging's pickled WorkRequest with the id as a string
on the queue); run by `lando-ssh run` through the real RabbitMQ, sshd VMs and cwltool."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bespin_api import BespinApiService
from conftest import BESPIN_TOKEN as TOKEN
from conftest import WORKFLOWS, Daemon, Lando

from lando_ssh.errors import UnknownJob
from lando_ssh.store.bespin import BespinStore
from lando_ssh.workflow import prepare

pytest_plugins = ["openstack_api.fixtures"]  # openstack_api, local_openstack_api

@pytest.fixture
def bespin_daemon(lando: Lando, broker_names: dict[str, str], bespin: BespinApiService) -> Iterator[Daemon]:
    lando.settings["work_queue"] = {**broker_names, "heartbeat": 10}
    lando.settings["bespin_api"] = {"url": bespin.url, "token": TOKEN}
    lando.write_config()
    d = Daemon(lando)
    yield d
    if d.alive():
        d.stop()


def serve_packed(served: Path, workflow: str, name: str) -> str:
    """Write `workflow` packed (as bespin-api's workflow versions hold it) into the served dir; its sha256."""
    sample = {"flaky.cwl": {"flag": "/nonexistent"}, "upper_count.cwl": None}[workflow]
    order = str(WORKFLOWS / "upper_count.yml") if sample is None else None
    packed = prepare(str(WORKFLOWS / workflow), order, sample).packed
    data = json.dumps(packed, indent=2).encode()
    (served / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def wait_bespin(bespin: BespinApiService, job_id: int, predicate: Any, daemon: Daemon, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = bespin.job(job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline or not daemon.alive():
            raise AssertionError(f"bespin job {job_id} is {job['state']}/{job['step']}; PUTs "
                                 f"{bespin.puts_of(job_id)}\n{daemon.text()[-3000:]}")
        time.sleep(0.1)


def local_job(lando: Lando, job_id: int) -> Any:
    store = BespinStore(lando.config())
    try:
        return store.local.get(job_id)
    finally:
        store.local.close()


def wait_local(lando: Lando, job_id: int, predicate: Any, daemon: Daemon, timeout: float = 60) -> Any:
    """The local record of a bespin job once `predicate` holds for it (it is loaded when its command is served)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = local_job(lando, job_id)
            if predicate(job):
                return job
        except UnknownJob:
            job = None
        if time.monotonic() > deadline or not daemon.alive():
            raise AssertionError(f"job {job_id}: {job and (job.state.value, job.step.value, job.reason)}\n"
                                 f"{daemon.text()[-3000:]}")
        time.sleep(0.1)


def state_steps(bespin: BespinApiService, job_id: int) -> list[tuple[str, str]]:
    """The (state, step) of each PUT lando-ssh made, a repeat left out (a PUT that names the VM keeps them)."""
    seen: list[tuple[str, str]] = []
    for put in bespin.puts_of(job_id):
        if not seen or seen[-1] != (put["state"], put["step"]):
            seen.append((put["state"], put["step"]))
    return seen


# -- the tests ---------------------------------------------------------------------------------

def flaky_job(bespin: BespinApiService, base: str, served: Path, tmp_path: Path, flag_present: bool = True,
              cwl_base_command: list[str] | None = None, **job: Any) -> tuple[int, Path]:
    """A bespin job running tests/workflows/flaky.cwl (packed, served over http): it fails until its flag exists.
    `job`: more of bespin's job fields (`add_job`'s keywords)."""
    serve_packed(served, "flaky.cwl", "flaky.packed.cwl")
    flag = tmp_path / "flag"
    if flag_present:
        flag.write_text("present")
    job_id = bespin.add_job(f"{base}/flaky.packed.cwl", {"flag": str(flag)},
                            cwl_base_command=cwl_base_command or ["cwltool", "--no-container"], **job)
    return job_id, flag


def test_bespin_api_down_mid_job_the_job_finishes_and_bespin_catches_up_in_order(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path):
    base, served = http_files
    job_id, _ = flaky_job(bespin, base, served, tmp_path,
                          cwl_base_command=["sh", "-c", 'sleep 3; exec cwltool --no-container "$@"', "cwltool"])
    bespin_daemon.start()
    bespin.start_job(job_id)
    wait_bespin(bespin, job_id, lambda j: (j["state"], j["step"]) == ("R", "R"), bespin_daemon)

    bespin.refuse_connections()  # bespin-api stops while the workflow runs
    deadline = time.monotonic() + 60
    while local_job(lando, job_id).state.value != "F":
        assert time.monotonic() < deadline and bespin_daemon.alive(), bespin_daemon.text()[-2000:]
        time.sleep(0.2)
    assert bespin.job(job_id)["state"] == "R"  # it has not heard yet
    retrying = f"PUT admin/jobs/{job_id}/ failed (ConnectionError); retrying"
    while retrying not in bespin_daemon.text():  # the daemon met the outage and goes on trying
        assert time.monotonic() < deadline and bespin_daemon.alive(), bespin_daemon.text()[-2000:]
        time.sleep(0.1)
    bespin.accept_connections()
    job = wait_bespin(bespin, job_id, lambda j: j["state"] == "F", bespin_daemon, timeout=60)

    assert job["step"] == ""
    seen = state_steps(bespin, job_id)
    assert [step for state, step in seen if state == "R"] == ["", "V", "S", "R", "o", "O", "T", ""], seen


def test_a_bespin_jobs_share_group_is_recorded_and_named_in_its_readme_and_one_that_cannot_be_read_fails_nothing(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path):
    base, served = http_files
    group = bespin.add_share_group("Sequencing core", [("Ann Lee", "3f1c0a2e-ann"), ("Bo Chen", "77d2b9e4-bo")],
                                   email="seq-core@example.org")
    shared, _ = flaky_job(bespin, base, served, tmp_path, share_group=group, name="shared job")
    unreadable, _ = flaky_job(bespin, base, served, tmp_path, share_group=404, name="group gone")
    bespin_daemon.start()
    bespin.start_job(shared)
    bespin.start_job(unreadable)
    jobs = [wait_bespin(bespin, i, lambda j: j["state"] in ("F", "E"), bespin_daemon) for i in (shared, unreadable)]

    assert [j["state"] for j in jobs] == ["F", "F"], [bespin.errors_of(i) for i in (shared, unreadable)]
    assert f"GET /api/v2/admin/share-groups/{group}" in bespin.requests
    local = local_job(lando, shared)
    assert local.facts["share_group"] == {
        "id": group, "name": "Sequencing core", "email": "seq-core@example.org",
        "users": [{"name": "Ann Lee", "dds_id": "3f1c0a2e-ann"}, {"name": "Bo Chen", "dds_id": "77d2b9e4-bo"}]}
    readme = (Path(local.output_dir) / "docs" / "README.md").read_text()
    assert "## Share group\n\nThe job names the bespin-api share group **Sequencing core** (contact: " \
           "seq-core@example.org), whose members are listed below (lando shared its results with them in DukeDS). " \
           "lando-ssh has not given anyone access to them" in readme
    assert "- Ann Lee (DukeDS user 3f1c0a2e-ann)\n- Bo Chen (DukeDS user 77d2b9e4-bo)\n" in readme
    data = json.loads((Path(local.output_dir) / "docs" / "logs" / "job-data.json").read_text())
    assert data["facts"]["share_group"]["name"] == "Sequencing core"

    gone = local_job(lando, unreadable)
    assert gone.facts["share_group"]["id"] == 404 and "HTTP 404" in gone.facts["share_group"]["error"]
    readme = (Path(gone.output_dir) / "docs" / "README.md").read_text()
    assert "The job's share group (bespin-api share group 404) could not be read, so who these results are " \
           "meant for is not known: bespin-api at" in readme
    assert f"job {unreadable}: cannot read its share group 404 from bespin-api" in bespin_daemon.text()
    assert bespin.errors_of(unreadable) == [] and bespin.errors_of(shared) == []
    assert TOKEN not in bespin_daemon.text() and TOKEN not in readme
    assert lando.vm_dirs() == []


