"""What the jobs cost: VM-hours and core-hours per user, project, workflow, flavor or day, and
per job (like Slurm's `sacct`), from the job records.

`usage()`, `job_lines()` and their helpers are pure; `usage_command` (`lando-ssh usage [--since
--until] [--by user|project|workflow|flavor|day] [--jobs] [--csv|--json]`) reads the jobs and
prints what they compute.

A job's VMs (its current one and those it held before a boot retry or a restart) count from
`vm.created` (when it was asked for) to `vm.deleted`, or to now while one still runs, clipped to
the window; core-hours are those hours times the VM's vCPUs (as bespin-api and CANFAR's stats
report them). A job counts in the window when its life (created to its final state, or now)
overlaps it; its state is counted in `states`. The group of a job: `user` (who submitted it),
`project` (see `project_of`), `workflow` (where the workflow came from). With `flavor` and
`day` a job may fall in several groups: each of its VMs' hours go to that VM's flavor, and to
the UTC day they were spent in; the job counts once in each group it has hours in (a job that
never had a VM: in flavor "-", and on each day its life overlaps).

The table ends with a TOTAL row; CSV and JSON hold only the groups (or the jobs), so a
spreadsheet or a script never counts a total twice.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lando_ssh.config import Config
from lando_ssh.errors import BadInput
from lando_ssh.model import FINAL_STATES, Job, JobState, VmRecord, now

GROUPINGS = ("user", "project", "workflow", "flavor", "day")
#: the states the report has a column for, in order
STATE_COLUMNS = ((JobState.FINISHED, "finished"), (JobState.ERROR, "error"), (JobState.CANCELED, "canceled"),
                 (JobState.DELETED, "deleted"))
#: the columns of `usage --jobs`, in order (sacct's JobID, JobName, User, State, ..., Elapsed)
JOB_COLUMNS = ("job", "name", "user", "project", "state", "flavor", "cores", "start", "end", "elapsed",
               "core_hours", "vm_hours")


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


@dataclass
class JobLine:
    """One job's accounting line (`usage --jobs`)."""

    job: int
    name: str
    user: str
    project: str
    state: str  # lando's state, as a word (finished, error, running, ...)
    flavor: str  # the flavor of its VM ("a+b" when its VMs had several, "-" when it had none)
    cores: int | None  # its VM's vCPUs (the most any of its VMs had)
    start: datetime | None  # when its first VM was asked for (None: it never had one)
    end: datetime | None  # when it reached its final state (None while it is not in one)
    elapsed: float | None  # seconds from start to end (or to now while it runs)
    core_hours: float
    vm_hours: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(vars(self))
        d["start"] = _iso(self.start)
        d["end"] = _iso(self.end)
        d["elapsed"] = None if self.elapsed is None else round(self.elapsed, 3)
        d["core_hours"], d["vm_hours"] = round(self.core_hours, 6), round(self.vm_hours, 6)
        return d


def named_project(job: Job) -> str | None:
    """The project the job's source named: `facts["project"]` (submit --project), bespin-api's `vm_project`."""
    named = job.facts.get("project") or ((job.facts.get("bespin") or {}).get("cloud_settings") or {}).get("vm_project")
    return str(named) if named else None


def project_of(job: Job, default: str | None = None) -> str:
    """The project a job is accounted to: the one its job source named (`facts["project"]`, bespin-api's
    `vm_project`), else the OpenStack project its VM was made in (an id "<project>/<server id>"), else
    `default` (the configured OpenStack project), else "-"."""
    named = named_project(job)
    if named:
        return named
    for vm in reversed(_vms(job)):
        project, sep, _ = (vm.id or "").rpartition("/")
        if sep and project:
            return project
    return default or "-"


def configured_project(config: Config) -> str | None:
    """The OpenStack project lando-ssh works in (None on the local cloud, or when only the cloud knows it:
    an application credential's)."""
    if config.cloud.driver != "openstack":
        return None
    s = config.cloud_settings
    if s.project_name:
        return s.project_name
    if s.auth_url:
        return None
    if s.cloud or os.environ.get("OS_CLOUD"):
        try:
            from openstack import config as os_config

            auth = os_config.OpenStackConfig().get_one(cloud=s.cloud).config.get("auth") or {}
            return auth.get("project_name") or None
        except Exception:  # an unreadable clouds.yaml: `usage` still reports, with "-"
            return None
    return os.environ.get("OS_PROJECT_NAME") or None


def group_of(job: Job, by: str, default_project: str | None = None) -> str:
    if by == "user":
        return job.user or "-"
    if by == "project":
        return project_of(job, default_project)
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


