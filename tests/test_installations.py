"""Two lando-ssh installations on one host (or one cloud) with the same `cloud.installation_id`, each
counting jobs from 1: neither ever finds, sweeps, deletes or kills the other's VMs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import TEST_INSTALLATION, WORKFLOWS, Lando, _delete_vms
from test_job import _cmdline
from test_sweep import make_vm

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, META_MANAGED_BY, META_TOKEN
from lando_ssh.cloud.local import MARKER, LocalCloud
from lando_ssh.errors import CloudError
from lando_ssh.installation import installation_token, ours
from lando_ssh.model import Job, JobState, VmRecord, now
from lando_ssh.store import open_store
from lando_ssh.sweep import sweep


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Lando]:
    """A second installation beside `lando`: same installation id, its own data dir."""
    env = Lando(tmp_path / "other")
    env.root.mkdir()
    env.write_config()
    yield env
    _delete_vms(env)


def sleeper(vm_dir: Path, marker: str) -> subprocess.Popen:
    """A process of a VM as the VM's sshd starts them: the marker in its environment, working in the VM."""
    return subprocess.Popen(["sleep", "300"], cwd=vm_dir, env={**os.environ, MARKER: marker},
                            start_new_session=True)


def delete_all(*clouds: LocalCloud) -> None:
    """Every VM in the clouds' (shared) root, each deleted by the installation that made it."""
    for vm in clouds[0].find_vms({}):
        made_by = json.loads((Path(clouds[0].root) / vm.id / "meta.json").read_text())["token"]
        next(c for c in clouds if c.token == made_by).delete_vm(vm.id)


def test_each_data_dir_has_its_own_token_kept_across_runs(lando: Lando, other: Lando):
    mine = installation_token(str(lando.data_dir))
    assert mine != installation_token(str(other.data_dir))
    assert (lando.data_dir / "installation-token").read_text().strip() == mine
    assert ours(lando.config())[META_TOKEN] == mine
    assert ours(lando.config())[META_INSTALLATION] == ours(other.config())[META_INSTALLATION] == TEST_INSTALLATION


def test_cancelling_a_job_never_kills_the_same_job_of_another_installation(lando: Lando, other: Lando):
    """Both run their job 1 (same VM name); the first's cancel deletes its VM, the second's job runs on."""
    assert lando.submit(WORKFLOWS / "sleep.cwl") == other.submit(WORKFLOWS / "sleep.cwl") == 1
    runners = [env.popen("job", "1") for env in (lando, other)]
    try:
        names = [env.wait_for(1, lambda j: j["step"] == "R" and j["run"]["run_pid"] is not None)["vm"]["name"]
                 for env in (lando, other)]
        assert names[0] == names[1] == f"{TEST_INSTALLATION}-job-1-1"
        deadline = time.monotonic() + 30
        while True:  # cwltool starts the tool's two sleeps shortly after the run step begins
            theirs = [p for p in other.vm_processes(names[1]) if _cmdline(p).startswith("sleep 300")]
            if len(theirs) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(theirs) >= 2, "the other installation's workflow never showed up on its VM"

        runners[0].send_signal(signal.SIGINT)
        assert runners[0].wait(60) == 1
        assert lando.status(1)["state"] == "C" and lando.vm_dirs() == []

        assert all(_cmdline(p).startswith("sleep 300") for p in theirs), "the other installation's job was killed"
        assert other.status(1)["state"] == "R" and len(other.vm_dirs()) == 1
        runners[1].send_signal(signal.SIGINT)
        assert runners[1].wait(60) == 1
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
                runner.wait()


