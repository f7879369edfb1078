"""Several servers sharing one RabbitMQ queue and one PostgreSQL job store: jobs are claimed with
leases, and a server that dies has its jobs adopted by another when its leases run out."""
from __future__ import annotations

import signal
import time

import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, send, vms_created_for
from test_postgres_store import pg_url  # noqa: F401 (fixture)

from lando_ssh.store import open_store


def test_two_servers_share_the_work_and_one_adopts_the_jobs_of_the_other_after_it_dies(
        lando: Lando, tmp_path, broker_names, pg_url):  # noqa: F811 (pg_url is a fixture)
    lando.settings.update(work_queue={**broker_names, "heartbeat": 10},
                          store={"url": pg_url, "lease_ttl": 3}, limits={"max_concurrent_jobs": 3})
    lando.write_config()
    order = tmp_path / "sleep.yml"
    order.write_text(yaml.safe_dump({"seconds": 6}))
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", order) for _ in range(6)]
    first, second = Daemon(lando), Daemon(lando)
    first.log, second.log = lando.root / "first.log", lando.root / "second.log"
    store = open_store(pg_url)
    try:
        first.start()
        second.start()
        for job_id in ids:
            send(lando, "start_job", job_id)
        deadline = time.monotonic() + 90
        while len({_owner(pg_url, i) for i in ids if store.get(i).step.value == "R"} - {None}) < 2:
            assert time.monotonic() < deadline, "the two servers never both ran jobs"
            time.sleep(0.2)
        assert first.proc is not None
        victims = [i for i in ids if (o := _owner(pg_url, i)) and _owner_pid(o) == first.proc.pid]
        first.stop(signal.SIGKILL)  # its jobs' leases stop being renewed

        deadline = time.monotonic() + 120
        while not all(finished(store.get(i)) for i in ids):
            assert time.monotonic() < deadline and second.alive(), second.text()[-3000:]
            time.sleep(0.3)
    finally:
        for d in (first, second):
            if d.alive():
                d.stop()
        jobs = [store.get(i) for i in ids]
        store.close()
    assert [j.state.value for j in jobs] == ["F"] * 6, [j.reason for j in jobs]
    assert victims, "the first server held no job when it died"
    assert all(len(vms_created_for(lando, i)) == 1 for i in ids)  # adopted on their VMs, none twice
    assert all([h.state.value for h in j.history].count("F") == 1 for j in jobs)
    assert "resuming" in second.text()
    assert lando.vm_dirs() == []


def _owner(url: str, job_id: int) -> str | None:
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SELECT lease_owner FROM lando_jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def _owner_pid(owner: str) -> int:  # owners are "host:pid:random"
    return int(owner.split(":")[1])
