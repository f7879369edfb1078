"""Pool VM records in SQLite and in the real PostgreSQL on 127.0.0.1:5432: kept as written, and reservations
that never put more on a VM than it has, with threads (and two stores, as two servers) racing for it."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import postgres_database

from lando_ssh.errors import UnknownVm
from lando_ssh.pool.model import NoRoom, PoolState, PoolVm, Resources
from lando_ssh.pool.store import VmStore, find_vm, holding, open_vm_store
from lando_ssh.store import open_store


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def own_pg_url() -> Iterator[str]:
    """A database no other test's VMs are in (a pool's limits count every VM of its store)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.sqlite"
    return str(request.getfixturevalue("pg_url"))


def a_vm(vcpus: int = 4, ram_mb: int = 8192, disk_mb: int = 0, **kw: object) -> PoolVm:
    fields: dict[str, object] = dict(id=0, name="", flavor="m1.large", size=Resources(vcpus, ram_mb, disk_mb),
                                     image="local", project=None, owner="ann", share_key="owner:ann",
                                     installation=f"t{uuid.uuid4().hex[:6]}")
    fields.update(kw)
    return PoolVm(**fields)  # type: ignore[arg-type]


def test_a_vm_record_reads_back_as_written(url: str) -> None:
    store = open_vm_store(url)
    try:
        vm = store.create(a_vm(disk_mb=20480, volume_gb=20, host_keys=["ssh-ed25519 AAAA"], key_path="/k/vm"))
        assert vm.id > 0 and vm.name == f"{vm.installation}-pool-{vm.id}"
        vm.reserve(7, Resources(1, 1024, 100))
        store.update(vm.id, lambda v: v.reserve(7, Resources(1, 1024, 100)))
        got = store.get(vm.id)
        assert got.to_dict() == {**vm.to_dict(), "jobs": got.to_dict()["jobs"]}
        assert got.job_ids == [7] and got.free == Resources(3, 7168, 20380) and got.served == 1
        assert [v.id for v in store.list([PoolState.BOOTING])] == [vm.id]
        assert store.list([PoolState.IDLE]) == []
        assert holding(store, 7) is not None and holding(store, 8) is None
        assert find_vm(store, vm.name).id == vm.id and find_vm(store, str(vm.id)).id == vm.id
        with pytest.raises(UnknownVm):
            store.get(vm.id + 1000)
    finally:
        store.close()


def test_a_vm_store_shares_the_job_stores_database(url: str) -> None:
    jobs = open_store(url)
    store = open_vm_store(jobs)
    try:
        vm = store.create(a_vm())
        assert open_vm_store(url).get(vm.id).name == vm.name  # seen through a store opened apart
        assert jobs.list() is not None  # the job store still works: closing the VM store leaves it open
    finally:
        store.close()
        jobs.list()
        jobs.close()


def test_reserve_refuses_what_does_not_fit_or_a_draining_vm_and_writes_nothing(url: str) -> None:
    store = open_vm_store(url)
    try:
        vm = store.create(a_vm(vcpus=2, ram_mb=4096))
        store.reserve(vm.id, 1, Resources(2, 1024))
        with pytest.raises(NoRoom, match="0 vCPUs, 3072 MB RAM free; job 2 needs 1 vCPUs"):
            store.reserve(vm.id, 2, Resources(1, 1024))
        assert store.get(vm.id).job_ids == [1]
        store.reserve(vm.id, 1, Resources(2, 1024))  # again: nothing changes
        assert store.get(vm.id).served == 1
        store.release(vm.id, 1)
        store.update(vm.id, lambda v: v.drain("an admin's drain"))
        with pytest.raises(NoRoom, match="draining"):
            store.reserve(vm.id, 3, Resources(1, 1024))
        assert store.get(vm.id).jobs == []
    finally:
        store.close()


