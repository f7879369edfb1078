"""The OpenStack driver against a real OpenStack (../shared/openstack: Keystone, Nova with the fake hypervisor and
the real quota driver, Neutron, Cinder, Glance; see tests/openstack_api/real.py). Each test works in projects
of this run's own, and every server, volume, floating IP and port it makes is deleted and checked gone."""
from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack.exceptions as os_exc
import pytest
from openstack_api.real import FLAVOR, IMAGE, POOL, RealOpenStack, Tenant, connect, wait_for

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, META_MANAGED_BY, VmRequest
from lando_ssh.cloud.openstack import META_FLOATING_IP_ID, META_PORT_ID, META_VM_ID, META_VOLUME_ID, OpenStackCloud
from lando_ssh.config import CloudSettings, Config
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded, UnknownJob, VmFailed
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
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)  # never a skip: CI must say the real cloud is missing
    yield real
    real.stop()


@pytest.fixture(scope="module")
def tenant(stack: RealOpenStack) -> Iterator[Tenant]:
    made = Tenant.make()
    yield made
    made.remove()


@pytest.fixture
def admin(tenant: Tenant) -> Any:
    return tenant.admin


@pytest.fixture
def config(tenant: Tenant, tmp_path: Path) -> Iterator[Config]:
    config = Config(data_dir=str(tmp_path / "data"))
    config.cloud.driver = "openstack"
    config.cloud.installation_id = tenant.prefix
    config.cloud_settings = CloudSettings(
        auth_url=tenant.user_auth()["auth_url"], username=tenant.user, password=tenant.password,
        project_name=tenant.project, network_name=tenant.network, security_groups=["default"],
        allocate_floating_ips=True, floating_ip_pool_name=POOL,
        api_retries=2, api_retry_delay=0.5, api_poll_interval=0.5, resource_timeout=120.0)
    config.vm.boot_timeout = 180.0
    yield config
    tenant.reset_quotas()


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
        config: Config, tenant: Tenant, admin: Any):
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
        assert "FAKE CONSOLE OUTPUT" in cloud.console_log(vm.id)  # the fake hypervisor's console
        assert [v.id for v in cloud.find_vms(request.metadata)] == [vm.id]
        assert cloud.get_vm(vm.id).status == "ACTIVE"
        assert cloud.quota().instances_used == 1
        assert cloud.create_vm(request).id == vm.id  # a resumed job finds its server, makes no second one

        cloud.delete_vm(vm.id)

        assert_all_gone(admin, ids)
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

        assert vm.address == port.fixed_ips[0]["ip_address"] and vm.address.startswith("10.251.0.")
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
    orphan = cloud.create_vm(job_request(tenant, 8, volume_size=1))
    behind = cloud.create_vm(job_request(tenant, 9, volume_size=1))
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
