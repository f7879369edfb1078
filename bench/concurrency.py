"""The daemon's own cost while many jobs run: CPU share and peak memory.

    .venv/bin/python bench/concurrency.py [--jobs 100] [--sleep 60]

Starts `lando-ssh run` on the local cloud, sends start_job for N jobs whose workflow sleeps
SLEEP seconds, and once all N are in the run step measures the daemon process alone over the
time they sleep: its CPU time as a share of one core, and its peak resident memory. The
baseline, measured in the same run: the same daemon idle with no jobs for the same span.
Goal: <= 5 % of one core and <= 300 MB.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORKFLOWS, delete_queues, store_jobs, write_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--sleep", type=int, default=60)
    args = parser.parse_args()
    from lando_ssh.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), limits={"max_concurrent_jobs": args.jobs})
        config = load_config(str(path), env={})
        ids = store_jobs(config, WORKFLOWS / "sleep.cwl", {"seconds": args.sleep}, args.jobs)
        lando = [sys.executable, "-m", "lando_ssh", "--config", str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        daemon = subprocess.Popen([*lando, "run"], env=env, stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)
            window = min(20.0, args.sleep / 3)
            idle_start = cpu_seconds(daemon.pid)
            time.sleep(window)
            idle_share = (cpu_seconds(daemon.pid) - idle_start) / window
            from lando_ssh.broker import Broker
            from lando_ssh.messages import Command

            with Broker(config.work_queue) as broker:
                for job_id in ids:
                    broker.send(Command.START_JOB, job_id)
            db = sqlite3.connect(config.store_url[len("sqlite:///"):])
            started = time.monotonic()
            while True:  # all N in the run step (cwltool started on every VM)
                running = db.execute("SELECT count(*) FROM jobs WHERE state = 'R' AND step = 'R'").fetchone()[0]
                if running == len(ids):
                    break
                if time.monotonic() - started > 600:
                    raise SystemExit(f"only {running} of {len(ids)} jobs reached the run step in 10 minutes")
                time.sleep(0.5)
            ramp = time.monotonic() - started
            busy_start = cpu_seconds(daemon.pid)
            time.sleep(window)
            busy_share = (cpu_seconds(daemon.pid) - busy_start) / window
            peak = peak_rss_mb(daemon.pid)
            while db.execute("SELECT count(*) FROM jobs WHERE state IN ('F', 'E', 'C')").fetchone()[0] < len(ids):
                time.sleep(1)
            states = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
            db.close()
        finally:
            daemon.terminate()
            daemon.wait(30)
            delete_queues(config)
            subprocess.run([*lando, "sweep", "--grace", "0"], env=env, capture_output=True)
    print(f"{args.jobs} jobs reached the run step in {ramp:.0f}s; measured over {window:.0f}s while they slept")
    print(f"daemon idle (baseline):   {idle_share:6.2%} of one core")
    print(f"daemon with {args.jobs} running: {busy_share:6.2%} of one core, peak RSS {peak:.0f} MB "
          f"(goal <= 5% and <= 300 MB)")
    print(f"final states: {states}")


if __name__ == "__main__":
    main()
