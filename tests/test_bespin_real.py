"""lando-ssh beside the real bespin-api (Duke-GCB/bespin-api at cea5c20, tests/bespin_api/real.py): jobs made,
started, canceled and restarted by bespin's own endpoints and code (its `LandoJob` publishes lando-messaging's
pickled WorkRequest, the job id a string), run by `lando-ssh run` through the real RabbitMQ, sshd VMs and
cwltool; what bespin recorded (state, step, JobActivity history, JobErrors) is read back from bespin."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bespin_api.real import ADMIN_TOKEN, HOME, RealBespin
from conftest import WORKFLOWS, Daemon, Lando, rabbit, vms_created_for
from lando_client import send_with
from openstack_api import OpenStackApiService
from test_objects import Containers, containers, object_bytes, store_settings, swift_service
from test_openstack_driver import BESPIN_KEY, EMPTY, FACILITY_KEY, use_openstack

from lando_ssh.cloud.cloudinit import parse_user_data
from lando_ssh.errors import UnknownJob
from lando_ssh.keys import generate_keypair, known_hosts_line
from lando_ssh.store.bespin import BespinStore
from lando_ssh.workflow import prepare

#: what lando wrote to bespin-api for a job that runs to the end (lando/server/lando.py): R as it takes the
#: start_job, a step each, the step cleared before F
LANDO_RUN = [("R", ""), ("R", "V"), ("R", "S"), ("R", "R"), ("R", "o"), ("R", "O"), ("R", "T"), ("R", ""), ("F", "")]


pytest_plugins = ["openstack_api.fixtures"]  # openstack_api, local_openstack_api
_FIXTURES = (containers, swift_service)  # the real Swift's (tests/test_objects.py), used here by name


@pytest.fixture(scope="module")
def bespin() -> Iterator[RealBespin]:
    service = RealBespin().start()
    yield service
    service.stop()


@pytest.fixture
def daemon(lando: Lando, broker_names: dict[str, str], bespin: RealBespin) -> Iterator[Daemon]:
    lando.settings["work_queue"] = {**broker_names, "heartbeat": 10}
    lando.settings["bespin_api"] = {"url": bespin.url, "token": ADMIN_TOKEN}
    lando.write_config()
    d = Daemon(lando)
    restart(d)
    yield d
    if d.alive():
        d.stop()


def restart(daemon: Daemon) -> None:
    """(Re)start the daemon on its installation's config as it is now; back once it consumes commands."""
    if daemon.alive():
        daemon.stop()
    start = len(daemon.text()) if daemon.log.exists() else 0
    daemon.start()
    _wait(lambda: "consuming commands" in daemon.text()[start:], daemon, "the daemon consumes commands")


