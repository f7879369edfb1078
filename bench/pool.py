"""The VM pool against one VM per job (issue 19; a benchmark, not a timed test).

    .venv/bin/python bench/pool.py [--jobs 100] [--boot-delay 20] [--work-seconds 2] [--max-vms 8]
                                   [--base-command light|cwltool] [--send-every 0] [--keepalive 3600]
                                   [--share owner|project|any] [--only job|pool]

A quick run (about a minute): --jobs 20 --boot-delay 5. `--send-every S` sends the start_jobs S seconds apart
(a script submitting one job after another) instead of in one burst.

In one run, twice on the local cloud with `cloud.local.boot_delay` seconds before a VM answers SSH (a realistic
boot), `limits.max_vms`, and flavors of 1 and 4 vCPUs allowed (`flavors.allow`: m1.small, m1.large): N jobs of
a workflow that runs WORK seconds, sent with start_job to a `lando-ssh run` of their own (private data dir,
queue and installation id). First `pool.share: job` (one VM per job, deleted at its end: lando's behaviour),
then the pool on (`pool.share: owner`, `pool.pack: true`, a `vm.keepalive` that outlasts the run).

Printed for each, from the job store and the pool's VM records of that run:
- makespan: from start_job to the last job's end;
- VM boots (the cloud's own count, its created.log) and VM-hours / vCPU-hours billed until the last job
  ended (the pool's warm VMs after that are the keep-alive's, not the run's);
- the ideal: one boot + total work / slots, where the boot is the run's median measured boot (from a VM
  asked for to its first job on it), the work of a job the time it held its place on a VM (from its VM
  answering to its end: staging, the run, storing, leaving the VM), and the slots max_vms x 4 vCPUs.
Goals: the pool within 1.3x of its ideal, and one VM per job at least 4x slower than the pool.

`--base-command light` (the default) runs a shell that sleeps WORK seconds then prints `{}` instead of
cwltool: on a 2-core machine 32 cwltool runs at once (~1 CPU-s each) would measure cwltool, not boots.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORKFLOWS, delete_queues, store_jobs, write_config  # noqa: E402

ALLOW = r"^m1\.(small|large)$"  # the local cloud's flavors of 1 and 4 vCPUs
LARGEST_VCPUS = 4
LIGHT = ["sh", "-c", 'sleep "$0"; echo "{}"']  # + the seconds: a workflow run that costs nothing but time


@dataclass
class Phase:
    """What one run measured."""

    share: str
    label: str
    makespan: float = 0.0
    boots: int = 0
    vm_hours: float = 0.0
    vcpu_hours: float = 0.0
    idle_hours: float | None = None  # the pool's accounting (lando_ssh/pool/accounting.py): VM-hours no job used
    accounted_hours: float | None = None  # its jobs' and idle VM-hours together (should be vm_hours)
    boot_seconds: list[float] = field(default_factory=list)  # each VM: asked for -> its first job on it
    work_seconds: list[float] = field(default_factory=list)  # each job: its VM answering -> its end
    run_seconds: list[float] = field(default_factory=list)  # each job: its run step (the workflow)
    flavors: dict[str, int] = field(default_factory=dict)  # the pool's VMs by flavor
    step_seconds: dict[str, list[float]] = field(default_factory=dict)  # step code -> each job's time in it
    states: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # what the jobs that did not finish said
    notes: list[str] = field(default_factory=list)

    def ideal(self, slots: int) -> float:
        if not self.boot_seconds or not self.work_seconds:
            return float("nan")
        return statistics.median(self.boot_seconds) + sum(self.work_seconds) / slots


def ended_at(job: Any) -> datetime | None:
    from lando_ssh.model import FINAL_STATES

    ends = [h.at for h in job.history if h.state in FINAL_STATES]
    return ends[-1] if ends else None


def arrived_at(job: Any) -> datetime | None:
    """When the job's VM answered and the job could use it: the end of its step V."""
    timing = job.timings.get("V")
    return timing.finished if timing is not None else None


