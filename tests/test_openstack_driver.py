"""The OpenStack driver, with the real openstacksdk against the local OpenStack API service."""
from __future__ import annotations

import base64
import io
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openstack
import paramiko
import pytest
import requests
import yaml
from conftest import WORKFLOWS
from openstack_api import SSH_PORT_METADATA, OpenStackApiService
from openstack_api.helpers import config_for, running_service

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, META_MANAGED_BY, VmRequest
from lando_ssh.cloud.cloudinit import UserDataParams, host_keys_from_console, render_user_data
from lando_ssh.cloud.local import LocalCloud
from lando_ssh.cloud.openstack import META_VM_ID, OpenStackCloud, quota_reason
from lando_ssh.config import Config
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded, VmFailed
from lando_ssh.keys import generate_keypair

pytest_plugins = ["openstack_api.fixtures"]  # openstack_api, openstack_config, local_openstack_api
# openstacksdk warns about its own internals; nothing the driver can change
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings.OpenStackDeprecationWarning",
                                        "ignore::openstack.warnings._RemovedInSDKWarning")

REPO = Path(__file__).resolve().parent.parent
EMPTY = {"servers": [], "volumes": [], "ports": [], "floating_ips": []}
# public halves of Nova keypairs (no private half is needed: nothing logs in with them)
FACILITY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC97W/GbcIBGyrUTB9e1yCgZFGtnKJxAv5sdU17tQj18 facility"
BACKUP_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPABzCj+gGvvFLhsqDv3XdL6QmmnTIMUqy7A0Ms7sQwf backup"
BESPIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4vHeNhmoCXmsaEG02gfs5DXryDmsk+5U/A75MBfdUh bespin"


def job_request(job_id: int = 1, **kw: object) -> VmRequest:
    args: dict = {"name": f"lando-job-{job_id}", "flavor": "m1.small", "image": "debian-12",
                  "user_data": "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAAtest]\n",
                  "metadata": {META_MANAGED_BY: "lando-ssh", META_INSTALLATION: "lando-ssh", META_JOB_ID: str(job_id)}}
    args.update(kw)
    return VmRequest(**args)


def our_request(config: Config, job_id: int = 1, **kw: object) -> VmRequest:
    """A request as the pipeline makes it: tagged as this installation's (its id and its data dir's token)."""
    from lando_ssh.installation import ours

    return job_request(job_id, **{"metadata": {**ours(config), META_JOB_ID: str(job_id)}, **kw})


@pytest.fixture
def cloud(openstack_config: Config):
    c = OpenStackCloud(openstack_config)
    yield c
    c.close()


def sdk(service: OpenStackApiService) -> openstack.connection.Connection:
    return openstack.connect(auth_url=service.auth_url, username="lando", password="secret", project_name="lando",
                             user_domain_name="Default", project_domain_name="Default",
                             load_yaml_config=False, load_envvars=False)


# ---- credentials ----------------------------------------------------------------------------

def test_password_credentials_from_cloud_settings_reach_the_cloud(cloud: OpenStackCloud):
    assert "debian-12" in cloud.images()
    assert [f.name for f in cloud.flavors()] == ["m1.tiny", "m1.small", "m1.medium", "m1.large"]


def test_application_credential_authenticates(openstack_api, tmp_path):
    config = config_for(openstack_api, tmp_path, username=None, password=None, project_name=None,
                        application_credential_id="lando-app-cred", application_credential_secret="app-secret")
    cloud = OpenStackCloud(config)
    assert cloud.quota().max_instances == 10
    cloud.close()


def test_named_cloud_from_clouds_yaml(openstack_api, tmp_path, monkeypatch):
    clouds = {"clouds": {"facility": {"auth": {
        "auth_url": openstack_api.auth_url, "username": "lando", "password": "secret", "project_name": "lando",
        "user_domain_name": "Default", "project_domain_name": "Default"}, "region_name": "RegionOne"}}}
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump(clouds))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    config = config_for(openstack_api, tmp_path, auth_url=None, username=None, password=None, cloud="facility")
    cloud = OpenStackCloud(config)
    assert "ubuntu-22.04" in cloud.images()
    cloud.close()


def test_os_environment_is_used_when_nothing_is_configured(openstack_api, tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "no-clouds.yaml"))
    monkeypatch.setenv("OS_AUTH_URL", openstack_api.auth_url)
    monkeypatch.setenv("OS_USERNAME", "lando")
    monkeypatch.setenv("OS_PASSWORD", "secret")
    monkeypatch.setenv("OS_PROJECT_NAME", "lando")
    monkeypatch.setenv("OS_USER_DOMAIN_NAME", "Default")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "Default")
    config = config_for(openstack_api, tmp_path, auth_url=None, username=None, password=None, project_name=None)
    cloud = OpenStackCloud(config)
    assert cloud.quota().max_cores == 20
    cloud.close()


def test_wrong_password_fails_naming_the_user_and_the_auth_url(openstack_api, tmp_path):
    config = config_for(openstack_api, tmp_path, password="wrong")
    with pytest.raises(CloudError) as e:
        OpenStackCloud(config)
    message = str(e.value)
    assert "refused the credentials of user 'lando'" in message
    assert openstack_api.auth_url in message
    assert "wrong" not in message  # never the secret


