"""Restart: the one rule for when a job restarts (the foreground `lando-ssh job N` and the daemon keep it
alike), and what a restart does: resume at the failed step on the same VM when that VM still answers,
otherwise from the start on a new VM (the old one deleted)."""
from __future__ import annotations

import logging

from lando_ssh.errors import JobConflict, LandoError
from lando_ssh.model import RESTARTABLE_STATES, STEP_NAMES, STEPS, Job, JobState, JobStep

from .runtime import Runtime
from .terminate import terminate_quietly

log = logging.getLogger(__name__)


def restart_due(job: Job) -> bool:
    """Whether driving the job begins with a restart: it errored or was canceled, or restart_job was recorded
    on it (state r) and no driver has acted on it yet."""
    return job.state in RESTARTABLE_STATES or (job.state == JobState.RESTARTING
                                               and job.run.restart_pending)


def prepare_restart(rt: Runtime, job_id: int) -> Job:
    """Make an errored or canceled job (or one restart_job was recorded on) ready to resume."""
    job = rt.journal.get(job_id)
    if not restart_due(job):
        raise JobConflict(f"job {job_id} is {job.state.name.lower()}; only errored or canceled jobs restart")
    reuse = False
    if job.vm and job.vm.id and not job.vm.deleted:
        info = rt.cloud.get_vm(job.vm.id)
        if info and info.status == "ACTIVE":
            try:
                rt.remote(job).run(["true"], retry=False)
                reuse = True
            except LandoError as e:
                log.info("job %s: its VM does not answer (%s); restarting on a new VM", job_id, e)
        if not reuse:
            terminate_quietly(rt, job)
    rt.close(job_id)

    def change(j: Job) -> None:
        step = j.step if reuse and j.step in STEPS else JobStep.CREATE_VM
        if not reuse:
            j.retire_vm()
        if STEPS.index(step) <= STEPS.index(JobStep.RUNNING):
            # the workflow runs again: a fresh run state (on the same VM, the old run's files are cleared first)
            j.run = j.run.next_attempt(rerun=reuse)
            j.output = None  # a failed run's partial one
        else:  # the same run goes on from its organize or store step, on the same VM
            j.run.restart_pending, j.run.unreachable_since, j.run.progress = False, None, None
        for again in STEPS[STEPS.index(step):]:  # the steps this attempt walks again are timed afresh
            j.timings.pop(again.value, None)
        j.error = None
        j.reason = f"restarting at step {step.value} ({STEP_NAMES[step]})" + (" on the same VM" if reuse else "")
        j.set_state(JobState.RESTARTING, step)

    return rt.journal.update(job_id, change)
