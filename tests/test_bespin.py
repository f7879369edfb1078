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
import yaml
from bespin_api import BespinApiService
from conftest import BESPIN_TOKEN as TOKEN
from conftest import WORKFLOWS, Daemon, Lando
from test_objects import Containers, containers, no_secret_in, object_bytes, store_settings, swift, swift_service

from lando_ssh.errors import BadInput, ConfigError, ObjectStoreUnavailable, UnknownJob
from lando_ssh.store.bespin import BespinStore, output_url_of
from lando_ssh.workflow import prepare

_FIXTURES = (containers, swift_service)  # the real Swift's (tests/test_objects.py), used here by name

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




# -- a job's output project: its results in the object store (bespin_api.output_url) -------------------------

def with_output_url(lando: Lando, containers: Containers) -> str:
    """bespin_api.output_url into a new container, by output project and job; returns the container."""
    outs = containers.new()
    lando.settings["bespin_api"]["output_url"] = f"swift://{outs}/{{project_id}}/job-{{job_id}}/"
    lando.settings["object_store"] = store_settings()
    lando.write_config()
    return outs


def test_a_bespin_jobs_output_project_puts_its_results_and_docs_in_swift_from_the_vm(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path, containers: Containers):
    base, served = http_files
    outs = with_output_url(lando, containers)
    job_id, _ = flaky_job(bespin, base, served, tmp_path, output_project_id="8a3e2c1d-dds", name="to swift")
    bespin_daemon.start()
    bespin.start_job(job_id)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    prefix = f"8a3e2c1d-dds/job-{job_id}/"
    assert object_bytes(outs, f"{prefix}ok.txt") == b"ok\n"
    readme = object_bytes(outs, f"{prefix}docs/README.md").decode()
    assert "to swift" in readme and "Informatics" in readme  # lando's docs of the job, its share group named
    local = local_job(lando, job_id)
    assert local.facts["output_url"] == f"swift://{outs}/{prefix}"
    assert local.output["ok"]["location"] == f"swift://{outs}/{prefix}ok.txt"
    assert not Path(local.output_dir).exists()  # nothing came back to the server's disk
    # the output project is recorded without bespin's DukeDS credentials (its id and project_id alone)
    assert local.facts["bespin"]["output_project"] == {"id": job_id, "project_id": "8a3e2c1d-dds"}
    record = json.dumps(local.facts) + object_bytes(outs, f"{prefix}docs/logs/job-data.json").decode()
    assert "dds_user_credentials" not in record
    no_secret_in(bespin_daemon.text(), "the daemon's log")
    no_secret_in(record, "the job's record and docs")
    assert lando.vm_dirs() == []


def test_an_output_prefix_holding_objects_errors_the_job_until_emptied_and_a_project_without_project_id_uses_the_dir(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path, containers: Containers):
    base, served = http_files
    outs = with_output_url(lando, containers)
    held, _ = flaky_job(bespin, base, served, tmp_path, output_project_id="p1", name="prefix taken")
    swift().put_object(outs, f"p1/job-{held}/old.txt", b"someone else's\n")
    unnamed, _ = flaky_job(bespin, base, served, tmp_path, name="no project_id yet")  # as bespin's JobFactory makes it
    bespin_daemon.start()
    bespin.start_job(held)
    bespin.start_job(unnamed)
    jobs = [wait_bespin(bespin, i, lambda j: j["state"] in ("F", "E"), bespin_daemon) for i in (held, unnamed)]

    assert [j["state"] for j in jobs] == ["E", "F"], bespin.errors_of(unnamed)
    (error,) = bespin.errors_of(held)
    assert error["job_step"] == "V"
    assert error["content"].startswith(
        f"the workflow was not run: its results cannot go to the object store prefix swift://{outs}/p1/job-{held}/ "
        f"(bespin_api.output_url, for its output project): the output URL swift://{outs}/p1/job-{held}/ already "
        f"holds objects (swift://{outs}/p1/job-{held}/old.txt); lando-ssh never overwrites"), error["content"]
    assert object_bytes(outs, f"p1/job-{held}/old.txt") == b"someone else's\n"
    swift().delete_object(outs, f"p1/job-{held}/old.txt")  # the admin empties the prefix, and restarts the job
    bespin.restart_job(held)
    done = wait_bespin(bespin, held, lambda j: j["state"] in ("F", "C") or len(bespin.errors_of(held)) > 1,
                       bespin_daemon)
    assert done["state"] == "F" and len(bespin.errors_of(held)) == 1
    assert object_bytes(outs, f"p1/job-{held}/ok.txt") == b"ok\n"
    local = local_job(lando, unnamed)
    assert "output_url" not in local.facts
    assert (Path(local.output_dir) / "ok.txt").read_text() == "ok\n"
    assert f"job {unnamed}: its output project names no project_id" in bespin_daemon.text()
    assert lando.vm_dirs() == []