def test_unreachable_auth_url_fails_saying_it_cannot_be_reached(openstack_api, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    config = config_for(openstack_api, tmp_path, auth_url=f"http://127.0.0.1:{dead_port}/identity/v3", api_retries=1)
    with pytest.raises(CloudError, match=f"cannot reach the OpenStack auth_url http://127.0.0.1:{dead_port}"):
        OpenStackCloud(config)


# ---- creating ------------------------------------------------------------------------------

def test_vm_with_volume_and_floating_ip_carries_our_metadata_on_every_resource(openstack_api, tmp_path):
    config = config_for(openstack_api, tmp_path, allocate_floating_ips=True, floating_ip_pool_name="public",
                        network_name="private", security_groups=["ssh"])
    cloud = OpenStackCloud(config)
    request = job_request(volume_size=5)
    vm = cloud.wait_until_active(cloud.create_vm(request).id)
    state = openstack_api.cloud
    server = state.servers[vm.id]
    (volume,) = state.volumes.values()
    (port,) = [p for p in state.ports.values()]
    (fip,) = state.floating_ips.values()

    assert server["_user_data"] == request.user_data
    assert server["_flavor"]["name"] == "m1.small"
    for key, value in request.metadata.items():
        assert server["metadata"][key] == value
        assert volume["metadata"][key] == value
        assert f"{key}={value}" in port["tags"]
        assert f"{key}={value}" in fip["tags"]
    assert volume["metadata"][META_VM_ID] == vm.id and f"{META_VM_ID}={vm.id}" in port["tags"]
    assert volume["size"] == 5 and volume["status"] == "in-use"
    assert port["security_groups"] == [state.sg_id("ssh")]
    assert vm.address == fip["floating_ip_address"]
    assert vm.volume_ids == [volume["id"]]
    assert vm.flavor is not None and vm.flavor.name == "m1.small" and vm.flavor.vcpus == 1
    cloud.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY
    cloud.close()


def test_without_floating_ip_the_address_is_the_fixed_ip(cloud: OpenStackCloud, openstack_api):
    vm = cloud.wait_until_active(cloud.create_vm(job_request()).id)
    (port,) = openstack_api.cloud.ports.values()
    assert vm.address == port["fixed_ips"][0]["ip_address"]
    assert vm.port == 22 and vm.status == "ACTIVE"
    cloud.delete_vm(vm.id)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("flavor", "m1.huge", "flavor 'm1.huge' does not exist; flavors: m1.tiny, m1.small, m1.medium, m1.large"),
    ("image", "centos-7", "image 'centos-7' does not exist; images: debian-12, ubuntu-22.04"),
])
def test_unknown_flavor_or_image_fails_with_the_list_and_creates_nothing(cloud, openstack_api, field, value,
                                                                         expected):
    with pytest.raises(CloudNotFound) as e:
        cloud.create_vm(job_request(volume_size=1, **{field: value}))
    assert str(e.value) == expected
    assert openstack_api.inventory() == EMPTY


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("network_name", "dmz", "network 'dmz' does not exist; networks: private"),
    ("security_groups", ["web"], "security group 'web' does not exist; security groups: default, ssh"),
    ("floating_ip_pool_name", "internet", "floating IP pool 'internet' does not exist; external networks: public"),
])
def test_unknown_network_names_fail_with_the_list_and_create_nothing(openstack_api, tmp_path, setting, value,
                                                                     expected):
    config = config_for(openstack_api, tmp_path, allocate_floating_ips=True, **{setting: value})
    cloud = OpenStackCloud(config)
    with pytest.raises(CloudNotFound) as e:
        cloud.create_vm(job_request(volume_size=1))
    assert str(e.value) == expected
    assert openstack_api.inventory() == EMPTY
    cloud.close()


def test_a_named_keypair_goes_on_the_server_and_an_unknown_one_fails_listing_the_keypairs(openstack_api, tmp_path):
    openstack_api.settings.keypairs = {"facility": FACILITY_KEY,
                                       "backup": BACKUP_KEY}
    cloud = OpenStackCloud(config_for(openstack_api, tmp_path, ssh_key_name="facility"))
    configured = cloud.create_vm(job_request(1))
    own = cloud.create_vm(job_request(2, key_name="backup"))  # a job's own (bespin's cloud_settings) wins
    with pytest.raises(CloudNotFound) as e:
        cloud.create_vm(job_request(3, key_name="lando", volume_size=1))

    servers = openstack_api.cloud.servers
    assert (servers[configured.id]["key_name"], servers[own.id]["key_name"]) == ("facility", "backup")
    assert str(e.value) == "keypair 'lando' (ssh_key_name) does not exist for this OpenStack user; keypairs: " \
                           "backup, facility"
    assert [s["name"] for s in openstack_api.created()] == ["lando-job-1-port", "lando-job-1", "lando-job-2-port",
                                                            "lando-job-2"]  # nothing of job 3's
    for vm in (configured, own):
        cloud.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY
    cloud.close()


def test_flavor_and_image_may_be_given_by_id(cloud, openstack_api):
    image_id = openstack_api.cloud.image_ids["ubuntu-22.04"]
    vm = cloud.create_vm(job_request(flavor="3", image=image_id))
    assert vm.flavor is not None and vm.flavor.name == "m1.medium"
    assert openstack_api.cloud.servers[vm.id]["_image"] == image_id
    cloud.delete_vm(vm.id)


