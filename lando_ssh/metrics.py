"""Prometheus metrics of the daemon (`metrics.listen: HOST:PORT`, default off).

One registry (`METRICS`) that the daemon feeds through small hooks, and `start_metrics_server`
serving it at http://HOST:PORT/metrics. `prometheus_client` is a dependency of lando-ssh (so a
daemon installed by scripts/setup serves metrics as soon as `metrics.listen` is set); where it
is missing all the same, the hooks do nothing and only `start_metrics_server` complains. Only
the daemon imports this module: the engine reports a VM's boot through a callback.

Series (prometheus_client adds `_total` to counters), and the hook that feeds each:
- `lando_jobs{state}`: jobs by state (lando's codes) -- `observe_job(job)` on every change,
  `observe_jobs(jobs)` once at start;
- `lando_job_errors_total{step}`: jobs that ended in E, by failed step -- `observe_job`;
- `lando_step_seconds{step}`: step durations -- `observe_job` (from `job.timings`, each step
  run once) or `observe_step(step, seconds)`;
- `lando_vm_boot_seconds`, `lando_vm_ssh_ready_seconds`: from asking for a VM to ACTIVE, and
  to SSH answering (cloud-init done) -- `observe_vm_boot(active_seconds, ssh_seconds)`, which
  the engine calls for every VM it asked for once it answers;
- `lando_vms{status}`: this installation's VMs by the cloud's status -- `observe_vms(vms)` at each
  sweep, moved between sweeps by `observe_job` as jobs ask for VMs (BUILD), reach them (ACTIVE)
  and delete them;
- `lando_quota_limit{resource}`, `lando_quota_in_use{resource}` (instances, cores, ram_mb):
  the cloud's quota -- `observe_quota(quota)`;
- `lando_ours_in_use{resource}`: what our jobs' VMs hold, counting those being created --
  `observe_active(active_vms)`;
- `lando_jobs_waiting{limit}` and `lando_job_waiting_info{job,reason}`: waiting jobs by the
  limit they wait for, and each one's reason -- `observe_waiting(decision)`;
- `lando_sweep_deleted_total{kind}`, `lando_sweep_errors_total` -- `observe_sweep(items)`;
- `lando_ssh_errors_total{kind}`: SSH failures by error class -- `observe_ssh_error(error)`;
- the VM pool's, read from its records at each scrape once `watch_pool(records)` is called:
  `lando_pool_vms{state}` (live VMs by pool state), `lando_pool_vm_jobs{vm}` (jobs on each VM),
  `lando_pool_jobs_served_total`, `lando_pool_reuses_total` (jobs placed on a VM that had served one
  before) and `lando_pool_idle_vm_seconds_total` (VM-seconds pool VMs spent without a job).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lando_ssh.errors import ConfigError
from lando_ssh.model import JobState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lando_ssh.cloud import Quota, VmInfo
    from lando_ssh.model import Job
    from lando_ssh.pool.model import PoolVm
    from lando_ssh.pool.placement import PoolDecision
    from lando_ssh.scheduler import ActiveVm, Decision
    from lando_ssh.sweep import Swept

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # the optional dependency is absent: the hooks do nothing
    CollectorRegistry = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

#: histogram buckets in seconds: a boot takes seconds to minutes, a step seconds to days
BOOT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800)
STEP_BUCKETS = (0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 72 * 3600)
#: the most per-job waiting reasons exported (the first in the scheduler's order)
MAX_REASON_SERIES = 500


class Metrics:
    """The daemon's metrics in their own registry (so tests and several servers never collide)."""

    def __init__(self) -> None:
        self.enabled = CollectorRegistry is not None
        self._lock = threading.Lock()
        self._states: dict[int, str] = {}  # job id -> the state last counted
        self._steps_until: dict[int, float] = {}  # job id -> the latest step end already observed
        self._vm_status: dict[str, str] = {}  # VM name -> its status (the sweep's listing, then the jobs' records)
        if not self.enabled:
            return
        r = self.registry = CollectorRegistry()
        self.jobs = Gauge("lando_jobs", "Jobs by state (lando's one-letter codes).", ["state"], registry=r)
        for state in JobState:
            self.jobs.labels(state.value).set(0)
        self.job_errors = Counter("lando_job_errors", "Jobs that ended in error, by the step that failed.", ["step"],
                                  registry=r)
        self.step_seconds = Histogram("lando_step_seconds", "How long each engine step took.", ["step"],
                                      buckets=STEP_BUCKETS, registry=r)
        self.boot_seconds = Histogram("lando_vm_boot_seconds", "From asking the cloud for a VM to it being ACTIVE.",
                                      buckets=BOOT_BUCKETS, registry=r)
        self.ssh_seconds = Histogram("lando_vm_ssh_ready_seconds",
                                     "From asking the cloud for a VM to SSH answering on it.",
                                     buckets=BOOT_BUCKETS, registry=r)
        self.vms = Gauge("lando_vms", "This installation's VMs by the cloud's status.", ["status"], registry=r)
        self.quota_limit = Gauge("lando_quota_limit", "The cloud's quota (absent: unlimited).", ["resource"],
                                 registry=r)
        self.quota_in_use = Gauge("lando_quota_in_use", "The cloud's quota in use (all of the project's VMs).",
                                  ["resource"], registry=r)
        self.ours_in_use = Gauge("lando_ours_in_use", "What our jobs' VMs hold, counting VMs being created.",
                                 ["resource"], registry=r)
        self.waiting = Gauge("lando_jobs_waiting", "Jobs waiting to start, by the limit they wait for.", ["limit"],
                             registry=r)
        self.waiting_info = Gauge("lando_job_waiting_info", "Why each waiting job waits (1 per waiting job).",
                                  ["job", "reason"], registry=r)
        self.sweep_deleted = Counter("lando_sweep_deleted", "Orphaned resources the sweep deleted.", ["kind"],
                                     registry=r)
        self.sweep_errors = Counter("lando_sweep_errors", "Orphaned resources the sweep could not delete.",
                                    registry=r)
        self.ssh_errors = Counter("lando_ssh_errors", "SSH failures talking to VMs.", ["kind"], registry=r)
        self._set_vms()

    # -- jobs ------------------------------------------------------------------------------------
    def observe_jobs(self, jobs: Iterable[Job]) -> None:
        """Count every job (at start); later changes come through `observe_job`."""
        for job in jobs:
            self.observe_job(job, count_error=False)

    def observe_job(self, job: Job, count_error: bool = True) -> None:
        """A journal listener: call it with every changed job."""
        if not self.enabled:
            return
        state = job.state.value
        with self._lock:
            old = self._states.get(job.id)
            self._states[job.id] = state
            if old != state:
                if old is not None:
                    self.jobs.labels(old).dec()
                self.jobs.labels(state).inc()
                if count_error and state == JobState.ERROR.value:
                    self.job_errors.labels(job.step.value or "-").inc()
            until = self._steps_until.get(job.id, 0.0)
            latest = until
            for step, timing in job.timings.items():
                seconds = timing.seconds
                if seconds is None or timing.finished is None or timing.finished.timestamp() <= until:
                    continue
                latest = max(latest, timing.finished.timestamp())
                if count_error:  # at start, past steps are history, not new observations
                    self.step_seconds.labels(step).observe(seconds)
            if latest > until:
                self._steps_until[job.id] = latest
            if self._track_vms(job):
                self._set_vms()

    def _track_vms(self, job: Job) -> bool:
        """Follow the job's VMs in `lando_vms` between sweeps: BUILD once asked for, ACTIVE once it has an
        address (it booted and answered), gone once deleted. Returns whether anything changed."""
        changed = False
        for vm in job.past_vms:
            changed |= self._vm_status.pop(vm.name, None) is not None
        if job.vm is not None:
            if job.vm.deleted is not None:
                changed |= self._vm_status.pop(job.vm.name, None) is not None
            else:
                status = "ACTIVE" if job.vm.address else "BUILD"
                changed |= self._vm_status.get(job.vm.name) != status
                self._vm_status[job.vm.name] = status
        return changed

    def _set_vms(self) -> None:
        counts: dict[str, int] = {"BUILD": 0, "ACTIVE": 0, "ERROR": 0}
        for status in self._vm_status.values():
            counts[status] = counts.get(status, 0) + 1
        self.vms.clear()
        for status, n in counts.items():
            self.vms.labels(status).set(n)

    def observe_step(self, step: str, seconds: float) -> None:
        if self.enabled:
            self.step_seconds.labels(step).observe(seconds)

    # -- VMs and quota ---------------------------------------------------------------------------
    def observe_vm_boot(self, active_seconds: float | None = None, ssh_seconds: float | None = None) -> None:
        """A VM came up: seconds from asking the cloud to ACTIVE, and to SSH answering."""
        if not self.enabled:
            return
        if active_seconds is not None:
            self.boot_seconds.observe(active_seconds)
        if ssh_seconds is not None:
            self.ssh_seconds.observe(ssh_seconds)

    def observe_vms(self, vms: Sequence[VmInfo]) -> None:
        """This installation's VMs as the cloud lists them (`find_vms` with our tags): the truth that the
        jobs' changes then move (`observe_job`) until the next listing."""
        if not self.enabled:
            return
        with self._lock:
            self._vm_status = {vm.name: vm.status for vm in vms if vm.status != "DELETED"}
            self._set_vms()

    def observe_quota(self, quota: Quota) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.quota_limit.clear()
            for resource, limit, used in (("instances", quota.max_instances, quota.instances_used),
                                          ("cores", quota.max_cores, quota.cores_used),
                                          ("ram_mb", quota.max_ram_mb, quota.ram_mb_used)):
                if limit is not None:
                    self.quota_limit.labels(resource).set(limit)
                self.quota_in_use.labels(resource).set(used)

    def observe_active(self, active: Sequence[ActiveVm]) -> None:
        """What our jobs' VMs hold (the scheduler's `active` list)."""
        if not self.enabled:
            return
        self.ours_in_use.labels("instances").set(len(active))
        self.ours_in_use.labels("cores").set(sum(v.vcpus for v in active))
        self.ours_in_use.labels("ram_mb").set(sum(v.ram_mb for v in active))
        self.ours_in_use.labels("being_created").set(sum(1 for v in active if not v.counted_by_cloud))

    # -- scheduling, sweep, SSH ------------------------------------------------------------------
    def observe_waiting(self, decision: Decision | PoolDecision) -> None:
        """The scheduler's (or the pool's) latest decision: how many wait for which limit, and each one's reason."""
        if not self.enabled:
            return
        counts: dict[str, int] = {}
        for job_id in decision.waiting:
            limit = decision.blocked_by.get(job_id, "other")
            counts[limit] = counts.get(limit, 0) + 1
        with self._lock:
            self.waiting.clear()
            for limit, n in counts.items():
                self.waiting.labels(limit).set(n)
            self.waiting_info.clear()
            for i, (job_id, reason) in enumerate(decision.waiting.items()):
                if i >= MAX_REASON_SERIES:
                    break
                self.waiting_info.labels(str(job_id), reason).set(1)

    def observe_sweep(self, items: Iterable[Swept]) -> None:
        if not self.enabled:
            return
        for item in items:
            if item.deleted:
                self.sweep_deleted.labels(item.kind).inc()
            elif item.error:
                self.sweep_errors.inc()

    def observe_ssh_error(self, error: BaseException | str) -> None:
        """An SSH failure: `kind` is the error's class (VmUnreachable, HostKeyMismatch, ...) or the text given."""
        if self.enabled:
            self.ssh_errors.labels(error if isinstance(error, str) else type(error).__name__).inc()


    # -- the VM pool -----------------------------------------------------------------------------------
    def watch_pool(self, records: Callable[[], Sequence[PoolVm]]) -> None:
        """Export the pool's figures, computed from `records()` (every VM record, e.g. `VmStore.list`) at each
        scrape."""
        if self.enabled:
            self.registry.register(PoolCollector(records))


