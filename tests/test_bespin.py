"""bespin-api as the job source: jobs created in a local bespin-api (tests/bespin_api) and started,
canceled and restarted the way bespin-api does it (state set, lando-messaging's pickled WorkRequest
on the queue), run by `lando-ssh run` through the real RabbitMQ, real sshd VMs and cwltool."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bespin_api import BespinApiService
from conftest import WORKFLOWS, Daemon, Lando, rabbit, vms_created_for
from openstack_api import OpenStackApiService
from test_openstack_driver import BESPIN_KEY, EMPTY, FACILITY_KEY, use_openstack

from lando_ssh.cloud.cloudinit import parse_user_data
from lando_ssh.config import load_config
from lando_ssh.errors import UnknownJob
from lando_ssh.keys import generate_keypair, known_hosts_line
from lando_ssh.store.bespin import BespinStore
from lando_ssh.workflow import prepare

pytest_plugins = ["openstack_api.fixtures"]  # openstack_api, local_openstack_api

TOKEN = "bespin-secret-token-1234"


@pytest.fixture
def bespin(broker_names: dict[str, str]) -> Iterator[BespinApiService]:
    service = BespinApiService(TOKEN, queue=broker_names["listen_queue"]).start()
    yield service
    service.stop()


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
    return [(p["state"], p["step"]) for p in bespin.puts_of(job_id)]


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


def use_openstack_for_bespin(lando: Lando, cloud: OpenStackApiService, tmp_path: Path) -> None:
    """lando-ssh on `cloud`, which has the Nova keypair bespin's cloud settings name (bespin-key), as at a site."""
    use_openstack(lando, cloud, tmp_path, volume_size=0)
    cloud.settings.keypairs.setdefault("bespin-key", BESPIN_KEY)


def openstack_job(lando: Lando, cloud: OpenStackApiService, bespin: BespinApiService, http_files: tuple[str, Path],
                  tmp_path: Path, project: str, cwl_base_command: list[str] | None = None,
                  **cloud_settings: Any) -> int:
    """A bespin job whose job_settings put its VM in OpenStack project `project` (lando-ssh on `cloud`), with more
    of bespin's `cloud_settings` fields."""
    use_openstack_for_bespin(lando, cloud, tmp_path)
    base, served = http_files
    job_id, _ = flaky_job(bespin, base, served, tmp_path, image="debian-12",
                          cwl_base_command=cwl_base_command,
                          cloud_settings={"vm_project": {"id": 2, "name": project}, "network_name": "private",
                                          **cloud_settings})
    return job_id


def test_a_bespin_job_with_url_inputs_runs_to_F_and_bespin_saw_every_state_and_step_lando_made(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path]):
    base, served = http_files
    digest = serve_packed(served, "upper_count.cwl", "upper_count.packed.cwl")
    (served / "hello.txt").write_text("hello\nworld\n")
    (served / "more.txt").write_text("more\n")
    job_id = bespin.add_job(
        f"{base}/upper_count.packed.cwl",
        {"text": {"class": "File", "path": "inputs/hello.txt"}, "more": {"class": "File", "path": "inputs/more.txt"}},
        url_files=[{"url": f"{base}/hello.txt", "destination_path": "inputs/hello.txt", "size": 12},
                   {"url": f"{base}/more.txt", "destination_path": "inputs/more.txt", "size": 5}],
        cwl_base_command=["cwltool", "--no-container"], name="bespin word count",
        # bespin-api's own example: the pre-process command's file is removed by the post-process one (rm fails
        # the job if it is not there)
        cwl_pre_process_command=["touch", "stalefile.txt"], cwl_post_process_command=["rm", "stalefile.txt"],
        methods_document="# Methods\n\nUppercase, then count.\n")
    bespin_daemon.start()

    bespin.start_job(job_id)  # state S, then the pickled WorkRequest on the queue, as bespin-api does
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    seen = state_steps(bespin, job_id)
    assert [step for state, step in seen if state == "R"] == ["V", "S", "R", "o", "O", "T"], seen
    assert seen[-1] == ("F", "") and ("S", "V") in seen
    local = local_job(lando, job_id)
    assert local.vm is not None and local.vm.name.endswith(f"-job-{job_id}-1")
    assert job["vm_instance_name"] == local.vm.name
    assert {p["vm_instance_name"] for p in bespin.puts_of(job_id) if p["step"] in "SRoOT" and p["state"] == "R"} \
        == {local.vm.name}
    assert bespin.errors_of(job_id) == []
    assert bespin.activity_of(job_id)[-1] == ("F", "")
    assert (Path(local.output_dir) / "upper.txt").read_text() == "HELLO\nWORLD\nMORE\n"
    assert not (Path(local.output_dir) / "stalefile.txt").exists()
    assert local.facts["workflow_source"]["sha256"] == digest
    assert local.facts["workflow_source"]["resolved_url"] == f"{base}/upper_count.packed.cwl#main"
    readme = (Path(local.output_dir) / "docs" / "README.md").read_text()
    assert digest in readme and "bespin word count" in readme
    assert (Path(local.output_dir) / "docs" / "Methods.md").read_text() == "# Methods\n\nUppercase, then count.\n"
    assert TOKEN not in bespin_daemon.text()
    assert lando.vm_dirs() == []