def test_old_compute_microversion_still_reports_the_flavor(openstack_api, cloud):
    openstack_api.settings.compute_microversion = "2.1"  # flavor as {id, links}, no embedded facts
    vm = cloud.create_vm(job_request(flavor="m1.large"))
    info = cloud.get_vm(vm.id)
    assert info is not None and info.flavor is not None and info.flavor.name == "m1.large"
    assert info.flavor.vcpus == 4
    cloud.delete_vm(vm.id)


def test_creating_the_same_job_vm_again_returns_the_existing_server(cloud, openstack_api):
    first = cloud.create_vm(job_request(volume_size=1))
    again = cloud.create_vm(job_request(volume_size=1))
    assert again.id == first.id
    assert len(openstack_api.inventory()["volumes"]) == 1
    cloud.delete_vm(first.id)


# ---- quota ---------------------------------------------------------------------------------

def test_full_instance_quota_raises_quota_exceeded_with_a_reason_then_frees(cloud, openstack_api):
    openstack_api.settings.max_instances = 1
    first = cloud.create_vm(job_request(1, volume_size=1))
    with pytest.raises(QuotaExceeded) as e:
        cloud.create_vm(job_request(2, volume_size=1))
    assert str(e.value) == "waiting for quota: instances 1 of 1 in use"
    assert len(openstack_api.inventory()["volumes"]) == 1  # nothing made for the waiting job
    cloud.delete_vm(first.id)
    second = cloud.create_vm(job_request(2))
    assert second.status in ("BUILD", "ACTIVE")
    cloud.delete_vm(second.id)


def test_full_cores_quota_names_cores(cloud, openstack_api):
    openstack_api.settings.max_cores = 3
    with pytest.raises(QuotaExceeded, match="waiting for quota: cores 0 of 3 in use"):
        cloud.create_vm(job_request(flavor="m1.large"))


def test_full_volume_quota_raises_quota_exceeded(cloud, openstack_api):
    openstack_api.settings.max_gigabytes = 10
    with pytest.raises(QuotaExceeded, match=r"waiting for quota: volume gigabytes 0 of 10 in use \(20 more needed\)"):
        cloud.create_vm(job_request(volume_size=20))
    assert openstack_api.inventory() == EMPTY


def test_neutron_port_quota_error_becomes_quota_exceeded_and_undoes_the_volume(cloud, openstack_api):
    openstack_api.settings.max_ports = 0  # not in Nova's limits: only Neutron's 409 tells
    with pytest.raises(QuotaExceeded, match=r"waiting for quota: port \(none left\)"):
        cloud.create_vm(job_request(volume_size=1))
    assert openstack_api.inventory() == EMPTY


def test_floating_ip_quota_error_becomes_quota_exceeded(openstack_api, tmp_path):
    openstack_api.settings.max_floating_ips = 0
    cloud = OpenStackCloud(config_for(openstack_api, tmp_path, allocate_floating_ips=True))
    with pytest.raises(QuotaExceeded, match=r"waiting for quota: floatingip \(none left\)"):
        cloud.create_vm(job_request())
    assert openstack_api.inventory() == EMPTY
    cloud.close()


@pytest.mark.parametrize(("message", "reason"), [
    ("Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
     "waiting for quota: instances 10 of 10"),
    ("Quota exceeded for cores: Requested 4, but already used 18 of 20 cores", "waiting for quota: cores 18 of 20"),
    ("VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'.",
     "waiting for quota: volumes 10 of 10"),
    ("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 100G, "
     "quota is 1000G and 950G has been consumed.", "waiting for quota: volume gigabytes 950 of 1000 (100 more needed)"),
    ("Maximum number of ports exceeded", "waiting for quota: ports (none left)"),
])
def test_quota_messages_of_each_service_read_as_a_waiting_reason(message, reason):
    assert quota_reason(message) == reason


def test_quota_reports_limits_and_usage(cloud, openstack_api):
    vm = cloud.create_vm(job_request(flavor="m1.medium"))
    q = cloud.quota()
    assert (q.max_instances, q.max_cores, q.max_ram_mb) == (10, 20, 51200)
    assert (q.instances_used, q.cores_used, q.ram_mb_used) == (1, 2, 4096)
    cloud.delete_vm(vm.id)


# ---- failures ------------------------------------------------------------------------------

def test_server_in_error_reports_novas_fault_and_deletes_cleanly(cloud, openstack_api):
    openstack_api.settings.server_error_rate = 1.0
    openstack_api.settings.boot_delay = 0.5  # ERROR comes after create_vm returned
    vm = cloud.create_vm(job_request(volume_size=1))
    with pytest.raises(VmFailed, match="went to ERROR: No valid host was found"):
        cloud.wait_until_active(vm.id)
    info = cloud.get_vm(vm.id)
    assert info is not None and info.status == "ERROR"
    assert info.fault == "No valid host was found. There are not enough hosts available."
    cloud.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY


def test_server_in_error_at_once_fails_create_and_leaves_nothing(cloud, openstack_api):
    openstack_api.settings.server_error_rate = 1.0
    openstack_api.settings.boot_delay = 0.0
    with pytest.raises(VmFailed, match="could not boot lando-job-1: No valid host"):
        cloud.create_vm(job_request(volume_size=1))
    assert openstack_api.inventory() == EMPTY