def vm_seconds(created: datetime | None, deleted: datetime | None, until: datetime) -> float:
    if created is None:
        return 0.0
    return max(0.0, (min(deleted or until, until) - created).total_seconds())


def measure_jobs(jobs: list[Any], phase: Phase, until: datetime, flavors: dict[str, int]) -> None:
    for job in jobs:
        end, arrived = ended_at(job), arrived_at(job)
        if end is not None and arrived is not None and job.state == "F":
            phase.work_seconds.append((end - arrived).total_seconds())
        run = job.timings.get("R")
        if run is not None and run.seconds is not None:
            phase.run_seconds.append(run.seconds)
        for code, timing in job.timings.items():
            if timing.seconds is not None:
                phase.step_seconds.setdefault(code, []).append(timing.seconds)
        if phase.share != "job":
            continue
        for vm in [*job.past_vms, *([job.vm] if job.vm else [])]:  # a job's own VMs
            seconds = vm_seconds(vm.created, vm.deleted, until)
            phase.vm_hours += seconds / 3600
            phase.vcpu_hours += seconds * flavors.get(vm.flavor or "", 1) / 3600
            if vm.created is not None and vm.ready is not None:
                phase.boot_seconds.append((vm.ready - vm.created).total_seconds())


def measure_pool(vms: list[Any], jobs: dict[int, Any], phase: Phase, until: datetime) -> None:
    from lando_ssh.pool.accounting import pool_uses

    uses = pool_uses(vms, at=until, until=until)
    for vm in vms:
        phase.flavors[vm.flavor] = phase.flavors.get(vm.flavor, 0) + 1
    phase.idle_hours = sum(u.vm_hours for u in uses if u.job_id is None)
    phase.accounted_hours = sum(u.vm_hours for u in uses)
    for vm in vms:
        seconds = vm_seconds(vm.created, vm.deleted, until)
        phase.vm_hours += seconds / 3600
        phase.vcpu_hours += seconds * vm.size.vcpus / 3600
        first = [a for t in [*vm.past, *vm.jobs] if t.job_id in jobs and (a := arrived_at(jobs[t.job_id]))]
        if first:
            phase.boot_seconds.append((min(first) - vm.created).total_seconds())


