"""What the commands share: exit codes and the job store a command reads."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lando_ssh.config import Config
from lando_ssh.errors import UnknownJob
from lando_ssh.model import Job, JobState

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3


def journal_of(config: Config, listeners: Sequence[Any] = (), *, reading: bool = False) -> Any:
    """The journal over the job store (or job source: bespin-api) the config names. `reading`: a command that
    only looks does not create a SQLite store that is not there (as root in the service's data dir, a file
    it made would lock the daemon out of it): it sees no jobs."""
    from lando_ssh.journal import Journal
    from lando_ssh.store import open_job_source

    store: Any = NoJobs() if reading and store_missing(config) else open_job_source(config)
    return Journal(store, listeners)


def store_missing(config: Config) -> bool:
    url = config.store_url
    if (config.bespin_api is not None and config.bespin_api.url) or not url.startswith("sqlite:"):
        return False
    return not os.path.exists(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite:"):])


class NoJobs:
    """The job store that does not exist yet, for the commands that only read."""

    shared = False

    def get(self, job_id: int) -> Job:
        raise UnknownJob(job_id)

    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        raise UnknownJob(job_id)

    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        return []

    def close(self) -> None:
        pass
