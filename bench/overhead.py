"""lando-ssh's overhead over bare cwltool, measured in one run: `job`, and `cwl-runner` (submit + job).

    .venv/bin/python bench/overhead.py [--runs 5]

Times, interleaved RUNS times each as whole commands: `cwltool --no-container` and `lando-ssh job`
(local cloud: boot a VM, stage, run the same cwltool over SSH, pull the outputs, delete the VM) on the
2-step workflow, and `lando-ssh cwl-runner` (validate and pack with cwltool, store the job, then the same
job) against `cwltool --no-container` on that workflow and on a 3-sample scatter workflow. Prints the
medians, overheads and ratios. Goals: `job` overhead <= 0.3 s; `cwl-runner` <= 1.3x cwltool's wall time.
Also lando-ssh's own time per job: the `job` command's wall time less that of the cwltool it ran on the VM.
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
SCATTER = REPO / "tests" / "workflows" / "scatter.cwl"
SCATTER_ORDER = REPO / "tests" / "workflows" / "scatter.yml"
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
        runner: dict[str, list[float]] = {}  # cwl-runner's times, and bare cwltool's, per workflow
        runner_bare: dict[str, list[float]] = {}
        for i in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
            out = os.path.join(tmp, f"bare-{i}")
            # as the VM's cwltool runs it: logging at INFO (lando-ssh keeps that log for the job), ~30 ms
            # more than --quiet here
            bare.append(timed([str(BIN / "cwltool"), "--no-container", "--outdir", out,
                               str(WORKFLOW), str(JOB_ORDER)], env))
            job_id = subprocess.run([*lando, "submit", str(WORKFLOW), str(JOB_ORDER)], check=True, env=env,
                                    capture_output=True, text=True).stdout.strip()
            ours.append(timed([*lando, "job", job_id], env))
            for name, (wf, order) in {"2-step": (WORKFLOW, JOB_ORDER), "scatter": (SCATTER, SCATTER_ORDER)}.items():
                if name != "2-step":
                    runner_bare.setdefault(name, []).append(
                        timed([str(BIN / "cwltool"), "--no-container", "--outdir", os.path.join(tmp, f"b-{name}-{i}"),
                               str(wf), str(order)], env))
                else:
                    runner_bare.setdefault(name, []).append(bare[-1])
                runner.setdefault(name, []).append(
                    timed([*lando, "cwl-runner", "--outdir", os.path.join(tmp, f"r-{name}-{i}"), str(wf), str(order)],
                          env))
            status = json.loads(subprocess.run([*lando, "status", job_id, "--json"], check=True, env=env,
                                               capture_output=True, text=True).stdout)
            for step, timing in status["timings"].items():
                steps.setdefault(step, []).append(timing["seconds"])
            steps.setdefault("cwltool on the VM", []).append(status["run"]["usage"]["wall_seconds"])
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
    for name, times in runner.items():
        rb, ro = statistics.median(runner_bare[name]), statistics.median(times)
        pair = statistics.median(t / c for t, c in zip(times, runner_bare[name], strict=True))
        print(f"cwl-runner on the {name} workflow: median {ro:.3f}s ({', '.join(f'{t:.2f}' for t in times)}), "
              f"bare cwltool {rb:.3f}s: ratio {ro / rb:.2f}x, paired {pair:.2f}x  (goal: <= 1.3x)")


if __name__ == "__main__":
    main()
