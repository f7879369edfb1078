"""Back-pressure from the server's own limits: how many more jobs fit under its descriptors, threads and
memory, and the reason a job waits in S when none does: pure logic without a cloud, then one daemon whose
descriptor limit is low."""
from __future__ import annotations

import os
import resource
import time

from conftest import WORKFLOWS, send, store_job, wait_job

from lando_ssh.cloud import Flavor
from lando_ssh.headroom import PER_JOB, Gauge, measure, room
from lando_ssh.scheduler import Limits, WaitingJob, schedule

SMALL = Flavor("m1.small", "1", vcpus=1, ram_mb=2048, disk_gb=20)
T0 = 1_700_000_000.0


def test_room_is_what_fits_below_the_limit_less_its_reserve():
    # 20,000 descriptors, 10 % kept free: 18,000 usable, 6,000 used, 8 a job
    assert room([Gauge("descriptors", "RLIMIT_NOFILE", 6000, 20000)], running_jobs=0).jobs == 1500


def test_the_tightest_gauge_decides_and_a_full_one_names_itself():
    gauges = [Gauge("descriptors", "RLIMIT_NOFILE", 100, 20000),
              Gauge("threads", "the cgroup's pids.max (systemd TasksMax)", 4425, 4915),
              Gauge("memory", "the machine's memory", 1000, 24000)]
    r = room(gauges, running_jobs=0)
    assert r.jobs == 0
    assert r.source == "server.threads"
    assert r.reason == ("waiting: the server is near its limit of threads: 4425 of 4915 in use (the cgroup's "
                        "pids.max (systemd TasksMax)); a job needs ~3 and 492 are kept free")


def test_running_jobs_that_cost_more_than_the_default_raise_the_cost_of_the_next():
    g = Gauge("descriptors", "RLIMIT_NOFILE", used=1010, limit=2000, idle=10)
    assert room([g], running_jobs=50).jobs == (2000 - 200 - 1010) // 20  # 1,000 for 50 jobs: 20 each
    assert room([g], running_jobs=5).jobs == (2000 - 200 - 1010) // PER_JOB["descriptors"]  # too few to average


def test_jobs_just_started_count_at_their_cost_before_their_descriptors_show():
    lagging = Gauge("descriptors", "RLIMIT_NOFILE", used=10, limit=100, idle=10)  # 5 jobs started a moment ago
    assert room([lagging], running_jobs=5).jobs == (100 - 10 - (10 + 5 * 8)) // 8


def test_no_gauge_means_no_limit():
    assert room([], running_jobs=3).jobs is None


def test_measure_reads_this_processs_own_figures():
    gauges = {g.resource: g for g in measure()}
    assert 0 < gauges["descriptors"].used < gauges["descriptors"].limit
    assert gauges["threads"].used >= 1
    assert 0 < gauges["memory"].used < gauges["memory"].limit


def _waiting(n: int) -> list[WaitingJob]:
    return [WaitingJob(id=i, created=T0 + i) for i in range(1, n + 1)]


def test_a_server_near_its_limit_starts_what_fits_and_holds_the_rest_in_s_with_the_reason():
    full = room([Gauge("descriptors", "RLIMIT_NOFILE", 70, 100)], running_jobs=0)  # (100-10-70)//8 = 2
    decision = schedule(_waiting(4), [], running_jobs=0, limits=Limits(max_jobs=50), quota=None, flavors=[SMALL],
                        now=T0, server=full)
    assert [p.job_id for p in decision.start] == [1, 2]
    assert set(decision.waiting) == {3, 4}
    assert decision.waiting[3] == full.reason
    assert "near its limit of open descriptors: 70 of 100 in use (RLIMIT_NOFILE)" in full.reason
    assert decision.blocked_by[3] == "server.descriptors"
    assert not decision.failed  # the server's room comes back: never a reason to fail a job


def test_a_server_with_no_room_at_all_holds_every_job_rather_than_failing_it():
    none_left = room([Gauge("memory", "the machine's memory", 23000, 24000)], running_jobs=0)
    decision = schedule(_waiting(2), [], running_jobs=0, limits=Limits(), quota=None, flavors=[SMALL], now=T0,
                        server=none_left)
    assert not decision.start and not decision.failed
    assert "near its limit of MB of memory: 23000 of 24000 in use (the machine's memory)" in decision.waiting[1]


# -- end to end: a daemon whose descriptor limit is low --------------------------------------------------------
def test_a_daemon_near_its_descriptor_limit_holds_jobs_in_s_naming_it_then_runs_them_all(lando, daemon, tmp_path):
    lando.settings.update(cwl_base_command=["sh", "-c", 'sleep "$0"; echo "{}"', "2"],
                          limits={"max_concurrent_jobs": 10})
    lando.write_config()
    order = tmp_path / "order.yml"
    order.write_text("seconds: 2\n")
    first, *ids = [lando.submit(WORKFLOWS / "sleep.cwl", order) for _ in range(3)]
    daemon.start()
    send(lando, "start_job", first)  # a first job, so every thread of the daemon has opened what it keeps
    wait_job(lando, first, lambda j: j.state.value == "F", timeout=180, daemon=daemon)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    idle = len(os.listdir(f"/proc/{pid}/fd"))
    # room for one job: 8 kept free (the least reserve), then 12 more, and a job takes ~8
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (idle + 20, hard))
    for job_id in ids:
        send(lando, "start_job", job_id)
    reasons: set[str] = set()

    def all_done() -> bool:
        jobs = [store_job(lando, i) for i in ids]
        reasons.update(j.reason for j in jobs if j.state.value == "S" and j.reason)
        return all(j.state.value in ("F", "E", "C") for j in jobs)

    wait_for(all_done, daemon, timeout=240)
    jobs = [store_job(lando, i) for i in ids]
    assert [j.state.value for j in jobs] == ["F"] * 2, [j.reason for j in jobs]
    assert any("the server is near its limit of open descriptors" in r and "(RLIMIT_NOFILE)" in r for r in reasons), \
        reasons
    assert "Too many open files" not in daemon.text()


def wait_for(condition, daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and daemon.alive(), daemon.text()[-3000:]
        time.sleep(0.1)
