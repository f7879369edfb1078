"""Which flavor a job's VM gets: what its workflow needs, and the cheapest allowed flavor that has it.

A job that names a flavor gets it (it must exist; it is not checked against the allow-list
or the workflow's needs: the user asked for it). Otherwise the cheapest flavor (fewest
vCPUs, then RAM, then disk) that meets the workflow's ResourceRequirement and whose name
matches `flavors.allow` (a regex searched in the name, as wr's `--flavor`). Disk: the job's
data volume holds its work dir when it has one, so then the volume must hold tmpdirMin +
outdirMin, otherwise the flavor's root disk (a flavor with disk 0, "the image's size",
meets no stated disk need). A job no allowed flavor fits fails at once, saying what it
needs and what the largest allowed flavor offers.

Pure logic, no I/O: the engine asks it for one job (`choose_flavor`), the scheduler for
many (`FlavorChooser`, memoized).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lando_ssh.cloud import Flavor

#: CWL's defaults when a workflow states nothing (v1.2: 1 core, 256 MiB RAM)
DEFAULT_CORES = 1
DEFAULT_RAM_MB = 256


@dataclass(frozen=True)
class Needs:
    """What a workflow asks of its VM: the largest ResourceRequirement of any of its processes.

    MiB, as CWL counts (Nova's "MB" are MiB too). cwltool runs a workflow's steps on the one
    VM, so the VM must fit the most demanding step; disk is tmpdirMin + outdirMin of that step.
    """

    cores: int = DEFAULT_CORES
    ram_mb: int = DEFAULT_RAM_MB
    disk_mb: int = 0

    def describe(self) -> str:
        disk = f", {as_gb(self.disk_mb)} GB disk" if self.disk_mb else ""
        return f"{self.cores} {'core' if self.cores == 1 else 'cores'}, {self.ram_mb} MB RAM{disk}"


def workflow_needs(doc: Any) -> Needs:
    """The needs stated by every ResourceRequirement (requirements or hints) anywhere in a packed
    workflow: the top process, `$graph` entries, steps, inline `run`s. Values given as
    expressions cannot be known before the run and are left out."""
    cores, ram, disk = DEFAULT_CORES, DEFAULT_RAM_MB, 0
    for req in _resource_requirements(doc):
        c = _amount(req, "cores")
        r = _amount(req, "ram")
        t, o = _amount(req, "tmpdir"), _amount(req, "outdir")
        if c is not None:
            cores = max(cores, math.ceil(c))
        if r is not None:
            ram = max(ram, math.ceil(r))
        if t is not None or o is not None:
            disk = max(disk, math.ceil((t or 0) + (o or 0)))
    return Needs(cores, ram, disk)


def _resource_requirements(node: Any) -> Iterable[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in ("requirements", "hints"):
                reqs = item.get(key)
                if isinstance(reqs, dict):  # the map form: {ResourceRequirement: {...}}
                    reqs = [dict(v, **{"class": k}) for k, v in reqs.items() if isinstance(v, dict)]
                if isinstance(reqs, list):
                    for r in reqs:
                        if isinstance(r, dict) and str(r.get("class", "")).rsplit(":", 1)[-1].rsplit("#", 1)[-1] \
                                == "ResourceRequirement":
                            yield r
            stack.extend(v for k, v in item.items() if k not in ("requirements", "hints")
                         and isinstance(v, (dict, list)))


def _amount(req: dict[str, Any], what: str) -> float | None:
    """`<what>Min`, else `<what>Max` (CWL: a max alone is also the min); None when unstated or an expression."""
    for key in (f"{what}Min", f"{what}Max"):
        v = req.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


# -- the flavor it gets ----------------------------------------------------------------------------
class FlavorChooser:
    """Flavor choice, memoized by what jobs ask (many jobs ask the same)."""

    def __init__(self, flavors: Sequence[Flavor], allow: str | None):
        self.all = list(flavors)
        self.allow = allow
        self.allowed = sorted((f for f in self.all if flavor_allowed(f.name, allow)),
                              key=lambda f: (f.vcpus, f.ram_mb, f.disk_gb, f.name))
        self.by_name = {f.id: f for f in self.all} | {f.name: f for f in self.all}  # a name wins over an id
        self.memo: dict[tuple[Needs, int], Flavor | str] = {}

    def choose(self, needs: Needs, volume_gb: int = 0, named: str | None = None) -> Flavor | str:
        """The flavor, or why none fits."""
        if named:
            found = self.by_name.get(named)
            if found is None:
                return f"flavor {named!r} does not exist; flavors: {', '.join(f.name for f in self.all)}"
            return found
        key = (needs, volume_gb)
        got = self.memo.get(key)
        if got is None:
            got = self.memo[key] = self._cheapest(needs, volume_gb)
        return got

    def _cheapest(self, needs: Needs, volume_gb: int) -> Flavor | str:
        if volume_gb and volume_gb * 1024 < needs.disk_mb:
            return (f"the job's data volume of {volume_gb} GB is smaller than the {as_gb(needs.disk_mb)} GB its "
                    "workflow needs (tmpdirMin + outdirMin)")
        for f in self.allowed:
            if f.vcpus >= needs.cores and f.ram_mb >= needs.ram_mb and (volume_gb or f.disk_gb * 1024 >= needs.disk_mb):
                return f
        if not self.allowed:
            names = ", ".join(f.name for f in self.all) or "none"
            return f"no flavor matches flavors.allow {self.allow!r}; flavors: {names}"
        big = self.allowed[-1]
        return (f"no allowed flavor fits the job: it needs {needs.describe()}; the largest allowed flavor, "
                f"{big.name}, has {big.vcpus} vCPUs, {big.ram_mb} MB RAM, {big.disk_gb} GB disk")


def flavor_allowed(name: str, allow: str | None) -> bool:
    """Whether `flavors.allow` lets the scheduler pick flavor `name`: the regex is searched in the
    name (as wr's `--flavor`): anchor it (`^m1[.]`) to mean a prefix."""
    return allow is None or _compiled(allow).search(name) is not None


@functools.lru_cache(maxsize=16)
def _compiled(allow: str) -> re.Pattern[str]:
    return re.compile(allow)


def choose_flavor(needs: Needs, flavors: Sequence[Flavor], allow: str | None = None, *,
                  named: str | None = None, volume_gb: int = 0) -> Flavor:
    """The flavor a job gets (see the module's doc); raises NoFlavorFits saying why none does."""
    got = FlavorChooser(flavors, allow).choose(needs, volume_gb, named)
    if isinstance(got, str):
        raise NoFlavorFits(got)
    return got


class NoFlavorFits(ValueError):
    pass


def as_gb(mb: int) -> str:
    return f"{mb / 1024:.1f}".removesuffix(".0")
