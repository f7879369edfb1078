"""The real OpenStack of ../shared/openstack, for the tests: Keystone, Placement, Glance, Nova (the fake
hypervisor, the real quota driver), Neutron (ML2, no agents) and Cinder (the fake volume driver), Debian 12's
Zed packages on 127.0.0.1, state under $OSX (default /tmp/osx).

`RealOpenStack.start()` uses the stack when every API already answers, else runs ../shared/openstack/setup.sh
(find-or-create: ~150 s to install once, ~115 s to start) and fails, with the end of its log, when it cannot.
Test runs that share the stack hold a shared lock on $OSX/lando-tests.lock; `stop()` runs stop.sh only when this
run started the stack and no other run holds it. `Tenant.make()` gives a test run its own projects (a user with
the member role in both), a network with a router to `public`, and a flavor too big for any host (a server in
ERROR); `Tenant.remove()` checks that no server, volume, floating IP or port of the tests is left, then deletes
what `make` made.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "openstack"
OSX = Path(os.environ.get("OSX", "/tmp/osx"))
AUTH_URL = "http://127.0.0.1:35357/v3"
#: every API the stack serves (Keystone, Placement, Glance, Neutron, Cinder, Nova)
APIS = [AUTH_URL, "http://127.0.0.1:18778", "http://127.0.0.1:19292", "http://127.0.0.1:19696",
        "http://127.0.0.1:18776", "http://127.0.0.1:18774"]
IMAGE = "cirros-fake"
FLAVOR = "m1.tiny"
POOL = "public"
SETUP_TIMEOUT = 900.0  # install once (~150 s) and start (~115 s), on a loaded 2-core machine


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: the service is up (Nova answers 401 without a token)
    except OSError:
        return False


def admin_auth() -> dict[str, Any]:
    """The admin login setup.sh wrote to $OSX/clouds.yaml."""
    clouds = yaml.safe_load((OSX / "clouds.yaml").read_text())
    return dict(clouds["clouds"]["osx-admin"]["auth"])


def connect(**auth: Any) -> openstack.connection.Connection:
    return openstack.connect(**auth, region_name="RegionOne", load_yaml_config=False, load_envvars=False)


class RealOpenStack:
    def __init__(self) -> None:
        self.started_here = False
        self._lock: Any = None
        self.log = OSX / f"setup-{os.getpid()}.log"

    def up(self) -> bool:
        return (OSX / "clouds.yaml").exists() and all(_answers(u) for u in APIS)

    @staticmethod
    def wait_schedulable(timeout: float = 240.0) -> None:
        """Until Nova's compute service reports itself up: right after a start its first report may time out
        (the conductor is still busy starting) and the scheduler puts every server in ERROR meanwhile."""
        admin = connect(**admin_auth())
        try:
            wait_for(lambda: all(s.state == "up" and s.status == "enabled" for s in admin.compute.services()
                                 if s.binary in ("nova-compute", "nova-conductor", "nova-scheduler")),
                     "Nova's compute, conductor and scheduler services up", timeout)
        finally:
            admin.close()

    def start(self) -> RealOpenStack:
        OSX.mkdir(parents=True, exist_ok=True)
        with open(OSX / "lando-tests-start.lock", "w") as starting:  # one setup.sh at a time
            fcntl.flock(starting, fcntl.LOCK_EX)
            if not self.up():
                self._setup()
                self.started_here = True
            self._lock = open(OSX / "lando-tests.lock", "w")  # noqa: SIM115 - held until stop()
            fcntl.flock(self._lock, fcntl.LOCK_SH)
        try:
            self.wait_schedulable()
        except AssertionError as e:
            raise RuntimeError(f"the real OpenStack answers but cannot place servers: {e} (logs in {OSX / 'log'})"
                               ) from None
        return self

    def _setup(self) -> None:
        if not (SHARED / "setup.sh").exists():
            raise RuntimeError(f"the real OpenStack cannot start: {SHARED / 'setup.sh'} does not exist "
                               "(the shared directory belongs beside the repository)")
        # its services must not write into this test run's TMPDIR (it has to be empty at the end)
        env = {**os.environ, "OSX": str(OSX), "TMPDIR": "/tmp"}
        with open(self.log, "w") as out:
            try:
                done = subprocess.run(["bash", str(SHARED / "setup.sh")], cwd=OSX, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=SETUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the real OpenStack did not come up in {SETUP_TIMEOUT:.0f} s:\n"
                                   f"{self._tail()}") from None
        if done.returncode != 0 or not self.up():
            raise RuntimeError(f"the real OpenStack did not start (setup.sh exited {done.returncode}; logs in "
                               f"{OSX / 'log'}):\n{self._tail()}")

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    @staticmethod
    @contextlib.contextmanager
    def down(service: str) -> Iterator[None]:
        """One service of the stack (a name of setup.sh's $OSX/run/NAME.pid: keystone, cinder-api...) stopped for
        the block, then started again with the same command line and waited for; the others are untouched."""
        pid_file = OSX / "run" / f"{service}.pid"
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        environ = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in line)
        os.killpg(pid, signal.SIGTERM)
        wait_for(lambda: subprocess.run(["pgrep", "-s", str(pid)], capture_output=True).returncode != 0,
                 f"{service} stopped", 60)
        try:
            yield
        finally:
            with open(OSX / "log" / f"{service}.out", "a") as out:
                proc = subprocess.Popen(argv, env=environ, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            pid_file.write_text(f"{proc.pid}\n")
            wait_for(lambda: proc.poll() is not None or all(_answers(u) for u in APIS), f"{service} answering", 120)
            assert proc.poll() is None, f"{service} did not start again; see {OSX / 'log'}"

    def stop(self) -> None:
        """stop.sh, when this run started the stack and no other run is using it."""
        if self._lock is None:
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            if self.started_here and alone:
                subprocess.run(["bash", str(SHARED / "stop.sh")], env={**os.environ, "OSX": str(OSX)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)
                self.log.unlink(missing_ok=True)
        finally:
            self._lock.close()
            self._lock = None


@dataclass
class Tenant:
    """A test run's own corner of the cloud (made and removed by the admin)."""

    admin: Any
    prefix: str
    password: str
    projects: dict[str, str] = field(default_factory=dict)  # name -> id
    user_id: str = ""
    network: str = ""
    network_id: str = ""
    cidr: str = ""
    gateway: str = ""
    huge_flavor: str = ""
    _router: Any = None
    _made: list[tuple[str, str]] = field(default_factory=list)

    @property
    def project(self) -> str:
        return f"{self.prefix}-a"

    @property
    def other_project(self) -> str:
        return f"{self.prefix}-b"

    @property
    def user(self) -> str:
        return self.prefix

    @classmethod
    def make(cls) -> Tenant:
        admin = connect(**admin_auth())
        tenant = cls(admin, f"lt{os.getpid()}x{secrets.token_hex(2)}", secrets.token_urlsafe(12))
        try:
            tenant._make()
        except BaseException:
            tenant.remove(check=False)
            raise
        return tenant

    def _make(self) -> None:
        idn, net = self.admin.identity, self.admin.network
        member = idn.find_role("member")
        user = idn.create_user(name=self.user, password=self.password, domain_id="default")
        self.user_id = user.id
        for name in (self.project, self.other_project):
            project = idn.create_project(name=name, domain_id="default", description="lando-ssh tests")
            self.projects[name] = project.id
            idn.assign_project_role_to_user(project, user, member)
        pid = self.projects[self.project]
        self.network = f"{self.prefix}-net"
        network = net.create_network(name=self.network, project_id=pid)
        subnet = net.create_subnet(name=f"{self.prefix}-subnet", network_id=network.id, project_id=pid,
                                   ip_version=4, cidr=f"10.251.{secrets.randbelow(250) + 1}.0/24")
        public = net.find_network(POOL)
        self._router = net.create_router(name=f"{self.prefix}-router", project_id=pid,
                                         external_gateway_info={"network_id": public.id})
        net.add_interface_to_router(self._router, subnet_id=subnet.id)
        self._made += [("network", network.id), ("subnet", subnet.id)]  # deleted in reverse
        self.network_id, self.cidr, self.gateway = network.id, subnet.cidr, subnet.gateway_ip
        # bigger than the fake hypervisor (800,000 MB of RAM): the scheduler finds no host, the server goes to ERROR
        huge = self.admin.compute.create_flavor(name=f"{self.prefix}-huge", vcpus=1, ram=4_000_000, disk=1,
                                                is_public=False)
        self.admin.compute.flavor_add_tenant_access(huge, pid)
        self.huge_flavor = huge.name
        self._made.append(("flavor", huge.id))

    def user_auth(self, project: str | None = None) -> dict[str, Any]:
        return {"auth_url": AUTH_URL, "username": self.user, "password": self.password,
                "project_name": project or self.project, "user_domain_name": "Default",
                "project_domain_name": "Default"}

    def set_quotas(self, project: str | None = None, compute: dict[str, int] | None = None,
                   volume: dict[str, int] | None = None, network: dict[str, int] | None = None) -> None:
        pid = self.projects[project or self.project]
        if compute:
            self.admin.set_compute_quotas(pid, **compute)
        if volume:
            self.admin.set_volume_quotas(pid, **volume)
        if network:
            self.admin.set_network_quotas(pid, **network)

    def reset_quotas(self) -> None:
        for pid in self.projects.values():
            self.admin.delete_compute_quotas(pid)
            self.admin.delete_volume_quotas(pid)
            self.admin.delete_network_quotas(pid)

    def leftovers(self) -> list[str]:
        """Servers, volumes, floating IPs and ports (but the router's) in the tenant's projects."""
        left: list[str] = []
        for name, pid in self.projects.items():
            left += [f"server {s.id} ({s.name}, {s.status}) in {name}"
                     for s in self.admin.compute.servers(all_projects=True, project_id=pid)]
            left += [f"volume {v.id} ({v.name}, {v.status}) in {name}"
                     for v in self.admin.block_storage.volumes(all_projects=True, project_id=pid)]
            left += [f"floating IP {f.floating_ip_address} in {name}" for f in self.admin.network.ips(project_id=pid)]
            left += [f"port {p.id} ({p.name}, {p.device_owner}) in {name}"
                     for p in self.admin.network.ports(project_id=pid)
                     if not (p.device_owner or "").startswith("network:")]
        return left

    def purge(self) -> list[str]:
        """Delete every server, volume, floating IP and port (but the router's) in the tenant's projects, as the
        admin, and wait until they are gone (so a failed test leaves nothing to the next). Returns what it found."""
        left = self.leftovers()
        if not left:
            return []
        compute, storage, net = self.admin.compute, self.admin.block_storage, self.admin.network
        for pid in self.projects.values():
            for server in list(compute.servers(all_projects=True, project_id=pid)):
                compute.delete_server(server)
                compute.wait_for_delete(server, interval=1, wait=180)
            for volume in list(storage.volumes(all_projects=True, project_id=pid)):
                if volume.status not in ("available", "error"):  # still attached to a deleted server
                    storage.reset_volume_status(volume, status="available", attach_status="detached",
                                                migration_status=None)
                storage.delete_volume(volume)
                storage.wait_for_delete(volume, interval=1, wait=120)
            for fip in list(net.ips(project_id=pid)):
                net.delete_ip(fip)
            for port in list(net.ports(project_id=pid)):
                if not (port.device_owner or "").startswith("network:"):
                    net.delete_port(port)
        return left

    def remove(self, check: bool = True) -> None:
        """Delete what `make` made (purging what the tests left); with `check`, then fail naming what was left."""
        left = self.purge() if self.projects else []
        net = self.admin.network
        try:
            if self._router is not None:
                for port in net.ports(device_id=self._router.id, device_owner="network:router_interface"):
                    net.remove_interface_from_router(self._router, port_id=port.id)
                net.delete_router(self._router)
            for kind, rid in reversed(self._made):
                if kind == "flavor":
                    self.admin.compute.delete_flavor(rid)
                elif kind == "subnet":
                    net.delete_subnet(rid)
                else:
                    net.delete_network(rid)
            for pid in self.projects.values():
                for group in net.security_groups(project_id=pid):  # Neutron made each project a "default" one
                    net.delete_security_group(group)
                self.admin.identity.delete_project(pid)
            if self.user_id:
                self.admin.identity.delete_user(self.user_id)
        finally:
            self.admin.close()
        if left and check:
            raise AssertionError("the tests left these in the real OpenStack (now deleted):\n" + "\n".join(left))


def wait_for(condition: Any, what: str, timeout: float = 120.0) -> Any:
    """Poll `condition` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.2
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s in vain for: {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 2.0)
