"""A Nova compute driver for lando-ssh's tests: nova.virt.fake.FakeDriver, plus a real guest behind each server
whose network has a namespace the test made.

Installed by tests/openstack_guest/compute.py into the real OpenStack of ../shared/openstack as the module
`lando_guest` on nova-compute's PYTHONPATH (as setup.sh installs its Neutron mechanism driver), with
`compute_driver = lando_guest.GuestDriver`. It runs in nova-compute (Debian's Python); the guest itself runs
with lando-ssh's Python (guest.py, named in settings.json beside this module).

For a server on network N, the test made the namespace `lg-<first 8 of N's id>` with a veth pair: `lgh-<8>`
on the host (the subnet's gateway address: the host plays the router) and `lgn-<8>` inside. On spawn the
driver puts the server's fixed IP (and its floating IP, with a host route to it through the pair: there is no
L3 agent to translate it) on `lgn-<8>` and starts guest.py in the namespace: cloud-init's work on the user
data, the host keys on the console, sshd on those addresses. get_console_output returns the guest's console;
destroy ends the guest's processes and takes its addresses back. A server on a network without such a
namespace is FakeDriver's alone: it touches no address of the host.
"""
import base64
import json
import os
import shutil
import subprocess

from nova.virt import fake
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))


def _settings():
    with open(os.path.join(HERE, "settings.json")) as f:
        return json.load(f)


def _ip(*args, check=True):
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _namespaces():
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}


def _plan(network_info):
    """(namespace, guest interface, host interface, [fixed/prefix], [floating]) of the first VIF on a network
    the test made a namespace for, else None."""
    present = _namespaces()
    for vif in network_info or []:
        net = vif["network"]
        tag = net["id"][:8]
        if "lg-" + tag not in present:
            continue
        fixed, floating = [], []
        for subnet in net["subnets"]:
            prefix = subnet["cidr"].split("/")[1]
            for ip in subnet["ips"]:
                if ip["version"] != 4:
                    continue
                fixed.append(f"{ip['address']}/{prefix}")
                floating += [f["address"] for f in ip.get("floating_ips") or []]
        return {"namespace": "lg-" + tag, "guest_if": "lgn-" + tag, "host_if": "lgh-" + tag, "fixed": fixed,
                "floating": floating}
    return None


class GuestDriver(fake.FakeDriver):
    """FakeDriver with a real guest (see the module's doc)."""

    def _dir(self, instance):
        return os.path.join(_settings()["root"], instance.uuid)

    def spawn(self, context, instance, image_meta, injected_files, admin_password, allocations,
              network_info=None, *args, **kwargs):
        super().spawn(context, instance, image_meta, injected_files, admin_password, allocations,
                      network_info, *args, **kwargs)
        plan = _plan(network_info)
        if plan is None:
            return
        settings, guest = _settings(), self._dir(instance)
        os.makedirs(guest, mode=0o700, exist_ok=True)
        with open(os.path.join(guest, "network.json"), "w") as f:
            json.dump(plan, f)
        with open(os.path.join(guest, "user_data"), "w") as f:
            f.write(base64.b64decode(instance.user_data).decode() if instance.user_data else "")
        if instance.key_data:  # cloud-init adds the keypair's key from the metadata service
            with open(os.path.join(guest, "keypair.pub"), "w") as f:
                f.write(instance.key_data)
        ns = plan["namespace"]
        for address in plan["fixed"]:
            _ip("-n", ns, "addr", "replace", address, "dev", plan["guest_if"])
        for address in plan["floating"]:
            _ip("-n", ns, "addr", "replace", address + "/32", "dev", plan["guest_if"])
            _ip("route", "replace", address + "/32", "dev", plan["host_if"])
        addresses = [a.split("/")[0] for a in plan["fixed"]] + plan["floating"]
        with open(os.path.join(guest, "guest.log"), "a") as log:
            # setsid -f: the guest is in a session of its own (destroy ends that session) and no child of ours
            subprocess.run(["setsid", "-f", "ip", "netns", "exec", ns, settings["python"], settings["guest"],
                            "boot", guest, *addresses],
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": settings["repo"]},
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)
        LOG.info("lando guest of %s booting on %s in %s", instance.uuid, ", ".join(addresses), ns)

    def destroy(self, context, instance, network_info, *args, **kwargs):
        super().destroy(context, instance, network_info, *args, **kwargs)
        settings, guest = _settings(), self._dir(instance)
        if not os.path.isdir(guest):
            return
        subprocess.run([settings["python"], settings["guest"], "destroy", guest],
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": settings["repo"]},
                       capture_output=True, check=True)
        try:
            with open(os.path.join(guest, "network.json")) as f:
                plan = json.load(f)
        except (OSError, ValueError):
            plan = None
        if plan and plan["namespace"] in _namespaces():
            for address in plan["fixed"]:
                _ip("-n", plan["namespace"], "addr", "del", address, "dev", plan["guest_if"], check=False)
            for address in plan["floating"]:
                _ip("-n", plan["namespace"], "addr", "del", address + "/32", "dev", plan["guest_if"], check=False)
                _ip("route", "del", address + "/32", "dev", plan["host_if"], check=False)
        shutil.rmtree(guest, ignore_errors=True)
        LOG.info("lando guest of %s destroyed", instance.uuid)

    def get_console_output(self, context, instance):
        try:
            with open(os.path.join(self._dir(instance), "console.log"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return super().get_console_output(context, instance)
