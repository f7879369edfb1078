"""The daemon: consumes commands, runs jobs side by side, resumes its jobs at start, stops gracefully.

The loop:
  1. At start, every job left in S, R, r or c is resumed where it was recorded (a running cwltool
     is re-attached by waiting on it; a VM asked for but not recorded is found by name).
  2. The broker hands over one command at a time (`handle`); the command is recorded on the job
     before `handle` returns, and only then is the message acknowledged.
  3. Jobs wait in S ("waiting: 50 of 50 job slots busy") until a slot frees; a slot runs one job's
     pipeline in its own thread, so one job's slow VM never delays another's.
  4. SIGTERM/SIGINT: stop consuming, tell the pipelines to stop at their next safe point (a running
     workflow keeps running on its VM), and exit; the next start picks everything up.
"""
from __future__ import annotations

import heapq
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lando_ssh.cloud import Cloud, open_cloud
from lando_ssh.config import Config
from lando_ssh.errors import JobConflict, LandoError
from lando_ssh.journal import Journal
from lando_ssh.messages import Command, Message
from lando_ssh.model import ACTIVE_STATES, RESTARTABLE_STATES, STARTABLE_STATES, Job, JobState, JobStep
from lando_ssh.pipeline import STEP_NAMES, Pipeline
from lando_ssh.store import open_job_source

log = logging.getLogger(__name__)

STOP_GRACE = 8.0  # seconds the pipelines get to reach a safe point at shutdown


@dataclass(order=True)
class _Waiting:
    sort_key: tuple[int, float]
    job_id: int = field(compare=False)


