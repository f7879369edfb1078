"""The CWL v1.2 conformance suite through `lando-ssh-cwl-runner` and, in the same run, through bare
`cwltool --no-container` (the floor): pass counts, wall times and their ratio, and every test that cwltool
passes and lando-ssh does not (then the exit code is 1). `scripts/conformance` runs it; see there.

    python bench/conformance.py [--archive cwl-v1.2-*.tar.gz] [-j 2] [--keep] [CWLTEST ARGS...]

CWLTEST ARGS go to both cwltest runs (`--tags required`, `-s iwd-subdir,octothorpe`, `-n 1-20`). The suite is
unpacked into a temp dir /tmp/cwl-conformance-*, with a lando-ssh config of its own there (its data dir, and
an installation_id of its own on the local cloud), removed afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from _common import REPO, write_config

BIN = Path(sys.executable).parent
DEFAULT_ARCHIVES = [str(REPO.parent / "shared" / "cwl-conformance" / "cwl-v1.2-*.tar.gz"),
                    "/work/shared/cwl-conformance/cwl-v1.2-*.tar.gz"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", help="the suite's tar.gz (default: ../shared/cwl-conformance/cwl-v1.2-*.tar.gz)")
    parser.add_argument("-j", type=int, default=2, help="tests at once, per runner (default 2)")
    parser.add_argument("--timeout", type=int, default=180, help="seconds a test may take (default 180)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the suite, logs, lando's data)")
    args, cwltest_args = parser.parse_known_args()
    archive = args.archive or next((m for p in DEFAULT_ARCHIVES for m in sorted(glob.glob(p))), None)
    if not archive or not os.path.isfile(archive):
        print("conformance: no suite archive found; give --archive cwl-v1.2-*.tar.gz", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="cwl-conformance-", dir="/tmp"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        suite = next(p.parent for p in root.glob("*/conformance_tests.yaml"))
        config = write_config(root, cloud={"driver": "local", "installation_id": f"cwl-{root.name}"})
        lando = _run("lando-ssh", suite, root, ["--tool", "lando-ssh-cwl-runner"], args, cwltest_args,
                     {"LANDO_CONFIG": str(config)})
        floor = _run("cwltool", suite, root, ["--tool", str(BIN / "cwltool")], args, cwltest_args, {},
                     tool_args=["--no-container"])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    total = len(floor.results)
    print(f"bare cwltool --no-container: {floor.passed}/{total} passed in {floor.seconds:.0f} s")
    print(f"lando-ssh cwl-runner:        {lando.passed}/{total} passed in {lando.seconds:.0f} s "
          f"({lando.seconds / floor.seconds:.2f}x cwltool's wall time)")
    below = sorted(t for t, ok in floor.results.items() if ok and not lando.results.get(t))
    beyond = sorted(t for t, ok in lando.results.items() if ok and not floor.results.get(t))
    if beyond:
        print(f"passed by lando-ssh only: {', '.join(beyond)}")
    if below:
        print(f"FAILED by lando-ssh, passed by cwltool: {', '.join(below)}")
    if args.keep:
        print(f"kept: {root}")
    return 1 if below else 0


class Outcome:
    def __init__(self, results: dict[str, bool], seconds: float):
        self.results = results  # test id -> passed
        self.seconds = seconds

    @property
    def passed(self) -> int:
        return sum(self.results.values())


def _run(name: str, suite: Path, root: Path, tool: list[str], args: argparse.Namespace, cwltest_args: list[str],
         env: dict[str, str], tool_args: list[str] = ()) -> Outcome:  # type: ignore[assignment]
    junit = root / f"{name}.xml"
    log = root / f"{name}.log"
    argv = [str(BIN / "cwltest"), "--test", "conformance_tests.yaml", *tool, "--exclude-tags", "docker",
            "-j", str(args.j), "--timeout", str(args.timeout), "--junit-xml", str(junit), *cwltest_args,
            *(["--", *tool_args] if tool_args else [])]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
    environment.update(env, PATH=f"{BIN}:{os.environ.get('PATH', '')}", TMPDIR=str(root))
    print(f"running the suite through {name} ({log})...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with open(log, "w") as out:
        subprocess.run(argv, cwd=suite, env=environment, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    return Outcome(results_of(name, log, junit), seconds)


def results_of(name: str, log: Path, junit: Path) -> dict[str, bool]:
    """Test id -> passed, from a cwltest run's output and JUnit file."""
    # the log says which tests ran and which failed (cwltest's JUnit file lists every test, run or not, and
    # does not mark a should_fail test that succeeded); the JUnit file says which were unsupported (skipped)
    text = log.read_text()
    ran = {int(n): test_id for n, test_id in re.findall(r"^Test \[(\d+)/\d+\] (\S+?):", text, re.M)}
    failed = {int(n) for n in re.findall(r"^Test (\d+) failed:", text, re.M)}
    skipped = set()
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                skipped.add(case.get("file", ""))
    elif not ran:
        raise SystemExit(f"conformance: cwltest ran nothing through {name}; see {log}:\n{text[-2000:]}")
    return {test_id: n not in failed and test_id not in skipped for n, test_id in ran.items()}


if __name__ == "__main__":
    sys.exit(main())