def test_flaky_api_and_dropped_connections_are_retried(cloud, openstack_api):
    openstack_api.settings.flaky_rate = 0.2
    openstack_api.settings.reset_rate = 0.1
    vm = cloud.create_vm(job_request(volume_size=1))
    assert cloud.wait_until_active(vm.id).status == "ACTIVE"
    assert "BEGIN SSH HOST KEY KEYS" in cloud.console_log(vm.id)
    cloud.delete_vm(vm.id)
    openstack_api.settings.flaky_rate = openstack_api.settings.reset_rate = 0.0
    assert openstack_api.inventory() == EMPTY


def test_api_that_keeps_failing_gives_up_after_the_bounded_retries(cloud, openstack_api):
    openstack_api.settings.flaky_rate = 1.0
    started = time.monotonic()
    with pytest.raises(CloudError, match=r"list flavors failed 5 times; last: .*HTTP 503"):
        cloud.create_vm(job_request())
    assert time.monotonic() - started < 5


def test_lost_create_answers_do_not_make_duplicates(cloud, openstack_api):
    openstack_api.settings.lost_answer_rate = 1.0  # every create happens, but its answer is lost
    vm = cloud.create_vm(job_request(volume_size=1))
    openstack_api.settings.lost_answer_rate = 0.0
    inventory = openstack_api.inventory()
    assert inventory["servers"] == [vm.id]
    assert len(inventory["volumes"]) == 1 and len(inventory["ports"]) == 1
    cloud.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY


def test_ten_percent_failed_creates_and_deletes_over_twenty_vms_leave_nothing(cloud, openstack_api):
    s = openstack_api.settings
    s.create_failure_rate = s.delete_failure_rate = 0.1
    errors: list[BaseException] = []

    def one_vm(job_id: int) -> None:
        try:
            while True:
                try:
                    vm = cloud.create_vm(job_request(job_id, volume_size=1))
                    break
                except QuotaExceeded:  # the job waits for quota, as the scheduler would make it
                    time.sleep(0.05)
            cloud.wait_until_active(vm.id)
            cloud.delete_vm(vm.id)
        except BaseException as e:  # collected: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=one_vm, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s.create_failure_rate = s.delete_failure_rate = 0.0
    assert openstack_api.inventory() == EMPTY


# ---- deleting ------------------------------------------------------------------------------

def test_delete_vm_is_idempotent(cloud, openstack_api):
    vm = cloud.create_vm(job_request(volume_size=1))
    cloud.delete_vm(vm.id)
    cloud.delete_vm(vm.id)
    assert cloud.get_vm(vm.id) is None
    assert openstack_api.inventory() == EMPTY


def test_delete_after_the_server_is_gone_still_finds_its_volume_port_and_floating_ip(openstack_api, tmp_path):
    cloud = OpenStackCloud(config_for(openstack_api, tmp_path, allocate_floating_ips=True))
    vm = cloud.create_vm(job_request(volume_size=1))
    conn = sdk(openstack_api)
    server = conn.compute.get_server(vm.id)  # read first: the server may be gone before a read after the delete
    conn.compute.delete_server(vm.id)  # as if a first delete_vm stopped right after the server
    conn.compute.wait_for_delete(server, interval=0.05, wait=5)
    conn.close()
    assert len(openstack_api.inventory()["volumes"]) == 1
    cloud.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY
    cloud.close()


def test_delete_that_keeps_failing_raises_naming_what_is_left(cloud, openstack_api):
    vm = cloud.create_vm(job_request(volume_size=1))
    openstack_api.settings.delete_failure_rate = 1.0
    with pytest.raises(CloudError, match=f"could not delete server {vm.id}"):
        cloud.delete_vm(vm.id)
    openstack_api.settings.delete_failure_rate = 0.0
    cloud.delete_vm(vm.id)  # the later retry finishes the job
    assert openstack_api.inventory() == EMPTY


def test_delete_vm_does_not_touch_other_jobs(cloud, openstack_api):
    mine = cloud.create_vm(job_request(1, volume_size=1))
    other = cloud.create_vm(job_request(2, volume_size=1))
    cloud.delete_vm(mine.id)
    inventory = openstack_api.inventory()
    assert inventory["servers"] == [other.id]
    assert len(inventory["volumes"]) == 1 and len(inventory["ports"]) == 1
    cloud.delete_vm(other.id)


class NoJobs:
    """A job store that holds no job (the sweep asks it only about VMs and keys)."""

    def get(self, job_id: int):  # type: ignore[no-untyped-def]
        from lando_ssh.errors import UnknownJob

        raise UnknownJob(f"no job {job_id}")


