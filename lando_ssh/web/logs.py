"""The tail of a job's cwltool log for the status page: from the job's docs once its outputs are home
(as `lando-ssh logs` reads it: not while the job runs again, when the docs hold an earlier run's),
else from its VM's run directory while it runs (read directly where the VM's work dir is on this host,
as on the local cloud; else over SSH with the job's key, at most once per `SSH_EVERY` seconds a job)."""
from __future__ import annotations

import os
import threading
import time

from lando_ssh.commands.status import TERMINAL_CODES
from lando_ssh.config import Config
from lando_ssh.errors import LandoError
from lando_ssh.model import ACTIVE_STATES, Job, JobStep

TAIL_BYTES = 64 * 1024
SSH_EVERY = 5.0


class LogTails:
    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, str]] = {}  # job id -> (monotonic time read, text) over SSH

    def tail(self, job: Job) -> str:
        """The last `TAIL_BYTES` of the log, without terminal colour codes ("" when there is none yet)."""
        return TERMINAL_CODES.sub("", self._tail(job))

    def _tail(self, job: Job) -> str:
        from lando_ssh.outputs import docs_path

        local = os.path.join(docs_path(self.config, job), "logs", "cwltool-output.log")
        if job.state not in ACTIVE_STATES or job.step == JobStep.TERMINATE_VM:  # (an earlier run's, while active)
            text = _tail_file(local)
            if text is not None:
                return text
        vm = job.vm
        if vm is None or vm.deleted or not vm.work_dir:
            return ""
        from lando_ssh.engine import JobPaths

        path = JobPaths.under(vm.work_dir, job.id).run + "/stderr"
        text = _tail_file(path)  # the local cloud: the VM's disk is this host's
        return text if text is not None else self._over_ssh(job, path)

    def _over_ssh(self, job: Job, path: str) -> str:
        with self._lock:
            cached = self._cache.get(job.id)
            if cached and time.monotonic() - cached[0] < SSH_EVERY:
                return cached[1]
        from lando_ssh.cloud import open_cloud
        from lando_ssh.engine import Engine
        from lando_ssh.journal import Journal
        from lando_ssh.store import open_job_source

        store = open_job_source(self.config)
        engine = Engine(self.config, Journal(store), open_cloud(self.config))
        try:
            text = engine.remote(job).run(["tail", "-c", str(TAIL_BYTES), path], check=False, retry=False).stdout
        except LandoError as e:
            text = f"(cannot read it from the VM: {e})"
        finally:
            engine.close(job.id)
            store.close()
        with self._lock:
            self._cache[job.id] = (time.monotonic(), text)
        return text


def _tail_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    text = data.decode(errors="replace")
    return text if size <= TAIL_BYTES else text.split("\n", 1)[-1]
