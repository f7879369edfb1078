"""The OpenStack driver against a real OpenStack (../shared/openstack: Keystone, Nova with the fake hypervisor and
the real quota driver, Neutron, Cinder, Glance; see tests/openstack_api/real.py). Each test works in projects
of this run's own, and every server, volume, floating IP and port it makes is deleted and checked gone."""
from __future__ import annotations

import base64
import ipaddress
import json
import re
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack.exceptions as os_exc
import pytest
from conftest import WORKFLOWS, Daemon, finished, send, store_job, wait_job
from openstack_api.helpers import running_service
from openstack_api.real import FLAVOR, IMAGE, OSX, POOL, RealOpenStack, Tenant, admin_auth, connect, wait_for
from openstack_guest.compute import Namespace, guests_left
from openstack_guest.compute import install as install_guest_driver

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, META_MANAGED_BY, VmRequest
from lando_ssh.cloud.cloudinit import host_keys_from_console
from lando_ssh.cloud.openstack import META_FLOATING_IP_ID, META_PORT_ID, META_VM_ID, META_VOLUME_ID, OpenStackCloud
from lando_ssh.config import CloudSettings, Config
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded, UnknownJob, VmFailed
from lando_ssh.installation import ours
from lando_ssh.sweep import sweep

pytestmark = [
    # openstacksdk warns about its own internals; nothing the driver can change
    pytest.mark.filterwarnings("ignore::openstack.warnings.OpenStackDeprecationWarning",
                               "ignore::openstack.warnings._RemovedInSDKWarning"),
    pytest.mark.timeout(900),  # the first test pays for starting the stack (and installing it, once per machine)
]

USER_DATA = "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC97W/Gb test]\n"


@pytest.fixture(scope="module")
def stack() -> Iterator[RealOpenStack]:
    real = RealOpenStack()
    try:
        real.start()
        admin = connect(**admin_auth())
        try:
            install_guest_driver(OSX, admin)  # Nova's servers get real guests (tests/openstack_guest)
        finally:
            admin.close()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)  # never a skip: CI must say the real cloud is missing
    yield real
    real.stop()


@pytest.fixture(scope="module")
def tenant(stack: RealOpenStack) -> Iterator[Tenant]:
    made = Tenant.make()
    yield made
    made.remove()


@pytest.fixture(scope="module")
def namespace(tenant: Tenant) -> Iterator[Namespace]:
    """The test's network namespace for the tenant's network: its servers' guests live there."""
    ns = Namespace.make(tenant.network_id, tenant.cidr, tenant.gateway)
    yield ns
    tenant.purge()
    left = ns.addresses()
    ns.remove()
    assert (left, guests_left(OSX)) == ([], [])  # every guest destroyed with its server


@pytest.fixture(autouse=True)
def purged(tenant: Tenant, namespace: Namespace) -> Iterator[None]:
    yield
    tenant.purge()  # a test that failed midway leaves nothing to the next (each asserts its own cleanup)
    tenant.reset_quotas()


@pytest.fixture
def admin(tenant: Tenant) -> Any:
    return tenant.admin


@pytest.fixture
def config(tenant: Tenant, tmp_path: Path) -> Config:
    config = Config(data_dir=str(tmp_path / "data"))
    config.cloud.driver = "openstack"
    config.cloud.installation_id = tenant.prefix
    config.cloud_settings = CloudSettings(
        auth_url=tenant.user_auth()["auth_url"], username=tenant.user, password=tenant.password,
        project_name=tenant.project, network_name=tenant.network, security_groups=["default"],
        allocate_floating_ips=True, floating_ip_pool_name=POOL,
        api_retries=2, api_retry_delay=0.5, api_poll_interval=0.5, resource_timeout=120.0)
    config.vm.boot_timeout = 180.0
    return config


@pytest.fixture
def cloud(config: Config) -> Iterator[OpenStackCloud]:
    c = OpenStackCloud(config)
    yield c
    c.close()


def job_request(tenant: Tenant, job_id: int = 1, **kw: Any) -> VmRequest:
    args: dict[str, Any] = {
        "name": f"{tenant.prefix}-job-{job_id}", "flavor": FLAVOR, "image": IMAGE, "user_data": USER_DATA,
        "metadata": {META_MANAGED_BY: "lando-ssh", META_INSTALLATION: tenant.prefix, META_JOB_ID: str(job_id)}}
    args.update(kw)
    return VmRequest(**args)


def gone(admin: Any, kind: str, rid: str) -> bool:
    """The admin's view: the resource no longer exists."""
    get = {"server": admin.compute.get_server, "volume": admin.block_storage.get_volume,
           "port": admin.network.get_port, "floating_ip": admin.network.get_ip}[kind]
    try:
        get(rid)
    except os_exc.NotFoundException:
        return True
    return False


def assert_all_gone(admin: Any, made: dict[str, str]) -> None:
    assert [f"{kind} {rid}" for kind, rid in made.items() if not gone(admin, kind, rid)] == []


def resources_of(admin: Any, server: Any) -> dict[str, str]:
    meta = server.metadata
    return {"server": server.id, "volume": meta[META_VOLUME_ID], "port": meta[META_PORT_ID],
            "floating_ip": meta[META_FLOATING_IP_ID]}


