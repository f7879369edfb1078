"""The local cloud: each "VM" is a real OpenSSH sshd on 127.0.0.1 with its own port, host key,
authorized_keys and directory.

Creating a VM writes its directory and launches a detached `boot.sh` (its own session, so the
VM outlives the server like a real VM does): it runs the `runcmd` of the cloud-config user
data the way cloud-init would, starts sshd, prints the host keys to `console.log` the way
cloud-init does, and marks the VM ACTIVE. Every process of the VM carries the environment
variable LANDO_LOCAL_VM=<name>@<installation token> (sshd's `SetEnv`; the token is the data
dir's, see installation.py, so another installation's VM of the same name is never taken for
this one); deleting the VM kills every process in the sessions of those processes, then
removes the directory. A VM made before tokens (LANDO_LOCAL_VM=<name>, no token in its
meta.json) is this data dir's by its directory: its processes are those with that marker
whose working directory is inside the VM's directory (boot.sh, the job's runner). The data volume is not
simulated: the work dir is a plain directory inside the VM's. Fault knobs live in
`cloud.local` (boot_delay, fail_create, max_instances, stuck_boots, disk_mb, internal_errors, and the random ones
of docs/local-cloud.md).
"""
from __future__ import annotations

import collections
import json
import os
import pwd
import random
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lando_ssh.cloud import Flavor, Quota, VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import parse_user_data
from lando_ssh.config import Config
from lando_ssh.errors import CloudError, CloudNotFound, QuotaExceeded
from lando_ssh.installation import installation_token
from lando_ssh.keys import write_private

MARKER = "LANDO_LOCAL_VM"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_port_lock = threading.Lock()
# Deletes at once. Each passes over /proc a few times; with a thousand at once in a daemon that has a thousand
# other threads, the passing thread waited for the GIL after each of its ~3,000 reads: 0.5 deletes a second.
_deleting = threading.BoundedSemaphore(16)
# ports handed out lately, whose sshd may not listen yet: the kernel could offer them again meanwhile
_recent_ports: collections.deque[int] = collections.deque(maxlen=512)


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.path.exists(p)), None)


