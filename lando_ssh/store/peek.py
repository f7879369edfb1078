"""A look at one job that never writes: `lando-ssh send` checks a command against the job's state before
publishing it, without creating a store file, a schema, or a bespin-api job's local copy, and without
asking a store that does not answer at once.

`peek_job` returns the job, raises UnknownJob when the store says it has no such job, and returns None
when it cannot tell (no store file yet, a store it may not read, bespin-api or PostgreSQL down): then
the daemon decides, as before.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any

from lando_ssh.errors import LandoError, UnknownJob
from lando_ssh.model import Job

log = logging.getLogger(__name__)

PEEK_TIMEOUT = 3.0  # seconds a store may take to answer before `send` goes on without its word


def peek_job(config: Any, job_id: int) -> Job | None:
    local = _peek_url(config.store_url, job_id)
    if config.bespin_api is None or not config.bespin_api.url:
        return local
    if local is not None and "bespin" in local.facts:
        return local
    return _peek_bespin(config, job_id)


def _peek_url(url: str, job_id: int) -> Job | None:
    try:
        if url.startswith("sqlite:"):
            return _peek_sqlite(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite:"):],
                                job_id)
        if url.startswith(("postgresql:", "postgres:")):
            return _peek_postgres(url, job_id)
    except UnknownJob:
        raise
    except Exception as e:  # noqa: BLE001 - whatever stops the look, the daemon still decides
        log.debug("cannot look at job %s in the job store: %s", job_id, e)
    return None


def _peek_sqlite(path: str, job_id: int) -> Job | None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PEEK_TIMEOUT)
    try:
        try:
            row = db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        except sqlite3.OperationalError:  # no table yet: a store nothing was ever submitted to
            return None
    finally:
        db.close()
    if row is None:
        raise UnknownJob(job_id)
    return Job.from_dict(json.loads(row[0]))


def _peek_postgres(url: str, job_id: int) -> Job | None:
    import psycopg

    with psycopg.connect(url, connect_timeout=int(PEEK_TIMEOUT), autocommit=True) as conn:
        conn.read_only = True
        try:
            row = conn.execute("SELECT data FROM lando_jobs WHERE id=%s", (job_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    if row is None:
        raise UnknownJob(job_id)
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return Job.from_dict(data)


def _peek_bespin(config: Any, job_id: int) -> Job | None:
    from lando_ssh.store.bespin import BespinApi, BespinRejected, UnknownBespinJob, first_state

    try:
        api = BespinApi(config.bespin_api, timeout=PEEK_TIMEOUT, retry_for=0)
        data = api.get_job(job_id)  # a GET: bespin-api's record, nothing kept here
    except BespinRejected as e:
        if e.status == 404:
            raise UnknownBespinJob(job_id, api.base) from None
        return None
    except LandoError:
        return None
    try:
        state = first_state(data.get("state"))  # as the daemon will load it: bespin's S, c, r are requests
    except ValueError:
        return None
    return Job(id=job_id, name=str(data.get("name") or ""), workflow="", job_order={}, state=state)