class Server:
    def __init__(self, config: Config, *, broker: Any = None, cloud: Cloud | None = None):
        self.config = config
        self.stopping = threading.Event()
        self.broker = broker
        if self.broker is None:
            from lando_ssh.broker import Broker

            self.broker = Broker(config.work_queue)
        self.journal = Journal(open_job_source(config, serving=True), [self._log_change, self._publish_change])
        self.cloud = cloud or open_cloud(config)
        self._lock = threading.Lock()
        self._running: dict[int, Pipeline] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._waiting: list[_Waiting] = []
        self._queued: set[int] = set()
        self._told: dict[int, str] = {}  # the waiting reason each queued job was last given

    # -- lifecycle -------------------------------------------------------------------------
    def serve(self) -> None:
        """Run until `stop()` (or SIGTERM/SIGINT when called from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self.broker.declare()
        self.recover()
        log.info("serving %s (store %s, cloud %s, up to %d jobs at once)", self.config.work_queue.listen_queue,
                 _safe_url(self.config.store_url), self.cloud.name, self.config.limits.max_concurrent_jobs)
        try:
            self.broker.consume(self.handle, self.stopping)
        finally:
            self._shutdown()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new commands; running workflows keep running on their VMs")
            self.stopping.set()

    def _shutdown(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + STOP_GRACE
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t.name for t in self._threads.values() if t.is_alive()]
        if left:
            log.warning("stopped with %d job threads still in a call (%s); their jobs resume at next start",
                        len(left), ", ".join(left))
        if hasattr(self.broker, "close"):
            self.broker.close()
        self.cloud.close()
        self.journal.store.close()  # a remote job source (bespin-api) gets what is still queued for it
        log.info("stopped")

    def recover(self) -> None:
        """Resume every job this server was working on when it stopped."""
        jobs = self.journal.list(ACTIVE_STATES)
        for job in jobs:
            log.info("job %s: resuming (state %s, step %s)", job.id, job.state.value, job.step.value or "-")
            self._enqueue(job)
        self._schedule()

    # -- commands --------------------------------------------------------------------------
    def handle(self, message: Message) -> None:
        """Record `message` on its job (raising BadInput for an unknown job or a refused command)."""
        job = self.journal.get(message.job_id)
        if message.command == Command.START_JOB:
            self._start(job)
        elif message.command == Command.CANCEL_JOB:
            self._cancel(job)
        elif message.command == Command.RESTART_JOB:
            self._restart(job)

    def _start(self, job: Job) -> None:
        if job.state in STARTABLE_STATES:
            wait = self._wait_reason(extra=1)  # recorded with the state: one write per start_job

            def change(j: Job) -> None:
                j.set_state(JobState.STARTING, JobStep.NONE, note="start_job received")
                j.reason = wait or ""

            job = self.journal.update(job.id, change)
            if wait:
                self._told[job.id] = wait
            self._enqueue(job)
            self._schedule()
        elif job.state in ACTIVE_STATES:
            log.info("job %s: start_job again while it is %s; nothing to do", job.id, job.state.name.lower())
        else:
            raise JobConflict(f"job {job.id} is {job.state.name.lower()} ({job.state.value}); start_job only starts "
                              "new or authorized jobs (use restart_job for errored or canceled ones)")

    def _cancel(self, job: Job) -> None:
        if job.state in (JobState.CANCELED, JobState.CANCELING, JobState.FINISHED, JobState.DELETED):
            log.info("job %s: cancel_job while it is %s; nothing to do", job.id, job.state.name.lower())
            return
        has_vm = bool(job.vm and not job.vm.deleted)
        if job.state in STARTABLE_STATES or (job.state == JobState.ERROR and not has_vm):
            self.journal.update(job.id, lambda j: (setattr(j, "reason", "canceled"),
                                                   j.set_state(JobState.CANCELED, note="cancel_job received")))
            return
        self.journal.update(job.id, lambda j: j.set_state(JobState.CANCELING, note="cancel_job received"))
        with self._lock:
            pipeline = self._running.get(job.id)
        if pipeline is not None:
            pipeline.request_cancel()
        else:  # waiting for a slot, or an errored job's kept VM: a pipeline finishes the cancel (deletes the VM)
            self._enqueue(self.journal.get(job.id), front=True)
            self._schedule()

    def _restart(self, job: Job) -> None:
        if job.state in RESTARTABLE_STATES:
            job = self.journal.update(job.id, lambda j: (j.set_state(JobState.RESTARTING, note="restart_job received"),
                                                          j.facts.update(restart_pending=True)))
            self._enqueue(job)
            self._schedule()
        elif job.state in ACTIVE_STATES:
            log.info("job %s: restart_job while it is %s; nothing to do", job.id, job.state.name.lower())
        else:
            raise JobConflict(f"job {job.id} is {job.state.name.lower()} ({job.state.value}); restart_job only "
                              "restarts errored or canceled jobs")

    # -- slots -----------------------------------------------------------------------------
    def _enqueue(self, job: Job, front: bool = False) -> None:
        with self._lock:
            if job.id in self._queued or job.id in self._running:
                return
            key = (-10**9 if front else -job.priority, job.created.timestamp())
            heapq.heappush(self._waiting, _Waiting(key, job.id))
            self._queued.add(job.id)

    def _wait_reason(self, extra: int = 0) -> str | None:
        """Why a job that arrives now must wait, or None when a slot is free for it."""
        limit = self.config.limits.max_concurrent_jobs
        with self._lock:
            if len(self._running) + len(self._waiting) + extra <= limit:
                return None
            return f"waiting: {len(self._running)} of {limit} job slots busy"

    def _schedule(self) -> None:
        """Start waiting jobs while slots are free; tell the others why they wait."""
        if self.stopping.is_set():
            return
        limit = self.config.limits.max_concurrent_jobs
        to_start: list[int] = []
        with self._lock:
            while self._waiting and len(self._running) + len(to_start) < limit:
                item = heapq.heappop(self._waiting)
                self._queued.discard(item.job_id)
                self._told.pop(item.job_id, None)
                to_start.append(item.job_id)
            waiting = [w.job_id for w in self._waiting]
            busy = len(self._running) + len(to_start)
        for job_id in to_start:
            self._launch(job_id)
        reason = f"waiting: {busy} of {limit} job slots busy"
        for job_id in waiting:
            if self._told.get(job_id) != reason:  # write a reason only when it changed
                self._told[job_id] = reason
                self.journal.update(job_id, lambda j: setattr(j, "reason", reason)
                                    if j.state in (JobState.STARTING, JobState.RESTARTING) else None)

    def _launch(self, job_id: int) -> None:
        pipeline = Pipeline(self.config, self.journal, self.cloud, stopping=self.stopping)
        thread = threading.Thread(target=self._run_job, args=(job_id, pipeline), name=f"job-{job_id}", daemon=True)
        with self._lock:
            self._running[job_id] = pipeline
            self._threads[job_id] = thread
        thread.start()

    def _run_job(self, job_id: int, pipeline: Pipeline) -> None:
        try:
            job = self.journal.get(job_id)
            if job.state == JobState.RESTARTING and job.facts.get("restart_pending"):
                pipeline.restart(job_id)
            job = pipeline.run(job_id)
            log.info("job %s: %s", job_id, _ending(job))
        except LandoError as e:
            log.error("job %s: %s", job_id, e)
        except Exception:
            log.exception("job %s: internal error", job_id)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._threads.pop(job_id, None)
            self._schedule()

    # -- listeners -------------------------------------------------------------------------
    def _log_change(self, job: Job) -> None:
        step = f" step {job.step.value} ({STEP_NAMES[job.step]})" if job.step.value else ""
        reason = f": {job.reason}" if job.reason else ""
        log.info("job %s: state %s%s%s", job.id, job.state.value, step, reason)

    def _publish_change(self, job: Job) -> None:
        self.broker.publish_status(job.id, job.state.value, job.step.value)

    @property
    def running_jobs(self) -> list[int]:
        with self._lock:
            return sorted(self._running)


def _ending(job: Job) -> str:
    if job.state == JobState.FINISHED:
        return f"finished; outputs in {job.output_dir}"
    if job.state in (JobState.ERROR, JobState.CANCELED):
        return job.reason or job.state.name.lower()
    return f"left in state {job.state.value} step {job.step.value or '-'}"


def _safe_url(url: str) -> str:
    """A store URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url
