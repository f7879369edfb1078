"""Keeping the pool's records and the cloud in step: `reconcile` (every round, and at start as adoption) and
`retire` (the one way a pool VM is deleted).

`reconcile` lists the installation's pool VMs once and walks the live records:
- booting: ACTIVE with an address -> its host keys pinned from the console, then ready once SSH answers (a
  job may start on it); ERROR, gone, or no answer within `vm.boot_timeout` -> deleted, its jobs lost;
- idle: probed over SSH every `health.interval`; one that does not answer is marked (placement deletes it);
- idle, busy or draining but gone or in ERROR in the cloud -> recorded deleted, its jobs lost;
- deleting: the delete asked again until the cloud no longer lists it;
- a record booting with no VM in the cloud: left alone while younger than `adopt_grace` (its server may be
  asking for it right now), else recorded deleted and its jobs lost (a server died before asking).
Then every pool VM in the cloud that no live record owns is deleted (0 leaked after any crash). Jobs "lost"
go back to the engine, which restarts them on another VM (as a job whose VM died is today).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lando_ssh.cloud import META_POOL_VM, Cloud, VmInfo
from lando_ssh.errors import CloudError, LandoError, UnknownVm
from lando_ssh.pool.launch import Remotes
from lando_ssh.pool.model import LIVE, NoRoom, PoolState, PoolVm
from lando_ssh.pool.store import VmStore

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    booted: list[int] = field(default_factory=list)  # VMs that answered for the first time
    deleted: list[int] = field(default_factory=list)  # records now deleted
    lost: dict[int, str] = field(default_factory=dict)  # job id -> why its VM is gone
    swept: list[str] = field(default_factory=list)  # cloud ids of pool VMs no record owned, deleted


@dataclass
class Lifecycle:
    store: VmStore
    cloud: Cloud
    remotes: Remotes
    tags: dict[str, str]
    clock: Callable[[], float]
    boot_timeout: float = 600.0
    health_interval: float = 60.0
    adopt_grace: float = 600.0
    _probed: dict[int, float] = field(default_factory=dict)

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- the one way a VM goes --------------------------------------------------------------------------
    def retire(self, vm_id: int, reason: str, *, force: bool = False, out: Reconciled | None = None) -> bool:
        """Delete pool VM `vm_id`. Unless `force`, only while it holds no job (checked in the transaction that
        marks it deleting); with `force` its jobs are lost (`out.lost`). False when it took a job meanwhile."""
        lost: list[int] = []

        def deleting(vm: PoolVm) -> None:
            if vm.jobs and not force:
                raise NoRoom(f"VM {vm.name} took job(s) {vm.job_ids} meanwhile")
            lost.extend(vm.evict_all(self.at()))
            vm.state, vm.reason = PoolState.DELETING, reason

        try:
            vm = self.store.update(vm_id, deleting)
        except NoRoom:
            return False
        if out is not None:
            out.lost.update({job_id: f"its VM {vm.name} {reason}" for job_id in lost})
        log.info("pool: deleting VM %s: %s", vm.name, reason)
        self._finish(vm, out)
        return True

    def _finish(self, vm: PoolVm, out: Reconciled | None) -> None:
        if vm.cloud_id is not None:
            try:
                self.cloud.delete_vm(vm.cloud_id)
            except CloudError as e:  # left deleting: `reconcile` asks again
                log.warning("pool: could not delete VM %s yet: %s", vm.name, e)
                return
        self._deleted(vm.id, out)

    def _deleted(self, vm_id: int, out: Reconciled | None, reason: str | None = None) -> None:
        lost: list[int] = []

        def gone(vm: PoolVm) -> None:
            lost.extend(vm.evict_all(self.at()))
            vm.state, vm.deleted = PoolState.DELETED, vm.deleted or self.at()
            vm.reason = reason or vm.reason

        vm = self.store.update(vm_id, gone)
        _remove_key(vm.key_path)
        if out is not None:
            out.deleted.append(vm_id)
            out.lost.update({job_id: f"its VM {vm.name} {reason}" for job_id in lost})

    # -- every round --------------------------------------------------------------------------------------
    def reconcile(self, *, probe_all: bool = False) -> Reconciled:
        out = Reconciled()
        # records, then the listing, then the records again: a VM missing from the listing was not made after
        # its record was read (so it is gone), and a listed VM's record is in the second read (else none owns it)
        live = self.store.list(LIVE)
        listed = [v for v in self.cloud.find_vms(self.tags) if META_POOL_VM in v.metadata]
        by_record = {str(owner.id): v for v in listed if (owner := pool_owner(v, live)) is not None}
        for vm in live:
            info = by_record.get(str(vm.id))
            if info is None and vm.cloud_id is not None:
                info = self.cloud.get_vm(vm.cloud_id)  # (a cloud that lists late: ask for it by id)
            try:
                self.walk(vm, info, out, probe_all)
            except UnknownVm:
                continue
        walked = {info.id for info in by_record.values()}
        now_live = self.store.list(LIVE)
        for info in listed:
            if info.id not in walked and pool_owner(info, now_live) is None:
                self._sweep(info, out)
        return out

    def walk(self, vm: PoolVm, info: VmInfo | None, out: Reconciled, probe_all: bool = False) -> None:
        """One live record against what the cloud says of its VM (`info`; None: not there)."""
        age = self.clock() - vm.created.timestamp()
        if vm.state == PoolState.DELETING:
            if info is None:
                self._deleted(vm.id, out)
            else:
                self._finish(vm, out)
            return
        if info is None:
            if vm.state == PoolState.BOOTING and vm.cloud_id is None and age < self.adopt_grace:
                return  # being asked for, perhaps by another server
            self._deleted(vm.id, out, "is gone from the cloud")
            return
        if info.status == "ERROR":
            self.retire(vm.id, f"failed in the cloud: {info.fault or 'ERROR'}", force=True, out=out)
            return
        if vm.cloud_id is None:  # asked for, but the server died before it recorded the answer: adopt it
            vm = self.store.update(vm.id, lambda v: setattr(v, "cloud_id", info.id))
        if vm.state == PoolState.BOOTING:
            self._watch_boot(vm, info, age, out)
        elif vm.state == PoolState.IDLE and (probe_all or self._due(vm)):
            self._check_health(vm)

    def _watch_boot(self, vm: PoolVm, info: VmInfo, age: float, out: Reconciled) -> None:
        if info.status == "ACTIVE" and info.address:
            keys = vm.host_keys or _host_keys(self.cloud, info.id)
            if keys:
                vm = self.store.update(vm.id, lambda v: _reached(v, info, keys))
                if self._probe(vm) is None:
                    self.store.update(vm.id, lambda v: v.mark_ready(self.at()))
                    out.booted.append(vm.id)
                    return
        if age > self.boot_timeout:
            self.retire(vm.id, f"did not answer within vm.boot_timeout ({self.boot_timeout:g} s)", force=True,
                        out=out)

    def _check_health(self, vm: PoolVm) -> None:
        self._probed[vm.id] = self.clock()
        why = self._probe(vm)
        if why is None and vm.unreachable_since is not None:
            self.store.update(vm.id, lambda v: setattr(v, "unreachable_since", None))
        elif why is not None and vm.unreachable_since is None:
            log.warning("pool: idle VM %s does not answer: %s", vm.name, why)
            self.store.update(vm.id, lambda v: setattr(v, "unreachable_since", self.at()))

    def _due(self, vm: PoolVm) -> bool:
        return self.clock() - self._probed.get(vm.id, float("-inf")) >= self.health_interval

    def _probe(self, vm: PoolVm) -> str | None:
        """None when the VM answers SSH and its work dir is ready, else why not."""
        from lando_ssh.cloud.cloudinit import READY_MARKER

        marker = f"{(vm.work_dir or '/work').rstrip('/')}/{READY_MARKER}"
        try:
            remote = self.remotes.remote_for(vm)
            try:
                remote.run(["test", "-e", marker], timeout=30, retry=False, what="the pool's health check")
            finally:
                remote.close()
        except LandoError as e:
            return str(e)
        return None

    def _sweep(self, info: VmInfo, out: Reconciled) -> None:
        log.warning("pool: deleting VM %s (%s): no pool record owns it", info.name, info.id)
        try:
            self.cloud.delete_vm(info.id)
            out.swept.append(info.id)
        except CloudError as e:
            log.warning("pool: could not delete VM %s: %s", info.name, e)


def pool_owner(info: VmInfo, live: list[PoolVm]) -> PoolVm | None:
    """The live record that owns cloud VM `info` (a pool VM names its record's id in its metadata), or None: then
    no one does, and the pool (and the sweep) deletes it."""
    tag = info.metadata.get(META_POOL_VM)
    return next((vm for vm in live if str(vm.id) == tag and vm.cloud_id in (None, info.id)), None)


def _remove_key(path: str | None) -> None:
    """The VM's own keypair goes with it (no one logs in to a deleted VM)."""
    for p in (path, f"{path}.pub") if path else ():
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("pool: could not remove the key %s of a deleted VM: %s", p, e.strerror)


def _host_keys(cloud: Cloud, cloud_id: str) -> list[str]:
    from lando_ssh.cloud.cloudinit import host_keys_from_console

    try:
        return host_keys_from_console(cloud.console_log(cloud_id))
    except CloudError:
        return []


def _reached(vm: PoolVm, info: VmInfo, keys: list[str]) -> None:
    vm.cloud_id, vm.address, vm.port, vm.host_keys = info.id, info.address, info.port, list(keys)
