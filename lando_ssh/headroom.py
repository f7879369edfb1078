"""How many more jobs the server process itself can take: its open descriptors, threads and memory against
their limits. A server near one of them holds new jobs back in S with a reason naming it (back-pressure)
instead of starting them and failing them when a socket, a thread or memory cannot be had.

`room()` is pure: it takes what `measure()` read (a `Gauge` per limit) and answers how many more jobs fit
and, when none does, why. Each limit keeps `RESERVE` of itself free, for what a job does on its way (a
bulk transfer's `ssh`, a store connection, a timer), so a job the server starts never meets the limit.

What a running job costs the daemon, measured with 200 and 1,000 light jobs (bench/concurrency.py): ~6
descriptors (its SSH socket, paramiko's channel pipe, its store connection, its job lock), 2 threads (its
pipeline and paramiko's transport) and ~0.4 MB. `PER_JOB` keeps a margin above that; when the running
jobs cost more on average (measured against the idle server), that average is used instead.
"""
from __future__ import annotations

import math
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass

RESERVE = 0.10  # of each limit, kept free
MIN_RESERVE = 8  # units (descriptors, threads, MB) kept free at the least
PER_JOB = {"descriptors": 8, "threads": 3, "memory": 4}  # MB for memory


@dataclass(frozen=True)
class Gauge:
    """One limit the server process lives under, as measured now."""

    resource: str  # "descriptors", "threads" or "memory" (a key of PER_JOB)
    limit_name: str  # where the limit comes from, for the reason: "RLIMIT_NOFILE", "cgroup pids.max", ...
    used: int
    limit: int
    idle: int = 0  # what the server used before it ran any job (for the measured cost of a job)


@dataclass(frozen=True)
class Room:
    jobs: int | None  # how many more jobs the server can start now; None: no limit is known
    reason: str = ""  # why a job waits once those are started: the tightest limit, in one sentence
    source: str = ""  # the limit that binds, as a short label for metrics: "server.descriptors", ...


_UNITS = {"descriptors": "open descriptors", "threads": "threads", "memory": "MB of memory"}


def per_job(g: Gauge, running_jobs: int) -> int:
    """What one more job takes of `g`: PER_JOB, or more when the running jobs take more on average."""
    floor = PER_JOB[g.resource]
    if running_jobs < 10:  # too few to average
        return floor
    return max(floor, math.ceil((g.used - g.idle) / running_jobs))


def reserve(g: Gauge) -> int:
    return max(math.ceil(g.limit * RESERVE), MIN_RESERVE)


def room(gauges: Sequence[Gauge], running_jobs: int) -> Room:
    """How many more jobs fit under every gauge, and the reason naming the tightest (for the jobs past them)."""
    best: Room = Room(None)
    for g in gauges:
        cost = per_job(g, running_jobs)
        # a job just started has not opened its socket or thread yet: it is counted at its cost meanwhile
        used = max(g.used, g.idle + running_jobs * cost)
        fits = max(0, (g.limit - reserve(g) - used) // cost)
        if best.jobs is not None and fits >= best.jobs:
            continue
        reason = (f"waiting: the server is near its limit of {_UNITS[g.resource]}: {used} of {g.limit} in use "
                  f"({g.limit_name}); a job needs ~{cost} and {reserve(g)} are kept free")
        best = Room(fits, reason, f"server.{g.resource}")
    return best


# -- measuring (Linux; what cannot be read is left out) -----------------------------------------------------
def measure(idle: dict[str, int] | None = None) -> list[Gauge]:
    """The gauges of this process now; `idle`: the `used` figures measured before any job ran."""
    idle = idle or {}
    gauges: list[Gauge] = []
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = _count_dir("/proc/self/fd")
    if soft != resource.RLIM_INFINITY and fds is not None:
        gauges.append(Gauge("descriptors", "RLIMIT_NOFILE", fds, soft, idle.get("descriptors", 0)))
    threads = _status_field("Threads")
    if threads is not None:
        gauges.extend(_thread_gauges(threads, idle.get("threads", 0)))
    gauges.extend(_memory_gauges(idle.get("memory", 0)))
    return gauges


def raise_descriptor_limit() -> None:
    """Take the hard limit of open descriptors as ours (the soft one is often 1,024: ~120 jobs)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # (an infinite hard limit is refused as a soft one on some kernels: keep the soft one)


def idle_figures() -> dict[str, int]:
    """What the server uses while it runs no job: the baseline a job's cost is measured against (the server
    measures it again whenever no job runs: its threads open their store connections as they first work)."""
    return {g.resource: g.used for g in measure()}


def _thread_gauges(ours: int, idle: int) -> list[Gauge]:
    gauges = []
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:  # (root is not held to it)
        gauges.append(Gauge("threads", "RLIMIT_NPROC", ours, soft, idle))  # counts the user's other tasks too
    cgroup = _cgroup_dir()
    if cgroup:
        limit, current = _read_int(f"{cgroup}/pids.max"), _read_int(f"{cgroup}/pids.current")
        if limit is not None and current is not None:  # systemd's TasksMax
            gauges.append(Gauge("threads", "the cgroup's pids.max (systemd TasksMax)", current, limit, idle))
    threads_max = _read_int("/proc/sys/kernel/threads-max")
    total = _system_tasks()
    if threads_max is not None and total is not None:
        gauges.append(Gauge("threads", "kernel.threads-max, all processes", total, threads_max, idle))
    return gauges


def _memory_gauges(idle: int) -> list[Gauge]:
    gauges = []
    info = _meminfo()
    if "MemTotal" in info and "MemAvailable" in info:
        total = info["MemTotal"] // 1024
        gauges.append(Gauge("memory", "the machine's memory", total - info["MemAvailable"] // 1024, total, idle))
    cgroup = _cgroup_dir()
    if cgroup:
        limit, current = _read_int(f"{cgroup}/memory.max"), _read_int(f"{cgroup}/memory.current")
        if limit is not None and current is not None:  # systemd's MemoryMax
            gauges.append(Gauge("memory", "the cgroup's memory.max (systemd MemoryMax)", current >> 20, limit >> 20,
                                idle))
    return gauges


def _count_dir(path: str) -> int | None:
    try:
        return len(os.listdir(path))
    except OSError:
        return None


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _system_tasks() -> int | None:
    try:  # "0.10 0.20 0.30 running/total last_pid": total is every thread of every process
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def _meminfo() -> dict[str, int]:
    try:
        with open("/proc/meminfo") as f:
            return {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1].isdigit()}
    except (OSError, IndexError):
        return {}


def _cgroup_dir() -> str | None:
    """This process's cgroup v2 directory, or None (v1, or not mounted)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    path = "/sys/fs/cgroup" + line[3:].strip()
                    return path.rstrip("/") if os.path.isdir(path) else None
    except OSError:
        pass
    return None


def _read_int(path: str) -> int | None:
    """A cgroup figure: None when it cannot be read or is "max" (no limit)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
