"""What the status page shows, computed from job records alone (pure: no I/O).

The jobs table's filters and pages (`JobQuery`, `select`), a job's history as a timeline of steps
per attempt (`timeline`), the VMs the jobs hold and the jobs waiting (`vms_view`), and the plots'
series over a period (`plots`).
"""
from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lando_ssh.model import (
    ACTIVE_STATES,
    FINAL_STATES,
    STEPS,
    Job,
    JobState,
    JobStep,
    VmRecord,
    now,
    reason_kind,
    waits,
)
from lando_ssh.usage import core_hours, vm_hours
from lando_ssh.usage import project_of as accounted_project

STATE_WORDS = {s: s.name.lower() for s in JobState}
STEP_WORDS = {JobStep.NONE: "", JobStep.CREATE_VM: "create VM", JobStep.STAGING: "stage inputs",
              JobStep.RUNNING: "run workflow", JobStep.ORGANIZE_OUTPUT: "organize output",
              JobStep.STORE_OUTPUT: "store output", JobStep.TERMINATE_VM: "terminate VM"}
WAIT = "wait"  # a timeline's label of the time a job waited in the queue
PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
PER_PAGE = 50
MAX_PER_PAGE = 500
BUCKETS = 48  # points of a time series over the period
TOP_GROUPS = 8  # projects/owners with a series of their own; the rest are "other"


@dataclass
class JobQuery:
    """The jobs table's filters (all optional) and page."""

    states: list[str] = field(default_factory=list)
    owner: str = ""
    project: str = ""
    name: str = ""  # a part of the name, any case
    since: datetime | None = None  # submitted at or after
    until: datetime | None = None  # submitted before
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> JobQuery:
        """From a query string's parameters; a value that does not parse raises ValueError naming it."""
        def one(key: str) -> str:
            return (params.get(key) or [""])[0].strip()

        states = [s for v in params.get("state") or [] for s in v.split(",") if s]
        for s in states:
            if s not in JobState._value2member_map_:
                raise ValueError(f"state {s!r} is not one of lando's state codes "
                                 f"({', '.join(x.value for x in JobState)})")
        return cls(states=states, owner=one("owner"), project=one("project"), name=one("name"),
                   since=parse_when(one("since"), "since"), until=parse_when(one("until"), "until"),
                   page=_positive(one("page") or "1", "page"),
                   per_page=min(_positive(one("per_page") or str(PER_PAGE), "per_page"), MAX_PER_PAGE))

    def matches(self, job: Job) -> bool:
        return ((not self.states or job.state.value in self.states)
                and (not self.owner or job.user == self.owner)
                and (not self.project or project_of(job) == self.project)
                and (not self.name or self.name.lower() in job.name.lower())
                and (self.since is None or job.created >= self.since)
                and (self.until is None or job.created < self.until))


@dataclass
class Page:
    jobs: list[Job]
    total: int  # jobs matching the filters
    page: int
    pages: int


