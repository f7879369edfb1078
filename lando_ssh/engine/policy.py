"""What happens to a job that fails or is canceled, and to its VM: the reason recorded (one sentence, and
the full error), a failed run's partial outputs saved, the VM deleted or kept (keep_vm_on_error, the job
source's cleanup_vm: false, or results that exist only on it), and a kept VM deleted when the admin is done."""
from __future__ import annotations

import logging

from lando_ssh.errors import CloudError, JobConflict, LandoError, WorkflowFailed
from lando_ssh.journal import recording
from lando_ssh.model import FINAL_STATES, STEP_NAMES, Job, JobState, JobStep, now

from .organize import organize_output
from .run import kill_run
from .runtime import Runtime
from .store_output import store_output
from .terminate import has_vm, keep_vm, mark_vm_deleted, terminate_quietly

log = logging.getLogger(__name__)


def fail(rt: Runtime, job_id: int, step: JobStep, error: LandoError) -> Job:
    """Record the job's failure at `step`: E, with the reason; its VM deleted unless it is to be kept."""
    name = STEP_NAMES.get(step, "the job")
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    job = rt.journal.get(job_id)
    saved = ""
    if (step == JobStep.RUNNING and isinstance(error, WorkflowFailed) and rt.config.save_outputs_on_error
            and has_vm(job) and job.run.exit_code not in (None, 0)):
        saved = _save_failed_run(rt, job_id)
        job = rt.journal.get(job_id)
    asked = keep_vm(rt, job, failed=True)
    # past the run, the results exist only on the VM: deleting it would lose them
    holds_results = step in (JobStep.ORGANIZE_OUTPUT, JobStep.STORE_OUTPUT) and has_vm(job)
    keep = asked or holds_results
    deleted = False if keep else terminate_quietly(rt, job)
    reason = f"step {step.value} ({name}) failed: {first}"
    if saved:
        reason += (" " if reason.endswith(".") else ". ") + saved
    if asked:
        reason += kept_note(job_id)
    elif holds_results:
        reason += results_kept_note(job_id)

    def record(j: Job) -> None:
        j.error = f"step {step.value} ({name}) failed: {text}"
        j.reason = reason
        close_timings(j)
        j.run.vm_kept = bool(keep)
        if deleted:
            mark_vm_deleted(j)
        j.set_state(JobState.ERROR, step, note=first[:200])

    log.error("job %s: %s", job_id, reason, extra={"job_outcome": True})  # a foreground run says it itself
    return rt.until_stored(job_id, "the job's failure", lambda: rt.journal.update(job_id, record))


def _save_failed_run(rt: Runtime, job_id: int) -> str:
    """What a failed run left, saved as cwltool leaves it: the outputs it collected (its partial output
    object), its log and lando's docs, pulled like a finished job's; the post-process command does not
    run. Best effort: returns a note for the job's reason, or "" when nothing could be saved."""
    try:
        organize_output(rt, job_id, post_process=False)
        store_output(rt, job_id)
    except Exception as e:  # the failure being recorded matters more: say why and go on
        log.warning("job %s: the failed run's outputs and logs could not be saved: %s", job_id, e)
        return ""
    job = rt.journal.update(job_id, recording(partial_output=True))
    return f"Its partial outputs and logs are in {job.facts.get('output_url') or job.output_dir}."


def finish_cancel(rt: Runtime, job_id: int) -> Job:
    """Cancel the job: its workflow killed, its VM deleted, C."""
    job = rt.journal.get(job_id)
    if job.state != JobState.CANCELING:
        job = rt.journal.update(job_id, lambda j: j.set_state(JobState.CANCELING))
    kill_run(rt, job_id)
    deleted = terminate_quietly(rt, job)

    def record(j: Job) -> None:
        if deleted:
            mark_vm_deleted(j)
        j.reason = "canceled"
        close_timings(j)
        j.set_state(JobState.CANCELED)

    return rt.until_stored(job_id, "the cancel", lambda: rt.journal.update(job_id, record))


def delete_kept_vm(rt: Runtime, job_id: int) -> str:
    """Delete the VM an ended job kept (keep_vm_on_error, or the job source's cleanup_vm: false)
    once the admin is done with it; returns the VM's name."""
    job = rt.journal.get(job_id)
    if job.state not in FINAL_STATES:
        raise JobConflict(f"job {job_id} is {job.state.name.lower()}; its VM is deleted when it ends "
                          f"(to stop it now: lando-ssh send cancel_job {job_id})")
    if not job.vm or not job.vm.id or job.vm.deleted:
        raise JobConflict(f"job {job_id} has no VM left to delete")
    if not terminate_quietly(rt, job):
        raise CloudError(f"could not delete VM {job.vm.name}: {job.run.vm_delete_error or 'see the log'}")

    def deleted(j: Job) -> None:
        mark_vm_deleted(j)
        j.run.vm_kept, j.run.vm_kept_note = False, ""
        j.reason = j.reason.replace(kept_note(job_id), "").replace(results_kept_note(job_id), "")

    rt.journal.update(job_id, deleted)
    return job.vm.name


def kept_note(job_id: int) -> str:
    return f" (VM kept for debugging: lando-ssh ssh {job_id}; lando-ssh delete-vm {job_id} when done)"


def results_kept_note(job_id: int) -> str:
    return (f" (VM kept: the results exist only on it; once the cause is fixed, lando-ssh job {job_id} "
            f"or restart_job stores them; lando-ssh delete-vm {job_id} discards them)")


def close_timings(job: Job) -> None:
    """The step under way ended (failed or canceled): its timing says how long it ran, not "running", and a
    transfer's progress is no longer shown."""
    job.run.progress = None
    for timing in job.timings.values():
        if timing.started and not timing.finished:
            timing.finished = now()
