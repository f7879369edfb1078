"""A job's steps: create VM (V), stage (S), run workflow (R), organize output (o), store output (O),
terminate VM (T).

Each step is a method that reads the job record, does its work idempotently, and records what
it did (VM id and address, remote pid, exit code, bytes moved) before it returns, so that a
job can be resumed at any step: after a crash of the server, after `restart_job`, or from a
foreground `lando-ssh job N`. The pipeline talks to the outside world only through the cloud
driver and `remote.Remote`; it never imports pika or openstacksdk.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lando_ssh import exactjson, outputs, report, schemacache
from lando_ssh.cloud import META_JOB_ID, Cloud, Flavor, VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import READY_MARKER, UserDataParams, host_keys_from_console, render_user_data
from lando_ssh.config import Config
from lando_ssh.errors import (
    CloudError,
    HostKeyMismatch,
    JobCanceled,
    JobConflict,
    LandoError,
    QuotaExceeded,
    RemoteCommandFailed,
    SshAuthRefused,
    StagingFailed,
    StepTimeout,
    VmFailed,
    VmUnreachable,
    WorkflowFailed,
)
from lando_ssh.installation import ours
from lando_ssh.joblock import JobLock
from lando_ssh.journal import Journal, recording, setting
from lando_ssh.keys import JobKeys
from lando_ssh.model import (
    FINAL_STATES,
    RESTARTABLE_STATES,
    STEPS,
    HistoryEntry,
    Job,
    JobState,
    JobStep,
    StepTiming,
    VmRecord,
    masked,
    now,
)
from lando_ssh.prepared import dicts
from lando_ssh.progress import ByteMeter, Progress, sentence, watching
from lando_ssh.progress import size_text as _size
from lando_ssh.remote import Endpoint, Remote, preload

log = logging.getLogger(__name__)

STEP_NAMES = {
    JobStep.CREATE_VM: "create VM",
    JobStep.STAGING: "stage inputs",
    JobStep.RUNNING: "run workflow",
    JobStep.ORGANIZE_OUTPUT: "organize output",
    JobStep.STORE_OUTPUT: "store output",
    JobStep.TERMINATE_VM: "terminate VM",
}
STDERR_TAIL_LINES = 100
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # cwltool colours its log


def remote_scripts_dir() -> Path:
    """remote_scripts/ beside the package (a checkout), or where the wheel installed it."""
    here = Path(__file__).resolve().parent.parent / "remote_scripts"
    if here.is_dir():
        return here
    import sys

    return Path(sys.prefix) / "share" / "lando-ssh" / "remote_scripts"


#: seconds a booted VM may refuse the job's key before the login user is taken to be wrong (cloud-init writes the
#: key before sshd starts: a refusal that lasts is a user the image does not have, not a key on its way)
AUTH_REFUSED_GRACE = 30.0
#: inputs up to this size are sent with the remote scripts, in one stream (larger ones after the free disk is known)
ONE_STREAM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class JobPaths:
    """Where a job's files live on its VM."""

    job_dir: str

    @classmethod
    def under(cls, work_dir: str, job_id: int) -> JobPaths:
        return cls(posixpath.join(work_dir, f"lando-job-{job_id}"))

    def __getattr__(self, name: str) -> str:
        if name in ("bin", "scripts", "inputs", "results", "run", "tmp", "docs"):
            return posixpath.join(self.job_dir, name)
        raise AttributeError(name)

    @property
    def workflow(self) -> str:
        return posixpath.join(self.job_dir, "scripts", "workflow.cwl")

    @property
    def job_order(self) -> str:
        return posixpath.join(self.job_dir, "scripts", "job-order.json")


class ServerStopping(Exception):
    """The server is shutting down: leave the job where it is (its VM keeps running); it resumes later."""


