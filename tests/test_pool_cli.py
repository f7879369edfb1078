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