def ssh_banner(address: str) -> bytes:
    """The first line sshd on address:22 sends, or b"" while nothing answers."""
    try:
        with socket.create_connection((address, 22), timeout=5) as s:
            return s.recv(64)
    except OSError:
        return b""


class NoJobs:
    def get(self, job_id: int) -> Any:
        raise UnknownJob(f"no job {job_id}")


# ---- facts and names ----------------------------------------------------------------------------------------

def test_flavors_images_and_quota_are_the_real_clouds(cloud: OpenStackCloud, tenant: Tenant):
    tenant.set_quotas(compute={"instances": 3, "cores": 5, "ram": 4096})

    tiny = next(f for f in cloud.flavors() if f.name == FLAVOR)
    quota = cloud.quota()

    assert (tiny.vcpus, tiny.ram_mb, tiny.disk_gb) == (1, 512, 1)
    assert tenant.huge_flavor in [f.name for f in cloud.flavors()]  # a private flavor the project may use
    assert IMAGE in cloud.images()
    assert (quota.max_instances, quota.max_cores, quota.max_ram_mb) == (3, 5, 4096)
    assert (quota.instances_used, quota.cores_used, quota.ram_mb_used) == (0, 0, 0)


@pytest.mark.parametrize(("field", "value", "listed"), [
    ("flavor", "no-such-flavor", FLAVOR), ("image", "no-such-image", IMAGE)])
def test_an_unknown_flavor_or_image_fails_listing_what_exists_and_creates_nothing(
        cloud: OpenStackCloud, tenant: Tenant, field: str, value: str, listed: str):
    with pytest.raises(CloudNotFound, match=f"{field} '{value}' does not exist; .*{listed}"):
        cloud.create_vm(job_request(tenant, **{field: value}, volume_size=1))
    assert tenant.leftovers() == []


def test_unknown_network_security_group_pool_and_keypair_fail_naming_what_exists(
        config: Config, tenant: Tenant):
    for setting, value, words in (
            ("network_name", "no-such-net", f"network 'no-such-net' does not exist; networks: .*{tenant.network}"),
            ("security_groups", ["no-such-sg"], "security group 'no-such-sg' does not exist; security groups: default"),
            ("floating_ip_pool_name", "no-such-pool", f"floating IP pool 'no-such-pool' does not exist; .*{POOL}"),
            ("ssh_key_name", "no-such-key", "keypair 'no-such-key' .* does not exist")):
        config.cloud_settings.__dict__[setting] = value
        cloud = OpenStackCloud(config)
        try:
            with pytest.raises(CloudNotFound, match=words):
                cloud.create_vm(job_request(tenant))
        finally:
            cloud.close()
        config.cloud_settings.__dict__.update(network_name=tenant.network, security_groups=["default"],
                                              floating_ip_pool_name=POOL, ssh_key_name=None)
    assert tenant.leftovers() == []


# ---- the whole cycle ----------------------------------------------------------------------------------------

def test_a_vm_with_user_data_keypair_volume_port_and_floating_ip_is_made_marked_and_deleted(
        config: Config, tenant: Tenant, admin: Any, namespace: Namespace):
    user = connect(**tenant.user_auth())
    keypair = user.compute.create_keypair(name=f"{tenant.prefix}-facility")
    config.cloud_settings.ssh_key_name = keypair.name
    cloud = OpenStackCloud(config)
    try:
        request = job_request(tenant, 1, volume_size=1)
        made = cloud.create_vm(request)
        vm = cloud.wait_until_active(made.id)
        server = admin.compute.get_server(vm.id)  # the admin sees the user data (microversion >= 2.3)
        ids = resources_of(admin, server)
        volume = admin.block_storage.get_volume(ids["volume"])
        port = admin.network.get_port(ids["port"])
        fip = admin.network.get_ip(ids["floating_ip"])
        tags = {f"{k}={v}" for k, v in request.metadata.items()} | {f"{META_VM_ID}={vm.id}"}

        assert made.status in ("BUILD", "ACTIVE") and vm.status == "ACTIVE"
        assert base64.b64decode(server.user_data).decode() == USER_DATA
        assert server.key_name == keypair.name and server.name == request.name
        assert request.metadata.items() <= server.metadata.items()
        assert volume.size == 1 and volume.status == "in-use" and volume.name == f"{request.name}-data"
        assert [a["server_id"] for a in volume.attachments] == [vm.id]
        assert request.metadata.items() <= volume.metadata.items() and volume.metadata[META_VM_ID] == vm.id
        assert tags <= set(port.tags) and tags <= set(fip.tags)
        assert port.device_id == vm.id and fip.port_id == port.id
        assert port.security_group_ids == [g.id for g in admin.network.security_groups(
            name="default", project_id=tenant.projects[tenant.project])]
        assert vm.address == fip.floating_ip_address and vm.port == 22
        assert vm.volume_ids == [volume.id]
        assert vm.flavor is not None and (vm.flavor.name, vm.flavor.vcpus, vm.flavor.ram_mb) == (FLAVOR, 1, 512)
        # the guest (tests/openstack_guest): cloud-init's host keys on the console, sshd on the floating IP
        assert wait_for(lambda: host_keys_from_console(cloud.console_log(vm.id)), "the host keys on the console")
        assert wait_for(lambda: ssh_banner(vm.address), f"sshd answering on {vm.address}").startswith(b"SSH-2.0-")
        assert sorted(namespace.addresses()) == sorted([f"{port.fixed_ips[0]['ip_address']}/24",
                                                        f"{fip.floating_ip_address}/32"])
        assert [v.id for v in cloud.find_vms(request.metadata)] == [vm.id]
        assert cloud.get_vm(vm.id).status == "ACTIVE"
        assert cloud.quota().instances_used == 1
        assert cloud.create_vm(request).id == vm.id  # a resumed job finds its server, makes no second one

        cloud.delete_vm(vm.id)

        assert_all_gone(admin, ids)
        assert namespace.addresses() == [] and guests_left(OSX) == []  # the guest went with its server
        assert cloud.get_vm(vm.id) is None
        cloud.delete_vm(vm.id)  # again: nothing to do, no error
        with pytest.raises(CloudNotFound):
            cloud.console_log(vm.id)
    finally:
        cloud.close()
        user.compute.delete_keypair(keypair)
        user.close()
    assert tenant.leftovers() == []


