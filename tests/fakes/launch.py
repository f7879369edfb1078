"""`FakeLauncher`: the pool's cloud requests without keys or cloud-init; `crash_at` makes the server "die" (a
BaseException no handler catches) at a point of a boot, for the adoption tests."""
from __future__ import annotations

from lando_ssh.cloud import VmRequest
from lando_ssh.pool.launch import Launch, metadata
from lando_ssh.pool.model import PoolVm


class Crash(BaseException):
    """The server died here (kill -9): nothing after this point ran."""


class FakeLauncher:
    def __init__(self, tags: dict[str, str]):
        self.tags = tags
        self.crash_before_create = False  # the record is written, the cloud never asked

    def launch(self, vm: PoolVm) -> Launch:
        if self.crash_before_create:
            raise Crash(f"killed before asking the cloud for {vm.name}")
        request = VmRequest(name=vm.name, flavor=vm.flavor, image=vm.image, user_data="#cloud-config\n{}\n",
                            volume_size=vm.volume_gb, metadata=metadata(self.tags, vm), project=vm.project)
        return Launch(request, None, "lando", "/work")
