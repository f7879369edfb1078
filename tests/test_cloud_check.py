"""`lando-ssh cloud-check` on the local cloud and through the OpenStack driver (local API service)."""
from __future__ import annotations

from conftest import Lando
from test_openstack_driver import EMPTY, use_openstack

pytest_plugins = ["openstack_api.fixtures"]


def test_cloud_check_boots_runs_uname_and_cwltool_and_deletes_the_vm(lando: Lando):
    proc = lando.cli("cloud-check")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert [line.split("s  ", 1)[1].split(":")[0] for line in lines[:-1]] == [
        "connect to the cloud", "choose the smallest allowed flavor", "boot the VM and wait for SSH", "uname -a",
        "cwltool --version", "delete the VM"]
    assert all(line.startswith("ok") for line in lines[:-1])
    assert "m1.small" in proc.stdout and "Linux" in proc.stdout and "cwltool" in proc.stdout
    assert lines[-1].startswith("cloud-check passed in")
    assert lando.vm_dirs() == []


def test_cloud_check_honours_the_flavor_allow_list(lando: Lando):
    lando.write_config(flavors={"allow": "m1\\.(medium|large)"})
    proc = lando.cli("cloud-check")
    assert proc.returncode == 0, proc.stderr
    assert "m1.medium (2 vCPUs" in proc.stdout


def test_cloud_check_through_openstack_and_a_clear_failure_for_a_missing_image(lando: Lando, local_openstack_api,
                                                                              tmp_path):
    use_openstack(lando, local_openstack_api, tmp_path)
    ok = lando.cli("cloud-check", timeout=120)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert local_openstack_api.inventory() == EMPTY

    use_openstack(lando, local_openstack_api, tmp_path, image="no-such-image")
    bad = lando.cli("cloud-check", timeout=120)
    assert bad.returncode == 3
    assert "FAIL" in bad.stdout and "no-such-image" in bad.stderr and "Traceback" not in bad.stderr
    assert local_openstack_api.inventory() == EMPTY
