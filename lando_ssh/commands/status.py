"""`status` and `logs`: what the job store says of the jobs, and cwltool's log."""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

from lando_ssh.commands.common import EXIT_OK, journal_of, store_missing
from lando_ssh.config import Config
from lando_ssh.cwllog import TERMINAL_CODES, CwltoolLog, error_without_log
from lando_ssh.model import ACTIVE_STATES, FINAL_STATES, Job, JobState, JobStep

FOLLOW_INTERVAL = 1.0  # seconds between looks at a followed job


class Drivers:
    """Which of the active jobs a process on this machine drives (it holds the job's lock: a foreground `job N`,
    or the daemon, while the job runs or waits for a slot). A shared (PostgreSQL) store's jobs may be driven
    from other machines: there it cannot be told."""

    def __init__(self, config: Config):
        self.locks_dir = os.path.join(config.data_dir, "locks")
        self.can_tell = not config.store_url.startswith(("postgresql:", "postgres:"))
        self._table: str | None = None  # the kernel's lock table, read once per command

    def of(self, job: Job) -> tuple[bool | None, str | None]:
        """(driven: None when it cannot be told, the driver's description)."""
        from lando_ssh.joblock import holder, lock_table

        if not self.can_tell or job.state not in ACTIVE_STATES:
            return None, None
        if self._table is None:
            self._table = lock_table() or ""
        driver = holder(self.locks_dir, job.id, self._table or None)
        return driver is not None, driver

    def note(self, job: Job) -> str:
        """The sentence for an active job nobody drives, else ""."""
        if self.of(job)[0] is not False:
            return ""
        return (f"no process drives this job: `lando-ssh job {job.id}` resumes it (as does the daemon when it "
                "starts)")


def status_object(job: Job, drivers: Drivers | None = None) -> dict[str, Any]:
    d = job.to_dict()
    vm = job.vm
    d["vm"] = None if vm is None else {"name": vm.name, "id": vm.id, "address": vm.address, "port": vm.port,
                                       "user": vm.user, "flavor": vm.flavor,
                                       "created": d["vm"]["created"], "deleted": d["vm"]["deleted"],
                                       "active": d["vm"]["active"], "ready": d["vm"]["ready"]}
    d.pop("workflow_doc", None)
    d["job_order"] = job.public_job_order()
    d["run"] = {k: v for k, v in d["run"].items() if k != "vm_output"}
    d["progress"] = job.run.progress  # a transfer under way: what, bytes, total, rate, eta_seconds
    if drivers is not None:
        d["driven"], d["driver"] = drivers.of(job)
    return d


def _doing(job: Job, drivers: Drivers) -> str:
    """Why the job waits or failed, else what it is doing when that can be said (a transfer's progress); first
    of all, that nothing drives it."""
    note = drivers.note(job)
    if note:
        return f"{note}; {job.reason}" if job.reason else note
    return job.reason or _progress(job)


def _progress(job: Job) -> str:
    from lando_ssh.progress import sentence

    progress = job.run.progress
    return sentence(progress) if progress and job.state in ACTIVE_STATES else ""


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.store import safe_url

    journal = journal_of(config, reading=True)
    none = " (none yet: the store does not exist)" if store_missing(config) else ""
    store = f"{safe_url(config.store_url)}{none} (config: {config.source})"
    drivers = Drivers(config)
    if args.job_id is not None:
        job = journal.get(args.job_id)
        if args.json:
            print(json.dumps(status_object(job, drivers), indent=2))
        else:
            print(describe_job(job, drivers) + f"\n  store:   {store}")
        return EXIT_OK
    states = [JobState(s) for s in args.state] if args.state else None
    jobs = journal.list(states)
    print(f"lando-ssh: jobs of {store}", file=sys.stderr)
    if args.json:
        print(json.dumps([status_object(j, drivers) for j in jobs], indent=2))
        return EXIT_OK
    print(f"{'ID':>5}  {'NAME':<20} {'STATE':<5} {'STEP':<4} {'UPDATED':<19}  {'VM':<24} REASON")
    for j in jobs:
        vm = j.vm.name if j.vm and not j.vm.deleted else "-"
        print(f"{j.id:>5}  {j.name[:20]:<20} {j.state.value:<5} {j.step.value or '-':<4} "
              f"{j.updated.strftime('%Y-%m-%d %H:%M:%S'):<19}  {vm[:24]:<24} {_doing(j, drivers)}")
    return EXIT_OK


