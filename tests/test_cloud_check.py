"""`lando-ssh cloud-check` on the local cloud and through the OpenStack driver (local API service)."""
from __future__ import annotations

import json

from conftest import Lando
from test_openstack_driver import EMPTY, use_openstack

pytest_plugins = ["openstack_api.fixtures"]


def test_cloud_check_boots_runs_uname_and_cwltool_and_deletes_the_vm(lando: Lando):
    proc = lando.cli("cloud-check")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert [line.split("s  ", 1)[1].split(":")[0] for line in lines[:-1]] == [
        "connect to the cloud", "choose the smallest allowed flavor", "find the image, network and quota a job needs",
        "boot the VM and wait for SSH", "uname -a", "cwltool --version", "delete the VM"]
    assert all(line.startswith("ok") for line in lines[:-1])
    assert "m1.small" in proc.stdout and "Linux" in proc.stdout and "cwltool" in proc.stdout
    assert lines[-1].startswith("cloud-check passed in")
    assert lando.vm_dirs() == []


def test_cloud_check_honours_the_flavor_allow_list(lando: Lando):
    lando.write_config(flavors={"allow": "m1\\.(medium|large)"})
    proc = lando.cli("cloud-check")
    assert proc.returncode == 0, proc.stderr
    assert "m1.medium (2 vCPUs" in proc.stdout


def test_cloud_check_boots_the_flavor_named_and_reports_in_json(lando: Lando):
    proc = lando.cli("cloud-check", "--flavor", "m1.large", "--image", "local", "--json")

    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["missing"] == []
    assert [p["name"] for p in report["phases"]][1:3] == ["find flavor m1.large",
                                                          "find the image, network and quota a job needs"]
    assert all(p["ok"] for p in report["phases"]) and "m1.large (4 vCPUs" in report["phases"][1]["detail"]
    assert lando.vm_dirs() == []


def test_cloud_check_names_a_missing_image_or_flavor_in_one_sentence_and_in_json(lando: Lando):
    image = lando.cli("cloud-check", "--image", "no-such-image")
    flavor = lando.cli("cloud-check", "--flavor", "m9.huge", "--json")

    assert image.returncode == 3 and "Traceback" not in image.stderr
    assert "FAIL" in image.stdout and "image 'no-such-image' does not exist; images: local" in image.stdout
    assert flavor.returncode == 3
    report = json.loads(flavor.stdout)
    assert report["ok"] is False
    assert report["missing"] == ["flavor 'm9.huge' does not exist; flavors: m1.small, m1.medium, m1.large"]
    assert "flavor 'm9.huge' does not exist" in flavor.stderr
    assert lando.vm_dirs() == []


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
