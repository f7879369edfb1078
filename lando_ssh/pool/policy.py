"""The pool's policy (`pool.share`, `pool.pack`, `vm.keepalive`) and which jobs may share a VM. Pure.

Jobs share a VM only when they agree on its image and OpenStack project and, under `pool.share`, on
- `job`: nothing (one VM per job, deleted when the job is done: lando's behaviour);
- `owner`: the job's owner (the submitting Unix user, or bespin-api's job owner);
- `project`: the job's project (bespin-api's `vm_project`, else the configured one);
- `any`: always.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from lando_ssh.config import Config, PoolConfig, VmConfig


class Share(enum.StrEnum):
    JOB = "job"
    OWNER = "owner"
    PROJECT = "project"
    ANY = "any"


@dataclass(frozen=True)
class PoolPolicy:
    """The config's defaults (docs/vm-pool.md says why they are what they are)."""

    share: Share = Share(PoolConfig.share)
    pack: bool = PoolConfig.pack
    keepalive: float = VmConfig.keepalive  # seconds an empty VM waits for the next job; 0: deleted at once

    @classmethod
    def from_config(cls, config: Config) -> PoolPolicy:
        return cls(share=Share(config.pool.share), pack=config.pool.pack, keepalive=config.vm.keepalive)


def share_key(share: Share, job_id: int, owner: str, project: str | None) -> str:
    """The key a job's VM is shared under: jobs with equal keys (and image and project) may share a VM."""
    if share == Share.JOB:
        return f"job:{job_id}"
    if share == Share.OWNER:
        return f"owner:{owner or '-'}"
    if share == Share.PROJECT:
        return f"project:{project or '-'}"
    return "any"
