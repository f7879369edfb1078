"""The job record and its lifecycle: lando's state and step codes, allowed transitions.

Pure data and rules; nothing here does I/O.
"""
from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class JobState(enum.StrEnum):
    """lando's one-letter job states (bespin-api and its watchers understand these)."""

    NEW = "N"
    AUTHORIZED = "A"
    STARTING = "S"
    RUNNING = "R"
    FINISHED = "F"
    ERROR = "E"
    CANCELING = "c"
    CANCELED = "C"
    RESTARTING = "r"
    DELETED = "D"


class JobStep(enum.StrEnum):
    """lando's one-letter job steps, in the order the engine walks them."""

    NONE = ""
    CREATE_VM = "V"
    STAGING = "S"
    RUNNING = "R"
    ORGANIZE_OUTPUT = "o"
    STORE_OUTPUT = "O"
    TERMINATE_VM = "T"


#: The engine's steps in order (NONE excluded).
STEPS: tuple[JobStep, ...] = (
    JobStep.CREATE_VM,
    JobStep.STAGING,
    JobStep.RUNNING,
    JobStep.ORGANIZE_OUTPUT,
    JobStep.STORE_OUTPUT,
    JobStep.TERMINATE_VM,
)

#: What each step is called in sentences (`step V (create VM) failed: ...`).
STEP_NAMES = {
    JobStep.CREATE_VM: "create VM",
    JobStep.STAGING: "stage inputs",
    JobStep.RUNNING: "run workflow",
    JobStep.ORGANIZE_OUTPUT: "organize output",
    JobStep.STORE_OUTPUT: "store output",
    JobStep.TERMINATE_VM: "terminate VM",
}

S = JobState
#: Allowed state changes. A change to the same state (e.g. R -> R with a new step) is always allowed.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.NEW: frozenset({S.AUTHORIZED, S.STARTING, S.CANCELED, S.DELETED, S.ERROR}),
    S.AUTHORIZED: frozenset({S.STARTING, S.CANCELED, S.DELETED, S.ERROR}),
    S.STARTING: frozenset({S.RUNNING, S.ERROR, S.CANCELING, S.CANCELED}),
    S.RUNNING: frozenset({S.FINISHED, S.ERROR, S.CANCELING}),
    S.CANCELING: frozenset({S.CANCELED, S.ERROR}),
    S.ERROR: frozenset({S.RESTARTING, S.DELETED, S.CANCELING, S.CANCELED}),
    S.CANCELED: frozenset({S.RESTARTING, S.DELETED}),
    S.RESTARTING: frozenset({S.STARTING, S.RUNNING, S.ERROR, S.CANCELING, S.CANCELED}),
    S.FINISHED: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}
del S

#: States in which a job is being worked on (the server owns it and must resume it after a crash).
ACTIVE_STATES = frozenset({JobState.STARTING, JobState.RUNNING, JobState.CANCELING, JobState.RESTARTING})
#: States a job may be started from.
STARTABLE_STATES = frozenset({JobState.NEW, JobState.AUTHORIZED})
#: States a job may be restarted from.
RESTARTABLE_STATES = frozenset({JobState.ERROR, JobState.CANCELED})
FINAL_STATES = frozenset({JobState.FINISHED, JobState.ERROR, JobState.CANCELED, JobState.DELETED})


class IllegalTransition(ValueError):
    pass


def check_transition(old: JobState, new: JobState) -> None:
    if old != new and new not in TRANSITIONS[old]:
        raise IllegalTransition(f"a job cannot go from state {old.value!r} ({old.name.lower()}) "
                                f"to {new.value!r} ({new.name.lower()})")


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="milliseconds") if t else None


