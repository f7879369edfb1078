"""Every change to a job goes through the journal: stored first, then told to the listeners
(the log, the broker's `job_status` exchange, the foreground progress display)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from lando_ssh.model import Job, JobState, note_wait
from lando_ssh.store import JobStore

log = logging.getLogger(__name__)

Listener = Callable[[Job], object]


def setting(**attributes: Any) -> Callable[[Job], None]:
    """A change for `Journal.update` that sets these attributes of the job."""
    def change(job: Job) -> None:
        for name, value in attributes.items():
            setattr(job, name, value)

    return change


def recording(**facts: Any) -> Callable[[Job], None]:
    """A change for `Journal.update` that records these facts on the job."""
    def change(job: Job) -> None:
        job.facts.update(facts)

    return change


class Journal:
    def __init__(self, store: JobStore, listeners: Iterable[Listener] = ()):
        self.store = store
        self.listeners: list[Listener] = list(listeners)

    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def load(self, job_id: int) -> Job:
        """The job, for a command that acts on it: a job source that reads jobs from elsewhere (bespin-api)
        takes it in here (`get` only reads)."""
        load = getattr(self.store, "load", None)
        return load(job_id) if load is not None else self.store.get(job_id)

    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        return self.store.list(states)

    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        """Apply `change` atomically; listeners hear of it when the state, step or reason moved. A waiting
        job's history records what it waits for (model.note_wait)."""
        seen: list[tuple[str, str, str]] = []

        def wrapped(job: Job) -> None:
            seen.append((job.state.value, job.step.value, job.reason))
            entries = len(job.history)
            change(job)
            note_wait(job, seen[-1][2], entries)

        job = self.store.update(job_id, wrapped)
        if seen and seen[-1] != (job.state.value, job.step.value, job.reason):
            self.announce(job)
        return job

    def announce(self, job: Job) -> None:
        for listener in self.listeners:
            try:
                listener(job)
            except Exception:  # a listener's failure (e.g. broker down) must not stop the job
                log.exception("job %s: a listener failed", job.id)
