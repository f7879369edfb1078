"""lando-ssh's overhead over bare cwltool, measured in one run on the same 2-step workflow.

    .venv/bin/python bench/overhead.py [--runs 5]

Times `cwltool --no-container` and `lando-ssh job` (local cloud: boot a VM, stage, run the same
cwltool over SSH, pull the outputs, delete the VM), each as a whole command, RUNS times each,
and prints both medians, the overhead in seconds and the ratio. Goal: overhead <= 0.3 s. Also
lando-ssh's own time per job: the command's wall time less that of the cwltool it ran on the VM.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "tests" / "workflows" / "upper_count.cwl"
JOB_ORDER = REPO / "tests" / "workflows" / "upper_count.yml"
BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # cwltool's modules were byte-compiled when pip installed them; an editable checkout of lando-ssh
    # under PYTHONDONTWRITEBYTECODE never is (~30 ms of compiling per command), a wheel install is
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "lando_ssh")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}, "LANDO_DATA_DIR": tmp}
        lando = [str(BIN / "lando-ssh")]
        bare, ours = [], []
        steps: dict[str, list[float]] = {}
        for i in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
            out = os.path.join(tmp, f"bare-{i}")
            # as the VM's cwltool runs it: logging at INFO (lando-ssh keeps that log for the job), ~30 ms
            # more than --quiet here
            bare.append(timed([str(BIN / "cwltool"), "--no-container", "--outdir", out,
                               str(WORKFLOW), str(JOB_ORDER)], env))
            job_id = subprocess.run([*lando, "submit", str(WORKFLOW), str(JOB_ORDER)], check=True, env=env,
                                    capture_output=True, text=True).stdout.strip()
            ours.append(timed([*lando, "job", job_id], env))
            status = json.loads(subprocess.run([*lando, "status", job_id, "--json"], check=True, env=env,
                                               capture_output=True, text=True).stdout)
            for step, timing in status["timings"].items():
                steps.setdefault(step, []).append(timing["seconds"])
            steps.setdefault("cwltool on the VM", []).append(status["facts"]["usage"]["wall_seconds"])
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"bare cwltool --no-container: median {b:.3f}s over {args.runs} runs ({', '.join(f'{t:.2f}' for t in bare)})")
    print(f"lando-ssh job (local cloud): median {o:.3f}s over {args.runs} runs ({', '.join(f'{t:.2f}' for t in ours)})")
    print("lando-ssh job, median seconds per step: "
          + ", ".join(f"{name} {statistics.median(times):.3f}" for name, times in steps.items()))
    # the same workflow's cwltool varies by 0.1-0.3 s from run to run here; lando-ssh's own part of each run
    # (the whole command less the wall time of its cwltool on the VM) varies far less, for comparing changes
    own = statistics.median(t - c for t, c in zip(ours, steps["cwltool on the VM"], strict=True))
    print(f"lando-ssh's own time per job (the command less its cwltool's wall time): median {own:.3f}s")
    # each lando-ssh run follows a bare run: their paired difference is less swayed by drift in the machine's speed
    paired = statistics.median(t - c for t, c in zip(ours, bare, strict=True))
    print(f"paired overhead (median of each lando-ssh run less the bare run before it): {paired:+.3f}s")
    print(f"overhead: {o - b:+.3f}s  ratio: {o / b:.2f}x  (goal: overhead <= 0.3s)  "
          f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