def _wait(condition: Any, daemon: Daemon, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or not daemon.alive():
            raise AssertionError(f"waited in vain for: {what}\n{daemon.text()[-3000:]}")
        time.sleep(0.1)


def wait_state(bespin: RealBespin, job_id: int, states: str, daemon: Daemon, timeout: float = 90) -> dict:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(bespin.job(job_id))
        return found["state"] in states

    _wait(reached, daemon, f"bespin job {job_id} in one of {states!r}", timeout)
    return found


def serve(served: Path, workflow: str, name: str) -> None:
    """`workflow` packed, as bespin-api's workflow versions hold it, served over http."""
    sample = {"flaky.cwl": {"flag": "/nonexistent"}, "sleep.cwl": {}, "upper_count.cwl": None}[workflow]
    order = str(WORKFLOWS / "upper_count.yml") if sample is None else None
    packed = prepare(str(WORKFLOWS / workflow), order, sample).packed
    (served / name).write_text(json.dumps(packed, indent=2))


def flaky_job(bespin: RealBespin, queue: str, http_files: tuple[str, Path], tmp_path: Path,
              flag_present: bool = True, **spec: Any) -> tuple[int, Path]:
    """A bespin job running tests/workflows/flaky.cwl, which fails until its flag file exists."""
    base, served = http_files
    serve(served, "flaky.cwl", "flaky.packed.cwl")
    flag = tmp_path / "flag"
    if flag_present:
        flag.write_text("present")
    tag = bespin.workflow(queue, f"{base}/flaky.packed.cwl", fields=[{"name": "flag", "type": "string"}], **spec)
    return bespin.create_job(tag, {"flag": str(flag)}), flag


def local_job(lando: Lando, job_id: int) -> Any:
    """lando-ssh's own record of a bespin job (None until a command for it has been served)."""
    store = BespinStore(lando.config())
    try:
        return store.local.get(job_id)
    except UnknownJob:
        return None
    finally:
        store.local.close()


def cwltool_started(lando: Lando, job_id: int) -> bool:
    job = local_job(lando, job_id)
    return job is not None and job.run.run_pid is not None


# -- the tests ---------------------------------------------------------------------------------------------

def test_a_job_started_from_bespin_runs_to_F_and_bespin_records_landos_history(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path]):
    base, served = http_files
    serve(served, "upper_count.cwl", "upper_count.packed.cwl")
    (served / "hello.txt").write_text("hello\nworld\n")
    (served / "more.txt").write_text("more\n")
    tag = bespin.workflow(
        broker_names["listen_queue"], f"{base}/upper_count.packed.cwl",
        fields=[{"name": "text", "type": "File"}, {"name": "more", "type": "File"}],
        # bespin-api's own example: the post-process command removes the pre-process command's file
        cwl_pre_process_command=["touch", "stalefile.txt"], cwl_post_process_command=["rm", "stalefile.txt"],
        methods="# Methods\n\nUppercase, then count.\n", volume_size=10,
        share_group={"name": "Sequencing core", "email": "seq-core@example.org",
                     "users": [["Ann Lee", "3f1c0a2e-ann"]]})
    job_id = bespin.create_job(
        tag, {"text": {"class": "File", "path": "inputs/hello.txt"},
              "more": {"class": "File", "path": "inputs/more.txt"}},
        url_files=[{"url": f"{base}/hello.txt", "destination_path": "inputs/hello.txt", "size": 12},
                   {"url": f"{base}/more.txt", "destination_path": "inputs/more.txt", "size": 5}],
        name="bespin word count")

    started = bespin.start_job(job_id)  # bespin sets S and publishes start_job with the id as a string
    job = wait_state(bespin, job_id, "FE", daemon)

    assert started["state"] == "S"
    assert job["state"] == "F", bespin.errors_of(job_id)
    assert bespin.activity_of(job_id) == [("A", ""), ("S", "")] + LANDO_RUN
    assert bespin.errors_of(job_id) == []
    local = local_job(lando, job_id)
    assert job["vm_instance_name"] == local.vm.name and local.vm.name.endswith(f"-job-{job_id}-1")
    assert job["vm_volume_name"] == ""  # a local VM has no volume
    out = Path(local.output_dir)
    assert (out / "upper.txt").read_text() == "HELLO\nWORLD\nMORE\n"
    assert not (out / "stalefile.txt").exists()
    assert (out / "docs" / "Methods.md").read_text() == "# Methods\n\nUppercase, then count.\n"
    readme = (out / "docs" / "README.md").read_text()
    assert "bespin word count" in readme and "Sequencing core" in readme and "Ann Lee" in readme
    assert "are shared with" not in readme  # nothing grants anyone access to these files
    assert ADMIN_TOKEN not in daemon.text()
    assert lando.vm_dirs() == []


def test_a_failing_job_posts_a_job_error_and_a_restart_from_bespin_resumes_at_its_step_on_the_same_vm(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    lando.settings["keep_vm_on_error"] = True
    lando.write_config()
    restart(daemon)
    job_id, flag = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path, flag_present=False)

    bespin.start_job(job_id)
    job = wait_state(bespin, job_id, "FE", daemon)

    assert (job["state"], job["step"]) == ("E", "R")
    (error,) = bespin.errors_of(job_id)
    assert error["job_step"] == "R" and f"flag {flag} is missing" in error["content"]
    first_vm = local_job(lando, job_id).vm.id

    flag.write_text("now it works")
    bespin.restart_job(job_id)  # bespin allows it from E: sets r, publishes restart_job
    job = wait_state(bespin, job_id, "F", daemon)

    history = bespin.activity_of(job_id)
    after = history[history.index(("r", "R")):]
    assert after == [("r", "R"), ("R", "R"), ("R", "o"), ("R", "O"), ("R", "T"), ("R", ""), ("F", "")], history
    assert vms_created_for(lando, job_id) == [first_vm]
    assert (Path(local_job(lando, job_id).output_dir) / "ok.txt").read_text() == "ok\n"
    assert lando.vm_dirs() == []


