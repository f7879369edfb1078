"""The pool's Prometheus series, computed from its VM records at each scrape, over HTTP from a real server."""
from __future__ import annotations

import pytest
from fakes import MemoryVmStore
from pool_helpers import LARGE, SMALL, T0, at, vm
from test_metrics import scrape

from lando_ssh.metrics import Metrics, start_metrics_server
from lando_ssh.pool.figures import pool_figures
from lando_ssh.pool.model import PoolState, Resources


@pytest.fixture
def store() -> MemoryVmStore:
    s = MemoryVmStore()
    busy = vm(0, LARGE, state=PoolState.BOOTING)
    busy.name = "busy"
    busy.created = at(T0)
    busy.reserve(1, Resources(1, 1024), at(T0))
    busy.mark_ready(at(T0))
    busy.release(1, at(T0 + 100))  # idle 100 s, then two more jobs: both reuses
    busy.reserve(2, Resources(1, 1024), at(T0 + 200))
    busy.reserve(3, Resources(1, 1024), at(T0 + 200))
    s.create(busy)
    idle = vm(0, SMALL, idle_since=T0)
    idle.name = "idle"
    idle.created = at(T0)
    s.create(idle)
    gone = vm(0, SMALL, state=PoolState.DELETED, idle_since=None)
    gone.name = "gone"
    gone.created, gone.deleted = at(T0), at(T0 + 50)
    s.create(gone)
    return s


def test_pool_figures_count_states_jobs_reuses_and_idle_seconds(store: MemoryVmStore) -> None:
    f = pool_figures(store.list(), at(T0 + 300))
    assert f.by_state == {"booting": 0, "idle": 1, "busy": 1, "draining": 0, "deleting": 0}
    assert f.jobs_per_vm == {"busy": 2, "idle": 0}
    assert (f.served, f.reuses) == (3, 2)
    assert f.idle_vm_seconds == pytest.approx(100 + 300 + 50)


def test_the_exporter_serves_the_pools_series_read_at_each_scrape(store: MemoryVmStore) -> None:
    metrics = Metrics()
    metrics.watch_pool(store.list)
    server = start_metrics_server("127.0.0.1:0", metrics)
    try:
        url = "http://{}:{}/metrics".format(*server.server_address[:2])
        got = scrape(url)
        assert got[("lando_pool_vms", (("state", "busy"),))] == 1
        assert got[("lando_pool_vm_jobs", (("vm", "busy"),))] == 2
        assert got[("lando_pool_reuses_total", ())] == 2 and got[("lando_pool_jobs_served_total", ())] == 3
        assert got[("lando_pool_idle_vm_seconds_total", ())] > 400
        store.update(1, lambda v: v.release(2))
        assert scrape(url)[("lando_pool_vm_jobs", (("vm", "busy"),))] == 1  # read again at each scrape
    finally:
        server.shutdown()
        server.server_close()