def test_a_vm_without_floating_ip_or_volume_is_reached_on_its_fixed_address(
        config: Config, tenant: Tenant, admin: Any):
    config.cloud_settings.allocate_floating_ips = False
    cloud = OpenStackCloud(config)
    try:
        vm = cloud.wait_until_active(cloud.create_vm(job_request(tenant, 2)).id)
        port = admin.network.get_port(admin.compute.get_server(vm.id).metadata[META_PORT_ID])

        assert vm.address == port.fixed_ips[0]["ip_address"]
        assert ipaddress.ip_address(vm.address) in ipaddress.ip_network(tenant.cidr)
        assert vm.volume_ids == []
        cloud.delete_vm(vm.id)
        assert gone(admin, "server", vm.id) and gone(admin, "port", port.id)
    finally:
        cloud.close()


def test_a_server_nova_cannot_place_fails_with_novas_fault_and_deletes_cleanly(
        cloud: OpenStackCloud, tenant: Tenant, admin: Any):
    tenant.set_quotas(compute={"ram": -1})
    request = job_request(tenant, 3, flavor=tenant.huge_flavor, volume_size=1)
    try:
        vm = cloud.create_vm(request)
    except VmFailed as e:  # Nova may have given up before the driver's first look
        assert "No valid host was found" in str(e)
    else:
        server = admin.compute.get_server(vm.id)
        ids = resources_of(admin, server)
        with pytest.raises(VmFailed, match="went to ERROR: No valid host was found"):
            cloud.wait_until_active(vm.id)
        info = cloud.get_vm(vm.id)
        assert info.status == "ERROR" and "No valid host was found" in info.fault
        cloud.delete_vm(vm.id)
        assert_all_gone(admin, ids)
    assert tenant.leftovers() == []


# ---- quotas -------------------------------------------------------------------------------------------------

def test_a_full_instance_quota_makes_the_job_wait_with_novas_numbers_and_undoes_its_volume_port_and_ip(
        cloud: OpenStackCloud, tenant: Tenant, admin: Any, monkeypatch: pytest.MonkeyPatch):
    tenant.set_quotas(compute={"instances": 1})
    first = cloud.create_vm(job_request(tenant, 4))
    try:
        with pytest.raises(QuotaExceeded, match="^waiting for quota: instances 1 of 1 in use$"):
            cloud.create_vm(job_request(tenant, 5, volume_size=1))  # the driver's own look at the limits
        # another creator may take the last place between that look and the create: Nova's 403 then
        monkeypatch.setattr(cloud._home, "_check_quota", lambda *args: None)
        with pytest.raises(QuotaExceeded, match="^waiting for quota: instances 1 of 1$"):
            cloud.create_vm(job_request(tenant, 5, volume_size=1))
        assert [s.id for s in admin.compute.servers(all_projects=True, project_id=tenant.projects[tenant.project])
                ] == [first.id]
    finally:
        cloud.delete_vm(first.id)
    assert tenant.leftovers() == []


def test_full_volume_quotas_are_cinders_413_read_as_a_waiting_reason(
        cloud: OpenStackCloud, tenant: Tenant, monkeypatch: pytest.MonkeyPatch):
    tenant.set_quotas(volume={"volumes": 0})
    with pytest.raises(QuotaExceeded, match="^waiting for quota: volumes 0 of 0 in use$"):
        cloud.create_vm(job_request(tenant, 6, volume_size=1))
    monkeypatch.setattr(cloud._home, "_check_quota", lambda *args: None)
    with pytest.raises(QuotaExceeded, match="^waiting for quota: volumes 0 of 0$"):
        cloud.create_vm(job_request(tenant, 6, volume_size=1))
    tenant.set_quotas(volume={"volumes": 5, "gigabytes": 2})
    with pytest.raises(QuotaExceeded, match=r"^waiting for quota: volume gigabytes 0 of 2 \(3 more needed\)$"):
        cloud.create_vm(job_request(tenant, 6, volume_size=3))
    assert tenant.leftovers() == []


