"""pytest fixtures for the local OpenStack API service. Use them from a test module:

    pytest_plugins = ["openstack_api.fixtures"]  # tests/ is on sys.path under pytest

`openstack_api` is a running service with fast timings and a memory backend (no sshd);
change `openstack_api.settings` in a test to turn on faults. `openstack_config` is a lando
`Config` whose `cloud_settings` point at it, with short retry and poll delays.
`local_openstack_api` backs every server by a local-cloud VM (real sshd).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lando_ssh.config import Config

from .backends import LocalBackend
from .helpers import config_for, running_service
from .service import OpenStackApiService


@pytest.fixture
def openstack_api() -> Iterator[OpenStackApiService]:
    service = running_service()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def openstack_config(openstack_api: OpenStackApiService, tmp_path: Path) -> Config:
    return config_for(openstack_api, tmp_path)


@pytest.fixture
def local_openstack_api(tmp_path: Path) -> Iterator[OpenStackApiService]:
    """The service with every server backed by a local-cloud VM (a real sshd on 127.0.0.1)."""
    vm_config = Config(data_dir=str(tmp_path / "vms"))
    service = running_service(LocalBackend(vm_config))
    try:
        yield service
    finally:
        service.stop()
