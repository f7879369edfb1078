"""How long the scheduler takes to decide who starts, with 10,000 waiting jobs and 30 flavors.

    .venv/bin/python bench/scheduler.py [--jobs 10000] [--flavors 30] [--runs 7]

The jobs mix priorities, ages, named flavors and ResourceRequirements (cores 1-16, RAM up to
64 GB, some disk), a few hundred of them past `reserve_after`; 40 VMs are running under
config limits and a cloud quota, so most jobs wait and each gets its reason. Prints the
median time of `schedule()` against a baseline measured in the same run: a plain sort of the
same jobs by (priority, age). Goal: <= 100 ms. Also times `workflow_needs` over the jobs'
packed workflows, which the server does once per job when it is queued, not every round.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from lando_ssh.cloud import Flavor, Quota
from lando_ssh.flavors import Needs, workflow_needs
from lando_ssh.scheduler import ActiveVm, Limits, WaitingJob, schedule

NOW = 1_700_000_000.0


def make_flavors(n: int) -> list[Flavor]:
    flavors = []
    for i in range(n):
        vcpus = 2 ** (i % 6)  # 1..32
        ram = vcpus * 1024 * (2 + 2 * (i // 6 % 3))  # 2, 4 or 8 GB per vCPU
        family = ["m1", "r1", "c1", "g1", "x1"][i // 6 % 5]
        flavors.append(Flavor(f"{family}.{vcpus}xl-{i}", str(i), vcpus=vcpus, ram_mb=ram, disk_gb=20 * vcpus))
    random.Random(1).shuffle(flavors)
    return flavors


def make_jobs(n: int, flavors: list[Flavor], rng: random.Random) -> list[WaitingJob]:
    jobs = []
    for i in range(n):
        cores = rng.choice([1, 1, 1, 2, 2, 4, 8, 16])
        needs = Needs(cores=cores, ram_mb=rng.choice([256, 2048, 4096, 8192, 16384, 65536]) if i % 3 else 256,
                      disk_mb=rng.choice([0, 0, 10240, 51200]))
        age = rng.uniform(0, 7200)
        jobs.append(WaitingJob(id=i + 1, created=NOW - age, since=NOW - age * 0.9, priority=rng.choice([0, 0, 0, 1, 5]),
                               needs=needs, flavor=rng.choice(flavors).name if i % 50 == 0 else None,
                               volume_gb=100 if i % 20 == 0 else 0, has_vm=i % 500 == 0))
    return jobs


def median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--flavors", type=int, default=30)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(42)
    flavors = make_flavors(args.flavors)
    jobs = make_jobs(args.jobs, flavors, rng)
    active = [ActiveVm(4, 16384, counted_by_cloud=i % 10 != 0) for i in range(40)]
    limits = Limits(max_jobs=50, max_vms=60, max_cores=200, max_ram_mb=800 * 1024)
    quota = Quota(max_instances=100, max_cores=256, max_ram_mb=1024 * 1024, instances_used=45, cores_used=180,
                  ram_mb_used=700 * 1024)

    def decide():  # type: ignore[no-untyped-def]
        return schedule(jobs, active, running_jobs=40, limits=limits, quota=quota, flavors=flavors,
                        allow=r"^(m1|r1|c1)\.", now=NOW, reserve_after=3600)

    decision = decide()
    baseline = median_ms(lambda: sorted(jobs, key=lambda w: (-w.priority, w.created, w.id)), args.runs)
    ours = median_ms(decide, args.runs)
    docs = [{"$graph": [{"class": "CommandLineTool", "id": f"#t{k}", "requirements": [
        {"class": "ResourceRequirement", "coresMin": k % 8 + 1, "ramMin": 1024 * (k % 4 + 1)}]}
        for k in range(3)] + [{"class": "Workflow", "id": "#main", "steps": [
            {"id": f"#main/s{k}", "run": f"#t{k}"} for k in range(3)]}]} for _ in range(1000)]
    needs_ms = median_ms(lambda: [workflow_needs(d) for d in docs], args.runs) / 1000

    print(f"{len(jobs)} waiting jobs, {len(flavors)} flavors, {len(active)} VMs running: "
          f"{len(decision.start)} start, {len(decision.waiting)} wait (with reasons), {len(decision.failed)} fail, "
          f"{len(decision.reserving)} reserve")
    print(f"baseline (sort the jobs by priority and age): {baseline:7.2f} ms")
    print(f"schedule() (decide who starts, flavors, reasons): {ours:7.2f} ms  "
          f"({ours / baseline:.1f}x the sort; goal <= 100 ms: {'met' if ours <= 100 else 'NOT met'})")
    print(f"workflow_needs() per packed 4-process workflow (once per job, at enqueue): {needs_ms * 1000:.1f} us")


if __name__ == "__main__":
    main()
