"""Pool VM records in the SQLite job store's file: table `vms`, the record as JSON beside indexed columns.

It works through the job store's own connection handling (one connection per thread, WAL, sqlite3's errors
said as what they mean). `update` holds the database's write lock (`BEGIN IMMEDIATE`) from the read to the
write, so a reservation's check and write are one step.
"""
from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence

from lando_ssh.errors import UnknownVm
from lando_ssh.pool.model import LIVE, PoolState, PoolVm
from lando_ssh.pool.store import Reservations, default_name, elsewhere
from lando_ssh.store.sqlite import SqliteStore, _translated

SCHEMA = """
CREATE TABLE IF NOT EXISTS vms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    installation TEXT NOT NULL,
    created TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS vms_state ON vms (state);
"""


class SqliteVmStore(Reservations):
    def __init__(self, jobs: SqliteStore, *, owns: bool = False):
        self.jobs = jobs
        self.path = jobs.path  # (for `_translated`'s messages)
        self._owns = owns
        self._create_schema()

    @_translated
    def _create_schema(self) -> None:
        self.jobs._conn().executescript(SCHEMA)

    @_translated
    def create(self, vm: PoolVm) -> PoolVm:
        db = self.jobs._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._check_elsewhere(db, 0, vm.job_ids)
            cur = db.execute("INSERT INTO vms (name, state, installation, created, data) VALUES (?,?,?,?,?)",
                             (vm.name or f"-{id(vm)}", vm.state.value, vm.installation, vm.created.isoformat(), "{}"))
            vm.id = int(cur.lastrowid or 0)
            vm.name = vm.name or default_name(vm.installation, vm.id)
            db.execute("UPDATE vms SET name=?, data=? WHERE id=?", (vm.name, json.dumps(vm.to_dict()), vm.id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return vm

    @_translated
    def get(self, vm_id: int) -> PoolVm:
        row = self.jobs._conn().execute("SELECT data FROM vms WHERE id=?", (vm_id,)).fetchone()
        if row is None:
            raise UnknownVm(vm_id)
        return PoolVm.from_dict(json.loads(row[0]))

    @_translated
    def update(self, vm_id: int, change: Callable[[PoolVm], object], *, placing: Sequence[int] = ()) -> PoolVm:
        db = self.jobs._conn()
        db.execute("BEGIN IMMEDIATE")  # (the database's write lock: no other placement meanwhile)
        try:
            self._check_elsewhere(db, vm_id, placing)
            row = db.execute("SELECT data FROM vms WHERE id=?", (vm_id,)).fetchone()
            if row is None:
                raise UnknownVm(vm_id)
            vm = PoolVm.from_dict(json.loads(row[0]))
            change(vm)
            db.execute("UPDATE vms SET name=?, state=?, data=? WHERE id=?",
                       (vm.name, vm.state.value, json.dumps(vm.to_dict()), vm_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return vm

    @staticmethod
    def _check_elsewhere(db: sqlite3.Connection, vm_id: int, placing: Sequence[int]) -> None:
        live = [s.value for s in LIVE]
        marks = ",".join("?" * len(live))
        for job_id in placing:
            row = db.execute(f"SELECT v.id, v.name FROM vms v, json_each(v.data, '$.jobs') j "  # noqa: S608
                             f"WHERE v.state IN ({marks}) AND json_extract(j.value, '$.job_id') = ? AND v.id <> ? "
                             "LIMIT 1", (*live, job_id, vm_id)).fetchone()
            elsewhere(job_id, vm_id, (int(row[0]), str(row[1])) if row else None)

    @_translated
    def list(self, states: Iterable[PoolState] | None = None) -> builtins.list[PoolVm]:
        db = self.jobs._conn()
        if states is None:
            rows = db.execute("SELECT data FROM vms ORDER BY id").fetchall()
        else:
            codes = [s.value for s in states]
            query = f"SELECT data FROM vms WHERE state IN ({','.join('?' * len(codes))}) ORDER BY id"  # noqa: S608
            rows = db.execute(query, codes).fetchall()
        return [PoolVm.from_dict(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        if self._owns:
            self.jobs.close()