def test_a_cancel_from_bespin_mid_run_ends_C_as_lando_did_and_a_restart_from_bespin_then_runs_it_to_F(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    # the README's way to move a job lando left running: cancel it from bespin, then restart it
    job_id, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path,
                          cwl_base_command=["sh", "-c", 'sleep 60; exec cwltool --no-container "$@"', "cwltool"])
    bespin.start_job(job_id)
    _wait(lambda: cwltool_started(lando, job_id), daemon, "the workflow runs")

    bespin.cancel_job(job_id)
    job = wait_state(bespin, job_id, "CEF", daemon)

    assert (job["state"], job["step"]) == ("C", "")
    assert bespin.activity_of(job_id)[-2:] == [("c", ""), ("C", "")]
    assert bespin.errors_of(job_id) == []
    assert lando.vm_dirs() == []

    bespin.restart_job(job_id)  # bespin restarts canceled jobs: from the start, on a new VM
    job = wait_state(bespin, job_id, "FE", daemon, timeout=150)
    assert job["state"] == "F", bespin.errors_of(job_id)
    assert len(vms_created_for(lando, job_id)) == 2


def test_a_cancel_from_bespin_of_a_finished_job_puts_bespins_record_back_to_F_so_it_can_be_deleted(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    job_id, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    bespin.start_job(job_id)
    wait_state(bespin, job_id, "FE", daemon)

    assert bespin.cancel_job(job_id)["state"] == "c"  # bespin sets c itself, then sends cancel_job
    job = wait_state(bespin, job_id, "FCE", daemon, timeout=30)

    assert (job["state"], job["step"]) == ("F", "")
    assert bespin.delete_job(job_id).status_code == 204


def test_an_invalid_workflow_ends_E_with_one_job_error_and_status_only_reads(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path]):
    base, served = http_files
    (served / "invalid.cwl").write_text((WORKFLOWS / "invalid.cwl").read_text())
    tag = bespin.workflow(broker_names["listen_queue"], f"{base}/invalid.cwl", workflow_path="#main",
                          fields=[{"name": "message", "type": "string"}])
    never_started = bespin.create_job(tag, {"message": "hi"})
    job_id = bespin.create_job(tag, {"message": "hi"})

    bespin.start_job(job_id)
    job = wait_state(bespin, job_id, "E", daemon)

    (error,) = bespin.errors_of(job_id)
    assert error["job_step"] == "V" and "is not valid CWL" in error["content"]
    assert job["step"] in ("", "V")
    for _ in range(3):
        shown = lando.cli("status", str(job_id), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "E"
        unknown = lando.cli("status", str(never_started), "--json")
        assert unknown.returncode == 0, unknown.stderr
        assert json.loads(unknown.stdout)["state"] == "A"
    assert len(bespin.errors_of(job_id)) == 1
    assert bespin.errors_of(never_started) == []
    assert bespin.activity_of(never_started) == [("A", "")]


def test_landos_own_client_starts_a_bespin_job_and_an_unknown_job_is_dead_lettered_saying_so(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    queue = broker_names["listen_queue"]
    job_id, _ = flaky_job(bespin, queue, http_files, tmp_path)
    bespin.put_job(job_id, state="S")  # as bespin's start does, then lando-messaging's LandoClient sends
    bespins_python = HOME / "venv" / "bin" / "python"  # lando-messaging's LandoClient as bespin-api runs it
    send_with(bespins_python, "start_job", str(job_id), queue)
    send_with(bespins_python, "start_job", "4242", queue)

    job = wait_state(bespin, job_id, "FE", daemon)
    assert job["state"] == "F", bespin.errors_of(job_id)
    with rabbit() as connection:
        channel = connection.channel()
        deadline = time.monotonic() + 30
        while (got := channel.basic_get(queue + ".dead", auto_ack=True))[0] is None:
            assert time.monotonic() < deadline, daemon.text()[-2000:]
            time.sleep(0.2)
    assert "has no job 4242" in str(got[1].headers)


def test_a_job_lando_left_running_moves_to_lando_ssh_by_cancel_then_restart_from_bespin(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    job_id, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    bespin.put_job(job_id, state="R", step="R", vm_instance_name="lando-worker-7")  # where lando left it
    refused = bespin.request("user", "POST", f"jobs/{job_id}/restart/")
    assert refused.status_code == 400 and "Job is not at ERROR or CANCEL state" in refused.text

    bespin.cancel_job(job_id)
    job = wait_state(bespin, job_id, "CE", daemon)
    assert (job["state"], job["step"]) == ("C", "")
    bespin.restart_job(job_id)
    job = wait_state(bespin, job_id, "FE", daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    assert bespin.activity_of(job_id)[-len(LANDO_RUN):] == LANDO_RUN
    assert job["vm_instance_name"] == local_job(lando, job_id).vm.name



def test_a_bad_token_is_reported_clearly_never_logged_and_the_command_waits_for_a_fixed_config(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    lando.settings["bespin_api"]["token"] = "wrong-token-5678"
    lando.write_config()
    restart(daemon)
    job_id, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    bespin.start_job(job_id)

    _wait(lambda: "refused our credentials" in daemon.text(), daemon, "the token refused")
    assert "HTTP 401: Invalid token." in daemon.text() and "check bespin_api.token" in daemon.text()
    assert "wrong-token-5678" not in daemon.text()

    lando.settings["bespin_api"]["token"] = ADMIN_TOKEN  # the admin fixes the config; the command was kept
    lando.write_config()
    restart(daemon)
    job = wait_state(bespin, job_id, "FE", daemon)
    assert job["state"] == "F", bespin.errors_of(job_id)


def test_a_job_with_cleanup_vm_false_keeps_its_vm_after_F_until_the_admin_deletes_it(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path):
    job_id, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    bespin.put_job(job_id, cleanup_vm=False)  # an admin's choice on the job, as bespin offers it
    bespin.start_job(job_id)
    job = wait_state(bespin, job_id, "FE", daemon)

    assert (job["state"], job["step"]) == ("F", ""), bespin.errors_of(job_id)
    local = local_job(lando, job_id)
    assert local.run.vm_kept is True and local.vm.deleted is None
    assert job["vm_instance_name"] == local.vm.name
    assert lando.cli("ssh", str(job_id), "--", "echo", "still here").stdout == "still here\n"
    swept = json.loads(lando.cli("sweep", "--grace", "0", "--json", check=True).stdout)
    assert [i for i in swept if i["kind"] == "vm" and not i.get("spared")] == []
    assert len(lando.vm_dirs()) == 1

    deleted = lando.cli("delete-vm", str(job_id))
    assert deleted.returncode == 0, deleted.stderr
    assert lando.vm_dirs() == [] and bespin.job(job_id)["state"] == "F"


# -- bespin's cloud settings on OpenStack (the OpenStack test service; bespin-api itself is the real one) ----

def openstack_job(lando: Lando, cloud: OpenStackApiService, bespin: RealBespin, daemon: Daemon, queue: str,
                  http_files: tuple[str, Path], tmp_path: Path, project: str, **spec: Any) -> int:
    """A bespin job whose cloud settings put its VM in OpenStack project `project` (lando-ssh on `cloud`)."""
    use_openstack(lando, cloud, tmp_path, volume_size=0)
    cloud.settings.keypairs.setdefault("bespin-key", BESPIN_KEY)
    restart(daemon)
    job_id, _ = flaky_job(bespin, queue, http_files, tmp_path, image="debian-12", vm_project=project,
                          network_name="private", **spec)
    return job_id


def test_a_job_in_another_openstack_project_waits_for_that_projects_quota_then_runs_there_to_F(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        local_openstack_api: OpenStackApiService, http_files: tuple[str, Path], tmp_path: Path):
    job_id = openstack_job(lando, local_openstack_api, bespin, daemon, broker_names["listen_queue"], http_files,
                           tmp_path, "lando-lab")
    local_openstack_api.settings.project_quotas = {"lando-lab": {"max_instances": 0}}  # lando's own has room
    bespin.start_job(job_id)

    _wait(lambda: "quota" in getattr(local_job(lando, job_id), "reason", ""), daemon, "the job waits for quota")
    waiting = local_job(lando, job_id)
    assert waiting.state.value == "S"
    assert waiting.reason == "waiting for quota in project 'lando-lab': instances 0 of 0 in use"
    assert bespin.job(job_id)["state"] == "R"  # lando had it running; why it waits is lando-ssh's to say
    local_openstack_api.settings.project_quotas = {}
    job = wait_state(bespin, job_id, "FE", daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    local = local_job(lando, job_id)
    assert [(s["name"], s["project"]) for s in local_openstack_api.created("server")] == [(local.vm.name, "lando-lab")]
    assert local_openstack_api.inventory() == EMPTY


def test_a_job_naming_a_project_keystone_refuses_ends_E_saying_so_in_bespin(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        openstack_api: OpenStackApiService, http_files: tuple[str, Path], tmp_path: Path):
    job_id = openstack_job(lando, openstack_api, bespin, daemon, broker_names["listen_queue"], http_files,
                           tmp_path, "no-such-project")
    bespin.start_job(job_id)
    job = wait_state(bespin, job_id, "FE", daemon)

    assert (job["state"], job["step"]) == ("E", "V")
    (error,) = bespin.errors_of(job_id)
    assert "cannot work in OpenStack project 'no-such-project' (the job asks for it)" in error["content"]
    assert openstack_api.inventory() == EMPTY and openstack_api.created() == []


def test_a_jobs_ssh_key_name_puts_that_nova_keypair_on_its_vm_so_the_admin_logs_in_with_it(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        local_openstack_api: OpenStackApiService, http_files: tuple[str, Path], tmp_path: Path):
    admin_key = tmp_path / "facility-key"
    local_openstack_api.settings.keypairs = {"facility": generate_keypair(str(admin_key), "facility admin")}
    job_id = openstack_job(lando, local_openstack_api, bespin, daemon, broker_names["listen_queue"], http_files,
                           tmp_path, "lando", ssh_key_name="facility",
                           cwl_base_command=["sh", "-c", 'sleep 5; exec cwltool --no-container "$@"', "cwltool"])
    bespin.start_job(job_id)

    _wait(lambda: cwltool_started(lando, job_id), daemon, "the workflow runs")
    running = local_job(lando, job_id)
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
    job = wait_state(bespin, job_id, "FE", daemon)

    assert server["key_name"] == "facility"
    assert (admin.returncode, admin.stdout) == (0, "admin on the VM\n"), admin.stderr
    assert job["state"] == "F", bespin.errors_of(job_id)
    assert local_openstack_api.inventory() == EMPTY


def test_a_job_naming_a_keypair_nova_does_not_have_ends_E_listing_the_keypairs_and_creates_nothing(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        openstack_api: OpenStackApiService, http_files: tuple[str, Path], tmp_path: Path):
    openstack_api.settings.keypairs = {"facility": FACILITY_KEY}
    job_id = openstack_job(lando, openstack_api, bespin, daemon, broker_names["listen_queue"], http_files, tmp_path,
                           "lando", ssh_key_name="lando-key")
    bespin.start_job(job_id)
    job = wait_state(bespin, job_id, "FE", daemon)

    assert (job["state"], job["step"]) == ("E", "V")
    (error,) = bespin.errors_of(job_id)
    assert "keypair 'lando-key' (ssh_key_name) does not exist for this OpenStack user; keypairs: bespin-key, " \
           "facility" in error["content"]
    assert openstack_api.inventory() == EMPTY and openstack_api.created() == []


def test_a_jobs_vm_volume_mounts_name_its_data_volumes_device_and_the_work_dir_on_openstack(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        local_openstack_api: OpenStackApiService, http_files: tuple[str, Path], tmp_path: Path):
    mount = tmp_path / "bespin-data" / "work"  # where the VM mounts the volume (a local VM: a dir it can make)
    job_id = openstack_job(lando, local_openstack_api, bespin, daemon, broker_names["listen_queue"], http_files,
                           tmp_path, "lando",
                           cwl_base_command=["sh", "-c", 'sleep 2; exec cwltool --no-container "$@"', "cwltool"])
    bespin.put_job(job_id, volume_size=1, vm_volume_mounts=json.dumps({"/dev/vdb1": str(mount)}))  # as bespin keeps it
    bespin.start_job(job_id)

    _wait(lambda: cwltool_started(lando, job_id), daemon, "the workflow runs")
    running = local_job(lando, job_id)
    cloud = local_openstack_api.cloud
    with cloud.lock:  # the server and its volume while the job runs (both are gone once it ends)
        server = dict(cloud.servers[running.vm.id])
        volume = dict(cloud.volumes[server["_volumes"][0][0]])
    job = wait_state(bespin, job_id, "FE", daemon)

    assert job["state"] == "F", bespin.errors_of(job_id)
    user_data = parse_user_data(server["_user_data"])
    assert user_data["mounts"] == [["LABEL=lando_work", str(mount), "auto", "defaults,nofail", "0", "2"]]
    assert (volume["size"], volume["name"]) == (1, f"{running.vm.name}-data")
    assert local_job(lando, job_id).vm.work_dir == str(mount)
    assert (job["vm_instance_name"], job["vm_volume_name"]) == (running.vm.name, f"{running.vm.name}-data")
    assert local_openstack_api.inventory() == EMPTY


def test_a_job_whose_output_project_an_admin_named_puts_its_results_in_swift_and_one_bespin_made_uses_the_dir(
        lando: Lando, bespin: RealBespin, daemon: Daemon, broker_names: dict[str, str],
        http_files: tuple[str, Path], tmp_path: Path, containers: Containers):
    outs = containers.new()
    lando.settings["bespin_api"]["output_url"] = f"swift://{outs}/{{project_id}}/job-{{job_id}}/"
    lando.settings["object_store"] = store_settings()
    lando.write_config()
    restart(daemon)
    named, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    unnamed, _ = flaky_job(bespin, broker_names["listen_queue"], http_files, tmp_path)
    project = bespin.job(named)["output_project"]  # bespin's JobFactory made it, its project_id left for lando
    assert sorted(project) == ["dds_user_credentials", "id", "job", "project_id"] and project["project_id"] == ""
    bespin.call("admin", "PUT", f"admin/job-dds-output-projects/{project['id']}/",
                {"job": named, "project_id": "0c7d9e1f-proj", "dds_user_credentials": project["dds_user_credentials"]})

    bespin.start_job(named)
    bespin.start_job(unnamed)
    jobs = [wait_state(bespin, i, "FE", daemon) for i in (named, unnamed)]

    assert [j["state"] for j in jobs] == ["F", "F"], [bespin.errors_of(i) for i in (named, unnamed)]
    prefix = f"0c7d9e1f-proj/job-{named}/"
    assert object_bytes(outs, f"{prefix}ok.txt") == b"ok\n"
    assert b"## Share group" in object_bytes(outs, f"{prefix}docs/README.md")
    local = local_job(lando, named)
    assert local.output["ok"]["location"] == f"swift://{outs}/{prefix}ok.txt"
    assert local.facts["bespin"]["output_project"] == {"id": project["id"], "project_id": "0c7d9e1f-proj"}
    assert (Path(local_job(lando, unnamed).output_dir) / "ok.txt").read_text() == "ok\n"
    assert lando.vm_dirs() == []
