"""One SSH connection to one VM: run, put, get; host keys pinned, never auto-accepted.

Commands are argv lists, quoted with `shlex.quote` here and nowhere else, so job data never
reaches a remote shell unquoted. The connection is opened once and reused; a dropped
connection is reopened (with back-off, up to `retry_for` seconds) and an idempotent command
is run again. Files move as tar streams: over the paramiko connection for small transfers,
through OpenSSH's `ssh` for large ones (paramiko's SFTP runs at ~0.4x of OpenSSH here).
"""
from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import io
import logging
import os
import select
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import types
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from lando_ssh.errors import HostKeyMismatch, RemoteCommandFailed, SshAuthRefused, StagingFailed, VmUnreachable

if TYPE_CHECKING:
    import paramiko

_import_lock = threading.Lock()


def _paramiko() -> ModuleType:
    """paramiko, imported on first use (~60 ms of imports): `preload` starts that early, in the background."""
    with _import_lock:
        if "paramiko" in sys.modules:
            return sys.modules["paramiko"]
        # paramiko imports invoke only to run ssh_config `Match exec`, which we never read; importing it
        # costs ~40 ms at start and ~30 ms at exit of every lando-ssh command, so it is hidden meanwhile
        hide_invoke = "invoke" not in sys.modules
        if hide_invoke:
            sys.modules["invoke"] = None  # type: ignore[assignment]
        try:
            with _own_version_without_metadata("paramiko"):
                import paramiko
        finally:
            if hide_invoke:
                del sys.modules["invoke"]
        return paramiko


def _is_ssh_error(e: BaseException) -> bool:
    """paramiko's SSHException, told without importing paramiko (a first connection does not wait for it:
    its TCP connect goes ahead while paramiko loads)."""
    paramiko = sys.modules.get("paramiko")
    return paramiko is not None and isinstance(e, paramiko.SSHException)


class _MetadataStandIn(types.ModuleType):
    """What `from importlib import metadata` finds while paramiko loads: its own version from its METADATA
    file; anything else from the real importlib.metadata, imported on first use (so a thread that meets the
    stand-in meanwhile loses nothing)."""

    def __init__(self, name: str, version: str):
        super().__init__("importlib.metadata")
        self._known = (name, version)

    def version(self, distribution_name: str) -> str:
        if distribution_name == self._known[0]:
            return self._known[1]
        return str(self._real().version(distribution_name))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)

    @staticmethod
    def _real() -> ModuleType:
        import importlib

        return importlib.import_module("importlib.metadata")  # sys.modules' own entry: never the stand-in


@contextlib.contextmanager
def _own_version_without_metadata(name: str) -> Iterator[None]:
    """paramiko 5 reads its own version through importlib.metadata, whose import (email, zipfile, csv, ...)
    is ~15 ms of CPU on every job's path. Meanwhile `importlib.metadata` is, as an attribute of importlib, a
    stand-in that answers that one question; sys.modules is not touched, so `import importlib.metadata`
    anywhere still loads the real module, which then replaces the stand-in as importlib's attribute."""
    import importlib
    import importlib.util

    version = None
    if not hasattr(importlib, "metadata") and "importlib.metadata" not in sys.modules:
        version = _installed_version(name, importlib.util.find_spec(name))
    if version is None:
        yield
        return
    stand_in = _MetadataStandIn(name, version)
    importlib.metadata = stand_in  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if getattr(importlib, "metadata", None) is stand_in:
            real = sys.modules.get("importlib.metadata")
            if real is not None:
                importlib.metadata = real  # type: ignore[attr-defined]
            else:
                del importlib.metadata  # type: ignore[attr-defined]


