"""`FakeRemote`: an SSH connection to a `FakeCloud` VM, in memory. It runs what the test scripts (`commands`:
a function from argv to a Result, default: every command succeeds) and keeps files in a dict.

Knobs: `drop_rate`, the share of calls whose connection drops (VmUnreachable, as `Remote` raises once its
retries are spent); a VM its cloud says does not answer (`FakeCloud.silence`, `die`) is unreachable.
`calls` lists every argv run, for the test to assert on.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from fakes.cloud import FakeCloud
from lando_ssh.errors import RemoteCommandFailed, VmUnreachable
from lando_ssh.remote import Result


class FakeRemote:
    def __init__(self, cloud: FakeCloud, address: str | None, *, drop_rate: float = 0.0, seed: int = 0,
                 commands: Callable[[Sequence[str]], Result] | None = None):
        self.cloud, self.address = cloud, address
        self.drop_rate = drop_rate
        self.commands = commands or (lambda argv: Result(0, "", ""))
        self.files: dict[str, bytes] = {}
        self.calls: list[list[str]] = []
        self._rng = random.Random(seed)

    def _reach(self) -> None:
        if not self.cloud.answers(self.address) or self._rng.random() < self.drop_rate:
            raise VmUnreachable(f"cannot reach {self.address}: connection timed out")

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None,
            check: bool = True, retry: bool = True, what: str | None = None, **_: Any) -> Result:
        self._reach()
        self.calls.append([str(a) for a in argv])
        result = self.commands(argv)
        if check and result.exit_code != 0:
            raise RemoteCommandFailed(f"{what or argv[0]} failed on {self.address} with exit code "
                                      f"{result.exit_code}: {result.stderr.strip()}", result.exit_code, result.stderr)
        return result

    def put_bytes(self, files: dict[str, bytes], remote_dir: str, **_: Any) -> str:
        self._reach()
        for name, data in files.items():
            self.files[f"{remote_dir.rstrip('/')}/{name}"] = data
        return ""

    def get_dir(self, remote_dir: str, local_dir: str, **_: Any) -> int:
        self._reach()
        return sum(len(d) for p, d in self.files.items() if p.startswith(remote_dir.rstrip("/") + "/"))

    def close(self) -> None:
        pass


class FakeRemotes:
    """`lando_ssh.pool.launch.Remotes` over a FakeCloud: each VM's connection a FakeRemote."""

    def __init__(self, cloud: FakeCloud, *, drop_rate: float = 0.0, seed: int = 0):
        self.cloud, self.drop_rate, self.seed = cloud, drop_rate, seed
        self.opened = 0

    def remote_for(self, vm: Any) -> FakeRemote:
        self.opened += 1
        return FakeRemote(self.cloud, vm.address, drop_rate=self.drop_rate, seed=self.seed + self.opened)