def test_orphans_of_a_create_that_stopped_midway_are_spared_while_young_then_swept(cloud, openstack_api):
    from lando_ssh.sweep import describe, sweep

    config = cloud.config
    config.cloud.installation_id = "lando-ssh"
    request = our_request(config, 7, volume_size=1)
    volume_id = cloud._home._create_volume(request)  # as if the process died before creating the port and server
    other = cloud.create_vm(our_request(config, 8, volume_size=1))

    items = sweep(config, cloud, NoJobs(), dry_run=True)  # the default grace: 600 s
    orphans = [i for i in items if i.kind != "vm"]
    assert [(i.kind, i.id, i.name, i.spared, i.deleted) for i in orphans] == [
        ("volume", volume_id, "lando-job-7-data", True, False)]
    assert 0 <= orphans[0].age_seconds < 600 and orphans[0].why == "it was never attached to a server"
    assert [i.id for i in items if i.kind == "vm"] == [other.id]  # job 8 is not in this store: an orphan too
    text = describe(items, True, 600)
    assert "spared (young)" in text and "2 spared for being younger than the grace (10m00s" in text
    assert len(openstack_api.inventory()["volumes"]) == 2  # nothing deleted

    items = sweep(config, cloud, NoJobs(), grace=0)
    assert sorted((i.kind, i.deleted) for i in items) == [("vm", True), ("volume", True)]
    assert openstack_api.inventory() == EMPTY


def test_dry_run_lists_the_volume_port_and_floating_ip_of_a_server_deleted_behind_our_back(openstack_api, tmp_path):
    from lando_ssh.sweep import sweep

    config = config_for(openstack_api, tmp_path, allocate_floating_ips=True)
    config.cloud.installation_id = "lando-ssh"
    cloud = OpenStackCloud(config)
    vm = cloud.create_vm(our_request(config, volume_size=1))
    kept = cloud.create_vm(job_request(2, volume_size=1, metadata={META_INSTALLATION: "another", META_JOB_ID: "2"}))
    conn = sdk(openstack_api)
    server = conn.compute.get_server(vm.id)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.05, wait=5)  # (read before: it may be gone at once)
    conn.close()
    before = openstack_api.inventory()

    listed = sweep(config, cloud, NoJobs(), dry_run=True)  # a made-for server that is gone: at any age
    assert sorted(i.kind for i in listed) == ["floating ip", "port", "volume"]
    assert all(i.why == f"its server {vm.id} is gone" and not i.spared and not i.deleted for i in listed)
    assert next(i for i in listed if i.kind == "port").name == "lando-job-1-port"
    assert openstack_api.inventory() == before

    swept = sweep(config, cloud, NoJobs())
    assert sorted((i.kind, i.deleted) for i in swept) == [("floating ip", True), ("port", True), ("volume", True)]
    inventory = openstack_api.inventory()
    assert inventory["servers"] == [kept.id] and len(inventory["volumes"]) == 1  # another installation's
    cloud.delete_vm(kept.id)
    assert openstack_api.inventory() == EMPTY
    cloud.close()


# ---- reading -------------------------------------------------------------------------------

def test_find_vms_matches_all_given_metadata(cloud):
    a = cloud.create_vm(job_request(1))
    b = cloud.create_vm(job_request(2))
    assert {v.id for v in cloud.find_vms({META_MANAGED_BY: "lando-ssh"})} == {a.id, b.id}
    assert [v.id for v in cloud.find_vms({META_JOB_ID: "2"})] == [b.id]
    assert cloud.find_vms({META_INSTALLATION: "another"}) == []
    cloud.delete_vm(a.id)
    cloud.delete_vm(b.id)


def test_console_log_is_empty_while_booting_then_shows_the_host_keys(cloud, openstack_api):
    openstack_api.settings.boot_delay = 0.5
    vm = cloud.create_vm(job_request())
    assert cloud.console_log(vm.id) == ""
    cloud.wait_until_active(vm.id)
    keys = host_keys_from_console(cloud.console_log(vm.id))
    assert len(keys) == 1 and keys[0].startswith("ssh-ed25519 AAAA")
    cloud.delete_vm(vm.id)
    with pytest.raises(CloudNotFound):
        cloud.console_log(vm.id)


def test_the_login_user_is_vm_user_else_the_images_property_else_ubuntu(openstack_api, tmp_path):
    openstack_api.settings.images = ["debian-12", "ubuntu-22.04"]
    openstack_api.settings.image_properties = {"debian-12": {"os_admin_user": "debian", "os_distro": "debian"},
                                               "ubuntu-22.04": {"default_user": "ubuntu2"}}
    image = requests.get(f"{openstack_api.url}/image/v2/images", timeout=5,
                         headers={"X-Auth-Token": sdk(openstack_api).auth_token}).json()["images"][0]
    assert (image["name"], image["os_admin_user"], image["status"]) == ("debian-12", "debian", "active")  # as Glance
    cloud = OpenStackCloud(config_for(openstack_api, tmp_path))
    debian_id = next(i.id for i in cloud._home._images() if i.name == "debian-12")
    assert (cloud.default_user("debian-12"), cloud.default_user(debian_id)) == ("debian", "debian")
    assert cloud.default_user("ubuntu-22.04") == "ubuntu2"  # the other property clouds use
    openstack_api.settings.image_properties = {}
    assert cloud.default_user("debian-12") == "ubuntu"  # neither: the usual cloud image's user
    cloud.config.vm.user = "admin"
    openstack_api.settings.image_properties = {"debian-12": {"os_admin_user": "debian"}}
    assert cloud.default_user("debian-12") == "admin"  # the admin's own choice comes first
    cloud.close()


def test_get_vm_of_unknown_server_is_none(cloud):
    assert cloud.get_vm("00000000-0000-0000-0000-000000000000") is None


# ---- projects (bespin-api's per-job vm_project) ----------------------------------------------

