"""The daemon: consumes commands, runs jobs side by side, resumes its jobs at start, stops gracefully.

The loop:
  1. At start, every job left in S, R, r or c is resumed where it was recorded (a running cwltool
     is re-attached by waiting on it; a VM asked for but not recorded is found by name).
  2. The broker hands over one command at a time (`handle`); the command is recorded on the job
     before `handle` returns, and only then is the message acknowledged.
  3. Jobs wait in S ("waiting: 50 of 50 job slots busy") until a slot frees; a slot runs one job's
     engine in its own thread, so one job's slow VM never delays another's.
  4. SIGTERM/SIGINT: stop consuming, tell the engines to stop at their next safe point (a running
     workflow keeps running on its VM), and exit; the next start picks everything up.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lando_ssh.cloud import Cloud, Flavor, Quota, open_cloud
from lando_ssh.config import Config
from lando_ssh.engine import Engine
from lando_ssh.engine.lease import Lease
from lando_ssh.errors import CloudError, JobConflict, JobHeldElsewhere, LandoError
from lando_ssh.headroom import idle_figures, measure, raise_descriptor_limit, room
from lando_ssh.installation import tagged_vms
from lando_ssh.journal import Journal, recording
from lando_ssh.messages import Command, Message
from lando_ssh.metrics import METRICS, start_metrics_server
from lando_ssh.model import (
    ACTIVE_STATES,
    STARTABLE_STATES,
    STEP_NAMES,
    Job,
    JobState,
    JobStep,
    Verdict,
    command_verdict,
)
from lando_ssh.pool.manager import pool_for
from lando_ssh.pool.model import LIVE
from lando_ssh.pool.placement import PoolJob, pool_job
from lando_ssh.scheduler import ActiveVm, Limits, WaitingJob, active_vm, schedule, waiting_job
from lando_ssh.store import open_job_source, safe_url
from lando_ssh.sweep import sweep

log = logging.getLogger(__name__)

STOP_GRACE = 8.0  # seconds the engines get to reach a safe point at shutdown
QUOTA_TTL = 15.0  # seconds the cloud's quota figures are reused
FLAVORS_TTL = 300.0
RESCHEDULE = 5.0  # seconds between decisions while jobs wait, besides those a job's start or end makes
#: with the pool, a new job waits until no other has arrived for GATHER seconds (at most GATHER_MOST), so a burst
#: is placed (and packed) together
GATHER = 0.5
GATHER_MOST = 3.0


class Server:
    def __init__(self, config: Config, *, broker: Any = None, cloud: Cloud | None = None):
        self.config = config
        self.stopping = threading.Event()
        self.broker = broker
        if self.broker is None:
            from lando_ssh.broker import Broker

            self.broker = Broker(config.work_queue)
        self.journal = Journal(open_job_source(config, serving=True),
                               [self._log_change, self._publish_change, self._track_vm, METRICS.observe_job])
        self.store: Any = self.journal.store
        self.shared = bool(getattr(self.store, "shared", False))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"  # this server, for leases
        self.lease = Lease(self.store, self.owner, config.store.lease_ttl)
        self._stops: dict[int, threading.Event] = {}  # per running job: set to stop it at a safe point
        self.cloud = cloud or open_cloud(config)
        #: the VM pool (pool.share other than job), else None: every job boots its own VM
        self.pool = pool_for(config, self.store, self.cloud)
        #: waiting jobs as the pool sees them (None: the job has its VM already, it only resumes)
        self._pool_jobs: dict[int, PoolJob | None] = {}
        self._lock = threading.Lock()
        self._running: dict[int, Engine] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._waiting: dict[int, WaitingJob] = {}
        self._queued: dict[int, Engine] = {}  # the waiting jobs' engines, holding their jobs' locks
        self._held: dict[int, ActiveVm] = {}  # VMs our started or resumed jobs hold or are being given
        self._told: dict[int, str] = {}  # the waiting reason each queued job was last given
        self._schedule_lock = threading.Lock()  # one decision at a time
        self._arrived = threading.Event()  # with the pool: jobs came; the next round is in GATHER seconds
        self._still_arriving = False  # the last gathering stopped at its cap while jobs kept coming
        self._flavor_list: list[Flavor] = []
        self._flavors_at = 0.0
        self._quota_cache: Quota | None = None
        self._quota_at = 0.0
        raise_descriptor_limit()
        self._idle = idle_figures()  # the server before any job: what a job costs is measured against it

    # -- lifecycle -------------------------------------------------------------------------
    def serve(self) -> None:
        """Run until `stop()` (or SIGTERM/SIGINT when called from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self.broker.declare()
        metrics_server = start_metrics_server(self.config.metrics.listen) if self.config.metrics.listen else None
        web_server = None
        if self.config.web.listen:
            from lando_ssh.web import start_web_server

            web_server = start_web_server(self.config)
        METRICS.observe_jobs(self.journal.list())
        if self.pool is not None:
            METRICS.watch_pool(self.pool.store.list)
            self._adopt_pool()
        self.recover()
        threading.Thread(target=self._sweep_forever, name="sweep", daemon=True).start()
        threading.Thread(target=self._schedule_forever, name="schedule", daemon=True).start()
        if self.shared:
            threading.Thread(target=self._leases_forever, name="leases", daemon=True).start()
        log.info("serving %s (store %s, cloud %s, up to %d jobs at once)", self.config.work_queue.listen_queue,
                 safe_url(self.config.store_url), self.cloud.name, self.config.limits.max_concurrent_jobs)
        for key in self.config.unused:
            log.info("config %s: lando's key %s is not used by lando-ssh", self.config.source, key)
        try:
            self.broker.consume(self.handle, self.stopping)
        finally:
            self._shutdown()
            for http_server in (metrics_server, web_server):
                if http_server is not None:
                    http_server.shutdown()
                    http_server.server_close()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new commands; running workflows keep running on their VMs")
            self.stopping.set()

    def _shutdown(self) -> None:
        self.stopping.set()
        with self._lock:
            for stop in self._stops.values():
                stop.set()
            queued = list(self._queued.items())
        for job_id, engine in queued:  # waiting jobs: the next start (or a `job N`) takes them up
            engine.let_go(job_id)
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
        """Resume every job this server was working on when it stopped; with a shared store, also
        adopt the jobs of servers whose leases ran out."""
        if self.shared:
            jobs = self.store.owned_or_orphaned(ACTIVE_STATES, self.owner)
        else:
            jobs = self.journal.list(ACTIVE_STATES)
        for job in jobs:
            with self._lock:
                if job.id in self._running or job.id in self._waiting:
                    continue
            if not self._claim(job.id):
                continue
            log.info("job %s: resuming (state %s, step %s)", job.id, job.state.value, job.step.value or "-")
            if job.state == JobState.CANCELING:  # a cancel frees what it holds: it needs no slot
                self._launch(job.id)
                continue
            self._enqueue(job)
        self._schedule()

    # -- leases (a shared store: several servers) ------------------------------------------
    def _claim(self, job_id: int) -> bool:
        return self.lease.claim(job_id)

    def _release(self, job_id: int) -> None:
        self.lease.release(job_id)

    def _leases_forever(self) -> None:
        """Renew our leases, let go of jobs whose lease another server took, adopt orphaned jobs."""
        ttl = self.config.store.lease_ttl
        while not self.stopping.wait(ttl / 3):
            try:
                self.lease.renew()
                with self._lock:
                    ours = list(self._running) + list(self._waiting)
                for job_id in ours:
                    if not self.lease.claim(job_id):
                        log.warning("job %s: another server took it over (our lease ran out); letting go", job_id)
                        self._drop(job_id)
                        with self._lock:
                            stop = self._stops.get(job_id)
                        if stop is not None:
                            stop.set()  # stop at the next safe point, without canceling: the job goes on there
                self.recover()
            except LandoError as e:
                log.error("leases: %s", e)
            except Exception:
                log.exception("leases: internal error")

    # -- commands --------------------------------------------------------------------------
    def handle(self, message: Message) -> None:
        """Record `message` on its job (raising BadInput for an unknown job or a refused command)."""
        job = self.journal.load(message.job_id)
        try:
            if message.command == Command.START_JOB:
                changed = self._start(job)
            elif message.command == Command.CANCEL_JOB:
                changed = self._cancel(job)
            else:
                changed = self._restart(job)
        except JobConflict:
            self._republish(job.id)
            raise
        if not changed:
            self._republish(job.id)

    def _republish(self, job_id: int) -> None:
        """A job source that sets a request state before it sends a command (bespin-api sets S, c or r)
        hears the job's true state again when the command changed nothing, so its record does not stay at
        the request for ever."""
        republish = getattr(self.store, "republish", None)
        if republish is not None:
            republish(job_id)

    def _start(self, job: Job) -> bool:
        """Act on start_job; False when there was nothing to do."""
        if _applies(Command.START_JOB, job):
            if not self._claim(job.id):  # (a duplicate start_job another server serves: it is S there soon)
                raise JobHeldElsewhere(f"job {job.id}: start_job, but another server holds its lease; "
                                       "the command is served again shortly")
            wait = self._wait_reason(extra=1)  # recorded with the state: one write per start_job

            def change(j: Job) -> None:
                j.set_state(JobState.STARTING, JobStep.NONE, note="start_job received")
                j.reason = wait or ""

            job = self.journal.update(job.id, change)
            if wait:
                self._told[job.id] = wait
            self._enqueue(job)
            self._schedule_soon()
            return True
        return False

    def _cancel(self, job: Job) -> bool:
        """Act on cancel_job; False when there was nothing to do."""
        if not _applies(Command.CANCEL_JOB, job):
            return False
        has_vm = bool(job.vm and not job.vm.deleted)  # (a VM asked for, even without an id yet, may exist)
        if job.state in STARTABLE_STATES or (job.state == JobState.ERROR and not has_vm):
            self.journal.update(job.id, _cancel_now)
            return True
        with self._schedule_lock:  # no slot is given to it meanwhile
            with self._lock:
                engine = self._running.get(job.id)
                waiting = job.id in self._waiting
            if engine is None and waiting and not has_vm:  # it waits for a slot or quota: nothing to undo
                self._drop(job.id)
                self.journal.update(job.id, _cancel_now)
                self._release(job.id)
                return True
            self.journal.update(job.id, lambda j: j.set_state(JobState.CANCELING, note="cancel_job received"))
            if engine is not None:
                engine.request_cancel()
            elif self._claim(job.id):  # an errored job's kept VM, or a waiting one's: delete it now, slot or not
                self._launch(job.id, self._unqueue(job.id))
            # else another server runs it: its engine sees state c at its next check
        return True

    def _restart(self, job: Job) -> bool:
        """Act on restart_job; False when there was nothing to do."""
        if _applies(Command.RESTART_JOB, job):
            if not self._claim(job.id):  # the server that ended it in E has not let go yet (or died holding it)
                raise JobHeldElsewhere(f"job {job.id}: restart_job, but another server holds its lease; "
                                       "the command is served again shortly")
            job = self.journal.update(job.id, _restart_requested)
            self._enqueue(job)
            self._schedule_soon()
            return True
        return False

    # -- slots -----------------------------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        """Add a job to the waiting set; its workflow's needs are parsed once, here. From now on this server
        is the job's driver on this machine (its engine holds the job's lock while it waits: `status` sees
        it driven, and a foreground `job N` leaves it alone); a job another process drives is left to it."""
        with self._lock:
            if job.id in self._waiting or job.id in self._running:
                return
        engine = self._engine(threading.Event())
        try:
            engine.hold(job.id)
        except JobConflict as e:
            log.info("job %s: left to the process that drives it (%s)", job.id, e)
            return
        waiting = waiting_job(job, self.config.vm.volume_size)
        waiting.flavor = waiting.flavor or self.config.vm.flavor
        held = active_vm(job, self._flavors()) if waiting.has_vm else None
        if self.pool is not None:
            placed = job.vm is not None and job.vm.deleted is None
            self._pool_jobs[job.id] = None if placed else pool_job(job, self.config)
        with self._lock:
            self._waiting[job.id] = waiting
            self._queued[job.id] = engine
            if held is not None:
                self._held[job.id] = held

    def _wait_reason(self, extra: int = 0) -> str | None:
        """Why a job that arrives now must wait for a job slot, or None when one may be free."""
        limit = self.config.limits.max_concurrent_jobs
        with self._lock:
            if len(self._running) + len(self._waiting) + extra <= limit:
                return None
            return f"waiting: {len(self._running)} of {limit} job slots busy"

    def _schedule(self) -> None:
        """Ask the scheduler which waiting jobs start now; start them, fail the impossible ones,
        and tell the others why they wait."""
        if self.stopping.is_set():
            return
        with self._schedule_lock:
            with self._lock:
                waiting = list(self._waiting.values())
                active = list(self._held.values())
                running = len(self._running)
            if self.pool is not None:
                self._pool_round(waiting, running)
                return
            if not waiting:
                return
            if not running:
                self._idle = idle_figures()
            quota = self._quota()
            decision = schedule(waiting, active, running_jobs=running, limits=Limits.from_config(self.config.limits),
                                quota=quota, flavors=self._flavors(), allow=self.config.flavors.allow,
                                now=time.time(), reserve_after=self.config.limits.reserve_after,
                                server=room(measure(self._idle), running))
            METRICS.observe_waiting(decision)
            METRICS.observe_active(active)
            if quota is not None:
                METRICS.observe_quota(quota)
            for placement in decision.start:
                engine = self._unqueue(placement.job_id)
                if placement.flavor is not None:
                    flavor = placement.flavor
                    with self._lock:
                        self._held[placement.job_id] = ActiveVm(flavor.vcpus, flavor.ram_mb, counted_by_cloud=False)
                    self.journal.update(placement.job_id, recording(flavor=flavor.name))
                self._launch(placement.job_id, engine)
            for job_id, why in decision.failed.items():
                self._drop(job_id)
                self._refuse(job_id, why)
            for job_id, why in decision.waiting.items():
                if self._told.get(job_id) != why:  # write a reason only when it changed
                    self._told[job_id] = why
                    self.journal.update(job_id, _waiting_reason(why))

    def _pool_round(self, waiting: list[WaitingJob], running: int) -> None:
        """One round of the pool: jobs that have their VM resume; the others are placed on VMs with room or on
        VMs to boot, within the limits and the server's own room; empty VMs past their keep-alive go."""
        assert self.pool is not None
        if not running:
            self._idle = idle_figures()
        on_vms = {j for vm in self.pool.store.list(LIVE) for j in vm.job_ids}  # (placed before a crash, too)
        resume = [w.id for w in waiting if self._pool_jobs.get(w.id, None) is None or w.id in on_vms]
        for job_id in resume:
            self._launch(job_id, self._unqueue(job_id))
        candidates = [pj for w in waiting if (pj := self._pool_jobs.get(w.id)) is not None and w.id not in on_vms]
        candidates.sort(key=lambda j: (-j.waiting.priority, j.waiting.created, j.id))
        server = room(measure(self._idle), running)
        held_back: dict[int, str] = {}
        if server.jobs is not None and len(candidates) > server.jobs:  # the server's own room first
            held_back = {j.id: server.reason or "waiting: the server is near a limit" for j in candidates[server.jobs:]}
            candidates = candidates[:server.jobs]
        arriving, self._still_arriving = self._still_arriving, False
        result = self.pool.round(candidates, running_jobs=running + len(resume), arriving=arriving)
        METRICS.observe_waiting(result.decision)
        for job_id in result.placed:
            self._launch(job_id, self._unqueue(job_id))
        for job_id, why in result.failed.items():
            self._drop(job_id)
            self._refuse(job_id, why)
        for job_id, why in {**result.waiting, **held_back}.items():
            if job_id in result.placed:
                continue
            if self._told.get(job_id) != why:
                self._told[job_id] = why
                self.journal.update(job_id, _waiting_reason(why))

    def _gather(self) -> None:
        """Wait while jobs keep arriving: until none came for GATHER seconds, at most GATHER_MOST (then the next
        round is told more are on their way: `_still_arriving`)."""
        until = time.monotonic() + GATHER_MOST
        while True:
            self._arrived.clear()
            left = until - time.monotonic()
            if left <= 0 or self.stopping.is_set():
                self._still_arriving = True
                return
            if not self._arrived.wait(min(GATHER, left)):
                self._still_arriving = left < GATHER  # cut short by the cap: no pause seen, more may come
                return

    def _schedule_soon(self) -> None:
        """A job arrived: decide now, or with the pool once the jobs arriving with it are in (`_gather`): a burst
        of small jobs packs onto one larger VM, and its boot takes far longer than the wait."""
        if self.pool is None:
            self._schedule()
        else:
            self._arrived.set()

    def _adopt_pool(self) -> None:
        """At start (after a crash too): every pool VM adopted or deleted (docs/vm-pool.md)."""
        assert self.pool is not None
        try:
            adopted = self.pool.adopt()
            if adopted.swept or adopted.deleted:
                log.info("pool: %d VM record(s) closed, %d VM(s) no record owned deleted", len(adopted.deleted),
                         len(adopted.swept))
        except LandoError as e:
            log.error("pool: could not reconcile its VMs at start: %s (the next round tries again)", e)

    def _engine(self, stop: threading.Event) -> Engine:
        return Engine(self.config, self.journal, self.cloud, stopping=stop, on_vm_ready=METRICS.observe_vm_boot,
                      pool=self.pool, keep_warm=True)

    def _schedule_forever(self) -> None:
        """Decide again every RESCHEDULE seconds while jobs wait (what they wait for, the server's own room,
        the cloud's quota, can come back without a job of ours ending) and, with the pool, always: its rounds
        watch boots and delete VMs whose keep-alive is over."""
        while not self.stopping.is_set():
            if self._arrived.wait(RESCHEDULE):
                self._gather()
            if self.stopping.is_set():
                return
            with self._lock:
                waiting = bool(self._waiting) or self.pool is not None
            if waiting:
                try:
                    self._schedule()
                except LandoError as e:
                    log.error("schedule: %s", e)
                except Exception:
                    log.exception("schedule: internal error")

    def _sweep_forever(self) -> None:
        """Delete what no live job owns (after a crash, a failed delete, a job deleted in the job API)."""
        interval = self.config.sweep.interval
        if interval <= 0:
            return
        while not self.stopping.wait(interval):
            try:
                METRICS.observe_sweep(sweep(self.config, self.cloud, self.journal))
                METRICS.observe_vms([vm for group in tagged_vms(self.config, self.cloud) for vm in group])
            except LandoError as e:
                log.error("sweep: %s", e)
            except Exception:
                log.exception("sweep: internal error")

    def _unqueue(self, job_id: int) -> Engine | None:
        """Take a job out of the waiting set; returns its engine, still holding the job's lock."""
        self._pool_jobs.pop(job_id, None)
        with self._lock:
            self._waiting.pop(job_id, None)
            self._told.pop(job_id, None)
            return self._queued.pop(job_id, None)

    def _drop(self, job_id: int) -> None:
        """Take a job out of the waiting set and stop being its driver."""
        engine = self._unqueue(job_id)
        if engine is not None:
            engine.let_go(job_id)

    def _refuse(self, job_id: int, why: str) -> None:
        """A job that can never start as asked (no allowed flavor fits it, or it exceeds a limit outright)."""
        def change(j: Job) -> None:
            j.reason = f"step V (create VM) failed: {why}"
            j.error = j.reason
            j.set_state(JobState.ERROR, JobStep.CREATE_VM, note=why[:200])

        log.error("job %s: cannot start: %s", job_id, why)
        self.journal.update(job_id, change)

    def _flavors(self) -> list[Flavor]:
        if time.monotonic() - self._flavors_at > FLAVORS_TTL or not self._flavor_list:
            try:
                self._flavor_list = self.cloud.flavors()
                self._flavors_at = time.monotonic()
            except CloudError as e:
                log.warning("cannot list the cloud's flavors: %s", e)
        return self._flavor_list

    def _quota(self) -> Quota | None:
        """The cloud's live quota, asked at most every QUOTA_TTL seconds (a stale figure errs safely:
        the engine waits in S and retries when the cloud says it is full)."""
        if time.monotonic() - self._quota_at > QUOTA_TTL:
            try:
                self._quota_cache = self.cloud.quota()
            except CloudError as e:
                log.warning("cannot read the cloud's quota: %s", e)
                self._quota_cache = None
            self._quota_at = time.monotonic()
        return self._quota_cache

    def _launch(self, job_id: int, engine: Engine | None = None) -> None:
        """Run the job's engine in a thread of its own (`engine`: the one that held it while it waited)."""
        stop = threading.Event()
        if self.stopping.is_set():
            stop.set()
        if engine is None:
            engine = self._engine(stop)
        engine.stopping = stop
        thread = threading.Thread(target=self._run_job, args=(job_id, engine), name=f"job-{job_id}", daemon=True)
        with self._lock:
            self._running[job_id] = engine
            self._threads[job_id] = thread
            self._stops[job_id] = stop
        thread.start()

    def _run_job(self, job_id: int, engine: Engine) -> None:
        try:
            job = engine.drive(job_id)  # (restarted first when restart_job was recorded on it)
            if job.state not in (JobState.ERROR, JobState.CANCELED):  # those were said as they happened
                log.info("job %s: %s", job_id, _ending(job))
        except JobConflict as e:  # another process here drives it (a foreground `job N`): it sees the command
            log.info("job %s: left to the process that drives it, which sees the command (%s)", job_id, e)
        except LandoError as e:
            log.error("job %s: %s", job_id, e)
        except Exception:
            log.exception("job %s: internal error", job_id)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._threads.pop(job_id, None)
                self._held.pop(job_id, None)
                self._stops.pop(job_id, None)
            self._release(job_id)
            self._quota_at = 0.0  # a VM was freed: read the quota again
            self._schedule()

    # -- listeners -------------------------------------------------------------------------
    def _log_change(self, job: Job) -> None:
        step = f" step {job.step.value} ({STEP_NAMES[job.step]})" if job.step.value else ""
        # an error's reason was logged as an ERROR where it happened: said once
        reason = f": {job.reason}" if job.reason and job.state != JobState.ERROR else ""
        log.info("job %s: state %s%s%s", job.id, job.state.value, step, reason)

    def _track_vm(self, job: Job) -> None:
        """Keep the scheduler's count of held VMs true as jobs get and lose theirs."""
        with self._lock:
            if job.id not in self._running and job.id not in self._waiting:
                return
            held = active_vm(job, self._flavor_list)
            if held is not None:
                self._held[job.id] = held
            elif job.vm is not None and job.vm.deleted is not None:
                self._held.pop(job.id, None)

    def _publish_change(self, job: Job) -> None:
        self.broker.publish_status(job.id, job.state.value, job.step.value)

    @property
    def running_jobs(self) -> list[int]:
        with self._lock:
            return sorted(self._running)


