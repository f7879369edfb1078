"""Made-up jobs with a full history (every step of every attempt), for the status page's tests and bench."""
from __future__ import annotations

from datetime import timedelta

from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, StepTiming, VmRecord, now

WAITING = "waiting: 1 of 1 job slots busy"
SECRET_DOC = {"cwlVersion": "v1.2", "class": "CommandLineTool", "id": "#main",
              "requirements": [{"class": "http://commonwl.org/cwltool#Secrets", "secrets": ["#main/password"]}],
              "inputs": [{"id": "#main/password", "type": "string"}], "outputs": []}


def made_job(name: str, user: str, state: JobState, *, minutes_ago: float, project: str = "",
             secret: bool = False, restarts: int = 0) -> Job:
    """A job whose history walks V S R o O T (every attempt) and ends in `state`."""
    t0 = now() - timedelta(minutes=minutes_ago)
    job = Job(0, name, "wf.cwl", {"password": "hunter2-secret"} if secret else {"n": 1}, user=user,
              created=t0, updated=t0, workflow_doc=SECRET_DOC if secret else None,
              facts={"project": project} if project else {})
    t = t0
    history = [HistoryEntry(t, JobState.STARTING, JobStep.NONE, "start_job received", WAITING)]
    for attempt in range(restarts + 1):
        if attempt:
            t += timedelta(seconds=5)
            history.append(HistoryEntry(t, JobState.RESTARTING, JobStep.NONE))
        for step in (JobStep.CREATE_VM, JobStep.STAGING, JobStep.RUNNING, JobStep.ORGANIZE_OUTPUT,
                     JobStep.STORE_OUTPUT, JobStep.TERMINATE_VM):
            t += timedelta(seconds=10)
            history.append(HistoryEntry(t, JobState.RUNNING if step != JobStep.CREATE_VM else JobState.STARTING, step))
            job.timings[step.value] = StepTiming(t, t + timedelta(seconds=10))
        job.past_vms.append(VmRecord(f"vm-{name}-{attempt}", id=f"id-{attempt}", address="127.0.0.1", port=2222,
                                     flavor="m1.small", vcpus=2, created=t - timedelta(seconds=50),
                                     active=t - timedelta(seconds=46), ready=t - timedelta(seconds=41),
                                     deleted=t + timedelta(seconds=10)))
    t += timedelta(seconds=10)
    if state in (JobState.FINISHED, JobState.ERROR, JobState.CANCELED):
        history.append(HistoryEntry(t, state, JobStep.NONE, "ended"))
        job.error = "the workflow failed: exit 1" if state == JobState.ERROR else None
        job.reason = "step R failed" if state == JobState.ERROR else ""
    elif state == JobState.RUNNING:
        history = history[:4]  # V S R: running now, on its VM
        job.vm = job.past_vms.pop()
        job.vm.deleted = None
        job.timings.pop("R")
    elif state == JobState.STARTING:
        history, job.timings, job.past_vms = history[:1], {}, []
        job.reason = WAITING
    job.history = history
    job.state, job.step = history[-1].state, history[-1].step
    job.updated = history[-1].at
    return job