def test_a_failing_workflow_posts_a_job_error_with_the_stderr_tail_and_a_restart_from_bespin_resumes_at_its_step(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path):
    lando.settings["keep_vm_on_error"] = True
    lando.write_config()
    base, served = http_files
    job_id, flag = flaky_job(bespin, base, served, tmp_path, flag_present=False)
    bespin_daemon.start()

    bespin.start_job(job_id)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert (job["state"], job["step"]) == ("E", "R")
    (error,) = bespin.errors_of(job_id)
    assert error["job_step"] == "R"
    assert "cwltool exited with code" in error["content"] and f"flag {flag} is missing" in error["content"]
    first_vm = local_job(lando, job_id).vm.id

    flag.write_text("now it works")
    bespin.restart_job(job_id)  # state r, then restart_job
    job = wait_bespin(bespin, job_id, lambda j: j["state"] == "F" or (j["state"] == "E" and len(
        bespin.errors_of(job_id)) > 1), bespin_daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    seen = state_steps(bespin, job_id)
    after_restart = seen[seen.index(("r", "R")):]
    assert after_restart == [("r", "R"), ("R", "R"), ("R", "o"), ("R", "O"), ("R", "T"), ("F", "")], seen
    assert vms_created_for(lando, job_id) == [first_vm]
    assert (Path(local_job(lando, job_id).output_dir) / "ok.txt").read_text() == "ok\n"
    assert lando.vm_dirs() == []


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
    time.sleep(2)
    bespin.accept_connections()
    job = wait_bespin(bespin, job_id, lambda j: j["state"] == "F", bespin_daemon, timeout=60)

    assert job["step"] == ""
    seen = state_steps(bespin, job_id)
    assert [step for state, step in seen if state == "R"] == ["V", "S", "R", "o", "O", "T"], seen
    # the daemon saw bespin-api down and retried its update of this job (it did not give up: the job is F there)
    assert f"PUT admin/jobs/{job_id}/ failed (ConnectionError); retrying" in bespin_daemon.text()


def test_a_job_bespin_does_not_know_is_dead_lettered_with_a_clear_reason(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, broker_names: dict[str, str]):
    bespin_daemon.start()
    deadline = time.monotonic() + 30
    while "consuming commands" not in bespin_daemon.text():  # its queues are declared
        assert time.monotonic() < deadline, bespin_daemon.text()[-2000:]
        time.sleep(0.1)
    bespin.publish("start_job", 4242)

    deadline = time.monotonic() + 30
    connection = rabbit()
    try:
        channel = connection.channel()
        while True:
            method, properties, _ = channel.basic_get(broker_names["listen_queue"] + ".dead", auto_ack=True)
            if method is not None:
                break
            assert time.monotonic() < deadline, bespin_daemon.text()[-2000:]
            time.sleep(0.2)
    finally:
        connection.close()
    assert "has no job 4242" in str(properties.headers)
    deadline = time.monotonic() + 10  # the daemon logs the move once the dead-lettered copy is stored and acked
    while f"bespin-api at {bespin.url} has no job 4242" not in bespin_daemon.text():
        assert time.monotonic() < deadline, bespin_daemon.text()[-2000:]
        time.sleep(0.1)


def test_a_bad_token_is_reported_clearly_never_logged_and_the_command_waits_for_a_fixed_config(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path):
    base, served = http_files
    job_id, _ = flaky_job(bespin, base, served, tmp_path)
    lando.settings["bespin_api"]["token"] = "wrong-token-5678"
    lando.write_config()
    bespin_daemon.start()
    bespin.start_job(job_id)

    deadline = time.monotonic() + 30
    while "refused our credentials" not in bespin_daemon.text():
        assert time.monotonic() < deadline, bespin_daemon.text()[-2000:]
        time.sleep(0.2)
    assert "check bespin_api.token" in bespin_daemon.text()
    assert "wrong-token-5678" not in bespin_daemon.text()
    bespin_daemon.stop()

    lando.settings["bespin_api"]["token"] = TOKEN  # the admin fixes the config; the command was kept
    lando.write_config()
    bespin_daemon.start()
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)
    assert job["state"] == "F", bespin.errors_of(job_id)


