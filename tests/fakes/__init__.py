"""In-memory stand-ins with fault knobs, so pool and scheduler tests run in milliseconds (as Arvados' stub
driver): `FakeCloud` implements `lando_ssh.cloud.Cloud`; `FakeRemote` the part of `lando_ssh.remote.Remote` a
caller uses (`run`, `put_bytes`, `get_dir`, `close`); `MemoryVmStore` the pool's VM store; `FakeLauncher` the
pool's launcher. Faults are settings of the fakes, changed by the test at any moment, never monkeypatches."""
from fakes.cloud import FakeCloud, FakeVm
from fakes.launch import Crash, FakeLauncher
from fakes.remote import FakeRemote, FakeRemotes
from fakes.vmstore import MemoryVmStore

__all__ = ["Crash", "FakeCloud", "FakeLauncher", "FakeRemote", "FakeRemotes", "FakeVm", "MemoryVmStore"]
