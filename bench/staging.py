"""lando-ssh's staging throughput against OpenSSH `scp`, measured in one run to the same VM.

    .venv/bin/python bench/staging.py [--size-mib 512] [--runs 3]

Writes a file of random bytes, submits a job whose input it is, boots a local-cloud VM for the
job (step V), then alternately: copies the file to the VM with `scp` (the job's key, the pinned
known_hosts file) and runs the whole stage step S (the engine's own path: scripts, disk
check, the input stream, the size check). Prints both medians as MiB/s and their ratio.
Goal: lando-ssh >= 0.9x scp. Then the same for pulls: Remote.get_dir (the store step's path)
against scp from the VM.
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "tests" / "workflows" / "upper_count.cwl"
SMALL = REPO / "tests" / "workflows" / "data" / "more.txt"
BIN = Path(sys.executable).parent


def write_random(path: str, size: int) -> None:
    chunk = os.urandom(8 * 1024 * 1024)  # random, so no compression can help either side
    with open(path, "wb") as f:
        for offset in range(0, size, len(chunk)):
            f.write(chunk[: min(len(chunk), size - offset)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="lando-bench-") as tmp:
        for k in [k for k in os.environ if k.startswith("LANDO_")]:
            del os.environ[k]
        os.environ["LANDO_DATA_DIR"] = tmp
        big = os.path.join(tmp, "big.bin")
        write_random(big, size)
        order = os.path.join(tmp, "job.json")
        with open(order, "w") as f:
            json.dump({"text": {"class": "File", "path": big}, "more": {"class": "File", "path": str(SMALL)}}, f)
        job_id = int(subprocess.run([str(BIN / "lando-ssh"), "submit", str(WORKFLOW), order], check=True,
                                    capture_output=True, text=True).stdout.strip())

        from lando_ssh.cli import _journal
        from lando_ssh.cloud import open_cloud
        from lando_ssh.config import load_config
        from lando_ssh.engine import Engine
        from lando_ssh.model import JobState, JobStep

        config = load_config(None)
        journal = _journal(config)
        cloud = open_cloud(config)
        engine = Engine(config, journal, cloud)
        journal.update(job_id, lambda j: j.set_state(JobState.STARTING, JobStep.NONE))
        try:
            engine.enter(job_id, JobStep.CREATE_VM, None)  # as the engine's walk begins the step
            engine.create_vm(job_id)
            job = journal.get(job_id)
            assert job.vm is not None
            remote = engine.remote(job)
            paths = engine.paths(job)
            keys = engine.keys(job)
            scp_dest = posixpath.join(paths.job_dir, "scp-copy.bin")
            scp = ["scp", "-q", "-i", keys.private_path, "-P", str(job.vm.port),
                   "-o", f"UserKnownHostsFile={keys.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
                   "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   big, f"{job.vm.user}@{job.vm.address}:{scp_dest}"]
            ours, theirs, pulls, scp_pulls = [], [], [], []
            for _ in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
                remote.run(["sh", "-c", 'rm -rf "$1" "$2" && mkdir -p "$3"', "sh", scp_dest, paths.inputs,
                            paths.job_dir])
                started = time.perf_counter()
                subprocess.run(scp, check=True)
                theirs.append(time.perf_counter() - started)
                remote.run(["rm", "-rf", scp_dest, paths.inputs])
                started = time.perf_counter()
                engine.stage_inputs(job_id)
                ours.append(time.perf_counter() - started)
                staged = (journal.get(job_id).run.bytes_staged or 0)
                if staged < size:
                    raise SystemExit(f"the stage step moved {staged} bytes, expected at least {size}")
            # pulls: the store step's Remote.get_dir (a tar stream through ssh, unpacked with tarfile's
            # data filter) against scp from the VM, of the file just staged
            found = remote.run(["find", paths.inputs, "-type", "f", "-name", "big.bin"]).stdout.splitlines()
            staged_dir = posixpath.dirname(found[0])
            back = os.path.join(tmp, "back")
            scp_back = [*scp[:-2], f"{job.vm.user}@{job.vm.address}:{posixpath.join(staged_dir, 'big.bin')}",
                        os.path.join(back, "big.bin")]
            for _ in range(args.runs):
                shutil.rmtree(back, ignore_errors=True)
                os.makedirs(back)
                started = time.perf_counter()
                subprocess.run(scp_back, check=True)
                scp_pulls.append(time.perf_counter() - started)
                shutil.rmtree(back)
                started = time.perf_counter()
                remote.get_dir(staged_dir, back, total_hint=size)
                pulls.append(time.perf_counter() - started)
                if os.path.getsize(os.path.join(back, "big.bin")) != size:
                    raise SystemExit("get_dir did not bring the whole file back")
        finally:
            engine.terminate_vm(job_id)
            engine.close(job_id)
    mib = size / (1024 * 1024)
    s, o = statistics.median(theirs), statistics.median(ours)
    print(f"scp:                 median {s:.2f}s = {mib / s:.0f} MiB/s over {args.runs} runs "
          f"({', '.join(f'{t:.2f}' for t in theirs)})")
    print(f"lando-ssh stage (S): median {o:.2f}s = {mib / o:.0f} MiB/s over {args.runs} runs "
          f"({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"lando-ssh / scp throughput: {s / o:.2f}x  (goal: >= 0.9x)")
    s, o = statistics.median(scp_pulls), statistics.median(pulls)
    print(f"pull, scp from the VM: median {s:.2f}s = {mib / s:.0f} MiB/s "
          f"({', '.join(f'{t:.2f}' for t in scp_pulls)})")
    print(f"pull, Remote.get_dir:  median {o:.2f}s = {mib / o:.0f} MiB/s "
          f"({', '.join(f'{t:.2f}' for t in pulls)})")
    print(f"get_dir / scp throughput: {s / o:.2f}x  load average: {os.getloadavg()[0]:.2f}")



if __name__ == "__main__":
    main()
