"""The OpenStack driver's API calls and wall time per job against the `openstack` command-line client's, on the real
OpenStack of ../shared/openstack (started when it is not up, stopped at the end only if this run started it).

Per job, both make the same things in a project of this run's own: V (a 1 GB data volume, a port on the project's
network, a floating IP on it, a server with user data booting from the image with the volume attached, waited
ACTIVE) and T (the server, volume, floating IP and port deleted, each verified gone). The driver does it as the
daemon does (`OpenStackCloud.create_vm` + `wait_until_active`, then `delete_vm`), on one connection made once (its
login is counted apart: a daemon logs in once, not per job); the client does it as an operator would, one
`openstack` command per step, polling `volume show` where Cinder has no --wait. Calls are counted alike on both
sides: keystoneauth's `REQ:` debug lines (logins and discovery included). Runs alternate driver and client.

    .venv/bin/python bench/openstack_driver.py [--runs 3]

(Not bench/openstack.py: a script of that name is the `openstack` package to the Python that runs it.)
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from openstack_api.real import FLAVOR, IMAGE, POOL, RealOpenStack, Tenant  # noqa: E402

from lando_ssh.cloud import META_INSTALLATION, META_JOB_ID, META_MANAGED_BY, VmRequest  # noqa: E402
from lando_ssh.cloud.openstack import OpenStackCloud  # noqa: E402
from lando_ssh.config import CloudSettings, Config  # noqa: E402

USER_DATA = "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC97W/Gb bench]\n"
POLL = 0.5  # seconds between the client's `volume show` polls (the driver's api_poll_interval too)


class Requests(logging.Handler):
    """Counts keystoneauth's `REQ:` debug lines: one per HTTP request the driver makes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("REQ:"):
            self.count += 1
            if os.environ.get("BENCH_SHOW_CALLS"):
                print(" ".join(w for w in message.split() if w.startswith("http") or w in (
                    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"))[:160], file=sys.stderr)


@dataclass
class Side:
    calls: dict[str, list[int]] = field(default_factory=lambda: {"V": [], "T": []})
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"V": [], "T": []})

    def add(self, step: str, calls: int, seconds: float) -> None:
        self.calls[step].append(calls)
        self.seconds[step].append(seconds)


def driver_job(cloud: OpenStackCloud, counter: Requests, tenant: Tenant, n: int, side: Side) -> None:
    request = VmRequest(name=f"{tenant.prefix}-bench-{n}", flavor=FLAVOR, image=IMAGE, user_data=USER_DATA,
                        volume_size=1, metadata={META_MANAGED_BY: "lando-ssh", META_INSTALLATION: tenant.prefix,
                                                 META_JOB_ID: str(n)})
    counter.count, t0 = 0, time.perf_counter()
    vm = cloud.wait_until_active(cloud.create_vm(request).id)
    side.add("V", counter.count, time.perf_counter() - t0)
    counter.count, t0 = 0, time.perf_counter()
    cloud.delete_vm(vm.id)
    side.add("T", counter.count, time.perf_counter() - t0)


class Client:
    """The `openstack` command as the project's user; each command's `REQ:` lines counted."""

    def __init__(self, tenant: Tenant, scratch: Path):
        auth = tenant.user_auth()
        self.env = {**os.environ, "OS_AUTH_URL": auth["auth_url"], "OS_USERNAME": auth["username"],
                    "OS_PASSWORD": auth["password"], "OS_PROJECT_NAME": auth["project_name"],
                    "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
                    "OS_IDENTITY_API_VERSION": "3", "OS_REGION_NAME": "RegionOne", "PYTHONWARNINGS": "ignore"}
        self.env.pop("OS_CLOUD", None)
        self.calls = 0
        self.user_data = scratch / "user-data"
        self.user_data.write_text(USER_DATA)

    def run(self, *args: str, ok: bool = True) -> str:
        done = subprocess.run(["openstack", "--debug", *args], env=self.env, capture_output=True, text=True,
                              timeout=600)
        self.calls += sum(1 for line in done.stderr.splitlines() if line.startswith("REQ:"))
        if ok and done.returncode != 0:
            raise RuntimeError(f"openstack {' '.join(args)}: {done.stderr.strip().splitlines()[-1]}")
        return done.stdout.strip() if done.returncode == 0 else ""

    def volume_status(self, volume: str) -> str:
        return self.run("volume", "show", volume, "-f", "value", "-c", "status", ok=False)

    def wait_volume(self, volume: str, wanted: str) -> None:
        while (status := self.volume_status(volume)) != wanted:
            if status in ("error", "") and wanted != "":
                raise RuntimeError(f"volume {volume} is {status or 'gone'}, not {wanted}")
            time.sleep(POLL)


def client_job(client: Client, tenant: Tenant, n: int, side: Side) -> None:
    name = f"{tenant.prefix}-cli-{n}"
    meta = ["--property", "managed_by=lando-ssh", "--property", f"lando_installation={tenant.prefix}"]
    tags = ["--tag", "managed_by=lando-ssh", "--tag", f"lando_installation={tenant.prefix}"]
    client.calls, t0 = 0, time.perf_counter()
    volume = client.run("volume", "create", "--size", "1", *meta, f"{name}-data", "-f", "value", "-c", "id")
    client.wait_volume(volume, "available")
    port = client.run("port", "create", "--network", tenant.network, "--security-group", "default", *tags,
                      f"{name}-port", "-f", "value", "-c", "id")
    fip = client.run("floating", "ip", "create", "--port", port, *tags, POOL, "-f", "value", "-c", "id")
    server = client.run("server", "create", "--flavor", FLAVOR, "--image", IMAGE, "--port", port, "--user-data",
                        str(client.user_data), *meta, "--block-device-mapping", f"vdb={volume}:volume::false",
                        "--wait", name, "-f", "value", "-c", "id")
    side.add("V", client.calls, time.perf_counter() - t0)
    client.calls, t0 = 0, time.perf_counter()
    client.run("server", "delete", "--wait", server)
    client.wait_volume(volume, "available")  # Nova detaches it after the server is gone
    client.run("volume", "delete", volume)
    client.wait_volume(volume, "")
    client.run("floating", "ip", "delete", fip)
    client.run("port", "delete", port)
    for kind in (("floating", "ip"), ("port",)):  # verified gone, as the driver verifies
        if client.run(*kind, "show", fip if kind[0] == "floating" else port, ok=False):
            raise RuntimeError(f"{' '.join(kind)} still there after its delete")
    side.add("T", client.calls, time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    stack = RealOpenStack().start()
    tenant = Tenant.make()
    counter = Requests()
    for name in ("keystoneauth.session", "keystoneauth"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger("keystoneauth").addHandler(counter)
    try:
        with tempfile.TemporaryDirectory(prefix="lando-bench-openstack-") as scratch:
            config = Config(data_dir=str(Path(scratch) / "data"))
            config.cloud.driver = "openstack"
            config.cloud.installation_id = tenant.prefix
            auth = tenant.user_auth()
            config.cloud_settings = CloudSettings(
                auth_url=auth["auth_url"], username=tenant.user, password=tenant.password,
                project_name=tenant.project, network_name=tenant.network, security_groups=["default"],
                allocate_floating_ips=True, floating_ip_pool_name=POOL, api_poll_interval=POLL)
            counter.count, t0 = 0, time.perf_counter()
            cloud = OpenStackCloud(config)
            login = (counter.count, time.perf_counter() - t0)
            client = Client(tenant, Path(scratch))
            driver, cli = Side(), Side()
            try:
                for n in range(args.runs):
                    driver_job(cloud, counter, tenant, n, driver)
                    client_job(client, tenant, n, cli)
            finally:
                cloud.close()
            left = tenant.leftovers()
    finally:
        tenant.remove(check=False)
        stack.stop()
    if left:
        raise SystemExit("the benchmark left these behind:\n" + "\n".join(left))
    print(f"OpenStack per job, {args.runs} runs each, medians (driver login once: {login[0]} calls, "
          f"{login[1]:.2f} s)")
    print(f"{'step':<4} {'driver calls':>12} {'cli calls':>10} {'driver s':>9} {'cli s':>7} {'ratio':>6}")
    for step in ("V", "T"):
        d_calls, c_calls = statistics.median(driver.calls[step]), statistics.median(cli.calls[step])
        d_s, c_s = statistics.median(driver.seconds[step]), statistics.median(cli.seconds[step])
        print(f"{step:<4} {d_calls:>12.0f} {c_calls:>10.0f} {d_s:>9.2f} {c_s:>7.2f} {d_s / c_s:>5.2f}x")
    d_total = sum(statistics.median(driver.seconds[s]) for s in ("V", "T"))
    c_total = sum(statistics.median(cli.seconds[s]) for s in ("V", "T"))
    calls = sum(statistics.median(driver.calls[s]) for s in ("V", "T"))
    cli_calls = sum(statistics.median(cli.calls[s]) for s in ("V", "T"))
    print(f"V+T  {calls:>12.0f} {cli_calls:>10.0f} {d_total:>9.2f} {c_total:>7.2f} {d_total / c_total:>5.2f}x "
          f"(goal: no more calls, <= 1.0x)")


if __name__ == "__main__":
    main()
