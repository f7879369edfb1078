"""The orphan sweep and the VM pool: an idle pool VM its record holds is kept for the next job; a pool VM no
live record owns is deleted (the fake cloud stands for the cloud; the store is the real SQLite one)."""
from __future__ import annotations

from pathlib import Path

from fakes import FakeCloud
from pool_helpers import FLAVORS, LARGE, vm

from lando_ssh.cloud import VmRequest
from lando_ssh.config import Config
from lando_ssh.installation import ours
from lando_ssh.pool.launch import metadata
from lando_ssh.pool.model import PoolState
from lando_ssh.pool.store import open_vm_store
from lando_ssh.store import open_store
from lando_ssh.sweep import sweep


def test_the_sweep_keeps_idle_pool_vms_their_records_hold_and_deletes_those_none_does(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path))
    cloud = FakeCloud(FLAVORS)
    store = open_vm_store(config.store_url)
    jobs = open_store(config.store_url)
    try:
        kept = store.create(vm(0, LARGE))
        given_up = store.create(vm(0, LARGE))
        made = {}
        for record in (kept, given_up):
            info = cloud.create_vm(VmRequest(f"pool-{record.id}", "m1.large", "local", "",
                                             metadata=metadata(ours(config), record)))
            store.update(record.id, lambda v, i=info.id: setattr(v, "cloud_id", i))
            made[record.id] = info.id
        store.update(given_up.id, lambda v: setattr(v, "state", PoolState.DELETED))  # (its delete failed)
        found = sweep(config, cloud, jobs, grace=0)
        assert [(s.id, s.deleted) for s in found if s.kind == "vm"] == [(made[given_up.id], True)]
        assert found[0].why == f"it is a pool VM (record {given_up.id}) that no live pool record owns"
        assert list(cloud.vms) == [made[kept.id]]
    finally:
        store.close()
        jobs.close()
