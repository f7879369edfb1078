"""Jobs through the VM pool (issue 19), end to end: the daemon and `lando-ssh job N` with `pool.share: owner` on the
local cloud (each VM a real sshd), real RabbitMQ and cwltool. A warm VM serves the next job, waiting jobs are packed
onto one larger VM, a job's files and processes on a shared VM are its own, `lando-ssh ssh N` lands in the job's
directory, and a daemon killed with -9 leaves nothing its successor does not adopt."""
from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, publish_raw, send, store_job, wait_job
from test_fleet import daemon_config
from test_postgres_store import pg_url  # noqa: F401 (fixture)

from lando_ssh.messages import encode_message
from lando_ssh.pool.model import LIVE, PoolState
from lando_ssh.pool.store import open_vm_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_all(queue: str, ids: list[int]) -> None:
    """start_job for every job in one burst, as a job source sends a batch."""
    for job_id in ids:
        publish_raw(queue, encode_message("start_job", job_id), "application/json")


def pool_vms(lando: Lando, live: bool = True) -> list[Any]:
    store = open_vm_store(lando.config().store_url)
    try:
        return store.list(LIVE if live else None)
    finally:
        store.close()


def created(lando: Lando) -> list[str]:
    log = lando.data_dir / "local-cloud" / "created.log"
    return [line.split(" ", 2)[1] for line in log.read_text().splitlines()] if log.exists() else []


def job_dirs(lando: Lando, vm_name: str) -> list[str]:
    work = lando.data_dir / "local-cloud" / vm_name / "work"
    return sorted(p.name for p in work.glob("lando-job-*")) if work.exists() else []


def sleep_order(tmp_path: Path, seconds: float) -> Path:
    order = tmp_path / f"sleep-{seconds}.yml"
    order.write_text(yaml.safe_dump({"seconds": seconds}))
    return order


def wait_until(condition: Any, daemon: Daemon, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and daemon.alive(), f"{what}\n{daemon.text()[-3000:]}"
        time.sleep(0.05)


def test_jobs_of_one_owner_run_one_after_another_on_one_warm_vm_that_a_drain_then_deletes(
        lando: Lando, broker_names):
    port = free_port()
    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 600},
                           metrics={"listen": f"127.0.0.1:{port}"})
    ids = [lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml") for _ in range(3)]
    daemon.start()
    try:
        for job_id in ids:  # one after another: each finds the VM the one before left warm
            send(lando, "start_job", job_id)
            job = wait_job(lando, job_id, finished, daemon=daemon)
            assert job.state.value == "F", job.reason
        jobs = [store_job(lando, i) for i in ids]
        assert len(created(lando)) == 1, created(lando)
        name = jobs[0].vm.name
        assert {j.vm.name for j in jobs} == {name} and all(j.vm.pool_vm for j in jobs)
        assert job_dirs(lando, name) == []  # each job's files left the VM with it
        listed = {r["name"]: r for r in json.loads(lando.cli("vms", "--json", check=True).stdout)}
        assert listed[name]["pool_state"] == "idle" and listed[name]["jobs_served"] == 3, listed
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text  # (up since the first job)
        assert 'lando_pool_vms{state="idle"} 1.0' in metrics, metrics
        assert "lando_pool_jobs_served_total 3.0" in metrics and "lando_pool_reuses_total 2.0" in metrics
        swept = lando.cli("sweep", "--grace", "0", check=True)  # the orphan sweep leaves a VM the pool keeps warm
        assert (lando.data_dir / "local-cloud" / name).is_dir(), swept.stdout + swept.stderr
        assert lando.cli("drain", name, check=True).returncode == 0
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "the drained VM was not deleted")
    finally:
        daemon.stop()
    assert [vm.state for vm in pool_vms(lando, live=False)] == [PoolState.DELETED]


