"""A local service answering the OpenStack REST APIs (Keystone, Nova, Glance, Neutron, Cinder).

The OpenStack driver is tested against it, so the real openstacksdk code paths run. Start
it in a test with `OpenStackApiService(settings).start()` (or the fixtures in
`tests/openstack_api/fixtures.py`), or stand-alone with
`python -m tests.openstack_api --port 8774 [--local-vms]`.
"""
from .backends import SSH_PORT_METADATA, LocalBackend, MemoryBackend, ServerBackend
from .service import OpenStackApiService, Settings

__all__ = ["SSH_PORT_METADATA", "LocalBackend", "MemoryBackend", "OpenStackApiService", "ServerBackend", "Settings"]