class PoolCollector:
    """A prometheus_client collector: the pool's figures from its records, read when scraped."""

    def __init__(self, records: Callable[[], Sequence[PoolVm]]):
        self.records = records

    def describe(self) -> list[Any]:
        return []  # (the series are known only once collected: no check at registration)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from lando_ssh.model import now
        from lando_ssh.pool.figures import pool_figures

        f = pool_figures(self.records(), now())
        vms = GaugeMetricFamily("lando_pool_vms", "The pool's live VMs by pool state.", labels=["state"])
        for state, n in f.by_state.items():
            vms.add_metric([state], n)
        yield vms
        jobs = GaugeMetricFamily("lando_pool_vm_jobs", "Jobs on each live pool VM.", labels=["vm"])
        for name, n in f.jobs_per_vm.items():
            jobs.add_metric([name], n)
        yield jobs
        yield CounterMetricFamily("lando_pool_jobs_served", "Jobs placed on pool VMs.", value=f.served)
        yield CounterMetricFamily("lando_pool_reuses", "Jobs placed on a pool VM that had served a job before.",
                                  value=f.reuses)
        yield CounterMetricFamily("lando_pool_idle_vm_seconds", "VM-seconds pool VMs spent without a job.",
                                  value=f.idle_vm_seconds)


#: the daemon's metrics
METRICS = Metrics()


def start_metrics_server(listen: str, metrics: Metrics = METRICS) -> Any:
    """Serve `metrics` at http://LISTEN/metrics ("HOST:PORT", "[::1]:PORT", ":PORT" = all
    interfaces; port 0 picks a free one) in a daemon thread. Returns the server: its
    `server_address` says where it listens, `shutdown()` and `server_close()` stop it."""
    if not metrics.enabled:
        raise ConfigError("metrics.listen needs the prometheus_client package, a dependency of lando-ssh that is "
                          "missing here: run scripts/setup again (or pip install prometheus_client)")
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as e:
        raise ConfigError(f"metrics.listen {listen}: cannot listen there: {e.strerror or e}") from None
    log.info("metrics at http://%s:%d/metrics", *server.server_address[:2])
    return server


def parse_listen(listen: str, key: str = "metrics.listen") -> tuple[str, int]:
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key} must be HOST:PORT (e.g. 127.0.0.1:9464), not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 (":PORT" asks for every interface)
    return host, int(port)