def describe_job(job: Job, drivers: Drivers) -> str:
    from lando_ssh.model import STEP_NAMES

    lines = [f"job {job.id}: {job.name}",
             f"  state:   {job.state.value} ({job.state.name.lower()})",
             f"  step:    {job.step.value or '-'} {STEP_NAMES.get(job.step, '')}".rstrip(),
             f"  workflow: {job.workflow}",
             f"  output:  {job.output_dir}",
             *([f"  docs:    {job.run.docs_path}"] if job.run.docs_path else []),
             f"  created: {job.created.isoformat(timespec='seconds')}",
             f"  updated: {job.updated.isoformat(timespec='seconds')}"]
    note = drivers.note(job)
    if note:
        lines.append(f"  driver:  {note}")
    elif drivers.of(job)[1]:
        lines.append(f"  driver:  {drivers.of(job)[1]}")
    if job.reason:
        lines.append(f"  reason:  {job.reason}")
    elif _progress(job):
        lines.append(f"  doing:   {_progress(job)}")
    if job.vm:
        where = f"{job.vm.address}:{job.vm.port}" if job.vm.address else "no address yet"
        went = "left it" if job.vm.pool_vm is not None else "deleted"  # a pool VM outlives the job
        gone = f", {went} {job.vm.deleted.isoformat(timespec='seconds')}" if job.vm.deleted else ""
        pool = f", pool VM, {job.vm.vcpus} vCPUs reserved" if job.vm.pool_vm is not None else ""
        cloud_id = job.vm.id or "not created"
        lines.append(f"  vm:      {job.vm.name} ({cloud_id}, {where}, flavor {job.vm.flavor}{pool}{gone})")
        if not job.vm.deleted and job.vm.address:
            lines.append(f"           log in with: lando-ssh ssh {job.id}")
    if job.timings:
        lines.append("  timings:")
        for code, t in job.timings.items():
            secs = f"{t.seconds:.2f}s" if t.seconds is not None else "running"
            lines.append(f"    {code} {STEP_NAMES.get(JobStep(code), ''):<16} {secs}")
    if job.error:
        lines.append("  error:")
        lines.extend("    " + line for line in job.error.splitlines())
    return "\n".join(lines)


# -- logs --------------------------------------------------------------------------------------
def cmd_logs(config: Config, args: argparse.Namespace) -> int:
    journal = journal_of(config, reading=True)
    reader = CwltoolLog(config, journal)
    try:
        job = journal.get(args.job_id)
        print(f"job {job.id} history:")
        seen = _print_history(job, 0)
        if job.run.docs_path:
            print(f"lando's docs of the job: {job.run.docs_path}")
        log_lines = reader.lines(job)
        shown = max(0, len(log_lines) - args.tail) if args.tail is not None else 0
        if not args.follow:
            _print_end(job, log_lines, shown)
            return EXIT_OK
        if log_lines[shown:]:
            print("\ncwltool log:")
        _print_lines(log_lines[shown:])
        shown = len(log_lines)
        wake = threading.Event()
        while job.state not in FINAL_STATES:
            wake.wait(FOLLOW_INTERVAL)
            job = journal.get(args.job_id)
            seen = _print_history(job, seen)
            new = reader.lines(job, after=shown)
            if shown == 0 and new:
                print("\ncwltool log:")
            _print_lines(new)
            shown += len(new)
        if job.error:
            print("\nerror:\n" + error_without_log(job.error))
        return EXIT_OK
    finally:
        reader.close()


def _print_history(job: Job, seen: int) -> int:
    for h in job.history[seen:]:
        said = "; ".join(x for x in (h.note, h.reason) if x)  # what happened; why it waits from then on
        note = f"  {said}" if said else ""
        print(f"  {h.at.isoformat(timespec='milliseconds')}  state {h.state.value:<1} step {h.step.value or '-':<1}"
              f"{note}", flush=True)
    return len(job.history)


def _print_end(job: Job, log_lines: list[str], shown: int) -> None:
    if job.error:  # its stderr tail is the end of cwltool's log: shown once, there, when the log is shown
        print("\nerror:\n" + (error_without_log(job.error) if log_lines else TERMINAL_CODES.sub("", job.error)))
    if log_lines[shown:]:
        print("\ncwltool log:")
        _print_lines(log_lines[shown:])


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)
    sys.stdout.flush()