def test_a_store_that_does_not_answer_leaves_the_job_unloaded_and_one_that_refuses_ends_it_E(
        lando: Lando, bespin: BespinApiService, http_files: tuple[str, Path], tmp_path: Path, swift_service: str):
    base, served = http_files
    lando.settings["bespin_api"] = {"url": bespin.url, "token": TOKEN, "output_url": "swift://r/job-{job_id}/"}
    lando.settings["object_store"] = store_settings(swift={"auth_url": "http://127.0.0.1:9/auth/v1.0"})
    lando.write_config()
    job_id, _ = flaky_job(bespin, base, served, tmp_path)
    store = BespinStore(lando.config())
    try:
        # no answer: ObjectStoreUnavailable, an InfrastructureError (the broker serves the command again later)
        with pytest.raises(ObjectStoreUnavailable, match="cannot be reached"):
            store.load(job_id)
        with pytest.raises(UnknownJob):
            store.local.get(job_id)
        assert bespin.puts_of(job_id) == [] and bespin.errors_of(job_id) == []
    finally:
        store.close()

    lando.settings["object_store"] = store_settings(swift={"password": "wrong"})
    lando.write_config()
    store = BespinStore(lando.config())
    try:
        with pytest.raises(BadInput, match="its results cannot go to the object store prefix swift://r/job-1/ "
                                           "\\(bespin_api.output_url, for its output project\\): Swift at .* refused"):
            store.load(job_id)
        assert store.local.get(job_id).state.value == "E"
        assert store.flush(30)
        (error,) = bespin.errors_of(job_id)
        assert "refused lando-ssh's credential" in error["content"] and "wrong" not in error["content"]
    finally:
        store.close()


def bespin_record(job_id: int = 7, project: Any = "", **more: Any) -> dict[str, Any]:
    """The fields of AdminJobSerializer's job that decide its output URL."""
    record = {"id": job_id, "user": {"id": 3, "username": "ann@example.org"}, **more}
    if project is not None:
        record["output_project"] = {"id": 70, "job": job_id, "project_id": project, "dds_user_credentials": 2}
    return record


@pytest.mark.parametrize(("template", "record", "url"), [
    ("swift://results/{project_id}/job-{job_id}/", bespin_record(project="4f0c"), "swift://results/4f0c/job-7/"),
    ("s3://lab/{owner}/job-{job_id}", bespin_record(project=""), "s3://lab/ann%40example.org/job-7"),
    ("swift://r/{project_id}/{job_id}/", bespin_record(project="a b?#%"), "swift://r/a%20b%3F%23%25/7/"),
    # bespin's JobFactory leaves project_id '' (lando filled it in after making the DukeDS project)
    ("swift://results/{project_id}/job-{job_id}/", bespin_record(project=""), None),
    ("swift://results/job-{job_id}/", bespin_record(project=None), None),  # a job without an output project
    ("swift://results/job-{job_id}/", bespin_record(project=None, output_project=None), None),
    (None, bespin_record(project="4f0c"), None),  # no template: the output dir, as without an object store
])
def test_a_bespin_jobs_output_url_is_the_template_filled_in_where_it_has_an_output_project(
        template: str | None, record: dict[str, Any], url: str | None):
    assert output_url_of(template, record) == url


@pytest.mark.parametrize("project_id", ["a/b", "..", "x\ny"])
def test_a_project_id_that_cannot_be_part_of_a_prefix_is_refused(project_id: str):
    with pytest.raises(BadInput, match="bespin-api's job 7 has project_id .* which cannot be part of an object prefix"):
        output_url_of("swift://results/{project_id}/job-{job_id}/", bespin_record(project=project_id))


@pytest.mark.parametrize(("template", "said"), [
    ("swift://results/{project_id}/", "must name {job_id}, so that each job's results have a prefix of their own"),
    ("swift://results/{job}/{job_id}/", "may name only {job_id}, {project_id}, {owner} .*, not {job}"),
    ("swift://results/{job_id:05d}/", "may name only .*, not {job_id:05d}"),
    ("swift://results/{job_id!r}/", "may name only .*, not {job_id!r}"),
    ("swift://results/{}/{job_id}", "may name only .*, not {}"),
    ("swift://results/{job_id", "is not a template of {fields}"),
    ("https://results/{job_id}/", "must be a swift://CONTAINER/PREFIX/ or s3://BUCKET/PREFIX/ template, not "
                                  "'https://results/{job_id}/': .* is not a swift:// or s3:// URL"),
    ("swift:///{job_id}/", "names no container"),
    ("s3://results/{job_id}/", "bespin_api.output_url is an s3:// URL, but object_store.s3 is not configured"),
])
def test_the_bespin_output_url_template_is_checked_when_the_config_is_read(tmp_path: Path, template: str, said: str):
    from lando_ssh.config import load_config

    path = tmp_path / "lando.yml"
    path.write_text(yaml.safe_dump({"bespin_api": {"url": "http://127.0.0.1:1/api/v2", "token": "t",
                                                   "output_url": template},
                                    "object_store": {"swift": store_settings()["swift"]}}))
    with pytest.raises(ConfigError, match=f"{path}: .*{said}"):
        load_config(str(path), env={})


def test_a_good_bespin_output_url_template_loads_from_the_file_and_the_environment(tmp_path: Path):
    from lando_ssh.config import load_config

    path = tmp_path / "lando.yml"
    path.write_text(yaml.safe_dump({"bespin_api": {"url": "http://127.0.0.1:1/api/v2", "token": "t"},
                                    "object_store": {"s3": store_settings()["s3"]}}))
    template = "s3://results/{owner}/{project_id}/job-{job_id}/"
    config = load_config(str(path), env={"LANDO_BESPIN_API__OUTPUT_URL": template})
    assert config.bespin_api is not None and config.bespin_api.output_url == template
    with pytest.raises(ConfigError, match="^LANDO_BESPIN_API__OUTPUT_URL \\(environment\\): bespin_api.output_url must "
                                          "name {job_id}"):
        load_config(str(path), env={"LANDO_BESPIN_API__OUTPUT_URL": "s3://results/x/"})
