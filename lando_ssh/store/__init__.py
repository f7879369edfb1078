"""Job sources behind one interface: `sqlite` (default), `postgres`, `bespin` (REST).

`open_store(url)` picks the backend from the URL's scheme. Every change to a job goes
through `update(job_id, change)`, which reads the job fresh, applies `change` and writes
it back atomically, so the engine and a concurrent `cancel_job` never overwrite each
other.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from lando_ssh.model import Job, JobState


class JobStore(Protocol):
    """A job source. Stores that support several servers (postgres; sqlite trivially, for one server)
    also offer leases, optional in this protocol (check with `hasattr(store, "claim")`):

    - `claim(job_id, owner, ttl) -> bool`: take or renew the job's lease for `ttl` seconds if it is free,
      expired or already `owner`'s; False when another server holds it.
    - `renew(owner, ttl) -> int`: extend every lease `owner` holds; returns how many.
    - `release(job_id, owner)`: give up `owner`'s lease on the job.
    - `owned_or_orphaned(states, owner) -> list[Job]`: jobs in `states` whose lease is `owner`'s, expired or
      absent (candidates to resume: claim each first).

    A store may also offer `list_summaries() -> list[Job]`: every job, oldest first, without its job order,
    workflow and output object (what the status page lists: a fraction of the reading).
    """

    def create(self, job: Job) -> Job:
        """Store a new job; returns it with its id assigned (`job.id` is ignored)."""
        ...

    def insert(self, job: Job) -> Job:
        """Store a job under its own id (a job source's, as bespin-api's), unless one is stored under that id
        already (loaded meanwhile by another process); returns the stored job. Later `create`s get other ids."""
        ...

    def get(self, job_id: int) -> Job:
        """The job, or raise `UnknownJob`."""
        ...

    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        """Read job `job_id`, apply `change` to it, write it back in one transaction; returns it.

        `change` may raise to abort; nothing is written then.
        """
        ...

    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        """Jobs in `states` (all when None), oldest first."""
        ...

    def close(self) -> None:
        ...


def open_store(url: str) -> JobStore:
    if url.startswith("sqlite:"):
        from lando_ssh.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from lando_ssh.store.postgres import PostgresStore

        return PostgresStore(url)
    from lando_ssh.errors import ConfigError

    raise ConfigError(f"store.url {url!r} is not a sqlite:/// or postgresql:// URL")


def open_job_source(config: Any, *, serving: bool = False) -> JobStore:
    """The job source the config names: bespin-api when `bespin_api.url` is set (the local store then keeps
    what bespin-api has no field for), else the local store. `serving`: the daemon's own (it sends bespin-api
    the changes it missed while down)."""
    if config.bespin_api is not None and config.bespin_api.url:
        from lando_ssh.store.bespin import BespinStore

        return BespinStore(config, resync=serving)
    return open_store(config.store_url)


def safe_url(url: str) -> str:
    """`url` without its password (in the user part or as a `password=` parameter)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(an unparsable store URL)"
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if "@" not in parts.netloc and not any(k == "password" for k, _ in pairs):
        return url  # nothing to hide (and sqlite:////path keeps its slashes)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        netloc = f"{creds.split(':', 1)[0]}@{host}"
    query = urllib.parse.urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