@pytest.mark.parametrize(("quota", "reason"), [("floatingip", "floatingip"), ("port", "port")])
def test_a_full_neutron_quota_makes_the_job_wait_and_undoes_what_was_made(
        cloud: OpenStackCloud, tenant: Tenant, quota: str, reason: str):
    tenant.set_quotas(network={quota: 0})
    with pytest.raises(QuotaExceeded, match=f"^waiting for quota: {reason} \\(none left\\)$"):
        cloud.create_vm(job_request(tenant, 7, volume_size=1))
    assert tenant.leftovers() == []


# ---- the sweep ----------------------------------------------------------------------------------------------

def test_the_sweep_deletes_vms_no_job_owns_and_the_volume_port_and_ip_a_deleted_server_left(
        config: Config, cloud: OpenStackCloud, tenant: Tenant, admin: Any):
    # tagged as the pipeline tags them: this installation's id and its data dir's token
    orphan = cloud.create_vm(job_request(tenant, 8, volume_size=1, metadata={**ours(config), META_JOB_ID: "8"}))
    behind = cloud.create_vm(job_request(tenant, 9, volume_size=1, metadata={**ours(config), META_JOB_ID: "9"}))
    other = cloud.create_vm(job_request(tenant, 10, metadata={
        META_MANAGED_BY: "lando-ssh", META_INSTALLATION: f"{tenant.prefix}-other", META_JOB_ID: "10"}))
    try:
        orphan_ids = resources_of(admin, admin.compute.get_server(orphan.id))
        behind_ids = resources_of(admin, admin.compute.get_server(behind.id))
        admin.compute.delete_server(behind.id)  # deleted behind lando-ssh's back: its volume, port, IP stay
        wait_for(lambda: gone(admin, "server", behind.id), f"server {behind.id} deleted")

        swept = sweep(config, cloud, NoJobs(), grace=0)

        assert sorted((s.kind, s.deleted) for s in swept) == [
            ("floating ip", True), ("port", True), ("vm", True), ("volume", True)]
        assert next(s for s in swept if s.kind == "vm").why == "job 8 is not in the job store"
        assert all(s.why == f"its server {behind.id} is gone" for s in swept if s.kind != "vm")
        assert_all_gone(admin, orphan_ids)
        assert_all_gone(admin, behind_ids)
        assert cloud.get_vm(other.id) is not None  # another installation's: never touched
    finally:
        cloud.delete_vm(other.id)
    assert tenant.leftovers() == []


# ---- projects and credentials -------------------------------------------------------------------------------

def test_a_vm_in_a_second_project_is_made_there_and_found_by_a_restarted_driver(
        config: Config, tenant: Tenant, admin: Any):
    cloud = OpenStackCloud(config)
    other = tenant.other_project
    # a network of the second project's own (no router: the VM has no floating IP there)
    network = admin.network.create_network(name=f"{tenant.prefix}-net-b", project_id=tenant.projects[other])
    subnet = admin.network.create_subnet(network_id=network.id, project_id=tenant.projects[other], ip_version=4,
                                         cidr="10.252.0.0/24")
    try:
        request = job_request(tenant, 11, project=other, network=network.name, allocate_floating_ip=False)
        vm = cloud.wait_until_active(cloud.create_vm(request).id)
        project, _, server_id = vm.id.rpartition("/")

        assert project == other and vm.project == other
        assert admin.compute.get_server(server_id).project_id == tenant.projects[other]
        restarted = OpenStackCloud(config)
        try:
            assert [v.id for v in restarted.find_vms(request.metadata)] == [vm.id]
            assert restarted.get_vm(vm.id).status == "ACTIVE"
            restarted.delete_vm(vm.id)
        finally:
            restarted.close()
        assert gone(admin, "server", server_id)
        with pytest.raises(CloudError, match="refused .*HTTP 401.*no role in it"):
            cloud.create_vm(job_request(tenant, 12, project="admin"))
    finally:
        cloud.close()
        wait_for(lambda: not list(admin.network.ports(network_id=network.id)), "the second project's ports gone")
        admin.network.delete_subnet(subnet)
        admin.network.delete_network(network)
    assert tenant.leftovers() == []


def test_an_application_credential_works_in_its_own_project_and_refuses_another(
        config: Config, tenant: Tenant, admin: Any):
    user = connect(**tenant.user_auth())
    credential = user.identity.create_application_credential(user=tenant.user_id, name=f"{tenant.prefix}-app")
    settings = config.cloud_settings
    settings.username = settings.password = settings.project_name = None
    settings.application_credential_id, settings.application_credential_secret = credential.id, credential.secret
    try:
        cloud = OpenStackCloud(config)
        try:
            vm = cloud.wait_until_active(cloud.create_vm(job_request(tenant, 13)).id)
            assert admin.compute.get_server(vm.id).project_id == tenant.projects[tenant.project]
            cloud.delete_vm(vm.id)
            assert gone(admin, "server", vm.id)
            with pytest.raises(CloudError, match="application credential is bound to the one project"):
                cloud.create_vm(job_request(tenant, 14, project=tenant.other_project))
        finally:
            cloud.close()
    finally:
        user.identity.delete_application_credential(tenant.user_id, credential)
        user.close()
    assert tenant.leftovers() == []


# ---- lando-ssh cloud-check ----------------------------------------------------------------------------------

