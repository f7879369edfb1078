"""How long the pool's placement takes to plan a round, with many waiting jobs and a pool of VMs.

    .venv/bin/python bench/pool_plan.py [--jobs 1000] [--vms 200] [--owners 20] [--runs 7]

Jobs of 1-4 cores and 0.5-4 GB from `--owners` users wait; the pool holds `--vms` VMs of three flavors, most
partly used, each owned by one user (`pool.share: owner`). Prints the median time of `pool.placement.plan()`
with and without `pool.pack`, against a baseline measured in the same run: `scheduler.schedule()` over the
same jobs (which only picks flavors and checks limits, placing nothing on VMs). Goal: <= 100 ms a round (the
scheduler's own goal for 10,000 jobs), so a round every few seconds costs the daemon little.
"""
from __future__ import annotations

import argparse
import functools
import random
import statistics
import time
from collections.abc import Callable

from lando_ssh.cloud import Flavor
from lando_ssh.flavors import Needs
from lando_ssh.pool.model import PoolState, PoolVm, Resources
from lando_ssh.pool.placement import PoolJob, plan
from lando_ssh.pool.policy import PoolPolicy, Share
from lando_ssh.scheduler import Limits, WaitingJob, schedule

NOW = 1_700_000_000.0
FLAVORS = [Flavor("m1.small", "1", 1, 2048, 20), Flavor("m1.medium", "2", 2, 4096, 40),
           Flavor("m1.large", "3", 4, 8192, 80)]


def make(jobs: int, vms: int, owners: int, rng: random.Random) -> tuple[list[PoolJob], list[PoolVm]]:
    users = [f"u{i}" for i in range(owners)]
    waiting = [PoolJob(WaitingJob(id=i, created=NOW - rng.uniform(0, 3600), needs=Needs(rng.choice([1, 1, 2, 4]),
                                                                                       rng.choice([512, 1024, 4000]))),
                       image="img", project=None, owner=rng.choice(users)) for i in range(1, jobs + 1)]
    pool = []
    for i in range(1, vms + 1):
        f = rng.choice(FLAVORS)
        owner = rng.choice(users)
        vm = PoolVm(id=i, name=f"vm-{i}", flavor=f.name, size=Resources(f.vcpus, f.ram_mb, f.disk_gb * 1024),
                    image="img", project=None, owner=owner, share_key=f"owner:{owner}", installation="bench",
                    state=PoolState.IDLE, cloud_id=f"c{i}")
        if rng.random() < 0.7:
            vm.reserve(100_000 + i, Resources(1, 512))
        pool.append(vm)
    return waiting, pool


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--vms", type=int, default=200)
    p.add_argument("--owners", type=int, default=20)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    jobs, vms = make(args.jobs, args.vms, args.owners, random.Random(1))
    limits = Limits(max_vms=args.vms + 100)
    base = median_ms(lambda: schedule([j.waiting for j in jobs], [], running_jobs=0, limits=limits, quota=None,
                                      flavors=FLAVORS, now=NOW), args.runs)
    print(f"baseline scheduler.schedule(): {base:.1f} ms for {args.jobs} jobs")
    for pack in (False, True):
        policy = PoolPolicy(Share.OWNER, pack, 120)
        one_round = functools.partial(plan, jobs, vms, flavors=FLAVORS, policy=policy, limits=limits, quota=None,
                                      now=NOW)
        ms = median_ms(one_round, args.runs)
        d = one_round()
        print(f"pool plan (pack={str(pack).lower()}): {ms:.1f} ms ({ms / base:.1f}x the baseline) for {args.jobs} jobs "
              f"and {args.vms} VMs: {len(d.place)} placed on VMs, {len(d.boot)} boots, {len(d.waiting)} waiting")


if __name__ == "__main__":
    main()
