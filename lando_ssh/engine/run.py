"""Step R: run the workflow. cwltool is started detached on the VM (its pid recorded the moment it is
printed), then waited on in bounded waits; a resumed job re-attaches to the run it started. A VM that stops
answering is given health.grace (a VM the cloud shows dead or gone, none: its fault is the reason);
limits.max_run_time stops a run that lasts too long."""
from __future__ import annotations

import logging
import posixpath
import re
import shlex
from datetime import datetime

from lando_ssh.errors import (
    HostKeyMismatch,
    JobCanceled,
    LandoError,
    RemoteCommandFailed,
    StepTimeout,
    VmFailed,
    VmUnreachable,
    WorkflowFailed,
)
from lando_ssh.journal import recording
from lando_ssh.model import Job, now
from lando_ssh.remote import Remote

from .paths import JobPaths
from .runtime import Runtime, ServerStopping
from .vmfate import vm_fate

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 100
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # cwltool colours its log


def run_workflow(rt: Runtime, job_id: int) -> None:
    job = rt.journal.get(job_id)
    paths = rt.paths(job)
    remote = rt.remote(job)
    limit = rt.config.limits.max_run_time
    status = None  # the first wait's answer, when it came with the start
    if job.run.run_pid is None:
        status = _start_run(rt, job, paths, remote, _run_wait(rt, limit, now()))
        job = rt.journal.get(job_id)
    started = job.run.run_started or now()
    while True:
        if rt.canceled(job_id):
            kill_run(rt, job_id)
            raise JobCanceled("canceled while the workflow ran")
        if rt.stopping.is_set():
            raise ServerStopping()
        if limit and (now() - started).total_seconds() >= limit:
            kill_run(rt, job_id)
            raise StepTimeout(f"the workflow ran longer than limits.max_run_time ({limit:.0f}s) and was "
                              "stopped")
        wait = _run_wait(rt, limit, started)
        try:
            if status is None:
                status = remote.run(_wait_argv(paths, wait), timeout=wait + 60, retry=False,
                                    what="waiting for cwltool").stdout.strip()
        except HostKeyMismatch:
            raise
        except VmUnreachable as e:
            if not (rt.cancel_event.is_set() or rt.stopping.is_set()):  # else: we interrupted it ourselves
                _unreachable(rt, job_id, e)
            continue
        if job.run.unreachable_since is not None:
            job = rt.journal.update(job_id, recording(unreachable_since=None))
        if status.startswith("exited "):
            code = int(status.split()[1])
            rt.journal.update(job_id, recording(exit_code=code))
            if code != 0:
                tail = stderr_tail(remote, paths)
                pre = rt.command(job, "cwl_pre_process_command")
                said = f"lando-then: the pre-process command exited with code {code}"  # its last line
                if pre and tail.rsplit("\n", 1)[-1] == said:
                    raise WorkflowFailed(f"the pre-process command ({shlex.join(pre)}) "
                                         f"exited with code {code}; the workflow did not run.\n"
                                         f"Last {STDERR_TAIL_LINES} lines of its stderr:\n{tail}")
                full = "the VM's disk filled up (No space left on device; ask for a larger volume_size). " \
                    if "No space left on device" in tail else ""
                why = _failure_summary(tail)
                raise WorkflowFailed(f"{full}cwltool exited with code {code}{f' ({why})' if why else ''}.\n"
                                     f"Last {STDERR_TAIL_LINES} lines of its stderr:\n{tail}")
            return
        if status == "killed":
            raise JobCanceled("the workflow was killed")
        if status in ("lost", "not-started"):
            if fate := vm_fate(rt, job):
                raise VmFailed(f"{fate}; the workflow's run was lost with it")
            tail = stderr_tail(remote, paths)
            raise WorkflowFailed("cwltool stopped without recording an exit code (was the VM restarted or the "
                                 f"process killed?). Last lines of its stderr:\n{tail}")
        status = None  # "running": wait again


def _run_wait(rt: Runtime, limit: float, started: datetime) -> float:
    """How long the next wait for cwltool may block: the poll interval, or what is left of max_run_time."""
    wait = rt.config.poll_interval
    if limit:
        wait = max(min(wait, limit - (now() - started).total_seconds()), 0.1)
    return wait


