"""Cloud-init user data and the host keys cloud-init prints on the console (pure)."""
from __future__ import annotations

import yaml

from lando_ssh.cloud.cloudinit import (
    UserDataParams,
    host_keys_from_console,
    parse_user_data,
    render_user_data,
)
from lando_ssh.vmspec import volume_mounts

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHAgp6cAQpv2DrsnvaelZFJh8bp74fqFQvrTwLrE8F3Z lando-ssh-job-7"


def test_user_data_holds_the_job_key_and_prepares_the_work_dir_without_a_shell():
    text = render_user_data(UserDataParams(KEY, "ubuntu", "/work"))
    assert text.startswith("#cloud-config\n")
    doc = parse_user_data(text)
    assert doc["ssh_authorized_keys"] == [KEY]
    assert doc["ssh_pwauth"] is False and "fs_setup" not in doc
    assert doc["runcmd"] == [["mkdir", "-p", "/work"], ["chown", "ubuntu", "/work"], ["touch", "/work/.lando-ready"]]


def test_a_data_volume_is_formatted_and_mounted_and_a_partition_gets_a_table():
    whole = parse_user_data(render_user_data(UserDataParams(KEY, "ubuntu", "/work", volume_device="/dev/vdb")))
    assert whole["fs_setup"] == [{"label": "lando_work", "filesystem": "ext4", "device": "/dev/vdb"}]
    assert whole["mounts"] == [["LABEL=lando_work", "/work", "auto", "defaults,nofail", "0", "2"]]
    part = parse_user_data(render_user_data(UserDataParams(KEY, "ubuntu", "/data", volume_device="/dev/vdb1")))
    assert part["disk_setup"] == {"/dev/vdb": {"table_type": "gpt", "layout": True, "overwrite": False}}
    assert part["fs_setup"] == [{"label": "lando_work", "filesystem": "ext4", "device": "/dev/vdb", "partition": 1}]
    assert part["mounts"][0][1] == "/data"


def test_odd_paths_stay_data_in_the_yaml():
    odd = "/work/it's a \"dir\"; $(rm -rf /)"
    doc = parse_user_data(render_user_data(UserDataParams(KEY, "ubuntu", odd)))
    assert doc["runcmd"][0] == ["mkdir", "-p", odd]


def test_host_keys_are_read_from_the_last_block_cloud_init_printed():
    console = ("boot noise\n-----BEGIN SSH HOST KEY KEYS-----\nssh-rsa AAAAold\n-----END SSH HOST KEY KEYS-----\n"
               "more noise\n"
               "-----BEGIN SSH HOST KEY KEYS-----\n"
               "ecdsa-sha2-nistp256 AAAAE2VjZHNh root@vm\n"
               "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI root@vm\n"
               "not a key line\n"
               "-----END SSH HOST KEY KEYS-----\n")
    assert host_keys_from_console(console) == ["ecdsa-sha2-nistp256 AAAAE2VjZHNh",
                                               "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"]
    assert host_keys_from_console("no keys printed yet") == []
    assert host_keys_from_console("-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAA") == []  # not finished


def test_bespin_volume_mounts_are_read_as_device_and_mount_point():
    assert volume_mounts('{"/dev/vdb1": "/work"}') == [("/dev/vdb1", "/work")]
    assert volume_mounts({"/dev/vdc": "/data"}) == [("/dev/vdc", "/data")]
    for bad in (None, "", "not json", "[1]", {"vdb": "/work"}, {"/dev/vdb": "relative"}):
        assert volume_mounts(bad) == []


def test_the_rendered_document_is_plain_yaml():
    text = render_user_data(UserDataParams(KEY, "ubuntu", "/work", volume_device="/dev/vdb1"))
    assert isinstance(yaml.safe_load(text), dict)