def test_a_vm_made_before_tokens_is_still_deleted_by_its_installation_and_only_its(lando: Lando, other: Lando):
    """After an upgrade: a VM whose processes carry the old marker (the name alone) is this data dir's by its
    directory; the other installation's old VM of the same name keeps its processes."""
    name = f"{TEST_INSTALLATION}-job-1-1"
    clouds = [LocalCloud(env.config()) for env in (lando, other)]
    dirs = []
    for cloud in clouds:
        make_vm(cloud, name, {})
        vm_dir = Path(cloud.root) / name
        meta = json.loads((vm_dir / "meta.json").read_text())
        del meta["token"]  # as the previous version wrote it
        (vm_dir / "meta.json").write_text(json.dumps(meta))
        dirs.append(vm_dir)
    old = [sleeper(d, name) for d in dirs]
    try:
        assert clouds[0].processes(name) == {old[0].pid}
        clouds[0].delete_vm(name)
        assert old[0].wait(10) == -signal.SIGTERM
        assert old[1].poll() is None and clouds[1].processes(name) == {old[1].pid}
        assert clouds[0].get_vm(name) is None and clouds[1].get_vm(name) is not None
    finally:
        for proc in old:
            proc.kill()
            proc.wait()


def test_a_shared_local_cloud_root_refuses_to_delete_another_installations_vm(lando: Lando, other: Lando,
                                                                              tmp_path: Path):
    shared = str(tmp_path / "shared-root")
    for env in (lando, other):
        env.write_config(cloud={"local": {"root": shared}})
    mine, theirs = LocalCloud(lando.config()), LocalCloud(other.config())
    vm_id = make_vm(theirs, f"{TEST_INSTALLATION}-job-1-1", ours(other.config()))
    proc = sleeper(Path(shared) / vm_id, theirs.marker(vm_id))
    try:
        with pytest.raises(CloudError, match="made by another lando-ssh installation"):
            mine.delete_vm(vm_id)
        assert proc.poll() is None and theirs.get_vm(vm_id) is not None
    finally:
        theirs.delete_vm(vm_id)
        proc.wait(10)


def test_a_sweep_spares_the_vms_of_another_installation_and_old_vms_no_record_names(lando: Lando, other: Lando,
                                                                                    tmp_path: Path):
    """One cloud (a shared local root here; an OpenStack project alike), two installations with the same id.
    Installation A's job 1 has its VM; B's job 1 has another. A's sweep deletes neither, nor a VM made before
    tokens for a job A does not know; it deletes its own orphan and an old VM its record marks deleted."""
    shared = str(tmp_path / "shared-root")
    for env in (lando, other):
        env.write_config(cloud={"local": {"root": shared}})
    config = lando.config()
    cloud, theirs = LocalCloud(config), LocalCloud(other.config())
    old_tags = {META_MANAGED_BY: "lando-ssh", META_INSTALLATION: TEST_INSTALLATION}
    store = open_store(config.store_url)
    try:
        job = store.create(Job(id=0, name="mine", workflow="wf.cwl", job_order={}))
        gone = store.create(Job(id=0, name="old", workflow="wf.cwl", job_order={}))
        live = make_vm(cloud, f"{TEST_INSTALLATION}-job-{job.id}-1", {**ours(config), META_JOB_ID: str(job.id)})
        old_deleted = make_vm(cloud, f"{TEST_INSTALLATION}-job-{gone.id}-1", {**old_tags, META_JOB_ID: str(gone.id)})
        for j, vm_id, deleted in ((job, live, None), (gone, old_deleted, now())):
            def record(j: Job, vm_id: str = vm_id, deleted: datetime | None = deleted) -> None:
                j.set_state(JobState.STARTING)
                j.vm = VmRecord(name=vm_id, id=vm_id, created=now(), deleted=deleted)

            store.update(j.id, record)
        spared = {
            make_vm(theirs, f"{TEST_INSTALLATION}-job-{job.id}-2", {**ours(other.config()), META_JOB_ID: str(job.id)}),
            make_vm(theirs, f"{TEST_INSTALLATION}-job-77-1", {**ours(other.config()), META_JOB_ID: "77"}),
            make_vm(theirs, f"{TEST_INSTALLATION}-job-78-1", {**old_tags, META_JOB_ID: "78"}),
        }
        orphan = make_vm(cloud, f"{TEST_INSTALLATION}-job-99-1", {**ours(config), META_JOB_ID: "99"})

        items = sweep(config, cloud, store, grace=0)

        assert {(i.id, i.deleted) for i in items if i.kind == "vm"} == {(orphan, True), (old_deleted, True)}
        assert {v.id for v in cloud.find_vms({})} == spared | {live}
    finally:
        store.close()
        delete_all(cloud, theirs)