class Pipeline:
    def __init__(self, config: Config, journal: Journal, cloud: Cloud, *, cancel: threading.Event | None = None,
                 stopping: threading.Event | None = None, progress: Callable[[int, str], None] | None = None,
                 on_vm_ready: Callable[[float, float], object] | None = None):
        self.config = config
        self.journal = journal
        self.cloud = cloud
        self.cancel_event = cancel or threading.Event()
        self.stopping = stopping or threading.Event()
        self.progress = progress or (lambda job_id, text: None)
        #: told (seconds to ACTIVE, seconds to SSH ready) of each VM this pipeline asked for, once it answers
        self.on_vm_ready = on_vm_ready
        self._remotes: dict[int, Remote] = {}
        self._locks: dict[int, JobLock] = {}
        self._result_sizes: dict[int, str] = {}  # seen by organize_output, for store_output (a resumed one asks)

    # -- the walk --------------------------------------------------------------------------
    def run(self, job_id: int) -> Job:
        """Walk job `job_id` from where it stands to the end; returns the final record. Raises
        JobConflict while another process on this machine drives the job."""
        with self._driving(job_id):
            return self._walk(job_id)

    @contextlib.contextmanager
    def _driving(self, job_id: int) -> Iterator[None]:
        self.hold(job_id)
        try:
            yield
        finally:
            self.let_go(job_id)

    def hold(self, job_id: int) -> None:
        """Make this pipeline the job's one driver on this machine (until `let_go`)."""
        if job_id not in self._locks:
            lock = JobLock(os.path.join(self.config.data_dir, "locks"), job_id)
            lock.acquire()
            self._locks[job_id] = lock

    def let_go(self, job_id: int) -> None:
        lock = self._locks.pop(job_id, None)
        if lock:
            lock.release()

    def _walk(self, job_id: int) -> Job:
        job = self.journal.get(job_id)
        if job.state in (JobState.FINISHED, JobState.DELETED):
            return job
        if job.state == JobState.CANCELING:
            return self._finish_cancel(job_id)
        if job.state in (JobState.NEW, JobState.AUTHORIZED):
            job = self.journal.update(job_id, lambda j: j.set_state(JobState.STARTING, JobStep.NONE))
        steps = {JobStep.CREATE_VM: self.create_vm, JobStep.STAGING: self.stage_inputs,
                 JobStep.RUNNING: self.run_workflow, JobStep.ORGANIZE_OUTPUT: self.organize_output,
                 JobStep.STORE_OUTPUT: self.store_output, JobStep.TERMINATE_VM: self.terminate_vm}
        start = STEPS.index(job.step) if job.step in STEPS else 0
        step = STEPS[start]
        ended: JobStep | None = None
        try:
            for step in STEPS[start:]:
                self._enter(job_id, step, ended)
                steps[step](job_id)
                ended = step
            return self.journal.update(job_id, functools.partial(_finish, ended=ended))
        except JobCanceled:
            return self._finish_cancel(job_id)
        except ServerStopping:
            log.info("job %s: left at step %s while the server stops; it resumes when the server starts", job_id,
                     step.value)
            return self.journal.get(job_id)
        except LandoError as e:
            if self._canceled(job_id):
                return self._finish_cancel(job_id)
            return self._fail(job_id, step, e)
        except Exception as e:  # a bug of ours: still record it on the job, with the traceback in the log
            log.exception("job %s: internal error in step %s", job_id, step.value)
            return self._fail(job_id, step, LandoError(f"internal error: {type(e).__name__}: {e}"))
        finally:
            self.close(job_id)

    def close(self, job_id: int) -> None:
        remote = self._remotes.pop(job_id, None)
        if remote:
            remote.close()

    # -- V: create VM ----------------------------------------------------------------------
    def create_vm(self, job_id: int) -> None:
        job = self.journal.get(job_id)
        info = self._existing_vm(job)
        asked = info is None  # a VM found again (a resumed job) booted before: its boot is not observed
        if info is None:
            info = self._request_vm(job)  # (it starts the SSH library loading, as the job's key is made)
        else:
            preload()  # a VM found again: the SSH library loads while it answers
        job = self.journal.update(job_id, lambda j: j.set_state(JobState.RUNNING, JobStep.CREATE_VM))
        while True:
            try:
                info = self._wait_active(job, info)
                break
            except StepTimeout as e:  # stuck in boot: a new VM, a bounded number of times
                retries = int(job.facts.get("boot_retries", 0))
                if retries >= self.config.vm.boot_retries:
                    raise
                why = f"{e}; trying a new VM (retry {retries + 1} of {self.config.vm.boot_retries})"
                log.warning("job %s: %s", job_id, why)
                self._delete_vm_quietly(job_id, info.id)

                def forget(j: Job, n: int = retries + 1, note: str = why) -> None:
                    j.facts["boot_retries"] = n
                    j.history.append(HistoryEntry(now(), j.state, j.step, note[:200]))
                    j.retire_vm()

                job = self.journal.update(job_id, forget)
                info = self._request_vm(job)
                job = self.journal.get(job_id)
                asked = True
        active_at = now()
        host_keys = self._learn_host_keys(job, info)
        assert job.vm is not None
        keys = self.keys(job)
        keys.pin_host(info.address or "", info.port, host_keys)

        def record(j: Job) -> None:
            assert j.vm is not None
            j.vm.address, j.vm.port, j.vm.host_keys = info.address, info.port, host_keys
            j.vm.flavor = info.flavor.name if info.flavor else j.vm.flavor
            j.vm.vcpus = info.flavor.vcpus if info.flavor else None
            j.vm.ram_mb = info.flavor.ram_mb if info.flavor else None
            if asked:  # (a VM found again booted unseen)
                j.vm.active = active_at

        job = self.journal.update(job_id, record)
        self._wait_ssh_ready(job)
        if asked and self.on_vm_ready is not None and job.vm is not None and job.vm.created is not None:
            self.on_vm_ready((active_at - job.vm.created).total_seconds(), (now() - job.vm.created).total_seconds())

    def _existing_vm(self, job: Job) -> VmInfo | None:
        """The VM this job already has (after a crash or a restart), if it is still usable."""
        candidates: list[VmInfo] = []
        if job.vm and job.vm.id:
            info = self.cloud.get_vm(job.vm.id)
            if info:
                candidates.append(info)
        elif job.vm:  # we asked for it but crashed before recording its id: find it by name
            candidates = self._asked_for(job)
        for info in candidates:
            if info.status != "ERROR":
                if not (job.vm and job.vm.id):
                    self.journal.update(job.id, functools.partial(_set_vm_id, vm_id=info.id))
                return info
            self._delete_vm_quietly(job.id, info.id)
        return None

    def _request_vm(self, job: Job) -> VmInfo:
        attempt = int(job.facts.get("vm_attempt", 0)) + 1
        name = f"{self.config.cloud.installation_id}-job-{job.id}-{attempt}"
        chosen = self._flavor_for(job)
        flavor = chosen.name
        image = job.vm_spec.image or self.config.vm.image
        volume = job.vm_spec.volume_size if job.vm_spec.volume_size is not None else self.config.vm.volume_size
        user = self.cloud.default_user(image)  # vm.user, else the image's own (OpenStack: its os_admin_user)
        work_dir = self.cloud.vm_work_dir(name)
        device = "/dev/vdb"
        mounts = volume_mounts((job.facts.get("bespin") or {}).get("vm_volume_mounts"))
        if volume and mounts and self.cloud.name != "local":  # the job source names the device and mount point
            device, work_dir = mounts[0]
        # the SSH library loads while the key is made and the VM boots. Not sooner: until then the job is bound by
        # this process's CPU, and a thread importing meanwhile (the GIL) holds back each of its steps by up to 5 ms
        preload()
        public_key = self.keys(job).ensure()
        user_data = render_user_data(UserDataParams(public_key=public_key, user=user, work_dir=work_dir,
                                                    volume_device=device if volume else None))

        def remember(j: Job) -> None:  # recorded before the request, so a crash finds the VM by name
            j.facts["vm_attempt"] = attempt
            j.vm = VmRecord(name=name, user=user, work_dir=work_dir, flavor=flavor, vcpus=chosen.vcpus,
                            ram_mb=chosen.ram_mb, created=now())

        self.journal.update(job.id, remember)
        placement = (job.facts.get("bespin") or {}).get("cloud_settings") or {}  # the job source's own placement
        request = VmRequest(name=name, flavor=flavor, image=image, user_data=user_data, volume_size=volume or 0,
                            metadata=self._metadata(job), network=placement.get("network_name"),
                            allocate_floating_ip=placement.get("allocate_floating_ips"),
                            floating_ip_pool=placement.get("floating_ip_pool_name"),
                            key_name=placement.get("ssh_key_name"), project=placement.get("vm_project"))
        delay = 1.0
        while True:
            try:
                info = self.cloud.create_vm(request)
                break
            except QuotaExceeded as e:  # not a failure: wait for the cloud to have room
                reason = str(e)
                self.journal.update(job.id, setting(reason=reason))
                self._sleep(job.id, delay)
                delay = min(delay * 2, 60.0)
        self.journal.update(job.id, functools.partial(_set_vm_id, vm_id=info.id, reason=""))
        return info

    def _flavor_for(self, job: Job) -> Flavor:
        """The job's flavor, else the scheduler's choice, else vm.flavor, else the cheapest allowed that fits."""
        from lando_ssh.vmspec import job_flavor

        return job_flavor(self.config, self.cloud, job)

    def _asked_for(self, job: Job) -> list[VmInfo]:
        """The VMs named as the job's VM and tagged with its id: it was asked for, but its id never recorded."""
        name = job.vm.name if job.vm else None
        return [v for v in self.cloud.find_vms(self._metadata(job)) if v.name == name]

    def _metadata(self, job: Job) -> dict[str, str]:
        return {**ours(self.config), META_JOB_ID: str(job.id)}

    def _wait_active(self, job: Job, info: VmInfo) -> VmInfo:
        deadline = time.monotonic() + self.config.vm.boot_timeout
        delay = 0.002  # a local VM boots in ~25 ms; the back-off reaches seconds within a dozen polls
        while info.status != "ACTIVE":
            if info.status == "ERROR":
                raise VmFailed(f"VM {info.name} failed to boot: {info.fault or 'the cloud gave no reason'}")
            if time.monotonic() > deadline:
                raise StepTimeout(f"VM {info.name} did not become ACTIVE within the boot timeout "
                                  f"({self.config.vm.boot_timeout:.0f}s); it was {info.status}")
            self._sleep(job.id, delay)
            delay = min(delay * 1.5, 5.0)
            latest = self.cloud.get_vm(info.id)
            if latest is None:
                raise VmFailed(f"VM {info.name} disappeared while booting")
            info = latest
        return info

    def _learn_host_keys(self, job: Job, info: VmInfo) -> list[str]:
        """The host keys cloud-init printed on the console: the only keys we will accept."""
        deadline = time.monotonic() + self.config.vm.boot_timeout
        delay = 0.02
        while True:
            keys = host_keys_from_console(self.cloud.console_log(info.id))
            if keys:
                return keys
            if time.monotonic() > deadline:
                if not self.config.vm.host_key_from_console:
                    return self._first_seen_host_keys(info)
                raise HostKeyMismatch(f"VM {info.name} printed no SSH host keys on its console within the boot "
                                      "timeout, so its identity cannot be verified (set "
                                      "vm.host_key_from_console: false to trust the first key seen)")
            self._sleep(job.id, delay)
            delay = min(delay * 1.5, 5.0)

    def _first_seen_host_keys(self, info: VmInfo) -> list[str]:
        import paramiko

        try:
            with paramiko.Transport((info.address or "", info.port)) as t:
                t.start_client(timeout=self.config.vm.ssh_timeout)
                key = t.get_remote_server_key()
                log.warning("VM %s: trusting the first host key seen (vm.host_key_from_console is false)", info.name)
                return [f"{key.get_name()} {key.get_base64()}"]
        except (OSError, paramiko.SSHException) as e:
            raise VmUnreachable(f"cannot reach VM {info.name} to read its host key: {e}") from None

    def _wait_ssh_ready(self, job: Job) -> None:
        """SSH answers and cloud-init has prepared the work dir (its runcmd touches a marker)."""
        assert job.vm is not None and job.vm.work_dir
        marker = posixpath.join(job.vm.work_dir, READY_MARKER)
        deadline = time.monotonic() + self.config.vm.ssh_timeout
        delay = 0.02
        last = "no answer yet"
        refused_since: float | None = None  # sshd answers but refuses the key: since when, without a break
        while time.monotonic() < deadline:
            self._check_cancel(job.id)
            try:
                if self.remote(job).run(["test", "-e", marker], check=False, retry=False).exit_code == 0:
                    return
                last = "cloud-init has not finished preparing the work dir"
                refused_since = None
            except HostKeyMismatch:
                raise
            except SshAuthRefused as e:
                last = str(e)
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= AUTH_REFUSED_GRACE:
                    break
            except VmUnreachable as e:
                last = str(e)
                refused_since = None
            self._sleep(job.id, delay)
            delay = min(delay * 1.5, 5.0)
        if refused_since is not None:  # the VM is up: cloud-init put the job's key on another user than ours
            raise VmUnreachable(
                f"VM {job.vm.name} answers but refuses the job's SSH key for user {job.vm.user!r}: cloud-init puts "
                f"the key on the image's default user, so that user is probably another; set vm.user to the "
                f"image's login user (or give the image an os_admin_user property naming it)")
        raise StepTimeout(f"VM {job.vm.name} was not ready for SSH within the SSH timeout "
                          f"({self.config.vm.ssh_timeout:.0f}s): {last}")

    # -- S: stage inputs -------------------------------------------------------------------
    def stage_inputs(self, job_id: int) -> None:
        from lando_ssh import staging

        job = self.journal.get(job_id)
        paths = self.paths(job)
        remote = self.remote(job)
        transfers, vm_order, vm_workflow = staging.plan_inputs(_prepared(job), paths.inputs)
        local = [t for t in transfers if t.kind in ("file", "directory")]
        urls = [t for t in transfers if t.kind == "url"]
        objects = [t for t in transfers if t.kind in ("object", "object-directory")]  # lando_ssh.objectstore
        needed = sum(t.size or 0 for t in transfers)
        scripts = {f"bin/{p.name}": p.read_bytes() for p in sorted(remote_scripts_dir().iterdir()) if p.is_file()}
        executable = list(scripts)  # the docs copy the workflow and job order: those stay 0644
        scripts.update(schemacache.files_for_vm(schemacache.root_in(self.config.data_dir)))  # see lando-cwltool
        # each float as the user wrote it, each character as it is: the VM's cwltool prints floats from their text
        scripts["scripts/workflow.cwl"] = exactjson.dumps(inline_single_use_processes(vm_workflow), indent=2).encode()
        scripts["scripts/job-order.json"] = exactjson.dumps(vm_order, indent=2).encode()
        df = ["sh", posixpath.join(paths.bin, "lando-df"), paths.job_dir]
        sent = 0
        optional_missing: set[str] = set()
        listing = None  # the sizes on the VM, when they came back with the last transfer
        started = time.monotonic()
        # small inputs travel with the scripts, then the free disk and the sizes come back: one round trip. The
        # disk is checked after them: a disk too full for 1 MiB fails the transfer itself, with its own message
        from_here = sum(t.size or 0 for t in local)
        with_scripts = bool(local) and from_here <= ONE_STREAM_BYTES
        with self._deadline(remote, "staging"), self._reporting(job_id, remote, "staging", from_here):
            if with_scripts:
                entries = [(t.source, posixpath.relpath(t.dest, paths.job_dir)) for t in local]
                then = [*df, paths.inputs]  # lando-df DIR LIST_DIR: the free bytes, then the sizes
                sent, out = remote.put_files(entries, paths.job_dir, then=then, files=scripts,
                                             executable=executable)
                free_line, _, listing = out.partition("\n")
                self._check_free(needed - sent, int(free_line.strip() or 0), paths)
                listing = None if urls or objects else listing
                self.progress(job_id, f"staged {_size(sent)} from this server")
            else:  # scripts, workflow and job order in one stream, then the free disk: one round trip
                free = remote.put_bytes(scripts, paths.job_dir, executable=executable, then=df)
                self._check_free(needed, int(free.strip() or 0), paths)
            if local and not with_scripts:
                entries = [(t.source, posixpath.relpath(t.dest, paths.inputs)) for t in local]
                sizes = () if urls or objects else self._sizes_argv(paths, paths.inputs)  # the same round trip
                pushed, listing = remote.put_files(entries, paths.inputs, then=sizes)
                sent += pushed
                listing = listing if sizes else None
                self.progress(job_id, f"staged {_size(sent)} from this server")
            for t in urls:
                self._check_cancel(job_id)
                argv = ["sh", posixpath.join(paths.bin, "lando-fetch"), t.source, t.dest]
                if t.size is not None:
                    argv.append(str(t.size))
                try:
                    remote.run(argv, what=f"downloading {t.source}")
                except RemoteCommandFailed as e:
                    if not t.required:  # a secondary file implied by an optional pattern may be absent
                        optional_missing.add(posixpath.relpath(t.dest, paths.inputs))
                        continue
                    raise StagingFailed(e.stderr.strip().splitlines()[-1] if e.stderr.strip() else str(e)) from None
                sent += t.size or 0
                self.progress(job_id, f"downloaded {t.source} on the VM")
            if objects:  # downloaded by the VM straight from the store
                from lando_ssh.objectstore.transfer import stage_objects

                got = stage_objects(self.config, remote, paths.bin, objects,
                                    lambda total, meter: self._reporting(job_id, remote, "staging", total, meter))
                sent += got.bytes
                optional_missing |= {posixpath.relpath(d, paths.inputs) for d in got.missing}
                self.progress(job_id, f"downloaded {len(got.sizes)} objects ({_size(got.bytes)}) on the VM")
        expected = {posixpath.relpath(t.dest, paths.inputs): t.size for t in transfers
                    if t.kind not in ("directory", "object-directory")}
        if objects:
            expected.update({posixpath.relpath(d, paths.inputs): n for d, n in got.sizes.items()})
        for rel in optional_missing:
            expected.pop(rel, None)
        self._check_sizes(remote, paths, paths.inputs, expected, "input", listing)
        elapsed = time.monotonic() - started
        self.journal.update(job_id, lambda j: (j.facts.update(bytes_staged=sent, staging_seconds=round(elapsed, 3)),
                                               j.facts.pop("progress", None)))

    @staticmethod
    def _check_free(needed: int, free: int, paths: JobPaths) -> None:
        if needed > free:
            raise StagingFailed(f"the VM's disk is too small for the inputs: they need {_size(needed)}, "
                                f"{_size(free)} is free under {paths.job_dir} (ask for a larger volume_size)")

    @staticmethod
    def _sizes_argv(paths: JobPaths, base: str) -> list[str]:
        return ["sh", posixpath.join(paths.bin, "lando-sizes"), base]

    def _check_sizes(self, remote: Remote, paths: JobPaths, base: str, expected: dict[str, int | None],
                     what: str, listing: str | None = None) -> dict[str, int]:
        """The size of every file below base on the VM (`listing`: lando-sizes' output, if it came back
        with a transfer), checked against `expected`."""
        out = remote.run(self._sizes_argv(paths, base)).stdout if listing is None else listing
        actual = {}
        for entry in out.split("\0"):
            if entry:
                size, _, rel = entry.partition(" ")
                actual[rel] = int(size)
        for rel, want in expected.items():
            if rel not in actual:
                raise StagingFailed(f"{what} file {rel} is missing on the VM after the transfer")
            if want is not None and actual[rel] != want:
                raise StagingFailed(f"{what} file {rel} has {actual[rel]} bytes on the VM, expected {want}")
        return actual

    # -- R: run workflow -------------------------------------------------------------------
    def run_workflow(self, job_id: int) -> None:
        job = self.journal.get(job_id)
        paths = self.paths(job)
        remote = self.remote(job)
        limit = self.config.limits.max_run_time
        status = None  # the first wait's answer, when it came with the start
        if "run_pid" not in job.facts:
            status = self._start_run(job, paths, remote, self._run_wait(limit, now()))
            job = self.journal.get(job_id)
        started = datetime.fromisoformat(job.facts["run_started"])
        while True:
            if self._canceled(job_id):
                self._kill_run(job_id)
                raise JobCanceled("canceled while the workflow ran")
            if self.stopping.is_set():
                raise ServerStopping()
            if limit and (now() - started).total_seconds() >= limit:
                self._kill_run(job_id)
                raise StepTimeout(f"the workflow ran longer than limits.max_run_time ({limit:.0f}s) and was "
                                  "stopped")
            wait = self._run_wait(limit, started)
            try:
                if status is None:
                    status = remote.run(_wait_argv(paths, wait), timeout=wait + 60, retry=False,
                                        what="waiting for cwltool").stdout.strip()
            except HostKeyMismatch:
                raise
            except VmUnreachable as e:
                if not (self.cancel_event.is_set() or self.stopping.is_set()):  # else: we interrupted it ourselves
                    self._unreachable(job_id, e)
                continue
            if "unreachable_since" in job.facts:
                job = self.journal.update(job_id, lambda j: j.facts.pop("unreachable_since", None))
            if status.startswith("exited "):
                code = int(status.split()[1])
                self.journal.update(job_id, recording(exit_code=code))
                if code != 0:
                    tail = self._stderr_tail(remote, paths)
                    pre = self._command(job, "cwl_pre_process_command")
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
                tail = self._stderr_tail(remote, paths)
                raise WorkflowFailed("cwltool stopped without recording an exit code (was the VM restarted or the "
                                     f"process killed?). Last lines of its stderr:\n{tail}")
            status = None  # "running": wait again

    def _run_wait(self, limit: float, started: datetime) -> float:
        """How long the next wait for cwltool may block: the poll interval, or what is left of max_run_time."""
        wait = self.config.poll_interval
        if limit:
            wait = max(min(wait, limit - (now() - started).total_seconds()), 0.1)
        return wait

    def _start_run(self, job: Job, paths: JobPaths, remote: Remote, wait: float) -> str | None:
        """Start cwltool on the VM and record its pid; the same command then waits for the run's end up to
        `wait` seconds (one round trip less), and its answer is returned (None: wait again)."""
        # a job source may give the job its own command (bespin-api's job_runtime_openstack)
        base = self._command(job, "cwl_base_command") or self.cloud.default_cwl_command()
        base += job.facts.get("cwltool_args") or []  # cwltool's run options given to cwl-runner
        argv = [*base, "--outdir", paths.results, "--tmpdir-prefix", paths.tmp + "/",
                "--tmp-outdir-prefix", paths.tmp + "/", paths.workflow, paths.job_order]
        if base and posixpath.basename(base[0]) == "cwltool":  # the server's CWL schemas, CWL's link rule
            argv = ["sh", posixpath.join(paths.bin, "lando-cwltool"), paths.job_dir,
                    posixpath.join(paths.job_dir, "schemas"), *argv]
        pre = self._command(job, "cwl_pre_process_command")
        if pre:  # lando's cwl_pre_process_command, in the results dir, just before the workflow
            argv = ["sh", posixpath.join(paths.bin, "lando-then"), paths.results, str(len(pre)), *pre, *argv]
        commands = {"cwl_base_command": base, "cwl_pre_process_command": pre or None,
                    "cwl_post_process_command": self._command(job, "cwl_post_process_command") or None}
        # lando-start is idempotent (a second call reports the first run), so a restart clears the old run
        clear = [paths.run, paths.results, paths.tmp] if job.facts.get("rerun") else []
        start = [posixpath.join(paths.bin, "lando-start"), paths.run, *argv]
        pids: list[int] = []

        def record(pid: int) -> None:
            pids.append(pid)
            self.journal.update(job.id, lambda j: (j.facts.update(run_pid=pid, run_started=now().isoformat(),
                                                                  commands=commands),
                                                   j.facts.pop("rerun", None)))
            self.progress(job.id, f"cwltool started on the VM (pid {pid})")

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
            self._check_cancel(job.id)  # (a resumed job asks lando-start again: it reports this run)
            out = remote.run(["sh", "-c", _CLEAR_START, "sh", str(len(clear)), *clear, *start],
                             what="starting cwltool").stdout  # idempotent: retried over a new connection
        if not pids:
            record(_pid(out.split("\n", 1)[0]))
        return out.split("\n", 1)[1].strip() if "\n" in out.strip() else None

    def _command(self, job: Job, key: str) -> list[str]:
        """A job's cwl_base/pre_process/post_process_command: as recorded when its run started (what ran, and
        what its docs name), else the job source's own (bespin-api's job_runtime_openstack), else the config's."""
        recorded = job.facts.get("commands")
        if isinstance(recorded, dict) and key in recorded:
            return list(recorded[key] or [])
        return list(job.facts.get(key) or getattr(self.config, key) or [])

    def _unreachable(self, job_id: int, error: Exception) -> None:
        """The VM did not answer a check: wait health.interval and try again, until health.grace is spent."""
        job = self.journal.get(job_id)
        since = job.facts.get("unreachable_since")
        if since is None:
            since = now().isoformat(timespec="seconds")
            self.journal.update(job_id, lambda j: j.facts.update(unreachable_since=since))
            log.warning("job %s: its VM stopped answering: %s", job_id, error)
        gone_for = (now() - datetime.fromisoformat(since)).total_seconds()
        grace = self.config.health.grace
        if gone_for > grace:
            name = job.vm.name if job.vm else "?"
            raise VmUnreachable(f"VM {name} unreachable since {since} ({gone_for:.0f}s, longer than health.grace "
                                f"{grace:.0f}s): {error}")
        self._sleep(job_id, min(self.config.health.interval, max(grace - gone_for, 0.1)))

    def _stderr_tail(self, remote: Remote, paths: JobPaths) -> str:
        try:
            text = remote.run(["tail", "-n", str(STDERR_TAIL_LINES), posixpath.join(paths.run, "stderr")],
                              check=False).stdout.rstrip()
            return _ANSI.sub("", text)
        except LandoError as e:
            return f"(could not read it: {e})"

    def _kill_run(self, job_id: int) -> None:
        job = self.journal.get(job_id)
        if "run_pid" not in job.facts or not job.vm or not job.vm.host_keys:
            return
        paths = self.paths(job)
        try:
            self.remote(job).run(["sh", posixpath.join(paths.bin, "lando-kill"), paths.run, "10"], retry=False,
                                 what="stopping cwltool")
        except LandoError as e:
            log.warning("job %s: could not stop cwltool on the VM: %s (the VM is deleted next)", job_id, e)

    # -- o: organize output ----------------------------------------------------------------
    def organize_output(self, job_id: int, *, post_process: bool = True) -> None:
        job = self.journal.get(job_id)
        paths = self.paths(job)
        remote = self.remote(job)
        post = self._command(job, "cwl_post_process_command") if post_process else []
        if post:  # a broken output object stops the job before the post-process command runs
            _output_object(remote.run(["cat", posixpath.join(paths.run, "stdout")],
                                      what="reading the output object").stdout)
            remote.run(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", paths.results, *post],
                       what="the post-process command")
        # organize, then read back the output object, the run's facts, cwltool's stderr tail and the results'
        # sizes (for the store step that follows): one round trip
        token = os.urandom(16).hex()
        organize = ["sh", "-c", _ORGANIZE_AND_REPORT, "sh", posixpath.join(paths.bin, "lando-organize"),
                    paths.job_dir, token, str(STDERR_TAIL_LINES), posixpath.join(paths.bin, "lando-sizes"),
                    paths.docs if outputs.docs_apart(job) else ""]
        parts = _report_parts(remote.run(organize, what="organizing output").stdout, token)
        output = _output_object(parts.get("stdout", ""))
        docs_dir = parts.get("docs_dir", "").strip() or "docs"  # lando-docs when the workflow has a docs output
        usage = report.usage_from({f: parts.get(f, "").strip()
                                   for f in ("started", "finished", "maxrss_kb", "exit_code")})
        version = report.cwltool_version(_ANSI.sub("", parts.get("stderr-tail", "")))
        printed = bool(parts.get("stdout", "").strip())  # (cwltool prints none when it fails before any output)
        self.journal.update(job_id, lambda j: j.facts.update(vm_output=output, docs_dir=docs_dir, usage=usage,
                                                             cwltool_version=version, output_printed=printed))
        self._result_sizes[job_id] = parts.get("sizes", "")

    # -- O: store output -------------------------------------------------------------------
    def store_output(self, job_id: int) -> None:
        from lando_ssh import staging

        job = self.journal.get(job_id)
        if job.facts.get("output_url"):  # to an object store, from the VM
            from lando_ssh.objectstore.transfer import store_output

            store_output(self, job_id)
            return
        paths = self.paths(job)
        remote = self.remote(job)
        local_dir = os.path.abspath(job.output_dir)
        sizes = self._check_sizes(remote, paths, paths.results, {}, "output", self._result_sizes.pop(job_id, None))
        total = sum(sizes.values())
        apart = outputs.docs_apart(job)  # cwl-runner's: the outputs alone, into a dir that may hold anything
        docs_dir = outputs.docs_path(self.config, job)
        try:
            if not apart:
                self._claim_output_dir(job, sizes, docs_dir)
            os.makedirs(local_dir, exist_ok=True)
            with self._deadline(remote, "storing output"), self._reporting(job_id, remote, "storing", total):
                received = remote.get_dir(paths.results, local_dir, total_hint=total)
                if apart:
                    remote.get_dir(paths.docs, docs_dir)
        except OSError as e:  # this server's side: the output dir is not writable, or its disk is full
            raise StagingFailed(f"cannot write the outputs ({_size(total)}) to {local_dir}: {e.strerror}") from None
        for rel, size in sizes.items():
            local = os.path.join(local_dir, rel)
            if not os.path.isfile(local) or os.path.getsize(local) != size:
                raise StagingFailed(f"output file {rel} did not arrive whole in {local_dir} "
                                    f"(expected {size} bytes)")
        output = staging.rewrite_outputs(job.facts.get("vm_output") or {}, paths.results, local_dir)

        def stored(j: Job) -> None:
            j.output = output
            j.facts["bytes_stored"] = received
            j.facts["docs_path"] = docs_dir
            j.facts.pop("progress", None)

        job = self.journal.update(job_id, stored)
        # lando's docs of the job are written here, not on the VM: what the VM made was pulled as it was
        docs = report.docs_files(job, job.facts.get("usage") or {}, job.facts.get("cwltool_version"))
        docs["logs/cwl-output.json"] = (json.dumps(output, indent=2) + "\n").encode()
        if job.secret_inputs:  # the VM's job order held the secrets cwltool needed; the docs' copy does not
            ran = os.path.join(docs_dir, "scripts", "job-order.json")
            with open(ran) as vm_order:
                order = masked(exactjson.loads(vm_order.read()), job.secret_inputs)
            docs["scripts/job-order.json"] = exactjson.dumps(order, indent=2).encode()
        try:
            for rel, data in docs.items():
                path = os.path.join(docs_dir, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        except OSError as e:
            raise StagingFailed(f"cannot write the job's docs to {docs_dir}: {e.strerror}") from None
        self.progress(job_id, f"stored {_size(received)} in {local_dir}")

    def _claim_output_dir(self, job: Job, sizes: dict[str, int], docs_dir: str) -> None:
        """Refuse an output dir holding files the job did not write; note what it is about to write there."""
        foreign = outputs.foreign_files(self.config, job)
        if foreign:
            more = ", ..." if len(foreign) == 3 else ""
            raise StagingFailed(f"the output directory {job.output_dir} holds files this job did not write "
                                f"({', '.join(foreign)}{more}); lando-ssh does not overwrite them. Free the directory, "
                                f"or give the job another with `lando-ssh set-output-dir {job.id} DIR`, then resume "
                                f"it (`lando-ssh job {job.id}` or `lando-ssh send restart_job {job.id}`)")
        docs_rel = os.path.relpath(docs_dir, os.path.abspath(job.output_dir))
        ours = report.docs_files(job, {}, None).keys() | {"logs/cwl-output.json"}
        outputs.note_written(self.config, job, set(sizes) | {os.path.join(docs_rel, name) for name in ours})

    # -- T: terminate VM -------------------------------------------------------------------
    def terminate_vm(self, job_id: int) -> None:
        job = self.journal.get(job_id)
        if self._keep_vm(job, failed=False):
            self.close(job_id)
            note = f"VM kept (the job asks cleanup_vm: false): lando-ssh ssh {job_id}"
            self.journal.update(job_id, lambda j: j.facts.update(vm_kept=True, vm_kept_note=note))
            return
        # a failed delete does not fail a job whose outputs are safe: it is recorded, and the sweep retries it
        if self._terminate_quietly(job):
            self.journal.update(job_id, _mark_vm_deleted)

    def _keep_vm(self, job: Job, failed: bool) -> bool:
        """Whether a job's VM outlives it: the job source asks (bespin's cleanup_vm: false), or
        keep_vm_on_error for a failed job."""
        if not _has_vm(job):
            return False
        if (job.facts.get("bespin") or {}).get("cleanup_vm") is False:
            return True
        return failed and self.config.keep_vm_on_error

    def delete_kept_vm(self, job_id: int) -> str:
        """Delete the VM an ended job kept (keep_vm_on_error, or the job source's cleanup_vm: false)
        once the admin is done with it; returns the VM's name."""
        with self._driving(job_id):
            return self._delete_kept_vm(job_id)

    def _delete_kept_vm(self, job_id: int) -> str:
        job = self.journal.get(job_id)
        if job.state not in FINAL_STATES:
            raise JobConflict(f"job {job_id} is {job.state.name.lower()}; its VM is deleted when it ends "
                              f"(to stop it now: lando-ssh send cancel_job {job_id})")
        if not job.vm or not job.vm.id or job.vm.deleted:
            raise JobConflict(f"job {job_id} has no VM left to delete")
        if not self._terminate_quietly(job):
            raise CloudError(f"could not delete VM {job.vm.name}: {job.facts.get('vm_delete_error') or 'see the log'}")
        def deleted(j: Job) -> None:
            _mark_vm_deleted(j)
            j.facts["vm_kept"] = False
            j.facts.pop("vm_kept_note", None)
            j.reason = j.reason.replace(_kept_note(job_id), "").replace(_results_kept_note(job_id), "")

        self.journal.update(job_id, deleted)
        return job.vm.name

    # -- restart ---------------------------------------------------------------------------
    def restart(self, job_id: int) -> Job:
        """Make an errored or canceled job ready to resume: at its failed step on the same VM when
        that VM is still there and answers, otherwise from the start on a new VM (the old one deleted)."""
        self.hold(job_id)  # kept for the run that follows (`run` lets go), unless the restart fails
        try:
            return self._restart(job_id)
        except BaseException:
            self.let_go(job_id)
            raise

    def _restart(self, job_id: int) -> Job:
        job = self.journal.get(job_id)
        requested = job.state == JobState.RESTARTING and job.facts.get("restart_pending")
        if job.state not in RESTARTABLE_STATES and not requested:
            raise JobConflict(f"job {job_id} is {job.state.name.lower()}; only errored or canceled jobs restart")
        reuse = False
        if job.vm and job.vm.id and not job.vm.deleted:
            info = self.cloud.get_vm(job.vm.id)
            if info and info.status == "ACTIVE":
                try:
                    self.remote(job).run(["true"], retry=False)
                    reuse = True
                except LandoError as e:
                    log.info("job %s: its VM does not answer (%s); restarting on a new VM", job_id, e)
            if not reuse:
                self._terminate_quietly(job)
        self.close(job_id)

        def change(j: Job) -> None:
            step = j.step if reuse and j.step in STEPS else JobStep.CREATE_VM
            if not reuse:
                j.retire_vm()
            if STEPS.index(step) <= STEPS.index(JobStep.RUNNING):
                for fact in ("run_pid", "run_started", "commands", "exit_code", "vm_output", "usage",
                             "partial_output", "bytes_stored", "cwltool_version", "docs_dir", "output_printed",
                             "docs_path"):
                    j.facts.pop(fact, None)
                j.output = None  # a failed run's partial one
                j.facts["rerun"] = reuse  # the old run's files on the VM are cleared before starting again
            j.facts.pop("restart_pending", None)
            for again in STEPS[STEPS.index(step):]:  # the steps this attempt walks again are timed afresh
                j.timings.pop(again.value, None)
            j.error = None
            j.reason = f"restarting at step {step.value} ({STEP_NAMES[step]})" + (" on the same VM" if reuse else "")
            j.set_state(JobState.RESTARTING, step)

        return self.journal.update(job_id, change)

    # -- failure and cancel ----------------------------------------------------------------
    def _fail(self, job_id: int, step: JobStep, error: LandoError) -> Job:
        name = STEP_NAMES.get(step, "the job")
        text = str(error)
        first = text.splitlines()[0] if text else type(error).__name__
        job = self.journal.get(job_id)
        saved = ""
        if (step == JobStep.RUNNING and isinstance(error, WorkflowFailed) and self.config.save_outputs_on_error
                and _has_vm(job) and job.facts.get("exit_code") not in (None, 0)):
            saved = self._save_failed_run(job_id)
            job = self.journal.get(job_id)
        asked = self._keep_vm(job, failed=True)
        # past the run, the results exist only on the VM: deleting it would lose them
        holds_results = step in (JobStep.ORGANIZE_OUTPUT, JobStep.STORE_OUTPUT) and _has_vm(job)
        keep = asked or holds_results
        deleted = False if keep else self._terminate_quietly(job)
        reason = f"step {step.value} ({name}) failed: {first}"
        if saved:
            reason += (" " if reason.endswith(".") else ". ") + saved
        if asked:
            reason += _kept_note(job_id)
        elif holds_results:
            reason += _results_kept_note(job_id)

        def record(j: Job) -> None:
            j.error = f"step {step.value} ({name}) failed: {text}"
            j.reason = reason
            _close_timings(j)
            j.facts["vm_kept"] = bool(keep)
            if deleted:
                _mark_vm_deleted(j)
            j.set_state(JobState.ERROR, step, note=first[:200])

        log.error("job %s: %s", job_id, reason, extra={"job_outcome": True})  # a foreground run says it itself
        return self.journal.update(job_id, record)

    def _save_failed_run(self, job_id: int) -> str:
        """What a failed run left, saved as cwltool leaves it: the outputs it collected (its partial output
        object), its log and lando's docs, pulled like a finished job's; the post-process command does not
        run. Best effort: returns a note for the job's reason, or "" when nothing could be saved."""
        try:
            self.organize_output(job_id, post_process=False)
            self.store_output(job_id)
        except Exception as e:  # the failure being recorded matters more: say why and go on
            log.warning("job %s: the failed run's outputs and logs could not be saved: %s", job_id, e)
            return ""
        job = self.journal.update(job_id, lambda j: j.facts.update(partial_output=True))
        return f"Its partial outputs and logs are in {job.facts.get('output_url') or job.output_dir}."

    def _finish_cancel(self, job_id: int) -> Job:
        job = self.journal.get(job_id)
        if job.state != JobState.CANCELING:
            job = self.journal.update(job_id, lambda j: j.set_state(JobState.CANCELING))
        self._kill_run(job_id)
        deleted = self._terminate_quietly(job)

        def record(j: Job) -> None:
            if deleted:
                _mark_vm_deleted(j)
            j.reason = "canceled"
            _close_timings(j)
            j.set_state(JobState.CANCELED)

        return self.journal.update(job_id, record)

    def _terminate_quietly(self, job: Job) -> bool:
        self.close(job.id)
        vm_ids: list[str] = []
        if job.vm and job.vm.id:
            vm_ids.append(job.vm.id)
        elif job.vm:  # asked for but id not recorded (crash, or cancel during the create call)
            vm_ids += [v.id for v in self._asked_for(job)]
        deleted = [self._delete_vm_quietly(job.id, vm_id) for vm_id in vm_ids]
        self.keys(job).remove()
        return all(deleted)

    def _delete_vm_quietly(self, job_id: int, vm_id: str) -> bool:
        """Delete a VM; a failure is logged and recorded on the job (`vm_delete_error`) for the sweep."""
        try:
            self.cloud.delete_vm(vm_id)
        except CloudError as e:
            message = f"could not delete VM {vm_id}: {e} (the orphan sweep retries it)"
            log.error("job %s: %s", job_id, message)
            self.journal.update(job_id, lambda j: j.facts.update(vm_delete_error=message))
            return False
        self.journal.update(job_id, lambda j: j.facts.pop("vm_delete_error", None))
        return True

    def request_cancel(self) -> None:
        """Cancel from another thread: calls to the VM in flight are interrupted, then the job is canceled."""
        self.cancel_event.set()
        for remote in list(self._remotes.values()):
            remote.close()

    def _canceled(self, job_id: int) -> bool:
        if self.cancel_event.is_set():
            return True
        return self.journal.get(job_id).state == JobState.CANCELING

    def _check_cancel(self, job_id: int) -> None:
        if self._canceled(job_id):
            raise JobCanceled("canceled")
        if self.stopping.is_set():
            raise ServerStopping()

    def _sleep(self, job_id: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.cancel_event.is_set() and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.cancel_event.wait(min(left, 0.2))
        self._check_cancel(job_id)

    @contextlib.contextmanager
    def _deadline(self, remote: Remote, what: str) -> Iterator[None]:
        """Bound a transfer by limits.staging_timeout: when it passes, the calls in flight are interrupted."""
        limit = self.config.limits.staging_timeout
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            remote.interrupt()

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except Exception:
            if expired.is_set():
                raise StepTimeout(f"{what} took longer than limits.staging_timeout ({limit:.0f}s) and was "
                                  "stopped") from None
            raise
        finally:
            timer.cancel()
            remote.resume()

    @contextlib.contextmanager
    def _reporting(self, job_id: int, remote: Remote, what: str, total: int,
                   meter: ByteMeter | None = None) -> Iterator[None]:
        """A long transfer's progress, every `progress_interval` seconds: on the job (`facts.progress`, for
        `status`; one write each, no event) and on a foreground run's stderr. A small one is over before a
        first report: no thread is started for it."""
        if total <= ONE_STREAM_BYTES:
            yield
            return

        def report(p: Progress) -> None:
            fact = p.to_fact()
            try:
                self.journal.update(job_id, recording(progress=fact))
            except LandoError as e:  # the transfer matters more than its display
                log.debug("job %s: progress not recorded: %s", job_id, e)
            self.progress(job_id, sentence(fact))

        with watching(meter or remote.meter, what, total, report, self.config.progress_interval):
            yield

    # -- step bookkeeping ------------------------------------------------------------------
    def _enter(self, job_id: int, step: JobStep, ended: JobStep | None) -> None:
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

    # -- helpers ---------------------------------------------------------------------------
    def keys(self, job: Job) -> JobKeys:
        return JobKeys(self.config.keys_dir, job.id)

    def paths(self, job: Job) -> JobPaths:
        assert job.vm is not None and job.vm.work_dir
        return JobPaths.under(job.vm.work_dir, job.id)

    def remote(self, job: Job) -> Remote:
        remote = self._remotes.get(job.id)
        if remote is None:
            if not job.vm or not job.vm.address:
                raise VmUnreachable(f"job {job.id} has no VM address recorded")
            keys = self.keys(job)
            if not os.path.exists(keys.known_hosts_path):
                keys.pin_host(job.vm.address, job.vm.port, job.vm.host_keys)
            endpoint = Endpoint(job.vm.address, job.vm.port, job.vm.user or self.cloud.default_user(),
                                keys.private_path, list(job.vm.host_keys), keys.known_hosts_path)
            remote = self._remotes[job.id] = Remote(endpoint, connect_timeout=min(30.0, self.config.vm.ssh_timeout),
                                                    abort=self.cancel_event)
        return remote


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


# sh -c: lando-organize JOBDIR [DOCSDIR], then each of the run's files after a line "TOKEN NAME"
_ORGANIZE_AND_REPORT = (
    'sh "$1" "$2" ${6:+"$6"} || exit; printf "\\n%s stdout\\n" "$3"; cat "$2/run/stdout" 2>/dev/null; '
    # the one-line files by the shell's own read: a process less each
    'for f in started finished maxrss_kb exit_code docs_dir; do printf "\\n%s %s\\n" "$3" "$f"; v=; '
    '[ -r "$2/run/$f" ] && { IFS= read -r v < "$2/run/$f" || :; }; printf "%s\\n" "$v"; done; '
    'printf "\\n%s stderr-tail\\n" "$3"; tail -n "$4" "$2/run/stderr" 2>/dev/null; '
    'printf "\\n%s sizes\\n" "$3"; exec sh "$5" "$2/results"')


def _has_vm(job: Job) -> bool:
    return bool(job.vm and job.vm.id and not job.vm.deleted)


def _kept_note(job_id: int) -> str:
    return f" (VM kept for debugging: lando-ssh ssh {job_id}; lando-ssh delete-vm {job_id} when done)"


def _results_kept_note(job_id: int) -> str:
    return (f" (VM kept: the results exist only on it; once the cause is fixed, lando-ssh job {job_id} "
            f"or restart_job stores them; lando-ssh delete-vm {job_id} discards them)")


def _close_timings(job: Job) -> None:
    """The step under way ended (failed or canceled): its timing says how long it ran, not "running", and a
    transfer's progress is no longer shown."""
    job.facts.pop("progress", None)
    for timing in job.timings.values():
        if timing.started and not timing.finished:
            timing.finished = now()


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


def _report_parts(text: str, token: str) -> dict[str, str]:
    parts = {}
    for chunk in text.split(f"\n{token} ")[1:]:
        name, _, body = chunk.partition("\n")
        parts[name] = body
    return parts


def _output_object(raw: str) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        raise WorkflowFailed("cwltool's output object is not valid JSON: " + raw[:500]) from None


def inline_single_use_processes(packed: Any) -> Any:
    """The packed workflow with each `$graph` process that exactly one step runs moved into that step.

    cwltool resolves a step's `run: "#ref"` again against a document it has already upgraded to its
    internal CWL version, which loads a second schema: ~0.4 s on every run here. An inline `run` is
    built from the document already loaded. A process named anywhere else, or by several steps,
    stays in the graph (a second inline copy would repeat its ids). So does everything when the document
    holds a `$import` (a type one process defines and another imports again): an id inside a moved process
    is no longer found from the graph's top. Returns a new document.
    """
    graph = packed.get("$graph") if isinstance(packed, dict) else None
    if not isinstance(graph, list) or any("$import" in obj for obj in dicts(packed)):
        return packed
    doc = exactjson.loads(exactjson.dumps(packed))
    by_id = {p["id"]: p for p in doc["$graph"] if isinstance(p, dict) and isinstance(p.get("id"), str)}
    mentions: dict[str, int] = {}

    def count(value: Any, key: str = "") -> None:
        if isinstance(value, str) and value in by_id and key != "id":
            mentions[value] = mentions.get(value, 0) + 1
        elif isinstance(value, dict):
            for k, v in value.items():
                count(v, k)
        elif isinstance(value, list):
            for v in value:
                count(v, key)

    count(doc)
    movable = {i: p for i, p in by_id.items() if mentions.get(i) == 1 and i != "#main"}
    moved: set[str] = set()

    def inline(process: dict) -> None:
        steps = process.get("steps")
        for step in steps if isinstance(steps, list) else []:
            run = step.get("run") if isinstance(step, dict) else None
            if isinstance(run, str) and run in movable and run not in moved:
                moved.add(run)
                step["run"] = movable[run]
                inline(movable[run])
            elif isinstance(run, dict):
                inline(run)

    if "#main" not in by_id:
        return packed
    inline(by_id["#main"])
    doc["$graph"] = [p for p in doc["$graph"] if not (isinstance(p, dict) and p.get("id") in moved)]
    return doc


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


def _prepared(job: Job) -> Any:
    from lando_ssh.prepared import PreparedWorkflow

    return PreparedWorkflow(source=job.workflow, packed=job.workflow_doc or {}, job_order=job.job_order)


def _set_vm_id(job: Job, vm_id: str, reason: str | None = None) -> None:
    if job.vm is not None:
        job.vm.id = vm_id
    if reason is not None:
        job.reason = reason


def _mark_vm_deleted(job: Job) -> None:
    if job.vm is not None and job.vm.deleted is None:
        job.vm.deleted = now()


def _finish(job: Job, ended: JobStep | None = None) -> None:
    if ended is not None:
        job.timings.setdefault(ended.value, StepTiming()).finished = now()
    job.reason = ""
    job.set_state(JobState.FINISHED, JobStep.NONE)
