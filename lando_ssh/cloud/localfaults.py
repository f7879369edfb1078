"""The local cloud's run-time faults, one small process per VM that has any (started with the VM, carrying
its LANDO_LOCAL_VM marker, so deleting the VM ends it too):

- `cloud.local.die_fraction`: the VM dies `die_after` seconds after it booted: every process of the VM is
  killed, its sshd too, and its status becomes ERROR with the fault "the VM died", as a host failure would.
- `cloud.local.drop_ssh_every`: every that many seconds the VM's SSH sessions are cut (their sshd
  processes killed): each connection to it drops, as a flaky network drops it; the VM itself lives on.

    python -m lando_ssh.cloud.localfaults VM_DIR MARKER DIE_AFTER DROP_EVERY   (0: that fault is off)
"""
from __future__ import annotations

import os
import signal
import sys
import time

from lando_ssh.cloud.local import _kill_sshd, kill_processes, marked_pids

DIED = "the VM died (the local cloud's fault knob cloud.local.die_fraction)"


def sessions_of(listener: int) -> list[int]:
    """The sshd processes serving the listener's connections (its children)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == listener:
                children.append(int(entry))
    return children


def drop_connections(vm_dir: str) -> int:
    try:
        with open(os.path.join(vm_dir, "sshd.pid")) as f:
            listener = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    dropped = 0
    for pid in sessions_of(listener):
        try:
            os.kill(pid, signal.SIGKILL)
            dropped += 1
        except OSError:
            pass
    return dropped


def die(vm_dir: str, marker: str) -> None:
    with open(os.path.join(vm_dir, "fault"), "w") as f:
        f.write(DIED + "\n")
    with open(os.path.join(vm_dir, "status"), "w") as f:
        f.write("ERROR\n")
    drop_connections(vm_dir)  # all at once, as a host that fails: its connections first, then the rest
    _kill_sshd(vm_dir)
    kill_processes(lambda: marked_pids(marker), grace=0)  # (this process is spared: kill_processes leaves it)


def main(argv: list[str]) -> None:
    vm_dir, marker, die_after, drop_every = argv[0], argv[1], float(argv[2]), float(argv[3])
    while not os.path.exists(os.path.join(vm_dir, "sshd.pid")):  # booted
        if not os.path.isdir(vm_dir):
            return
        time.sleep(0.5)
    booted = time.monotonic()
    next_drop = booted + drop_every if drop_every else float("inf")
    dies_at = booted + die_after if die_after else float("inf")
    while os.path.isdir(vm_dir):
        now = time.monotonic()
        if now >= dies_at:
            die(vm_dir, marker)
            return
        if now >= next_drop:
            drop_connections(vm_dir)
            next_drop = now + drop_every
        time.sleep(max(0.1, min(next_drop, dies_at) - time.monotonic()))


if __name__ == "__main__":
    main(sys.argv[1:])