def test_a_vm_in_another_project_is_made_there_and_a_restarted_driver_finds_it_by_id_and_by_name(
        openstack_api, tmp_path):
    config = config_for(openstack_api, tmp_path, allocate_floating_ips=True)
    cloud = OpenStackCloud(config)
    request = job_request(5, volume_size=1, project="lando-lab")
    vm = cloud.wait_until_active(cloud.create_vm(request).id)

    server_id = vm.id.removeprefix("lando-lab/")
    assert vm.id == f"lando-lab/{server_id}" and vm.project == "lando-lab"
    made = openstack_api.inventory("lando-lab")
    assert made["servers"] == [server_id]
    assert (len(made["volumes"]), len(made["ports"]), len(made["floating_ips"])) == (1, 1, 1)
    assert openstack_api.inventory("lando") == EMPTY
    assert cloud.get_vm(server_id) is None  # the bare id is the configured project's, where it is not
    cloud.close()

    restarted = OpenStackCloud(config)  # a new process: only the id recorded on the job, and the data dir
    assert restarted.get_vm(vm.id).status == "ACTIVE"
    assert host_keys_from_console(restarted.console_log(vm.id))
    assert [v.id for v in restarted.find_vms({META_JOB_ID: "5"})] == [vm.id]  # a job that never recorded its id
    assert restarted.create_vm(request).id == vm.id  # a resumed create finds the one it asked for
    restarted.delete_vm(vm.id)
    assert openstack_api.inventory() == EMPTY
    restarted.close()


def test_the_sweep_covers_projects_used_here_and_those_configured(openstack_api, tmp_path):
    from lando_ssh.store import open_store
    from lando_ssh.sweep import sweep

    config = config_for(openstack_api, tmp_path / "here", allocate_floating_ips=True)
    cloud = OpenStackCloud(config)
    lost = cloud.create_vm(our_request(config, 8, project="lando-lab"))  # job 8 is in no job store
    half = our_request(config, 9, volume_size=1, project="lando-lab")
    cloud._in("lando-lab")._create_volume(half)  # as if the process died before the port and server
    cloud.close()

    elsewhere = config_for(openstack_api, tmp_path / "elsewhere")  # another data dir: it never used lando-lab
    unaware = OpenStackCloud(elsewhere)
    assert unaware.find_vms({META_JOB_ID: "8"}) == []
    unaware.close()
    elsewhere.cloud_settings.projects = ["lando-lab"]
    told = OpenStackCloud(elsewhere)
    assert [v.id for v in told.find_vms({META_JOB_ID: "8"})] == [lost.id]
    told.close()

    restarted = OpenStackCloud(config)
    store = open_store(config.store_url)
    swept = sweep(config, restarted, store, grace=0)
    store.close()
    restarted.close()
    assert [(i.kind, i.id, i.deleted) for i in swept if i.kind == "vm"] == [("vm", lost.id, True)]
    assert [i.kind for i in swept if i.kind == "volume"] == ["volume"]
    assert openstack_api.inventory() == EMPTY


def test_a_project_keystone_refuses_fails_the_create_naming_it_and_why(cloud, openstack_api, tmp_path):
    with pytest.raises(CloudError) as e:
        cloud.create_vm(job_request(project="no-such-project"))
    message = str(e.value)
    assert "cannot work in OpenStack project 'no-such-project'" in message
    assert "the project does not exist or the user has no role in it" in message
    assert "secret" not in message
    assert openstack_api.inventory() == EMPTY
    assert cloud.find_vms({}) == []  # and it is not remembered as a project to look in
    assert not (tmp_path / "openstack-projects").exists()


def test_an_application_credential_stays_in_its_own_project(openstack_api, tmp_path):
    config = config_for(openstack_api, tmp_path, username=None, password=None, project_name=None,
                        application_credential_id="lando-app-cred", application_credential_secret="app-secret")
    cloud = OpenStackCloud(config)
    with pytest.raises(CloudError, match="an application credential is bound to the one project it was made in "
                                         r"\('lando'\); give cloud_settings a username and password"):
        cloud.create_vm(job_request(project="lando-lab"))
    home = cloud.create_vm(job_request(project="lando"))  # its own project, named: the configured one
    assert "/" not in home.id
    cloud.delete_vm(home.id)
    cloud.close()
    config.cloud_settings.projects = ["lando-lab"]
    with pytest.raises(CloudError, match="cloud_settings.projects names it"):
        OpenStackCloud(config)
    assert openstack_api.inventory() == EMPTY


def test_quota_in_another_project_is_that_projects_and_named_in_the_reason(cloud, openstack_api):
    openstack_api.settings.project_quotas = {"lando-lab": {"max_instances": 0}}
    with pytest.raises(QuotaExceeded) as e:
        cloud.create_vm(job_request(1, project="lando-lab"))
    assert str(e.value) == "waiting for quota in project 'lando-lab': instances 0 of 0 in use"
    home = cloud.create_vm(job_request(2))  # the configured project has room
    assert cloud.quota().instances_used == 1
    cloud.delete_vm(home.id)
    assert quota_reason("Quota exceeded for cores: Requested 1, but already used 20 of 20 cores", "lab") == \
        "waiting for quota in project 'lab': cores 20 of 20"


# ---- the service itself ---------------------------------------------------------------------

