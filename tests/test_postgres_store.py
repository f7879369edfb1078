"""The PostgreSQL job store against the real PostgreSQL on 127.0.0.1:5432: the same behaviour as the SQLite
store (atomic updates under many threads), leases between servers, schema set-up, failures told in one
sentence without the password, and a job run end to end through the CLI with the store in PostgreSQL.

Each test run works in a fresh database `lando_test_<random>`, dropped at the end. PostgreSQL down is a
failure, not a skip."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from bespin_api import BespinApiService
from conftest import BESPIN_TOKEN, WORKFLOWS, Lando, postgres_database
from test_bespin import flaky_job

from lando_ssh.errors import StoreUnavailable, UnknownJob
from lando_ssh.model import Job, JobState, JobStep
from lando_ssh.store import open_store
from lando_ssh.store.postgres import SCHEMA_VERSION, PostgresStore
from lando_ssh.store.sqlite import SqliteStore


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as db:  # the tests share the database, not the leases
        db.execute("UPDATE lando_jobs SET lease_owner = NULL, lease_expires = NULL")
    yield s
    s.close()


@pytest.fixture
def fresh_schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose tables live in a new, empty schema (as a fresh database would have them)."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    yield f"{pg_url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")


def new_job(name: str = "job", **kw: object) -> Job:
    return Job(id=0, name=name, workflow="/wf.cwl", job_order={"x": {"class": "File", "location": "file:///x"}},
               **kw)  # type: ignore[arg-type]


def _set(job: Job, state: JobState, step: JobStep | None = None) -> None:
    job.set_state(state, step)


def lease_of(pg_url: str, job_id: int) -> str | None:
    with psycopg.connect(pg_url) as db:
        row = db.execute("SELECT lease_owner FROM lando_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0]


# -- the JobStore behaviour --------------------------------------------------------------------
def test_jobs_are_created_read_changed_and_listed_like_in_the_sqlite_store(store: PostgresStore):
    first = store.create(new_job("first", priority=3))
    second = store.create(new_job("second"))
    assert second.id > first.id > 0

    got = store.get(first.id)
    assert got.to_dict() == first.to_dict()
    assert (got.name, got.priority, got.job_order) == ("first", 3, first.job_order)

    def start(job: Job) -> None:
        job.set_state(JobState.STARTING, JobStep.CREATE_VM, note="start_job received")
        job.facts["flavor"] = "m1.small"

    changed = store.update(first.id, start)
    assert (changed.state, changed.step) == (JobState.STARTING, JobStep.CREATE_VM)
    again = store.get(first.id)
    assert again.facts == {"flavor": "m1.small"} and again.history[-1].note == "start_job received"
    assert again.updated >= first.updated

    ours = {first.id, second.id}
    assert [j.id for j in store.list([JobState.STARTING]) if j.id in ours] == [first.id]
    assert [j.id for j in store.list([JobState.NEW, JobState.STARTING]) if j.id in ours] == [first.id, second.id]
    assert [j.id for j in store.list() if j.id in ours] == [first.id, second.id]
    assert store.list([]) == []


def test_twenty_threads_incrementing_one_fact_lose_no_update(store: PostgresStore):
    job = store.create(new_job("counter"))
    errors: list[BaseException] = []

    def increment(j: Job) -> None:
        n = j.facts.get("n", 0)
        time.sleep(0.001)  # widen the window a lost update would need
        j.facts["n"] = n + 1

    def worker() -> None:
        try:
            for _ in range(10):
                store.update(job.id, increment)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert store.get(job.id).facts["n"] == 200


def test_a_change_that_raises_leaves_the_job_as_it_was(store: PostgresStore):
    job = store.create(new_job("steady"))
    before = store.get(job.id).to_dict()

    def half_done(j: Job) -> None:
        j.set_state(JobState.STARTING)
        j.facts["written"] = True
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        store.update(job.id, half_done)
    assert store.get(job.id).to_dict() == before
    assert store.update(job.id, lambda j: j.facts.update(after=1)).facts == {"after": 1}  # the row is not locked


def test_an_unknown_job_is_refused_by_every_call(store: PostgresStore):
    for call in (lambda: store.get(999_999), lambda: store.update(999_999, lambda j: None),
                 lambda: store.claim(999_999, "server-a", 30)):
        with pytest.raises(UnknownJob, match="there is no job 999999"):
            call()


def test_open_store_routes_postgresql_urls_here(pg_url: str):
    s = open_store(pg_url)
    try:
        assert isinstance(s, PostgresStore)
    finally:
        s.close()


# -- leases ------------------------------------------------------------------------------------
def test_of_two_servers_only_one_claims_a_job(pg_url: str, store: PostgresStore):
    job = store.create(new_job("contested"))
    other = PostgresStore(pg_url)
    try:
        results: dict[str, bool] = {}
        barrier = threading.Barrier(8)

        def race(owner: str) -> None:
            s = store if owner.endswith(("0", "2", "4", "6")) else other
            barrier.wait()
            results[owner] = s.claim(job.id, owner, 30)

        threads = [threading.Thread(target=race, args=(f"server-{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [o for o, won in results.items() if won]
        assert len(results) == 8 and len(winners) == 1
        assert lease_of(pg_url, job.id) == winners[0]
        assert store.claim(job.id, winners[0], 30)  # claiming again renews our own lease
        loser = next(o for o in results if o != winners[0])
        assert job.id not in [j.id for j in store.owned_or_orphaned([JobState.NEW], loser)]
        assert job.id in [j.id for j in store.owned_or_orphaned([JobState.NEW], winners[0])]
    finally:
        other.close()


def test_a_dead_servers_job_is_adopted_when_its_lease_expires(pg_url: str, store: PostgresStore):
    job = store.create(new_job("orphan"))
    store.update(job.id, lambda j: _set(j, JobState.STARTING, JobStep.CREATE_VM))
    assert store.claim(job.id, "server-a", 0.5)
    assert not store.claim(job.id, "server-b", 30)
    assert job.id not in [j.id for j in store.owned_or_orphaned([JobState.STARTING], "server-b")]

    time.sleep(0.8)  # server-a died: nobody renews
    assert job.id in [j.id for j in store.owned_or_orphaned([JobState.STARTING], "server-b")]
    assert store.claim(job.id, "server-b", 30)
    assert lease_of(pg_url, job.id) == "server-b"
    assert not store.claim(job.id, "server-a", 30)  # a server that comes back finds it taken
    assert store.renew("server-a", 30) == 0


def test_renewing_keeps_the_lease_past_its_first_expiry(store: PostgresStore):
    job = store.create(new_job("kept"))
    other_job = store.create(new_job("also kept"))
    assert store.claim(job.id, "server-a", 0.6) and store.claim(other_job.id, "server-a", 0.6)
    for _ in range(5):  # 1.5 s, well past the first 0.6 s
        time.sleep(0.3)
        assert store.renew("server-a", 0.6) == 2
        assert not store.claim(job.id, "server-b", 30)
    assert job.id not in [j.id for j in store.owned_or_orphaned([JobState.NEW], "server-b")]


def test_a_released_job_is_free_for_another_server(pg_url: str, store: PostgresStore):
    job = store.create(new_job("handed over"))
    assert store.claim(job.id, "server-a", 30)
    store.release(job.id, "server-b")  # not b's to release: nothing happens
    assert lease_of(pg_url, job.id) == "server-a"
    store.release(job.id, "server-a")
    assert lease_of(pg_url, job.id) is None
    assert store.claim(job.id, "server-b", 30)
    assert store.renew("server-a", 30) == 0 and store.renew("server-b", 30) == 1


def test_updates_never_touch_the_lease(pg_url: str, store: PostgresStore):
    job = store.create(new_job("leased"))
    assert store.claim(job.id, "server-a", 30)
    store.update(job.id, lambda j: _set(j, JobState.STARTING))
    assert lease_of(pg_url, job.id) == "server-a"


def test_the_sqlite_store_always_lets_its_one_server_claim(tmp_path: Path):
    s = SqliteStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    try:
        job = s.create(new_job("solo"))
        assert s.claim(job.id, "server-a", 30) and s.claim(job.id, "server-b", 30)
        assert s.renew("server-a", 30) == 0
        s.release(job.id, "server-a")
        assert [j.id for j in s.owned_or_orphaned([JobState.NEW], "server-a")] == [job.id]
        with pytest.raises(UnknownJob):
            s.claim(999, "server-a", 30)
    finally:
        s.close()


# -- schema and connections --------------------------------------------------------------------
def test_servers_starting_together_create_the_schema_once(fresh_schema_url: str):
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(fresh_schema_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert errors == [] and len(stores) == 5
    with psycopg.connect(fresh_schema_url) as db:
        assert db.execute("SELECT version FROM lando_schema ORDER BY version").fetchall() == \
            [(v,) for v in range(1, SCHEMA_VERSION + 1)]  # each migration applied once


def test_a_schema_newer_than_this_lando_ssh_is_refused(fresh_schema_url: str):
    PostgresStore(fresh_schema_url).close()
    with psycopg.connect(fresh_schema_url) as db:
        db.execute("INSERT INTO lando_schema (version) VALUES (99)")
    with pytest.raises(StoreUnavailable, match="schema version 99, newer than this lando-ssh knows"):
        PostgresStore(fresh_schema_url)


def test_connections_the_database_dropped_are_replaced(pg_url: str, store: PostgresStore):
    job = store.create(new_job("survivor"))
    store.get(job.id)  # the pool now holds an open connection
    with psycopg.connect(pg_url, autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND application_name = 'lando-ssh'").fetchone()
    assert killed is not None and killed[0] >= 1
    assert store.get(job.id).name == "survivor"
    store.get(job.id)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND application_name = 'lando-ssh'")
    assert store.update(job.id, lambda j: j.facts.update(after_drop=True)).facts == {"after_drop": True}


def test_an_unreachable_database_is_one_sentence_without_the_password(lando: Lando):
    url = "postgresql://lando:s3cret-pw@127.0.0.1:1/jobs"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert message == "the job store postgresql://lando@127.0.0.1:1/jobs is unavailable: Connection refused"

    lando.write_config(store={"url": url})
    proc = lando.cli("status")
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"lando-ssh: {message}"
    assert "s3cret" not in proc.stderr + proc.stdout


# -- end to end --------------------------------------------------------------------------------
def test_a_job_submitted_and_run_through_the_cli_is_kept_in_postgresql(lando: Lando, pg_url: str):
    lando.write_config(store={"url": pg_url})
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml", "--name", "in postgres")

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    job = lando.status(job_id)
    assert (job["state"], job["step"], job["name"]) == ("F", "", "in postgres")
    assert (Path(job["output_dir"]) / "count.txt").read_bytes() == b"3\n"
    assert not (lando.data_dir / "jobs.sqlite").exists()
    s = PostgresStore(pg_url)
    try:
        stored = s.get(job_id)
        assert stored.state == JobState.FINISHED and stored.vm is not None and stored.vm.deleted
        assert [h.state.value for h in stored.history][-1] == "F"
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_list_summaries_are_the_jobs_without_job_order_workflow_and_output(kind: str, fresh_schema_url: str,
                                                                           tmp_path: Path) -> None:
    s = PostgresStore(fresh_schema_url) if kind == "postgres" else SqliteStore(f"sqlite:///{tmp_path}/jobs.sqlite")
    try:
        for n in range(3):
            job = Job(0, f"job-{n}", "wf.cwl", {"secret": "s3cret"}, user="ann", facts={"project": "p"},
                      workflow_doc={"class": "Workflow", "doc": "x" * 1000}, output={"out": {"class": "File"}})
            job.set_state(JobState.STARTING, JobStep.CREATE_VM, "start")
            s.create(job)
        whole, summaries = s.list(), s.list_summaries()
        assert [j.id for j in summaries] == [j.id for j in whole]
        for full, summary in zip(whole, summaries, strict=True):
            assert (summary.job_order, summary.workflow_doc, summary.output) == ({}, None, None)
            full.job_order, full.workflow_doc, full.output = {}, None, None
            assert summary.to_dict() == full.to_dict()
    finally:
        s.close()


def test_a_job_orders_floats_come_back_as_written_from_both_stores(store: PostgresStore, tmp_path: Path):
    """cwltool prints a float on a tool's command line from its text (`1.50`, not 1.5): the stores keep it.
    (PostgreSQL's jsonb keeps `1.50` and `0.0000001`; it writes `2.5e3` as 2500, which cwltool prints alike.)"""
    from lando_ssh import exactjson

    order = exactjson.loads('{"trailing": 1.50, "small": 0.0000001, "list": [2.5e3]}')
    local = SqliteStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    try:
        for s in (store, local):
            job = s.create(Job(id=0, name="floats", workflow="wf.cwl", job_order=order))
            back = s.get(job.id).job_order
            assert exactjson.dumps(back["trailing"]) == "1.50" and exactjson.dumps(back["small"]) == "0.0000001"
            assert float(back["list"][0]) == 2500
        assert exactjson.dumps(local.get(1).job_order) == '{"trailing": 1.50, "small": 0.0000001, "list": [2.5e3]}'
    finally:
        local.close()


def test_a_bespin_api_job_runs_with_the_store_in_postgresql(lando: Lando, fresh_schema_url: str,
                                                            bespin: BespinApiService, http_files: tuple[str, Path],
                                                            tmp_path: Path):
    base, served = http_files
    job_id, _ = flaky_job(bespin, base, served, tmp_path)
    lando.settings["bespin_api"] = {"url": bespin.url, "token": BESPIN_TOKEN}
    lando.write_config(store={"url": fresh_schema_url})

    proc = lando.cli("job", str(job_id))  # loaded from bespin-api, kept in PostgreSQL under bespin's id, run

    assert proc.returncode == 0, proc.stderr
    assert bespin.job(job_id)["state"] == "F"  # bespin-api heard it
    assert not (lando.data_dir / "jobs.sqlite").exists()
    s = PostgresStore(fresh_schema_url)
    try:
        stored = s.get(job_id)
        assert stored.state == JobState.FINISHED and "bespin" in stored.facts and stored.run.bytes_stored
        again = new_job("a second load")
        again.id = job_id
        assert s.insert(again).name == stored.name  # a job loaded meanwhile by another process is kept
        assert s.create(new_job("local")).id > job_id  # the ids `create` hands out stay clear of bespin's
    finally:
        s.close()
