"""Shared fixtures: a lando-ssh installation in a temp dir driven through the real CLI, an HTTP
file server on 127.0.0.1, and the end-of-run check that the tests left nothing behind."""
from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "tests" / "workflows"
TEST_INSTALLATION = f"lando-test-{os.getpid()}"  # VM names and tags of this test run


@dataclass
class Lando:
    """One lando-ssh installation: its config file and data dir, driven through the CLI."""

    root: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "lando.yml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def write_config(self, **overrides: Any) -> Path:
        config: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "log_level": "INFO",
            "cloud": {"driver": "local", "installation_id": TEST_INSTALLATION},
            "vm": {"boot_timeout": 60, "ssh_timeout": 60},
            "poll_interval": 1.0,
        }
        _merge(config, self.settings)
        _merge(config, overrides)
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    def config(self) -> Any:
        from lando_ssh.config import load_config

        return load_config(str(self.config_path), env={})

    def cli(self, *args: str, check: bool = False, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        proc = subprocess.run([sys.executable, "-m", "lando_ssh", "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, env=env, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"lando-ssh {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        return subprocess.Popen([sys.executable, "-m", "lando_ssh", "--config", str(self.config_path), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def submit(self, workflow: str | Path, job_order: str | Path | None = None, *extra: str) -> int:
        args = ["submit", str(workflow)] + ([str(job_order)] if job_order else []) + list(extra)
        proc = self.cli(*args, check=True)
        return int(proc.stdout.strip())

    def status(self, job_id: int) -> dict[str, Any]:
        return json.loads(self.cli("status", str(job_id), "--json", check=True).stdout)

    def wait_for(self, job_id: int, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                where = f"{job['state']}/{job['step']}"
                raise AssertionError(f"job {job_id} did not get there in {timeout}s; it is {where}")
            time.sleep(0.2)

    def vm_dirs(self) -> list[Path]:
        root = self.data_dir / "local-cloud"
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


@pytest.fixture
def lando(tmp_path: Path) -> Iterator[Lando]:
    env = Lando(tmp_path)
    env.write_config()
    yield env
    _delete_vms(env)


def _delete_vms(env: Lando) -> None:
    """A failed test may leave VMs: delete them so the next tests start clean (the final check still counts them)."""
    if not (env.data_dir / "local-cloud").exists():
        return
    from lando_ssh.cloud.local import LocalCloud

    cloud = LocalCloud(env.config())
    for vm in cloud.find_vms({}):
        cloud.delete_vm(vm.id)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory): files written to the directory are served over http://127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


# -- nothing left behind -----------------------------------------------------------------------
def test_vm_processes() -> list[str]:
    """Processes of VMs this test run created (sshd listeners and anything started on the VMs)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"LANDO_LOCAL_VM={TEST_INSTALLATION}".encode() in env or f"/{TEST_INSTALLATION}-" in cmd \
                or ("sshd" in cmd and "pytest-of" in cmd):
            found.append(f"{entry}: {cmd[:120]}")
    return found


test_vm_processes.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while (left := test_vm_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        for line in left:
            try:
                os.kill(int(line.split(":")[0]), 9)
            except OSError:
                pass
        pytest.fail("the tests left VM processes running:\n" + "\n".join(left), pytrace=False)
