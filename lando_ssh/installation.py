"""Which cloud resources are this installation's: its `cloud.installation_id` and a random token made once
in its data dir.

The id is the config's (readable: VM names begin with it), so two lando-ssh installations on one host or
in one OpenStack project may share it (the default is `lando-ssh`), and both count jobs from 1. The token
(`<data_dir>/installation-token`) tells them apart: every resource created carries it (the metadata
`lando_installation_token`; a local VM's processes carry it in LANDO_LOCAL_VM), and nothing is found,
deleted or killed whose token is another's.

Resources created before tokens existed (an upgrade) carry the id alone. They stay this installation's
where its job records name them: a resumed job reaches its VM by the recorded id, and the sweep deletes such
a VM only when its job's record names it (never for "no job names it", which could be another's).
"""
from __future__ import annotations

import functools
import os
import secrets

from lando_ssh.cloud import META_INSTALLATION, META_MANAGED_BY, META_TOKEN, Cloud, VmInfo
from lando_ssh.config import Config

TOKEN_FILE = "installation-token"  # noqa: S105 (not a secret: it tells installations apart)


@functools.lru_cache(maxsize=16)
def installation_token(data_dir: str) -> str:
    """The data dir's token, made on first use (two processes starting at once agree on one)."""
    path = os.path.join(os.path.abspath(data_dir), TOKEN_FILE)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    draft = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    with open(draft, "w") as f:
        f.write(secrets.token_hex(8) + "\n")
    try:
        os.link(draft, path)  # fails when another process made it first: then its token is the one
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)
    return _read(path)


def _read(path: str) -> str:
    with open(path) as f:
        token = f.read().strip()
    if not token.isalnum():
        from lando_ssh.errors import ConfigError

        raise ConfigError(f"{path} should hold this installation's token (letters and digits), not {token[:40]!r}; "
                          "remove it only when this data dir has no VMs, jobs or keys left")
    return token


def ours(config: Config) -> dict[str, str]:
    """The metadata every resource this installation creates carries."""
    return {**_installation(config), META_TOKEN: installation_token(config.data_dir)}


def _installation(config: Config) -> dict[str, str]:
    return {META_MANAGED_BY: "lando-ssh", META_INSTALLATION: config.cloud.installation_id}


def tagged_vms(config: Config, cloud: Cloud) -> tuple[list[VmInfo], list[VmInfo]]:
    """(this installation's VMs, VMs tagged with its id alone: made before tokens, by it or by another
    installation sharing the id). Another installation's VMs (another token) are in neither."""
    token = installation_token(config.data_dir)
    found = cloud.find_vms(_installation(config))
    mine = [v for v in found if v.metadata.get(META_TOKEN) == token]
    untokened = [v for v in found if META_TOKEN not in v.metadata]
    return mine, untokened


def is_anothers(config: Config, metadata: dict[str, str]) -> bool:
    """Whether a resource carries another installation's token (then nothing here may touch it)."""
    token = metadata.get(META_TOKEN)
    return token is not None and token != installation_token(config.data_dir)
