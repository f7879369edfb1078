"""An interleaved A/B of `lando-ssh job` between two commits (or a commit and the working tree).

    .venv/bin/python bench/ab.py [--runs 20] REF_A [REF_B]

Each side is the `lando_ssh/` and `remote_scripts/` of a git ref (REF_B defaults to the working tree),
extracted to a temporary directory and put first on PYTHONPATH; the runs alternate A B B A ... on the
2-step workflow, so drift in the machine's speed hits both alike. It prints each side's medians (the
command's wall time, its cwltool's on the VM, the job's own time, the command's CPU, the time to the
first step and each step) and the paired differences B - A. A change of a few ms needs 20 or more
pairs on a noisy host. Look at the wall time too: a change that slows the VM's cwltool shrinks the
own time (the command less cwltool's wall time) without helping.

Every command runs from the temporary directory: `python -c` puts the working directory first on
sys.path, so one started in the checkout would import the checkout's code on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "tests" / "workflows" / "upper_count.cwl"
JOB_ORDER = REPO / "tests" / "workflows" / "upper_count.yml"
JOB = "import sys; sys.argv[0] = 'lando-ssh'; from lando_ssh.cli import main; sys.exit(main())"


def extract(ref: str | None, dest: Path) -> Path:
    dest.mkdir()
    if ref is None:
        for part in ("lando_ssh", "remote_scripts"):
            shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "lando_ssh", "remote_scripts"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # as a wheel install is: byte-compiled (an uncompiled module costs its compile on every command)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "lando_ssh")], check=True)
    return dest


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def one_job(tree: Path, data: Path, cwd: str) -> dict[str, float]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LANDO_")},
           "LANDO_DATA_DIR": str(data), "PYTHONPATH": str(tree)}

    def lando(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", JOB, *args], env=env, cwd=cwd, check=True, text=True,
                              **kwargs)  # type: ignore[call-overload]

    job_id = lando("submit", str(WORKFLOW), str(JOB_ORDER), capture_output=True).stdout.strip()
    before, started, wall_started = resource.getrusage(resource.RUSAGE_CHILDREN), time.time(), time.perf_counter()
    lando("job", job_id, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - wall_started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    status = json.loads(lando("status", job_id, "--json", capture_output=True).stdout)
    cwltool = status["run"]["usage"]["wall_seconds"]
    row = {"wall": wall, "cwltool": cwltool, "own": wall - cwltool,
           "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
           "to V": min(seconds(t["started"]) for t in status["timings"].values()) - started}
    row.update({step: t["seconds"] for step, t in status["timings"].items()})
    row["R"] -= cwltool  # the run step beyond its cwltool's own wall time
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="pairs of runs (default 20)")
    parser.add_argument("a", metavar="REF_A")
    parser.add_argument("b", metavar="REF_B", nargs="?", help="default: the working tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lando-ab-") as tmp:
        root = Path(tmp)
        trees = {"A": extract(args.a, root / "A"), "B": extract(args.b, root / "B")}
        rows: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        for i in range(args.runs):
            for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                rows[side].append(one_job(trees[side], root / "data", tmp))
        print(f"A = {args.a}, B = {args.b or 'the working tree'}, {args.runs} pairs; medians in ms")
        for side, runs in rows.items():
            print(f"  {side}: " + "  ".join(f"{k} {statistics.median(r[k] for r in runs) * 1000:.1f}"
                                          for k in runs[0]))
        for key in rows["A"][0]:
            diffs = [b[key] - a[key] for a, b in zip(rows["A"], rows["B"], strict=True)]
            print(f"  B - A {key}: median {statistics.median(diffs) * 1000:+.1f}, "
                  f"mean {statistics.mean(diffs) * 1000:+.1f}")


if __name__ == "__main__":
    main()