def _span(vm: VmRecord, since: datetime | None, until: datetime | None,
          at: datetime | None) -> tuple[datetime, datetime] | None:
    """When `vm` existed within [since, until] (till `at`, default now, while it lives)."""
    if vm.created is None:
        return None
    start = max(vm.created, since) if since else vm.created
    end = vm.deleted or at or now()
    if until:
        end = min(end, until)
    return (start, end) if end > start else None


def _hours(vm: VmRecord, since: datetime | None, until: datetime | None, at: datetime | None) -> float:
    span = _span(vm, since, until, at)
    return (span[1] - span[0]).total_seconds() / 3600 if span else 0.0


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


def started(job: Job) -> datetime | None:
    """When the job's first VM was asked for: its resources' start, as sacct's Start is the allocation's
    (None for a job that never had a VM)."""
    return min((vm.created for vm in _vms(job) if vm.created), default=None)


def _in_window(job: Job, since: datetime | None, until: datetime | None, at: datetime) -> bool:
    life_end = ended(job) or at
    return not ((until and job.created > until) or (since and life_end < since))


def _days(start: datetime, end: datetime) -> Iterator[tuple[str, datetime, datetime]]:
    """The UTC days [start, end] touches: (YYYY-MM-DD, the part of [start, end] in that day)."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= end:
        following = day + timedelta(days=1)
        yield day.date().isoformat(), max(start, day), min(end, following)
        day = following


def _shares(job: Job, by: str, since: datetime | None, until: datetime | None, at: datetime,
            default_project: str | None) -> dict[str, tuple[float, float]]:
    """The groups a job falls in, each with (VM-hours, core-hours) of the job there."""
    if by not in ("flavor", "day"):
        return {group_of(job, by, default_project): (vm_hours(job, since, until, at),
                                                     core_hours(job, since, until, at))}
    shares: dict[str, tuple[float, float]] = {}
    for vm in _vms(job):
        span = _span(vm, since, until, at)
        if span is None:
            continue
        parts = [(vm.flavor or "-", *span)] if by == "flavor" else list(_days(*span))
        for group, start, end in parts:
            hours = (end - start).total_seconds() / 3600
            old = shares.get(group, (0.0, 0.0))
            shares[group] = (old[0] + hours, old[1] + hours * (vm.vcpus or 0))
    if not shares:  # no VM time in the window: the job still counts
        if by == "flavor":
            shares["-"] = (0.0, 0.0)
        else:
            life = (max(job.created, since) if since else job.created, min(ended(job) or at, until or at))
            shares.update((day, (0.0, 0.0)) for day, _, _ in _days(*life))
    return shares


def usage(jobs: Iterable[Job], by: str = "user", since: datetime | None = None, until: datetime | None = None,
          at: datetime | None = None, default_project: str | None = None) -> list[UsageRow]:
    """One row per group (sorted by name), then a row "TOTAL" (each job counted once)."""
    if by not in GROUPINGS:
        raise BadInput(f"usage --by takes one of {', '.join(GROUPINGS)}, not {by!r}")
    at = at or now()
    rows: dict[str, UsageRow] = {}
    total = UsageRow("TOTAL")
    for job in jobs:
        if not _in_window(job, since, until, at):
            continue
        total.jobs += 1
        total.states[job.state.value] += 1
        for name, (hours, cores) in _shares(job, by, since, until, at, default_project).items():
            row = rows.get(name)
            if row is None:
                row = rows[name] = UsageRow(name)
            row.jobs += 1
            row.states[job.state.value] += 1
            for r in (row, total):
                r.vm_hours += hours
                r.core_hours += cores
    return [rows[k] for k in sorted(rows)] + [total]


def job_lines(jobs: Iterable[Job], since: datetime | None = None, until: datetime | None = None,
              at: datetime | None = None, default_project: str | None = None) -> list[JobLine]:
    """One accounting line per job in the window, by job id; hours clipped to the window, as in `usage`."""
    at = at or now()
    lines = []
    for job in sorted(jobs, key=lambda j: j.id):
        if not _in_window(job, since, until, at):
            continue
        vms = _vms(job)
        start = started(job)
        end = ended(job)
        flavors = list(dict.fromkeys(vm.flavor for vm in vms if vm.flavor))
        cores = max((vm.vcpus for vm in vms if vm.vcpus), default=None)
        lines.append(JobLine(
            job=job.id, name=job.name, user=job.user or "-", project=project_of(job, default_project),
            state=job.state.name.lower(), flavor="+".join(flavors) or "-", cores=cores, start=start, end=end,
            elapsed=((end or at) - start).total_seconds() if start else None,
            core_hours=core_hours(job, since, until, at), vm_hours=vm_hours(job, since, until, at)))
    return lines


# -- output ------------------------------------------------------------------------------------
def to_csv(rows: list[UsageRow], by: str) -> str:
    """The groups as CSV (no TOTAL row: a spreadsheet sums them itself)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [by, "jobs", *(name for _, name in STATE_COLUMNS), "active", "vm_hours", "core_hours"]
    writer.writerow(header)
    for r in _groups(rows):
        d = r.to_dict()
        writer.writerow([d["group"], *(d[h] for h in header[1:-2]), f"{r.vm_hours:.6f}", f"{r.core_hours:.6f}"])
    return out.getvalue()


