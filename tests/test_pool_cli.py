"""`lando-ssh vms` shows each pool VM's state, jobs, free room and jobs served; `lando-ssh drain VM` stops new
jobs going there. Through the command line, in process, on a SQLite store and the local cloud (no VM runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lando_ssh.cli import main
from lando_ssh.pool.model import PoolState, PoolVm, Resources
from lando_ssh.pool.store import open_vm_store


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "lando.yml"
    path.write_text(f"data_dir: {tmp_path}/data\ncloud:\n  installation_id: pool-cli-test\n")
    return str(path)


def records(config: str) -> tuple[PoolVm, PoolVm]:
    store = open_vm_store(f"sqlite:///{Path(config).parent}/data/jobs.sqlite")
    try:
        def make(vcpus: int, ram: int) -> PoolVm:
            return PoolVm(id=0, name="", flavor="m1.large", size=Resources(vcpus, ram, 0), image="local",
                          project=None, owner="ann", share_key="owner:ann", installation="pool-cli-test")

        idle = store.create(make(2, 4096))
        store.update(idle.id, lambda v: v.mark_ready())
        busy = store.create(make(4, 8192))
        store.update(busy.id, lambda v: (v.reserve(3, Resources(1, 1024)), v.reserve(4, Resources(2, 2048)),
                                         v.mark_ready()))
        return store.get(idle.id), store.get(busy.id)
    finally:
        store.close()


def test_vms_lists_the_pools_vms_with_their_state_jobs_and_free_room(config: str,
                                                                      capsys: pytest.CaptureFixture) -> None:
    idle, busy = records(config)
    assert main(["--config", config, "vms", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[idle.name]["pool_state"] == "idle" and rows[idle.name]["idle_since"] is not None
    assert rows[idle.name]["jobs"] == [] and rows[idle.name]["free_vcpus"] == 2
    b = rows[busy.name]
    assert (b["pool_state"], b["jobs"], b["free_vcpus"], b["free_ram_mb"], b["jobs_served"], b["activity"]) == \
        ("busy", [3, 4], 1, 5120, 2, "busy:3,4")
    assert main(["--config", config, "vms"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-3:] == ["FREE", "IDLE", "SERVED"]
    line = next(t for t in table if t.startswith(busy.name))
    assert line.split()[-3:] == ["1c/5120M", "-", "2"]


def test_drain_stops_new_jobs_on_a_vm_and_says_when_it_goes(config: str, capsys: pytest.CaptureFixture) -> None:
    idle, busy = records(config)
    assert main(["--config", config, "drain", busy.name]) == 0
    assert capsys.readouterr().err.strip() == (f"lando-ssh: VM {busy.name} is draining: no new job goes there, and the "
                                               "pool deletes it once its jobs 3, 4 are done")
    store = open_vm_store(f"sqlite:///{Path(config).parent}/data/jobs.sqlite")
    try:
        assert store.get(busy.id).state == PoolState.DRAINING and store.get(idle.id).state == PoolState.IDLE
    finally:
        store.close()
    assert main(["--config", config, "drain", str(idle.id)]) == 0
    assert "now: it holds no job" in capsys.readouterr().err
    assert main(["--config", config, "drain", "nosuch"]) == 2
    assert capsys.readouterr().err.strip() == "lando-ssh: there is no pool VM nosuch"


def test_usage_pool_splits_pool_vm_hours_into_jobs_shares_and_idle_time(config: str,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from datetime import timedelta

    from lando_ssh.model import Job, now
    from lando_ssh.store import open_store

    url = f"sqlite:///{Path(config).parent}/data/jobs.sqlite"
    jobs, store = open_store(url), open_vm_store(url)
    try:
        ann = jobs.create(Job(id=0, name="a", workflow="w", job_order={}, user="ann")).id
        bob = jobs.create(Job(id=0, name="b", workflow="w", job_order={}, user="bob")).id
        t0 = now() - timedelta(hours=10)
        vm = PoolVm(id=0, name="", flavor="m1.large", size=Resources(4, 8192, 0), image="local", project=None,
                    owner="ann", share_key="any", installation="pool-cli-test", created=t0)
        vm.reserve(ann, Resources(1, 1024), t0 + timedelta(hours=1))
        vm.reserve(bob, Resources(3, 1024), t0 + timedelta(hours=1))
        vm.release(ann, t0 + timedelta(hours=3))
        vm.release(bob, t0 + timedelta(hours=3))
        vm.deleted, vm.state = t0 + timedelta(hours=4), PoolState.DELETED
        store.create(vm)
    finally:
        jobs.close()
        store.close()
    assert main(["--config", config, "usage", "--pool", "--json"]) == 0
    rows = {r["group"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["ann"]["jobs"], rows["ann"]["job_vm_hours"], rows["ann"]["idle_vm_hours"]) == (1, 0.5, 2.0)
    assert (rows["bob"]["jobs"], rows["bob"]["job_vm_hours"], rows["bob"]["job_core_hours"]) == (1, 1.5, 6.0)
    assert main(["--config", config, "usage", "--pool"]) == 0
    total = capsys.readouterr().out.splitlines()[-1].split()
    assert total[0] == "TOTAL" and float(total[2]) + float(total[4]) == 4.0  # the VM's 4 billed hours
    assert main(["--config", config, "usage", "--pool", "--by", "flavor"]) == 2
    assert capsys.readouterr().err.strip() == "lando-ssh: usage --pool sums by user or project, not flavor"