def count_created(cloud_root: Path) -> int:
    log = cloud_root / "created.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def run_phase(share: str, args: argparse.Namespace) -> Phase:
    from lando_ssh.broker import Broker
    from lando_ssh.config import load_config
    from lando_ssh.messages import Command
    from lando_ssh.model import FINAL_STATES
    from lando_ssh.pool.store import open_vm_store
    from lando_ssh.store import open_store

    label = "one VM per job (pool.share: job)" if share == "job" else \
        f"the pool (pool.share: {share}, pool.pack: true, vm.keepalive: {args.keepalive:g})"
    phase = Phase(share, label)
    settings: dict[str, Any] = {
        "cloud": {"local": {"boot_delay": args.boot_delay}},
        "limits": {"max_vms": args.max_vms, "max_concurrent_jobs": args.jobs},
        "flavors": {"allow": ALLOW},
        "pool": {"share": share, "pack": True},
        "vm": {"keepalive": args.keepalive},  # (by default it outlasts the run: VMs stay warm between its jobs)
    }
    if args.base_command == "light":
        settings["cwl_base_command"] = [*LIGHT, str(args.work_seconds)]
    with tempfile.TemporaryDirectory(prefix="lando-bench-pool-") as tmp:
        root = Path(tmp)
        path = write_config(root, **settings)
        config = load_config(str(path), env={})
        ids = store_jobs(config, WORKFLOWS / "sleep.cwl", {"seconds": args.work_seconds}, args.jobs)
        lando = [sys.executable, "-m", "lando_ssh", "--config", str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        log_path = root / "daemon.log"
        daemon = subprocess.Popen([*lando, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
        store = open_store(config.store_url)
        vm_store = open_vm_store(store)
        flavors = {f"m1.{n}": v for n, v in (("small", 1), ("medium", 2), ("large", 4))}
        cloud_root = Path(config.cloud.local.root or os.path.join(config.data_dir, "local-cloud"))
        try:
            time.sleep(2)  # (the daemon declares its queue; a message sent before waits there anyway)
            with Broker(config.work_queue) as broker:
                started = datetime.now().astimezone()
                for i, job_id in enumerate(ids):
                    if i and args.send_every:
                        time.sleep(args.send_every)
                    broker.send(Command.START_JOB, job_id)
            deadline = time.monotonic() + args.timeout
            while True:
                jobs = store.list()
                done = sum(1 for j in jobs if j.state in FINAL_STATES)
                if done == len(ids):
                    break
                if time.monotonic() > deadline or daemon.poll() is not None:
                    phase.notes.append(f"stopped waiting: {done} of {len(ids)} jobs ended"
                                       + (" (the daemon exited)" if daemon.poll() is not None else ""))
                    break
                time.sleep(0.5)
            jobs = store.list()
            ends = [e for j in jobs if (e := ended_at(j)) is not None]
            until = max(ends) if ends else datetime.now().astimezone()
            phase.makespan = (until - started).total_seconds()
            phase.boots = count_created(cloud_root)
            measure_jobs(jobs, phase, until, flavors)
            if share != "job":
                measure_pool(vm_store.list(), {j.id: j for j in jobs}, phase, until)
            for j in jobs:
                phase.states[j.state.value] = phase.states.get(j.state.value, 0) + 1
                if j.state != "F":
                    phase.reasons[j.reason[:200]] = phase.reasons.get(j.reason[:200], 0) + 1
            if share != "job":
                drain_all(lando, env, vm_store, phase)
        finally:
            vm_store.close()
            store.close()
            daemon.terminate()
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            delete_queues(config)
            subprocess.run([*lando, "sweep", "--grace", "0"], env=env, capture_output=True)
            left = leftover_vms(config)
            if left:
                phase.notes.append(f"{len(left)} VM(s) left after the sweep, deleted now: {', '.join(left)}")
            lines = log_path.read_text(errors="replace").splitlines()
            for level in ("ERROR", "WARNING"):
                said = [line for line in lines if f" {level} " in line or (level == "ERROR" and "Traceback" in line)]
                if said:
                    phase.notes.append(f"{len(said)} {level} line(s) in the daemon's log, the first: {said[0][:300]}")
    return phase


def drain_all(lando: list[str], env: dict[str, str], vm_store: Any, phase: Phase) -> None:
    """The warm VMs are drained (`lando-ssh drain`) and the daemon deletes them: what an admin does."""
    from lando_ssh.pool.model import LIVE

    for vm in vm_store.list(LIVE):
        subprocess.run([*lando, "drain", vm.name], env=env, capture_output=True, check=True)
    deadline = time.monotonic() + 120
    while vm_store.list(LIVE) and time.monotonic() < deadline:
        time.sleep(0.5)
    live = vm_store.list(LIVE)
    if live:
        phase.notes.append(f"{len(live)} drained VM(s) not deleted within 120 s: {[v.name for v in live]}")


def leftover_vms(config: Any) -> list[str]:
    """VMs of this installation the cloud still has (there should be none): deleted, and named."""
    from lando_ssh.cloud import open_cloud
    from lando_ssh.installation import ours

    cloud = open_cloud(config)
    try:
        left = [vm for vm in cloud.find_vms(ours(config)) if vm.status != "DELETED"]
        for vm in left:
            cloud.delete_vm(vm.id)
        return [vm.name for vm in left]
    finally:
        cloud.close()


def report(phase: Phase, slots: int) -> None:
    ideal = phase.ideal(slots)
    boot = statistics.median(phase.boot_seconds) if phase.boot_seconds else float("nan")
    work = statistics.mean(phase.work_seconds) if phase.work_seconds else float("nan")
    run = statistics.mean(phase.run_seconds) if phase.run_seconds else float("nan")
    print(f"{phase.label}:")
    print(f"  makespan {phase.makespan:7.1f} s   VM boots {phase.boots:4d}   VM-hours {phase.vm_hours:6.3f}   "
          f"vCPU-hours {phase.vcpu_hours:6.3f}" + (f"   VMs by flavor {phase.flavors}" if phase.flavors else ""))
    print(f"  measured: boot {boot:.1f} s (median of {len(phase.boot_seconds)}), a job's work {work:.2f} s "
          f"(mean; its run step {run:.2f} s)")
    print(f"  ideal {ideal:7.1f} s = {boot:.1f} + {len(phase.work_seconds)} x {work:.2f} / {slots} slots; "
          f"makespan / ideal {phase.makespan / ideal:.2f}x")
    steps = ", ".join(f"{code} {statistics.mean(phase.step_seconds[code]):.2f}" for code in "VSRoOT"
                      if phase.step_seconds.get(code))
    print(f"  mean seconds per step: {steps}")
    if phase.idle_hours is not None and phase.accounted_hours is not None:
        print(f"  the pool's accounting: {phase.accounted_hours - phase.idle_hours:.3f} VM-hours on jobs + "
              f"{phase.idle_hours:.3f} idle = {phase.accounted_hours:.3f} (the VMs' own: {phase.vm_hours:.3f})")
    print(f"  final states: {phase.states}")
    for reason, n in phase.reasons.items():
        print(f"    {n} x {reason}")
    for note in phase.notes:
        print(f"  NOTE: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--boot-delay", type=float, default=20.0, help="seconds before a VM answers SSH")
    parser.add_argument("--work-seconds", type=int, default=2, help="seconds each job's workflow runs")
    parser.add_argument("--max-vms", type=int, default=8, help="limits.max_vms")
    parser.add_argument("--base-command", choices=("cwltool", "light"), default="light")
    parser.add_argument("--share", choices=("owner", "project", "any"), default="owner",
                        help="pool.share of the pool's run")
    parser.add_argument("--send-every", type=float, default=0.0,
                        help="seconds between two start_job messages (0: all at once, a burst)")
    parser.add_argument("--keepalive", type=float, default=3600.0, help="vm.keepalive of the pool's run")
    parser.add_argument("--only", choices=("job", "pool"), help="run one of the two (their ratio is not printed)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each run may take")
    args = parser.parse_args()
    slots = args.max_vms * LARGEST_VCPUS
    command = " ".join([*LIGHT[:2], repr(LIGHT[2]), str(args.work_seconds)]) if args.base_command == "light" \
        else "cwltool (the local cloud's default)"
    print(f"{args.jobs} jobs of tests/workflows/sleep.cwl ({args.work_seconds} s), base command: {command}")
    print(f"local cloud: boot_delay {args.boot_delay:g} s, limits.max_vms {args.max_vms}, flavors.allow {ALLOW} "
          f"(1 and {LARGEST_VCPUS} vCPUs): {slots} slots", flush=True)
    one_each = run_phase("job", args) if args.only != "pool" else None
    if one_each is not None:
        report(one_each, slots)
        sys.stdout.flush()
    pooled = run_phase(args.share, args) if args.only != "job" else None
    if pooled is not None:
        report(pooled, slots)
        print(f"pool vs its ideal: {pooled.makespan / pooled.ideal(slots):.2f}x (goal <= 1.3x)")
    if one_each is not None and pooled is not None:
        print(f"one VM per job vs the pool: {one_each.makespan / pooled.makespan:.1f}x slower (goal >= 4x); "
              f"boots {one_each.boots} vs {pooled.boots}, VM-hours {one_each.vm_hours:.3f} vs "
              f"{pooled.vm_hours:.3f}, vCPU-hours {one_each.vcpu_hours:.3f} vs {pooled.vcpu_hours:.3f}")

if __name__ == "__main__":
    main()
