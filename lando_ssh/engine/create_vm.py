"""Step V: create the job's VM (or find the one it has), wait for it to boot, learn and pin its host keys,
and wait until SSH answers and cloud-init has prepared the work dir."""
from __future__ import annotations

import functools
import logging
import posixpath
import time

from lando_ssh.cloud import VmInfo, VmRequest
from lando_ssh.cloud.cloudinit import READY_MARKER, UserDataParams, host_keys_from_console, render_user_data
from lando_ssh.errors import HostKeyMismatch, QuotaExceeded, SshAuthRefused, StepTimeout, VmFailed, VmUnreachable
from lando_ssh.journal import setting
from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, VmRecord, now
from lando_ssh.remote import preload
from lando_ssh.vmspec import job_flavor, volume_mounts

from .pooled import take_vm
from .runtime import Runtime
from .terminate import asked_for, delete_vm_quietly

log = logging.getLogger(__name__)

#: seconds a booted VM may refuse the job's key before the login user is taken to be wrong (cloud-init writes the
#: key before sshd starts: a refusal that lasts is a user the image does not have, not a key on its way)
AUTH_REFUSED_GRACE = 30.0


def create_vm(rt: Runtime, job_id: int) -> None:
    job = rt.journal.get(job_id)
    if rt.pool is not None and not _own_vm(job):
        take_vm(rt, job_id)
        return
    info = _existing_vm(rt, job)
    asked = info is None  # a VM found again (a resumed job) booted before: its boot is not observed
    if info is None:
        info = _request_vm(rt, job)  # (it starts the SSH library loading, as the job's key is made)
    else:
        preload()  # a VM found again: the SSH library loads while it answers
    job = rt.journal.update(job_id, lambda j: j.set_state(JobState.RUNNING, JobStep.CREATE_VM))
    while True:
        try:
            info = _wait_active(rt, job, info)
            break
        except StepTimeout as e:  # stuck in boot: a new VM, a bounded number of times
            retries = job.run.boot_retries
            if retries >= rt.config.vm.boot_retries:
                raise
            why = f"{e}; trying a new VM (retry {retries + 1} of {rt.config.vm.boot_retries})"
            log.warning("job %s: %s", job_id, why)
            delete_vm_quietly(rt, job_id, info.id)

            def forget(j: Job, n: int = retries + 1, note: str = why) -> None:
                j.run.boot_retries = n
                j.history.append(HistoryEntry(now(), j.state, j.step, note[:200]))
                j.retire_vm()

            job = rt.journal.update(job_id, forget)
            info = _request_vm(rt, job)
            job = rt.journal.get(job_id)
            asked = True
    active_at = now()
    host_keys = _learn_host_keys(rt, job, info)
    assert job.vm is not None
    rt.keys(job).pin_host(info.address or "", info.port, host_keys)

    def record(j: Job) -> None:
        assert j.vm is not None
        j.vm.address, j.vm.port, j.vm.host_keys = info.address, info.port, host_keys
        j.vm.flavor = info.flavor.name if info.flavor else j.vm.flavor
        j.vm.vcpus = info.flavor.vcpus if info.flavor else None
        j.vm.ram_mb = info.flavor.ram_mb if info.flavor else None
        if asked:  # (a VM found again booted unseen)
            j.vm.active = active_at

    job = rt.journal.update(job_id, record)
    _wait_ssh_ready(rt, job)
    if asked and rt.on_vm_ready is not None and job.vm is not None and job.vm.created is not None:
        rt.on_vm_ready((active_at - job.vm.created).total_seconds(), (now() - job.vm.created).total_seconds())


def _own_vm(job: Job) -> bool:
    """Whether the job is on a VM of its own already (it started before the pool was turned on)."""
    return job.vm is not None and job.vm.pool_vm is None and job.vm.deleted is None


def _existing_vm(rt: Runtime, job: Job) -> VmInfo | None:
    """The VM this job already has (after a crash or a restart), if it is still usable."""
    candidates: list[VmInfo] = []
    if job.vm and job.vm.id:
        info = rt.cloud.get_vm(job.vm.id)
        if info:
            candidates.append(info)
    elif job.vm:  # we asked for it but crashed before recording its id: find it by name
        candidates = asked_for(rt, job)
    for info in candidates:
        if info.status != "ERROR":
            if not (job.vm and job.vm.id):
                rt.journal.update(job.id, functools.partial(_set_vm_id, vm_id=info.id))
            return info
        delete_vm_quietly(rt, job.id, info.id)
    return None


