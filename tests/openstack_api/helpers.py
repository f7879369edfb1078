"""Helpers for tests that use the local OpenStack API service (importable without pytest)."""
from __future__ import annotations

from pathlib import Path

from lando_ssh.config import CloudSettings, Config

from .backends import ServerBackend
from .service import OpenStackApiService, Settings


def fast_settings(**overrides: object) -> Settings:
    settings = Settings(boot_delay=0.1, volume_delay=0.02, delete_delay=0.02, seed=7)
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def config_for(service: OpenStackApiService, data_dir: Path, **cloud_settings: object) -> Config:
    """A Config using the openstack driver against `service`."""
    config = Config(data_dir=str(data_dir))
    config.cloud.driver = "openstack"
    config.cloud_settings = CloudSettings(
        auth_url=service.auth_url, username="lando", password="secret", project_name="lando",
        api_retries=4, api_retry_delay=0.01, api_poll_interval=0.05, resource_timeout=10.0)
    for key, value in cloud_settings.items():
        setattr(config.cloud_settings, key, value)
    config.vm.boot_timeout = 20.0
    return config


def running_service(backend: ServerBackend | None = None, **overrides: object) -> OpenStackApiService:
    return OpenStackApiService(fast_settings(**overrides), backend).start()
