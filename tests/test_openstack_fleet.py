"""The daemon on the OpenStack driver (local API service, sshd-backed servers): many jobs
through flaky creates and deletes, and a clear refusal to start on bad credentials."""
from __future__ import annotations

import signal

import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, send, wait_job
from test_openstack_driver import EMPTY, use_openstack

pytest_plugins = ["openstack_api.fixtures"]


def test_twenty_jobs_through_ten_percent_failed_creates_and_deletes_all_finish_and_leave_nothing(
        lando: Lando, local_openstack_api, tmp_path, broker_names):
    local_openstack_api.settings.max_instances = 30
    local_openstack_api.settings.max_cores = 60
    local_openstack_api.settings.max_ports = 60
    local_openstack_api.settings.max_floating_ips = 30
    local_openstack_api.settings.max_volumes = 30
    use_openstack(lando, local_openstack_api, tmp_path, volume_size=0)
    settings = yaml.safe_load(lando.config_path.read_text())
    settings["work_queue"] = {**broker_names, "heartbeat": 10}
    settings["limits"] = {"max_concurrent_jobs": 10}
    lando.config_path.write_text(yaml.safe_dump(settings))
    local_openstack_api.settings.create_failure_rate = 0.1
    local_openstack_api.settings.delete_failure_rate = 0.1
    ids = []
    for i in range(20):
        order = tmp_path / f"greet-{i}.yml"
        order.write_text(yaml.safe_dump({"message": f"job {i}"}))
        ids.append(lando.submit(WORKFLOWS / "no_inputs.cwl", order))
    daemon = Daemon(lando)
    daemon.start()
    try:
        for job_id in ids:
            send(lando, "start_job", job_id)
        jobs = [wait_job(lando, job_id, finished, timeout=300, daemon=daemon) for job_id in ids]
    finally:
        daemon.stop(signal.SIGTERM)

    assert [j.state.value for j in jobs] == ["F"] * 20, [j.reason for j in jobs if j.state.value != "F"]
    # the deletes that failed were recorded on their jobs; the sweep clears what they left
    left = [j for j in jobs if j.run.vm_delete_error]
    assert all(j.vm.deleted is None for j in left)
    local_openstack_api.settings.delete_failure_rate = 0.0
    sweep = lando.cli("sweep", "--grace", "0")
    assert sweep.returncode == 0, sweep.stderr
    assert local_openstack_api.inventory() == EMPTY


def test_the_daemon_refuses_to_start_on_bad_credentials_or_an_unreachable_cloud(lando: Lando, local_openstack_api,
                                                                               tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path)
    settings = yaml.safe_load(lando.config_path.read_text())
    settings["cloud_settings"]["password"] = "wrong"
    lando.config_path.write_text(yaml.safe_dump(settings))
    bad_password = lando.cli("run", timeout=60)
    assert bad_password.returncode == 3
    assert "refused the credentials of user 'lando'" in bad_password.stderr
    assert "wrong" not in bad_password.stderr and "Traceback" not in bad_password.stderr

    settings["cloud_settings"]["auth_url"] = "http://127.0.0.1:9/identity/v3"
    lando.config_path.write_text(yaml.safe_dump(settings))
    unreachable = lando.cli("run", timeout=60)
    assert unreachable.returncode == 3
    assert "cannot reach the OpenStack auth_url http://127.0.0.1:9/identity/v3" in unreachable.stderr
