"""The real bespin-api (Duke-GCB/bespin-api at cea5c20, from ../shared/bespin-api), for the tests.

`RealBespin.start()` builds it once per machine (the shared `setup.sh`: a Python 3.6 virtualenv under
$BESPIN_HOME, default /tmp/bespin-api-real, and a migrated template database), gives this test run a database
of its own copied from that template, and serves it with Django's runserver on a free port. Tests then drive it
as its users and admins do, through its own REST endpoints: a user creates a job from a workflow tag
(`job-templates/create-job`), an admin gives it a run token, the user authorizes and starts, cancels or
restarts it (`POST api/v2/jobs/N/start|cancel|restart/`, bespin's `LandoJob`, which publishes lando-messaging's
pickled WorkRequest). What bespin's REST API cannot make (job runtimes, cloud settings) is made with its own
models by `admin_objects.py`. `stop()` ends the server and drops the run's database.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "bespin-api"
HOME = Path(os.environ.get("BESPIN_HOME", "/tmp/bespin-api-real"))
TEMPLATE_DB = "bespin_api_test"  # setup.sh's database, migrated: each run copies it
DB_ADMIN_URL = "postgresql://bespin:bespin@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "lando0admin0token0000000000000000000001"
USER_TOKEN = "lando0user0token00000000000000000000001"
EMAIL_EXCHANGE = "EmailExchange"  # bespin's mailer publishes every state change there (bespin-mailer declares it)


class BespinError(AssertionError):
    """bespin-api refused a request a test expected it to take."""


class RealBespin:
    def __init__(self) -> None:
        self.db = f"bespin_lando_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = HOME / f"runserver-{self.db}.log"

    @property
    def url(self) -> str:
        """What lando-ssh's `bespin_api.url` names: the v2 API, whose admin serializers lando read."""
        return f"http://127.0.0.1:{self.port}/api/v2"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": f"postgres://bespin:bespin@127.0.0.1:5432/{self.db}"}

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> RealBespin:
        HOME.mkdir(parents=True, exist_ok=True)
        with open(HOME / ".lock", "w") as lock:  # one build, and one copy of the template, at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (HOME / "ready").exists():
                subprocess.run(["bash", str(SHARED / "setup.sh")], check=True, capture_output=True,
                               env={**os.environ, "BESPIN": str(HOME), "BESPIN_DB": TEMPLATE_DB})
                (HOME / "ready").write_text("built by lando-ssh's tests\n")
            _sql(f'CREATE DATABASE "{self.db}" TEMPLATE "{TEMPLATE_DB}" OWNER bespin')
        self._email_exchange()
        self.admin_objects(queue="unused", workflow_url="http://127.0.0.1/none.cwl")  # accounts and templates
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(HOME / "venv" / "bin" / "python"), "manage.py", "runserver", f"127.0.0.1:{self.port}",
                 "--noreload"], cwd=HOME / "src", env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/", timeout=2).status_code < 500:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bespin-api did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
        _sql(f'DROP DATABASE IF EXISTS "{self.db}"')
        self.log.unlink(missing_ok=True)

    @staticmethod
    def _email_exchange() -> None:
        """bespin's mailer publishes to EmailExchange, which bespin-mailer declares at a site (without it every
        state-changing PUT answers 500). Declared, never deleted: another test run on this broker may be using it."""
        from conftest import rabbit

        with rabbit() as connection:
            connection.channel().exchange_declare(EMAIL_EXCHANGE, "direct", durable=True)

    # -- the admin's side ----------------------------------------------------------------------------------
    def admin_objects(self, **spec: Any) -> dict[str, Any]:
        """One workflow set-up (see admin_objects.py for `spec`'s keys); returns its tag and ids."""
        spec["tokens"] = {"admin": ADMIN_TOKEN, "user": USER_TOKEN}
        done = subprocess.run([str(HOME / "venv" / "bin" / "python"), str(Path(__file__).with_name("admin_objects.py")),
                               json.dumps(spec)], cwd=HOME / "src", env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"admin_objects.py failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def workflow(self, queue: str, workflow_url: str, **spec: Any) -> str:
        """The tag of a new workflow set-up whose jobs go to `queue`."""
        return str(self.admin_objects(queue=queue, workflow_url=workflow_url, **spec)["tag"])

    # -- the user's side -----------------------------------------------------------------------------------
    def create_job(self, tag: str, job_order: dict[str, Any], url_files: list[dict[str, Any]] = (),  # type: ignore[assignment]
                   name: str = "test job", authorize: bool = True) -> int:
        """A job as a bespin user makes it: a stage group with its url files, then create-job from the tag;
        where the site requires run tokens, authorized with one an admin made (unless `authorize` is False)."""
        group = self.call("user", "POST", "job-file-stage-groups/", {})["id"]
        for i, f in enumerate(url_files):
            self.call("user", "POST", "url-job-input-files/", {"stage_group": group, "sequence_group": 1,
                                                               "sequence": i, **f})
        made = self.call("user", "POST", "job-templates/create-job/", {
            "tag": tag, "name": name, "fund_code": "001", "stage_group": group, "job_order": job_order})
        job_id = int(made["job"])
        if authorize and self.job(job_id)["state"] == "N":  # N where the site sets REQUIRE_JOB_TOKENS
            token = self.call("admin", "POST", "../admin/job-tokens/", {"token": uuid.uuid4().hex})["token"]
            self.call("user", "POST", f"jobs/{job_id}/authorize/", {"token": token})
        return job_id

    def start_job(self, job_id: int) -> dict[str, Any]:
        return self.call("user", "POST", f"jobs/{job_id}/start/", {})

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.call("user", "POST", f"jobs/{job_id}/cancel/", {})

    def restart_job(self, job_id: int) -> dict[str, Any]:
        return self.call("user", "POST", f"jobs/{job_id}/restart/", {})

    def delete_job(self, job_id: int) -> requests.Response:
        return self.request("user", "DELETE", f"jobs/{job_id}/")

    # -- bespin's records ----------------------------------------------------------------------------------
    def job(self, job_id: int) -> dict[str, Any]:
        return self.call("admin", "GET", f"admin/jobs/{job_id}/")

    def put_job(self, job_id: int, **fields: Any) -> dict[str, Any]:
        """An admin's change to the job's fields (as lando sent them: only the fields that change)."""
        return self.call("admin", "PUT", f"admin/jobs/{job_id}/", fields)

    def errors_of(self, job_id: int) -> list[dict[str, Any]]:
        return sorted(self.call("admin", "GET", f"admin/job-errors/?job={job_id}"), key=lambda e: e["id"])

    def activity_of(self, job_id: int) -> list[tuple[str, str]]:
        """Every (state, step) bespin recorded for the job (a JobActivity row per change), in order."""
        rows = self.call("user", "GET", f"../job-activities/?job={job_id}")
        return [(r["state"], r["step"]) for r in sorted(rows, key=lambda r: r["id"])]

    # -- requests ------------------------------------------------------------------------------------------
    def request(self, who: str, method: str, path: str, data: Any = None) -> requests.Response:
        token = ADMIN_TOKEN if who == "admin" else USER_TOKEN
        url = requests.compat.urljoin(f"{self.url}/", path)
        return requests.request(method, url, json=data, timeout=60, headers={"Authorization": f"Token {token}"})

    def call(self, who: str, method: str, path: str, data: Any = None) -> Any:
        resp = self.request(who, method, path, data)
        if resp.status_code >= 400:
            raise BespinError(f"bespin-api refused {method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None


def _sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(DB_ADMIN_URL, autocommit=True) as db:
        db.execute(statement)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
