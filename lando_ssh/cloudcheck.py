"""`lando-ssh cloud-check [--image NAME] [--flavor NAME] [--json]`: the first thing an admin runs on a new cloud.

Finds the flavor (the smallest allowed one unless `--flavor` names one), then what a job's VM needs (the image,
`vm.image` unless `--image` names one; on OpenStack also the network, security groups, floating IP pool and
keypair the settings name, and room in the quota), naming everything missing in one sentence each before
anything is made. Then boots that VM through the engine's own create-VM step (so it checks exactly what a job
will do: user data, console host keys, SSH, cloud-init's work dir), runs `uname -a` and `cwltool --version` on
it, deletes it, and reports how long each phase took (`--json`: the phases and what is missing as one JSON
object, printed also when a phase fails).
"""
from __future__ import annotations

import dataclasses
import json
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
    missing: bool = False  # failed because something the job needs does not exist (the detail names each, a line each)


def smallest_allowed_flavor(flavors: list[Any], allow: str | None) -> Any:
    from lando_ssh.flavors import flavor_allowed

    allowed = [f for f in flavors if flavor_allowed(f.name, allow)]
    if not allowed:
        names = ", ".join(f.name for f in flavors)
        raise CloudNotFound(f"no flavor matches flavors.allow {allow!r}; flavors: {names}")
    return min(allowed, key=lambda f: (f.vcpus, f.ram_mb, f.disk_gb, f.name))


def chosen_flavor(flavors: list[Any], wanted: str | None, allow: str | None) -> Any:
    """The flavor named `wanted` (a name or an id), else the smallest one `flavors.allow` allows."""
    if wanted is None:
        return smallest_allowed_flavor(flavors, allow)
    for f in flavors:
        if wanted in (f.name, f.id):
            return f
    raise CloudNotFound(f"flavor {wanted!r} does not exist; flavors: {', '.join(f.name for f in flavors) or 'none'}")


def missing(cloud: Any, image: str, flavor: Any, volume_size: int) -> list[str]:
    """What a job's VM of this image and flavor lacks in the cloud, one sentence each."""
    preflight = getattr(cloud, "preflight", None)
    if preflight is not None:  # OpenStack: also the network, security groups, pool, keypair and quota
        return list(preflight(image, flavor.name, volume_size))
    images = cloud.images()
    if image not in images:
        return [f"image {image!r} does not exist; images: {', '.join(sorted(images)) or 'none'}"]
    return []


def cloud_check(config: Config, report: Callable[[Phase], None] = lambda p: None, image: str | None = None,
                flavor_name: str | None = None) -> list[Phase]:
    from lando_ssh.cloud import open_cloud
    from lando_ssh.engine import Engine
    from lando_ssh.journal import Journal
    from lando_ssh.model import Job, JobState, VmSpec
    from lando_ssh.store import open_store

    phases: list[Phase] = []

    def phase(name: str, fn: Callable[[], Any], detail: Callable[[Any], str] = lambda r: "") -> Any:
        started = time.monotonic()
        try:
            result = fn()
        except LandoError as e:
            phases.append(Phase(name, time.monotonic() - started, False, str(e), isinstance(e, CloudNotFound)))
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
        flavor = phase("choose the smallest allowed flavor" if flavor_name is None else f"find flavor {flavor_name}",
                       lambda: chosen_flavor(cloud.flavors(), flavor_name, config.flavors.allow),
                       lambda f: f"{f.name} ({f.vcpus} vCPUs, {f.ram_mb} MB RAM)")
        image = image or config.vm.image

        def needs() -> str:
            problems = missing(cloud, image, flavor, config.vm.volume_size)
            if problems:
                raise CloudNotFound("\n".join(problems))
            return image

        phase("find the image, network and quota a job needs", needs, lambda i: f"image {i}")
        store = open_store(check.store_url)
        journal = Journal(store)
        job = store.create(Job(id=0, name="cloud-check", workflow="cloud-check", job_order={},
                               vm_spec=VmSpec(flavor=flavor.name, image=image, volume_size=0)))
        journal.update(job.id, lambda j: j.set_state(JobState.STARTING))
        engine = Engine(check, journal, cloud)
        try:
            phase("boot the VM and wait for SSH", lambda: engine.create_vm(job.id),
                  lambda _: _vm_detail(journal.get(job.id)))
            remote = engine.remote(journal.get(job.id))
            phase("uname -a", lambda: remote.run(["uname", "-a"]).stdout.strip(), lambda out: out)
            base = config.cwl_base_command or cloud.default_cwl_command()
            phase(f"{base[0]} --version", lambda: remote.run([base[0], "--version"]).stdout.strip(), lambda out: out)
        finally:
            engine.close(job.id)
            if journal.get(job.id).vm:
                phase("delete the VM", lambda: engine.terminate_vm(job.id))
            store.close()
            cloud.close()
    return phases


def _vm_detail(job: Any) -> str:
    vm = job.vm
    return f"{vm.name} at {vm.address}:{vm.port}, host key {vm.host_keys[0].split()[0] if vm.host_keys else '?'} pinned"


def cloud_check_command(config: Config, image: str | None, flavor: str | None, as_json: bool) -> int:
    """`lando-ssh cloud-check`: a line per phase (or, with `as_json`, one JSON object); 0 when every phase passed
    (a failure raises, after the JSON is printed)."""
    phases: list[Phase] = []

    def report(p: Phase) -> None:
        phases.append(p)
        if not as_json:
            mark = "ok  " if p.ok else "FAIL"
            detail = p.detail.replace("\n", "\n" + " " * 15) if p.detail else ""
            print(f"{mark} {p.seconds:7.2f}s  {p.name}{': ' + detail if detail else ''}", flush=True)

    try:
        cloud_check(config, report, image, flavor)
    finally:
        if as_json:
            failed = next((p for p in phases if not p.ok), None)
            print(json.dumps({
                "ok": failed is None and bool(phases), "seconds": round(sum(p.seconds for p in phases), 2),
                "phases": [{**dataclasses.asdict(p), "seconds": round(p.seconds, 2)} for p in phases],
                "missing": failed.detail.splitlines() if failed is not None and failed.missing else [],
            }, indent=2), flush=True)
    if not as_json:
        print(f"cloud-check passed in {sum(p.seconds for p in phases):.1f}s")
    return 0