def parse_time(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


@dataclass
class VmSpec:
    """What the job asks of its VM; empty fields take the config's defaults."""

    flavor: str | None = None
    image: str | None = None
    volume_size: int | None = None  # GB, data volume mounted at the job's work dir


@dataclass
class VmRecord:
    """The VM a job runs on, as the cloud driver reported it."""

    name: str
    id: str | None = None
    address: str | None = None
    port: int = 22
    user: str | None = None
    host_keys: list[str] = field(default_factory=list)  # "ssh-ed25519 AAAA..." lines, pinned
    work_dir: str | None = None  # the job's directory on the VM
    flavor: str | None = None
    vcpus: int | None = None
    ram_mb: int | None = None
    created: datetime | None = None  # when it was asked for
    deleted: datetime | None = None
    volume_id: str | None = None
    active: datetime | None = None  # when the cloud said ACTIVE (a VM this process saw boot)
    ready: datetime | None = None  # when it answered SSH (cloud-init done): the job could use it
    #: a VM of the pool (pool.share other than job): its record's id, and its own key (the job has none). On a
    #: pool VM, `created`/`deleted` are when the job was placed on it and left it, `vcpus`/`ram_mb` what the job
    #: reserved there (its share), `flavor` the VM's
    pool_vm: int | None = None
    key_path: str | None = None


@dataclass
class HistoryEntry:
    at: datetime
    state: JobState
    step: JobStep
    note: str = ""
    #: why the job waits from here on, while it waits (`waits`): the reason it was given then
    reason: str = ""


@dataclass
class StepTiming:
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def seconds(self) -> float | None:
        if self.started and self.finished:
            return (self.finished - self.started).total_seconds()
        return None


@dataclass
class RunState:
    """The engine's record of a job's current attempt: what each step did, so a resumed job (after a crash, a
    server upgrade, `restart_job`) goes on from there. A restart that runs the workflow again starts a fresh
    one (`next_attempt`); the job source's own extras stay in `Job.facts`."""

    #: VMs asked for so far (the next one's name ends in -N+1, so a VM asked for is found again by name)
    vm_attempt: int = 0
    #: the flavor the scheduler placed the job on (else the job's, vm.flavor, or the cheapest that fits)
    flavor: str | None = None
    boot_retries: int = 0  # new VMs asked for because one stayed stuck in boot
    restart_pending: bool = False  # restart_job was recorded; the driver has not acted on it yet
    rerun: bool = False  # the workflow runs again on the same VM: its old run's files are cleared first
    bytes_staged: int | None = None
    staging_seconds: float | None = None
    #: a transfer under way (what, bytes, total, rate, eta_seconds): what `status` shows
    progress: dict[str, Any] | None = None
    run_pid: int | None = None  # cwltool's pid on the VM
    run_started: datetime | None = None
    #: the commands the run used (cwl_base_command, cwl_pre_process_command, cwl_post_process_command)
    commands: dict[str, list[str] | None] | None = None
    unreachable_since: datetime | None = None  # the VM stopped answering the waits for cwltool
    exit_code: int | None = None  # cwltool's
    vm_output: Any = None  # cwltool's output object, paths on the VM
    docs_dir: str | None = None  # where lando's docs go in the output dir (lando-docs when the workflow has docs)
    usage: dict[str, Any] | None = None  # the run's wall time, CPU, peak RSS
    cwltool_version: str | None = None
    output_printed: bool = False  # cwltool printed an output object
    partial_output: bool = False  # a failed run's outputs and logs were saved
    bytes_stored: int | None = None
    docs_path: str | None = None  # lando's docs of the job, here
    vm_kept: bool = False  # the VM outlives the job (keep_vm_on_error, cleanup_vm: false, results only on it)
    vm_kept_note: str = ""
    vm_delete_error: str = ""  # the last delete of the job's VM failed: the sweep retries it

    def next_attempt(self, *, rerun: bool) -> RunState:
        """A fresh state for a restart that runs the workflow again; the VM name counter and the scheduler's
        placement carry over."""
        return RunState(vm_attempt=self.vm_attempt, flavor=self.flavor, rerun=rerun)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["run_started"], d["unreachable_since"] = iso(self.run_started), iso(self.unreachable_since)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        d = {k: v for k, v in d.items() if k in _RUN_FIELDS and v is not None}
        for key in ("run_started", "unreachable_since"):
            if isinstance(d.get(key), str):
                d[key] = parse_time(d[key])
        return cls(**d)


@dataclass
class Job:
    """One workflow run: what to run, where it is, and everything that happened to it."""

    id: int
    name: str
    workflow: str  # where the workflow came from (path or URL), for the record
    job_order: dict[str, Any]  # input object, locations absolute (file:// or http(s)://)
    state: JobState = JobState.NEW
    step: JobStep = JobStep.NONE
    reason: str = ""  # one sentence: why the job waits, or why it failed
    error: str | None = None  # the full error text (step, exit code, stderr tail)
    created: datetime = field(default_factory=now)
    updated: datetime = field(default_factory=now)
    vm_spec: VmSpec = field(default_factory=VmSpec)
    vm: VmRecord | None = None
    past_vms: list[VmRecord] = field(default_factory=list)  # VMs it held before (boot retries, restarts)
    output_dir: str = ""
    priority: int = 0
    user: str = ""  # who submitted it (for usage reports)
    #: the engine's record of the current attempt (what each step did, so the job resumes there)
    run: RunState = field(default_factory=RunState)
    #: the job source's own extras (bespin-api's record, cwl-runner's cwltool options, the project)
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, StepTiming] = field(default_factory=dict)  # step code -> timing
    history: list[HistoryEntry] = field(default_factory=list)
    output: dict[str, Any] | None = None  # the CWL output object, paths local
    #: the workflow packed into one document at submit, so the job runs what was validated
    workflow_doc: dict[str, Any] | None = None

    @property
    def secret_inputs(self) -> list[str]:
        """The inputs the workflow names as secrets (cwltool's `cwltool:Secrets`): their values run on the
        VM but are shown nowhere (status, docs), as cwltool masks them in its log."""
        return secret_inputs(self.workflow_doc or {})

    def public_job_order(self) -> dict[str, Any]:
        """The job order with every secret input's value masked."""
        return masked(self.job_order, self.secret_inputs)

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON data (the `status --json` shape plus everything else)."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "step": self.step.value,
            "reason": self.reason,
            "error": self.error,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "workflow": self.workflow,
            "job_order": self.job_order,
            "vm_spec": dict(vars(self.vm_spec)),  # (not dataclasses.asdict: it deep-copies, ~5x slower)
            "vm": _vm_to_dict(self.vm),
            "past_vms": [_vm_to_dict(v) for v in self.past_vms],
            "output_dir": self.output_dir,
            "priority": self.priority,
            "user": self.user,
            "run": self.run.to_dict(),
            "facts": self.facts,
            "timings": {k: {"started": iso(t.started), "finished": iso(t.finished), "seconds": t.seconds}
                        for k, t in self.timings.items()},
            "history": [{"at": iso(h.at), "state": h.state.value, "step": h.step.value, "note": h.note,
                         **({"reason": h.reason} if h.reason else {})} for h in self.history],
            "output": self.output,
            "workflow_doc": self.workflow_doc,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        vm = d.get("vm")
        facts = dict(d.get("facts") or {})
        if "run" in d:
            run = RunState.from_dict(d["run"] or {})
        else:  # a record written before the run state was typed: its engine keys were facts
            run = RunState.from_dict({k: facts.pop(k) for k in list(facts) if k in _RUN_FIELDS})
        return cls(
            id=int(d["id"]),
            name=d.get("name", ""),
            workflow=d.get("workflow", ""),
            job_order=d.get("job_order") or {},
            state=JobState(d.get("state", "N")),
            step=JobStep(d.get("step", "")),
            reason=d.get("reason", ""),
            error=d.get("error"),
            created=parse_time(d.get("created")) or now(),
            updated=parse_time(d.get("updated")) or now(),
            vm_spec=VmSpec(**(d.get("vm_spec") or {})),
            vm=_vm_from_dict(vm) if vm else None,
            past_vms=[_vm_from_dict(v) for v in d.get("past_vms") or []],
            output_dir=d.get("output_dir", ""),
            priority=int(d.get("priority", 0)),
            user=d.get("user", ""),
            run=run,
            facts=facts,
            timings={k: StepTiming(parse_time(t.get("started")), parse_time(t.get("finished")))
                     for k, t in (d.get("timings") or {}).items()},
            history=[HistoryEntry(parse_time(h["at"]) or now(), JobState(h["state"]), JobStep(h["step"]),
                                  h.get("note", ""), h.get("reason", "")) for h in d.get("history") or []],
            output=d.get("output"),
            workflow_doc=d.get("workflow_doc"),
        )

    def retire_vm(self) -> None:
        """Forget the current VM (deleted, or to be replaced), keeping its record for usage reports."""
        if self.vm is not None:
            self.vm.deleted = self.vm.deleted or now()
            self.past_vms.append(self.vm)
            self.vm = None

    def set_state(self, state: JobState, step: JobStep | None = None, note: str = "") -> bool:
        """Move to `state` (and `step`, when given); returns False when nothing changed."""
        new_step = self.step if step is None else step
        if state == self.state and new_step == self.step:
            return False
        check_transition(self.state, state)
        self.state, self.step = state, new_step
        self.updated = now()
        self.history.append(HistoryEntry(self.updated, state, new_step, note))
        return True