def openstack_settings(tenant: Tenant, project: str, **kw: Any) -> dict[str, Any]:
    return {"auth_url": tenant.user_auth()["auth_url"], "username": tenant.user, "password": tenant.password,
            "project_name": project, "api_retry_delay": 0.5, "api_poll_interval": 0.5, **kw}


def test_cloud_check_names_a_missing_image_network_and_quota_in_one_sentence_each(lando: Any, tenant: Tenant):
    tenant.set_quotas(tenant.other_project, compute={"instances": 0})  # and the second project has no network
    lando.write_config(cloud={"driver": "openstack", "installation_id": tenant.prefix},
                       cloud_settings=openstack_settings(tenant, tenant.other_project),
                       vm={"image": IMAGE, "volume_size": 0})
    try:
        proc = lando.cli("cloud-check", "--image", "no-such-image", "--flavor", FLAVOR, "--json", timeout=120)
    finally:
        tenant.reset_quotas()

    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["missing"] == [
        f"image 'no-such-image' does not exist; images: {IMAGE}",
        "the project sees no networks; create one, or set cloud_settings.network_name to one it may use",
        f"the quota has no room for one {FLAVOR} VM: instances 0 of 0 in use"]
    assert "Traceback" not in proc.stderr
    assert tenant.leftovers() == []


def guest_settings(tenant: Tenant, tmp_path: Path, **vm: Any) -> dict[str, Any]:
    """A lando config on the tenant's network with floating IPs, whose VMs are the real guests (root logs in; the
    work dirs are apart under tmp_path, since the guests share this machine's filesystem)."""
    return {"cloud": {"driver": "openstack", "installation_id": tenant.prefix},
            "cloud_settings": openstack_settings(tenant, tenant.project, network_name=tenant.network,
                                                 allocate_floating_ips=True, floating_ip_pool_name=POOL),
            "vm": {"image": IMAGE, "flavor": FLAVOR, "volume_size": 1, "boot_timeout": 120, "ssh_timeout": 60,
                   "user": "root", "work_dir": str(tmp_path / "vm-disks" / "{vm_name}"), **vm},
            "cwl_base_command": ["cwltool", "--no-container"]}


def test_cloud_check_boots_a_server_with_volume_and_floating_ip_reaches_it_over_ssh_and_deletes_it(
        lando: Any, tenant: Tenant, tmp_path: Path):
    lando.write_config(**guest_settings(tenant, tmp_path))

    proc = lando.cli("cloud-check", "--json", timeout=300)

    report = json.loads(proc.stdout)
    phases = {p["name"]: p for p in report["phases"]}
    assert proc.returncode == 0 and report["ok"] is True and report["missing"] == [], proc.stdout + proc.stderr
    assert phases["choose the smallest allowed flavor"]["detail"].startswith(f"{FLAVOR} (1 vCPUs, 512 MB RAM)")
    assert phases["find the image, network and quota a job needs"]["detail"] == f"image {IMAGE}"
    assert re.fullmatch(r".* at 203\.0\.113\.\d+:22, host key ssh-ed25519 pinned",
                        phases["boot the VM and wait for SSH"]["detail"])  # the floating IP, the console's key
    assert phases["uname -a"]["detail"].startswith("Linux ")
    assert phases["cwltool --version"]["ok"] and phases["delete the VM"]["ok"]
    assert tenant.leftovers() == []


# ---- whole jobs on real guests ------------------------------------------------------------------------------

def servers_made_for(admin: Any, tenant: Tenant, job_id: int) -> list[str]:
    """Every server (deleted ones too) Nova has made in the tenant's project for the job."""
    return sorted(s.id for s in admin.compute.servers(all_projects=True, deleted=True,
                                                        project_id=tenant.projects[tenant.project])
                  if s.name.startswith(f"{tenant.prefix}-job-{job_id}-")) + sorted(
        s.id for s in admin.compute.servers(all_projects=True, project_id=tenant.projects[tenant.project])
        if s.name.startswith(f"{tenant.prefix}-job-{job_id}-"))


