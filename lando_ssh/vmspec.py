"""What a job asks of the cloud (its flavor and image), checked as the job's VM is created, and at submit.

`submit` asks the cloud before it stores a job, so a job that would fail at once on its VM (an
unknown flavor or image, a workflow needing more than any allowed flavor has) is refused with the
sentence the job would have got. A cloud that does not answer then is no reason to refuse: the job is
stored, and checked when its VM is created.
"""
from __future__ import annotations

import json
from typing import Any

from lando_ssh.cloud import Cloud, Flavor
from lando_ssh.config import Config
from lando_ssh.errors import BadInput, CloudError, CloudNotFound
from lando_ssh.flavors import NoFlavorFits, choose_flavor, workflow_needs
from lando_ssh.model import Job


def job_flavor(config: Config, cloud: Cloud, job: Job) -> Flavor:
    """The job's flavor, else the scheduler's choice, else vm.flavor, else the cheapest allowed that fits."""
    named = job.vm_spec.flavor or job.run.flavor or config.vm.flavor
    volume = job.vm_spec.volume_size if job.vm_spec.volume_size is not None else config.vm.volume_size
    try:
        return choose_flavor(workflow_needs(job.workflow_doc), cloud.flavors(), config.flavors.allow,
                             named=named, volume_gb=volume or 0)
    except NoFlavorFits as e:
        raise CloudNotFound(str(e)) from None


def check_at_submit(config: Config, job: Job) -> str | None:
    """BadInput when the cloud says the job cannot have its VM; a note (for the submitter) when the cloud
    does not answer; None when the job's flavor and image exist."""
    from lando_ssh.cloud import open_cloud

    try:
        cloud = open_cloud(config)
    except CloudError as e:
        return _unchecked(e)
    try:
        job_flavor(config, cloud, job)
        cloud.check_image(job.vm_spec.image or config.vm.image)
    except CloudNotFound as e:
        raise BadInput(str(e)) from None
    except CloudError as e:
        return _unchecked(e)
    finally:
        cloud.close()
    return None


def _unchecked(e: CloudError) -> str:
    return f"the cloud did not answer ({e}); the job's flavor and image are checked when its VM is created"


def volume_mounts(value: Any) -> list[tuple[str, str]]:
    """bespin-api's vm_volume_mounts ({"/dev/vdb1": "/work"}, or that as a JSON string) as (device, mount point)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    if not isinstance(value, dict):
        return []
    return [(str(dev), str(point)) for dev, point in value.items()
            if str(dev).startswith("/dev/") and str(point).startswith("/")]
