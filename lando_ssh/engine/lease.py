"""Leases: which process runs a job when several servers share one job store (PostgreSQL). The daemon and a
foreground `lando-ssh job N` claim, renew and release alike; on a store only one server uses, every claim is
granted (the job's lock on this machine keeps two drivers apart)."""
from __future__ import annotations

from typing import Any

from lando_ssh.store import JobStore


class Lease:
    """`owner`'s leases on jobs of `store`, each good for `ttl` seconds unless renewed."""

    def __init__(self, store: JobStore, owner: str, ttl: float):
        self.store: Any = store  # (claim, renew, release: a shared store's own)
        self.owner = owner
        self.ttl = ttl
        self.shared = bool(getattr(store, "shared", False))

    def claim(self, job_id: int) -> bool:
        """Take (or keep) the job's lease; False while another owner's lease on it is live."""
        return not self.shared or self.store.claim(job_id, self.owner, self.ttl)

    def renew(self) -> None:
        if self.shared:
            self.store.renew(self.owner, self.ttl)

    def release(self, job_id: int) -> None:
        if self.shared:
            self.store.release(job_id, self.owner)