def test_an_invalid_workflow_is_refused_before_any_vm_with_a_job_error_in_bespin(
        lando: Lando, bespin: BespinApiService, http_files: tuple[str, Path]):
    base, served = http_files
    (served / "invalid.cwl").write_text((WORKFLOWS / "invalid.cwl").read_text())
    job_id = bespin.add_job(f"{base}/invalid.cwl", {}, workflow_type="packed", workflow_path="#main")
    lando.settings["bespin_api"] = {"url": bespin.url, "token": TOKEN}
    lando.write_config()
    store = BespinStore(load_config(str(lando.config_path), env={}))
    try:
        with pytest.raises(Exception, match="is not valid CWL"):
            store.get(job_id)
        assert store.flush(10)
    finally:
        store.close()

    job = bespin.job(job_id)
    assert job["state"] == "E"
    (error,) = bespin.errors_of(job_id)
    assert error["job_step"] == "V" and "is not valid CWL" in error["content"]
    assert lando.vm_dirs() == []


def test_a_cancel_from_bespin_during_the_run_kills_the_workflow_and_ends_C_in_bespin(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path]):
    base, served = http_files
    packed = prepare(str(WORKFLOWS / "sleep.cwl"), None, {}).packed
    (served / "sleep.packed.cwl").write_text(json.dumps(packed))
    job_id = bespin.add_job(f"{base}/sleep.packed.cwl", {"seconds": 120},
                            cwl_base_command=["cwltool", "--no-container"])
    bespin_daemon.start()
    bespin.start_job(job_id)
    wait_bespin(bespin, job_id, lambda j: (j["state"], j["step"]) == ("R", "R"), bespin_daemon)
    deadline = time.monotonic() + 30
    while "run_pid" not in local_job(lando, job_id).facts:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    bespin.cancel_job(job_id)  # state c, then cancel_job
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("C", "E", "F"), bespin_daemon, timeout=60)

    assert job["state"] == "C"
    assert state_steps(bespin, job_id)[-2:] == [("c", "R"), ("C", "R")]
    assert bespin.errors_of(job_id) == []
    assert lando.vm_dirs() == []


def test_a_bespin_job_in_another_openstack_project_waits_for_that_projects_quota_then_runs_there_to_F(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, local_openstack_api: OpenStackApiService,
        http_files: tuple[str, Path], tmp_path: Path):
    job_id = openstack_job(lando, local_openstack_api, bespin, http_files, tmp_path, "lando-lab")
    local_openstack_api.settings.project_quotas = {"lando-lab": {"max_instances": 0}}  # lando's own has room
    bespin_daemon.start()
    bespin.start_job(job_id)

    waiting = wait_local(lando, job_id, lambda j: "quota" in j.reason, bespin_daemon)
    assert waiting.state.value == "S"
    assert waiting.reason == "waiting for quota in project 'lando-lab': instances 0 of 0 in use"
    assert local_openstack_api.inventory() == EMPTY
    local_openstack_api.settings.project_quotas = {}
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    local = local_job(lando, job_id)
    server_id = local.vm.id.removeprefix("lando-lab/")
    assert local.vm.id == f"lando-lab/{server_id}"
    assert [(s["id"], s["name"], s["project"]) for s in local_openstack_api.created("server")] == \
        [(server_id, local.vm.name, "lando-lab")]
    assert job["vm_instance_name"] == local.vm.name
    assert local_openstack_api.inventory() == EMPTY  # the server, and its port, are gone


def test_a_bespin_job_naming_a_project_keystone_refuses_ends_E_saying_so_in_bespin(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, openstack_api: OpenStackApiService,
        http_files: tuple[str, Path], tmp_path: Path):
    job_id = openstack_job(lando, openstack_api, bespin, http_files, tmp_path, "no-such-project")
    bespin_daemon.start()
    bespin.start_job(job_id)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert (job["state"], job["step"]) == ("E", "V")
    (error,) = bespin.errors_of(job_id)
    assert error["job_step"] == "V"
    assert "cannot work in OpenStack project 'no-such-project' (the job asks for it)" in error["content"]
    assert "the project does not exist or the user has no role in it" in error["content"]
    assert openstack_api.inventory() == EMPTY and openstack_api.created() == []