def test_api_answers_like_openstack_for_unknown_resources_and_bad_tokens(openstack_api):
    r = requests.get(openstack_api.url + "/compute/v2.1/servers/detail", headers={"X-Auth-Token": "nope"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["title"] == "Unauthorized"
    conn = sdk(openstack_api)
    with pytest.raises(openstack.exceptions.NotFoundException, match="Instance nope could not be found"):
        conn.compute.get_server("nope")
    conn.close()


def test_standalone_service_serves_openstacksdk(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.openstack_api", "--port", str(port),
                             "--set", "max_instances=3"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}/identity/v3" in proc.stdout.readline()
        config = Config(data_dir=str(tmp_path))
        config.cloud_settings.auth_url = f"http://127.0.0.1:{port}/identity/v3"
        config.cloud_settings.username, config.cloud_settings.password = "lando", "secret"
        config.cloud_settings.project_name = "lando"
        cloud = OpenStackCloud(config)
        assert cloud.quota().max_instances == 3
        cloud.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# ---- servers backed by real sshd VMs ----------------------------------------------------------

def test_server_backed_by_local_vm_accepts_the_jobs_key_and_shows_its_host_key(local_openstack_api, tmp_path):
    public = generate_keypair(str(tmp_path / "job-1"), "job-1")
    private = (tmp_path / "job-1").read_text()
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    cloud = OpenStackCloud(config_for(local_openstack_api, tmp_path))
    user = pwd.getpwuid(os.getuid()).pw_name  # the local VMs log in the user running them
    work = tmp_path / "work"
    user_data = render_user_data(UserDataParams(public_key=public, user=user, work_dir=str(work)))
    vm = cloud.wait_until_active(cloud.create_vm(job_request(user_data=user_data)).id, timeout=20)
    assert vm.address == "127.0.0.1" and vm.port != 22
    assert vm.metadata[SSH_PORT_METADATA] == str(vm.port)
    (console_key,) = host_keys_from_console(cloud.console_log(vm.id))
    deadline = time.monotonic() + 10  # cloud-init's runcmd runs after sshd is up, as on a real VM
    while not (work / ".lando-ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (work / ".lando-ready").exists()  # cloud-init's runcmd ran

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_type, key_b64 = console_key.split()
    client.get_host_keys().add(f"[127.0.0.1]:{vm.port}", key_type,
                               paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64)))
    client.connect("127.0.0.1", port=vm.port, username=user, pkey=pkey, look_for_keys=False, allow_agent=False,
                   timeout=10)
    _, out, _ = client.exec_command("echo hello")
    assert out.read().decode().strip() == "hello"
    client.close()

    local_openstack_api.settings.wrong_host_key = True
    (wrong_key,) = host_keys_from_console(cloud.console_log(vm.id))
    assert wrong_key != console_key
    cloud.delete_vm(vm.id)
    assert local_openstack_api.inventory() == EMPTY
    assert not [p for p in (tmp_path / "vms" / "local-cloud").iterdir() if p.is_dir()]  # the sshd VM is gone too
    assert LocalCloud(Config(data_dir=str(tmp_path / "vms"))).processes(vm.id) == set()  # and its processes
    cloud.close()


def test_stopped_service_leaves_no_threads_and_frees_its_port(tmp_path):
    before = set(threading.enumerate())
    service = running_service()
    cloud = OpenStackCloud(config_for(service, tmp_path))
    cloud.delete_vm(cloud.create_vm(job_request()).id)  # keep-alive connections are open now
    service.stop()
    cloud.close()
    assert set(threading.enumerate()) - before == set()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", service.port)) != 0


# ---- a whole job through the driver (CLI, pipeline, sshd VMs behind the API) -------------------

def use_openstack(lando, service: OpenStackApiService, tmp_path: Path, **vm: object) -> None:
    """Point the lando installation at `service`, its VMs' work dirs apart under tmp_path."""
    lando.write_config(
        cloud={"driver": "openstack"},
        cloud_settings={"auth_url": service.auth_url, "username": "lando", "password": "secret",
                        "project_name": "lando", "network_name": "private", "allocate_floating_ips": True,
                        "api_retry_delay": 0.05, "api_poll_interval": 0.1},
        vm={"image": "debian-12", "flavor": "m1.small", "volume_size": 1, "boot_timeout": 20,
            "user": pwd.getpwuid(os.getuid()).pw_name, "work_dir": str(tmp_path / "vm-disks" / "{vm_name}"), **vm},
        cwl_base_command=["cwltool", "--no-container"])


def test_whole_job_runs_through_the_openstack_driver_and_leaves_nothing(lando, local_openstack_api, tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path)
    job_id = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml")

    proc = lando.cli("job", str(job_id), timeout=120)

    assert proc.returncode == 0, proc.stderr
    job = lando.status(job_id)
    assert (job["state"], job["step"]) == ("F", "")
    out = Path(job["output_dir"])
    assert (out / "upper.txt").read_bytes() == b"HELLO WORLD\nSECOND LINE\nMORE TEXT\n"
    assert (out / "count.txt").read_bytes() == b"3\n"
    assert job["vm"]["deleted"]
    assert local_openstack_api.inventory() == EMPTY
    assert not [p for p in (tmp_path / "vms" / "local-cloud").iterdir() if p.is_dir()]


def test_job_waits_in_s_for_quota_then_runs(lando, local_openstack_api, tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path)
    local_openstack_api.settings.max_instances = 0
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    proc = lando.popen("job", str(job_id))
    try:
        job = lando.wait_for(job_id, lambda j: "quota" in (j.get("reason") or ""), timeout=30)
        assert job["state"] == "S"
        assert job["reason"] == "waiting for quota: instances 0 of 0 in use"
        assert local_openstack_api.inventory() == EMPTY
        local_openstack_api.settings.max_instances = 10
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert lando.status(job_id)["state"] == "F"
    assert local_openstack_api.inventory() == EMPTY


def test_vms_and_sweep_find_a_vm_in_another_project_from_a_new_process(lando, openstack_api, tmp_path):
    use_openstack(lando, openstack_api, tmp_path)
    cloud = OpenStackCloud(lando.config())
    vm = cloud.create_vm(our_request(lando.config(), 77, project="lando-lab"))
    cloud.close()

    listed = json.loads(lando.cli("vms", "--json", check=True).stdout)
    assert [(r["id"], r["project"], r["job"], r["job_state"], r["activity"]) for r in listed] == \
        [(vm.id, "lando-lab", 77, None, "no job")]
    swept = json.loads(lando.cli("sweep", "--grace", "0", "--json", check=True).stdout)
    assert [(i["kind"], i["id"], i["deleted"]) for i in swept] == [("vm", vm.id, True)]
    assert openstack_api.inventory() == EMPTY


def test_server_that_goes_to_error_fails_the_job_with_novas_fault(lando, openstack_api, tmp_path):
    use_openstack(lando, openstack_api, tmp_path)
    openstack_api.settings.server_error_rate = 1.0
    openstack_api.settings.boot_delay = 0.3
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id), timeout=60)

    assert proc.returncode == 1
    job = lando.status(job_id)
    assert job["state"] == "E"
    assert "No valid host was found" in job["error"]
    assert openstack_api.inventory() == EMPTY


