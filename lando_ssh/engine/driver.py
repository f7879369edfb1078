"""The driver: the one path that walks a job through its steps, for the daemon and for a foreground
`lando-ssh job N` alike. It holds the job's lock on this machine, restarts the job when the restart rule
says so, lets the caller's admission decide when it may start (`limits.*`), then runs the steps from where
the job stands, each recording what it did before it returns; a failure or a cancel ends in `policy`."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from lando_ssh.backoff import Backoff
from lando_ssh.errors import JobCanceled, LandoError, StoreUnavailable
from lando_ssh.model import STEP_NAMES, STEPS, HistoryEntry, Job, JobState, JobStep, StepTiming, now

from . import create_vm, organize, policy, run, stage, store_output, terminate
from .restart import prepare_restart, restart_due
from .runtime import Runtime, ServerStopping
from .vmfate import explain_vm_loss

log = logging.getLogger(__name__)

Step = Callable[[Runtime, int], None]
#: each step's function, in the order STEPS walks them
STEP_FUNCTIONS: dict[JobStep, Step] = {
    JobStep.CREATE_VM: create_vm.create_vm,
    JobStep.STAGING: stage.stage_inputs,
    JobStep.RUNNING: run.run_workflow,
    JobStep.ORGANIZE_OUTPUT: organize.organize_output,
    JobStep.STORE_OUTPUT: store_output.store_output,
    JobStep.TERMINATE_VM: terminate.terminate_vm,
}
#: waits until the job may start (the foreground's `admission.wait_for_room`); the daemon's scheduler
#: admitted its jobs before it launched them
Admission = Callable[[int], None]
#: seconds before a step that met an internal error runs again; doubling up to the longest
STEP_RETRY_FIRST = 1.0
STEP_RETRY_LONGEST = 60.0


class Engine(Runtime):
    """Drives jobs: `drive` (restart if due, admission, steps), and the admin's `delete_kept_vm`."""

    def drive(self, job_id: int, admit: Admission | None = None) -> Job:
        """Walk job `job_id` from where it stands to the end, restarting it first when it is due; returns the
        final record. Raises JobConflict while another process on this machine drives the job."""
        with self.driving(job_id):
            if restart_due(self.journal.get(job_id)):
                prepare_restart(self, job_id)
            if admit is not None:
                try:
                    admit(job_id)
                except LandoError as e:  # the steps meet it again (the store, the cloud) and say it on the job
                    log.warning("job %s: the limits could not be checked: %s", job_id, e)
            return self._walk(job_id)

    def run(self, job_id: int) -> Job:
        """Walk the job from where it stands (no restart): the steps alone."""
        with self.driving(job_id):
            return self._walk(job_id)

    def restart(self, job_id: int) -> Job:
        """Make an errored or canceled job ready to resume; the lock is kept for the run that follows."""
        self.hold(job_id)
        try:
            return prepare_restart(self, job_id)
        except BaseException:
            self.let_go(job_id)
            raise

    def delete_kept_vm(self, job_id: int) -> str:
        with self.driving(job_id):
            return policy.delete_kept_vm(self, job_id)

    # -- the steps, one by one (cloud-check and the benchmarks call them) -------------------
    def create_vm(self, job_id: int) -> None:
        create_vm.create_vm(self, job_id)

    def stage_inputs(self, job_id: int) -> None:
        stage.stage_inputs(self, job_id)

    def terminate_vm(self, job_id: int) -> None:
        terminate.terminate_vm(self, job_id)

    # -- the walk --------------------------------------------------------------------------
    def _walk(self, job_id: int) -> Job:
        step = JobStep.NONE
        try:
            job = self.until_stored(job_id, "the job's start", lambda: self._begin(job_id))
            if job.state in (JobState.FINISHED, JobState.DELETED):
                return job
            if job.state == JobState.CANCELING:
                return self.until_stored(job_id, "the cancel", lambda: policy.finish_cancel(self, job_id))
            start = STEPS.index(job.step) if job.step in STEPS else 0
            step = STEPS[start]
            ended: JobStep | None = None
            try:
                for step in STEPS[start:]:
                    self.until_stored(job_id, f"the start of step {step.value} ({STEP_NAMES[step]})",
                                      functools.partial(self.enter, job_id, step, ended))
                    self._run_step(job_id, step)
                    ended = step
                return self.until_stored(job_id, "the job's end",
                                         lambda: self.journal.update(job_id, functools.partial(_finish, ended=ended)))
            except JobCanceled:
                return self.until_stored(job_id, "the cancel", lambda: policy.finish_cancel(self, job_id))
            except LandoError as e:
                if self.until_stored(job_id, "the cancel check", lambda: self.canceled(job_id)):
                    return self.until_stored(job_id, "the cancel", lambda: policy.finish_cancel(self, job_id))
                fail = functools.partial(self._fail, job_id, step, e)
                return self.until_stored(job_id, "the job's failure", fail)
        except ServerStopping:
            log.info("job %s: left at step %s while the server stops; it resumes when the server starts", job_id,
                     step.value)
            return self.journal.get(job_id)
        finally:
            self.close(job_id)

    def _fail(self, job_id: int, step: JobStep, error: LandoError) -> Job:
        return policy.fail(self, job_id, step, explain_vm_loss(self, job_id, step, error))

    def _begin(self, job_id: int) -> Job:
        job = self.journal.get(job_id)
        if job.state in (JobState.NEW, JobState.AUTHORIZED):
            job = self.journal.update(job_id, lambda j: j.set_state(JobState.STARTING, JobStep.NONE))
        return job

    def _run_step(self, job_id: int, step: JobStep) -> None:
        """Run one step. An unexpected exception of this server's (a bug, a resource it ran short of) or of its
        job store (locked, its connection lost) is not the job's failure: the step runs again after a back-off
        (steps are idempotent), the wait said on the job when the store takes it, and in the log. A job fails only
        for a reason that is its own, its VM's or its cloud's (a LandoError), and a cancel or a stop ends the
        waits."""
        backoff = Backoff(STEP_RETRY_FIRST, STEP_RETRY_LONGEST)
        while True:
            try:
                STEP_FUNCTIONS[step](self, job_id)
                return
            except StoreUnavailable as e:
                delay = backoff.next()
                log.warning("job %s: the job store failed in step %s (%s): %s; the step runs again in %.0fs", job_id,
                            step.value, STEP_NAMES[step], e, delay)
                self._again(job_id, step, f"the job store failed ({str(e)[:200]})", delay)
            except (LandoError, ServerStopping):
                raise
            except Exception as e:
                delay = backoff.next()
                log.exception("job %s: internal error in step %s (%s); the step runs again in %.0fs", job_id,
                              step.value, STEP_NAMES[step], delay)
                what = f"{type(e).__name__}: {e}"
                self._again(job_id, step, f"an internal error of this server ({what[:200]})", delay)

    def _again(self, job_id: int, step: JobStep, why: str, delay: float) -> None:
        """Say on the job that `step` runs again in `delay` seconds and why (when the store takes it), then wait."""
        self.close(job_id)  # a connection the error left half-used is not reused
        try:
            self.journal.update(job_id, _retrying(step, why, delay))
        except StoreUnavailable as e:  # the store is still down: the log says it (above)
            log.debug("job %s: the wait could not be written on the job: %s", job_id, e)
        try:
            self.sleep(job_id, delay)
        except StoreUnavailable:  # its cancel check read the store: the step meets the store again
            pass

    def enter(self, job_id: int, step: JobStep, ended: JobStep | None) -> None:
        """`ended` (the step before, if any) is over and `step` begins: one write. A job canceled meanwhile
        in the store (by another process) is left as it is: JobCanceled."""
        if self.cancel_event.is_set():
            raise JobCanceled("canceled")
        if self.stopping.is_set():
            raise ServerStopping()

        def change(j: Job) -> None:
            if j.state == JobState.CANCELING:
                return
            at = now()
            if ended is not None:
                j.timings.setdefault(ended.value, StepTiming()).finished = at
            if ended == JobStep.CREATE_VM and j.vm is not None and j.vm.active and not j.vm.ready:
                j.vm.ready = at  # it answered SSH: its boot is on record (the status page's plots)
            # V runs in S until the cloud accepted the VM (then R); every later step runs in R
            running = step != JobStep.CREATE_VM or j.state == JobState.RUNNING
            j.set_state(JobState.RUNNING if running else JobState.STARTING, step)
            timing = j.timings.setdefault(step.value, StepTiming())
            timing.started = timing.started or at
            timing.finished = None
            j.reason = ""

        if self.journal.update(job_id, change).state == JobState.CANCELING:
            raise JobCanceled("canceled")


def _retrying(step: JobStep, why: str, delay: float) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        job.reason = f"step {step.value} ({STEP_NAMES[step]}) runs again in {delay:.0f}s after {why}"
        job.history.append(HistoryEntry(now(), job.state, job.step, job.reason[:200]))

    return change


def _finish(job: Job, ended: JobStep | None = None) -> None:
    if ended is not None:
        job.timings.setdefault(ended.value, StepTiming()).finished = now()
    job.reason = ""
    job.set_state(JobState.FINISHED, JobStep.NONE)
