"""bespin-api as the job source: the jobs a facility's bespin-api holds, run by lando-ssh.

bespin-api (Duke-GCB/bespin-api, a Django REST service) keeps the job table its users see; lando
read and updated it over REST (lando/server/jobapi.py), and this store does exactly what lando did,
with lando's state and step codes:

- `GET  admin/jobs/{id}/` loads a job (bespin_api_v2 `AdminJobSerializer`);
- `PUT  admin/jobs/{id}/` with `state`, `step` ('' for none), `vm_instance_name`, `vm_volume_name`
  on every change of one of them;
- `POST admin/job-errors/` with `{job, job_step, content}` on every error (lando sent the failed
  step's message with the last 100 lines of cwltool's stderr; so do we);
- `GET  admin/job-file-stage-groups/{id}` for the inputs to stage (`url_files`: `url`,
  `destination_path`, `size`);
- `GET  admin/jobs/?vm_instance_name=NAME` and `GET admin/workflow-methods-documents/{id}` where
  asked for;
- `GET  admin/share-groups/{id}` for the job's `share_group` (`AdminShareGroupSerializer`: `name`, `email`,
  `users` with `name` and `dds_id`). lando shared its DukeDS output project with those users; lando-ssh has
  no DukeDS project to share, so it records the group on the job (`facts["share_group"]`) and names it in
  the results' docs/README.md. A group that cannot be read does not fail the job.
- the job's `output_project` (`{id, job, project_id, dds_user_credentials}`: lando's DukeDS project for the
  results): with `bespin_api.output_url` set, a template of {job_id}, {project_id} and {owner}, the results go
  to that object store prefix (`facts["output_url"]`, checked at load as submit checks --output-url). Its
  DukeDS credentials are never read or kept.

Authentication is bespin's DRF token (`Authorization: Token <token>`), or HTTP basic auth with
`username`/`password` when a site has no token. The token is never logged.

Everything bespin-api has no field for (the packed workflow, keys facts, the VM's address and
pinned host key, the remote pid, history, timings, the output object) lives in the local store
(`store.url`), in a record with bespin's job id, so that recovery after a crash works exactly as
with the local store. The local record is lando-ssh's own view of the job once it exists: the
states bespin-api sets before it sends a command (S before start_job, c before cancel_job, r
before restart_job) are requests, which the server acts on when the command arrives.

State changes and errors are sent to bespin-api in order by one sender thread, retried with
back-off while bespin-api is down or slow (the job goes on meanwhile and bespin's record catches
up); what was last accepted is kept on the local record (`facts["bespin_pushed"]`), so a server
killed before bespin-api heard of a change sends it when it starts again.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from lando_ssh import exactjson
from lando_ssh.config import BespinApiConfig, Config
from lando_ssh.errors import BadInput, ConfigError, InfrastructureError, LandoError, UnknownJob, WorkflowInvalid
from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, VmSpec, now
from lando_ssh.store import JobStore

log = logging.getLogger(__name__)

#: lando capped a job error's content at the failed step's message and the last 100 lines of stderr
#: (lando/worker/cwlworkflow.py JOB_STDERR_OUTPUT_MAX_LINES); our error text is built the same way,
#: and is cut here too so a runaway message cannot be refused by bespin-api.
ERROR_CONTENT_MAX_LINES = 120
ERROR_CONTENT_MAX_CHARS = 64 * 1024

#: how long reading a job's share group is retried while bespin-api does not answer (the job waits meanwhile)
SHARE_GROUP_RETRY_FOR = 10.0

#: bespin's states that are requests lando has not acted on yet, as a job lando-ssh never ran
#: starts in the local store: start_job/cancel_job find it startable; restart_job restartable.
_FIRST_STATE = {"S": JobState.AUTHORIZED, "c": JobState.AUTHORIZED, "r": JobState.ERROR, "R": JobState.ERROR}


def first_state(code: str | None) -> JobState:
    """The state a bespin-api job lando-ssh has not loaded yet starts in here (its request states mapped as
    above); ValueError for a code bespin does not have."""
    return _FIRST_STATE.get(code or "N") or JobState(code or "N")


class BespinAuthRefused(InfrastructureError):
    """bespin-api refused our token or credentials (401/403)."""


class BespinUnavailable(InfrastructureError):
    """bespin-api did not answer, or answered 5xx, for longer than we retry."""


class BespinRejected(BadInput):
    """bespin-api answered a 4xx other than auth: the job is gone, or it refused the data."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class UnknownBespinJob(UnknownJob):
    def __init__(self, job_id: int, base: str):
        super().__init__(job_id)
        self.args = (f"bespin-api at {base} has no job {job_id} (GET admin/jobs/{job_id}/ answered 404)",)