def daemon_runs_a_sleep(lando: Any, daemon: Daemon, tenant: Tenant, tmp_path: Path, seconds: int) -> tuple[int, Any]:
    """A job that sleeps `seconds` on a real guest, started through the daemon: its id, and its record once its
    workflow runs."""
    lando.settings.update(guest_settings(tenant, tmp_path))
    lando.write_config()
    order = tmp_path / "sleep.yml"
    order.write_text(f"seconds: {seconds}\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    daemon.start()
    send(lando, "start_job", job_id)
    running = wait_job(lando, job_id, lambda j: j.run.run_pid is not None or finished(j), timeout=300, daemon=daemon)
    assert running.state.value == "R", running.reason
    return job_id, running


def test_a_job_runs_to_F_on_a_real_guest_and_a_daemon_killed_mid_job_adopts_its_server(
        lando: Any, daemon: Daemon, tenant: Tenant, admin: Any, tmp_path: Path):
    job_id, running = daemon_runs_a_sleep(lando, daemon, tenant, tmp_path, 6)
    server = admin.compute.get_server(running.vm.id)
    fip = admin.network.get_ip(server.metadata[META_FLOATING_IP_ID])
    volume = admin.block_storage.get_volume(server.metadata[META_VOLUME_ID])

    daemon.stop(signal.SIGKILL)
    daemon.start()
    job = wait_job(lando, job_id, finished, timeout=300, daemon=daemon)

    assert job.state.value == "F", job.reason
    assert (Path(job.output_dir) / "done.txt").read_text() == "done\n"
    assert running.vm.address == fip.floating_ip_address and volume.status == "in-use"
    assert job.vm.id == server.id and servers_made_for(admin, tenant, job_id) == [server.id]  # adopted, not remade
    assert job.vm.deleted and gone(admin, "server", server.id) and gone(admin, "volume", volume.id)
    assert tenant.leftovers() == []


# ---- the fake (tests/openstack_api) answers as the real services do --------------------------------------------

#: what Nova (Zed, microversion 2.93), Neutron and Cinder show a project member of each resource
SERVER_KEYS = {
    "OS-DCF:diskConfig", "OS-EXT-AZ:availability_zone", "OS-EXT-SRV-ATTR:hostname", "OS-EXT-STS:power_state",
    "OS-EXT-STS:task_state", "OS-EXT-STS:vm_state", "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at",
    "accessIPv4", "accessIPv6", "addresses", "config_drive", "created", "description", "flavor", "hostId", "id",
    "image", "key_name", "links", "locked", "locked_reason", "metadata", "name",
    "os-extended-volumes:volumes_attached", "progress", "security_groups", "server_groups", "status", "tags",
    "tenant_id", "trusted_image_certificates", "updated", "user_id"}
PORT_KEYS = {
    "admin_state_up", "allowed_address_pairs", "binding:vnic_type", "created_at", "description", "device_id",
    "device_owner", "extra_dhcp_opts", "fixed_ips", "id", "mac_address", "name", "network_id",
    "port_security_enabled", "project_id", "revision_number", "security_groups", "status", "tags", "tenant_id",
    "updated_at"}
FLOATING_IP_KEYS = {
    "created_at", "description", "fixed_ip_address", "floating_ip_address", "floating_network_id", "id",
    "port_details", "port_id", "project_id", "revision_number", "router_id", "status", "tags", "tenant_id",
    "updated_at"}
VOLUME_KEYS = {
    "attachments", "availability_zone", "bootable", "consistencygroup_id", "consumes_quota", "created_at",
    "description", "encrypted", "group_id", "id", "links", "metadata", "multiattach", "name",
    "os-vol-tenant-attr:tenant_id", "replication_status", "service_uuid", "shared_targets", "size", "snapshot_id",
    "source_volid", "status", "updated_at", "user_id", "volume_type", "volume_type_id"}


@dataclass
class Side:
    """One of the two clouds the same assertions run against, seen by a project member."""

    conn: Any
    flavor: str
    image: str
    network: str
    external: str
    set_quota: Callable[[str, int], None]  # quota name (Nova, Cinder or Neutron's) -> limit


@pytest.fixture(params=["fake", "real"])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    if request.param == "fake":
        service = running_service(compute_microversion="2.93")  # Zed's newest, as the real one
        names = {"instances": "max_instances", "volumes": "max_volumes", "port": "max_ports",
                 "floatingip": "max_floating_ips"}
        conn = connect(auth_url=service.auth_url, username="lando", password="secret", project_name="lando",
                       user_domain_name="Default", project_domain_name="Default")
        ids = {n["name"]: n["id"] for n in service.cloud.networks()}
        yield Side(conn, "1", service.cloud.image_ids["debian-12"], ids["private"], ids["public"],
                   lambda name, limit: setattr(service.cloud.settings, names[name], limit))
        conn.close()
        service.stop()
        return
    tenant: Tenant = request.getfixturevalue("tenant")
    conn = connect(**tenant.user_auth())
    services = {"instances": "compute", "volumes": "volume", "port": "network", "floatingip": "network"}
    networks = {n.name: n.id for n in conn.network.networks()}
    yield Side(conn, next(f.id for f in conn.compute.flavors() if f.name == FLAVOR),
               next(i.id for i in conn.image.images() if i.name == IMAGE), networks[tenant.network], networks[POOL],
               lambda name, limit: tenant.set_quotas(**{services[name]: {name: limit}}))
    conn.close()
    tenant.reset_quotas()


def answer(call: Callable[[], Any]) -> tuple[int, Any]:
    """The HTTP status and JSON body of a refused call."""
    with pytest.raises(os_exc.HttpException) as refused:
        call()
    return refused.value.status_code, refused.value.response.json()


def test_both_refuse_an_unknown_flavor_and_image_with_novas_400_bodies(side: Side):
    compute = side.conn.compute
    missing = str(uuid.uuid4())

    assert answer(lambda: compute.create_server(name="x", flavor_id="no-such-flavor", image_id=side.image,
                                                networks="none")) == (
        400, {"badRequest": {"code": 400, "message": "Flavor no-such-flavor could not be found."}})
    assert answer(lambda: compute.create_server(name="x", flavor_id=side.flavor, image_id="no-such-image",
                                                networks="none")) == (
        400, {"badRequest": {"code": 400, "message": "Invalid input for field/attribute imageRef. Value: "
                             "no-such-image. 'no-such-image' is not valid under any of the given schemas"}})
    assert answer(lambda: compute.create_server(name="x", flavor_id=side.flavor, image_id=missing,
                                                networks="none")) == (
        400, {"badRequest": {"code": 400, "message": "Can not find requested image"}})
    assert answer(lambda: compute.create_server(name="x", flavor_id=side.flavor, image_id=side.image,
                                                networks="none", key_name="no-such-key")) == (
        400, {"badRequest": {"code": 400, "message": "Invalid key_name provided."}})


def test_both_answer_404_with_each_services_body_for_what_does_not_exist(side: Side):
    c, missing = side.conn, str(uuid.uuid4())

    assert answer(lambda: c.compute.get_server(missing)) == (
        404, {"itemNotFound": {"code": 404, "message": f"Instance {missing} could not be found."}})
    assert answer(lambda: c.compute.get_server_console_output(missing)) == (
        404, {"itemNotFound": {"code": 404, "message": f"Instance {missing} could not be found."}})
    assert answer(lambda: c.block_storage.get_volume(missing)) == (
        404, {"itemNotFound": {"code": 404, "message": f"Volume {missing} could not be found."}})
    assert answer(lambda: c.network.get_port(missing)) == (
        404, {"NeutronError": {"type": "PortNotFound", "message": f"Port {missing} could not be found.", "detail": ""}})
    assert answer(lambda: c.network.get_ip(missing)) == (
        404, {"NeutronError": {"type": "FloatingIPNotFound", "message": f"Floating IP {missing} could not be found",
                               "detail": ""}})


def test_both_refuse_over_quota_with_novas_403_cinders_413_and_neutrons_409(side: Side):
    c = side.conn
    for name in ("instances", "volumes", "port", "floatingip"):
        side.set_quota(name, 0)

    assert answer(lambda: c.compute.create_server(name="x", flavor_id=side.flavor, image_id=side.image,
                                                  networks="none")) == (
        403, {"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 0 "
                            "of 0 instances"}})
    assert answer(lambda: c.block_storage.create_volume(size=1, name="x")) == (
        413, {"overLimit": {"code": 413, "message": "VolumeLimitExceeded: Maximum number of volumes allowed (0) "
                            "exceeded for quota 'volumes'.", "retryAfter": "0"}})
    assert answer(lambda: c.network.create_port(network_id=side.network)) == (
        409, {"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].",
                               "detail": ""}})
    assert answer(lambda: c.network.create_ip(floating_network_id=side.external)) == (
        409, {"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['floatingip'].",
                               "detail": ""}})


