"""One driver per job on this machine: the daemon and a foreground `lando-ssh job N` never both walk job N.

A job's engine holds an exclusive `flock` on `<data_dir>/locks/job-N` while it works on the job; the
kernel lets go of it when the process ends, however it ends, so a crashed driver never blocks the next
one. (Across machines sharing a PostgreSQL store, the store's leases do this job.)
"""
from __future__ import annotations

import fcntl
import os
import re

from lando_ssh.errors import JobConflict


class JobLock:
    def __init__(self, locks_dir: str, job_id: int):
        self.path = os.path.join(locks_dir, f"job-{job_id}")
        self.job_id = job_id
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise JobConflict naming the process that holds it."""
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip()
                os.close(fd)
                raise JobConflict(f"job {self.job_id} is being run by another lando-ssh process on this machine"
                                  f"{f' ({holder})' if holder else ''}; see `lando-ssh status {self.job_id}`") from None
            try:  # the holder before us may have removed the file as it let go: lock the file that is there now
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {_command_line()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


_FLOCK = re.compile(r"FLOCK\s+\S+\s+\S+\s+\d+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s")


def lock_table() -> str | None:
    """The kernel's table of file locks (None where there is none to read)."""
    try:
        with open("/proc/locks") as f:
            return f.read()
    except OSError:
        return None


def holder(locks_dir: str, job_id: int, table: str | None = None) -> str | None:
    """Who drives job N on this machine ("pid 123: lando-ssh job 4"), or None when no process does (it ended
    however it ended). Read without taking the lock, so a look never gets in a driver's way: the kernel's
    table of flock locks (`lock_table()`, read here unless given) says whether the lock file is locked."""
    path = os.path.join(locks_dir, f"job-{job_id}")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read(200).decode(errors="replace").strip()
    except FileNotFoundError:  # let go of (the file goes with the lock), or never taken
        return None
    table = table if table is not None else lock_table()
    if table is None:  # no such table here: the holder's pid must at least be alive
        pid = text.split(":", 1)[0].removeprefix("pid ")
        return text if pid.isdigit() and _alive(int(pid)) else None
    for major, minor, inode in _FLOCK.findall(table):
        if int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
            return text or "a process starting"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


def _command_line() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "lando-ssh"
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return text if len(text) <= 120 else text[:117] + "..."
