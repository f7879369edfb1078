"""Shared fixtures: a lando-ssh installation in a temp dir driven through the real CLI, an HTTP
file server on 127.0.0.1, and the end-of-run check that the tests left nothing behind."""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import psycopg
import pytest
import yaml

from lando_ssh.store import open_store

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

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lando_ssh", "--config", str(self.config_path), *args]

    @staticmethod
    def env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}

    def cli(self, *args: str, check: bool = False, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cli_argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env(),
                              **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"lando-ssh {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env())

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

    def vm_processes(self, vm_name: str) -> set[int]:
        """The processes of this installation's local VM `vm_name` (found by its marker, as deleting it does)."""
        from lando_ssh.cloud.local import LocalCloud

        return LocalCloud(self.config()).processes(vm_name)

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


# -- the daemon, RabbitMQ and slow downloads (shared by the daemon, fleet and scale-out tests) --------
class Daemon:
    """`lando-ssh run` as a child process, its log in a file."""

    def __init__(self, lando: Lando):
        self.lando = lando
        self.proc: subprocess.Popen | None = None
        self.log = lando.root / "daemon.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lando_ssh", "--config",
                                          str(self.lando.config_path), "run"], stdout=log, stderr=log, env=env)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def broker_names() -> Iterator[dict[str, str]]:
    names = {"listen_queue": f"lando-test-{uuid.uuid4().hex[:8]}"}
    names["status_exchange"] = names["listen_queue"] + "-status"
    made_on_the_broker(names["listen_queue"], names["status_exchange"])
    yield names
    connection = rabbit()
    channel = connection.channel()
    for queue in (names["listen_queue"], names["listen_queue"] + ".dead"):
        channel.queue_delete(queue)
    for exchange in (names["listen_queue"] + ".dead", names["status_exchange"]):
        channel.exchange_delete(exchange)
    connection.close()


BESPIN_TOKEN = "bespin-secret-token-1234"


@pytest.fixture
def bespin(broker_names: dict[str, str]) -> Iterator[Any]:
    """A local bespin-api (tests/bespin_api) that publishes its commands on the test's work queue."""
    from bespin_api import BespinApiService

    service = BespinApiService(BESPIN_TOKEN, queue=broker_names["listen_queue"]).start()
    yield service
    service.stop()


@pytest.fixture
def daemon(lando: Lando, broker_names: dict[str, str]) -> Iterator[Daemon]:
    lando.settings["work_queue"] = {**broker_names, "heartbeat": 10}
    lando.write_config()
    d = Daemon(lando)
    yield d
    if d.alive():
        d.stop(signal.SIGKILL)


POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new PostgreSQL database of its own on the local server, dropped after."""
    name = f"lando_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL at {POSTGRES} is needed by these tests and is not reachable: {e}", pytrace=False)
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def rabbit() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/",
                                                             pika.PlainCredentials("guest", "guest")))


def publish_raw(queue: str, body: bytes, content_type: str | None = None) -> None:
    connection = rabbit()
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)  # as the daemon declares it; unrouted messages would be dropped
    channel.basic_publish("", queue, body, pika.BasicProperties(content_type=content_type, delivery_mode=2))
    connection.close()


def store_job(lando: Lando, job_id: int) -> Any:
    store = open_store(lando.config().store_url)
    try:
        return store.get(job_id)
    finally:
        store.close()


def wait_job(lando: Lando, job_id: int, predicate: Any, timeout: float = 120, daemon: Daemon | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = store_job(lando, job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline or (daemon is not None and not daemon.alive()):
            log = daemon.text()[-3000:] if daemon else ""
            raise AssertionError(f"job {job_id} is {job.state.value}/{job.step.value}: {job.reason}\n{log}")
        time.sleep(0.05)


def finished(job: Any) -> bool:
    return job.state.value in ("F", "E", "C")


def vms_created_for(lando: Lando, job_id: int) -> list[str]:
    log = lando.data_dir / "local-cloud" / "created.log"
    if not log.exists():
        return []
    names = []
    for line in log.read_text().splitlines():
        _, name, meta = line.split(" ", 2)
        if json.loads(meta).get("lando_job_id") == str(job_id):
            names.append(name)
    return names


def send(lando: Lando, command: str, job_id: int) -> None:
    lando.cli("send", command, str(job_id), check=True)


class SlowFile(http.server.BaseHTTPRequestHandler):
    """Serves `seconds` of a slow download: 1 KiB every 0.1 s (Content-Length given)."""

    seconds = 4.0

    def do_GET(self) -> None:  # noqa: N802
        chunks = int(self.seconds / 0.1)
        self.send_response(200)
        self.send_header("Content-Length", str(chunks * 1024))
        self.end_headers()
        try:
            for _ in range(chunks):
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.txt"
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


test_vm_processes.__test__ = False


BROKER_NAMES: set[str] = set()  # work queues and status exchanges tests made (each also has .dead, .listener)


def made_on_the_broker(queue: str, exchange: str) -> None:
    """Note a test's work queue and status exchange: the end of the run checks they were deleted."""
    BROKER_NAMES.update({f"queue {queue}", f"queue {queue}.dead", f"queue {exchange}.listener",
                         f"exchange {queue}.dead", f"exchange {exchange}"})


def _left_on_the_broker() -> list[str]:
    if not BROKER_NAMES:
        return []
    left = []
    quiet = logging.getLogger("pika")
    level, quiet.level = quiet.level, logging.CRITICAL  # each 404 (gone, as it should be) is not a warning
    connection = rabbit()
    try:
        for name in sorted(BROKER_NAMES):
            kind, _, what = name.partition(" ")
            channel = connection.channel()
            try:
                if kind == "queue":
                    channel.queue_declare(what, passive=True)
                else:
                    channel.exchange_declare(what, passive=True)
                left.append(name)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:  # 404: gone, as it should be
                pass
    finally:
        connection.close()
        quiet.setLevel(level)
    return left


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # every temp file lando-ssh (and the tests' own processes) makes lands here; it must be empty at the end
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path dirs stay where they were (it cleans them itself)
    scratch = tempfile.mkdtemp(prefix=f"lando-test-tmp-{os.getpid()}-")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None
    yield
    deadline = time.monotonic() + 5
    while (left := test_vm_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for line in left:
        try:
            os.kill(int(line.split(":")[0]), 9)
        except OSError:
            pass
    leftovers = [f"VM process {line}" for line in left]
    leftovers += [f"temp file {os.path.join(scratch, name)}" for name in sorted(os.listdir(scratch))]
    shutil.rmtree(scratch, ignore_errors=True)
    leftovers += [f"RabbitMQ {name}" for name in _left_on_the_broker()]
    if leftovers:
        pytest.fail("the tests left these behind:\n" + "\n".join(leftovers), pytrace=False)