def test_both_show_and_filter_servers_ports_floating_ips_and_volumes_alike(side: Side):
    c = side.conn
    port = c.network.create_port(network_id=side.network, name="parity-port")
    made: list[tuple[str, Any]] = [("port", port)]
    try:
        c.network.set_tags(port, ["a=1", "b=2"])
        fip = c.network.create_ip(floating_network_id=side.external, port_id=port.id)
        made.append(("floating_ip", fip))
        volume = c.block_storage.create_volume(size=1, name="parity-volume", metadata={"k": "v"})
        made.append(("volume", volume))
        server = c.compute.create_server(name="parity-server", flavor_id=side.flavor, image_id=side.image,
                                         networks=[{"port": port.id}], metadata={"m": "1"},
                                         user_data=base64.b64encode(b"#!/bin/sh\n").decode())
        made.append(("server", server))
        c.compute.wait_for_server(server, interval=0.5, wait=180)
        version = c.compute.get_endpoint_data().max_microversion
        shown = c.compute.get(f"/servers/{server.id}", microversion=f"{version[0]}.{version[1]}").json()["server"]

        assert set(shown) == SERVER_KEYS  # no user_data: Nova shows it to admins only
        assert set(c.network.get(f"/ports/{port.id}").json()["port"]) == PORT_KEYS
        assert set(c.network.get(f"/floatingips/{fip.id}").json()["floatingip"]) == FLOATING_IP_KEYS
        assert set(c.block_storage.get(f"/volumes/{volume.id}", microversion="3.70").json()["volume"]) == VOLUME_KEYS
        assert VOLUME_KEYS - set(c.block_storage.get(f"/volumes/{volume.id}", microversion="3.0").json()["volume"]) \
            == {"group_id", "service_uuid", "shared_targets", "volume_type_id", "consumes_quota"}
        assert shown["metadata"] == {"m": "1"} and shown["flavor"]["original_name"] == "m1.tiny"
        assert [p.id for p in c.network.ports(tags="a=1,b=2")] == [port.id]  # every tag must match
        assert list(c.network.ports(tags="a=1,b=3")) == []
        assert [s.id for s in c.compute.servers(name="^parity-server$")] == [server.id]  # a regular expression
        assert [s.id for s in c.compute.servers(name="rity-ser")] == [server.id]
        assert [v.id for v in c.block_storage.volumes(name="parity-volume")] == [volume.id]
        assert list(c.block_storage.volumes(metadata={"k": "v"})) == []  # openstacksdk's metadata query matches none
    finally:
        for kind, resource in reversed(made):
            if kind == "server":
                c.compute.delete_server(resource)
                c.compute.wait_for_delete(resource, interval=0.5, wait=180)
            elif kind == "volume":
                c.block_storage.wait_for_status(resource, "available", interval=0.5, wait=120)
                c.block_storage.delete_volume(resource)
                c.block_storage.wait_for_delete(resource, interval=0.5, wait=120)
            elif kind == "floating_ip":
                c.network.delete_ip(resource)
            else:
                c.network.delete_port(resource)