def test_wrong_host_key_on_the_console_refuses_the_connection(lando, local_openstack_api, tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path)
    local_openstack_api.settings.wrong_host_key = True
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id), timeout=60)

    assert proc.returncode != 0
    job = lando.status(job_id)
    assert job["state"] == "E"
    assert "not the pinned one; refusing to connect" in job["error"]
    assert local_openstack_api.inventory() == EMPTY


def test_unknown_image_is_refused_at_submit_and_fails_a_stored_job_at_once_listing_images(lando, openstack_api,
                                                                                         tmp_path):
    use_openstack(lando, openstack_api, tmp_path, image="centos-7")
    refused = lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), timeout=60)
    assert (refused.returncode, refused.stderr.strip()) == (
        2, "lando-ssh: image 'centos-7' does not exist; images: debian-12, ubuntu-22.04")
    use_openstack(lando, openstack_api, tmp_path)
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    use_openstack(lando, openstack_api, tmp_path, image="centos-7")  # the image went after the job was stored

    proc = lando.cli("job", str(job_id), timeout=60)

    assert proc.returncode != 0
    job = lando.status(job_id)
    assert job["state"] == "E"
    assert "image 'centos-7' does not exist; images: debian-12, ubuntu-22.04" in job["error"]
    assert openstack_api.inventory() == EMPTY


def test_a_server_of_another_installation_with_the_same_id_is_neither_adopted_nor_deleted(openstack_api, tmp_path):
    """Two data dirs, one project, the same installation id and job 1: each create is its own server, and a
    delete of the other's server by its id is refused."""
    from lando_ssh.installation import ours

    configs = [config_for(openstack_api, tmp_path / name) for name in ("a", "b")]
    clouds = [OpenStackCloud(c) for c in configs]
    try:
        vms = [cloud.create_vm(job_request(1, metadata={**ours(c), META_JOB_ID: "1"}))
               for cloud, c in zip(clouds, configs, strict=True)]
        assert vms[0].id != vms[1].id  # the second create did not take the first's server for its own
        with pytest.raises(CloudError, match="made by another lando-ssh installation"):
            clouds[0].delete_vm(vms[1].id)
        assert sorted(openstack_api.inventory()["servers"]) == sorted(v.id for v in vms)
        for cloud, vm in zip(clouds, vms, strict=True):
            cloud.delete_vm(vm.id)
        assert openstack_api.inventory() == EMPTY
    finally:
        for cloud in clouds:
            cloud.close()


def test_a_job_logs_in_as_the_images_os_admin_user(lando, local_openstack_api, tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path, user=None)  # vm.user unset
    local_openstack_api.settings.image_properties = {"debian-12": {"os_admin_user": pwd.getpwuid(os.getuid()).pw_name}}
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id), timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert lando.status(job_id)["vm"]["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert local_openstack_api.inventory() == EMPTY


def test_a_vm_that_refuses_the_login_user_fails_the_job_saying_to_set_vm_user(lando, local_openstack_api, tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path, user=None, ssh_timeout=3)
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")  # the image names no user: "ubuntu", not the VMs' user

    proc = lando.cli("job", str(job_id), timeout=120)

    assert proc.returncode == 1
    job = lando.status(job_id)
    assert job["state"] == "E" and job["vm"]["user"] == "ubuntu"
    assert "answers but refuses the job's SSH key for user 'ubuntu'" in job["error"]
    assert "set vm.user to the image's login user" in job["error"]
    assert local_openstack_api.inventory() == EMPTY
