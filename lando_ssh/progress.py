"""A transfer's progress (staging inputs, storing outputs): bytes so far, rate and time left, sampled from
the connection's byte meter every `progress_interval` seconds while it runs. The engine records each
sample on the job (`run.progress`, what `status` shows) and says it on a foreground run's stderr."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from lando_ssh.model import iso, now


class ByteMeter(Protocol):
    bytes: int


@dataclass(frozen=True)
class Progress:
    what: str  # "staging", "storing"
    done: int  # bytes so far
    total: int  # bytes in all (an estimate: the tar stream also carries headers)
    seconds: float  # since the transfer began

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before anything moved)."""
        return max(self.total - self.done, 0) / self.rate if self.rate > 0 else None

    def to_fact(self) -> dict[str, Any]:
        eta = self.eta
        return {"what": self.what, "bytes": self.done, "total": self.total, "rate": round(self.rate),
                "eta_seconds": round(eta, 1) if eta is not None else None, "at": iso(now())}


def sentence(fact: dict[str, Any]) -> str:
    """`staging: 1.2 GiB of 1.5 GiB, 85.0 MiB/s, 4 s left` from a recorded `run.progress`."""
    done, total = int(fact.get("bytes") or 0), int(fact.get("total") or 0)
    eta = fact.get("eta_seconds")
    left = f", {_duration(eta)} left" if eta is not None else ""
    return f"{fact.get('what', 'transfer')}: {size_text(min(done, total) if total else done)} of " \
           f"{size_text(total)}, {size_text(fact.get('rate') or 0)}/s{left}"


@contextlib.contextmanager
def watching(meter: ByteMeter, what: str, total: int, report: Callable[[Progress], None],
             interval: float) -> Iterator[None]:
    """Call `report` every `interval` seconds while the block runs (not at all for a transfer done sooner).
    The sampling thread has ended when the block is left: no report comes after it."""
    done = threading.Event()
    base, started = meter.bytes, time.monotonic()

    def sample() -> None:
        while not done.wait(interval):
            report(Progress(what, meter.bytes - base, total, time.monotonic() - started))

    thread = threading.Thread(target=sample, name=f"progress-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