def _installed_version(name: str, spec: Any) -> str | None:
    """The Version of the one `<name>-*.dist-info` beside the package, or None (then the real lookup runs)."""
    if spec is None or not spec.submodule_search_locations:
        return None
    where = os.path.dirname(list(spec.submodule_search_locations)[0])
    try:
        infos = [e for e in os.listdir(where) if e.startswith(f"{name}-") and e.endswith(".dist-info")]
        if len(infos) != 1:
            return None
        with open(os.path.join(where, infos[0], "METADATA"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    return None  # the headers ended without one
    except OSError:
        return None
    return None


def preload() -> None:
    """Import paramiko in a background thread, so that it is there when a VM that is booting answers."""
    if "paramiko" not in sys.modules:
        threading.Thread(target=_paramiko, name="import-paramiko", daemon=True).start()

log = logging.getLogger(__name__)

# Seconds an idle reader sleeps between checks; data, EOF and close wake it at once. Each wake-up of an idle
# job costs the daemon a thread switch under the GIL: at 2 s, a thousand waiting jobs woke 1,000 times a
# second (paramiko's reader and ours), and the threads' convoy on the GIL took both cores in futex calls.
IDLE_WAKEUP = 30.0  # our reader (`_drain`): a closed channel sets its event pipe, which wakes it
TRANSPORT_WAKEUP = 30.0  # paramiko's reader: it sends its keepalive then (every 30 s); close() wakes it
BULK_BYTES = 8 * 1024 * 1024  # above this, transfers go through OpenSSH's ssh
SENDFILE_PIECE = 16 * 1024 * 1024  # one sendfile moves at most this much: the progress display sees it move
COPY_BUF = 1024 * 1024


@dataclass
class Endpoint:
    """How to reach a VM: address, port, user, the job's private key and the pinned host keys."""

    address: str
    port: int
    user: str
    key_path: str
    host_keys: list[str] = field(default_factory=list)  # "ssh-ed25519 AAAA..." lines
    known_hosts_path: str | None = None  # the same keys as a known_hosts file, for OpenSSH

    @property
    def label(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def quote_argv(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def openssh_argv(ep: Endpoint, *, tty: bool = False, connect_timeout: float = 10) -> list[str]:
    """`ssh` options that use the job's key and pinned host key only (the admin's `lando-ssh ssh`)."""
    if not ep.known_hosts_path:
        raise VmUnreachable("the VM's host key is not known yet, so a connection cannot be verified")
    return ["ssh", "-i", ep.key_path, "-p", str(ep.port),
            "-o", f"UserKnownHostsFile={ep.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={int(connect_timeout)}", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=30", "-t" if tty else "-T", f"{ep.user}@{ep.address}"]


def _bulk_ssh_argv(ep: Endpoint) -> list[str]:
    """`ssh` for bulk transfers: AES-GCM first where the CPU has AES instructions (220 MiB/s here
    against 160 for OpenSSH's default chacha20-poly1305); the server still picks from the list."""
    argv = openssh_argv(ep)
    if not _cpu_has_aes():
        return argv
    ciphers = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"
    return [*argv[:-1], "-o", f"Ciphers={ciphers}", argv[-1]]


@functools.cache
def _cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " aes" in line for line in f)
    except OSError:
        return False


class _PromptAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once.

    sshd leaves Nagle on for exec sessions, so a reply it writes while an earlier one is
    unacknowledged waits for our ACK, which Linux delays by 40 ms: the first command on every
    connection paid that (its channel confirmation followed sshd's post-auth messages).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data and _TCP_QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass  # closed meanwhile: the next recv says so
        return data


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _connect_socket(address: str, port: int, timeout: float) -> socket.socket:
    error: OSError = OSError(f"no address for {address}")
    # an ASCII name as bytes: a str would load the idna codec (~3 ms at every start) only to encode it alike
    host: str | bytes = address.encode() if address.isascii() else address
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = _PromptAckSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
        except OSError as e:
            sock.close()
            error = e
            continue
        # without TCP_NODELAY each command waits ~40 ms on Nagle + delayed ACK (47 ms -> 5 ms per exec here)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


class Meter:
    """The bytes a connection's transfers have moved so far (tar streams, both ways): read from another
    thread by a progress display."""

    def __init__(self) -> None:
        self.bytes = 0


class _ChannelWriter(io.RawIOBase):
    """A channel's stdin as a file, for tarfile."""

    def __init__(self, channel: paramiko.Channel, meter: Meter):
        self.channel = channel
        self.meter = meter

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.channel.sendall(bytes(b))
        self.meter.bytes += len(b)
        return len(b)


class _Counted:
    """A stream read through, its bytes counted on a Meter."""

    def __init__(self, stream: IO[bytes], meter: Meter):
        self.stream = stream
        self.meter = meter

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.meter.bytes += len(data)
        return data


class Remote:
    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 10.0, retry_for: float = 30.0,
                 abort: threading.Event | None = None):
        self.ep = endpoint
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.abort = abort or threading.Event()  # set (and close()): calls in flight fail, none reconnect
        self._interrupted = threading.Event()  # a deadline passed: calls in flight fail, none reconnect
        self._procs: set[subprocess.Popen[bytes]] = set()  # OpenSSH bulk transfers under way
        self.meter = Meter()
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> paramiko.Transport:
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return t
                self._client.close()
                self._client = None
            self._client = self._open()
            t = self._client.get_transport()
            assert t is not None
            return t

    def _open(self) -> paramiko.SSHClient:
        if not self.ep.host_keys:
            raise HostKeyMismatch(f"no host key is pinned for {self.ep.label}; refusing to connect")
        # the TCP connection before paramiko: while a job's first connection waits for paramiko to finish
        # loading, the VM's sshd forks for it and sends its banner (~8 ms here), on the VM's CPU
        try:
            sock = _connect_socket(self.ep.address, self.ep.port, self.connect_timeout)
        except OSError as e:
            raise VmUnreachable(f"cannot reach {self.ep.label}: {_os_reason(e)}") from None
        try:
            return self._handshake(sock)
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock: socket.socket) -> paramiko.SSHClient:
        paramiko = _paramiko()
        client = paramiko.SSHClient()
        hostname = self.ep.address if self.ep.port == 22 else f"[{self.ep.address}]:{self.ep.port}"
        for line in self.ep.host_keys:
            kind, data = line.split()[:2]
            client.get_host_keys().add(hostname, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            pkey = paramiko.Ed25519Key.from_private_key_file(self.ep.key_path)
        except (OSError, paramiko.SSHException) as e:
            raise VmUnreachable(f"cannot read the job's SSH key {self.ep.key_path}: {e}") from None
        try:
            client.connect(self.ep.address, port=self.ep.port, username=self.ep.user, pkey=pkey, sock=sock,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(f"{self.ep.label} presented host key {e.key.get_base64()[:16]}..., "
                                  "not the pinned one; refusing to connect") from None
        except paramiko.AuthenticationException:
            client.close()
            raise SshAuthRefused(f"{self.ep.label} refused the job's SSH key") from None
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise HostKeyMismatch(f"{self.ep.label} presented a host key of a type we did not pin") from None
            raise VmUnreachable(f"SSH to {self.ep.label} failed: {e}") from None
        except (OSError, EOFError) as e:
            client.close()
            raise VmUnreachable(f"cannot reach {self.ep.label}: {_os_reason(e)}") from None
        t = client.get_transport()
        if t is not None:
            t.set_keepalive(30)
            # paramiko's reader thread wakes on every socket timeout (0.1 s) only to look for a close;
            # with a hundred idle connections that is most of the daemon's CPU (`close` wakes it instead)
            t.sock.settimeout(TRANSPORT_WAKEUP)
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                _wake_reader(self._client)
                self._client.close()
                self._client = None

    def interrupt(self) -> None:
        """Make the calls in flight fail now (a deadline passed): bulk transfers killed, the connection closed."""
        self._interrupted.set()
        for proc in list(self._procs):
            proc.kill()
        self.close()

    def resume(self) -> None:
        """After `interrupt`: new calls may connect again."""
        self._interrupted.clear()

    def _retrying(self, what: str, fn: Any, retry: bool) -> Any:
        deadline = time.monotonic() + (self.retry_for if retry else 0)
        delay = 0.1
        while True:
            try:
                return fn()
            except HostKeyMismatch:
                raise
            except Exception as e:
                if not isinstance(e, (VmUnreachable, OSError, EOFError)) and not _is_ssh_error(e):
                    raise
                self.close()
                if self.abort.is_set() or self._interrupted.is_set():
                    raise VmUnreachable(f"{what} on {self.ep.label} was interrupted") from None
                if time.monotonic() + delay > deadline:
                    if isinstance(e, VmUnreachable):
                        raise
                    raise VmUnreachable(f"lost the SSH connection to {self.ep.label} during {what}: "
                                        f"{_os_reason(e)}") from None
                log.debug("%s: %s; reconnecting in %.1fs", self.ep.label, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- commands --------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None,
            check: bool = True, retry: bool = True, what: str | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        """Run argv on the VM; retried after a dropped connection when `retry` (the command is idempotent).
        `on_stdout` sees the stdout so far each time more of it arrives, while the command still runs."""
        command = quote_argv(argv)
        result: Result = self._retrying(what or argv[0], lambda: self._exec(command, stdin, timeout, on_stdout),
                                        retry)
        if check and result.exit_code != 0:
            raise RemoteCommandFailed(f"{what or argv[0]} failed on {self.ep.label} with exit code "
                                      f"{result.exit_code}: {result.stderr.strip()[-2000:]}",
                                      result.exit_code, result.stderr)
        return result

    def _exec(self, command: str, stdin: bytes | None, timeout: float | None,
              on_stdout: Callable[[bytes], None] | None = None) -> Result:
        chan = self.connect().open_session(timeout=self.connect_timeout)
        try:
            if timeout:
                chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = _drain(chan, timeout, on_stdout)
            code = chan.recv_exit_status()
            if code == -1:
                raise VmUnreachable("the command ended without an exit status (connection lost)")
            return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        except TimeoutError:
            raise VmUnreachable(f"a command on {self.ep.label} did not answer within {timeout:.0f}s") from None
        finally:
            chan.close()

    # -- files -----------------------------------------------------------------------------
    def put_files(self, entries: Sequence[tuple[str, str]], remote_dir: str, *, retry: bool = True,
                  then: Sequence[str] = (), files: dict[str, bytes] | None = None,
                  executable: Collection[str] = ()) -> tuple[int, str]:
        """Send local files/dirs as `(local_path, relative_dest)` into remote_dir, after `files` (small ones
        given as bytes: `{relative_dest: data}`, made 0644, or 0755 when named in `executable`); `then` is a
        command run after them in the same round trip. Returns the bytes sent from `entries` and the command's
        stdout."""
        total = sum(_tree_size(p) for p, _ in entries)
        made = _byte_members(files or {}, executable)

        def fill(out: IO[bytes]) -> None:
            with tarfile.open(fileobj=out, mode="w|", bufsize=COPY_BUF, dereference=True,
                              format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = COPY_BUF  # type: ignore[attr-defined]
                for info, data in made:
                    tar.addfile(info, io.BytesIO(data))
                for local, dest in entries:
                    tar.add(local, arcname=dest.lstrip("/"), recursive=True)

        out = self._retrying("staging", lambda: self._push_tar(fill, remote_dir, total, then=then,
                                                               stream=lambda fd: _send_tar(fd, entries, made,
                                                                                           self.meter)),
                             retry)
        return total, str(out)

    def put_bytes(self, files: dict[str, bytes], remote_dir: str, *, executable: Collection[str] = (),
                  then: Sequence[str] = ()) -> str:
        """Write small files into remote_dir (0644, or 0755 when named in `executable`); `then` is a command
        run after them in the same round trip (its stdout is returned)."""
        return self.put_files([], remote_dir, then=then, files=files, executable=executable)[1]

    def get_dir(self, remote_dir: str, local_dir: str, *, total_hint: int = 0, retry: bool = True) -> int:
        """Copy remote_dir's contents into local_dir; returns bytes received (file contents)."""
        os.makedirs(local_dir, exist_ok=True)
        return int(self._retrying("download", lambda: self._pull_tar(remote_dir, local_dir, total_hint), retry))

    def _push_tar(self, fill: Any, remote_dir: str, total: int, stream: Any = None, then: Sequence[str] = ()) -> str:
        script = 'mkdir -p "$1" && tar -xf - -C "$1" && shift && exec "$@"' if then else \
            'mkdir -p "$1" && exec tar -xf - -C "$1"'
        command = quote_argv(["sh", "-c", script, "sh", remote_dir, *then])
        if total >= BULK_BYTES and self._openssh_ok():
            proc = subprocess.Popen([*_bulk_ssh_argv(self.ep), command], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE if then else subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._procs.add(proc)  # interrupt() kills it
            try:
                assert proc.stdin is not None
                try:
                    if stream is not None:
                        _grow_pipe(proc.stdin.fileno())
                        stream(proc.stdin.fileno())
                    else:
                        fill(proc.stdin)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                except BaseException:  # a local file could not be read: stop ssh and the remote tar
                    proc.kill()
                    proc.wait()
                    raise
                # what `then` prints comes once the stream is in (its output is small: no pipe fills meanwhile)
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if proc.wait() != 0:
                    raise _transfer_error(err, proc.returncode, self.ep.label)
                return out
            finally:
                self._procs.discard(proc)
        chan = self.connect().open_session(timeout=self.connect_timeout)
        try:
            chan.exec_command(command)
            writer = io.BufferedWriter(_ChannelWriter(chan, self.meter), buffer_size=256 * 1024)
            try:
                fill(writer)
                writer.flush()
            except OSError:
                pass  # the remote tar stopped reading; its stderr says why
            chan.shutdown_write()
            stdout, stderr = _drain(chan)
            code = chan.recv_exit_status()
        finally:
            chan.close()
        if code != 0:
            raise _transfer_error(stderr.decode(errors="replace"), code, self.ep.label)
        return stdout.decode(errors="replace")

    def _pull_tar(self, remote_dir: str, local_dir: str, total_hint: int) -> int:
        command = quote_argv(["tar", "-cf", "-", "-C", remote_dir, "."])
        received = 0
        if total_hint >= BULK_BYTES and self._openssh_ok():
            proc = subprocess.Popen([*_bulk_ssh_argv(self.ep), command], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            self._procs.add(proc)  # interrupt() kills it
            try:
                assert proc.stdout is not None
                _grow_pipe(proc.stdout.fileno())
                received = _extract(_Counted(proc.stdout, self.meter), local_dir)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if proc.wait() != 0:
                    raise _transfer_error(err, proc.returncode, self.ep.label)
                return received
            finally:
                self._procs.discard(proc)
        chan = self.connect().open_session(timeout=self.connect_timeout)
        try:
            chan.exec_command(command)
            chan.shutdown_write()
            reader = io.BufferedReader(_ChannelReader(chan), buffer_size=256 * 1024)
            received = _extract(_Counted(reader, self.meter), local_dir)
            stderr = b""
            while True:
                chunk = chan.recv_stderr(65536)
                if not chunk:
                    break
                stderr += chunk
            code = chan.recv_exit_status()
        finally:
            chan.close()
        if code != 0:
            raise _transfer_error(stderr.decode(errors="replace"), code, self.ep.label)
        return received

    def _openssh_ok(self) -> bool:
        return bool(self.ep.known_hosts_path and os.path.exists(self.ep.known_hosts_path) and shutil.which("ssh"))


class _ChannelReader(io.RawIOBase):
    def __init__(self, channel: paramiko.Channel):
        self.channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.channel.recv(len(b))
        b[: len(data)] = data
        return len(data)


def _byte_members(files: dict[str, bytes], executable: Collection[str]) -> list[tuple[tarfile.TarInfo, bytes]]:
    members = []
    for name, data in files.items():
        info = tarfile.TarInfo(name.lstrip("/"))
        info.size, info.mtime = len(data), int(time.time())
        info.mode = 0o755 if name in executable else 0o644
        members.append((info, data))
    return members


def _send_tar(fd: int, entries: Sequence[tuple[str, str]],
              made: Sequence[tuple[tarfile.TarInfo, bytes]] = (), meter: Meter | None = None) -> None:
    """What `tarfile` writes for `entries` (PAX, symlinks followed), onto the pipe `fd`, with the
    file contents moved by `os.sendfile` from the page cache into the pipe: Python's tarfile
    copies every byte three times on the way, which held the bulk path well below scp."""
    tar = tarfile.TarFile(fileobj=io.BytesIO(), mode="w", dereference=True, format=tarfile.PAX_FORMAT)
    written = 0
    meter = meter or Meter()

    def write(data: bytes) -> None:
        nonlocal written
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
            written += n
            meter.bytes += n

    def add(path: str, arcname: str) -> None:
        nonlocal written
        info = tar.gettarinfo(path, arcname)
        if info is None:  # a socket: tarfile skips it too
            return
        write(info.tobuf(tarfile.PAX_FORMAT, tar.encoding, tar.errors))
        if info.isreg() and info.size:
            with open(path, "rb") as f:
                offset = 0
                while offset < info.size:
                    try:
                        n = os.sendfile(fd, f.fileno(), offset, min(info.size - offset, SENDFILE_PIECE))
                    except OSError as e:
                        if e.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                            raise
                        n = _copy_plain(f, fd, info.size)  # no sendfile into a pipe here
                    if n == 0:
                        raise StagingFailed(f"{path} shrank while it was being sent")
                    offset += n
                    written += n
                    meter.bytes += n
            write(tarfile.NUL * (-info.size % tarfile.BLOCKSIZE))
        elif info.isdir():
            for name in sorted(os.listdir(path)):
                add(os.path.join(path, name), f"{arcname}/{name}")

    for info, data in made:
        write(info.tobuf(tarfile.PAX_FORMAT, tar.encoding, tar.errors) + data
              + tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))
    for local, dest in entries:
        add(local, dest.lstrip("/"))
    write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
    write(tarfile.NUL * (-written % tarfile.RECORDSIZE))


def _grow_pipe(fd: int) -> None:
    # a 1 MiB pipe instead of 64 KiB: fewer wake-ups of us and of ssh per MiB sent
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, COPY_BUF)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass


def _copy_plain(f: IO[bytes], fd: int, size: int) -> int:
    copied = 0
    while copied < size:
        chunk = f.read(min(COPY_BUF, size - copied))
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        copied += len(chunk)
    return copied


def _extract(stream: _Counted, local_dir: str) -> int:
    received = 0
    dir_modes: list[tuple[str, int]] = []  # set once all is in: a read-only directory takes no files
    with tarfile.open(fileobj=stream, mode="r|", bufsize=COPY_BUF) as tar:  # type: ignore[call-overload]
        # file contents in COPY_BUF pieces too: the default 16 KiB pieces each re-slice the 1 MiB read-ahead
        tar.copybufsize = COPY_BUF  # type: ignore[attr-defined]
        for member in tar:
            target = os.path.join(local_dir, member.name)
            if member.isfile():  # a read-only file pulled before (a rerun's): replaced, not written into
                if os.path.isfile(target) and not os.access(target, os.W_OK):
                    os.unlink(target)
            elif member.isdir() and os.path.normpath(member.name) != ".":  # (local_dir itself keeps its mode)
                if os.path.isdir(target) and not os.access(target, os.W_OK):  # a read-only one pulled before
                    os.chmod(target, stat.S_IMODE(os.lstat(target).st_mode) | stat.S_IRWXU)
                dir_modes.append((target, member.mode & 0o755))  # as the data filter: no group/other write
            try:
                tar.extract(member, local_dir, filter=_data_keeping_read_only)
            except tarfile.FilterError as e:  # (lando-organize turns cwltool's links to its inputs into copies)
                raise StagingFailed(f"refused to write {member.name!r} into {local_dir}: {e}") from None
            if member.isfile():
                received += member.size
    for target, mode in reversed(dir_modes):  # deepest first
        os.chmod(target, mode)
    return received


def _data_keeping_read_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "data" filter (no absolute paths, no '..', no links that leave `dest`, no special files,
    no set-id bits or group/other write), without its making every file writable by its owner: a
    read-only output (a copy of a read-only input) comes back read-only, as cwltool leaves it. (The
    filter leaves directories at the default mode; `_extract` gives them theirs at the end.)"""
    filtered = tarfile.data_filter(member, dest)
    if filtered.isfile() and member.mode is not None:
        return filtered.replace(mode=member.mode & 0o755, deep=False)
    return filtered


def _drain(chan: paramiko.Channel, timeout: float | None = None,
           on_stdout: Callable[[bytes], None] | None = None) -> tuple[bytes, bytes]:
    """All of a command's stdout and stderr, reading both so neither window fills and stalls the other.
    Raises TimeoutError when nothing ends it within `timeout` seconds."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout if timeout else None
    idle = 0.0
    # poll, not select: select cannot watch a descriptor above 1023, which a daemon driving hundreds of jobs has
    poller = select.poll()
    poller.register(chan.fileno(), select.POLLIN)
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
            idle = 0.0
            if on_stdout is not None:
                on_stdout(bytes(out))
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            idle = 0.0
        elif chan.exit_status_ready() or chan.closed:
            return bytes(out), bytes(err)
        else:
            wait = IDLE_WAKEUP if deadline is None else min(IDLE_WAKEUP, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError()
            if idle:
                # paramiko's event pipe can be left signalled with nothing to read (seen between EOF and the
                # exit status, and after races between its reader thread and ours): back off instead of
                # spinning; the exit status still wakes us at once
                chan.status_event.wait(min(idle, wait))
                idle = min(idle * 2, 0.05)
            elif poller.poll(wait * 1000):  # signalled on data, on EOF, on stderr
                idle = 0.001


def _wake_reader(client: paramiko.SSHClient) -> None:
    """End paramiko's reader thread now rather than at its next socket timeout: a socket closed under a
    blocked recv() does not wake it; one shut down does."""
    t = client.get_transport()
    if t is not None and isinstance(t.sock, socket.socket):
        try:
            t.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more


def _tree_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _os_reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def _transfer_error(stderr: str, code: int | None, label: str) -> StagingFailed:
    text = stderr.strip()
    if "No space left on device" in text:
        return StagingFailed(f"the VM's disk is full (no space left on device) while copying files to {label}")
    return StagingFailed(f"copying files to/from {label} failed (exit {code}): {text[-500:]}")