def test_waiting_jobs_are_packed_onto_one_vm_and_canceling_one_leaves_the_others_running(
        lando: Lando, broker_names, tmp_path: Path):
    daemon = daemon_config(lando, broker_names, pool={"share": "owner", "pack": True}, vm={"keepalive": 0})
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 12)) for _ in range(4)]
    daemon.start()
    try:
        start_all(broker_names["listen_queue"], ids)
        for job_id in ids:
            wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)
        vms = pool_vms(lando)
        assert len(vms) == 1 and vms[0].flavor == "m1.large", vms  # 4 x 1 vCPU: one 4-vCPU VM, not four
        assert sorted(vms[0].job_ids) == sorted(ids) and vms[0].used.vcpus <= vms[0].size.vcpus
        name, canceled, others = vms[0].name, ids[0], ids[1:]
        assert len(job_dirs(lando, name)) == 4

        there = lando.cli("ssh", str(others[0]), "pwd", check=True).stdout.strip()
        assert there.endswith(f"/work/lando-job-{others[0]}")  # `ssh N` lands in the job's own directory

        send(lando, "cancel_job", canceled)
        job = wait_job(lando, canceled, finished, daemon=daemon)
        assert job.state.value == "C"
        assert f"lando-job-{canceled}" not in job_dirs(lando, name)  # its files went; the others' stay
        for job_id in others:
            assert store_job(lando, job_id).state.value == "R"
        for job_id in others:
            job = wait_job(lando, job_id, finished, daemon=daemon)
            assert job.state.value == "F", job.reason
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "the empty VM outlived vm.keepalive 0")
    finally:
        daemon.stop()
    assert len(created(lando)) == 1


def test_a_daemon_killed_while_its_pool_vms_are_busy_is_succeeded_by_one_that_adopts_them(
        lando: Lando, broker_names, tmp_path: Path):
    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 0})
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 6)) for _ in range(3)]
    daemon.start()
    try:
        for job_id in ids:
            send(lando, "start_job", job_id)
        for job_id in ids:
            wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)
        before = pool_vms(lando)
        daemon.stop(signal.SIGKILL)
        daemon = Daemon(lando)
        daemon.start()
        for job_id in ids:
            job = wait_job(lando, job_id, finished, timeout=180, daemon=daemon)
            assert job.state.value == "F", job.reason
            assert [h.state.value for h in job.history].count("F") == 1
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "a VM outlived its jobs and vm.keepalive 0")
    finally:
        daemon.stop()
    assert sorted(created(lando)) == sorted(vm.name for vm in before)  # none created twice, none after the kill
    assert pool_vms(lando) == []


def test_a_foreground_job_boots_a_pool_vm_and_leaves_nothing_behind(lando: Lando):
    lando.write_config(pool={"share": "owner"}, vm={"keepalive": 600})
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml")
    run = lando.cli("job", str(job_id))
    assert run.returncode == 0, run.stderr
    job = store_job(lando, job_id)
    assert job.state.value == "F" and job.vm.pool_vm is not None and job.vm.key_path
    shown = lando.cli("status", str(job_id), check=True).stdout
    assert f"{job.vm.name} (" in shown and "pool VM, 1 vCPUs reserved" in shown and ", left it " in shown
    assert lando.vm_dirs() == [] and pool_vms(lando) == []  # no server keeps it warm: deleted once empty


def test_two_servers_on_one_postgresql_store_share_the_pool_and_never_oversubscribe_a_vm(
        lando: Lando, broker_names, tmp_path: Path, pg_url):  # noqa: F811 (pg_url is a fixture)
    lando.settings.update(work_queue={**broker_names, "heartbeat": 10}, store={"url": pg_url, "lease_ttl": 5},
                          pool={"share": "owner"}, vm={"keepalive": 2}, limits={"max_vms": 2})
    lando.write_config()
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 3)) for _ in range(8)]
    first, second = Daemon(lando), Daemon(lando)
    first.log, second.log = lando.root / "first.log", lando.root / "second.log"
    seen: set[str] = set()
    try:
        first.start()
        second.start()
        start_all(broker_names["listen_queue"], ids)
        deadline = time.monotonic() + 240
        while not all(finished(store_job(lando, i)) for i in ids):
            assert time.monotonic() < deadline and first.alive() and second.alive(), second.text()[-3000:]
            live = pool_vms(lando)
            assert len(live) <= 2
            for vm in live:
                assert vm.size.covers(vm.used), vm  # never more reserved on a VM than it has
            placed = [j for vm in live for j in vm.job_ids]
            assert len(placed) == len(set(placed)), live  # no job on two VMs
            seen |= {vm.name for vm in live if len(vm.jobs) > 1}
            time.sleep(0.1)
        wait_until(lambda: pool_vms(lando) == [] and lando.vm_dirs() == [], second, 60, "VMs outlived keepalive")
    finally:
        for d in (first, second):
            if d.alive():
                d.stop()
    jobs = [store_job(lando, i) for i in ids]
    assert [j.state.value for j in jobs] == ["F"] * 8, [j.reason for j in jobs]
    assert all([h.state.value for h in j.history].count("F") == 1 for j in jobs)
    assert "resuming" not in first.text() + second.text()
    assert seen, "no VM ever held two jobs at once"
    assert len(created(lando)) < len(ids)