class BespinApi:
    """The bespin-api admin endpoints lando used, with retries and readable errors."""

    def __init__(self, settings: BespinApiConfig, *, timeout: float = 30.0, retry_for: float = 30.0,
                 max_delay: float = 10.0):
        if not settings.url:
            raise ConfigError("bespin_api.url is not set")
        if not settings.token and not (settings.username and settings.password):
            raise ConfigError("bespin_api needs a token (or a username and password)")
        import requests

        self.base = settings.url.rstrip("/")
        self.timeout = timeout
        self.retry_for = retry_for  # how long a call made for a caller keeps retrying
        self.max_delay = max_delay
        self.session = requests.Session()
        self.session.headers["Content-type"] = "application/json"
        if settings.token:
            self.session.headers["Authorization"] = f"Token {settings.token}"
        else:
            self.session.auth = (settings.username or "", settings.password or "")

    # -- the endpoints (lando/server/jobapi.py BespinApi) ------------------------------------------
    def get_job(self, job_id: int) -> dict[str, Any]:
        return self.call("GET", f"jobs/{job_id}/", job_id=job_id)

    def put_job(self, job_id: int, data: dict[str, Any], retry_for: float | None = None) -> dict[str, Any]:
        return self.call("PUT", f"jobs/{job_id}/", data, job_id=job_id, retry_for=retry_for)

    def post_error(self, job_id: int, job_step: str, content: str, retry_for: float | None = None) -> dict[str, Any]:
        return self.call("POST", "job-errors/", {"job": job_id, "job_step": job_step, "content": content},
                         job_id=job_id, retry_for=retry_for)

    def get_file_stage_group(self, stage_group: int) -> dict[str, Any]:
        return self.call("GET", f"job-file-stage-groups/{stage_group}")

    def get_jobs_for_vm_instance_name(self, vm_instance_name: str) -> list[dict[str, Any]]:
        import urllib.parse

        return self.call("GET", f"jobs/?vm_instance_name={urllib.parse.quote(vm_instance_name)}")

    def get_workflow_methods_document(self, document_id: int) -> dict[str, Any]:
        return self.call("GET", f"workflow-methods-documents/{document_id}")

    def get_share_group(self, share_group: int, retry_for: float | None = None) -> dict[str, Any]:
        return self.call("GET", f"share-groups/{share_group}", retry_for=retry_for)

    # -- one call, retried -------------------------------------------------------------------------
    def call(self, method: str, path: str, data: Any = None, *, job_id: int | None = None,
             retry_for: float | None = None) -> Any:
        """One request to `<url>/admin/<path>`; timeouts, connection errors, 429 and 5xx are retried with
        back-off for `retry_for` seconds (None: this client's default; a negative value: forever)."""
        import requests

        url = f"{self.base}/admin/{path}"
        what = f"{method} admin/{path}"
        limit = self.retry_for if retry_for is None else retry_for
        deadline = None if limit < 0 else time.monotonic() + limit
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.session.request(method, url, json=data, timeout=self.timeout)
                problem = None
                if resp.status_code < 400:
                    return resp.json() if resp.content else {}
                if resp.status_code in (401, 403):
                    raise BespinAuthRefused(
                        f"bespin-api at {self.base} refused our credentials for {what} (HTTP {resp.status_code}: "
                        f"{_detail(resp)}); check bespin_api.token in the config")
                if resp.status_code == 404 and job_id is not None:
                    raise BespinRejected(f"bespin-api at {self.base} has no job {job_id} ({what} answered 404)", 404)
                if resp.status_code < 500 and resp.status_code != 429:
                    raise BespinRejected(f"bespin-api at {self.base} refused {what} (HTTP {resp.status_code}: "
                                         f"{_detail(resp)})", resp.status_code)
                problem = f"HTTP {resp.status_code}"
            except requests.RequestException as e:
                problem = type(e).__name__
            except ValueError:  # a 2xx whose body is not JSON
                problem = "an answer that is not JSON"
            if deadline is not None and time.monotonic() + delay > deadline:
                raise BespinUnavailable(f"bespin-api at {self.base} did not serve {what} ({problem}; "
                                        f"{attempt} attempts in {limit:.0f} s)")
            if attempt in (1, 5) or attempt % 20 == 0:
                log.warning("bespin-api at %s: %s failed (%s); retrying", self.base, what, problem)
            time.sleep(delay)
            delay = min(delay * 2, self.max_delay)


