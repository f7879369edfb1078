"""cwl-runner's VM, booting while the server validates the workflow.

`cwl-runner` validates, stores, then runs its job at once; where a VM boots in about the time the validation
takes (the local cloud: ~50 ms, against 0.1-0.5 s of cwltool's load) the boot is half of what `cwl-runner` adds
to cwltool's time. So it asks for the VM first, in a thread, and the validation runs meanwhile:

- `EarlyVm.begin` asks for a VM of the flavor the job would get were its workflow to state no needs, with a key
  pair of its own and this installation's tags but no job's (nothing is stored yet). Only a cloud that can tag a
  VM afterwards (`tag_vm`), while the job would start at once by the limits (`limits.*`: else the run first waits
  for room, which a VM asked for early would skip), get one; elsewhere, and when the cloud refuses, the job boots
  its VM as any does.
- The workflow is refused: `discard` deletes that VM and its key, and the refusal is said as it always was.
- The job is stored: `hand_to` gives it the VM (tagged with its id, the key in the job's place, recorded as the
  job's first VM), and the engine's create step finds it as a resumed job finds its VM. A VM of another flavor
  than the job's workflow needs is deleted instead, and the job boots its own.

A VM asked for here and never handed over (the process killed meanwhile) names no job: the orphan sweep deletes it.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from lando_ssh.cloud import META_JOB_ID, Cloud, Flavor, VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import UserDataParams, render_user_data
from lando_ssh.config import Config
from lando_ssh.errors import LandoError
from lando_ssh.installation import ours
from lando_ssh.journal import Journal
from lando_ssh.keys import JobKeys, generate_keypair
from lando_ssh.model import Job, VmRecord, VmSpec, now

log = logging.getLogger(__name__)


@dataclass
class _Booted:
    info: VmInfo
    flavor: Flavor
    image: str
    user: str
    work_dir: str
    created: datetime
    key: str  # the private key's path (the public one beside it, `.pub`)


class EarlyVm:
    """A VM asked for before the job exists; see the module's doc."""

    def __init__(self, config: Config, spec: VmSpec):
        self.config = config
        self.spec = spec
        self.cloud: Cloud | None = None
        self.booted: _Booted | None = None
        self._thread = threading.Thread(target=self._boot, name="early-vm", daemon=True)

    @classmethod
    def begin(cls, config: Config, spec: VmSpec) -> EarlyVm:
        """Start asking for the VM (in a thread: nothing here may hold back or change the validation)."""
        early = cls(config, spec)
        early._thread.start()
        return early

    def _boot(self) -> None:
        from lando_ssh.admission import room_now
        from lando_ssh.cloud import open_cloud
        from lando_ssh.commands.common import journal_of
        from lando_ssh.vmspec import job_flavor

        key = ""
        try:
            journal = journal_of(self.config)
            try:
                if not room_now(self.config, journal):  # the job would wait for room first
                    return
            finally:
                journal.store.close()
            self.cloud = cloud = open_cloud(self.config)
            if not callable(getattr(cloud, "tag_vm", None)):
                return
            flavor = job_flavor(self.config, cloud, self._job_as_known())
            image = self.spec.image or self.config.vm.image
            volume = self.spec.volume_size if self.spec.volume_size is not None else self.config.vm.volume_size
            name = f"{self.config.cloud.installation_id}-cwl-runner-{secrets.token_hex(4)}"
            user = cloud.default_user(image)
            work_dir = cloud.vm_work_dir(name)
            os.makedirs(self.config.keys_dir, mode=0o700, exist_ok=True)
            key = os.path.join(self.config.keys_dir, f"early-{name}")
            public = generate_keypair(key, f"lando-ssh-{name}")
            user_data = render_user_data(UserDataParams(public_key=public, user=user, work_dir=work_dir,
                                                        volume_device="/dev/vdb" if volume else None))
            created = now()
            info = cloud.create_vm(VmRequest(name=name, flavor=flavor.name, image=image, user_data=user_data,
                                             volume_size=volume or 0, metadata=ours(self.config)))
            self.booted = _Booted(info, flavor, image, user, work_dir, created, key)
        except Exception as e:  # LandoError, or anything else: the job boots its own VM, and meets it there
            log.debug("no VM asked for before the validation: %s", e)
            if key:
                _remove_key(key)

    def _job_as_known(self) -> Job:
        """The job as far as it is known before the validation: its VM options, no workflow (so no needs)."""
        return Job(id=0, name="", workflow="", job_order={}, vm_spec=self.spec)

    def discard(self) -> None:
        """Delete the VM (the workflow was refused, or the job cannot use it) and its key; wait for that."""
        self._thread.join()
        booted, self.booted = self.booted, None
        try:
            if booted is not None and self.cloud is not None:
                _remove_key(booted.key)
                try:
                    self.cloud.delete_vm(booted.info.id)
                except LandoError as e:  # untagged by a job: the orphan sweep deletes it
                    log.warning("the VM %s asked for before the validation could not be deleted: %s",
                                booted.info.name, e)
        finally:
            self._close()

    def hand_to(self, journal: Journal, job: Job) -> None:
        """Make the VM job `job`'s first VM, or delete it when the job needs another flavor."""
        from lando_ssh.vmspec import job_flavor

        self._thread.join()
        booted, cloud = self.booted, self.cloud
        if booted is None or cloud is None:
            self._close()
            return
        try:
            fits = job_flavor(self.config, cloud, job).name == booted.flavor.name
        except LandoError:  # the create step says it, on the job
            fits = False
        if not fits:
            self.discard()
            return
        try:
            getattr(cloud, "tag_vm")(booted.info.id, {META_JOB_ID: str(job.id)})  # noqa: B009 (see begin)
            keys = JobKeys(self.config.keys_dir, job.id)
            os.replace(booted.key + ".pub", keys.public_path)
            os.replace(booted.key, keys.private_path)
        except (LandoError, OSError) as e:
            log.debug("the VM asked for before the validation cannot be job %s's: %s", job.id, e)
            self.discard()
            return
        self.booted = None

        def record(j: Job) -> None:  # as the create step records the VM it asks for
            j.run.vm_attempt = 1
            j.vm = VmRecord(name=booted.info.name, id=booted.info.id, user=booted.user, work_dir=booted.work_dir,
                            flavor=booted.flavor.name, vcpus=booted.flavor.vcpus, ram_mb=booted.flavor.ram_mb,
                            created=booted.created)

        journal.update(job.id, record)
        self._close()

    def _close(self) -> None:
        cloud, self.cloud = self.cloud, None
        if cloud is not None:
            cloud.close()


def _remove_key(private: str) -> None:
    for path in (private, private + ".pub"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

