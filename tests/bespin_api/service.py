"""A local bespin-api: the admin REST endpoints lando-ssh (and lando before it) uses, in memory.

Field names, status codes and authentication follow Duke-GCB/bespin-api: `bespin_api_v2/urls.py`
(routes under `/api/v2/`), `bespin_api_v2/serializers.py` (`AdminJobSerializer` and the nested
workflow version, job settings, job flavor), `data/serializers.py` (`JobErrorSerializer`,
`JobFileStageGroupSerializer` with `url_files`, `AdminShareGroupSerializer`: a share group's `id`,
`name`, `users` (DukeDS users: `id`, `name`, `dds_id`) and `email`), `data/models.py` (state and
step choices, `JobError` requiring a step, a `JobActivity` row each time a save changes the state or
step) and DRF's `TokenAuthentication` (`Authorization: Token <key>`; 401 `{"detail": "Invalid token."}`).

Starting, canceling and restarting a job do what bespin-api's `data/lando.py` `LandoJob` does: check
the state, set S / c / r, and put lando-messaging's pickled `WorkRequest` on the lando queue.

Test-only routes (not bespin's) under `/_test/` create jobs and share groups and send those
commands, so the service can be driven stand-alone (`python -m tests.bespin_api`). Fault knobs:
`down` (every request gets a 503, as a proxy in front of a stopped bespin-api answers) and
`refuse_connections` (the port stops listening, as when bespin-api is stopped).
"""
from __future__ import annotations