def _kill_and_succeed(lando: Lando, daemon: Daemon) -> Daemon:
    daemon.stop(signal.SIGKILL)
    successor = Daemon(lando)
    successor.start()
    return successor


def test_a_daemon_killed_while_a_pool_vm_boots_is_succeeded_by_one_that_adopts_it(
        lando: Lando, broker_names, tmp_path: Path):
    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 0},
                           cloud={"local": {"boot_delay": 6}})
    ids = [lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 1)) for _ in range(2)]
    daemon.start()
    try:
        start_all(broker_names["listen_queue"], ids)
        wait_until(lambda: any(vm.state == PoolState.BOOTING and vm.cloud_id for vm in pool_vms(lando)), daemon,
                   60, "no VM was seen booting")
        before = created(lando)
        daemon = _kill_and_succeed(lando, daemon)
        for job_id in ids:
            job = wait_job(lando, job_id, finished, timeout=120, daemon=daemon)
            assert job.state.value == "F", job.reason
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "a VM outlived its jobs")
    finally:
        daemon.stop()
    assert created(lando) == before  # the booting VM was adopted, not asked for again
    assert pool_vms(lando) == []


def test_a_daemon_killed_while_a_pool_vm_is_idle_or_deleting_is_succeeded_by_one_that_reuses_or_deletes_it(
        lando: Lando, broker_names):
    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 600})
    ids = [lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml") for _ in range(2)]
    daemon.start()
    try:
        send(lando, "start_job", ids[0])
        assert wait_job(lando, ids[0], finished, daemon=daemon).state.value == "F"
        [vm] = pool_vms(lando)
        assert vm.state == PoolState.IDLE
        daemon = _kill_and_succeed(lando, daemon)  # idle: adopted, and the next job runs on it
        send(lando, "start_job", ids[1])
        job = wait_job(lando, ids[1], finished, daemon=daemon)
        assert job.state.value == "F" and job.vm.name == vm.name, job.reason
        assert created(lando) == [vm.name]

        daemon.stop(signal.SIGKILL)  # as a crash leaves a deletion asked for but not done
        store = open_vm_store(lando.config().store_url)
        try:
            store.update(vm.id, lambda v: setattr(v, "state", PoolState.DELETING))
        finally:
            store.close()
        daemon = Daemon(lando)
        daemon.start()
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "the deletion was not finished")
    finally:
        daemon.stop()
    assert [v.state for v in pool_vms(lando, live=False)] == [PoolState.DELETED]


def test_a_daemon_killed_while_a_pool_vm_drains_is_succeeded_by_one_that_finishes_its_job_then_deletes_it(
        lando: Lando, broker_names, tmp_path: Path):
    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 600})
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 8))
    daemon.start()
    try:
        send(lando, "start_job", job_id)
        wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)
        [vm] = pool_vms(lando)
        lando.cli("drain", vm.name, check=True)
        daemon = _kill_and_succeed(lando, daemon)
        job = wait_job(lando, job_id, finished, timeout=120, daemon=daemon)
        assert job.state.value == "F", job.reason
        assert [h.state.value for h in job.history].count("F") == 1
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "the drained VM outlived its job")
    finally:
        daemon.stop()
    assert created(lando) == [vm.name]
    assert [v.state for v in pool_vms(lando, live=False)] == [PoolState.DELETED]


