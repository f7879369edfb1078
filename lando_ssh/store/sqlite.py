"""The default job store: one SQLite file, the job as JSON beside indexed state columns."""
from __future__ import annotations

import builtins
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from lando_ssh import exactjson  # a job order's floats kept as written (cwltool prints them so)
from lando_ssh.errors import ConfigError, StoreUnavailable, UnknownJob
from lando_ssh.model import Job, JobState, now

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    step TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


F = TypeVar("F", bound=Callable[..., Any])


def _translated(method: F) -> F:
    """sqlite3's errors, said as what they mean for the job store (a damaged file, a full disk)."""

    @functools.wraps(method)
    def call(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            text = str(e)
            if "not a database" in text or "malformed" in text:
                why = "it is not a readable SQLite database (damaged, or another kind of file)"
            elif "disk is full" in text or "disk I/O error" in text:
                why = f"the disk holding it failed or is full ({text})"
            elif "readonly" in text or "unable to open" in text:
                why = f"it cannot be written here ({text}); check the permissions of the file and its directory"
            else:
                why = text
            raise StoreUnavailable(f"the job store {self.path} cannot be used: {why}") from None

    return call  # type: ignore[return-value]


class SqliteStore:
    shared = False  # one server (and foreground `lando-ssh job` runs) per file
    def __init__(self, url: str):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite:"):]
        if not path:
            raise ConfigError(f"store.url {url!r} names no file")
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fresh = not os.path.exists(path)
            if fresh:  # the store holds job data; only its owner reads it
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            raise ConfigError(f"cannot create the job store {path}: {e.strerror}") from None
        self._local = threading.local()
        # one writer at a time within this process, waiting in line: SQLite's own busy handler polls with
        # sleeps, which under a thousand job threads let some writers wait past the 30 s timeout
        # ("database is locked") while others got in again and again
        self._write_lock = threading.RLock()
        self._create_schema()

    @_translated
    def _create_schema(self) -> None:
        with self._conn() as db:
            db.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @_translated
    def create(self, job: Job) -> Job:
        with self._write_lock:
            return self._create(job)

    def _create(self, job: Job) -> Job:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute("INSERT INTO jobs (state, step, priority, created, data) VALUES (?,?,?,?,?)",
                             (job.state.value, job.step.value, job.priority, job.created.isoformat(), "{}"))
            job.id = int(cur.lastrowid or 0)
            if not job.history:
                job.history = []
            db.execute("UPDATE jobs SET data=? WHERE id=?", (exactjson.dumps(job.to_dict()), job.id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return job

    @_translated
    def insert(self, job: Job) -> Job:
        self._conn().execute("INSERT OR IGNORE INTO jobs (id, state, step, priority, created, data) "
                             "VALUES (?,?,?,?,?,?)", (job.id, job.state.value, job.step.value, job.priority,
                                                     job.created.isoformat(), exactjson.dumps(job.to_dict())))
        return self.get(job.id)

    @_translated
    def get(self, job_id: int) -> Job:
        row = self._conn().execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        return Job.from_dict(exactjson.loads(row[0]))

    @_translated
    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        with self._write_lock:
            return self._update(job_id, change)

    def _update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(job_id)
            job = Job.from_dict(exactjson.loads(row[0]))
            change(job)
            job.updated = max(job.updated, now())
            db.execute("UPDATE jobs SET state=?, step=?, priority=?, data=? WHERE id=?",
                       (job.state.value, job.step.value, job.priority, exactjson.dumps(job.to_dict()), job_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return job

    @_translated
    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        db = self._conn()
        if states is None:
            rows = db.execute("SELECT data FROM jobs ORDER BY id").fetchall()
        else:
            codes = [s.value for s in states]
            marks = ",".join("?" * len(codes))
            query = f"SELECT data FROM jobs WHERE state IN ({marks}) ORDER BY id"  # noqa: S608 (only '?' marks)
            rows = db.execute(query, codes).fetchall()
        return [Job.from_dict(exactjson.loads(r[0])) for r in rows]

    @_translated
    def list_summaries(self) -> builtins.list[Job]:
        """Every job, oldest first, without its job order and workflow (the bulk of a record)."""
        rows = self._conn().execute("SELECT json_remove(data, '$.job_order', '$.workflow_doc', '$.output') FROM jobs "
                                    "ORDER BY id").fetchall()
        return [Job.from_dict(exactjson.loads(r[0])) for r in rows]

    # -- leases: one server owns a SQLite store, so every job is always its to claim --------
    @_translated
    def claim(self, job_id: int, owner: str, ttl: float) -> bool:
        if self._conn().execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone() is None:
            raise UnknownJob(job_id)
        return True

    @_translated
    def renew(self, owner: str, ttl: float) -> int:
        return 0  # no leases are kept

    @_translated
    def release(self, job_id: int, owner: str) -> None:
        pass

    @_translated
    def owned_or_orphaned(self, states: Iterable[JobState], owner: str) -> builtins.list[Job]:
        return self.list(states)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