def race(stores: list[VmStore], vm_id: int, jobs: int, needs: Resources) -> list[int]:
    """`jobs` threads, spread over `stores`, each reserving its job (ids new to the database) on the VM at once:
    the jobs that got in."""
    base = vm_id * 1000
    placed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(jobs)
    errors: list[BaseException] = []

    def one(job_id: int) -> None:
        store = stores[job_id % len(stores)]  # (spread over the stores)
        start.wait()
        try:
            store.reserve(vm_id, job_id, needs)
        except NoRoom:
            return
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)
            return
        with lock:
            placed.append(job_id)

    threads = [threading.Thread(target=one, args=(base + i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return placed


def test_threads_racing_for_one_vm_never_oversubscribe_it(url: str) -> None:
    store = open_vm_store(url)
    try:
        vm = store.create(a_vm(vcpus=4, ram_mb=16384))
        placed = race([store], vm.id, 12, Resources(1, 1024))
        final = store.get(vm.id)
        assert len(placed) == 4 and sorted(final.job_ids) == sorted(placed)
        assert final.used == Resources(4, 4096) and final.served == 4
    finally:
        store.close()


def test_two_servers_on_one_postgresql_never_place_more_than_a_vm_has(pg_url: str) -> None:
    one, two = open_vm_store(pg_url), open_vm_store(pg_url)  # two connection pools, as two servers have
    try:
        for _ in range(3):
            vm = one.create(a_vm(vcpus=8, ram_mb=6144))  # RAM is the tighter: 6 jobs of 1 GB
            placed = race([one, two], vm.id, 16, Resources(1, 1024))
            final = two.get(vm.id)
            assert len(placed) == 6 and sorted(final.job_ids) == sorted(placed)
            assert final.free.covers(Resources()) and final.used == Resources(6, 6144)
    finally:
        one.close()
        two.close()


RACER = """
import sys, threading
from lando_ssh.pool.model import NoRoom, Resources
from lando_ssh.pool.store import open_vm_store
url, vm_id, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = open_vm_store(url)
store.get(vm_id)  # connected before the start
placed, go = [], threading.Event()
def one(job_id):
    go.wait()
    try:
        store.reserve(vm_id, job_id, Resources(1, 1024))
        placed.append(job_id)
    except NoRoom:
        pass
threads = [threading.Thread(target=one, args=(first + i,)) for i in range(6)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for t in threads:
    t.join()
print(" ".join(map(str, placed)), flush=True)
store.close()
"""


def test_two_server_processes_racing_on_one_postgresql_never_oversubscribe_a_vm(pg_url: str) -> None:
    import subprocess
    import sys

    store = open_vm_store(pg_url)
    try:
        vm = store.create(a_vm(vcpus=5, ram_mb=65536))
        procs = [subprocess.Popen([sys.executable, "-c", RACER, pg_url, str(vm.id), str(first)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(Path(__file__).parent.parent))
                 for first in (vm.id * 1000 + 100, vm.id * 1000 + 200)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # both start at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        placed = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            placed += [int(w) for w in out.split()]
        final = store.get(vm.id)
        assert len(placed) == 5 and sorted(final.job_ids) == sorted(placed) and final.used.vcpus == 5
    finally:
        store.close()


def test_a_job_is_never_placed_on_two_vms(url: str) -> None:
    store = open_vm_store(url)
    try:
        one, two = store.create(a_vm()), store.create(a_vm())
        store.reserve(one.id, 5, Resources(1, 1024))
        with pytest.raises(NoRoom, match=f"job 5 is on VM {one.name} already"):
            store.reserve(two.id, 5, Resources(1, 1024))
        booting = a_vm()
        booting.reserve(5, Resources(1, 1024))
        with pytest.raises(NoRoom, match=f"job 5 is on VM {one.name} already"):
            store.create(booting)  # a boot for it, by another server
        store.release(one.id, 5)
        assert store.reserve(two.id, 5, Resources(1, 1024)).job_ids == [5]  # once it left, anywhere
    finally:
        store.close()


def test_two_servers_placing_the_same_jobs_on_different_vms_place_each_once(pg_url: str) -> None:
    one, two = open_vm_store(pg_url), open_vm_store(pg_url)
    try:
        vms = [one.create(a_vm(vcpus=16, ram_mb=65536)) for _ in range(2)]
        start = threading.Barrier(2)

        def server(store: VmStore, vm: PoolVm) -> None:
            start.wait()
            for job_id in range(900_000, 900_040):
                try:
                    store.reserve(vm.id, job_id, Resources(0, 1))
                except NoRoom:
                    pass

        threads = [threading.Thread(target=server, args=(s, v)) for s, v in zip((one, two), vms, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = [j for v in vms for j in one.get(v.id).job_ids]
        assert sorted(held) == list(range(900_000, 900_040))  # each job on exactly one VM
    finally:
        one.close()
        two.close()


def test_a_store_made_before_the_pool_gains_its_vms_table_and_keeps_its_jobs(pg_url: str) -> None:
    from lando_ssh.model import Job
    from lando_ssh.store.postgres import MIGRATIONS, SCHEMA_VERSION

    schema = f"s_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    try:
        with psycopg.connect(url, autocommit=True) as db:  # what lando-ssh before the pool made
            db.execute("CREATE TABLE lando_schema (version integer NOT NULL, applied timestamptz NOT NULL "
                       "DEFAULT now())")
            db.execute(MIGRATIONS[0])
            db.execute("INSERT INTO lando_schema (version) VALUES (1)")
            db.execute("INSERT INTO lando_jobs (state, step, created, updated, data) VALUES "
                       "('F', '', now(), now(), %s)",
                       (psycopg.types.json.Jsonb(Job(id=1, name="old", workflow="w", job_order={}).to_dict()),))
        store = open_vm_store(url)
        try:
            assert store.create(a_vm()).id == 1
        finally:
            store.close()
        with psycopg.connect(url, autocommit=True) as db:
            assert db.execute("SELECT max(version) FROM lando_schema").fetchone() == (SCHEMA_VERSION,)
            assert db.execute("SELECT data->>'name' FROM lando_jobs").fetchall() == [("old",)]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def test_two_pool_servers_running_at_once_on_postgresql_keep_every_promise(own_pg_url: str) -> None:
    """Two managers in two threads, each with its own connection pool, one fake cloud with faults: each server
    drives the jobs it holds the lease of, and also offers the other's (as a server whose lease check is late
    would): never oversubscribed, no job on two VMs, every job done once, no VM left."""
    import random

    from fakes import FakeCloud, FakeLauncher, FakeRemotes
    from pool_helpers import FLAVORS, job

    from lando_ssh.pool.manager import PoolManager, PoolSettings
    from lando_ssh.pool.model import LIVE
    from lando_ssh.pool.policy import PoolPolicy, Share
    from lando_ssh.scheduler import Limits

    installation = f"race{uuid.uuid4().hex[:6]}"
    tags = {"lando_installation": installation}
    cloud = FakeCloud(FLAVORS, create_error_rate=0.1, delete_error_rate=0.1, boot_polls=2, seed=3)
    settings = PoolSettings(installation=installation, tags=tags, health_interval=0, boot_timeout=30)
    stores = [open_vm_store(own_pg_url), open_vm_store(own_pg_url)]
    servers = [PoolManager(s, cloud, FakeLauncher(tags), FakeRemotes(cloud), policy=PoolPolicy(Share.ANY, True, 0),
                           limits=Limits(max_vms=5), settings=settings) for s in stores]
    mine = {0: set(range(1, 26)), 1: set(range(26, 51))}
    finished: list[int] = []
    problems: list[str] = []
    lock = threading.Lock()

    def check(store: VmStore) -> None:
        seen: dict[int, str] = {}
        for v in store.list(LIVE):
            if v.installation != installation:
                continue
            if not v.size.covers(v.used):
                problems.append(f"{v.name} holds {v.used} on {v.size}")
            for j in v.job_ids:
                if j in seen:
                    problems.append(f"job {j} on {seen[j]} and {v.name}")
                seen[j] = v.name

    def serve(n: int) -> None:
        rng = random.Random(n)
        m, store = servers[n], stores[n]
        waiting, placed, running = set(mine[n]), set(), {}
        for _ in range(1000):  # (rounds, not seconds: a loaded machine makes it slower, not different)
            if not (waiting or placed) or problems:
                break
            offered = sorted(waiting) + rng.sample(sorted(mine[1 - n]), 3)  # some of the other's, too
            r = m.round([job(i, cores=1 + i % 2, owner="ann") for i in offered])
            waiting -= set(r.placed)
            placed |= set(r.placed) & mine[n]
            for j in set(r.placed) - mine[n]:  # not ours: give it back at once (the lease says so)
                m.job_done(j)
            for j in (set(r.lost) | set(m.gone(placed))) & placed:  # (lost while the other server reconciled)
                placed.discard(j)
                running.pop(j, None)
                waiting.add(j)
            for v in store.list(LIVE):
                if v.state.value in ("idle", "busy"):  # its VM answers: the job runs
                    for j in set(v.job_ids) & placed:
                        running.setdefault(j, rng.randint(1, 3))
            for j in list(running):
                running[j] -= 1
                if running[j] == 0:
                    del running[j]
                    placed.discard(j)
                    m.job_done(j)
                    with lock:
                        finished.append(j)
            check(store)
        if waiting or placed:
            problems.append(f"server {n} did not finish: waiting {sorted(waiting)}, placed {sorted(placed)}")

    threads = [threading.Thread(target=serve, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert problems == []
        assert sorted(finished) == list(range(1, 51))  # every job once
        cloud.delete_error_rate = cloud.create_error_rate = 0.0
        for m in servers:
            m.round([])
        assert [v for v in stores[0].list(LIVE) if v.installation == installation] == [] and cloud.alive() == []
        assert len(cloud.created) == len(set(cloud.created))
    finally:
        for s in stores:
            s.close()
