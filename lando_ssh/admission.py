"""A foreground `lando-ssh job N` keeps the limits the daemon keeps (`limits.*`, the cloud's quota): before
its VM is asked for, the job waits in S with the scheduler's reason ("waiting: 4 of 4 job slots busy")
while the other jobs of the store hold what it needs. The daemon counts its own jobs as it runs them; a
foreground run counts what the job store says is active, so two runs deciding at the same moment may both
start (the cloud's quota is still enforced: the create step waits while the cloud says it is full)."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from lando_ssh.cloud import Cloud
from lando_ssh.config import Config
from lando_ssh.errors import CloudError
from lando_ssh.journal import Journal, recording
from lando_ssh.model import ACTIVE_STATES, Job, JobState, JobStep
from lando_ssh.scheduler import active_vms, decide, waiting_job

log = logging.getLogger(__name__)

LOOK_AGAIN = 5.0  # longest wait between looks at what the other jobs hold
WAITS = (JobState.NEW, JobState.AUTHORIZED, JobState.STARTING, JobState.RESTARTING)  # before a VM is asked for


def wait_for_room(config: Config, journal: Journal, cloud: Cloud, job_id: int, cancel: threading.Event) -> None:
    """Return when job `job_id` may start (or is canceled, or already has its VM: it only resumes); meanwhile
    it is in S with the reason it waits. A job that can never start as asked is left to the create step,
    which fails it with the same sentence."""
    told = None
    while not cancel.is_set():
        job = journal.get(job_id)
        if job.state not in WAITS or job.vm is not None:
            return
        others = [j for j in journal.list(ACTIVE_STATES) if j.id != job_id]
        running = [j for j in others if not _waiting(j)]
        if _free_slot(config, running):
            return  # a free slot, and no limit that needs the flavors' sizes (the cloud's quota: see above)
        try:
            flavors = cloud.flavors()
            quota = cloud.quota()
        except CloudError as e:  # the create step meets it again, and says it on the job
            log.debug("job %s: no limits check: %s", job_id, e)
            return
        waiting = waiting_job(job, config.vm.volume_size)
        waiting.flavor = waiting.flavor or config.vm.flavor
        decision = decide(config, [waiting], active_vms(others, flavors), running_jobs=len(running), quota=quota,
                          flavors=flavors, now=time.time())
        if decision.start:
            placed = decision.start[0].flavor
            if placed is not None:
                journal.update(job_id, recording(flavor=placed.name))
            return
        why = decision.waiting.get(job_id)
        if why is None:  # it can never start as asked: the create step says why
            return
        if why != told:
            told = why
            journal.update(job_id, _waiting_in_s(why))
        cancel.wait(min(config.poll_interval, LOOK_AGAIN))
        if journal.get(job_id).state == JobState.CANCELING:
            return


def room_now(config: Config, journal: Journal) -> bool:
    """Whether a new job would start at once, with no look at the cloud (`wait_for_room` returns at once)."""
    return _free_slot(config, [j for j in journal.list(ACTIVE_STATES) if not _waiting(j)])


def _free_slot(config: Config, running: list[Job]) -> bool:
    """A free job slot, and no limit that needs the flavors' sizes."""
    limits = config.limits
    return not (limits.max_vms or limits.max_cores or limits.max_ram_gb) and \
        not (limits.max_concurrent_jobs and len(running) >= limits.max_concurrent_jobs)


def _waiting(job: Job) -> bool:
    """A job that waits for a slot (the daemon's queue, or another foreground run) holds no slot yet."""
    return (job.state == JobState.STARTING and job.step == JobStep.NONE) or job.run.restart_pending


def _waiting_in_s(why: str) -> Callable[[Job], None]:
    def change(job: Job) -> None:
        if job.state in (JobState.NEW, JobState.AUTHORIZED):
            job.set_state(JobState.STARTING, JobStep.NONE, note="waiting for room")
        if job.state in (JobState.STARTING, JobState.RESTARTING):
            job.reason = why

    return change
