"""The orphan sweep on the local cloud: tagged VMs no live job owns go; live and untagged ones stay."""
from __future__ import annotations

import json
import os
import time

from conftest import TEST_INSTALLATION, WORKFLOWS, Lando

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, VmRequest
from lando_ssh.cloud.local import LocalCloud
from lando_ssh.installation import ours
from lando_ssh.store import open_store
from lando_ssh.sweep import sweep

USER_DATA = "#cloud-config\nruncmd: []\n"


def tagged(lando: Lando, job_id: int | str) -> dict[str, str]:
    return {**ours(lando.config()), META_JOB_ID: str(job_id)}


def make_vm(cloud: LocalCloud, name: str, metadata: dict[str, str]) -> str:
    """A booted VM, as orphans are (the local cloud can miss the sshd of a VM deleted while it boots)."""
    vm_id = cloud.create_vm(VmRequest(name=name, flavor="m1.small", image="local", user_data=USER_DATA,
                                      metadata=metadata)).id
    deadline = time.monotonic() + 30
    while (info := cloud.get_vm(vm_id)) is not None and info.status == "BUILD" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert info is not None and info.status == "ACTIVE", info
    return vm_id


def leave_orphans(lando: Lando) -> tuple[LocalCloud, dict[str, str]]:
    """A finished job whose VM "failed to delete", a VM tagged for a job that does not exist, a kept
    VM of an errored job (live), another installation's VM and an untagged VM."""
    finished = lando.submit(WORKFLOWS / "no_inputs.cwl")
    assert lando.cli("job", str(finished)).returncode == 0
    lando.write_config(keep_vm_on_error=True)
    kept = lando.submit(WORKFLOWS / "fail.cwl")
    assert lando.cli("job", str(kept)).returncode == 1
    status = lando.status(finished)
    assert status["state"] == "F" and status["vm"]["deleted"]
    assert lando.status(kept)["vm"]["deleted"] is None

    cloud = LocalCloud(lando.config())
    vms = {
        # the finished job's own VM, as if its delete had failed: same name and id, recorded deleted
        "finished": make_vm(cloud, status["vm"]["name"], tagged(lando, finished)),
        "no-job": make_vm(cloud, f"{TEST_INSTALLATION}-job-999-1", tagged(lando, 999)),
        "other-installation": make_vm(cloud, f"{TEST_INSTALLATION}-other-job-1-1",
                                      {**tagged(lando, 1), META_INSTALLATION: "someone-else"}),
        "untagged": make_vm(cloud, f"{TEST_INSTALLATION}-pet", {}),
        "kept": lando.status(kept)["vm"]["id"],
    }
    keys = lando.data_dir / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "job-4242").write_text("a key of a job that never was\n")
    return cloud, vms


def test_sweep_deletes_exactly_the_tagged_orphans_and_dry_run_deletes_nothing(lando: Lando):
    cloud, vms = leave_orphans(lando)
    orphans = {vms["finished"], vms["no-job"]}

    keys = lando.data_dir / "keys"
    proc = lando.cli("sweep", "--dry-run", "--grace", "0", "--json", check=True)
    listed = json.loads(proc.stdout)
    assert {i["id"] for i in listed if i["kind"] == "vm"} == orphans
    assert not any(i["deleted"] for i in listed)
    by_id = {i["id"]: i for i in listed}
    assert by_id[vms["no-job"]]["why"] == "job 999 is not in the job store"
    assert "recorded this VM as deleted at" in by_id[vms["finished"]]["why"]
    assert {v.id for v in cloud.find_vms({})} == set(vms.values())  # nothing deleted
    assert (lando.data_dir / "keys" / "job-4242").exists()

    # the default grace period (10 minutes) spares orphans this young, naming each with its age
    listed = json.loads(lando.cli("sweep", "--json", check=True).stdout)
    assert {(i["kind"], i["id"]) for i in listed if i["spared"]} == {("vm", vms["finished"]), ("vm", vms["no-job"]),
                                                                      ("key", str(keys / "job-4242"))}
    assert all(0 <= i["age_seconds"] < 600 and not i["deleted"] for i in listed)
    text = lando.cli("sweep", check=True).stdout
    no_job = next(line for line in text.splitlines() if f"{TEST_INSTALLATION}-job-999-1" in line)
    assert "spared (young)" in no_job and "job 999 is not in the job store" in no_job
    assert text.splitlines()[-1] == "0 deleted; 3 spared for being younger than the grace (10m00s; --grace SECONDS)"
    assert {v.id for v in cloud.find_vms({})} == set(vms.values())

    proc = lando.cli("sweep", "--grace", "0", check=True)
    assert "3 deleted" in proc.stdout, proc.stdout  # two VMs and the stray key
    assert f"sweep: deleted vm {vms['no-job']}: job 999 is not in the job store" in proc.stderr
    assert {v.id for v in cloud.find_vms({})} == {vms["kept"], vms["untagged"], vms["other-installation"]}
    assert not (lando.data_dir / "keys" / "job-4242").exists()
    assert "nothing to sweep" in lando.cli("sweep", "--grace", "0", check=True).stdout


def test_the_daemons_sweep_function_spares_a_vm_being_created(lando: Lando):
    """A job records its VM's name before it asks the cloud: a VM with that name and no id yet is live."""
    from lando_ssh.journal import Journal
    from lando_ssh.model import Job, JobState, VmRecord, now

    config = lando.config()
    cloud = LocalCloud(config)
    store = open_store(config.store_url)
    try:
        job = store.create(Job(id=0, name="booting", workflow="wf.cwl", job_order={}))
        name = f"{TEST_INSTALLATION}-job-{job.id}-1"

        def asked_for(j: Job) -> None:
            j.set_state(JobState.STARTING)
            j.vm = VmRecord(name=name, created=now())

        Journal(store).update(job.id, asked_for)
        booting = make_vm(cloud, name, tagged(lando, job.id))
        older = make_vm(cloud, f"{TEST_INSTALLATION}-job-{job.id}-0", tagged(lando, job.id))  # an earlier attempt's
        items = sweep(config, cloud, store, grace=0)
        assert [(i.kind, i.id, i.deleted) for i in items] == [("vm", older, True)]
        assert items[0].why == f"job {job.id}'s VM is {name}, not this one"
        assert [v.id for v in cloud.find_vms({})] == [booting]
        assert sweep(config, cloud, store, grace=0) == []
    finally:
        store.close()
    assert os.path.isdir(lando.data_dir)