def _vm_to_dict(vm: VmRecord | None) -> dict[str, Any] | None:
    if vm is None:
        return None
    d = dict(vars(vm))
    d["host_keys"] = list(vm.host_keys)
    for name in _VM_TIMES:
        d[name] = iso(d[name])
    return d


_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunState))
_VM_FIELDS = frozenset(f.name for f in dataclasses.fields(VmRecord))
_VM_TIMES = ("created", "deleted", "active", "ready")


def _vm_from_dict(d: dict[str, Any]) -> VmRecord:
    d = {k: v for k, v in d.items() if k in _VM_FIELDS}  # (a field a later version dropped is ignored)
    for name in _VM_TIMES:
        d[name] = parse_time(d.get(name))
    return VmRecord(**d)


def waits(state: JobState, step: JobStep, reason: str) -> bool:
    """A job in this state waits in the queue: started but held back for a job slot, the cloud's room or
    quota (S with no step yet, or S at V with a reason: the cloud's quota is full)."""
    return state == JobState.STARTING and (step == JobStep.NONE or bool(reason))


_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(reason: str) -> str:
    """A waiting reason with its figures as N ("waiting: N of N job slots busy"): what a job waits for, not
    how much of it is in use at the moment."""
    return _NUMBERS.sub("N", reason)