def _detail(resp: Any) -> str:
    try:
        body = resp.json()
        text = body.get("detail") if isinstance(body, dict) and "detail" in body else json.dumps(body)
    except ValueError:
        text = resp.text
    text = " ".join(str(text).split())
    return text[:300] or resp.reason or "no detail"


# -- a bespin job as a lando-ssh job ----------------------------------------------------------------

def workflow_source_of(data: dict[str, Any]) -> Any:
    """The `workflow.WorkflowSource` of a bespin job: its workflow_version's url, type and workflow_path."""
    from lando_ssh.workflow import WorkflowSource

    version = data.get("workflow_version") or {}
    url = version.get("url")
    if not url:
        raise WorkflowInvalid(f"bespin-api's job {data.get('id')} has no workflow_version url")
    kind = version.get("type") or "packed"
    path = version.get("workflow_path") or version.get("object_name") or ""
    if kind == "packed":  # the path names the process in the packed document: "#main"
        return WorkflowSource(url + (path if path.startswith("#") else f"#{path}" if path else ""), "url")
    if kind == "zipped":
        return WorkflowSource(url, "zip", path=path)
    if kind == "direct":
        return WorkflowSource(url, "url")
    raise WorkflowInvalid(f"bespin-api's job {data.get('id')} has a workflow of type {kind!r}; "
                          "lando-ssh runs packed, zipped and direct workflows")


def job_order_of(data: dict[str, Any], stage_group: dict[str, Any] | None) -> dict[str, Any]:
    """The job order with each File that names a staged URL file's `destination_path` pointing at its URL
    (lando downloaded url_files to destination_path beside the job order; we download them on the VM)."""
    raw = data.get("job_order") or "{}"
    try:
        order = exactjson.loads(raw) if isinstance(raw, str) else raw  # its floats as written
    except ValueError as e:
        raise WorkflowInvalid(f"bespin-api's job {data.get('id')} has a job_order that is not JSON: {e}") from None
    if not isinstance(order, dict):
        raise WorkflowInvalid(f"bespin-api's job {data.get('id')} has a job_order that is not a JSON object")
    stage_group = stage_group or {}
    if stage_group.get("dds_files"):
        raise WorkflowInvalid(f"bespin-api's job {data.get('id')} stages {len(stage_group['dds_files'])} DukeDS "
                              "file(s); lando-ssh stages url_files only")
    by_dest = {os.path.normpath(f["destination_path"]): f for f in stage_group.get("url_files") or []}

    def visit(value: Any) -> Any:
        if isinstance(value, list):
            return [visit(v) for v in value]
        if not isinstance(value, dict):
            return value
        if value.get("class") in ("File", "Directory"):
            named = value.get("path") or value.get("location") or ""
            staged = by_dest.get(os.path.normpath(named)) if named and "://" not in named else None
            if staged is not None:
                moved = {k: v for k, v in value.items() if k not in ("path", "location")}
                moved["location"] = staged["url"]
                moved.setdefault("basename", os.path.basename(staged["destination_path"]))
                if staged.get("size"):  # bespin's default 0 means "not known"
                    moved["size"] = int(staged["size"])
                if "secondaryFiles" in value:
                    moved["secondaryFiles"] = visit(value["secondaryFiles"])
                return moved
        return {k: visit(v) for k, v in value.items()}

    return visit(order)


