"""The daemon's own cost while many jobs run: CPU share and peak memory.

    .venv/bin/python bench/concurrency.py [--jobs 100] [--sleep 60] [--base-command cwltool|light]

Starts `lando-ssh run` on the local cloud, sends start_job for N jobs whose workflow sleeps
SLEEP seconds, and once all N are in the run step measures the daemon process alone over the
time they sleep: its CPU time as a share of one core, its peak resident memory, threads and
open descriptors. The baseline, measured in the same run: the same daemon idle with no jobs
for the same span. `--base-command light` runs a shell that sleeps then prints `{}` instead of
cwltool (~70 MB a job), so a thousand jobs fit on one machine: it measures the daemon, not cwltool.
Goals: with 100 cwltool jobs <= 5 % of one core and <= 300 MB; with 1,000 light jobs every job
ends F, <= 1 core on average while they run and <= 1 GB.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORKFLOWS, delete_queues, store_jobs, write_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


LIGHT = ["sh", "-c", 'sleep "$0"; echo "{}"']  # + the seconds: a workflow run that costs nothing but time


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_field(pid: int, name: str) -> int:
    """A number of /proc/PID/status (kB for memory)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def machine_used_mb() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


@dataclass
class Peaks:
    threads: int = 0
    fds: int = 0
    machine_mb: float = 0.0

    def sample(self, pid: int) -> None:
        self.threads = max(self.threads, status_field(pid, "Threads"))
        self.fds = max(self.fds, descriptors(pid))
        self.machine_mb = max(self.machine_mb, machine_used_mb())


def count(db: sqlite3.Connection, where: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM jobs WHERE {where}").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--sleep", type=int, default=60, help="seconds each job's workflow sleeps")
    parser.add_argument("--base-command", choices=("cwltool", "light"), default="cwltool")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each measurement (idle, busy)")
    parser.add_argument("--ramp-timeout", type=float, default=900.0)
    args = parser.parse_args()
    from lando_ssh.config import load_config

    window = min(args.window, args.sleep / 3)
    settings: dict = {"limits": {"max_concurrent_jobs": args.jobs}}
    if args.base_command == "light":
        settings["cwl_base_command"] = [*LIGHT, str(args.sleep)]
    machine_before = machine_used_mb()
    peaks = Peaks()
    ramp: float | None = None
    busy_share = peak = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), **settings)
        config = load_config(str(path), env={})
        ids = store_jobs(config, WORKFLOWS / "sleep.cwl", {"seconds": args.sleep}, args.jobs)
        lando = [sys.executable, "-m", "lando_ssh", "--config", str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        daemon = subprocess.Popen([*lando, "run"], env=env, stderr=open(os.path.join(tmp, "daemon.log"), "wb"))
        db = sqlite3.connect(config.store_url[len("sqlite:///"):])
        try:
            time.sleep(3)
            idle_start = cpu_seconds(daemon.pid)
            time.sleep(window)
            idle_share = (cpu_seconds(daemon.pid) - idle_start) / window
            idle_rss = status_field(daemon.pid, "VmRSS") / 1024
            idle_threads, idle_fds = status_field(daemon.pid, "Threads"), descriptors(daemon.pid)
            from lando_ssh.broker import Broker
            from lando_ssh.messages import Command

            with Broker(config.work_queue) as broker:
                for job_id in ids:
                    broker.send(Command.START_JOB, job_id)
            started = time.monotonic()
            cpu_at_send = cpu_seconds(daemon.pid)
            while True:  # all N in the run step (the workflow started on every VM)
                peaks.sample(daemon.pid)
                running = count(db, "state = 'R' AND step = 'R'")
                if running == len(ids):
                    ramp = time.monotonic() - started
                    break
                if count(db, "state IN ('F', 'E', 'C')") or time.monotonic() - started > args.ramp_timeout:
                    print(f"only {running} of {len(ids)} jobs reached the run step together "
                          f"({time.monotonic() - started:.0f}s)")
                    break
                time.sleep(0.5)
            ramp_share = (cpu_seconds(daemon.pid) - cpu_at_send) / (time.monotonic() - started)
            if ramp is not None:
                busy_start = cpu_seconds(daemon.pid)
                end = time.monotonic() + window
                while time.monotonic() < end:
                    peaks.sample(daemon.pid)
                    time.sleep(1)
                busy_share = (cpu_seconds(daemon.pid) - busy_start) / window
            peak = status_field(daemon.pid, "VmHWM") / 1024
            # said now, before the jobs end (deleting a thousand VMs takes a while)
            print(f"{args.jobs} jobs ({args.base_command}): "
                  + (f"all in the run step {ramp:.0f}s after start_job" if ramp is not None else
                     "never all in the run step") + f"; the daemon used {ramp_share:.0%} of one core meanwhile")
            print(f"daemon idle (baseline):     {idle_share:6.2%} of one core, RSS {idle_rss:.0f} MB, "
                  f"{idle_threads} threads, {idle_fds} descriptors")
            if ramp is not None:
                print(f"daemon with {args.jobs} running: {busy_share:6.2%} of one core over {window:.0f}s, "
                      f"peak RSS {peak:.0f} MB, {peaks.threads} threads, {peaks.fds} descriptors at most", flush=True)
            ended = time.monotonic()
            while count(db, "state IN ('F', 'E', 'C')") < len(ids) and daemon.poll() is None:
                peaks.sample(daemon.pid)
                time.sleep(2)
            states = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
            took_to_end = time.monotonic() - ended
            reasons = db.execute("SELECT json_extract(data, '$.reason') AS r, count(*) FROM jobs "
                                 "WHERE state != 'F' GROUP BY r "
                                 "ORDER BY 2 DESC LIMIT 5").fetchall()
        finally:
            db.close()
            daemon.terminate()
            daemon.wait(60)
            delete_queues(config)
            subprocess.run([*lando, "sweep", "--grace", "0"], env=env, capture_output=True)
    print(f"every job ended {took_to_end:.0f}s after the busy window "
          f"(each sleeps {args.sleep}s, then its VM is deleted)")
    print(f"the machine (local cloud included): {peaks.machine_mb - machine_before:.0f} MB more in use at the peak")
    print(f"final states: {states}")
    for reason, n in reasons:
        print(f"  {n} x {(reason or '')[:200]}")


if __name__ == "__main__":
    main()
