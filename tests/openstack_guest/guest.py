"""The guest behind a server of the real Nova: run by the test compute driver (driver.py), with lando-ssh's
Python, inside the network namespace the test made for the server's network.

    python guest.py boot GUEST_DIR ADDRESS...   # as cloud-init and init would, detached by the driver
    python guest.py destroy GUEST_DIR           # every process of the guest, then its directory

`boot` reads GUEST_DIR/user_data (the server's user data, with the keypair's key, if any, added as
cloud-init adds it from the metadata service) and boots the way lando-ssh's local cloud boots its VMs
(lando_ssh/cloud/local.py: the same cloud-config reading, runcmd script and boot script): a host key made
on first boot and printed to GUEST_DIR/console.log between cloud-init's markers, an sshd on port 22 of
each ADDRESS (the fixed IP, and the floating IP the test's namespace also holds: no L3 agent translates it),
then runcmd. Every process of the guest carries LANDO_LOCAL_VM=<guest dir>, as a local VM's do.
"""
from __future__ import annotations

import os
import pwd
import sys

from lando_ssh.cloud.cloudinit import parse_user_data
from lando_ssh.cloud.local import (
    _BOOT_SCRIPT,
    MARKER,
    _kill_sshd,
    _runcmd_script,
    find_sshd,
    kill_processes,
    marked_pids,
    sshd_config,
)
from lando_ssh.keys import write_private


def boot(guest: str, addresses: list[str]) -> None:
    with open(os.path.join(guest, "user_data")) as f:
        text = f.read()
    try:
        doc = parse_user_data(text) if text else {}
    except ValueError as e:
        with open(os.path.join(guest, "console.log"), "a") as f:
            f.write(f"cloud-init: {e}\n")
        doc = {}
    keys = list(doc.get("ssh_authorized_keys") or [])
    if os.path.exists(os.path.join(guest, "keypair.pub")):
        with open(os.path.join(guest, "keypair.pub")) as f:
            keys.append(f.read().strip())
    write_private(os.path.join(guest, "authorized_keys"), "".join(k.strip() + "\n" for k in keys))
    for name, text in (("sshd_config", sshd_config(guest, guest, 22, addresses)),
                       ("runcmd.sh", _runcmd_script(doc.get("runcmd") or [])), ("boot.sh", _BOOT_SCRIPT)):
        with open(os.path.join(guest, name), "w") as f:
            f.write(text)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd = find_sshd()
    if not sshd:
        raise SystemExit("the guest needs OpenSSH's sshd")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER: guest, "LANG": "C.UTF-8",
           "HOME": pwd.getpwuid(os.getuid()).pw_dir}
    os.chdir(guest)
    os.execve("/bin/sh", ["/bin/sh", os.path.join(guest, "boot.sh"), guest, sshd, "0.0"], env)


def destroy(guest: str) -> None:
    kill_processes(lambda: marked_pids(guest))
    _kill_sshd(guest)


def main(argv: list[str]) -> None:
    command, guest = argv[0], os.path.abspath(argv[1])
    if command == "boot":
        boot(guest, argv[2:])
    elif command == "destroy":
        destroy(guest)
    else:
        raise SystemExit(f"unknown command {command!r}: boot or destroy")


if __name__ == "__main__":
    main(sys.argv[1:])