def note_wait(job: Job, reason_before: str, entries_before: int) -> None:
    """After a change to a waiting job: its history records why it waits, each time what it waits for
    changes (a new kind of reason, `reason_kind`: not every count of busy slots; a reason cleared is not a
    change), on the entry the change added or a new one of the same state and step. What the status page's
    plots of the queue read."""
    if not waits(job.state, job.step, job.reason) or not job.history:
        return
    if len(job.history) > entries_before:  # the change began the wait (or a new part of it)
        job.history[-1].reason = job.reason
        return
    if job.reason and job.reason != reason_before and reason_kind(job.reason) != reason_kind(job.history[-1].reason):
        job.history.append(HistoryEntry(now(), job.state, job.step, "", job.reason))


SECRETS_CLASSES = ("http://commonwl.org/cwltool#Secrets", "cwltool:Secrets")
MASK = "(secret)"


def secret_inputs(packed: dict[str, Any]) -> list[str]:
    """The short names of the main process's inputs that a `cwltool:Secrets` requirement or hint names."""
    graph = packed.get("$graph")
    main = next((p for p in graph if p.get("id") == "#main"), {}) if isinstance(graph, list) else packed
    names: list[str] = []
    for entry in [*(main.get("requirements") or []), *(main.get("hints") or [])]:
        if isinstance(entry, dict) and entry.get("class") in SECRETS_CLASSES:
            names += [str(s).rsplit("#", 1)[-1].rsplit("/", 1)[-1] for s in entry.get("secrets") or []]
    return names


def masked(job_order: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {k: (MASK if k in names and v is not None else v) for k, v in job_order.items()} if names else job_order


class Verdict(enum.Enum):
    """What the daemon makes of a command for a job in a given state."""

    APPLY = "apply"
    IGNORE = "ignore"  # a harmless repeat: acked, nothing changes
    REFUSE = "refuse"  # dead-lettered with the reason


def command_verdict(command: str, job: Job) -> tuple[Verdict, str]:
    """The daemon's rule for start_job, cancel_job and restart_job (`send` checks it before publishing), and
    the sentence that says why when the command is ignored or refused."""
    state = f"job {job.id} is in state {job.state.value} ({job.state.name.lower()})"
    if command == "cancel_job":
        if job.state in (JobState.CANCELED, JobState.CANCELING, JobState.FINISHED, JobState.DELETED):
            return Verdict.IGNORE, f"{state}; cancel_job changes nothing"
        return Verdict.APPLY, ""
    if command == "start_job":
        applies, only = STARTABLE_STATES, "starts new or authorized jobs (use restart_job for errored or canceled ones)"
    else:
        applies, only = RESTARTABLE_STATES, "restarts errored or canceled jobs"
    if job.state in applies:
        return Verdict.APPLY, ""
    if job.state in ACTIVE_STATES:
        return Verdict.IGNORE, f"{state}; {command} changes nothing"
    return Verdict.REFUSE, f"{state}; {command} only {only}"
