"""The pool's config keys: defaults, values from the file and the environment, and one sentence for a bad one."""
from __future__ import annotations

from pathlib import Path

import pytest

from lando_ssh.config import load_config
from lando_ssh.errors import ConfigError
from lando_ssh.pool.policy import PoolPolicy, Share


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lando.yml"
    path.write_text(text)
    return str(path)


def test_the_defaults_are_one_vm_per_job_and_once_turned_on_packing_and_two_minutes_of_keepalive() -> None:
    config = load_config(None, env={})
    assert (config.pool.share, config.pool.pack, config.vm.keepalive) == ("job", True, 120.0)
    assert PoolPolicy.from_config(config) == PoolPolicy() == PoolPolicy(Share.JOB, True, 120.0)


def test_the_pool_keys_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = config_file(tmp_path, "pool:\n  share: project\n  pack: false\nvm:\n  keepalive: 0\n")
    assert PoolPolicy.from_config(load_config(path, env={})) == PoolPolicy(Share.PROJECT, False, 0.0)
    env = {"LANDO_POOL__SHARE": "any", "LANDO_VM__KEEPALIVE": "600"}
    assert PoolPolicy.from_config(load_config(path, env=env)) == PoolPolicy(Share.ANY, False, 600.0)


@pytest.mark.parametrize(("text", "message"), [
    ("pool:\n  share: team\n", "pool.share must be one of job, owner, project, any (which jobs may share a VM), "
                               "not 'team'"),
    ("vm:\n  keepalive: -5\n", "vm.keepalive is the seconds an idle pool VM is kept for the next job: 0 or more, "
                               "not -5"),
    ("pool:\n  pack: sometimes\n", "pool.pack must be true or false, not str 'sometimes'"),
    ("pool:\n  size: 3\n", "unknown key pool.size"),
])
def test_a_bad_pool_key_is_one_sentence_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value) == f"{path}: {message}"


def test_a_bad_value_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env={"LANDO_POOL__SHARE": "team"})
    assert str(e.value).startswith("LANDO_POOL__SHARE (environment): pool.share must be one of job, owner")
