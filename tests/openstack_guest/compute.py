"""Real guests for the real Nova of ../shared/openstack (see driver.py and guest.py).

`install()` copies driver.py into the stack as $OSX/lib/lando_guest/lando_guest.py (beside setup.sh's
`osx_bindall`), writes its settings (this Python, guest.py, where guests live) and, unless nova-compute already
runs this very driver, restarts nova-compute with `compute_driver = lando_guest.GuestDriver` (an extra config file
after setup.sh's nova.conf, and a launcher that adds that directory to `nova.virt`, where Nova looks for compute
drivers; ../shared stays untouched) and waits until it reports to Nova again. The restarted process is
written to setup.sh's pid file, so stop.sh stops it.

`Namespace.make(network_id, cidr, gateway)` is the namespace a test makes for one Neutron network: servers on
that network get guests there, reached from the host through a veth pair whose host end holds the gateway.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _session_alive(pid: int) -> bool:
    return subprocess.run(["pgrep", "-s", str(pid)], capture_output=True).returncode == 0


#: nova-compute with `nova.virt` extended by the directory of the installed driver: Nova loads its compute driver as
#: `nova.virt.<compute_driver>` only, and Debian's nova.virt is a plain package on a read-only path
LAUNCHER = """import os, sys
import nova.cmd  # eventlet's monkey patching first, as nova-compute does it
import nova.virt
nova.virt.__path__.append(os.environ["LANDO_GUEST_DRIVER_DIR"])
from nova.cmd.compute import main
sys.argv[0] = "nova-compute"
sys.exit(main())
"""


def install(osx: Path, admin: Any, timeout: float = 180.0) -> None:
    lib = osx / "lib" / "lando_guest"
    lib.mkdir(parents=True, exist_ok=True)
    root = osx / "var" / "lando-guests"
    root.mkdir(parents=True, exist_ok=True)
    files = {lib / "lando_guest.py": (HERE / "driver.py").read_text(),
             lib / "settings.json": json.dumps({"python": sys.executable, "guest": str(HERE / "guest.py"),
                                                "repo": str(REPO), "root": str(root)}, indent=1),
             osx / "bin" / "lando-nova-compute.py": LAUNCHER,
             osx / "etc" / "nova" / "lando-guest.conf": "[DEFAULT]\ncompute_driver = lando_guest.GuestDriver\n"}
    changed = False
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    pid_file = osx / "run" / "nova-compute.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else 0
    try:
        running = pid and b"lando-nova-compute.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        running = False
    if running and not changed:
        return
    if pid:
        _stop_session(pid)
    since = datetime.now(UTC).replace(tzinfo=None)
    with open(osx / "log" / "nova-compute.out", "a") as out:
        proc = subprocess.Popen(
            ["/usr/bin/python3", str(osx / "bin" / "lando-nova-compute.py"), "--config-file",
             str(osx / "etc" / "nova" / "nova.conf"), "--config-file", str(osx / "etc" / "nova" / "lando-guest.conf"),
             "--log-file", str(osx / "log" / "nova-compute.log")],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TMPDIR": "/tmp", "PYTHONPATH": str(osx / "lib"), "LANDO_GUEST_DRIVER_DIR": str(lib)})
    pid_file.write_text(f"{proc.pid}\n")
    _wait_reported(admin, since, proc, timeout)


def _stop_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while _session_alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
        time.sleep(0.2)


def _wait_reported(admin: Any, since: datetime, proc: subprocess.Popen, timeout: float) -> None:
    """Until the new nova-compute has reported to Nova (its service record updated after `since`)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("nova-compute with the lando guest driver exited at start; see its log")
        for service in admin.compute.services(binary="nova-compute"):
            updated = datetime.fromisoformat(str(service.updated_at).rstrip("Z")) if service.updated_at else None
            if updated and updated > since and service.state == "up":
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nova-compute with the lando guest driver did not report in {timeout:.0f} s")
        time.sleep(1)


def guests_left(osx: Path) -> list[str]:
    """Guest directories nova-compute has not destroyed."""
    root = osx / "var" / "lando-guests"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@dataclass
class Namespace:
    """The namespace of one Neutron network (see the module's doc)."""

    name: str
    host_if: str
    guest_if: str

    @classmethod
    def make(cls, network_id: str, cidr: str, gateway: str) -> Namespace:
        tag = network_id[:8]
        ns = cls(f"lg-{tag}", f"lgh-{tag}", f"lgn-{tag}")
        prefix = cidr.split("/")[1]
        try:
            _run("ip", "netns", "add", ns.name)
            _run("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.guest_if, "netns", ns.name)
            _run("ip", "addr", "add", f"{gateway}/{prefix}", "dev", ns.host_if)
            _run("ip", "link", "set", ns.host_if, "up")
            _run("ip", "-n", ns.name, "link", "set", "lo", "up")
            _run("ip", "-n", ns.name, "link", "set", ns.guest_if, "up")
            _run("ip", "-n", ns.name, "route", "add", cidr, "dev", ns.guest_if)
            _run("ip", "-n", ns.name, "route", "add", "default", "via", gateway)
        except BaseException:
            ns.remove()
            raise
        return ns

    def addresses(self) -> list[str]:
        """The addresses servers hold in the namespace now."""
        out = subprocess.run(["ip", "-n", self.name, "-o", "-4", "addr", "show", "dev", self.guest_if],
                             capture_output=True, text=True).stdout
        return [line.split()[3] for line in out.splitlines()]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)  # its end of the pair goes with it
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


def remove_guest_dirs(osx: Path) -> None:
    shutil.rmtree(osx / "var" / "lando-guests", ignore_errors=True)