import copy
import itertools
import json
import pickle
import re
import sys
import threading
import types
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATES = ("N", "A", "S", "R", "F", "E", "c", "C", "r", "D")
STEPS = ("V", "S", "R", "o", "O", "P", "T")  # data/models.py Job.JOB_STEPS (P: record output project)
PREFIX = "/api/v2"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class BespinApiService:
    """bespin-api in memory. `url` is what lando's `bespin_api.url` names (`http://host:port/api/v2`)."""

    def __init__(self, token: str = "test-token", host: str = "127.0.0.1", port: int = 0,
                 rabbit: dict[str, Any] | None = None, queue: str = "lando"):
        self.token = token
        self.rabbit = rabbit or {"host": "127.0.0.1", "port": 5672, "username": "guest", "password": "guest"}
        self.queue = queue
        self.lock = threading.RLock()
        self.jobs: dict[int, dict[str, Any]] = {}
        self.stage_groups: dict[int, dict[str, Any]] = {}
        self.methods_documents: dict[int, dict[str, Any]] = {}
        #: share groups (every bespin job names one; lando shared its DukeDS output project with its users)
        self.share_groups: dict[int, dict[str, Any]] = {}
        self._group_ids = itertools.count(1)
        self._dds_user_ids = itertools.count(1)
        self.add_share_group("Informatics", [("Bespin Informatics", "c1d2e3f4-0000-4000-8000-000000000001")],
                             email="informatics@example.org")  # id 1: every job's group unless it names another
        self.job_errors: list[dict[str, Any]] = []
        self.activities: list[dict[str, Any]] = []  # JobActivity rows: {job, state, step, created}
        self.puts: list[tuple[int, dict[str, Any]]] = []  # every PUT body, in order
        self.requests: list[str] = []  # "METHOD path" of every request
        self.published: list[tuple[str, int]] = []
        self.down = False
        self.refusing = False
        self._ids = itertools.count(1)
        self._error_ids = itertools.count(1)
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://{self._host}:{self._httpd.server_address[1]}{PREFIX}"

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self) -> BespinApiService:
        handler = type("Handler", (_Handler,), {"service": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bespin-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def refuse_connections(self) -> None:
        """Stop listening and drop kept-alive connections (bespin-api stopped); `accept_connections()`
        listens again on the same port."""
        self._port = self.port
        self.refusing = True
        self.stop()

    def accept_connections(self) -> None:
        self.refusing = False
        self.start()

    # -- data -----------------------------------------------------------------------------------------
    def add_share_group(self, name: str, users: list[tuple[str, str]], email: str = "") -> int:
        """A ShareGroup with its DDSUsers (`users`: (name, dds_id) pairs); its id."""
        with self.lock:
            group_id = next(self._group_ids)
            self.share_groups[group_id] = {
                "id": group_id, "name": name,
                "users": [{"id": next(self._dds_user_ids), "name": n, "dds_id": d} for n, d in users], "email": email}
            return group_id

    def add_job(self, workflow_url: str, job_order: dict[str, Any], *, name: str = "test job",
                workflow_type: str = "packed", workflow_path: str = "#main",
                url_files: list[dict[str, Any]] | None = None, state: str = "A", flavor: str = "m1.small",
                image: str = "local", cwl_base_command: list[str] | None = None,
                cwl_pre_process_command: list[str] | None = None, cwl_post_process_command: list[str] | None = None,
                volume_size: int = 0,
                methods_document: str | None = None, username: str = "bespin-user",
                cloud_settings: dict[str, Any] | None = None, share_group: int = 1, cleanup_vm: bool = True,
                vm_volume_mounts: dict[str, str] | None = None, output_project_id: str | None = "") -> int:
        """A job as bespin-api's JobFactory creates it (its stage group and output project with it);
        `cloud_settings` replaces fields of its job_runtime_openstack.cloud_settings; `share_group` is the
        id of a share group (`add_share_group`; 1 is made with the service). `output_project_id`: its output
        project's `project_id` (JobFactory leaves it '' for lando to fill in; an admin may set it); None: a job
        without an output project, whose record then has no `output_project` key (DRF skips a read-only nested
        field that is not required when the related object is missing)."""
        with self.lock:
            job_id = next(self._ids)
            group_id = job_id
            self.stage_groups[group_id] = {"id": group_id, "user": 1, "dds_files": [], "url_files": [
                {"id": i + 1, "stage_group": group_id, "url": f["url"], "destination_path": f["destination_path"],
                 "size": f.get("size", 0), "sequence_group": 1, "sequence": i}
                for i, f in enumerate(url_files or [])]}
            doc_id = None
            if methods_document is not None:
                doc_id = job_id
                self.methods_documents[doc_id] = {"id": doc_id, "workflow_version": job_id,
                                                  "content": methods_document}
            self.jobs[job_id] = {
                "id": job_id,
                "workflow_version": {
                    "id": job_id, "workflow": 1, "name": "test workflow", "description": "a test workflow",
                    "type": workflow_type, "workflow_path": workflow_path, "created": _now(), "url": workflow_url,
                    "version": 1, "version_info_url": "", "methods_document": doc_id, "fields": [],
                    "tag": "test-workflow/1", "enable_ui": False, "tool_details": None},
                "user": {"id": 1, "username": username, "first_name": "Bespin", "last_name": "User",
                         "email": f"{username}@example.org"},
                "name": name, "created": _now(), "state": state, "step": "", "last_updated": _now(),
                "job_settings": {
                    "id": 1, "name": "default_settings",
                    "job_runtime_openstack": {
                        "image_name": image,
                        # JSONStrField: the model keeps a JSON string, the API shows the list
                        "cwl_base_command": cwl_base_command or ["cwltool"],
                        "cwl_post_process_command": cwl_post_process_command or [],
                        "cwl_pre_process_command": cwl_pre_process_command or [],
                        "cloud_settings": {"id": 1, "name": "default_settings",
                                           "vm_project": {"id": 1, "name": "bespin"}, "ssh_key_name": "bespin-key",
                                           "network_name": "selfservice",
                                           "allocate_floating_ips": False, "floating_ip_pool_name": "",
                                           **(cloud_settings or {})}},
                    "job_runtime_k8s": None, "lando_connection": 1},
                "job_flavor": {"id": 1, "name": flavor, "cpus": 1, "memory": "1Gi"},
                "vm_instance_name": "", "vm_volume_name": "",
                "vm_volume_mounts": json.dumps(vm_volume_mounts or {"/dev/vdb1": "/work"}),
                "job_order": json.dumps(job_order),
                # JobDDSOutputProjectSerializer; dds_user_credentials: the id of JobFactory's worker credentials
                **({} if output_project_id is None else {"output_project": {
                    "id": job_id, "job": job_id, "project_id": output_project_id, "dds_user_credentials": 1}}),
                "stage_group": group_id, "volume_size": volume_size, "share_group": share_group,
                "cleanup_vm": cleanup_vm,
                "fund_code": "",
            }
            self._activity(job_id)
            return job_id

    def job(self, job_id: int) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.jobs[job_id])

    def errors_of(self, job_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self.job_errors if e["job"] == job_id]

    def puts_of(self, job_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(body) for jid, body in self.puts if jid == job_id]

    def activity_of(self, job_id: int) -> list[tuple[str, str]]:
        with self.lock:
            return [(a["state"], a["step"]) for a in self.activities if a["job"] == job_id]

    def _activity(self, job_id: int) -> None:
        """data/models.py Job.save: a JobActivity when the state or step differs from the latest one."""
        job = self.jobs[job_id]
        mine = [a for a in self.activities if a["job"] == job_id]
        if not mine or (mine[-1]["state"], mine[-1]["step"]) != (job["state"], job["step"]):
            self.activities.append({"job": job_id, "state": job["state"], "step": job["step"], "created": _now()})

    # -- what bespin-api's LandoJob does (data/lando.py) -----------------------------------------------
    def start_job(self, job_id: int, fmt: str = "pickle") -> None:
        with self.lock:
            job = self.jobs[job_id]
            if job["state"] != "A":
                raise ValueError(f"Job is not at AUTHORIZED state. Current state: {job['state']}.")
            job["state"] = "S"
            self._activity(job_id)
        self.publish("start_job", job_id, fmt)

    def cancel_job(self, job_id: int, fmt: str = "pickle") -> None:
        with self.lock:
            self.jobs[job_id]["state"] = "c"
            self._activity(job_id)
        self.publish("cancel_job", job_id, fmt)

    def restart_job(self, job_id: int, fmt: str = "pickle") -> None:
        with self.lock:
            job = self.jobs[job_id]
            if job["state"] not in ("E", "C"):
                raise ValueError(f"Job is not at ERROR or CANCEL state. Current state: {job['state']}.")
            job["state"] = "r"
            self._activity(job_id)
        self.publish("restart_job", job_id, fmt)

    def publish(self, command: str, job_id: int, fmt: str = "pickle") -> None:
        """lando-messaging's LandoClient: a durable message on the lando queue, the pickled WorkRequest."""
        import pika

        if fmt == "pickle":  # bespin's views hand LandoJob the URL's primary key: a string
            body = lando_work_request(command, str(job_id))
        else:
            body = json.dumps({"command": command, "payload": {"job_id": job_id}, "version": "1"}).encode()
        r = self.rabbit
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            r["host"], r["port"], "/", pika.PlainCredentials(r["username"], r["password"])))
        try:
            channel = connection.channel()
            channel.queue_declare(self.queue, durable=True)
            channel.basic_publish("", self.queue, body, pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()
        with self.lock:
            self.published.append((command, job_id))


# -- lando-messaging's WorkRequest, pickled as lando-messaging pickles it -------------------------------

class WorkRequest:
    def __init__(self, command: str, payload: Any):
        self.command = command
        self.payload = payload


class _JobPayload:
    def __init__(self, job_id: int | str):
        self.job_id = job_id


class StartJobPayload(_JobPayload):
    pass


class CancelJobPayload(_JobPayload):
    pass


class RestartJobPayload(_JobPayload):
    pass


_PAYLOADS = {"start_job": StartJobPayload, "cancel_job": CancelJobPayload, "restart_job": RestartJobPayload}
_pickle_lock = threading.Lock()


def lando_work_request(command: str, job_id: int | str) -> bytes:
    """`pickle.dumps(WorkRequest(command, <Command>JobPayload(job_id)))` with the classes living where
    lando-messaging keeps them (lando_messaging.workqueue, lando_messaging.messaging)."""
    with _pickle_lock:
        saved = {name: sys.modules.get(name) for name in ("lando_messaging", "lando_messaging.workqueue",
                                                          "lando_messaging.messaging")}
        workqueue = types.ModuleType("lando_messaging.workqueue")
        messaging = types.ModuleType("lando_messaging.messaging")
        payload_cls = _PAYLOADS[command]
        classes = [(WorkRequest, workqueue), (payload_cls, messaging)]
        old = [(cls, cls.__module__, cls.__qualname__) for cls, _ in classes]
        try:
            for cls, module in classes:
                cls.__module__ = module.__name__
                setattr(module, cls.__name__, cls)
            sys.modules["lando_messaging"] = types.ModuleType("lando_messaging")
            sys.modules["lando_messaging.workqueue"] = workqueue
            sys.modules["lando_messaging.messaging"] = messaging
            return pickle.dumps(WorkRequest(command, payload_cls(job_id)))
        finally:
            for cls, module_name, qualname in old:
                cls.__module__, cls.__qualname__ = module_name, qualname
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


# -- HTTP --------------------------------------------------------------------------------------------------

_JOB = re.compile(rf"^{PREFIX}/admin/jobs/(\d+)/?$")
_JOBS = re.compile(rf"^{PREFIX}/admin/jobs/?$")
_ERRORS = re.compile(rf"^{PREFIX}/admin/job-errors/?$")
_STAGE_GROUP = re.compile(rf"^{PREFIX}/admin/job-file-stage-groups/(\d+)/?$")
_METHODS = re.compile(rf"^{PREFIX}/admin/workflow-methods-documents/(\d+)/?$")
_SHARE_GROUP = re.compile(rf"^{PREFIX}/admin/share-groups/(\d+)/?$")
_SHARE_GROUPS = re.compile(rf"^{PREFIX}/admin/share-groups/?$")
_TEST_JOBS = re.compile(r"^/_test/jobs/?$")
_TEST_SHARE_GROUPS = re.compile(r"^/_test/share-groups/?$")
_TEST_COMMAND = re.compile(r"^/_test/jobs/(\d+)/(start|cancel|restart)/?$")
_TEST_JOB = re.compile(r"^/_test/jobs/(\d+)/?$")
#: AdminJobSerializer's writable fields (read_only: share_group, job_settings, user, output_project, job_flavor)
_WRITABLE = ("name", "state", "step", "vm_instance_name", "vm_volume_name", "vm_volume_mounts", "job_order",
             "volume_size", "cleanup_vm", "fund_code")


class _Handler(BaseHTTPRequestHandler):
    service: BespinApiService
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        s = self.service
        split = urllib.parse.urlsplit(self.path)
        path, query = split.path, urllib.parse.parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if s.refusing:  # a connection kept alive from before the stop: it dies unanswered
            self.close_connection = True
            return
        with s.lock:
            s.requests.append(f"{method} {path}")
        if s.down:
            return self._send(503, {"detail": "Service Unavailable"})
        auth = self.headers.get("Authorization", "")
        if not auth:
            return self._send(401, {"detail": "Authentication credentials were not provided."})
        if auth != f"Token {s.token}":
            return self._send(401, {"detail": "Invalid token."})
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send(400, {"detail": "JSON parse error"})
        with s.lock:
            status, answer = self._route(method, path, query, body)
        self._send(status, answer)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        s = self.service
        not_found = (404, {"detail": "Not found."})
        if m := _JOB.match(path):
            job = s.jobs.get(int(m.group(1)))
            if job is None:
                return not_found
            if method == "GET":
                return 200, job
            if method == "PUT":
                return self._put_job(job, body)
        elif _JOBS.match(path) and method == "GET":
            name = (query.get("vm_instance_name") or [None])[0]
            return 200, [j for j in s.jobs.values() if name is None or j["vm_instance_name"] == name]
        elif _ERRORS.match(path) and method == "POST":
            return self._post_error(body)
        elif (m := _STAGE_GROUP.match(path)) and method == "GET":
            group = s.stage_groups.get(int(m.group(1)))
            return (200, group) if group else not_found
        elif (m := _METHODS.match(path)) and method == "GET":
            doc = s.methods_documents.get(int(m.group(1)))
            return (200, doc) if doc else not_found
        elif (m := _SHARE_GROUP.match(path)) and method == "GET":
            group = s.share_groups.get(int(m.group(1)))
            return (200, group) if group else not_found
        elif _SHARE_GROUPS.match(path) and method == "GET":
            return 200, list(s.share_groups.values())
        elif _TEST_SHARE_GROUPS.match(path) and method == "POST":  # {name, email, users: [[name, dds_id]]}
            group_id = s.add_share_group(body["name"], [tuple(u) for u in body.get("users") or []],
                                         body.get("email", ""))
            return 201, s.share_groups[group_id]
        elif _TEST_JOBS.match(path) and method == "POST":
            job_id = s.add_job(body.pop("workflow_url"), body.pop("job_order", {}), **body)
            return 201, s.jobs[job_id]
        elif (m := _TEST_JOB.match(path)) and method == "GET":
            job_id = int(m.group(1))
            if job_id not in s.jobs:
                return not_found
            return 200, {"job": s.jobs[job_id], "puts": s.puts_of(job_id), "job_errors": s.errors_of(job_id),
                         "activity": s.activity_of(job_id)}
        elif (m := _TEST_COMMAND.match(path)) and method == "POST":
            job_id = int(m.group(1))
            if job_id not in s.jobs:
                return not_found
            try:
                getattr(s, f"{m.group(2)}_job")(job_id)
            except ValueError as e:
                return 400, [str(e)]
            return 200, s.jobs[job_id]
        else:
            return not_found
        return 405, {"detail": f'Method "{method}" not allowed.'}

    def _put_job(self, job: dict[str, Any], body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}
        errors: dict[str, list[str]] = {}
        if "state" in body and body["state"] not in STATES:
            errors["state"] = [f'"{body["state"]}" is not a valid choice.']
        if "step" in body and body["step"] not in ("", *STEPS):
            errors["step"] = [f'"{body["step"]}" is not a valid choice.']
        for key in ("vm_instance_name", "vm_volume_name"):
            if key in body and (not isinstance(body[key], str) or len(body[key]) > 255):
                errors[key] = ["Ensure this field has no more than 255 characters."]
        if errors:
            return 400, errors
        self.service.puts.append((job["id"], dict(body)))
        for key in _WRITABLE:
            if key in body:
                job[key] = body[key]
        job["last_updated"] = _now()
        self.service._activity(job["id"])
        return 200, job

    def _post_error(self, body: Any) -> tuple[int, Any]:
        s = self.service
        errors: dict[str, list[str]] = {}
        for key in ("job", "job_step", "content"):
            if key not in body:
                errors[key] = ["This field is required."]
        if "job" in body and body["job"] not in s.jobs:
            errors["job"] = [f'Invalid pk "{body["job"]}" - object does not exist.']
        if "job_step" in body and body["job_step"] not in STEPS:
            errors["job_step"] = [f'"{body["job_step"]}" is not a valid choice.']
        if "content" in body and not (isinstance(body["content"], str) and body["content"].strip()):
            errors["content"] = ["This field may not be blank."]
        if errors:
            return 400, errors
        error = {"id": next(s._error_ids), "job": body["job"], "job_step": body["job_step"],
                 "content": body["content"], "created": _now()}
        s.job_errors.append(error)
        return 201, error

    def _send(self, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Token")
        self.end_headers()
        self.wfile.write(data)