def facts_of(data: dict[str, Any]) -> dict[str, Any]:
    """What the engine and the admin need of bespin's job record, kept on the local record."""
    settings = data.get("job_settings") or {}
    runtime = settings.get("job_runtime_openstack") or {}
    cloud = runtime.get("cloud_settings") or {}
    flavor = data.get("job_flavor") or data.get("vm_flavor") or {}
    facts: dict[str, Any] = {"bespin": {
        "job_id": data.get("id"),
        "state": data.get("state"), "step": data.get("step"),
        "vm_instance_name": data.get("vm_instance_name") or "", "vm_volume_name": data.get("vm_volume_name") or "",
        "job_flavor": {k: flavor.get(k) for k in ("name", "cpus", "memory")},
        "volume_size": data.get("volume_size"), "vm_volume_mounts": data.get("vm_volume_mounts"),
        "cleanup_vm": data.get("cleanup_vm", True), "stage_group": data.get("stage_group"),
        "share_group": data.get("share_group"), "fund_code": data.get("fund_code"),
        "output_project": output_project_of(data),
        "workflow_version": {k: (data.get("workflow_version") or {}).get(k)
                             for k in ("id", "name", "version", "url", "type", "workflow_path", "methods_document")},
        "image_name": runtime.get("image_name"),
        "cloud_settings": {"vm_project": (cloud.get("vm_project") or {}).get("name"),
                           **{k: cloud.get(k) for k in ("ssh_key_name", "network_name", "allocate_floating_ips",
                                                        "floating_ip_pool_name")}},
    }}
    for key in ("cwl_base_command", "cwl_pre_process_command", "cwl_post_process_command"):
        command = runtime.get(key)
        if isinstance(command, str) and command.strip():  # a JSON-encoded list, as the model stores it
            try:
                command = json.loads(command)
            except ValueError:
                command = command.split()
        if isinstance(command, list) and command:
            facts[key] = [str(c) for c in command]
    return facts


