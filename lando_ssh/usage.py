"""What the jobs cost: VM-hours and core-hours per user, project or workflow, from the job records.

`usage()` and its helpers are pure; `usage_command` (`lando-ssh usage [--since --until]
[--by user|project|workflow] [--csv|--json]`) reads the jobs and prints what `usage()` computes.

A job's VM counts from `vm.created` (when it was asked for) to `vm.deleted`, or to now while it
still runs, clipped to the window; core-hours are those hours times the VM's vCPUs (as
bespin-api and CANFAR's stats report them). A job counts in the window when its life (created
to its final state, or now) overlaps it; its state at the end is counted in `states`. The
group of a job: `user` (who submitted it), `project` (`facts["project"]`, which a job source
such as bespin-api sets; "-" otherwise), `workflow` (where the workflow came from).
Only the job's current VM is recorded: the VMs of earlier attempts (before a restart on a new
VM) are not counted.
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lando_ssh.config import Config
from lando_ssh.errors import BadInput
from lando_ssh.model import FINAL_STATES, Job, JobState, VmRecord, now

GROUPINGS = ("user", "project", "workflow")
#: the states the report has a column for, in order
STATE_COLUMNS = ((JobState.FINISHED, "finished"), (JobState.ERROR, "error"), (JobState.CANCELED, "canceled"),
                 (JobState.DELETED, "deleted"))


@dataclass
class UsageRow:
    group: str
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)  # state code -> jobs
    vm_hours: float = 0.0
    core_hours: float = 0.0

    @property
    def active(self) -> int:
        """Jobs not in a final state (waiting, running, canceling...)."""
        return self.jobs - sum(self.states[s.value] for s, _ in STATE_COLUMNS)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"group": self.group, "jobs": self.jobs}
        d.update({name: self.states[s.value] for s, name in STATE_COLUMNS})
        d.update(active=self.active, vm_hours=round(self.vm_hours, 6), core_hours=round(self.core_hours, 6))
        return d


def group_of(job: Job, by: str) -> str:
    if by == "user":
        return job.user or "-"
    if by == "project":
        return str(job.facts.get("project") or "-")
    if by == "workflow":
        return job.workflow or "-"
    raise BadInput(f"usage --by takes one of {', '.join(GROUPINGS)}, not {by!r}")


def vm_hours(job: Job, since: datetime | None = None, until: datetime | None = None,
             at: datetime | None = None) -> float:
    """Hours the job's VMs (its current one and those it held before) existed within [since, until]."""
    return sum(_hours(vm, since, until, at) for vm in _vms(job))


def core_hours(job: Job, since: datetime | None = None, until: datetime | None = None,
               at: datetime | None = None) -> float:
    return sum(_hours(vm, since, until, at) * (vm.vcpus or 0) for vm in _vms(job))


def _vms(job: Job) -> list[VmRecord]:
    return [*job.past_vms, *([job.vm] if job.vm else [])]


def _hours(vm: VmRecord, since: datetime | None, until: datetime | None, at: datetime | None) -> float:
    """Hours `vm` existed within [since, until] (till `at`, default now, while it lives)."""
    if vm.created is None:
        return 0.0
    start = max(vm.created, since) if since else vm.created
    end = vm.deleted or at or now()
    if until:
        end = min(end, until)
    return max(0.0, (end - start).total_seconds() / 3600)


def ended(job: Job) -> datetime | None:
    """When the job reached its final state (None while it is not in one)."""
    if job.state not in FINAL_STATES:
        return None
    at = job.updated
    for h in reversed(job.history):  # the first of the entries at the end that are in this state
        if h.state != job.state:
            break
        at = h.at
    return at


def usage(jobs: Iterable[Job], by: str = "user", since: datetime | None = None, until: datetime | None = None,
          at: datetime | None = None) -> list[UsageRow]:
    """One row per group (sorted by name), then a row "TOTAL"."""
    at = at or now()
    rows: dict[str, UsageRow] = {}
    total = UsageRow("TOTAL")
    for job in jobs:
        life_end = ended(job) or at
        if (until and job.created > until) or (since and life_end < since):
            continue
        hours = vm_hours(job, since, until, at)
        cores = core_hours(job, since, until, at)
        name = group_of(job, by)
        row = rows.get(name)
        if row is None:
            row = rows[name] = UsageRow(name)
        for r in (row, total):
            r.jobs += 1
            r.states[job.state.value] += 1
            r.vm_hours += hours
            r.core_hours += cores
    return [rows[k] for k in sorted(rows)] + [total]


def to_csv(rows: list[UsageRow], by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [by, "jobs", *(name for _, name in STATE_COLUMNS), "active", "vm_hours", "core_hours"]
    writer.writerow(header)
    for r in rows:
        d = r.to_dict()
        writer.writerow([d["group"], *(d[h] for h in header[1:-2]), f"{r.vm_hours:.6f}", f"{r.core_hours:.6f}"])
    return out.getvalue()


def to_table(rows: list[UsageRow], by: str, since: datetime | None, until: datetime | None) -> str:
    window = f"from {since.isoformat(timespec='seconds') if since else 'the start'} to " \
             f"{until.isoformat(timespec='seconds') if until else 'now'}"
    width = max([len(by), *(len(r.group) for r in rows)]) + 1
    lines = [f"usage {window}, by {by}",
             f"{by.upper():<{width}} {'JOBS':>5} {'F':>4} {'E':>4} {'C':>4} {'D':>4} {'ACT':>4} "
             f"{'VM-HOURS':>10} {'CORE-HOURS':>11}"]
    for r in rows:
        d = r.to_dict()
        lines.append(f"{r.group:<{width}} {r.jobs:>5} {d['finished']:>4} {d['error']:>4} {d['canceled']:>4} "
                     f"{d['deleted']:>4} {r.active:>4} {r.vm_hours:>10.3f} {r.core_hours:>11.3f}")
    return "\n".join(lines)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, at: datetime | None = None) -> datetime:
    """An ISO date or date-time (local time unless it names a zone), or an age such as 30d, 12h, 90m."""
    m = _RELATIVE.match(text.strip())
    if m:
        return (at or now()) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"{text!r} is not a date (2025-01-31, 2025-01-31T08:00) or an age (30d, 12h)") from None
    return t.astimezone(UTC) if t.tzinfo is None else t


def usage_command(config: Config, since: str | None, until: str | None, by: str, form: str) -> int:
    """`lando-ssh usage [--since --until] [--by user|project|workflow] [--csv|--json]`."""
    import json

    from lando_ssh.store import open_store

    at = now()
    start = parse_when(since, at) if since else None
    end = parse_when(until, at) if until else None
    if start and end and start >= end:
        raise BadInput(f"--since ({start.isoformat(timespec='seconds')}) must be before --until "
                       f"({end.isoformat(timespec='seconds')})")
    store = open_store(config.store_url)
    try:
        rows = usage(store.list(), by=by, since=start, until=end, at=at)
    finally:
        store.close()
    if form == "csv":
        print(to_csv(rows, by), end="")
    elif form == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(to_table(rows, by, start, end))
    return 0