def _cancel_now(job: Job) -> None:
    job.reason = "canceled"
    job.set_state(JobState.CANCELED, note="cancel_job received")


def _restart_requested(job: Job) -> None:
    job.set_state(JobState.RESTARTING, note="restart_job received")
    job.run.restart_pending = True  # the driver restarts it (the restart rule: engine/restart.py)


def _waiting_reason(why: str) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        if job.state in (JobState.STARTING, JobState.RESTARTING):  # it may have moved on meanwhile
            job.reason = why

    return change


def _applies(command: Command, job: Job) -> bool:
    """Whether `command` changes `job`; a harmless repeat is logged, a command the job's state refuses raises
    JobConflict (the message is dead-lettered with the reason)."""
    verdict, why = command_verdict(command.value, job)
    if verdict == Verdict.REFUSE:
        raise JobConflict(why)
    if verdict == Verdict.IGNORE:
        log.info("job %s: %s", job.id, why)
    return verdict == Verdict.APPLY


def _ending(job: Job) -> str:
    if job.state == JobState.FINISHED:
        return f"finished; outputs in {job.output_dir}"
    if job.state in (JobState.ERROR, JobState.CANCELED):
        return job.reason or job.state.name.lower()
    return f"left in state {job.state.value} step {job.step.value or '-'}"

