"""The pool's driver: one `round` applies the placement's decisions to the cloud and the VM store.

    result = manager.round(waiting_jobs)      # reconcile, plan, apply
    result.placed  -> job id: pool VM id      # reserved there (the VM may still boot)
    manager.vm_for(job_id)                    # its VM; start the job once the VM is idle/busy (ready)
    manager.job_done(job_id)                  # the job's files are gone from the VM: its room is free
    result.lost, manager.gone(placed_jobs)    # jobs whose VM died (noticed here, or by another server)

Boots: the record (booting, its jobs reserved) is written before the cloud is asked, and the cloud's VM
carries the record's id, so a server that dies at any point leaves nothing `reconcile` cannot adopt or delete.
Deletions: only an empty VM, checked in the transaction that marks it deleting. Placements: `VmStore.reserve`
re-checks the room, so two servers never oversubscribe a VM.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lando_ssh.cloud import Cloud, Flavor, Quota
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded, UnknownVm
from lando_ssh.pool.launch import Launcher, Remotes
from lando_ssh.pool.lifecycle import Lifecycle, Reconciled
from lando_ssh.pool.model import LIVE, NoRoom, PoolState, PoolVm
from lando_ssh.pool.packing import capacity
from lando_ssh.pool.placement import BootVm, PoolDecision, PoolJob, plan
from lando_ssh.pool.policy import PoolPolicy
from lando_ssh.pool.store import VmStore, find_vm, holding
from lando_ssh.scheduler import ActiveVm, Limits

if TYPE_CHECKING:
    from lando_ssh.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    installation: str  # cloud.installation_id
    tags: dict[str, str]  # what every resource of this installation carries (installation.ours)
    allow: str | None = None  # flavors.allow
    reserve_after: float = 600.0  # limits.reserve_after
    boot_timeout: float = 600.0  # vm.boot_timeout
    health_interval: float = 60.0  # health.interval: idle VMs are probed this often
    adopt_grace: float = 600.0  # a booting record without a cloud VM is left alone this long

    @classmethod
    def from_config(cls, config: Config) -> PoolSettings:
        from lando_ssh.installation import ours

        return cls(installation=config.cloud.installation_id, tags=ours(config), allow=config.flavors.allow,
                   reserve_after=config.limits.reserve_after, boot_timeout=config.vm.boot_timeout,
                   health_interval=config.health.interval, adopt_grace=max(config.sweep.grace, 60.0))


@dataclass
class RoundResult:
    decision: PoolDecision
    reconciled: Reconciled
    placed: dict[int, int] = field(default_factory=dict)  # job id -> pool VM id, reserved this round
    waiting: dict[int, str] = field(default_factory=dict)  # job id -> why it waits
    failed: dict[int, str] = field(default_factory=dict)  # job id -> why it can never start as asked
    booting: list[int] = field(default_factory=list)  # VMs asked of the cloud this round
    deleted: list[int] = field(default_factory=list)  # VMs deleted this round (empty ones)

    @property
    def lost(self) -> dict[int, str]:
        """Jobs whose VM is gone (failed to boot, died, vanished): the engine restarts them elsewhere."""
        return self.reconciled.lost


class PoolManager:
    def __init__(self, store: VmStore, cloud: Cloud, launcher: Launcher, remotes: Remotes, *, policy: PoolPolicy,
                 limits: Limits, settings: PoolSettings, clock: Callable[[], float] = time.time):
        self.store, self.cloud, self.launcher = store, cloud, launcher
        self.policy, self.limits, self.settings, self.clock = policy, limits, settings, clock
        self.life = Lifecycle(store, cloud, remotes, settings.tags, clock, boot_timeout=settings.boot_timeout,
                              health_interval=settings.health_interval, adopt_grace=settings.adopt_grace)
        self._flavors: list[Flavor] | None = None
        self._round = threading.Lock()  # one round at a time in this process (the store guards between servers)

    @classmethod
    def from_config(cls, config: Config, store: VmStore, cloud: Cloud) -> PoolManager:
        """The daemon's pool: VMs with their own keys and cloud-init, probed over SSH, with the config's policy,
        limits and timeouts."""
        from lando_ssh.pool.launch import CloudInitLauncher, SshRemotes

        settings = PoolSettings.from_config(config)
        return cls(store, cloud, CloudInitLauncher(config, cloud, settings.tags), SshRemotes(config.vm.ssh_timeout),
                   policy=PoolPolicy.from_config(config), limits=Limits.from_config(config.limits), settings=settings)

    # -- the loop -----------------------------------------------------------------------------------------
    def adopt(self) -> Reconciled:
        """At start (after a crash too): every pool VM adopted or deleted, every idle one probed."""
        return self.life.reconcile(probe_all=True)

    def round(self, jobs: Sequence[PoolJob], *, running_jobs: int | None = None,
              other_vms: Sequence[ActiveVm] = (), arriving: bool = False) -> RoundResult:
        """`arriving`: more jobs are on their way (see `placement.plan`)."""
        with self._round:
            return self._round_now(jobs, running_jobs, other_vms, arriving)

    def _round_now(self, jobs: Sequence[PoolJob], running_jobs: int | None,
                   other_vms: Sequence[ActiveVm], arriving: bool) -> RoundResult:
        reconciled = self.life.reconcile()
        live = self.store.list(LIVE)
        on_vms = {j for vm in live for j in vm.job_ids}
        decision = plan([j for j in jobs if j.id not in on_vms], live, flavors=self.flavors(), policy=self.policy,
                        limits=self.limits, quota=self._quota(), now=self.clock(), allow=self.settings.allow,
                        reserve_after=self.settings.reserve_after, running_jobs=running_jobs, other_vms=other_vms,
                        silence_grace=self.settings.health_interval, arriving=arriving)
        result = RoundResult(decision, reconciled, waiting=dict(decision.waiting), failed=dict(decision.failed))
        self.apply(decision, result)
        return result

    def apply(self, decision: PoolDecision, result: RoundResult) -> None:
        at = self.life.at()
        for p in decision.place:
            try:
                self.store.reserve(p.vm_id, p.job_id, p.needs, at)
                result.placed[p.job_id] = p.vm_id
            except NoRoom as e:  # another server filled it meanwhile: the next round places the job again
                result.waiting[p.job_id] = f"waiting: {e}"
        for boot in decision.boot:
            self._boot(boot, result)
        for d in decision.delete:
            if self.life.retire(d.vm_id, d.reason, out=result.reconciled):
                result.deleted.append(d.vm_id)

    def _boot(self, boot: BootVm, result: RoundResult) -> None:
        at = self.life.at()
        vm = PoolVm(id=0, name="", flavor=boot.flavor.name, size=capacity(boot.flavor, boot.volume_gb),
                    image=boot.image, project=boot.project, owner=boot.owner, share_key=boot.share_key,
                    installation=self.settings.installation, volume_gb=boot.volume_gb, created=at)
        for job_id, needs in boot.jobs:
            vm.reserve(job_id, needs, at)
        try:
            vm = self.store.create(vm)  # before the cloud is asked: a crash now leaves a record to reconcile
        except NoRoom as e:  # another server placed one of these jobs meanwhile: the next round plans again
            result.waiting.update({job_id: f"waiting: {e}" for job_id in boot.job_ids})
            return
        launch = self.launcher.launch(vm)
        self.store.update(vm.id, lambda v: _launched(v, launch.key_path, launch.user, launch.work_dir))
        try:
            info = self.cloud.create_vm(launch.request)
        except CloudError as e:
            self.life.retire(vm.id, f"was not created: {e}", force=True)
            for job_id in boot.job_ids:
                if isinstance(e, CloudNotFound):
                    result.failed[job_id] = str(e)
                elif isinstance(e, QuotaExceeded):
                    result.waiting[job_id] = f"waiting for cloud quota: {e}"
                else:
                    result.waiting[job_id] = f"waiting: the cloud did not create a VM: {e}"
            return
        try:
            self.store.update(vm.id, lambda v: _created(v, info.id))
        except NoRoom:  # another server gave the record up meanwhile: this VM is no one's
            self.cloud.delete_vm(info.id)
            for job_id in boot.job_ids:
                result.waiting[job_id] = "waiting: its VM was given up while it was being created"
            return
        result.booting.append(vm.id)
        result.placed.update({job_id: vm.id for job_id in boot.job_ids})

    # -- what the engine and the admin ask ----------------------------------------------------------------
    def vm_for(self, job_id: int) -> PoolVm | None:
        return holding(self.store, job_id)

    def watch(self, vm_id: int) -> PoolVm:
        """A booting VM looked at now (not at the next round): ready once it answers SSH; deleted, its jobs
        lost, when it failed or passed vm.boot_timeout. Returns its record as it stands."""
        vm = self.store.get(vm_id)
        if vm.state == PoolState.BOOTING and vm.cloud_id is not None:
            self.life.walk(vm, self.cloud.get_vm(vm.cloud_id), Reconciled())
            vm = self.store.get(vm_id)
        return vm

    def let_go(self, job_id: int, vm_id: int, *, keep_warm: bool) -> PoolVm | None:
        """Job `job_id` left VM `vm_id` (`job_done`); without `keep_warm` (no daemon runs the pool's rounds: a
        foreground `lando-ssh job N`) a VM left empty is deleted now, never left behind."""
        try:
            vm = self.job_done(job_id, vm_id)
        except UnknownVm:
            return None
        if vm is not None and not keep_warm and not vm.jobs and vm.state in (PoolState.IDLE, PoolState.DRAINING):
            self.life.retire(vm.id, "its job is done and no lando-ssh server keeps it warm")
        return vm

    def gone(self, job_ids: Iterable[int]) -> dict[int, str]:
        """Of `job_ids` (jobs this server placed and has not seen done), those no live VM holds any more, with
        why: their VM was lost while another server reconciled (`RoundResult.lost` tells only the one that did)."""
        wanted = set(job_ids)
        held = {j for vm in self.store.list(LIVE) for j in vm.job_ids}
        missing = wanted - held
        if not missing:
            return {}
        why: dict[int, str] = {}
        for vm in self.store.list([PoolState.DELETING, PoolState.DELETED]):
            for stay in vm.past:
                if stay.job_id in missing:
                    why[stay.job_id] = f"its VM {vm.name} {vm.reason or 'is gone'}"
        return {j: why.get(j, "its VM is gone") for j in sorted(missing)}

    def job_done(self, job_id: int, vm_id: int | None = None) -> PoolVm | None:
        """Job `job_id` left its VM (`vm_id`, else the one holding it; ended, canceled, its files removed): its
        room is free again."""
        if vm_id is None:
            held = holding(self.store, job_id)
            if held is None:
                return None
            vm_id = held.id
        return self.store.release(vm_id, job_id, self.life.at())

    def drain(self, name_or_id: str, reason: str = "lando-ssh drain") -> PoolVm:
        """Place no new job on the VM; the next round deletes it once its jobs are done."""
        vm = find_vm(self.store, name_or_id)
        return self.store.update(vm.id, lambda v: v.drain(reason))

    def flavors(self) -> list[Flavor]:
        if self._flavors is None:
            self._flavors = self.cloud.flavors()
        return self._flavors

    def _quota(self) -> Quota | None:
        try:
            return self.cloud.quota()
        except CloudError as e:
            log.warning("pool: the cloud's quota is unknown this round: %s", e)
            return None


def pool_for(config: Config, jobs: object, cloud: Cloud) -> PoolManager | None:
    """The pool jobs are placed through (`jobs`: the open job store, whose database keeps the VM records), or
    None under `pool.share: job` (each job boots its own VM and deletes it: lando's behaviour)."""
    if config.pool.share == "job":
        return None
    from lando_ssh.pool.store import open_vm_store

    return PoolManager.from_config(config, open_vm_store(jobs), cloud)  # type: ignore[arg-type]


def _launched(vm: PoolVm, key_path: str | None, user: str, work_dir: str) -> None:
    vm.key_path, vm.user, vm.work_dir = key_path, user, work_dir


def _created(vm: PoolVm, cloud_id: str) -> None:
    if vm.state in (PoolState.DELETING, PoolState.DELETED):
        raise NoRoom(f"VM {vm.name} was given up")
    vm.cloud_id = cloud_id
