"""The one back-off of lando-ssh: delays that double up to a ceiling. The broker's reconnects, the engine's
retries of a step after an internal error or a job-store failure, and its bookkeeping the store refused, wait by it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from `first` up to `longest`, reset after a success."""

    first: float = 0.5
    longest: float = 15.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        delay = self._next or self.first
        self._next = min(delay * 2, self.longest)
        return delay

    def reset(self) -> None:
        self._next = 0.0
