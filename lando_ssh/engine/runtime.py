"""What every step of a job shares: the config, the journal, the cloud, the job's SSH connection, its
key files, its lock, and the cancel and stop signals. The steps are functions of a `Runtime`."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from lando_ssh.backoff import Backoff
from lando_ssh.cloud import META_JOB_ID, Cloud
from lando_ssh.config import Config
from lando_ssh.errors import JobCanceled, LandoError, StepTimeout, StoreUnavailable, VmUnreachable
from lando_ssh.installation import ours
from lando_ssh.joblock import JobLock
from lando_ssh.journal import Journal, recording
from lando_ssh.keys import JobKeys
from lando_ssh.model import Job, JobState
from lando_ssh.progress import ByteMeter, Progress, sentence, watching
from lando_ssh.remote import Endpoint, Remote

from .paths import JobPaths

if TYPE_CHECKING:
    from lando_ssh.pool.manager import PoolManager

log = logging.getLogger(__name__)
T = TypeVar("T")

#: inputs up to this size are sent with the remote scripts, in one stream (larger ones after the free disk is known)
ONE_STREAM_BYTES = 1024 * 1024
#: seconds before bookkeeping the job store refused is written again; doubling up to the longest
STORE_RETRY_FIRST = 1.0
STORE_RETRY_LONGEST = 60.0


class ServerStopping(Exception):
    """The server is shutting down: leave the job where it is (its VM keeps running); it resumes later."""


class Runtime:
    def __init__(self, config: Config, journal: Journal, cloud: Cloud, *, cancel: threading.Event | None = None,
                 stopping: threading.Event | None = None, progress: Callable[[int, str], None] | None = None,
                 on_vm_ready: Callable[[float, float], object] | None = None, pool: PoolManager | None = None,
                 keep_warm: bool = False):
        """`pool`: the daemon's one pool for all its engines; by default the config's (`pool_for`)."""
        self.config = config
        self.journal = journal
        self.cloud = cloud
        self.cancel_event = cancel or threading.Event()
        self.stopping = stopping or threading.Event()
        self.progress = progress or (lambda job_id, text: None)
        #: told (seconds to ACTIVE, seconds to SSH ready) of each VM this engine asked for, once it answers
        self.on_vm_ready = on_vm_ready
        #: the VM pool (pool.share other than job: docs/vm-pool.md), else None: each job boots its own VM
        if pool is None:
            from lando_ssh.pool.manager import pool_for

            pool = pool_for(config, journal.store, cloud)
        self.pool = pool
        #: whether a VM a job leaves empty stays for the next job (a daemon's rounds delete it after
        #: vm.keepalive) or goes at once (a foreground `lando-ssh job N` leaves nothing behind)
        self.keep_warm = keep_warm
        self._remotes: dict[int, Remote] = {}
        self._locks: dict[int, JobLock] = {}
        #: seen by organize_output, for store_output (a resumed one asks)
        self.result_sizes: dict[int, str] = {}

    # -- the job's lock on this machine ---------------------------------------------------
    def hold(self, job_id: int) -> None:
        """Make this engine the job's one driver on this machine (until `let_go`)."""
        if job_id not in self._locks:
            lock = JobLock(os.path.join(self.config.data_dir, "locks"), job_id)
            lock.acquire()
            self._locks[job_id] = lock

    def let_go(self, job_id: int) -> None:
        lock = self._locks.pop(job_id, None)
        if lock:
            lock.release()

    @contextlib.contextmanager
    def driving(self, job_id: int) -> Iterator[None]:
        self.hold(job_id)
        try:
            yield
        finally:
            self.let_go(job_id)

    # -- the job's VM: keys, paths, connection ---------------------------------------------
    def keys(self, job: Job) -> JobKeys:
        return JobKeys(self.config.keys_dir, job.id)

    def paths(self, job: Job) -> JobPaths:
        assert job.vm is not None and job.vm.work_dir
        return JobPaths.under(job.vm.work_dir, job.id)

    def metadata(self, job: Job) -> dict[str, str]:
        """The tags of the job's VM: this installation's, and the job's id."""
        return {**ours(self.config), META_JOB_ID: str(job.id)}

    def remote(self, job: Job) -> Remote:
        remote = self._remotes.get(job.id)
        if remote is None:
            if not job.vm or not job.vm.address:
                raise VmUnreachable(f"job {job.id} has no VM address recorded")
            keys = self.keys(job)
            if not os.path.exists(keys.known_hosts_path):
                keys.pin_host(job.vm.address, job.vm.port, job.vm.host_keys)
            endpoint = Endpoint(job.vm.address, job.vm.port, job.vm.user or self.cloud.default_user(),
                                job.vm.key_path or keys.private_path, list(job.vm.host_keys), keys.known_hosts_path)
            remote = self._remotes[job.id] = Remote(endpoint, connect_timeout=min(30.0, self.config.vm.ssh_timeout),
                                                    abort=self.cancel_event)
        return remote

    def close(self, job_id: int) -> None:
        remote = self._remotes.pop(job_id, None)
        if remote:
            remote.close()

    def command(self, job: Job, key: str) -> list[str]:
        """A job's cwl_base/pre_process/post_process_command: as recorded when its run started (what ran, and
        what its docs name), else the job source's own (bespin-api's job_runtime_openstack), else the config's."""
        recorded = job.run.commands
        if isinstance(recorded, dict) and key in recorded:
            return list(recorded[key] or [])
        return list(job.facts.get(key) or getattr(self.config, key) or [])

    # -- cancel and stop -------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Cancel from another thread: calls to the VM in flight are interrupted, then the job is canceled."""
        self.cancel_event.set()
        for remote in list(self._remotes.values()):
            remote.close()

    def canceled(self, job_id: int) -> bool:
        if self.cancel_event.is_set():
            return True
        return self.journal.get(job_id).state == JobState.CANCELING

    def check_cancel(self, job_id: int) -> None:
        if self.canceled(job_id):
            raise JobCanceled("canceled")
        if self.stopping.is_set():
            raise ServerStopping()

    def until_stored(self, job_id: int, what: str, call: Callable[[], T]) -> T:
        """Bookkeeping between and after the steps, done again after a back-off while the job store fails
        (locked, its connection lost): a job never stays in R because the store failed as it ended. A stop of
        the server ends the waits; the job resumes where it stands when the server starts."""
        backoff = Backoff(STORE_RETRY_FIRST, STORE_RETRY_LONGEST)
        while True:
            try:
                return call()
            except StoreUnavailable as e:
                delay = backoff.next()
                log.warning("job %s: %s could not be stored: %s; tried again in %.0fs", job_id, what, e, delay)
                if self.stopping.wait(delay):
                    raise ServerStopping() from None

    def sleep(self, job_id: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.cancel_event.is_set() and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.cancel_event.wait(min(left, 0.2))
        self.check_cancel(job_id)

    # -- transfers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def deadline(self, remote: Remote, what: str) -> Iterator[None]:
        """Bound a transfer by limits.staging_timeout: when it passes, the calls in flight are interrupted."""
        limit = self.config.limits.staging_timeout
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            remote.interrupt()

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except Exception:
            if expired.is_set():
                raise StepTimeout(f"{what} took longer than limits.staging_timeout ({limit:.0f}s) and was "
                                  "stopped") from None
            raise
        finally:
            timer.cancel()
            remote.resume()

    @contextlib.contextmanager
    def reporting(self, job_id: int, remote: Remote, what: str, total: int,
                  meter: ByteMeter | None = None) -> Iterator[None]:
        """A long transfer's progress, every `progress_interval` seconds: on the job (`run.progress`, for
        `status`; one write each, no event) and on a foreground run's stderr. A small one is over before a
        first report: no thread is started for it."""
        if total <= ONE_STREAM_BYTES:
            yield
            return

        def report(p: Progress) -> None:
            fact = p.to_fact()
            try:
                self.journal.update(job_id, recording(progress=fact))
            except LandoError as e:  # the transfer matters more than its display
                log.debug("job %s: progress not recorded: %s", job_id, e)
            self.progress(job_id, sentence(fact))

        with watching(meter or remote.meter, what, total, report, self.config.progress_interval):
            yield

