"""Where a job's files live on its VM, and where the scripts sent to it live here."""
from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path


def remote_scripts_dir() -> Path:
    """remote_scripts/ beside the package (a checkout), or where the wheel installed it."""
    here = Path(__file__).resolve().parent.parent.parent / "remote_scripts"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "lando-ssh" / "remote_scripts"


@dataclass(frozen=True)
class JobPaths:
    """Where a job's files live on its VM."""

    job_dir: str

    @classmethod
    def under(cls, work_dir: str, job_id: int) -> JobPaths:
        return cls(posixpath.join(work_dir, f"lando-job-{job_id}"))

    def __getattr__(self, name: str) -> str:
        if name in ("bin", "scripts", "inputs", "results", "run", "tmp", "docs"):
            return posixpath.join(self.job_dir, name)
        raise AttributeError(name)

    @property
    def workflow(self) -> str:
        return posixpath.join(self.job_dir, "scripts", "workflow.cwl")

    @property
    def job_order(self) -> str:
        return posixpath.join(self.job_dir, "scripts", "job-order.json")
