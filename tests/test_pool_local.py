"""The pool on the local cloud (each VM a real sshd on loopback): a VM booted with its own keypair and
cloud-init answers the pool's probe over SSH with pinned host keys, serves a job, and is deleted with its
processes once its keep-alive is over."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from lando_ssh.cloud import open_cloud
from lando_ssh.config import CloudConfig, Config, VmConfig
from lando_ssh.pool.launch import SshRemotes
from lando_ssh.pool.manager import PoolManager
from lando_ssh.pool.model import PoolState
from lando_ssh.pool.placement import PoolJob
from lando_ssh.pool.store import open_vm_store
from lando_ssh.scheduler import WaitingJob


def test_a_local_pool_vm_boots_with_its_own_key_serves_a_job_and_goes_after_its_keepalive(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path), cloud=CloudConfig(installation_id=f"pool-{uuid.uuid4().hex[:6]}"),
                    vm=VmConfig(keepalive=0, boot_timeout=60))
    cloud = open_cloud(config)
    store = open_vm_store(config.store_url)
    try:
        m = PoolManager.from_config(config, store, cloud)
        job = PoolJob(WaitingJob(id=1, created=time.time()), image="local", project=None, owner="ann")
        vm_id = m.round([job]).placed[1]
        deadline = time.monotonic() + 60
        while store.get(vm_id).state == PoolState.BOOTING:  # the local VM boots in the background
            assert time.monotonic() < deadline, store.get(vm_id)
            assert m.round([]).lost == {}
            time.sleep(0.05)
        vm = store.get(vm_id)
        assert vm.state == PoolState.BUSY and vm.job_ids == [1] and vm.host_keys and vm.address
        assert vm.key_path and os.stat(vm.key_path).st_mode & 0o777 == 0o600
        remote = SshRemotes().remote_for(vm)  # its own key, its pinned host keys
        try:
            assert remote.run(["echo", "ok"]).stdout == "ok\n"
        finally:
            remote.close()
        m.job_done(1)
        assert m.round([]).deleted == [vm_id]
        assert cloud.find_vms(m.settings.tags) == []  # and its sshd with it
        assert store.get(vm_id).state == PoolState.DELETED
        assert not os.path.exists(vm.key_path) and not os.path.exists(vm.key_path + ".pub")  # its key went with it
    finally:
        for v in store.list():
            if v.cloud_id and v.state != PoolState.DELETED:
                cloud.delete_vm(v.cloud_id)
        store.close()
        cloud.close()