def test_a_pool_vm_stuck_in_boot_is_given_up_and_its_job_placed_on_a_new_one(lando: Lando):
    lando.write_config(pool={"share": "owner"}, vm={"boot_timeout": 3, "boot_retries": 1},
                       cloud={"local": {"stuck_boots": 1}})
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml")
    run = lando.cli("job", str(job_id))
    assert run.returncode == 0, run.stderr
    job = store_job(lando, job_id)
    assert job.state.value == "F" and len(created(lando)) == 2
    assert any("did not answer within vm.boot_timeout" in h.note and "placed again (retry 1 of 1)" in h.note
               for h in job.history), [h.note for h in job.history]
    assert lando.vm_dirs() == [] and pool_vms(lando) == []


def test_a_busy_pool_vm_that_goes_silent_errors_its_job_which_restarts_on_another_vm(
        lando: Lando, broker_names, tmp_path: Path):
    from test_fleet import _kill_vm_network

    daemon = daemon_config(lando, broker_names, pool={"share": "owner"}, vm={"keepalive": 0},
                           health={"interval": 1, "grace": 3})
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", sleep_order(tmp_path, 20))
    daemon.start()
    try:
        send(lando, "start_job", job_id)
        job = wait_job(lando, job_id, lambda j: j.run.run_pid is not None, daemon=daemon)
        first = job.vm.name
        assert _kill_vm_network(lando.data_dir / "local-cloud" / first) > 0
        job = wait_job(lando, job_id, finished, timeout=60, daemon=daemon)
        assert (job.state.value, job.step.value) == ("E", "R"), job.reason
        assert "unreachable since" in job.reason
        wait_until(lambda: all(vm.name != first for vm in pool_vms(lando)), daemon, 60,
                   "the silent VM was not deleted")
        send(lando, "restart_job", job_id)
        job = wait_job(lando, job_id, lambda j: j.state.value == "F" or (
            j.state.value == "E" and j.history[-1].note != job.history[-1].note), timeout=150, daemon=daemon)
        assert job.state.value == "F" and job.vm.name != first, job.reason
        wait_until(lambda: lando.vm_dirs() == [], daemon, 30, "a VM outlived its job")
    finally:
        daemon.stop()


def test_a_failed_job_keeps_its_place_on_a_pool_vm_for_ssh_in_its_own_directory_until_delete_vm(lando: Lando):
    lando.write_config(pool={"share": "owner"}, keep_vm_on_error=True)
    job_id = lando.submit(WORKFLOWS / "fail.cwl")
    assert lando.cli("job", str(job_id)).returncode == 1
    [vm] = pool_vms(lando)
    assert vm.job_ids == [job_id]  # its room and its files stay while the admin looks
    shell = lando.cli("ssh", str(job_id), input="pwd; ls -d run\n")  # a shell, in the job's own directory
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines() == [f"{vm.work_dir}/lando-job-{job_id}", "run"]
    line = lando.cli("ssh", str(job_id), "--", "basename", "$PWD")
    assert line.stdout == f"lando-job-{job_id}\n"
    assert lando.cli("delete-vm", str(job_id)).returncode == 0
    assert pool_vms(lando) == [] and lando.vm_dirs() == []


def test_a_pool_vm_with_less_disk_free_than_the_job_reserved_is_drained_and_the_job_fails_after_its_retries(
        lando: Lando, tmp_path: Path):
    workflow = tmp_path / "needs_disk.cwl"
    workflow.write_text(yaml.safe_dump({
        "cwlVersion": "v1.2", "class": "CommandLineTool", "baseCommand": ["true"], "inputs": {}, "outputs": {},
        "requirements": {"ResourceRequirement": {"outdirMin": 64, "tmpdirMin": 0}}}))
    lando.write_config(pool={"share": "owner"}, vm={"boot_retries": 1}, cloud={"local": {"disk_mb": 16}})
    job_id = lando.submit(workflow)
    run = lando.cli("job", str(job_id))  # each local VM's disk is a 16 MB tmpfs: less than the 64 MB reserved
    assert run.returncode == 1
    job = store_job(lando, job_id)
    assert (job.state.value, job.step.value) == ("E", "V")
    assert "MB of disk free, less than the job reserved (64 MB)" in job.reason, job.reason
    assert any("placed again (retry 1 of 1)" in h.note for h in job.history)
    assert len(created(lando)) == 2 and lando.vm_dirs() == [] and pool_vms(lando) == []
