"""Object storage throughput: a large input staged from Swift to a VM by lando-ssh, and a large output
stored from the VM to Swift, against the `swift` command-line client moving the same bytes on the same
machine, in one run (interleaved, so the machine's load hits both alike).

    .venv/bin/python bench/objects.py [--size-mib 1024] [--runs 3]

Needs the real Swift of ../shared/swift (started with its setup.sh when its proxy does not answer, and
stopped again at the end). Writes a file of random bytes; the CLI uploads it as a static large object
(`swift upload --use-slo --segment-size 64M`, a facility's usual large object). Then per run:
- down: `swift download` of that object into the VM's disk, against the whole stage step S of a job whose
  input is `swift://` that object (grants, the VM's lando-objects, its size and ETag checks);
- up: `swift upload --use-slo --segment-size 64M` of the file, against the store step's upload from the VM
  (grants, lando-objects' segments in parallel, the SLO manifest).
Prints medians in MiB/s and their ratios (goal: lando-ssh >= 0.9x the client both ways), and the CPU this
server's process spent during lando-ssh's transfers (the bytes go between the VM and Swift, not here).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _common import write_config

REPO = Path(__file__).resolve().parent.parent
SWIFT_DIR = REPO.parent / "shared" / "swift"
WORKFLOW = REPO / "tests" / "workflows" / "upper_count.cwl"
SMALL = REPO / "tests" / "workflows" / "data" / "more.txt"
PROXY = "http://127.0.0.1:18080"
AUTH = {"auth_url": f"{PROXY}/auth/v1.0", "username": "test:tester", "password": "testing"}
MiB = 1024 * 1024


def answers() -> bool:
    try:
        with urllib.request.urlopen(f"{PROXY}/healthcheck", timeout=2) as r:  # noqa: S310 (our own URL)
            return bool(r.status == 200)
    except OSError:
        return False


def swift_cli(*args: str) -> None:
    cli = shutil.which("swift", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}") or "swift"
    subprocess.run([cli, "-A", AUTH["auth_url"], "-U", AUTH["username"], "-K", AUTH["password"], *args],
                   check=True, capture_output=True)


def write_random(path: str, size: int) -> None:
    chunk = os.urandom(8 * MiB)  # random, so no compression can help either side
    with open(path, "wb") as f:
        for offset in range(0, size, len(chunk)):
            f.write(chunk[: min(len(chunk), size - offset)])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def line(what: str, times: list[float], mib: float) -> str:
    m = statistics.median(times)
    return f"{what:<28} median {m:6.2f}s = {mib / m:5.0f} MiB/s ({', '.join(f'{t:.2f}' for t in times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    started_swift = False
    if not answers():
        subprocess.run(["bash", str(SWIFT_DIR / "setup.sh")], check=True, capture_output=True)
        started_swift = True
    container = f"lando-bench-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="lando-bench-") as tmp:
            run(Path(tmp), container, size, args.runs)
    finally:
        remove_container(container)
        if started_swift:
            subprocess.run(["bash", str(SWIFT_DIR / "stop.sh")], capture_output=True)


def remove_container(container: str) -> None:
    import swiftclient

    conn = swiftclient.Connection(authurl=AUTH["auth_url"], user=AUTH["username"], key=AUTH["password"])
    for name in (container, f"{container}_segments"):
        try:
            _h, objects = conn.get_container(name, full_listing=True)
        except swiftclient.ClientException:
            continue
        for o in objects:
            conn.delete_object(name, o["name"])
        conn.delete_container(name)


def run(tmp: Path, container: str, size: int, runs: int) -> None:
    for k in [k for k in os.environ if k.startswith("LANDO_")]:
        del os.environ[k]
    config_path = write_config(tmp, object_store={"swift": AUTH})
    big = str(tmp / "big.bin")
    write_random(big, size)
    os.chdir(tmp)
    swift_cli("upload", "--use-slo", "--segment-size", "64M", "--object-name", "input/big.bin", container, big)
    order = tmp / "job.json"
    order.write_text(json.dumps({"text": {"class": "File", "location": f"swift://{container}/input/big.bin"},
                                 "more": {"class": "File", "path": str(SMALL)}}))
    job_id = int(subprocess.run([str(Path(sys.executable).parent / "lando-ssh"), "--config", str(config_path),
                                 "submit", str(WORKFLOW), str(order)], check=True, capture_output=True,
                                text=True).stdout.strip())

    from lando_ssh.cli import _journal
    from lando_ssh.cloud import open_cloud
    from lando_ssh.config import load_config
    from lando_ssh.model import JobState, JobStep
    from lando_ssh.objectstore import transfer
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.transfer import _upload
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.pipeline import Pipeline

    vm_side: list[float] = []  # lando-objects' own run within the stage step: the rest is the step's overhead
    run_objects = transfer._run

    def timed(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return run_objects(*a, **kw)
        finally:
            if a[-1] == "downloading objects":
                vm_side.append(time.perf_counter() - started)

    transfer._run = timed  # type: ignore[assignment]
    config = load_config(str(config_path), env={})
    journal = _journal(config)
    cloud = open_cloud(config)
    pipeline = Pipeline(config, journal, cloud)
    journal.update(job_id, lambda j: j.set_state(JobState.STARTING, JobStep.NONE))
    downs: list[float] = []
    ours_down: list[float] = []
    ups: list[float] = []
    ours_up: list[float] = []
    cpu: list[float] = []
    try:
        pipeline._enter(job_id, JobStep.CREATE_VM, None)
        pipeline.create_vm(job_id)
        job = journal.get(job_id)
        remote, paths = pipeline.remote(job), pipeline.paths(job)
        vm_copy = os.path.join(paths.job_dir, "cli-copy.bin")  # the local cloud's VM disk is this machine's
        base = parse(f"swift://{container}/output/")
        store: Any = store_for(config, base)
        for _ in range(runs):
            remote.run(["sh", "-c", 'rm -rf "$1" "$2" && mkdir -p "$3"', "sh", vm_copy, paths.inputs, paths.job_dir])
            started = time.perf_counter()
            swift_cli("download", container, "input/big.bin", "-o", vm_copy)
            downs.append(time.perf_counter() - started)
            remote.run(["rm", "-rf", vm_copy, paths.inputs])
            before, started = cpu_seconds(), time.perf_counter()
            pipeline.stage_inputs(job_id)
            ours_down.append(time.perf_counter() - started)
            cpu.append(cpu_seconds() - before)
            if journal.get(job_id).facts.get("bytes_staged", 0) < size:
                raise SystemExit("the stage step did not move the whole input")
            staged = remote.run(["find", paths.inputs, "-type", "f", "-name", "big.bin"]).stdout.split()[0]

            started = time.perf_counter()
            swift_cli("upload", "--use-slo", "--segment-size", "64M", "--object-name", "cli-up/big.bin", container,
                      staged)
            ups.append(time.perf_counter() - started)
            before, started = cpu_seconds(), time.perf_counter()
            sent = _upload(pipeline, job_id, remote, paths.bin, store, base, os.path.dirname(staged),
                           {"big.bin": size}, "storing")
            ours_up.append(time.perf_counter() - started)
            cpu.append(cpu_seconds() - before)
            if sent != size or store.stat(base.child("big.bin")).size != size:
                raise SystemExit("the upload did not store the whole output")
    finally:
        pipeline.terminate_vm(job_id)
        pipeline.close(job_id)
    mib = size / MiB
    print(f"{mib:.0f} MiB, {runs} runs, Swift of ../shared/swift on this machine, a local-cloud VM")
    print(line("down: swift download", downs, mib))
    print(line("down: lando-ssh stage (S)", ours_down, mib))
    print(line("down: of which lando-objects", vm_side, mib))
    print(f"down: lando-ssh / swift CLI throughput: {statistics.median(downs) / statistics.median(ours_down):.2f}x"
          "  (goal: >= 0.9x)")
    print(line("up:   swift upload (SLO)", ups, mib))
    print(line("up:   lando-ssh store (O)", ours_up, mib))
    print(f"up:   lando-ssh / swift CLI throughput: {statistics.median(ups) / statistics.median(ours_up):.2f}x"
          "  (goal: >= 0.9x)")
    print(f"this server's CPU during lando-ssh's transfers: median {statistics.median(cpu):.2f}s per transfer; "
          f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