def test_a_bespin_jobs_ssh_key_name_puts_that_nova_keypair_on_its_vm_so_the_admin_logs_in_with_it(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, local_openstack_api: OpenStackApiService,
        http_files: tuple[str, Path], tmp_path: Path):
    admin_key = tmp_path / "facility-key"
    local_openstack_api.settings.keypairs = {"facility": generate_keypair(str(admin_key), "facility admin")}
    job_id = openstack_job(lando, local_openstack_api, bespin, http_files, tmp_path, "lando", ssh_key_name="facility",
                           cwl_base_command=["sh", "-c", 'sleep 5; exec cwltool --no-container "$@"', "cwltool"])
    bespin_daemon.start()
    bespin.start_job(job_id)

    running = wait_local(lando, job_id, lambda j: (j.state.value, j.step.value) == ("R", "R"), bespin_daemon)
    with local_openstack_api.cloud.lock:
        server = dict(local_openstack_api.cloud.servers[running.vm.id])
    known_hosts = tmp_path / "known_hosts"  # the VM's host keys as lando-ssh pinned them: nothing accepted blindly
    known_hosts.write_text("".join(known_hosts_line(running.vm.address, running.vm.port, k) + "\n"
                                   for k in running.vm.host_keys))
    admin = subprocess.run(
        ["ssh", "-i", str(admin_key), "-p", str(running.vm.port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null",
         f"{running.vm.user}@{running.vm.address}", "echo", "admin on the VM"],
        capture_output=True, text=True, timeout=30)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert server["key_name"] == "facility"
    assert (admin.returncode, admin.stdout) == (0, "admin on the VM\n"), admin.stderr
    assert job["state"] == "F", bespin.errors_of(job_id)
    assert local_openstack_api.inventory() == EMPTY


def test_a_bespin_job_naming_a_keypair_nova_does_not_have_ends_E_listing_the_keypairs_and_creates_nothing(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, openstack_api: OpenStackApiService,
        http_files: tuple[str, Path], tmp_path: Path):
    openstack_api.settings.keypairs = {"facility": FACILITY_KEY}
    job_id = openstack_job(lando, openstack_api, bespin, http_files, tmp_path, "lando", ssh_key_name="lando-key")
    bespin_daemon.start()
    bespin.start_job(job_id)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert (job["state"], job["step"]) == ("E", "V")
    (error,) = bespin.errors_of(job_id)
    assert "keypair 'lando-key' (ssh_key_name) does not exist for this OpenStack user; keypairs: bespin-key, " \
           "facility" in error["content"]
    assert openstack_api.inventory() == EMPTY and openstack_api.created() == []


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
    assert "## Shared with\n\nThese results are shared with the members of the bespin-api share group " \
           "**Sequencing core** (contact: seq-core@example.org):\n\n" \
           "- Ann Lee (DukeDS user 3f1c0a2e-ann)\n- Bo Chen (DukeDS user 77d2b9e4-bo)\n" in readme
    data = json.loads((Path(local.output_dir) / "docs" / "logs" / "job-data.json").read_text())
    assert data["facts"]["share_group"]["name"] == "Sequencing core"

    gone = local_job(lando, unreadable)
    assert gone.facts["share_group"]["id"] == 404 and "HTTP 404" in gone.facts["share_group"]["error"]
    readme = (Path(gone.output_dir) / "docs" / "README.md").read_text()
    assert "The job's share group (bespin-api share group 404) could not be read, so who these results are " \
           "shared with is not known: bespin-api at" in readme
    assert f"job {unreadable}: cannot read its share group 404 from bespin-api" in bespin_daemon.text()
    assert bespin.errors_of(unreadable) == [] and bespin.errors_of(shared) == []
    assert TOKEN not in bespin_daemon.text() and TOKEN not in readme
    assert lando.vm_dirs() == []


def test_a_bespin_job_with_cleanup_vm_false_keeps_its_vm_after_F_spared_by_the_sweep_until_the_admin_deletes_it(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, http_files: tuple[str, Path],
        tmp_path: Path):
    base, served = http_files
    job_id, _ = flaky_job(bespin, base, served, tmp_path, cleanup_vm=False)
    bespin_daemon.start()
    bespin.start_job(job_id)
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert (job["state"], job["step"]) == ("F", ""), bespin.errors_of(job_id)
    assert [step for state, step in state_steps(bespin, job_id) if state == "R"] == ["V", "S", "R", "o", "O", "T"]
    local = local_job(lando, job_id)
    assert local.facts["vm_kept"] is True and local.vm.deleted is None
    assert local.facts["vm_kept_note"] == f"VM kept (the job asks cleanup_vm: false): lando-ssh ssh {job_id}"
    assert job["vm_instance_name"] == local.vm.name
    assert len(lando.vm_dirs()) == 1
    (row,) = json.loads(lando.cli("vms", "--json", check=True).stdout)
    assert (row["id"], row["job"], row["job_state"], row["activity"]) == (local.vm.id, str(job_id), "F", "idle")
    assert lando.cli("ssh", str(job_id), "--", "echo", "still here").stdout == "still here\n"

    swept = json.loads(lando.cli("sweep", "--grace", "0", "--json", check=True).stdout)
    assert [i for i in swept if i["kind"] == "vm"] == []
    assert len(lando.vm_dirs()) == 1 and local_job(lando, job_id).vm.deleted is None

    deleted = lando.cli("delete-vm", str(job_id))
    assert deleted.returncode == 0, deleted.stderr
    assert lando.vm_dirs() == []
    local = local_job(lando, job_id)
    assert local.vm.deleted is not None and local.facts["vm_kept"] is False
    assert json.loads(lando.cli("vms", "--json", check=True).stdout) == []
    assert bespin.job(job_id)["state"] == "F"


def test_a_bespin_jobs_vm_volume_mounts_name_its_data_volumes_device_and_the_work_dir_on_openstack(
        lando: Lando, bespin: BespinApiService, bespin_daemon: Daemon, local_openstack_api: OpenStackApiService,
        http_files: tuple[str, Path], tmp_path: Path):
    use_openstack_for_bespin(lando, local_openstack_api, tmp_path)  # the job's own volume_size wins
    base, served = http_files
    mount = tmp_path / "bespin-data" / "work"  # where the VM mounts the volume (a local VM: a dir it can make)
    job_id, _ = flaky_job(bespin, base, served, tmp_path, image="debian-12", volume_size=1,
                          vm_volume_mounts={"/dev/vdb1": str(mount)},
                          cloud_settings={"vm_project": {"id": 1, "name": "lando"}, "network_name": "private"},
                          cwl_base_command=["sh", "-c", 'sleep 2; exec cwltool --no-container "$@"', "cwltool"])
    bespin_daemon.start()
    bespin.start_job(job_id)

    running = wait_local(lando, job_id, lambda j: (j.state.value, j.step.value) == ("R", "R"), bespin_daemon)
    cloud = local_openstack_api.cloud
    with cloud.lock:  # the server and its volume while the job runs (both are gone once it ends)
        server = dict(cloud.servers[running.vm.id])
        volume = copy.deepcopy(cloud.volumes[server["_volumes"][0][0]])
    job = wait_bespin(bespin, job_id, lambda j: j["state"] in ("F", "E"), bespin_daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    user_data = parse_user_data(server["_user_data"])
    assert user_data["disk_setup"] == {"/dev/vdb": {"table_type": "gpt", "layout": True, "overwrite": False}}
    assert user_data["fs_setup"] == [{"label": "lando_work", "filesystem": "ext4", "device": "/dev/vdb",
                                      "partition": 1}]
    assert user_data["mounts"] == [["LABEL=lando_work", str(mount), "auto", "defaults,nofail", "0", "2"]]
    assert ["mkdir", "-p", str(mount)] in user_data["runcmd"]
    assert (volume["size"], volume["name"]) == (1, f"{running.vm.name}-data")
    assert volume["attachments"][0]["server_id"] == running.vm.id
    assert volume["attachments"][0]["device"] == "/dev/vdb"  # the disk the job's /dev/vdb1 is the partition of
    local = local_job(lando, job_id)
    assert local.vm.work_dir == str(mount)
    assert (mount / f"lando-job-{job_id}").is_dir()  # the job ran under the mount point
    assert (Path(local.output_dir) / "ok.txt").read_text() == "ok\n"
    assert (job["vm_instance_name"], job["vm_volume_name"]) == (running.vm.name, f"{running.vm.name}-data")
    assert local_openstack_api.inventory() == EMPTY
