"""Pool VM records beside the job records, in the same database: `VmStore` and its two backends.

`open_vm_store(where)` takes the store URL (`config.store_url`) or an open job store (then the VM store
shares its connections): SQLite keeps a `vms` table in the job store's file, PostgreSQL a `lando_vms` table
(migration 2 of `store/postgres.py`). Both keep the record as JSON beside indexed columns, as the job stores do.

Placement is a compare-and-set in one transaction on the VM's row (`BEGIN IMMEDIATE` in SQLite, `SELECT ...
FOR UPDATE` in PostgreSQL): `reserve` succeeds only if the VM still has the room and takes new jobs when the
row is locked, so two threads or two servers never place more on a VM than it has.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from lando_ssh.pool.model import LIVE, NoRoom, PoolState, PoolVm, Resources

if TYPE_CHECKING:
    from lando_ssh.store import JobStore


class VmStore(Protocol):
    def create(self, vm: PoolVm) -> PoolVm:
        """Store a new VM record; returns it with its id assigned (`vm.id` is ignored) and, when `vm.name` is
        empty, the name `<installation>-pool-<id>`. Raises `NoRoom` when one of the jobs it holds is on another
        live VM already (see `update`)."""
        ...

    def get(self, vm_id: int) -> PoolVm:
        """The VM record, or raise `UnknownVm`."""
        ...

    def update(self, vm_id: int, change: Callable[[PoolVm], object], *, placing: Sequence[int] = ()) -> PoolVm:
        """Read VM `vm_id`, apply `change`, write it back in one transaction (the row locked meanwhile);
        `change` may raise to abort: nothing is written then. `placing`: the jobs `change` puts on the VM; one
        another live VM holds already is refused (`NoRoom`), checked under a lock on the job, so two servers
        never place one job on two VMs."""
        ...

    def list(self, states: Iterable[PoolState] | None = None) -> list[PoolVm]:
        """VM records in `states` (all when None), by id."""
        ...

    def reserve(self, vm_id: int, job_id: int, needs: Resources, at: datetime | None = None) -> PoolVm:
        """Put job `job_id` on VM `vm_id` if it still has `needs` free and takes new jobs (one transaction);
        else raise `NoRoom` saying why. Idempotent for a job already on it."""
        ...

    def release(self, vm_id: int, job_id: int, at: datetime | None = None) -> PoolVm:
        """Take job `job_id` off VM `vm_id` (nothing happens when it is not there); an emptied VM is idle from
        `at` (default now)."""
        ...

    def close(self) -> None:
        ...


class Reservations:
    """`reserve` and `release` over a backend's atomic `update`: one implementation for both backends."""

    def update(self, vm_id: int, change: Callable[[PoolVm], object], *, placing: Sequence[int] = ()) -> PoolVm:
        raise NotImplementedError

    def reserve(self, vm_id: int, job_id: int, needs: Resources, at: datetime | None = None) -> PoolVm:
        return self.update(vm_id, lambda vm: vm.reserve(job_id, needs, at), placing=(job_id,))

    def release(self, vm_id: int, job_id: int, at: datetime | None = None) -> PoolVm:
        return self.update(vm_id, lambda vm: vm.release(job_id, at))


def elsewhere(job_id: int, vm_id: int, holder: tuple[int, str] | None) -> None:
    """Refuse to place job `job_id` on VM `vm_id` when `holder` (id, name), another live VM, has it."""
    if holder is not None and holder[0] != vm_id:
        raise NoRoom(f"job {job_id} is on VM {holder[1]} already")


def holding(store: VmStore, job_id: int) -> PoolVm | None:
    """The live VM job `job_id` is on, or None."""
    return next((vm for vm in store.list(LIVE) if vm.holds(job_id)), None)


def find_vm(store: VmStore, name_or_id: str) -> PoolVm:
    """A VM by its name, its store id or its cloud id (what an admin types); raises `UnknownVm`."""
    from lando_ssh.errors import UnknownVm

    for vm in store.list():
        if name_or_id in (vm.name, vm.cloud_id) or (name_or_id.isdigit() and int(name_or_id) == vm.id):
            return vm
    raise UnknownVm(name_or_id)


def default_name(installation: str, vm_id: int) -> str:
    return f"{installation}-pool-{vm_id}"


def open_vm_store(where: str | JobStore) -> VmStore:
    """The VM store in the database of store URL `where`, or beside the open job store `where` (sharing its
    connections; a bespin-api source's local store)."""
    from lando_ssh.errors import ConfigError
    from lando_ssh.store import open_store
    from lando_ssh.store.sqlite import SqliteStore

    owns = isinstance(where, str)
    jobs = open_store(where) if isinstance(where, str) else getattr(where, "local", where)
    if isinstance(jobs, SqliteStore):
        from lando_ssh.pool.sqlite import SqliteVmStore

        return SqliteVmStore(jobs, owns=owns)
    from lando_ssh.store.postgres import PostgresStore

    if isinstance(jobs, PostgresStore):
        from lando_ssh.pool.postgres import PostgresVmStore

        return PostgresVmStore(jobs, owns=owns)
    raise ConfigError(f"the VM pool needs a sqlite:/// or postgresql:// store, not a {type(jobs).__name__}")