class LocalCloud:
    name = "local"

    def __init__(self, config: Config):
        self.config = config
        self.settings = config.cloud.local
        self.root = os.path.abspath(config.local_cloud_root)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.user = config.vm.user or pwd.getpwuid(os.getuid()).pw_name
        self.token = installation_token(config.data_dir)
        self._internal_errors = 0  # raised so far (cloud.local.internal_errors)

    # -- facts -----------------------------------------------------------------------------
    def default_user(self, image: str | None = None) -> str:
        return self.user  # every local "image" logs in the user running the VMs

    def default_cwl_command(self) -> list[str]:
        return ["cwltool", "--no-container"]  # no Docker on the local "image"

    def vm_work_dir(self, vm_name: str) -> str:
        return os.path.join(self._dir(vm_name), "work")

    def flavors(self) -> list[Flavor]:
        return [Flavor(name=n, id=n, vcpus=f.get("vcpus", 1), ram_mb=f.get("ram_mb", 1024), disk_gb=f.get("disk_gb", 0))
                for n, f in self.settings.flavors.items()]

    def images(self) -> list[str]:
        return list(self.settings.images)

    def check_image(self, name_or_id: str) -> None:
        if name_or_id not in self.settings.images:
            raise CloudNotFound(f"image {name_or_id!r} does not exist; images: {', '.join(self.settings.images)}")

    def quota(self) -> Quota:
        vms = self._all()
        return Quota(max_instances=self.settings.max_instances or None, instances_used=len(vms),
                     cores_used=sum(v.flavor.vcpus for v in vms if v.flavor),
                     ram_mb_used=sum(v.flavor.ram_mb for v in vms if v.flavor))

    # -- lifecycle -------------------------------------------------------------------------
    def create_vm(self, request: VmRequest) -> VmInfo:
        if self.settings.fail_create:
            raise CloudError("the local cloud refused to create the VM (cloud.local.fail_create is set)")
        if random.random() < self.settings.fail_create_fraction:
            raise CloudError("the local cloud failed to create the VM (injected: cloud.local.fail_create_fraction)")
        flavor = self._flavor(request.flavor)
        self.check_image(request.image)
        if self.settings.max_instances and len(self._all()) >= self.settings.max_instances:
            raise QuotaExceeded(f"waiting for quota: instances {len(self._all())} of {self.settings.max_instances}")
        sshd = find_sshd()
        if not sshd:
            raise CloudError("the local cloud needs OpenSSH's sshd: install it with "
                             "'apt-get install openssh-server'")
        try:
            user_data = parse_user_data(request.user_data)
        except ValueError as e:
            raise CloudError(f"cannot boot {request.name}: {e}") from None
        vm_dir = self._dir(request.name)
        try:
            os.makedirs(vm_dir, mode=0o700)
        except FileExistsError:
            raise CloudError(f"a VM named {request.name} already exists") from None
        keys = user_data.get("ssh_authorized_keys") or []
        write_private(os.path.join(vm_dir, "authorized_keys"), "".join(k.strip() + "\n" for k in keys))
        port = _free_port()
        self._write(vm_dir, "sshd_config", self._sshd_config(vm_dir, self.marker(request.name), port))
        self._write(vm_dir, "runcmd.sh", _runcmd_script(user_data.get("runcmd") or []))
        self._write(vm_dir, "boot.sh", _BOOT_SCRIPT)
        meta = {"id": request.name, "name": request.name, "port": port, "flavor": flavor.name,
                "image": request.image, "metadata": request.metadata, "volume_size": request.volume_size,
                "created": datetime.now(UTC).isoformat(), "token": self.token}
        self._write(vm_dir, "meta.json", json.dumps(meta))
        if self.settings.disk_mb:
            _mount_disk(os.path.join(vm_dir, "work"), self.settings.disk_mb)
        self._write(vm_dir, "status", "BUILD\n")
        with open(os.path.join(self.root, "created.log"), "a") as f:  # an audit trail: every VM ever created
            f.write(f"{meta['created']} {request.name} {json.dumps(request.metadata, sort_keys=True)}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER: self.marker(request.name),
               "LANG": "C.UTF-8", "HOME": pwd.getpwuid(os.getuid()).pw_dir}
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        delay = self.settings.boot_delay
        if self.settings.stuck_boots and _created_count(self.root) <= self.settings.stuck_boots:
            delay = 10**6  # fault knob: this VM never finishes booting
        if random.random() < self.settings.hang_boot_fraction:
            delay = 10**6
        subprocess.Popen(["/bin/sh", os.path.join(vm_dir, "boot.sh"), vm_dir, sshd, str(float(delay))],
                         cwd=vm_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        die_after = self.settings.die_after if random.random() < self.settings.die_fraction else 0.0
        if die_after or self.settings.drop_ssh_every:  # run-time faults (localfaults.py)
            subprocess.Popen([sys.executable, "-m", "lando_ssh.cloud.localfaults", vm_dir, self.marker(request.name),
                              str(die_after), str(self.settings.drop_ssh_every)], cwd=vm_dir,
                             env={**env, "PYTHONPATH": _PACKAGE_ROOT},  # this lando-ssh, wherever it was imported from
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        return self._info(vm_dir)  # type: ignore[return-value]

    def get_vm(self, vm_id: str) -> VmInfo | None:
        return self._info(self._dir(vm_id))

    def find_vms(self, metadata: dict[str, str]) -> list[VmInfo]:
        return [v for v in self._all() if all(v.metadata.get(k) == val for k, val in metadata.items())]

    def tag_vm(self, vm_id: str, metadata: dict[str, str]) -> None:
        """Add `metadata` to the VM's (as Nova's server metadata update does)."""
        vm_dir = self._dir(vm_id)
        meta = _meta(vm_dir)
        if not meta:
            raise CloudNotFound(f"VM {vm_id} does not exist")
        meta["metadata"] = {**(meta.get("metadata") or {}), **metadata}
        tmp = os.path.join(vm_dir, "meta.json.tmp")
        self._write(vm_dir, "meta.json.tmp", json.dumps(meta))
        os.replace(tmp, os.path.join(vm_dir, "meta.json"))  # whole: a sweep may be reading it

    def console_log(self, vm_id: str) -> str:
        if self._internal_errors < self.settings.internal_errors:
            self._internal_errors += 1
            raise RuntimeError(f"cloud.local.internal_errors: injected internal error {self._internal_errors}")
        try:
            with open(os.path.join(self._dir(vm_id), "console.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def marker(self, vm_name: str) -> str:
        """The value of LANDO_LOCAL_VM in the processes of this installation's VM `vm_name`."""
        return f"{vm_name}@{self.token}"

    def processes(self, vm_id: str) -> set[int]:
        """The VM's processes (its sshd aside: sshd scrubs its environment)."""
        vm_dir = self._dir(vm_id)
        meta = _meta(vm_dir)
        if meta and "token" not in meta:  # made before tokens: see the module's doc
            return marked_pids(vm_id, inside=os.path.realpath(vm_dir))
        if meta.get("token", self.token) != self.token:  # cloud.local.root shared by two data dirs
            raise CloudError(f"VM {vm_id} in {vm_dir} was made by another lando-ssh installation (another data "
                             f"dir's token); it is not this one's to touch")
        return marked_pids(self.marker(vm_id))

    def delete_vm(self, vm_id: str) -> None:
        vm_dir = self._dir(vm_id)
        if random.random() < self.settings.fail_delete_fraction and os.path.isdir(vm_dir):
            raise CloudError(f"the local cloud failed to delete VM {vm_id} (injected: "
                             "cloud.local.fail_delete_fraction)")
        if os.path.isfile(os.path.join(vm_dir, "status")):  # deleting: gone for whoever asks (what a job sees of it)
            self._write(vm_dir, "status", "DELETED\n")
        with _deleting:  # a few at a time (see _deleting)
            self._delete(vm_id, vm_dir)

    def _delete(self, vm_id: str, vm_dir: str) -> None:
        kill_processes(lambda: self.processes(vm_id))  # boot.sh first, so it starts no sshd after this
        _kill_sshd(vm_dir)  # sshd scrubs its environment (no marker); its command line names its config
        _unmount_below(vm_dir)
        shutil.rmtree(vm_dir, ignore_errors=True)
        if os.path.exists(vm_dir):
            raise CloudError(f"could not remove VM {vm_id}'s directory {vm_dir}")

    def close(self) -> None:
        pass

    # -- helpers ---------------------------------------------------------------------------
    def _dir(self, vm_id: str) -> str:
        if not vm_id or "/" in vm_id or vm_id.startswith("."):
            raise CloudError(f"{vm_id!r} is not a local VM id")
        return os.path.join(self.root, vm_id)

    def _all(self) -> list[VmInfo]:
        try:
            names = sorted(n for n in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, n)))
        except FileNotFoundError:
            return []
        infos = (self._info(os.path.join(self.root, n)) for n in names)
        return [i for i in infos if i]

    def _info(self, vm_dir: str) -> VmInfo | None:
        meta = _meta(vm_dir)
        try:
            with open(os.path.join(vm_dir, "status")) as f:
                status = f.read().strip() or "BUILD"
        except FileNotFoundError:
            return None
        if not meta:
            return None
        fault = None
        if status == "ERROR":
            try:
                with open(os.path.join(vm_dir, "fault")) as f:
                    fault = f.read().strip()
            except FileNotFoundError:
                fault = "the VM failed to boot"
        flavor = next((f for f in self.flavors() if f.name == meta.get("flavor")), None)
        return VmInfo(id=meta["id"], name=meta["name"], status=status, address="127.0.0.1", port=meta["port"],
                      metadata=meta.get("metadata") or {}, fault=fault, flavor=flavor,
                      created=datetime.fromisoformat(meta["created"]))

    def _flavor(self, name_or_id: str) -> Flavor:
        for f in self.flavors():
            if name_or_id in (f.name, f.id):
                return f
        names = ", ".join(f.name for f in self.flavors())
        raise CloudNotFound(f"flavor {name_or_id!r} does not exist; flavors: {names}")

    def _sshd_config(self, vm_dir: str, marker: str, port: int) -> str:
        return sshd_config(vm_dir, marker, port, ["127.0.0.1"], path=self.settings.path, user=self.user)

    @staticmethod
    def _write(vm_dir: str, name: str, text: str) -> None:
        with open(os.path.join(vm_dir, name), "w") as f:
            f.write(text)


def sshd_config(vm_dir: str, marker: str, port: int, addresses: Sequence[str], *, path: Sequence[str] = (),
                user: str | None = None) -> str:
    """The sshd_config of a VM that is a directory here (the local cloud's, and the guests of the tests' OpenStack):
    its host key, pid file and authorized keys in `vm_dir`, key logins only, its processes marked with `marker`."""
    search = [*path, os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin",
              "/usr/sbin", "/sbin"]
    q = _sshd_quote
    return "\n".join([
        f"Port {port}",
        *(f"ListenAddress {a}" for a in addresses),
        f"HostKey {q(os.path.join(vm_dir, 'host_key'))}",
        f"PidFile {q(os.path.join(vm_dir, 'sshd.pid'))}",
        f"AuthorizedKeysFile {q(os.path.join(vm_dir, 'authorized_keys'))}",
        *([f"AllowUsers {user}"] if user else []),
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "Subsystem sftp internal-sftp",
        # SHLVL=1 keeps bash from sourcing ~/.bashrc for ssh commands (costly for root here)
        f"SetEnv {q('PATH=' + ':'.join(search))} SHLVL=1 {MARKER}={q(marker)}",
        "MaxStartups 200:30:400",
        "MaxSessions 100",
        "ClientAliveInterval 30",
        "",
    ])


def _sshd_quote(s: str) -> str:
    if any(c in s for c in ' \t"'):
        return '"' + s.replace('"', '\\"') + '"'
    return s


def _runcmd_script(runcmd: list) -> str:
    """runcmd as cloud-init runs it: argv lists without a shell, strings through sh."""
    lines = ["#!/bin/sh", "set -e"]
    for cmd in runcmd:
        lines.append(" ".join(shlex.quote(str(a)) for a in cmd) if isinstance(cmd, list) else str(cmd))
    return "\n".join(lines) + "\n"


_BOOT_SCRIPT = r"""#!/bin/sh
# boot.sh VM_DIR SSHD BOOT_DELAY: what cloud-init and init do on a real VM, in brief
set -u
vm=$1 sshd=$2 delay=$3
cd "$vm" || exit 1
fail() { printf '%s\n' "$1" > fault; echo ERROR > status; exit 1; }
[ "$delay" = "0.0" ] || sleep "$delay"
echo "Cloud-init v. lando-ssh local running 'modules:final'" >> console.log
# the host key is made on first boot, as cloud-init makes it, and printed to the console between its markers
ssh-keygen -q -t ed25519 -N '' -C "root@${vm##*/}" -f host_key </dev/null >> console.log 2>&1 \
    || fail "ssh-keygen could not make the host key: $(tail -n 5 console.log)"
"$sshd" -f "$vm/sshd_config" -E "$vm/sshd.log" || fail "sshd did not start: $(tail -n 5 sshd.log)"
{ echo "-----BEGIN SSH HOST KEY KEYS-----"; cut -d ' ' -f 1-2 host_key.pub; echo "-----END SSH HOST KEY KEYS-----"; } \
    >> console.log
echo ACTIVE > status
# as on a real VM, sshd answers before cloud-init's final stage has run runcmd (which marks the work dir ready)
sh runcmd.sh >> console.log 2>&1 || fail "cloud-init runcmd failed: $(tail -n 5 console.log)"
echo "Cloud-init v. lando-ssh local finished" >> console.log
"""


def _created_count(root: str) -> int:
    try:
        with open(os.path.join(root, "created.log")) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _mount_disk(path: str, size_mb: int) -> None:
    """A size-limited filesystem for the VM's work dir, so a full disk is a real ENOSPC."""
    if os.geteuid() != 0:
        raise CloudError("cloud.local.disk_mb needs root (it mounts a tmpfs of that size as the VM's disk)")
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CloudError(f"cannot make the VM's {size_mb} MB disk: {proc.stderr.strip()}")


def _unmount_below(vm_dir: str) -> None:
    try:
        with open("/proc/mounts") as f:
            points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(vm_dir + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _free_port() -> int:
    with _port_lock:
        for _ in range(50):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _recent_ports:
                _recent_ports.append(port)
                return port
    raise CloudError("no free local port for a VM")


def _kill_sshd(vm_dir: str) -> None:
    """Every sshd of this VM (listener and sessions), found by the config path on its command line."""
    needle = os.path.join(vm_dir, "sshd_config").encode()
    for attempt in range(50):
        pids = [pid for pid, proc in _PROCS.fresh().items() if needle in proc.cmdline]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL if attempt else signal.SIGTERM)
            except OSError:
                pass
        _wait_gone(pids, 0.05)  # sshd exits within ~1 ms of TERM


@dataclass(frozen=True)
class _Proc:
    sid: int
    marker: bytes | None  # the value of LANDO_LOCAL_VM in its environment
    cmdline: bytes


class _ProcTable:
    """One pass over /proc, shared by the deletes that ask at the same time.

    A delete looks for its VM's processes by their environment, which means reading every process's
    environ: with a thousand VMs (~6,000 processes) and a thousand deletes at once, a pass each was most
    of the machine's CPU. A caller gets a pass that began after it asked (so it sees every process that
    existed then); the callers that ask while one runs share the next.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._began = float("-inf")
        self._table: dict[int, _Proc] = {}

    def fresh(self) -> dict[int, _Proc]:
        asked = time.monotonic()
        with self._lock:
            if self._began < asked:
                began = time.monotonic()
                self._table = _scan_procs()
                self._began = began
            return self._table


_PROCS = _ProcTable()


# The pass over /proc, run in a child process: in a daemon with a thousand job threads, a thread making its
# ~3,000 reads waited for the GIL after each one (a pass took minutes there against 0.5 s alone).
_SCAN_SCRIPT = r"""
import os, sys
out = []
prefix = b"LANDO_LOCAL_VM="
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % entry, "rb") as f:
            stat = f.read()
        sid = stat[stat.rindex(b")") + 2:].split()[3]
        with open("/proc/%s/environ" % entry, "rb") as f:
            environ = f.read()
        with open("/proc/%s/cmdline" % entry, "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        continue
    marker = next((v[len(prefix):] for v in environ.split(b"\0") if v.startswith(prefix)), b"")
    out.append(b"\t".join([entry.encode(), sid, marker.hex().encode(), cmdline.hex().encode()]))
sys.stdout.buffer.write(b"\n".join(out))
"""


def _scan_procs() -> dict[int, _Proc]:
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _SCAN_SCRIPT], capture_output=True)
    if proc.returncode != 0:
        raise CloudError(f"the local cloud could not list processes: {proc.stderr.decode(errors='replace')[-500:]}")
    table = {}
    for line in proc.stdout.split(b"\n"):
        if line:
            pid, sid, marker, cmdline = line.split(b"\t")
            table[int(pid)] = _Proc(int(sid), bytes.fromhex(marker.decode()) or None, bytes.fromhex(cmdline.decode()))
    return table


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")  # a zombie has ended


def _wait_gone(pids: Collection[int], grace: float) -> None:
    """Up to `grace` seconds for these processes to end: blocked on their pidfds (a thousand deletes at once
    polling /proc every few ms were thousands of wake-ups a second, and a GIL convoy that stalled them all)."""
    fds: list[int] = []
    deadline = time.monotonic() + grace
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue  # gone already
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)  # readable once the process has ended (zombie or not)
        left = len(fds)
        while left and (remaining := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                left -= 1
    except (AttributeError, OSError):  # no pidfds here (Linux before 5.3): look every few ms
        pause = 0.002
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    finally:
        for fd in fds:
            os.close(fd)


def _meta(vm_dir: str) -> dict:
    try:
        with open(os.path.join(vm_dir, "meta.json")) as f:
            meta = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def marked_pids(marker: str, inside: str | None = None) -> set[int]:
    """Processes carrying LANDO_LOCAL_VM=marker (with `inside`: only those working in that directory or
    below), and every process in their sessions."""
    table = _PROCS.fresh()
    value = marker.encode()
    marked = {pid for pid, proc in table.items()
              if proc.marker == value and (inside is None or _works_in(pid, inside))}
    sessions = {table[pid].sid for pid in marked} - {0, 1, os.getsid(0)}
    return marked | {pid for pid, proc in table.items() if proc.sid in sessions}


def _works_in(pid: int, directory: str) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == directory or cwd.startswith(directory + "/")


def kill_processes(find: Callable[[], set[int]], grace: float = 2.0) -> None:
    """TERM, then KILL, what `find` finds (again after each signal), until nothing is left."""
    me = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = find() - {me}
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        _wait_gone(pids, grace)  # processes usually go within milliseconds of the signal