def _request_vm(rt: Runtime, job: Job) -> VmInfo:
    config = rt.config
    attempt = job.run.vm_attempt + 1
    name = f"{config.cloud.installation_id}-job-{job.id}-{attempt}"
    chosen = job_flavor(config, rt.cloud, job)  # the job's, the scheduler's, vm.flavor, or the cheapest that fits
    flavor = chosen.name
    image = job.vm_spec.image or config.vm.image
    volume = job.vm_spec.volume_size if job.vm_spec.volume_size is not None else config.vm.volume_size
    user = rt.cloud.default_user(image)  # vm.user, else the image's own (OpenStack: its os_admin_user)
    work_dir = rt.cloud.vm_work_dir(name)
    device = "/dev/vdb"
    mounts = volume_mounts((job.facts.get("bespin") or {}).get("vm_volume_mounts"))
    if volume and mounts and rt.cloud.name != "local":  # the job source names the device and mount point
        device, work_dir = mounts[0]
    # the SSH library loads while the key is made and the VM boots. Not sooner: until then the job is bound by
    # this process's CPU, and a thread importing meanwhile (the GIL) holds back each of its steps by up to 5 ms
    preload()
    public_key = rt.keys(job).ensure()
    user_data = render_user_data(UserDataParams(public_key=public_key, user=user, work_dir=work_dir,
                                                volume_device=device if volume else None))

    def remember(j: Job) -> None:  # recorded before the request, so a crash finds the VM by name
        j.run.vm_attempt = attempt
        j.vm = VmRecord(name=name, user=user, work_dir=work_dir, flavor=flavor, vcpus=chosen.vcpus,
                        ram_mb=chosen.ram_mb, created=now())

    rt.journal.update(job.id, remember)
    placement = (job.facts.get("bespin") or {}).get("cloud_settings") or {}  # the job source's own placement
    request = VmRequest(name=name, flavor=flavor, image=image, user_data=user_data, volume_size=volume or 0,
                        metadata=rt.metadata(job), network=placement.get("network_name"),
                        allocate_floating_ip=placement.get("allocate_floating_ips"),
                        floating_ip_pool=placement.get("floating_ip_pool_name"),
                        key_name=placement.get("ssh_key_name"), project=placement.get("vm_project"))
    delay = 1.0
    while True:
        try:
            info = rt.cloud.create_vm(request)
            break
        except QuotaExceeded as e:  # not a failure: wait for the cloud to have room
            reason = str(e)
            rt.journal.update(job.id, setting(reason=reason))
            rt.sleep(job.id, delay)
            delay = min(delay * 2, 60.0)
    rt.journal.update(job.id, functools.partial(_set_vm_id, vm_id=info.id, reason=""))
    return info


def _wait_active(rt: Runtime, job: Job, info: VmInfo) -> VmInfo:
    deadline = time.monotonic() + rt.config.vm.boot_timeout
    delay = 0.002  # a local VM boots in ~25 ms; the back-off reaches seconds within a dozen polls
    while info.status != "ACTIVE":
        if info.status == "ERROR":
            raise VmFailed(f"VM {info.name} failed to boot: {info.fault or 'the cloud gave no reason'}")
        if time.monotonic() > deadline:
            raise StepTimeout(f"VM {info.name} did not become ACTIVE within the boot timeout "
                              f"({rt.config.vm.boot_timeout:.0f}s); it was {info.status}")
        rt.sleep(job.id, delay)
        delay = min(delay * 1.5, 5.0)
        latest = rt.cloud.get_vm(info.id)
        if latest is None:
            raise VmFailed(f"VM {info.name} disappeared while booting")
        info = latest
    return info

def _learn_host_keys(rt: Runtime, job: Job, info: VmInfo) -> list[str]:
    """The host keys cloud-init printed on the console: the only keys we will accept."""
    deadline = time.monotonic() + rt.config.vm.boot_timeout
    delay = 0.02
    while True:
        keys = host_keys_from_console(rt.cloud.console_log(info.id))
        if keys:
            return keys
        if time.monotonic() > deadline:
            if not rt.config.vm.host_key_from_console:
                return _first_seen_host_keys(rt, info)
            raise HostKeyMismatch(f"VM {info.name} printed no SSH host keys on its console within the boot "
                                  "timeout, so its identity cannot be verified (set "
                                  "vm.host_key_from_console: false to trust the first key seen)")
        rt.sleep(job.id, delay)
        delay = min(delay * 1.5, 5.0)

def _first_seen_host_keys(rt: Runtime, info: VmInfo) -> list[str]:
    import paramiko

    try:
        with paramiko.Transport((info.address or "", info.port)) as t:
            t.start_client(timeout=rt.config.vm.ssh_timeout)
            key = t.get_remote_server_key()
            log.warning("VM %s: trusting the first host key seen (vm.host_key_from_console is false)", info.name)
            return [f"{key.get_name()} {key.get_base64()}"]
    except (OSError, paramiko.SSHException) as e:
        raise VmUnreachable(f"cannot reach VM {info.name} to read its host key: {e}") from None

def _wait_ssh_ready(rt: Runtime, job: Job) -> None:
    """SSH answers and cloud-init has prepared the work dir (its runcmd touches a marker)."""
    assert job.vm is not None and job.vm.work_dir
    marker = posixpath.join(job.vm.work_dir, READY_MARKER)
    deadline = time.monotonic() + rt.config.vm.ssh_timeout
    delay = 0.02
    last = "no answer yet"
    refused_since: float | None = None  # sshd answers but refuses the key: since when, without a break
    while time.monotonic() < deadline:
        rt.check_cancel(job.id)
        try:
            if rt.remote(job).run(["test", "-e", marker], check=False, retry=False).exit_code == 0:
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
        rt.sleep(job.id, delay)
        delay = min(delay * 1.5, 5.0)
    if refused_since is not None:  # the VM is up: cloud-init put the job's key on another user than ours
        raise VmUnreachable(
            f"VM {job.vm.name} answers but refuses the job's SSH key for user {job.vm.user!r}: cloud-init puts "
            f"the key on the image's default user, so that user is probably another; set vm.user to the "
            f"image's login user (or give the image an os_admin_user property naming it)")
    raise StepTimeout(f"VM {job.vm.name} was not ready for SSH within the SSH timeout "
                      f"({rt.config.vm.ssh_timeout:.0f}s): {last}")


def _set_vm_id(job: Job, vm_id: str, reason: str | None = None) -> None:
    if job.vm is not None:
        job.vm.id = vm_id
    if reason is not None:
        job.reason = reason