def output_project_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The job's output project as recorded on it: bespin's `output_project` (JobDDSOutputProjectSerializer: id,
    job, project_id, dds_user_credentials) without its credentials; None where the job has none."""
    project = data.get("output_project")
    if not isinstance(project, dict):
        return None
    return {"id": project.get("id"), "project_id": str(project.get("project_id") or "")}


def output_url_of(template: str | None, data: dict[str, Any]) -> str | None:
    """Where bespin_api.output_url puts the results of a bespin job: the template with the job's {job_id},
    {project_id} (its output project's) and {owner} (its user's username). None (the output dir, as without an
    object store) when no template is set, the job has no output project, or the template names {project_id}
    and the output project has none yet (bespin leaves it empty for lando to fill in). BadInput for a value that
    cannot be part of a prefix; the values are URL-quoted ('ann@example.org' is ann%40example.org in the URL,
    ann@example.org in the object's name)."""
    project = output_project_of(data)
    if not template or project is None:
        return None
    import string
    import urllib.parse

    named = {name for _t, name, _s, _c in string.Formatter().parse(template) if name}
    if "project_id" in named and not project["project_id"]:
        return None
    values = {"job_id": str(data.get("id")), "project_id": project["project_id"],
              "owner": str((data.get("user") or {}).get("username") or "")}
    for name in sorted(named):
        value = values[name]
        if not value or "/" in value or value in (".", "..") or not value.isprintable():
            raise BadInput(f"bespin-api's job {data.get('id')} has {name} {value!r}, which cannot be part of an "
                           f"object prefix (bespin_api.output_url {template})")
    return template.format(**{k: urllib.parse.quote(v, safe="~") for k, v in values.items()})  # each one a name


def share_group_of(data: Any, group_id: Any) -> dict[str, Any]:
    """What the README needs of bespin-api's share group (AdminShareGroupSerializer: id, name, email, and
    `users`, each a DDSUser with id, name and dds_id); ValueError when the answer is not a share group."""
    if not isinstance(data, dict) or not isinstance(data.get("users", []), list):
        raise ValueError(f"bespin-api's answer for share group {group_id} is not a share group")
    users = []
    for user in data.get("users") or []:
        if not isinstance(user, dict):
            raise ValueError(f"bespin-api's share group {group_id} lists a user that is not an object")
        users.append({k: str(user[k]) for k in ("name", "dds_id", "username", "email") if user.get(k)})
    return {"id": data.get("id", group_id), "name": str(data.get("name") or ""), "email": str(data.get("email") or ""),
            "users": users}


def cap_error(text: str) -> str:
    lines = text.splitlines()
    if len(lines) > ERROR_CONTENT_MAX_LINES:
        lines = lines[:1] + ["..."] + lines[-(ERROR_CONTENT_MAX_LINES - 2):]
    capped = "\n".join(lines)
    return capped if len(capped) <= ERROR_CONTENT_MAX_CHARS else capped[:200] + "\n...\n" + \
        capped[-(ERROR_CONTENT_MAX_CHARS - 210):]


# -- the store --------------------------------------------------------------------------------------

class BespinStore:
    """`JobStore` over bespin-api, with the local store keeping what bespin-api has no field for."""

    def __init__(self, config: Config, local: JobStore | None = None, *, api: BespinApi | None = None,
                 resync: bool = False):
        from lando_ssh.store import open_store

        if config.bespin_api is None:
            raise ConfigError("bespin_api is not configured")
        self.config = config
        self.api = api or BespinApi(config.bespin_api)
        self.local = local if local is not None else open_store(config.store_url)
        self._load_lock = threading.Lock()
        self._outbox: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._sender: threading.Thread | None = None
        if resync:
            self.resync()

    # -- JobStore ---------------------------------------------------------------------------------
    def create(self, job: Job) -> Job:
        raise BadInput("jobs come from bespin-api here (bespin_api.url is set): create the job in bespin-api, "
                       "or use a config without bespin_api to run local jobs")

    def insert(self, job: Job) -> Job:
        return self.create(job)  # (jobs come from bespin-api: `load` keeps them)

    def get(self, job_id: int) -> Job:
        """The job as lando-ssh knows it; one it has not loaded yet as bespin-api has it (not validated, not
        kept). Reading never writes, to bespin-api or to the local store: `load` does, for a command."""
        try:
            return self.get_local(job_id)
        except UnknownJob:
            pass
        data = self._get_bespin_job(job_id)
        job = self._new_job(data, facts_of(data), None, None)
        job.reason = (f"not loaded by lando-ssh yet: bespin-api has it in state {data.get('state') or 'N'}; it is "
                      "loaded (and its workflow checked) when a command for it arrives")
        return job

    def load(self, job_id: int) -> Job:
        """The job, for a command that acts on it: read from bespin-api, its workflow fetched and validated, and
        kept in the local store the first time; a job whose workflow did not validate is read again. A workflow
        that does not validate ends the job E, with a JobError in bespin-api, and raises."""
        try:
            job = self.get_local(job_id)
        except UnknownJob:
            return self._load(job_id)
        if job.workflow_doc is None and job.state in (JobState.NEW, JobState.AUTHORIZED, JobState.ERROR):
            return self._load(job_id, job)  # its workflow did not validate when it was loaded: try again
        return job

    def update(self, job_id: int, change: Callable[[Job], object]) -> Job:
        seen: dict[str, Any] = {}

        def wrapped(j: Job) -> None:
            seen.update(fields=self._fields(j), error=j.error)
            change(j)

        try:
            job = self.local.update(job_id, wrapped)
        except UnknownJob:
            self.load(job_id)
            job = self.local.update(job_id, wrapped)
        self._announce(job, seen["fields"], seen["error"])
        return job

    def list(self, states: Iterable[JobState] | None = None) -> list[Job]:
        """The bespin jobs this installation has loaded (bespin-api's other jobs are not ours to list)."""
        return [j for j in self.local.list(states) if "bespin" in j.facts]

    def close(self, flush_timeout: float = 10.0) -> None:
        self.flush(flush_timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.local.close()

    # -- sending ------------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until bespin-api has taken every queued change; False when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outbox or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._sender is None:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def resync(self) -> None:
        """Send bespin-api what it missed while this server was down (changes made after its last PUT)."""
        for job in self.list():
            pushed = job.facts.get("bespin_pushed")
            if pushed is not None and pushed != self._fields(job):  # never pushed: bespin's record stands
                self._enqueue(job.id, "put", self._fields(job))
            if job.state == JobState.ERROR and job.error and job.facts.get("bespin_error_posted") != _digest(job.error):
                self._enqueue(job.id, "error", {"job_step": job.step.value or JobStep.CREATE_VM.value,
                                                "content": job.error})

    def republish(self, job_id: int) -> None:
        """Send bespin-api the job's state and step again: it set a request state (S, c or r) before the
        command that turned out to change nothing, and must not stay at it (lando always answered)."""
        try:
            job = self.get_local(job_id)
        except UnknownJob:
            return
        self._enqueue(job.id, "put", self._fields(job))

    def _announce(self, job: Job, before: dict[str, str], error_before: str | None) -> None:
        fields = self._fields(job)
        # the error first: whoever sees the job in E in bespin-api finds its job-error there already
        if job.error and job.error != error_before:
            # JobError.job_step is one of bespin's step codes (never blank): a failure before any step is 'V'
            self._enqueue(job.id, "error", {"job_step": job.step.value or JobStep.CREATE_VM.value,
                                            "content": job.error})
        for put in lando_puts(before, fields):
            self._enqueue(job.id, "put", put)

    def _fields(self, job: Job) -> dict[str, str]:
        """What bespin-api's job has fields for, as lando set them: the state and step (`lando_view`), the
        VM's name and its data volume's name ('' where the VM has no volume)."""
        bespin = job.facts.get("bespin") or {}
        pushed = job.facts.get("bespin_pushed") or {}
        if job.vm is not None:
            volume = job.vm_spec.volume_size if job.vm_spec.volume_size is not None else self.config.vm.volume_size
            has_volume = bool(volume) and self.config.cloud.driver != "local"  # a local VM has no volumes
            vm_name, volume_name = job.vm.name, f"{job.vm.name}-data" if has_volume else ""
        else:  # between VMs (a restart): bespin keeps the name of the last one, as it did with lando
            vm_name = pushed.get("vm_instance_name", bespin.get("vm_instance_name", ""))
            volume_name = pushed.get("vm_volume_name", bespin.get("vm_volume_name", ""))
        if job.state == JobState.RESTARTING and job.run.restart_pending:
            state, step = job.state.value, pushed.get("step", job.step.value)  # bespin's own r, not acted on yet
        else:
            state, step = lando_view(job.state, job.step)
        return {"state": state, "step": step, "vm_instance_name": vm_name, "vm_volume_name": volume_name}

    def _enqueue(self, job_id: int, kind: str, payload: dict[str, Any]) -> None:
        with self._cond:
            self._outbox.append((job_id, kind, payload))
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="bespin-sender", daemon=True)
                self._sender.start()
                atexit.register(self.flush, 30.0)
            self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if not self._outbox:
                    return
                job_id, kind, payload = self._outbox[0]
                self._busy = True
            try:
                self._send(job_id, kind, payload)
            finally:
                with self._cond:
                    self._outbox.popleft()
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, job_id: int, kind: str, payload: dict[str, Any]) -> None:
        """One change to bespin-api, retried until it is taken (or refused for good)."""
        delay = 5.0
        while True:
            try:
                if kind == "put":
                    self.api.put_job(job_id, payload, retry_for=60.0)
                    self.local.update(job_id, lambda j: j.facts.update(bespin_pushed=dict(payload)))
                else:
                    content = cap_error(payload["content"])
                    self.api.post_error(job_id, payload["job_step"], content, retry_for=60.0)
                    self.local.update(job_id, lambda j: j.facts.update(bespin_error_posted=_digest(payload["content"])))
                return
            except BespinRejected as e:
                log.error("job %s: %s; bespin-api does not have this %s", job_id, e,
                          "state change" if kind == "put" else "job error")
                return
            except (BespinUnavailable, BespinAuthRefused) as e:
                with self._cond:
                    if self._closed:
                        log.error("job %s: %s; the change is sent when the server starts again", job_id, e)
                        return
                log.error("job %s: %s; still trying", job_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
            except LandoError as e:  # the local store refused the bookkeeping: bespin has the change anyway
                log.error("job %s: bespin-api took the change but it could not be noted locally: %s", job_id, e)
                return

    # -- loading a job --------------------------------------------------------------------------------
    def _load(self, job_id: int, existing: Job | None = None) -> Job:
        """Read job `job_id` from bespin-api, fetch and validate its workflow, keep it in the local store."""
        from lando_ssh.workflow import prepare

        with self._load_lock:  # one load per job at a time (a start_job and a status at once)
            if existing is None:
                try:
                    return self.get_local(job_id)
                except UnknownJob:
                    pass
            data = self._get_bespin_job(job_id)
            facts = facts_of(data)
            document = (data.get("workflow_version") or {}).get("methods_document")
            if document:  # lando put it beside the results (docs/Methods); we do too
                try:
                    facts["methods_document"] = self.api.get_workflow_methods_document(int(document)).get("content")
                except BespinRejected as e:
                    log.warning("job %s: no methods document: %s", job_id, e)
            if data.get("share_group") is not None:
                facts["share_group"] = self._share_group(job_id, data["share_group"])
            error: LandoError | None = None
            prepared = None
            try:
                self._output_url(data, facts)
                stage_group = self.api.get_file_stage_group(data["stage_group"]) if data.get("stage_group") else None
                prepared = prepare(workflow_source_of(data), None, job_order_of(data, stage_group))
            except (BadInput, WorkflowInvalid) as e:
                error = e
            if existing is None:
                job = self._insert(self._new_job(data, facts, prepared, error))
            else:
                job = self.local.update(job_id, lambda j: self._refresh(j, facts, prepared, error))
            if error is not None:  # bespin-api hears E (it may have set S or r meanwhile); the same error once
                self._announce(job, self._fields(job) | {"state": ""}, existing.error if existing else None)
                raise error
            return job

    def _output_url(self, data: dict[str, Any], facts: dict[str, Any]) -> None:
        """`facts["output_url"]`, where bespin_api.output_url puts the job's results, checked as submit checks
        --output-url (a store configured for it, its credentials taken, no objects there yet). BadInput when it
        cannot be used; ObjectStoreUnavailable (the command is served again) while the store does not answer."""
        from lando_ssh.errors import ObjectStoreRefused
        from lando_ssh.objectstore.checks import check_output_url

        assert self.config.bespin_api is not None
        template = self.config.bespin_api.output_url
        url = output_url_of(template, data)
        if url is None:
            if template and facts["bespin"]["output_project"] is not None:
                log.info("job %s: its output project names no project_id, which bespin_api.output_url needs; its "
                         "results go to the output directory", data.get("id"))
            return
        project = (facts["bespin"].get("cloud_settings") or {}).get("vm_project")  # as usage.named_project
        where = f"the object store prefix {url} (bespin_api.output_url, for its output project)"
        try:
            facts["output_url"] = check_output_url(self.config, url, project=project or None)
        except (BadInput, ObjectStoreRefused) as e:  # (a refused credential, a full quota: no retry helps)
            raise BadInput(f"its results cannot go to {where}: {e}") from None

    def _get_bespin_job(self, job_id: int) -> dict[str, Any]:
        try:
            return self.api.get_job(job_id)
        except BespinRejected as e:
            if e.status == 404:
                raise UnknownBespinJob(job_id, self.api.base) from None
            raise

    def _share_group(self, job_id: int, group_id: Any) -> dict[str, Any]:
        """The job's share group as recorded on it; one that cannot be read is recorded with the reason
        (the job runs all the same, and its README says the group could not be read)."""
        try:
            return share_group_of(self.api.get_share_group(int(group_id), retry_for=SHARE_GROUP_RETRY_FOR), group_id)
        except (BespinRejected, InfrastructureError, ValueError, TypeError) as e:
            log.warning("job %s: cannot read its share group %s from bespin-api (%s); the job runs, and its "
                        "README says the share group is not known", job_id, group_id, e)
            return {"id": group_id, "error": str(e)}

    def get_local(self, job_id: int) -> Job:
        job = self.local.get(job_id)
        if "bespin" not in job.facts:
            raise ConfigError(f"the local store {self.config.store_url} already holds a job {job_id} that did not "
                              "come from bespin-api; give bespin jobs a store of their own (store.url)")
        return job

    def _new_job(self, data: dict[str, Any], facts: dict[str, Any], prepared: Any, error: LandoError | None) -> Job:
        job_id = int(data["id"])
        code = data.get("state") or "N"
        state = first_state(code)
        step = JobStep(data.get("step") or "")
        flavor = (data.get("job_flavor") or data.get("vm_flavor") or {}).get("name")
        image = facts["bespin"].get("image_name")
        job = Job(id=job_id, name=data.get("name") or f"bespin job {job_id}", workflow="", job_order={},
                  state=state, step=step, vm_spec=VmSpec(flavor=flavor or None, image=image or None,
                                                          volume_size=data.get("volume_size")),
                  user=((data.get("user") or {}).get("username") or ""),
                  output_dir=os.path.join(os.path.abspath(self.config.outputs_base), f"job-{job_id}"), facts=facts)
        job.history.append(HistoryEntry(now(), state, step, f"loaded from bespin-api (state {code})"))
        if code in ("R", "r") and state == JobState.ERROR:
            job.reason = "bespin-api had it running elsewhere (under lando?); restart_job runs it here from the start"
        self._refresh(job, facts, prepared, error)
        return job

    @staticmethod
    def _refresh(job: Job, facts: dict[str, Any], prepared: Any, error: LandoError | None) -> None:
        job.facts.update(facts)
        if "output_url" not in facts:  # (read again: its output project or the config may have changed)
            job.facts.pop("output_url", None)
        if prepared is not None:
            job.workflow = prepared.source
            job.workflow_doc = prepared.packed
            job.job_order = prepared.job_order
            job.facts["workflow_source"] = prepared.source_record
        if error is not None:
            first = str(error).splitlines()[0]
            job.error = f"the workflow was not run: {error}"
            job.reason = f"the workflow was not run: {first}"
            job.set_state(JobState.ERROR, note=first[:200])

    def _insert(self, job: Job) -> Job:
        """Store `job` under bespin's id (the local store's own ids are not used for bespin jobs); one loaded
        meanwhile by another process is kept."""
        self.local.insert(job)
        return self.get_local(job.id)


def lando_view(state: JobState, step: JobStep) -> tuple[str, str]:
    """A job's state and step as lando showed them in bespin-api. lando set R as soon as it took a start or
    restart (lando-ssh's S, waiting for a slot or creating the VM, and r once a restart is under way are R
    there), and cleared the step as it canceled (c and C have no step)."""
    if state in (JobState.STARTING, JobState.RESTARTING):
        return JobState.RUNNING.value, step.value
    if state in (JobState.CANCELING, JobState.CANCELED):
        return state.value, JobStep.NONE.value
    return state.value, step.value


def lando_puts(before: dict[str, str], after: dict[str, str]) -> list[dict[str, str]]:
    """The PUTs that take bespin-api's record from `before` to `after` the way lando did: it cleared the
    step (R/'') before it set F, and its first PUT on a start (a restart from the start too) was R with the
    step bespin's record had."""
    if after == before:
        return []
    if after["state"] == JobState.FINISHED.value and before["state"] == JobState.RUNNING.value and before["step"]:
        return [before | {"step": JobStep.NONE.value}, after]
    if after["state"] == JobState.RUNNING.value and before["state"] != JobState.RUNNING.value \
            and after["step"] != before["step"] and before["state"]:
        return [after | {"step": before["step"]}, after]
    return [after]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