def to_json(rows: list[UsageRow]) -> list[dict[str, object]]:
    return [r.to_dict() for r in _groups(rows)]


def _groups(rows: list[UsageRow]) -> list[UsageRow]:
    return rows[:-1] if rows and rows[-1].group == "TOTAL" else rows


def to_table(rows: list[UsageRow], by: str, since: datetime | None, until: datetime | None) -> str:
    window = f"from {since.isoformat(timespec='seconds') if since else 'the start'} to " \
             f"{until.isoformat(timespec='seconds') if until else 'now'}"
    label = "day (UTC)" if by == "day" else by
    width = max([len(label), *(len(r.group) for r in rows)]) + 1
    lines = [f"usage {window}, by {by}",
             f"{label.upper():<{width}} {'JOBS':>5} {'F':>4} {'E':>4} {'C':>4} {'D':>4} {'ACT':>4} "
             f"{'VM-HOURS':>10} {'CORE-HOURS':>11}"]
    for r in rows:
        d = r.to_dict()
        lines.append(f"{r.group:<{width}} {r.jobs:>5} {d['finished']:>4} {d['error']:>4} {d['canceled']:>4} "
                     f"{d['deleted']:>4} {r.active:>4} {r.vm_hours:>10.3f} {r.core_hours:>11.3f}")
    return "\n".join(lines)


def jobs_to_csv(lines: list[JobLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(JOB_COLUMNS)
    for line in lines:
        d = line.to_dict()
        d["core_hours"], d["vm_hours"] = f"{line.core_hours:.6f}", f"{line.vm_hours:.6f}"
        writer.writerow(["" if d[c] is None else d[c] for c in JOB_COLUMNS])
    return out.getvalue()


def jobs_to_table(lines: list[JobLine]) -> str:
    """sacct's look: one line a job, times to the second, elapsed as [D-]HH:MM:SS, then the totals."""
    rows = [["JOBID", "NAME", "USER", "PROJECT", "STATE", "FLAVOR", "CORES", "START", "END", "ELAPSED",
             "CORE-HOURS", "VM-HOURS"]]
    for line in lines:
        rows.append([str(line.job), line.name[:24], line.user, line.project, line.state, line.flavor,
                     "-" if line.cores is None else str(line.cores), _local(line.start), _local(line.end),
                     elapsed_text(line.elapsed), f"{line.core_hours:.3f}", f"{line.vm_hours:.3f}"])
    rows.append(["TOTAL", "", "", "", "", "", "", "", "", "", f"{sum(x.core_hours for x in lines):.3f}",
                 f"{sum(x.vm_hours for x in lines):.3f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = {0, 6, 9, 10, 11}

    def aligned(cells: list[str]) -> str:
        return " ".join(c.rjust(w) if i in numeric else c.ljust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join(aligned(r) for r in rows)


def elapsed_text(seconds: float | None) -> str:
    """sacct's Elapsed: [D-]HH:MM:SS ("-" when unknown)."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}-{text}" if days else text


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t else None


def _local(t: datetime | None) -> str:
    return t.astimezone().strftime("%Y-%m-%dT%H:%M:%S") if t else "-"


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


def usage_command(config: Config, since: str | None, until: str | None, by: str, form: str,
                  jobs: bool = False) -> int:
    """`lando-ssh usage [--since --until] [--by user|project|workflow|flavor|day] [--jobs] [--csv|--json]`."""
    import json

    from lando_ssh.store import open_store

    at = now()
    start = parse_when(since, at) if since else None
    end = parse_when(until, at) if until else None
    if start and end and start >= end:
        raise BadInput(f"--since ({start.isoformat(timespec='seconds')}) must be before --until "
                       f"({end.isoformat(timespec='seconds')})")
    project = configured_project(config)
    store = open_store(config.store_url)
    try:
        records = store.list()
    finally:
        store.close()
    if jobs:
        lines = job_lines(records, since=start, until=end, at=at, default_project=project)
        text = jobs_to_csv(lines) if form == "csv" else json.dumps([x.to_dict() for x in lines], indent=2) + "\n" \
            if form == "json" else jobs_to_table(lines) + "\n"
    else:
        rows = usage(records, by=by, since=start, until=end, at=at, default_project=project)
        text = to_csv(rows, by) if form == "csv" else json.dumps(to_json(rows), indent=2) + "\n" \
            if form == "json" else to_table(rows, by, start, end) + "\n"
    print(text, end="")
    return 0
