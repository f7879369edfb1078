"""`lando-ssh cloud-check`: the first thing an admin runs on a new cloud.

Boots the smallest allowed flavor with the configured image through the pipeline's own
create-VM step (so it checks exactly what a job will do: user data, console host keys, SSH,
cloud-init's work dir), runs `uname -a` and `cwltool --version` on it, deletes it, and reports
how long each phase took.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lando_ssh.config import Config, StoreConfig
from lando_ssh.errors import CloudNotFound, LandoError


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


def smallest_allowed_flavor(flavors: list[Any], allow: str | None) -> Any:
    from lando_ssh.flavors import flavor_allowed

    allowed = [f for f in flavors if flavor_allowed(f.name, allow)]
    if not allowed:
        names = ", ".join(f.name for f in flavors)
        raise CloudNotFound(f"no flavor matches flavors.allow {allow!r}; flavors: {names}")
    return min(allowed, key=lambda f: (f.vcpus, f.ram_mb, f.disk_gb, f.name))


def cloud_check(config: Config, report: Callable[[Phase], None] = lambda p: None) -> list[Phase]:
    from lando_ssh.cloud import open_cloud
    from lando_ssh.journal import Journal
    from lando_ssh.model import Job, JobState, VmSpec
    from lando_ssh.pipeline import Pipeline
    from lando_ssh.store import open_store

    phases: list[Phase] = []

    def phase(name: str, fn: Callable[[], Any], detail: Callable[[Any], str] = lambda r: "") -> Any:
        started = time.monotonic()
        try:
            result = fn()
        except LandoError as e:
            phases.append(Phase(name, time.monotonic() - started, False, str(e)))
            report(phases[-1])
            raise
        phases.append(Phase(name, time.monotonic() - started, True, detail(result)))
        report(phases[-1])
        return result

    with tempfile.TemporaryDirectory(prefix="lando-cloud-check-") as tmp:
        # a throwaway job store and keys; the VM itself is as real as any job's
        check = dataclasses.replace(config, data_dir=tmp, store=StoreConfig(url=f"sqlite:///{tmp}/check.sqlite"))
        # its own installation id: the throwaway "job 1" must never be mistaken for the real job 1
        check.cloud = dataclasses.replace(config.cloud, installation_id=f"{config.cloud.installation_id}-check",
                                          local=dataclasses.replace(config.cloud.local, root=config.local_cloud_root))
        cloud = phase("connect to the cloud", lambda: open_cloud(check), lambda c: c.name)
        flavor = phase("choose the smallest allowed flavor",
                       lambda: smallest_allowed_flavor(cloud.flavors(), config.flavors.allow),
                       lambda f: f"{f.name} ({f.vcpus} vCPUs, {f.ram_mb} MB RAM)")
        store = open_store(check.store_url)
        journal = Journal(store)
        job = store.create(Job(id=0, name="cloud-check", workflow="cloud-check", job_order={},
                               vm_spec=VmSpec(flavor=flavor.name, image=config.vm.image, volume_size=0)))
        journal.update(job.id, lambda j: j.set_state(JobState.STARTING))
        pipeline = Pipeline(check, journal, cloud)
        try:
            phase("boot the VM and wait for SSH", lambda: pipeline.create_vm(job.id),
                  lambda _: _vm_detail(journal.get(job.id)))
            remote = pipeline.remote(journal.get(job.id))
            phase("uname -a", lambda: remote.run(["uname", "-a"]).stdout.strip(), lambda out: out)
            base = config.cwl_base_command or cloud.default_cwl_command()
            phase(f"{base[0]} --version", lambda: remote.run([base[0], "--version"]).stdout.strip(), lambda out: out)
        finally:
            pipeline.close(job.id)
            if journal.get(job.id).vm:
                phase("delete the VM", lambda: pipeline.terminate_vm(job.id))
            store.close()
            cloud.close()
    return phases


def _vm_detail(job: Any) -> str:
    vm = job.vm
    return f"{vm.name} at {vm.address}:{vm.port}, host key {vm.host_keys[0].split()[0] if vm.host_keys else '?'} pinned"