# ---- faults the real services make ------------------------------------------------------------------------------

@pytest.mark.parametrize(("volume_size", "quota", "reason", "then_runs"), [
    (0, {"compute": {"instances": 0}}, "waiting for quota: instances 0 of 0 in use", True),
    (1, {"volume": {"volumes": 0}}, "waiting for quota: volumes 0 of 0 in use", False)])
def test_a_job_waits_in_S_with_the_reason_while_the_real_quota_is_full_and_runs_when_it_has_room(
        lando: Any, tenant: Tenant, tmp_path: Path, volume_size: int, quota: dict[str, dict[str, int]], reason: str,
        then_runs: bool):
    tenant.set_quotas(**quota)
    lando.write_config(**guest_settings(tenant, tmp_path, volume_size=volume_size))
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")
    proc = lando.popen("job", str(job_id))
    try:
        job = lando.wait_for(job_id, lambda j: "quota" in (j.get("reason") or ""), timeout=120)
        assert (job["state"], job["reason"]) == ("S", reason)
        assert tenant.leftovers() == []  # nothing made while it waits
        assert proc.poll() is None  # still waiting, not failed
        if then_runs:  # (the volume case stops here: a second whole job would add a minute to CI)
            tenant.reset_quotas()
            assert proc.wait(timeout=300) == 0, proc.communicate()[1][-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=60)
    job = lando.status(job_id)
    if then_runs:
        assert (job["state"], job["reason"]) == ("F", "") and job["vm"]["deleted"]
    else:
        assert job["state"] == "C"  # `lando-ssh job` cancels its job on SIGTERM
    assert tenant.leftovers() == []


def test_a_job_whose_server_nova_puts_in_error_ends_E_with_novas_fault_and_leaves_nothing(
        lando: Any, tenant: Tenant):
    tenant.set_quotas(compute={"ram": -1})
    lando.write_config(cloud={"driver": "openstack", "installation_id": tenant.prefix},
                       cloud_settings=openstack_settings(tenant, tenant.project, network_name=tenant.network,
                                                         allocate_floating_ips=True, floating_ip_pool_name=POOL),
                       vm={"image": IMAGE, "flavor": tenant.huge_flavor, "volume_size": 1, "boot_retries": 0})
    job_id = lando.submit(WORKFLOWS / "no_inputs.cwl")

    proc = lando.cli("job", str(job_id), timeout=300)

    job = lando.status(job_id)
    assert proc.returncode == 1 and job["state"] == "E", proc.stderr
    assert "No valid host was found" in job["error"]  # Nova's fault
    assert tenant.leftovers() == []  # the server, its volume, port and floating IP are deleted


def test_a_job_lives_through_keystone_going_down(lando: Any, daemon: Daemon, tenant: Tenant, tmp_path: Path):
    job_id, running = daemon_runs_a_sleep(lando, daemon, tenant, tmp_path, 4)

    with RealOpenStack.down("keystone"):  # only this stack's keystone; started again after the block
        with pytest.raises(os_exc.SDKException):  # Keystone is down: no new login
            connect(**tenant.user_auth()).authorize()
        # Nova, Neutron and Cinder accept the token they have seen: the job ends and its VM is deleted meanwhile
        job = wait_job(lando, job_id, finished, timeout=300, daemon=daemon)

    assert job.state.value == "F" and job.vm.deleted, job.reason
    assert (Path(job.output_dir) / "done.txt").read_text() == "done\n"
    assert daemon.alive() and tenant.leftovers() == []


def test_a_delete_nova_refuses_is_recorded_on_the_job_and_the_sweep_retries_it(
        lando: Any, tenant: Tenant, admin: Any, tmp_path: Path):
    lando.write_config(**guest_settings(tenant, tmp_path))
    order = tmp_path / "sleep.yml"
    order.write_text("seconds: 3\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    proc = lando.popen("job", str(job_id))
    try:
        running = wait_job(lando, job_id, lambda j: j.run.run_pid is not None or finished(j), timeout=300)
        assert running.state.value == "R", running.reason
        admin.compute.lock_server(running.vm.id)  # the admin locks it: Nova refuses the member's delete (409)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=60)
    job = store_job(lando, job_id)
    server = admin.compute.get_server(running.vm.id)
    ids = resources_of(admin, server)

    assert job.state.value == "F", job.reason
    assert re.search(f"could not delete VM {server.id}: .*Instance {server.id} is locked",
                     job.run.vm_delete_error), job.run
    assert server.status == "ACTIVE"  # kept, with its volume, port and floating IP
    admin.compute.unlock_server(server)
    swept = lando.cli("sweep", "--grace", "0", "--json", timeout=300)
    assert swept.returncode == 0, swept.stderr
    assert {item["kind"] for item in json.loads(swept.stdout) if item["deleted"]} >= {"vm"}
    assert_all_gone(admin, ids)
    assert tenant.leftovers() == []