def select(jobs: Iterable[Job], query: JobQuery) -> Page:
    """The matching jobs, newest first, cut to the query's page."""
    matching = [j for j in jobs if query.matches(j)]
    matching.sort(key=lambda j: j.id, reverse=True)
    pages = max(1, -(-len(matching) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return Page(matching[start:start + query.per_page], len(matching), page, pages)


def parse_when(text: str, what: str) -> datetime | None:
    """A date or time in ISO form (2026-12-04, 2026-12-04T08:00, with or without a zone: UTC then)."""
    if not text:
        return None
    from datetime import UTC
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date or time such as 2026-12-04 or 2026-12-04T08:00") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _positive(text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{what} must be a whole number from 1, not {text!r}")
    return int(text)


def project_of(job: Job) -> str:
    """The project the job is accounted to, as `lando-ssh usage --by project` says ("-": none known)."""
    return accounted_project(job)


def elapsed(job: Job, at: datetime | None = None) -> float:
    """Seconds from submission to the job's end (its last change, once final) or to now."""
    end = job.updated if job.state in FINAL_STATES else (at or now())
    return max(0.0, (end - job.created).total_seconds())


def waiting(job: Job) -> bool:
    """Started but queued for a slot, a VM's room or the cloud's quota (model.waits)."""
    return waits(job.state, job.step, job.reason)


def waiting_since(job: Job) -> datetime:
    """When the job's current wait began (its history's last run of S entries)."""
    since = job.created
    for h in reversed(job.history):
        if h.state != JobState.STARTING:
            break
        since = h.at
    return since


def vm_state(job: Job, vm: VmRecord) -> str:
    """What a VM the job holds is doing, as its record tells: asked for (the cloud has not taken the request
    yet: its quota is full), booting (no address yet), busy (its job runs), kept (its job ended and left it,
    e.g. for a look after an error)."""
    if not vm.id:
        return "asked for"
    if not vm.address:
        return "booting"
    return "busy" if job.state in ACTIVE_STATES else "kept"


def boot_seconds(vm: VmRecord) -> tuple[float | None, float | None]:
    """(asked for to ACTIVE, asked for to answering SSH) of a VM lando-ssh saw boot (else None)."""
    if vm.created is None or vm.active is None:
        return None, None
    return ((vm.active - vm.created).total_seconds(),
            (vm.ready - vm.created).total_seconds() if vm.ready is not None else None)


def row(job: Job, at: datetime | None = None) -> dict[str, Any]:
    """One line of the jobs table."""
    return {"id": job.id, "name": job.name, "owner": job.user, "project": project_of(job),
            "state": job.state.value, "state_words": "waiting" if waiting(job) else STATE_WORDS[job.state],
            "step": job.step.value, "step_words": STEP_WORDS[job.step], "created": job.created,
            "elapsed": elapsed(job, at), "reason": job.reason}


def job_usage(job: Job, at: datetime | None = None) -> dict[str, Any]:
    """What the job used: its VMs' hours and core-hours (every VM it held), and what the VM recorded of
    its run (wall time, the largest process's peak memory, cwltool's exit code), when it did."""
    usage = job.facts.get("usage")
    recorded: dict[str, Any] = usage if isinstance(usage, dict) else {}
    out: dict[str, Any] = {"VM-hours": round(vm_hours(job, at=at), 4), "core-hours": round(core_hours(job, at=at), 4)}
    if recorded.get("wall_seconds") is not None:
        out["workflow wall time (s)"] = round(recorded["wall_seconds"], 1)
    if recorded.get("peak_memory_kb"):
        out["peak memory of the largest process (MiB)"] = round(recorded["peak_memory_kb"] / 1024, 1)
    if recorded.get("exit_code") is not None:
        out["cwltool exit code"] = recorded["exit_code"]
    return out


# -- a job's timeline ---------------------------------------------------------------------------
@dataclass
class Segment:
    label: str  # a step code (V S R o O T), or the state's word when no step runs
    words: str
    started: datetime
    seconds: float
    note: str = ""
    running: bool = False  # the job is in it now


def timeline(job: Job, at: datetime | None = None) -> list[list[Segment]]:
    """The job's history as segments (each entry to the next), one list per attempt: a restart begins one."""
    at = at or now()
    attempts: list[list[Segment]] = []
    history = job.history
    for i, h in enumerate(history):
        last = i + 1 == len(history)
        if last and h.state in FINAL_STATES:
            end = h.at
        else:
            end = at if last else history[i + 1].at
        if not attempts or h.state == JobState.RESTARTING:
            attempts.append([])
        if h.state == JobState.STARTING and h.step == JobStep.NONE:
            label, words = WAIT, "waiting"  # (not S: the stage inputs step's code)
        elif h.step != JobStep.NONE and h.state in ACTIVE_STATES:
            label, words = h.step.value, STEP_WORDS[h.step]
        else:
            label, words = h.state.value, STATE_WORDS[h.state]
        seconds = max(0.0, (end - h.at).total_seconds())
        running = last and h.state not in FINAL_STATES
        prev = attempts[-1][-1] if attempts[-1] else None
        if prev is not None and prev.label == label:  # S/V then R/V: one step, the state changed under it
            prev.seconds += seconds
            prev.running = running
            prev.note = prev.note or h.note or h.reason
            continue
        note = h.reason or h.note if label == WAIT else h.note or h.reason  # why it waited, else what happened
        attempts[-1].append(Segment(label, words, h.at, seconds, note, running))
    return attempts


# -- VMs and the queue --------------------------------------------------------------------------
def vms_view(jobs: Iterable[Job], at: datetime | None = None) -> dict[str, Any]:
    """The VMs our jobs hold (not deleted) and the jobs waiting, longest waiting first, with their reasons."""
    at = at or now()
    vms: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = []
    for job in jobs:
        vm = job.vm
        if vm is not None and vm.deleted is None:
            age = (at - vm.created).total_seconds() if vm.created else None
            active, ready = boot_seconds(vm)
            vms.append({"name": vm.name, "id": vm.id, "flavor": vm.flavor, "vcpus": vm.vcpus, "ram_mb": vm.ram_mb,
                        "address": vm.address, "port": vm.port, "job": job.id, "job_state": job.state.value,
                        "job_step": job.step.value, "state": vm_state(job, vm),
                        "created": vm.created, "age_seconds": age, "boot_seconds": active, "ssh_seconds": ready})
        if waiting(job):
            since = waiting_since(job)
            queue.append({"id": job.id, "name": job.name, "owner": job.user, "project": project_of(job),
                          "state": job.state.value, "step": job.step.value, "reason": job.reason,
                          "since": since, "waiting_seconds": max(0.0, (at - since).total_seconds())})
    queue.sort(key=lambda w: w["since"])
    return {"vms": vms, "waiting": queue}


# -- plots --------------------------------------------------------------------------------------
def period(name: str, since: datetime | None = None, until: datetime | None = None,
           at: datetime | None = None) -> tuple[datetime, datetime]:
    """The window of a named period ending now, or `custom` between since and until."""
    at = at or now()
    if name == "custom":
        if since is None:
            raise ValueError("a custom period needs since (and until, else now)")
        until = until or at
        if until <= since:
            raise ValueError("until must come after since")
        return since, until
    if name not in PERIODS:
        raise ValueError(f"period must be one of {', '.join([*PERIODS, 'custom'])}, not {name!r}")
    return at - PERIODS[name], at


def plots(jobs: list[Job], since: datetime, until: datetime) -> dict[str, Any]:
    """Every plot's series over [since, until]: times are Unix seconds."""
    step = (until - since) / BUCKETS
    times = [since + step * (i + 1) for i in range(BUCKETS)]
    return {"since": since.timestamp(), "until": until.timestamp(),
            **_states_over_time(jobs, times),
            "core_hours_by_project": _core_hours_per_day(jobs, since, until, project_of),
            "core_hours_by_owner": _core_hours_per_day(jobs, since, until, lambda j: j.user),
            "step_seconds": _step_seconds(jobs, since, until),
            "boot": _boots(jobs, since, until)}


def _states_over_time(jobs: list[Job], times: list[datetime]) -> dict[str, Any]:
    """At each time: the jobs in each state not final (waiting apart from starting) and the VMs held; in the
    interval up to it: the jobs that ended, by their final state."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(times))
    reasons: dict[str, list[int]] = defaultdict(lambda: [0] * len(times))  # the waiting jobs by what they wait for
    ended: dict[str, list[int]] = defaultdict(lambda: [0] * len(times))
    vms = [0] * len(times)
    first = times[0] - (times[1] - times[0]) if len(times) > 1 else times[0]
    for job in jobs:
        if not job.history or job.history[0].at > times[-1]:
            continue
        if job.state in FINAL_STATES and job.updated <= first:
            continue  # ended before the window
        ats = [h.at for h in job.history]
        for h in job.history:
            if h.state in FINAL_STATES and first < h.at <= times[-1]:
                ended[STATE_WORDS[h.state]][bisect.bisect_left(times, h.at)] += 1
        end = job.updated if job.state in FINAL_STATES else times[-1]
        for i in range(bisect.bisect_left(times, ats[0]), bisect.bisect_right(times, end)):  # the times it lived
            k = bisect.bisect_right(ats, times[i]) - 1
            if k >= 0 and job.history[k].state not in FINAL_STATES:
                h = job.history[k]
                if waits(h.state, h.step, h.reason):
                    counts["waiting"][i] += 1
                    reasons[reason_kind(_wait_reason(job.history, k))][i] += 1
                else:
                    counts[STATE_WORDS[h.state]][i] += 1
        for vm in [*job.past_vms, *([job.vm] if job.vm else [])]:
            if vm.created is None:
                continue
            gone = bisect.bisect_left(times, vm.deleted) if vm.deleted else len(times)  # first time it was gone
            for i in range(bisect.bisect_left(times, vm.created), gone):
                vms[i] += 1
    order = ["waiting", *(STATE_WORDS[s] for s in JobState)]
    return {"times": [t.timestamp() for t in times],
            "jobs_by_state": {k: counts[k] for k in order if k in counts},
            "jobs_ended": {k: ended[k] for k in order if k in ended},
            "queue": {"length": counts["waiting"] if "waiting" in counts else [0] * len(times),
                      "reasons": _top(reasons)},
            "vms": vms}


NO_REASON = "(no reason recorded)"


def _wait_reason(history: list[Any], k: int) -> str:
    """The reason in force at history entry k of a wait: its own, else that of the entry before it in the
    same wait (a step begun in S keeps the wait's reason until the next is recorded)."""
    for h in reversed(history[:k + 1]):
        if h.reason:
            return str(h.reason)
        if h.state != JobState.STARTING:
            break
    return NO_REASON


def _top(series: dict[str, list[int]]) -> dict[str, list[int]]:
    """The TOP_GROUPS series of the largest totals, the rest summed as "other"."""
    totals = Counter({k: sum(v) for k, v in series.items()})
    top = [k for k, _ in totals.most_common(TOP_GROUPS)]
    out = {k: series[k] for k in top}
    rest = [v for k, v in series.items() if k not in top]
    if rest:
        out["other"] = [sum(col) for col in zip(*rest, strict=True)]
    return out


def _core_hours_per_day(jobs: list[Job], since: datetime, until: datetime, group: Any) -> dict[str, Any]:
    day0 = since.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    d = day0
    while d < until:
        days.append(d)
        d += timedelta(days=1)
    per: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    at = now()
    for job in jobs:
        vms = [v for v in [*job.past_vms, *([job.vm] if job.vm else [])] if v.created is not None]
        if not vms:
            continue
        first = min(v.created for v in vms if v.created is not None)
        last = max(v.deleted or at for v in vms)
        if last < day0 or first >= until:
            continue
        name = group(job) or "-"
        lo = max(0, int((first - day0) / timedelta(days=1)))
        hi = min(len(days), int((last - day0) / timedelta(days=1)) + 1)
        for i in range(lo, hi):  # only the days its VMs lived
            per[name][i] += core_hours(job, days[i], days[i] + timedelta(days=1))
    totals = Counter({k: sum(v) for k, v in per.items()})
    top = [k for k, _ in totals.most_common(TOP_GROUPS) if totals[k] > 0]
    series = {k: [round(x, 4) for x in per[k]] for k in top}
    rest = [k for k in per if k not in top and totals[k] > 0]
    if rest:
        series["other"] = [round(sum(per[k][i] for k in rest), 4) for i in range(len(days))]
    return {"days": [d.timestamp() for d in days], "series": series}


def _step_seconds(jobs: list[Job], since: datetime, until: datetime) -> dict[str, Any]:
    """Each step's median, 90th percentile and longest duration over the steps that began in the window."""
    by_step: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        for code, t in job.timings.items():
            if t.seconds is not None and t.started is not None and since <= t.started < until:
                by_step[code].append(t.seconds)
    steps = [s.value for s in STEPS if by_step.get(s.value)]
    return {"steps": steps, "count": [len(by_step[s]) for s in steps],
            "median": [statistics.median(by_step[s]) for s in steps],
            "p90": [_quantile(by_step[s], 0.9) for s in steps],
            "max": [max(by_step[s]) for s in steps]}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _boots(jobs: list[Job], since: datetime, until: datetime) -> dict[str, Any]:
    """The distribution of boot times of the VMs asked for in the window that lando-ssh saw boot: from asking
    for the VM to ACTIVE, and to answering SSH (cloud-init done), in the same bins."""
    active: list[float] = []
    ssh: list[float] = []
    for job in jobs:
        for vm in [*job.past_vms, *([job.vm] if job.vm else [])]:
            if vm.created is None or not since <= vm.created < until:
                continue
            to_active, to_ssh = boot_seconds(vm)
            if to_active is not None:
                active.append(to_active)
            if to_ssh is not None:
                ssh.append(to_ssh)
    edges, counts = _histogram([*active, *ssh])
    return {"edges": edges, "active": _counts(active, edges), "ssh": _counts(ssh, edges),
            "n_active": len(active), "n_ssh": len(ssh),
            "median_active": statistics.median(active) if active else None,
            "median_ssh": statistics.median(ssh) if ssh else None}


def _histogram(values: list[float], bins: int = 20) -> tuple[list[float], list[int]]:
    """Equal bins from 0 to the largest of `values`: (each bin's lower edge, the counts)."""
    if not values:
        return [], []
    width = (max(values) or 1.0) / bins
    edges = [round(width * i, 3) for i in range(bins)]
    return edges, _counts(values, edges)


def _counts(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * len(edges)
    if not edges:
        return counts
    width = edges[1] - edges[0] if len(edges) > 1 else (edges[0] or 1.0)
    for v in values:
        counts[min(len(edges) - 1, int(v / width) if width else 0)] += 1
    return counts
