"""The status page's weight and time with many jobs in the store (default 10,000), against `lando-ssh status
--json` over the same store in the same run (the baseline: what an admin ran before).

    .venv/bin/python bench/web.py [--jobs 10000] [--repeat 5]

Stores made-up jobs with a full history (tests/made_jobs.py: 30 days of jobs, 20 owners, 10 projects, most
finished, some failed, restarted or running, each with a ~12 kB packed workflow), starts `lando-ssh web` on
them, and prints for each page its size and the median time of `--repeat` requests once the server holds the
jobs list (as while an admin browses: the list is read again in the background), the first request's time
(the list read from the store), and the server's memory.
"""
from __future__ import annotations

import argparse
import http.client
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_config

sys.path.insert(0, str(REPO / "tests"))
from made_jobs import made_job  # noqa: E402

from lando_ssh.config import load_config  # noqa: E402
from lando_ssh.model import JobState  # noqa: E402
from lando_ssh.store import open_store  # noqa: E402

#: a packed workflow of a realistic size (~12 kB), as every stored job carries the one it runs
WORKFLOW_DOC = {"cwlVersion": "v1.2", "$graph": [
    {"id": f"#tool{i}", "class": "CommandLineTool", "doc": "x" * 1500, "baseCommand": ["echo"],
     "inputs": [{"id": f"#tool{i}/message", "type": "string"}], "outputs": []} for i in range(8)]}
STATES = [JobState.FINISHED] * 85 + [JobState.ERROR] * 8 + [JobState.CANCELED] * 5 + [JobState.RUNNING] * 2


def fill(config_path: Path, count: int) -> int:
    """`count` jobs; returns the id of a restarted, failed one (a long timeline)."""
    config = load_config(str(config_path), env={})
    store = open_store(config.store_url)
    rng = random.Random(21)
    failed = 0
    try:
        for i in range(count):
            state = JobState.RUNNING if i >= count - 20 else rng.choice(STATES)
            minutes = 5 if state == JobState.RUNNING else (count - i) * 30 * 24 * 60 / count
            job = made_job(f"job-{i}", f"user{rng.randrange(20)}", state, minutes_ago=minutes,
                           project=f"project{rng.randrange(10)}", restarts=1 if i % 50 == 0 else 0)
            job.workflow_doc = WORKFLOW_DOC
            job = store.create(job)
            if state == JobState.ERROR and i % 50 == 0:
                failed = job.id
    finally:
        store.close()
    return failed


def fetch(port: int, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    assert response.status == 200, (path, response.status, body[:300])
    return elapsed, len(body)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lando-bench-web-") as tmp:
        config = write_config(Path(tmp))
        started = time.perf_counter()
        failed = fill(config, args.jobs)
        print(f"stored {args.jobs} jobs in {time.perf_counter() - started:.1f}s")
        cli = [sys.executable, "-m", "lando_ssh", "--config", str(config)]
        started = time.perf_counter()
        status = subprocess.run([*cli, "status", "--json"], capture_output=True, check=True)
        baseline = time.perf_counter() - started
        print(f"baseline: lando-ssh status --json: {baseline * 1000:.0f} ms, {len(status.stdout) / 1e6:.1f} MB "
              f"(a whole command: start, read, print)")
        web = subprocess.Popen([*cli, "web", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
        try:
            assert web.stdout is not None
            port = int(re.search(r":(\d+)/", web.stdout.readline()).group(1))  # type: ignore[union-attr]
            pages = ["/jobs", "/jobs?state=E&owner=user3", "/api/jobs", f"/jobs/{failed}", f"/api/jobs/{failed}",
                     "/vms", "/api/vms", "/plots", "/api/plots?period=day", "/api/plots?period=week",
                     "/api/plots?period=month", "/static/uPlot.iife.min.js"]
            idle = rss_mb(web.pid)
            first, size = fetch(port, "/jobs")
            print(f"first request (/jobs, reads the jobs): {first * 1000:.0f} ms, {first / baseline:.2f}x the baseline")
            print(f"{'page':<28} {'bytes':>9} {'median ms':>10} {'max ms':>7}")
            for page in pages:
                times = []
                for _ in range(args.repeat):
                    elapsed, size = fetch(port, page)
                    times.append(elapsed)
                print(f"{page:<28} {size:>9} {statistics.median(times) * 1000:>10.0f} {max(times) * 1000:>7.0f}")
            print(f"memory of lando-ssh web: {idle:.0f} MB before the first request, {rss_mb(web.pid):.0f} MB "
                  f"holding the jobs list and the plots")
        finally:
            web.terminate()
            web.wait(30)

if __name__ == "__main__":
    main()
