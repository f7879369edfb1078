"""cwltool's log of a job, for `lando-ssh logs` and the status page: one reader.

Once the job's results are stored (or while it runs again: then its docs hold an earlier run's), the
copy in the job's docs; else, while cwltool runs, its stderr in the job's run directory on the VM: read
directly where the VM's disk is this host's (the local cloud), else over SSH with the job's key. The text
comes without cwltool's terminal colour codes.
"""
from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from lando_ssh.config import Config
from lando_ssh.errors import LandoError
from lando_ssh.journal import Journal
from lando_ssh.model import ACTIVE_STATES, Job, JobStep

TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cwltool colours its log levels
TAIL_BYTES = 64 * 1024  # what the status page shows of a log
_STDERR_TAIL = re.compile(r"\nLast (?:\d+ )?lines of its stderr:\n")  # how a failed run's error quotes the log


def error_without_log(error: str) -> str:
    """A job's error without the tail of cwltool's log it quotes (for where the log itself is shown)."""
    return TERMINAL_CODES.sub("", _STDERR_TAIL.split(error, 1)[0])


class CwltoolLog:
    """Reads jobs' logs. `lines` keeps its SSH connection to a job's VM for the next (`close` ends them);
    `tail` does not.

    `ssh_every`: a tail read over SSH is kept that many seconds (a page polled by several browsers asks the
    VM once). `local_disk`: whether a VM's run directory is on this host (default: on the local cloud)."""

    def __init__(self, config: Config, journal: Journal, *, ssh_every: float = 0.0, local_disk: bool | None = None):
        self.config = config
        self.journal = journal
        self.ssh_every = ssh_every
        self.local_disk = config.cloud.driver == "local" if local_disk is None else local_disk
        self._lock = threading.Lock()  # the pipeline's connections (the status page reads from many threads)
        self._pipeline: Any = None
        self._connected: set[int] = set()
        self._tails: dict[int, tuple[float, str]] = {}  # job id -> (monotonic time read, text), over SSH

    def lines(self, job: Job, after: int = 0) -> list[str]:
        """The log's whole lines after the first `after` (a follower asks the VM only for what is new)."""
        stored = self._stored(job)
        if stored is not None:
            return _clean(_read(stored) or "").splitlines()[after:]
        path = self._on_vm(job)
        if path is None:
            return []
        if self.local_disk:
            text = _read(path, whole_lines=True)
            return _clean(text).splitlines()[after:] if text is not None else []
        try:
            out = self._ssh(job, ["tail", "-n", f"+{after + 1}", path])
        except LandoError as e:
            return [] if job.state in ACTIVE_STATES else [f"(cannot read it from the VM: {e})"]
        return _clean(out[:out.rfind("\n") + 1]).splitlines()  # whole lines: the last one may be half written

    def tail(self, job: Job, size: int = TAIL_BYTES) -> str:
        """The last `size` bytes of the log, from a line's start ("" when there is none yet)."""
        stored = self._stored(job)
        if stored is not None:
            return _clean(_read(stored, size) or "")
        path = self._on_vm(job)
        if path is None:
            return ""
        if self.local_disk:
            return _clean(_read(path, size) or "")
        with self._lock:
            kept = self._tails.get(job.id)
            if kept is not None and time.monotonic() - kept[0] < self.ssh_every:
                return kept[1]
        try:
            out = self._ssh(job, ["tail", "-c", str(size + 1), path], keep=False)
            text = _clean(out.split("\n", 1)[-1] if len(out.encode()) > size else out)
        except LandoError as e:
            text = f"(cannot read it from the VM: {e})"
        with self._lock:
            self._tails[job.id] = (time.monotonic(), text)
        return text

    def _stored(self, job: Job) -> str | None:
        from lando_ssh.outputs import docs_path

        if job.state in ACTIVE_STATES and job.step != JobStep.TERMINATE_VM:  # (an earlier run's, while active)
            return None
        path = os.path.join(docs_path(self.config, job), "logs", "cwltool-output.log")
        return path if os.path.isfile(path) else None

    def _on_vm(self, job: Job) -> str | None:
        """Where cwltool's stderr is on the job's VM (over SSH: once cwltool started there)."""
        vm = job.vm
        if vm is None or vm.deleted or not vm.work_dir:
            return None
        if not self.local_disk and not (vm.address and "run_pid" in job.facts):
            return None
        from lando_ssh.pipeline import JobPaths

        return JobPaths.under(vm.work_dir, job.id).run + "/stderr"

    def _ssh(self, job: Job, argv: list[str], keep: bool = True) -> str:
        """Run `argv` on the job's VM; the connection is kept for the next read (a follower's) when `keep`."""
        with self._lock:
            if self._pipeline is None:
                from lando_ssh.cloud import open_cloud
                from lando_ssh.pipeline import Pipeline

                self._pipeline = Pipeline(self.config, self.journal, open_cloud(self.config))
            try:
                self._connected.add(job.id)
                return str(self._pipeline.remote(job).run(argv, check=False, retry=False).stdout)
            finally:
                if not keep:
                    self._connected.discard(job.id)
                    self._pipeline.close(job.id)

    def close(self) -> None:
        with self._lock:
            if self._pipeline is not None:
                for job_id in self._connected:
                    self._pipeline.close(job_id)
                self._connected.clear()
                self._pipeline.cloud.close()
                self._pipeline = None


def _clean(text: str) -> str:
    return TERMINAL_CODES.sub("", text)


def _read(path: str, size: int | None = None, whole_lines: bool = False) -> str | None:
    """The file's text (its last `size` bytes, from a line's start; only its whole lines), None when absent."""
    try:
        with open(path, "rb") as f:
            if size is not None:
                f.seek(0, os.SEEK_END)
                if f.tell() > size:
                    f.seek(f.tell() - size - 1)
                    data = f.read()
                    data = data.split(b"\n", 1)[-1]
                else:
                    f.seek(0)
                    data = f.read()
            else:
                data = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return None
    if whole_lines:
        data = data[:data.rfind(b"\n") + 1]
    return data.decode(errors="replace")
