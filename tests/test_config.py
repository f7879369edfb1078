"""The config file: lando's keys, strict validation naming the file and the key, env overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from lando_ssh.config import load_config
from lando_ssh.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lando.yml"
    path.write_text(text)
    return str(path)


def test_built_in_defaults_need_no_file(tmp_path: Path):
    config = load_config(None, env={"LANDO_DATA_DIR": str(tmp_path)})
    assert config.cloud.driver == "local"
    assert config.store_url == f"sqlite:///{tmp_path}/jobs.sqlite"
    assert config.limits.max_concurrent_jobs == 50


def test_a_lando_config_file_is_read_with_its_own_keys(tmp_path: Path):
    path = write(tmp_path, """
work_queue:
  host: rabbit.example.edu
  username: lando
  password: secret
  worker_username: lobot
  worker_password: secret2
  listen_queue: lando
vm_settings:
  worker_image_name: lando-worker
  ssh_key_name: gcb
  network_name: selfservice
  floating_ip_pool_name: public
  default_favor_name: m1.large
  cwl_base_command: "cwltool --cachedir /work/cache"
cloud_settings:
  auth_url: https://cloud.example.edu:5000/v3
  username: lando
  password: pw
  user_domain_name: Default
  project_name: bespin
  project_domain_name: Default
job_api:
  url: https://bespin.example.edu/api
  username: lando
  password: pw
fake_cloud_service: false
log_level: DEBUG
""")
    config = load_config(path, env={})
    assert config.cloud.driver == "openstack"
    assert config.work_queue.host == "rabbit.example.edu" and config.work_queue.listen_queue == "lando"
    assert (config.vm.image, config.vm.flavor) == ("lando-worker", "m1.large")
    assert config.cloud_settings.network_name == "selfservice"
    assert config.cloud_settings.floating_ip_pool_name == "public"
    assert config.cwl_base_command == ["cwltool", "--cachedir", "/work/cache"]
    assert config.bespin_api is not None and config.bespin_api.url == "https://bespin.example.edu/api"


@pytest.mark.parametrize(("text", "message"), [
    ("vm: {flavour: m1.small}\n", "unknown key vm.flavour"),
    ("bogus: 1\n", "unknown key bogus"),
    ("work_queue: {port: five}\n", "work_queue.port must be a whole number, not str 'five'"),
    ("limits: {max_run_time: [1]}\n", "limits.max_run_time must be a number"),
    ("keep_vm_on_error: maybe\n", "keep_vm_on_error must be true or false"),
    ("cloud: {driver: aws}\n", "cloud.driver must be 'local' or 'openstack'"),
    ("vm_settings: {colour: red}\n", "unknown key vm_settings.colour"),
    ("- a list\n", "the config must be a mapping"),
    ("vm: [1, 2]\n", "vm must be a mapping"),
    ("log_level: LOUD\n", "log_level must be one of"),
    ("flavors: {allow: '(unclosed'}\n", "flavors.allow is not a valid regular expression"),
    ("work_queue: {host: [unclosed\n", "not valid YAML"),
])
def test_a_wrong_key_or_type_is_an_error_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value).startswith(path) and message in str(e.value)


def test_a_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yml"):
        load_config(str(tmp_path / "nope.yml"), env={})


def test_environment_overrides_keys_at_both_levels(tmp_path: Path):
    path = write(tmp_path, "work_queue: {host: a}\nlimits: {max_vms: 3}\n")
    config = load_config(path, env={"LANDO_WORK_QUEUE__HOST": "b", "LANDO_LIMITS__MAX_VMS": "7",
                                    "LANDO_LOG_LEVEL": "WARNING"})
    assert (config.work_queue.host, config.limits.max_vms, config.log_level) == ("b", 7, "WARNING")
    # a wrong value from the environment names the variable it came from, not the file
    with pytest.raises(ConfigError, match=r"^LANDO_LIMITS__MAX_VMS \(environment\): limits.max_vms must be a whole"):
        load_config(path, env={"LANDO_LIMITS__MAX_VMS": "lots"})
    with pytest.raises(ConfigError, match=r"^LANDO_VM__FLAVOUR \(environment\): unknown key vm.flavour"):
        load_config(path, env={"LANDO_VM__FLAVOUR": "m1.small"})


def test_lando_config_env_names_the_file(tmp_path: Path):
    path = write(tmp_path, "log_level: ERROR\n")
    assert load_config(None, env={"LANDO_CONFIG": path}).log_level == "ERROR"


#: A complete lando 0.11.3 server config: every key lando/server/config.py reads (its own test's GOOD_CONFIG,
#: with fake_cloud_service and a log level as lando wrote it, Python's logging number).
LANDO_0_11_3 = """
fake_cloud_service: false
log_level: 10
work_queue:
  host: 10.109.253.74
  username: lando
  password: odnal
  worker_username: lobot
  worker_password: tobol
  listen_queue: lando
cloud_settings:
  auth_url: http://10.109.252.9:5000/v3
  username: jpb67
  user_domain_name: Default
  project_name: jpb67
  project_domain_name: Default
  password: secret
bespin_api:
  url: http://localhost:8000/api
  token: 10498124091240e
commands:
  stage_data_command: ["python", "-m", "lando_util.stagedata"]
  organize_output_command: ["python", "-m", "lando_util.organize_project"]
  save_output_command: ["python", "-m", "lando_util.upload"]
"""


def test_a_complete_lando_0_11_3_config_loads_unchanged_and_names_what_lando_ssh_does_not_use(tmp_path: Path):
    config = load_config(write(tmp_path, LANDO_0_11_3), env={})

    assert config.cloud.driver == "openstack"
    assert (config.work_queue.host, config.work_queue.username, config.work_queue.listen_queue) == \
        ("10.109.253.74", "lando", "lando")
    assert (config.cloud_settings.auth_url, config.cloud_settings.project_name) == \
        ("http://10.109.252.9:5000/v3", "jpb67")
    assert config.bespin_api is not None and config.bespin_api.token == "10498124091240e"
    assert config.log_level == "DEBUG"
    (unused,) = config.unused
    assert unused.startswith("commands (lando's worker commands") and "runs its own steps on the VM" in unused


def test_lando_keys_that_mean_nothing_here_are_listed_as_unused_and_lando_ssh_keys_stay_strict(tmp_path: Path):
    from lando_ssh.config import LANDO_UNUSED_KEYS

    text = "commands: {stage_data_command: [x]}\nstorage_class_name: fast\n"
    config = load_config(write(tmp_path, text), env={})
    assert [u.split(" ")[0] for u in config.unused] == ["commands", "storage_class_name"]
    assert set(LANDO_UNUSED_KEYS) >= {"commands", "cluster_api_settings", "data_store_settings"}
    with pytest.raises(ConfigError, match="unknown key unused"):
        load_config(write(tmp_path, "unused: [x]\n"), env={})
    with pytest.raises(ConfigError, match="log_level must be one of"):
        load_config(write(tmp_path, "log_level: 15\n"), env={})
