"""Pool VM records in the PostgreSQL job store's database: table `lando_vms` (migration 2 of
`store/postgres.py`), the record as JSONB beside indexed columns.

It works through the job store's connection pool and its handling of dropped connections. `update` locks
the VM's row (`SELECT ... FOR UPDATE`) from the read to the write, so a reservation's check and write are one
step even when several servers place jobs on one pool.
"""
from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lando_ssh.errors import UnknownVm
from lando_ssh.model import now
from lando_ssh.pool.model import LIVE, PoolState, PoolVm
from lando_ssh.pool.store import Reservations, elsewhere
from lando_ssh.store.postgres import PostgresStore, _begin, _rollback

try:
    from psycopg.types.json import Jsonb
except ImportError:  # (PostgresStore refuses to open without psycopg)
    Jsonb = None  # type: ignore[assignment,misc]

JOB_LOCK = 0x6C6A  # advisory lock class of a job being placed (the second key is the job id)


class PostgresVmStore(Reservations):
    def __init__(self, jobs: PostgresStore, *, owns: bool = False):
        self.jobs = jobs  # its constructor applied the migrations, lando_vms among them
        self.url = jobs.url
        self._owns = owns

    def create(self, vm: PoolVm) -> PoolVm:
        def insert(conn: Any) -> tuple[int, str]:
            _begin(conn)
            try:
                _check_elsewhere(conn, 0, vm.job_ids)
                row = conn.execute(
                    "INSERT INTO lando_vms (id, name, state, installation, created, updated, data) "
                    "SELECT n.id, n.name, %s, %s, %s, now(), "
                    "jsonb_set(jsonb_set(%s, '{id}', to_jsonb(n.id)), '{name}', to_jsonb(n.name)) "
                    "FROM (SELECT s.id, coalesce(nullif(%s, ''), %s || s.id) AS name "
                    "FROM (SELECT nextval(pg_get_serial_sequence('lando_vms', 'id')) AS id) AS s) AS n "
                    "RETURNING id, name",
                    (vm.state.value, vm.installation, vm.created, Jsonb(vm.to_dict()), vm.name,
                     f"{vm.installation}-pool-")).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            assert row is not None
            return int(row[0]), str(row[1])

        vm.id, vm.name = self.jobs._run(insert, idempotent=False)
        return vm

    def get(self, vm_id: int) -> PoolVm:
        row = self.jobs._run(lambda conn: conn.execute("SELECT data FROM lando_vms WHERE id = %s",
                                                       (vm_id,)).fetchone())
        if row is None:
            raise UnknownVm(vm_id)
        return PoolVm.from_dict(row[0])

    def update(self, vm_id: int, change: Callable[[PoolVm], object], *, placing: Sequence[int] = ()) -> PoolVm:
        def apply(conn: Any) -> PoolVm:
            _begin(conn)
            try:
                _check_elsewhere(conn, vm_id, placing)
                row = conn.execute("SELECT data FROM lando_vms WHERE id = %s FOR UPDATE", (vm_id,)).fetchone()
                if row is None:
                    raise UnknownVm(vm_id)
                vm = PoolVm.from_dict(row[0])
                change(vm)
                conn.execute("UPDATE lando_vms SET name = %s, state = %s, updated = %s, data = %s WHERE id = %s",
                             (vm.name, vm.state.value, now(), Jsonb(vm.to_dict()), vm_id))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return vm

        return self.jobs._run(apply, idempotent=False)

    def list(self, states: Iterable[PoolState] | None = None) -> builtins.list[PoolVm]:
        if states is None:
            rows = self.jobs._run(lambda conn: conn.execute("SELECT data FROM lando_vms ORDER BY id").fetchall())
        else:
            codes = [s.value for s in states]
            rows = self.jobs._run(lambda conn: conn.execute(
                "SELECT data FROM lando_vms WHERE state = ANY(%s) ORDER BY id", (codes,)).fetchall())
        return [PoolVm.from_dict(r[0]) for r in rows]

    def close(self) -> None:
        if self._owns:
            self.jobs.close()


def _check_elsewhere(conn: Any, vm_id: int, placing: Sequence[int]) -> None:
    """Refuse a job another live VM holds; the job's advisory lock (held to the end of the transaction) makes a
    second server placing the same job wait, then see the first one's placement."""
    for job_id in sorted(placing):
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (JOB_LOCK, job_id & 0x7FFFFFFF))
        row = conn.execute("SELECT id, name FROM lando_vms WHERE state = ANY(%s) AND id <> %s "
                           "AND data->'jobs' @> %s LIMIT 1",
                           ([s.value for s in LIVE], vm_id, Jsonb([{"job_id": job_id}]))).fetchone()
        elsewhere(job_id, vm_id, (int(row[0]), str(row[1])) if row else None)
