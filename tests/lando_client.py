"""lando-messaging's own `LandoClient` (PyPI lando-messaging 2.1.0, which pins pika 1.1.0), as lando's clients and
bespin-api run it, on the Python versions they run: 2.7 and 3.11 from pyenv. Each is installed once per machine
into a directory of its own under /tmp (never into the test virtualenv, whose pika is newer), and run as a
separate process, so the pickles on the queue are exactly what those interpreters write."""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

PYENV = Path(os.path.expanduser("~/.pyenv/versions"))
CACHE = Path("/tmp/lando-messaging-clients")
VERSION = "2.1.0"

_SCRIPT = """
import sys
from lando_messaging.clients import LandoClient
class WorkQueue(object):
    host, username, password = '127.0.0.1', 'guest', 'guest'
class Config(object):
    work_queue_config = WorkQueue()
command, job_id, queue, kind = sys.argv[1:5]
getattr(LandoClient(Config(), queue), command)(int(job_id) if kind == 'int' else job_id)
"""


def python(version: str) -> Path:
    """pyenv's newest Python `version` (e.g. "2.7", "3.11")."""
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not found:
        raise AssertionError(f"no Python {version} under {PYENV}: lando-messaging's client needs it")
    return found[-1]


def installed(version: str) -> Path:
    """The directory holding lando-messaging for Python `version`, installed there once."""
    target = CACHE / f"py{version}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "lando_messaging" / "clients.py").exists():
            subprocess.run([str(python(version)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--no-warn-conflicts", "--target", str(target), f"lando-messaging=={VERSION}"],
                           check=True, capture_output=True, env={**os.environ, "PYTHONNOUSERSITE": "1"})
    return target


def landoclient(version: str, command: str, job_id: int | str, queue: str) -> None:
    """`LandoClient(config, queue).<command>(job_id)` on Python `version`: the id is sent as given (an int, or a
    string as bespin-api sends it)."""
    send_with(python(version), command, job_id, queue, installed(version))


def send_with(interpreter: Path, command: str, job_id: int | str, queue: str, path: Path | None = None) -> None:
    """The same, by `interpreter` with lando-messaging importable (from `path`, or its own site-packages, as in
    bespin-api's virtualenv)."""
    args = [command, str(job_id), queue, "str" if isinstance(job_id, str) else "int"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if path is not None:
        env.update(PYTHONPATH=str(path), PYTHONNOUSERSITE="1")
    subprocess.run([str(interpreter), "-c", _SCRIPT, *args], check=True, capture_output=True, timeout=60, env=env)