def _start_run(rt: Runtime, job: Job, paths: JobPaths, remote: Remote, wait: float) -> str | None:
    """Start cwltool on the VM and record its pid; the same command then waits for the run's end up to
    `wait` seconds (one round trip less), and its answer is returned (None: wait again)."""
    # a job source may give the job its own command (bespin-api's job_runtime_openstack)
    base = rt.command(job, "cwl_base_command") or rt.cloud.default_cwl_command()
    base += job.facts.get("cwltool_args") or []  # cwltool's run options given to cwl-runner
    argv = [*base, "--outdir", paths.results, "--tmpdir-prefix", paths.tmp + "/",
            "--tmp-outdir-prefix", paths.tmp + "/", paths.workflow, paths.job_order]
    if base and posixpath.basename(base[0]) == "cwltool":  # the server's CWL schemas, CWL's link rule
        argv = ["sh", posixpath.join(paths.bin, "lando-cwltool"), paths.job_dir,
                posixpath.join(paths.job_dir, "schemas"), *argv]
    pre = rt.command(job, "cwl_pre_process_command")
    if pre:  # lando's cwl_pre_process_command, in the results dir, just before the workflow
        argv = ["sh", posixpath.join(paths.bin, "lando-then"), paths.results, str(len(pre)), *pre, *argv]
    commands = {"cwl_base_command": base, "cwl_pre_process_command": pre or None,
                "cwl_post_process_command": rt.command(job, "cwl_post_process_command") or None}
    # lando-start is idempotent (a second call reports the first run), so a restart clears the old run
    clear = [paths.run, paths.results, paths.tmp] if job.run.rerun else []
    start = [posixpath.join(paths.bin, "lando-start"), paths.run, *argv]
    pids: list[int] = []

    def record(pid: int) -> None:
        pids.append(pid)
        rt.journal.update(job.id, recording(run_pid=pid, run_started=now(), commands=commands, rerun=False))
        rt.progress(job.id, f"cwltool started on the VM (pid {pid})")

    def on_stdout(out: bytes) -> None:  # the pid is recorded the moment it comes, before the wait
        if not pids and b"\n" in out:
            record(_pid(out.split(b"\n", 1)[0].decode(errors="replace")))

    try:
        out = remote.run(["sh", "-c", _CLEAR_START_WAIT, "sh", str(len(clear)), *clear,
                          posixpath.join(paths.bin, "lando-wait"), f"{wait:.1f}", *start],
                         timeout=wait + 60, retry=False, what="starting cwltool", on_stdout=on_stdout).stdout
    except VmUnreachable:
        if pids:
            return None  # started: the waits that follow meet the drop (or our own interruption)
        rt.check_cancel(job.id)  # (a resumed job asks lando-start again: it reports this run)
        out = remote.run(["sh", "-c", _CLEAR_START, "sh", str(len(clear)), *clear, *start],
                         what="starting cwltool").stdout  # idempotent: retried over a new connection
    if not pids:
        record(_pid(out.split("\n", 1)[0]))
    return out.split("\n", 1)[1].strip() if "\n" in out.strip() else None


def _unreachable(rt: Runtime, job_id: int, error: Exception) -> None:
    """The VM did not answer a check: wait health.interval and try again, until health.grace is spent; a VM the
    cloud shows in ERROR or gone fails the job at once, with the cloud's words."""
    job = rt.journal.get(job_id)
    if fate := vm_fate(rt, job):  # dead, not slow: no grace to wait out
        raise VmFailed(f"{fate} (it stopped answering: {error})")
    since = job.run.unreachable_since
    if since is None:
        since = now().replace(microsecond=0)
        rt.journal.update(job_id, recording(unreachable_since=since))
        log.warning("job %s: its VM stopped answering: %s", job_id, error)
    gone_for = (now() - since).total_seconds()
    grace = rt.config.health.grace
    if gone_for > grace:
        name = job.vm.name if job.vm else "?"
        raise VmUnreachable(f"VM {name} unreachable since {since.isoformat()} ({gone_for:.0f}s, longer than "
                            f"health.grace {grace:.0f}s): {error}")
    rt.sleep(job_id, min(rt.config.health.interval, max(grace - gone_for, 0.1)))


def stderr_tail(remote: Remote, paths: JobPaths) -> str:
    try:
        text = remote.run(["tail", "-n", str(STDERR_TAIL_LINES), posixpath.join(paths.run, "stderr")],
                          check=False).stdout.rstrip()
        return ANSI.sub("", text)
    except LandoError as e:
        return f"(could not read it: {e})"


def kill_run(rt: Runtime, job_id: int) -> None:
    job = rt.journal.get(job_id)
    if job.run.run_pid is None or not job.vm or not job.vm.host_keys:
        return
    paths = rt.paths(job)
    try:
        rt.remote(job).run(["sh", posixpath.join(paths.bin, "lando-kill"), paths.run, "10"], retry=False,
                           what="stopping cwltool")
    except LandoError as e:
        log.warning("job %s: could not stop cwltool on the VM: %s (the VM is deleted next)", job_id, e)


# sh -c: N, then N paths to remove (a rerun's old run)
_CLEAR = 'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do rm -rf "$1"; shift; i=$((i+1)); done; '
# ... then lando-start RUNDIR CMD... (it prints the pid); or with WAIT SECONDS first, then lando-wait too
_CLEAR_START = _CLEAR + 'exec sh "$@"'
_CLEAR_START_WAIT = _CLEAR + 'w=$1; t=$2; shift 2; sh "$@" || exit; exec sh "$w" "$2" "$t"'


def _wait_argv(paths: JobPaths, seconds: float) -> list[str]:
    return ["sh", posixpath.join(paths.bin, "lando-wait"), paths.run, f"{seconds:.1f}"]


def _pid(line: str) -> int:
    try:
        return int(line.strip())
    except ValueError:
        raise RemoteCommandFailed(f"lando-start printed {line.strip()[:200]!r} instead of a pid", 1, line) from None


_TOOL_EXIT = re.compile(r"\[job ([^\]]+)\] exited with status: (-?\d+)")
_CWLTOOL_LOG = ("INFO", "WARNING", "ERROR", "DEBUG", " ", "\t")


def _failure_summary(tail: str) -> str:
    """Why cwltool failed, in one line from its stderr: which tool exited with what, and the last
    line a tool wrote itself (cwltool's own lines start with a level); else cwltool's last error."""
    exited = said = error = ""
    for line in tail.splitlines():
        if not line.strip():
            continue
        if match := _TOOL_EXIT.search(line):
            exited = f"tool {match.group(1)} exited with status {match.group(2)}"
        elif line.startswith("ERROR"):
            error, said = line[len("ERROR"):].strip().rstrip(":"), ""  # lines after it are its continuation
        elif not line.startswith(_CWLTOOL_LOG):
            said = line.strip()
    summary = ": ".join(p for p in (exited or error, said) if p)
    return summary if len(summary) <= 300 else summary[:297] + "..."

