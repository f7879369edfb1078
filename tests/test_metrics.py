"""Prometheus metrics: the hooks the daemon calls, scraped over HTTP from a real server."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from lando_ssh.cloud import Flavor, Quota, VmInfo
from lando_ssh.errors import ConfigError, HostKeyMismatch, VmUnreachable
from lando_ssh.flavors import Needs
from lando_ssh.metrics import Metrics, parse_listen, start_metrics_server
from lando_ssh.model import Job, JobState, JobStep, StepTiming, VmRecord, now
from lando_ssh.scheduler import ActiveVm, Limits, WaitingJob, schedule
from lando_ssh.sweep import Swept


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = start_metrics_server("127.0.0.1:0", metrics)
    host, port = server.server_address[:2]
    yield metrics, f"http://{host}:{port}/metrics"
    server.shutdown()
    server.server_close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_scraped_over_http_show_jobs_vms_quota_waiting_sweep_and_ssh_errors(served):
    metrics, url = served
    t = now()
    done = Job(id=1, name="a", workflow="wf", job_order={}, state=JobState.FINISHED)
    metrics.observe_jobs([done])  # at start: counted, its past steps not observed again

    job = Job(id=2, name="b", workflow="wf", job_order={})
    metrics.observe_job(job)
    job.set_state(JobState.STARTING)
    metrics.observe_job(job)
    job.set_state(JobState.RUNNING, JobStep.CREATE_VM)
    job.timings["V"] = StepTiming(t - timedelta(seconds=12), t)
    metrics.observe_job(job)
    metrics.observe_job(job)  # the same record again: the step is not counted twice
    job.set_state(JobState.ERROR, JobStep.STAGING)
    metrics.observe_job(job)
    metrics.observe_vm_boot(active_seconds=8.0, ssh_seconds=12.0)

    metrics.observe_vms([VmInfo("v1", "v1", "ACTIVE"), VmInfo("v2", "v2", "ACTIVE"), VmInfo("v3", "v3", "BUILD")])
    metrics.observe_quota(Quota(max_cores=40, cores_used=38, max_instances=None, instances_used=10))
    active = [ActiveVm(4, 8192), ActiveVm(2, 4096, counted_by_cloud=False)]
    metrics.observe_active(active)
    decision = schedule([WaitingJob(id=7, created=0.0, needs=Needs(cores=4)), WaitingJob(id=8, created=1.0)],
                        active, running_jobs=2, limits=Limits(max_jobs=10, max_cores=8), quota=None,
                        flavors=[Flavor("m1.small", "1", 1, 2048, 20), Flavor("m1.large", "3", 4, 8192, 80)],
                        now=10.0)
    metrics.observe_waiting(decision)
    metrics.observe_sweep([Swept("vm", "v9", "v9", 9, "job 9 is not in the job store", deleted=True),
                           Swept("vm", "v10", "v10", 10, "job 10 was deleted", error="the cloud refused")])
    metrics.observe_ssh_error(VmUnreachable("cannot reach"))
    metrics.observe_ssh_error(HostKeyMismatch("another key"))
    metrics.observe_ssh_error(VmUnreachable("cannot reach again"))

    got = scrape(url)
    assert got[("lando_jobs", (("state", "F"),))] == 1
    assert got[("lando_jobs", (("state", "E"),))] == 1
    assert got[("lando_jobs", (("state", "S"),))] == 0 and got[("lando_jobs", (("state", "R"),))] == 0
    assert got[("lando_job_errors_total", (("step", "S"),))] == 1
    assert got[("lando_step_seconds_count", (("step", "V"),))] == 1
    assert got[("lando_step_seconds_sum", (("step", "V"),))] == 12.0
    assert got[("lando_vm_boot_seconds_count", ())] == 1 and got[("lando_vm_boot_seconds_sum", ())] == 8.0
    assert got[("lando_vm_ssh_ready_seconds_bucket", (("le", "20.0"),))] == 1
    assert got[("lando_vms", (("status", "ACTIVE"),))] == 2 and got[("lando_vms", (("status", "BUILD"),))] == 1
    assert got[("lando_quota_limit", (("resource", "cores"),))] == 40
    assert ("lando_quota_limit", (("resource", "instances"),)) not in got  # unlimited
    assert got[("lando_quota_in_use", (("resource", "cores"),))] == 38
    assert got[("lando_ours_in_use", (("resource", "cores"),))] == 6
    assert got[("lando_ours_in_use", (("resource", "being_created"),))] == 1
    assert decision.waiting == {7: "waiting: 6 of 8 cores in use, job needs 4 (limits.max_cores)"}
    assert got[("lando_jobs_waiting", (("limit", "limits.max_cores"),))] == 1
    assert got[("lando_job_waiting_info", (("job", "7"), ("reason", decision.waiting[7])))] == 1
    assert got[("lando_sweep_deleted_total", (("kind", "vm"),))] == 1
    assert got[("lando_sweep_errors_total", ())] == 1
    assert got[("lando_ssh_errors_total", (("kind", "VmUnreachable"),))] == 2
    assert got[("lando_ssh_errors_total", (("kind", "HostKeyMismatch"),))] == 1

    # the next decision replaces the waiting series: job 7 started
    metrics.observe_waiting(schedule([], [], running_jobs=0, limits=Limits(), quota=None, flavors=[], now=11.0))
    got = scrape(url)
    assert not [k for k in got if k[0] in ("lando_jobs_waiting", "lando_job_waiting_info")]


def test_listen_addresses_and_a_busy_port():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ConfigError, match="metrics.listen must be HOST:PORT"):
        parse_listen("localhost")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot listen there"):
            start_metrics_server(f"127.0.0.1:{s.getsockname()[1]}", Metrics())


def test_lando_vms_follow_the_jobs_vms_between_sweeps(served):
    metrics, url = served
    metrics.observe_vms([VmInfo("v9", "orphan-9", "ACTIVE")])  # a sweep's listing: the truth until the next
    job = Job(id=3, name="c", workflow="wf", job_order={}, state=JobState.STARTING)
    metrics.observe_job(job)
    job.vm = VmRecord(name="lando-job-3-1", created=now())  # asked for
    job.set_state(JobState.RUNNING, JobStep.CREATE_VM)
    metrics.observe_job(job)
    got = scrape(url)
    assert (got[("lando_vms", (("status", "BUILD"),))], got[("lando_vms", (("status", "ACTIVE"),))]) == (1, 1)

    job.vm.address = "127.0.0.1"  # it booted and answered
    job.set_state(JobState.RUNNING, JobStep.STAGING)
    metrics.observe_job(job)
    got = scrape(url)
    assert (got[("lando_vms", (("status", "BUILD"),))], got[("lando_vms", (("status", "ACTIVE"),))]) == (0, 2)

    job.retire_vm()  # deleted (as after a boot retry or at the end)
    job.set_state(JobState.FINISHED, JobStep.NONE)
    metrics.observe_job(job)
    assert scrape(url)[("lando_vms", (("status", "ACTIVE"),))] == 1  # the orphan the sweep saw

    kept = Job(id=4, name="d", workflow="wf", job_order={}, state=JobState.ERROR,
               vm=VmRecord(name="lando-job-4-1", address="10.0.0.4"))  # kept on error, at the daemon's start
    metrics.observe_jobs([kept])
    assert scrape(url)[("lando_vms", (("status", "ACTIVE"),))] == 2
    metrics.observe_vms([])
    assert scrape(url)[("lando_vms", (("status", "ACTIVE"),))] == 0


def test_every_library_the_metrics_module_imports_is_installed_with_lando_ssh():
    """scripts/setup (and pip) install lando-ssh's dependencies: metrics.listen must need nothing more."""
    import ast
    import importlib.metadata
    import re
    import sys
    import tomllib
    from pathlib import Path

    import lando_ssh.metrics

    tree = ast.parse(Path(lando_ssh.metrics.__file__).read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "lando_ssh"}
    assert third_party == {"prometheus_client"}
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    required = {re.split(r"[<>=\[; ]", d)[0].lower().replace("-", "_") for d in pyproject["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    for module in third_party:
        assert {d.lower().replace("-", "_") for d in distributions[module]} & required, module


def test_the_daemon_observes_each_vms_boot_and_counts_vms_as_jobs_run(lando, broker_names):
    from conftest import WORKFLOWS, Daemon, finished, send, wait_job

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    lando.settings["work_queue"] = {**broker_names, "heartbeat": 10}
    lando.settings.update(metrics={"listen": f"127.0.0.1:{port}"}, sweep={"interval": 0})  # no sweep moves them
    lando.write_config()
    order = lando.root / "sleep.yml"
    order.write_text("seconds: 30\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    daemon = Daemon(lando)
    daemon.start()
    try:
        send(lando, "start_job", job_id)
        wait_job(lando, job_id, lambda j: j.step.value == "R", daemon=daemon)
        running = scrape(url)
        send(lando, "cancel_job", job_id)
        wait_job(lando, job_id, finished, daemon=daemon)
        ended = scrape(url)
    finally:
        daemon.stop()
    assert running[("lando_vm_boot_seconds_count", ())] == 1
    assert running[("lando_vm_ssh_ready_seconds_count", ())] == 1
    assert 0 < running[("lando_vm_boot_seconds_sum", ())] <= running[("lando_vm_ssh_ready_seconds_sum", ())]
    assert running[("lando_vms", (("status", "ACTIVE"),))] == 1
    assert ended[("lando_vms", (("status", "ACTIVE"),))] == 0 and ended[("lando_vms", (("status", "BUILD"),))] == 0
