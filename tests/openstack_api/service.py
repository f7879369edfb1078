"""A local HTTP service answering the OpenStack REST APIs the way openstacksdk expects.

Paths (devstack's layout, all on one port): `/identity` (Keystone v3), `/compute` (Nova
v2.1 with microversions), `/image` (Glance v2), `/networking` (Neutron v2.0), `/volume`
(Cinder v3). The token's catalog is built from the request's Host header, so the service
works on any port. `/_fake/settings` (GET, PATCH) and `/_fake/inventory` (GET) let a
test or a developer change the fault knobs and see what exists.

Projects: the user may scope a token to `project` or any of `other_projects` (Keystone
answers 401 for any other, as it does for a project that does not exist or one the user
has no role in); an application credential's token is always scoped to `project`. Every
server, volume, port and floating IP belongs to the project of the token that made it, and
is seen, changed and counted against quota only with a token scoped to that project (another
project's resource answers 404, as for a non-admin). `project_quotas` overrides the quota
settings per project; `inventory(project)` and `created` say what exists or was made where.

State lives in memory behind one lock; status transitions (BUILD → ACTIVE/ERROR, volume
creating → available, deletes) are evaluated lazily from timestamps whenever a resource
is read, so the service needs no background thread besides the HTTP server's.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .backends import MemoryBackend, ServerBackend, new_host_key, with_public_keys

MAX_COMPUTE_MICROVERSION = "2.96"
MAX_VOLUME_MICROVERSION = "3.70"
DROP = -1  # a Reply status meaning: close the connection without answering


def _default_flavors() -> list[dict[str, Any]]:
    return [
        {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
        {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
        {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
        {"id": "4", "name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80},
    ]


@dataclass
class Settings:
    """The cloud's contents and its fault knobs. Change them at any time (they are read per request)."""

    users: dict[str, str] = field(default_factory=lambda: {"lando": "secret"})  # user name -> password
    project: str = "lando"  # the users' default project, and the application credentials' project
    other_projects: list[str] = field(default_factory=lambda: ["lando-lab"])  # the users have roles here too
    app_credentials: dict[str, str] = field(default_factory=lambda: {"lando-app-cred": "app-secret"})
    region: str = "RegionOne"
    flavors: list[dict[str, Any]] = field(default_factory=_default_flavors)
    images: list[str] = field(default_factory=lambda: ["debian-12", "ubuntu-22.04"])
    # image name -> its custom properties ({"os_admin_user": "debian"}): Glance shows them as top-level string
    # fields of the image, beside its core fields (which no property may replace)
    image_properties: dict[str, dict[str, str]] = field(default_factory=dict)
    networks: list[str] = field(default_factory=lambda: ["private"])
    external_networks: list[str] = field(default_factory=lambda: ["public"])
    security_groups: list[str] = field(default_factory=lambda: ["default", "ssh"])
    availability_zones: list[str] = field(default_factory=lambda: ["nova"])
    # the user's Nova keypairs: name -> public key ("ssh-ed25519 AAAA... comment"); a server's key_name names one
    keypairs: dict[str, str] = field(default_factory=dict)
    compute_microversion: str = MAX_COMPUTE_MICROVERSION  # the highest compute microversion offered
    # quotas; -1 = unlimited
    max_instances: int = 10
    max_cores: int = 20
    max_ram_mb: int = 51200
    max_volumes: int = 10
    max_gigabytes: int = 1000
    max_ports: int = 50
    max_floating_ips: int = 10
    project_quotas: dict[str, dict[str, int]] = field(default_factory=dict)  # project -> {"max_instances": 0, ...}
    # timing
    boot_delay: float = 0.2  # BUILD → ACTIVE
    volume_delay: float = 0.05  # creating → available
    delete_delay: float = 0.05  # deleted resources linger this long (servers: status ACTIVE, task deleting)
    # faults
    server_error_rate: float = 0.0  # fraction of servers that go to ERROR instead of ACTIVE
    server_fault: str = "No valid host was found. There are not enough hosts available."
    create_failure_rate: float = 0.0  # fraction of creates (server, volume, port, floating IP) answered 500
    delete_failure_rate: float = 0.0  # fraction of deletes answered 500 without deleting
    lost_answer_rate: float = 0.0  # fraction of creates that create, then answer 502 anyway
    flaky_rate: float = 0.0  # fraction of API requests (not version documents) answered 503
    reset_rate: float = 0.0  # fraction of API requests (not version documents) dropped unanswered
    wrong_host_key: bool = False  # console logs show a host key the machine does not have
    seed: int | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_id() -> str:
    return str(uuid.uuid4())


class ApiError(Exception):
    """An error answer: status, and the body the real service would send."""

    def __init__(self, status: int, body: dict[str, Any] | str):
        super().__init__(status)
        self.status = status
        self.body = body


def nova_error(status: int, message: str) -> ApiError:
    kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
            413: "overLimit"}.get(status, "computeFault")
    return ApiError(status, {kind: {"code": status, "message": message}})


cinder_error = nova_error  # Cinder uses the same fault wrapping


def neutron_error(status: int, kind: str, message: str) -> ApiError:
    return ApiError(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def _check_quota(used: int, requested: int, limit: int) -> bool:
    return limit < 0 or used + requested <= limit


class Cloud:
    """The state of the fake cloud. Every public method takes the lock."""

    def __init__(self, settings: Settings, backend: ServerBackend):
        self.settings = settings
        self.backend = backend
        self.lock = threading.RLock()
        self.random = random.Random(settings.seed)
        self.project_id = project_id(settings.project)
        self.user_id = uuid.uuid5(uuid.NAMESPACE_DNS, "user").hex
        self.tokens: dict[str, tuple[float, str]] = {}  # token -> (expires, project name)
        self.created: list[dict[str, str]] = []  # every resource made: kind, id, name, project
        self.servers: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.floating_ips: dict[str, dict[str, Any]] = {}
        self.image_ids = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, "image-" + name)) for name in settings.images}
        self.network_ids: dict[str, str] = {}
        self.sg_ids: dict[str, str] = {}
        self._ip_counter = 10

    # ---- identity ----
    def issue_token(self, body: dict[str, Any]) -> tuple[str, str, str]:
        """A token for valid credentials (returns token, method, project name), else ApiError 401."""
        identity = (body.get("auth") or {}).get("identity") or {}
        methods = identity.get("methods") or []
        s = self.settings
        if "password" in methods:
            user = (identity.get("password") or {}).get("user") or {}
            name, password = user.get("name"), user.get("password")
            if name is None or s.users.get(name) != password:
                raise _unauthorized()
            scope = ((body.get("auth") or {}).get("scope") or {}).get("project") or {}
            project = next((p for p in [s.project, *s.other_projects]
                            if scope.get("name", p) == p and scope.get("id", project_id(p)) == project_id(p)), None)
            if project is None:
                raise _unauthorized()  # Keystone's answer for a project that does not exist or has no role
            method = "password"
        elif "application_credential" in methods:
            cred = identity.get("application_credential") or {}
            if s.app_credentials.get(cred.get("id", "")) != cred.get("secret"):
                raise _unauthorized()
            project = s.project  # an application credential is bound to the project it was made in
            method = "application_credential"
        else:
            raise ApiError(400, {"error": {"code": 400, "title": "Bad Request",
                                           "message": "Expecting to find identity methods in auth."}})
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens[token] = (time.time() + 3600, project)
        return token, method, project

    def token_project(self, token: str | None) -> str | None:
        """The project a valid token is scoped to; None for a missing, unknown or expired token."""
        with self.lock:
            expires, project = self.tokens.get(token or "", (0.0, ""))
            return project if expires > time.time() else None

    def limit(self, project: str, key: str) -> int:
        """A quota setting (`max_instances`, ...) for one project."""
        return int(self.settings.project_quotas.get(project, {}).get(key, getattr(self.settings, key)))

    def made(self, kind: str, item: dict[str, Any]) -> None:
        self.created.append({"kind": kind, "id": item["id"], "name": item.get("name") or "",
                             "project": item["_project"]})

    # ---- helpers ----
    def roll(self, rate: float) -> bool:
        with self.lock:
            return rate > 0 and self.random.random() < rate

    def flavor(self, ref: str) -> dict[str, Any] | None:
        return next((f for f in self.settings.flavors if f["id"] == ref), None)

    def network_id(self, name: str) -> str:
        return self.network_ids.setdefault(name, str(uuid.uuid5(uuid.NAMESPACE_DNS, "net-" + name)))

    def sg_id(self, name: str) -> str:
        return self.sg_ids.setdefault(name, str(uuid.uuid5(uuid.NAMESPACE_DNS, "sg-" + name)))

    def networks(self) -> list[dict[str, Any]]:
        s = self.settings
        return [self._network(n, False) for n in s.networks] + [self._network(n, True) for n in s.external_networks]

    def _network(self, name: str, external: bool) -> dict[str, Any]:
        nid = self.network_id(name)
        return {"id": nid, "name": name, "status": "ACTIVE", "admin_state_up": True, "shared": external,
                "router:external": external, "subnets": [str(uuid.uuid5(uuid.NAMESPACE_DNS, "subnet-" + name))],
                "tenant_id": self.project_id, "project_id": self.project_id, "mtu": 1450, "tags": [],
                "port_security_enabled": True, "availability_zones": ["nova"], "description": "",
                "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "revision_number": 1}

    def next_ip(self, external: bool) -> str:
        if self.backend.fixed_address:
            return self.backend.fixed_address
        self._ip_counter += 1
        n = self._ip_counter
        return f"172.24.{n // 250}.{n % 250 + 2}" if external else f"10.0.{n // 250}.{n % 250 + 2}"

    # ---- lazy status transitions ----
    def refresh(self) -> None:
        """Advance every resource's status to what time and the backend say it is now."""
        now = time.monotonic()
        for sid in list(self.servers):
            self._refresh_server(sid, now)
        for vid in list(self.volumes):
            v = self.volumes[vid]
            if v["status"] == "creating" and now >= v["_ready_at"]:
                v["status"] = "available"
            elif v["status"] == "deleting" and now >= v["_gone_at"]:
                del self.volumes[vid]

    def _refresh_server(self, sid: str, now: float) -> None:
        srv = self.servers[sid]
        if srv.get("_gone_at") is not None:
            if now >= srv["_gone_at"]:
                self._remove_server(sid)
            return
        if srv["status"] == "BUILD":
            if srv["_error"]:
                if now >= srv["_ready_at"]:
                    srv["status"] = "ERROR"
                    srv["fault"] = {"code": 500, "created": _now(), "message": self.settings.server_fault,
                                    "details": "Traceback (most recent call last): ... NoValidHost"}
                return
            state = self.backend.state(sid)
            if state.status != "BUILD":
                srv["status"] = state.status
                srv["_backend_metadata"] = state.metadata
                if state.status == "ERROR":
                    srv["fault"] = {"code": 500, "created": _now(), "message": state.fault or "unknown error"}

    def _remove_server(self, sid: str) -> None:
        self.servers.pop(sid)
        for v in self.volumes.values():
            if any(a["server_id"] == sid for a in v["attachments"]):
                v["attachments"] = [a for a in v["attachments"] if a["server_id"] != sid]
                if not v["attachments"] and v["status"] == "in-use":
                    v["status"] = "available"
        for pid in list(self.ports):
            port = self.ports[pid]
            if port["device_id"] == sid:
                if port.get("_nova_created"):
                    self._delete_port(pid)
                else:
                    port.update(device_id="", device_owner="", status="DOWN")

    def _delete_port(self, pid: str) -> None:
        self.ports.pop(pid)
        for fip in self.floating_ips.values():
            if fip["port_id"] == pid:
                fip.update(port_id=None, fixed_ip_address=None, status="DOWN")

    def inventory(self, project: str | None = None) -> dict[str, list[str]]:
        """What exists (in one project, or in all)."""
        def ids(items: dict[str, dict[str, Any]]) -> list[str]:
            return sorted(i for i, v in items.items()
                          if project in (None, v["_project"]) and not v.get("_nova_created"))

        with self.lock:
            self.refresh()
            return {"servers": ids(self.servers), "volumes": ids(self.volumes), "ports": ids(self.ports),
                    "floating_ips": ids(self.floating_ips)}


def project_id(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, name).hex


def _in(items: dict[str, dict[str, Any]], project: str) -> list[dict[str, Any]]:
    """The resources of one project."""
    return [v for v in items.values() if v["_project"] == project]


def _unauthorized() -> ApiError:
    return ApiError(401, {"error": {"code": 401, "title": "Unauthorized",
                                    "message": "The request you have made requires authentication."}})


Route = tuple[str, str, Callable[..., Any]]


class Request:
    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any, base: str):
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self.body, self.base = body, base
        self.project = ""  # the project of the request's token (set once the token is checked)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class Reply:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _microversion(req: Request, service: str, default: str, maximum: str) -> str:
    header = req.headers.get("OpenStack-API-Version") or ""
    for part in header.split(","):
        words = part.split()
        if len(words) == 2 and words[0] == service:
            asked = words[1]
            if asked == "latest":
                return maximum
            if _mv(asked) > _mv(maximum):
                raise ApiError(406, {"computeFault": {
                    "code": 406, "message": f"Version {asked} is not supported by the API. Minimum is 2.1 and "
                                            f"maximum is {maximum}."}})
            return asked
    legacy = req.headers.get("X-OpenStack-Nova-API-Version")
    return legacy if legacy and service == "compute" else default


def _mv(v: str) -> tuple[int, int]:
    major, minor = v.split(".")
    return int(major), int(minor)


class Api:
    """The routes of the five services over one `Cloud`."""

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        c = r"/compute/v2\.1"
        n = r"/networking/v2\.0"
        v = r"/volume/v3/(?P<project>[0-9a-f]+)"
        self.routes: list[Route] = [
            ("GET", r"/identity/?", self.identity_versions),
            ("GET", r"/identity/v3/?", self.identity_v3),
            ("POST", r"/identity/v3/auth/tokens", self.tokens),
            ("GET", r"/compute/?", self.compute_versions),
            ("GET", c + r"/?", self.compute_v21),
            ("GET", c + r"/flavors(?:/detail)?", self.list_flavors),
            ("GET", c + r"/flavors/(?P<fid>[^/]+)", self.get_flavor),
            ("GET", c + r"/flavors/(?P<fid>[^/]+)/os-extra_specs", self.flavor_extra_specs),
            ("GET", c + r"/limits", self.compute_limits),
            ("GET", c + r"/os-availability-zone", self.availability_zones),
            ("GET", c + r"/os-keypairs", self.list_keypairs),
            ("GET", c + r"/os-keypairs/(?P<name>[^/]+)", self.get_keypair),
            ("POST", c + r"/servers", self.create_server),
            ("GET", c + r"/servers(?:/detail)?", self.list_servers),
            ("GET", c + r"/servers/(?P<sid>[^/]+)", self.get_server),
            ("DELETE", c + r"/servers/(?P<sid>[^/]+)", self.delete_server),
            ("POST", c + r"/servers/(?P<sid>[^/]+)/action", self.server_action),
            ("GET", c + r"/servers/(?P<sid>[^/]+)/os-volume_attachments", self.volume_attachments),
            ("GET", c + r"/servers/(?P<sid>[^/]+)/os-interface", self.server_interfaces),
            ("GET", c + r"/servers/(?P<sid>[^/]+)/metadata", self.server_metadata),
            ("GET", r"/image/?", self.image_versions),
            ("GET", r"/image/v2/?", self.image_versions),
            ("GET", r"/image/v2/images", self.list_images),
            ("GET", r"/image/v2/images/(?P<iid>[^/]+)", self.get_image),
            ("GET", r"/networking/?", self.network_versions),
            ("GET", n + r"/?", self.network_v20),
            ("GET", n + r"/networks", self.list_networks),
            ("GET", n + r"/networks/(?P<nid>[^/]+)", self.get_network),
            ("GET", n + r"/security-groups", self.list_security_groups),
            ("GET", n + r"/ports", self.list_ports),
            ("POST", n + r"/ports", self.create_port),
            ("GET", n + r"/ports/(?P<pid>[^/]+)", self.get_port),
            ("PUT", n + r"/ports/(?P<pid>[^/]+)", self.update_port),
            ("DELETE", n + r"/ports/(?P<pid>[^/]+)", self.delete_port),
            ("PUT", n + r"/(?P<coll>ports|floatingips)/(?P<rid>[^/]+)/tags", self.set_tags),
            ("GET", n + r"/floatingips", self.list_floating_ips),
            ("POST", n + r"/floatingips", self.create_floating_ip),
            ("GET", n + r"/floatingips/(?P<fid>[^/]+)", self.get_floating_ip),
            ("PUT", n + r"/floatingips/(?P<fid>[^/]+)", self.update_floating_ip),
            ("DELETE", n + r"/floatingips/(?P<fid>[^/]+)", self.delete_floating_ip),
            ("GET", r"/volume/?", self.volume_versions),
            ("GET", r"/volume/v3/?", self.volume_versions),
            ("GET", v + r"/?", self.volume_versions),
            ("POST", v + r"/volumes", self.create_volume),
            ("GET", v + r"/volumes(?:/detail)?", self.list_volumes),
            ("GET", v + r"/volumes/(?P<vid>[^/]+)", self.get_volume),
            ("DELETE", v + r"/volumes/(?P<vid>[^/]+)", self.delete_volume),
            ("POST", v + r"/volumes/(?P<vid>[^/]+)/metadata", self.update_volume_metadata),
            ("GET", v + r"/limits", self.volume_limits),
            ("GET", r"/_fake/settings", self.get_settings),
            ("PATCH", r"/_fake/settings", self.patch_settings),
            ("GET", r"/_fake/inventory", self.get_inventory),
        ]
        self._compiled = [(m, re.compile(p + "$"), f) for m, p, f in self.routes]

    # ---- dispatch ----
    def handle(self, req: Request) -> Reply:
        matches = [(m, rx.match(req.path), f) for m, rx, f in self._compiled]
        found = [(m, mt, f) for m, mt, f in matches if mt]
        if not found:
            return Reply(404, {"error": {"code": 404, "message": f"no such resource: {req.path}"}})
        for method, match, func in found:
            if method == req.method:
                break
        else:
            return Reply(405, {"error": {"code": 405, "message": f"{req.method} not allowed on {req.path}"}})
        creates = (self.create_server, self.create_volume, self.create_port, self.create_floating_ip)
        needs_token = not (req.path.startswith("/_fake") or func in (
            self.identity_versions, self.identity_v3, self.tokens, self.compute_versions, self.compute_v21,
            self.image_versions, self.network_versions, self.network_v20, self.volume_versions))
        if needs_token:
            project = self.cloud.token_project(req.headers.get("X-Auth-Token"))
            if project is None:
                return Reply(401, _unauthorized().body)
            req.project = project
            s = self.cloud.settings
            if self.cloud.roll(s.reset_rate):
                return Reply(DROP)
            if self.cloud.roll(s.flaky_rate):
                return Reply(503, "<html><body><h1>503 Service Unavailable</h1>"
                                  "No server is available to handle this request.</body></html>")
            if func in creates and self.cloud.roll(s.create_failure_rate):
                return Reply(500, {"computeFault": {"code": 500, "message": "Unexpected API Error. Please report "
                                                    "this at http://bugs.launchpad.net/nova/ (injected fault)"}})
            if req.method == "DELETE" and self.cloud.roll(s.delete_failure_rate):
                return Reply(500, {"computeFault": {"code": 500, "message": "Unexpected API Error (injected fault)"}})
        try:
            reply = func(req, **match.groupdict())
        except ApiError as e:
            reply = Reply(e.status, e.body)
        if func in creates and reply.status < 300 and self.cloud.roll(self.cloud.settings.lost_answer_rate):
            reply = Reply(502, "<html><body><h1>502 Bad Gateway</h1>The proxy lost the answer.</body></html>")
        if req.path.startswith("/compute/v2.1/") and needs_token:
            mv = _microversion(req, "compute", "2.1", self.cloud.settings.compute_microversion)
            reply.headers.update({"OpenStack-API-Version": f"compute {mv}", "X-OpenStack-Nova-API-Version": mv,
                                  "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"})
        return reply

    # ---- version documents ----
    def identity_versions(self, req: Request) -> Reply:
        return Reply(300, {"versions": {"values": [self._identity_version(req)]}})

    def identity_v3(self, req: Request) -> Reply:
        return Reply(200, {"version": self._identity_version(req)})

    def _identity_version(self, req: Request) -> dict[str, Any]:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{req.base}/identity/v3/"}],
                "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}

    def compute_versions(self, req: Request) -> Reply:
        return Reply(200, {"versions": [self._compute_version(req)]})

    def compute_v21(self, req: Request) -> Reply:
        return Reply(200, {"version": self._compute_version(req)})

    def _compute_version(self, req: Request) -> dict[str, Any]:
        return {"id": "v2.1", "status": "CURRENT", "version": self.cloud.settings.compute_microversion,
                "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": f"{req.base}/compute/v2.1/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.compute+json;version=2.1"}]}

    def image_versions(self, req: Request) -> Reply:
        return Reply(300, {"versions": [{"id": "v2.16", "status": "CURRENT",
                                         "links": [{"rel": "self", "href": f"{req.base}/image/v2/"}]}]})

    def network_versions(self, req: Request) -> Reply:
        return Reply(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                         "links": [{"rel": "self", "href": f"{req.base}/networking/v2.0/"}]}]})

    def network_v20(self, req: Request) -> Reply:
        return Reply(200, {"resources": [{"name": n, "collection": n, "links": []}
                                         for n in ("network", "port", "floatingip", "security_group")]})

    def volume_versions(self, req: Request, project: str | None = None) -> Reply:
        return Reply(300, {"versions": [{
            "id": "v3.0", "status": "CURRENT", "version": MAX_VOLUME_MICROVERSION, "min_version": "3.0",
            "updated": "2023-08-31T00:00:00Z", "links": [{"rel": "self", "href": f"{req.base}/volume/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.volume+json;version=3"}]}]})

    # ---- identity ----
    def tokens(self, req: Request) -> Reply:
        token, method, project = self.cloud.issue_token(req.body or {})
        c = self.cloud
        s = c.settings
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")

        def service(kind: str, name: str, path: str) -> dict[str, Any]:
            return {"type": kind, "name": name, "id": uuid.uuid5(uuid.NAMESPACE_DNS, kind).hex,
                    "endpoints": [{"id": uuid.uuid5(uuid.NAMESPACE_DNS, kind + i).hex, "interface": i,
                                   "region": s.region, "region_id": s.region, "url": req.base + path}
                                  for i in ("public", "internal")]}

        domain = {"id": "default", "name": "Default"}
        body = {"token": {
            "methods": [method], "expires_at": expires, "issued_at": _now(), "audit_ids": [uuid.uuid4().hex[:22]],
            "user": {"id": c.user_id, "name": next(iter(s.users), "lando"), "domain": domain,
                     "password_expires_at": None},
            "project": {"id": project_id(project), "name": project, "domain": domain},
            "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_DNS, "member").hex, "name": "member"}],
            "is_domain": False,
            "catalog": [
                service("identity", "keystone", "/identity"),
                service("compute", "nova", "/compute/v2.1"),
                service("image", "glance", "/image"),
                service("network", "neutron", "/networking"),
                service("block-storage", "cinder", f"/volume/v3/{project_id(project)}"),
                service("volumev3", "cinderv3", f"/volume/v3/{project_id(project)}"),
            ]}}
        if method == "application_credential":
            body["token"]["application_credential"] = {"id": "app", "name": "app", "restricted": True}
        return Reply(201, body, {"X-Subject-Token": token})

    # ---- compute ----
    def _flavor_view(self, req: Request, f: dict[str, Any]) -> dict[str, Any]:
        return {"id": f["id"], "name": f["name"], "vcpus": f["vcpus"], "ram": f["ram"], "disk": f["disk"],
                "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0, "os-flavor-access:is_public": True,
                "OS-FLV-DISABLED:disabled": False, "description": None, "extra_specs": {},
                "links": [{"rel": "self", "href": f"{req.base}/compute/v2.1/flavors/{f['id']}"}]}

    def list_flavors(self, req: Request) -> Reply:
        return Reply(200, {"flavors": [self._flavor_view(req, f) for f in self.cloud.settings.flavors]})

    def get_flavor(self, req: Request, fid: str) -> Reply:
        f = self.cloud.flavor(fid)
        if f is None:
            raise nova_error(404, f"Flavor {fid} could not be found.")
        return Reply(200, {"flavor": self._flavor_view(req, f)})

    def flavor_extra_specs(self, req: Request, fid: str) -> Reply:
        return Reply(200, {"extra_specs": {}})

    def availability_zones(self, req: Request) -> Reply:
        return Reply(200, {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": True}, "hosts": None}
                                                     for z in self.cloud.settings.availability_zones]})

    def _compute_usage(self, project: str) -> tuple[int, int, int]:
        live = _in(self.cloud.servers, project)
        return len(live), sum(s["_flavor"]["vcpus"] for s in live), sum(s["_flavor"]["ram"] for s in live)

    def _keypair_view(self, name: str, public_key: str) -> dict[str, Any]:
        import hashlib
        digest = hashlib.md5(public_key.encode(), usedforsecurity=False).hexdigest()  # Nova's is of the key's blob
        return {"name": name, "public_key": public_key, "type": "ssh", "user_id": self.cloud.user_id,
                "fingerprint": ":".join(digest[i:i + 2] for i in range(0, 32, 2))}

    def list_keypairs(self, req: Request) -> Reply:
        pairs = sorted(self.cloud.settings.keypairs.items())
        return Reply(200, {"keypairs": [{"keypair": self._keypair_view(n, k)} for n, k in pairs]})

    def get_keypair(self, req: Request, name: str) -> Reply:
        key = self.cloud.settings.keypairs.get(name)
        if key is None:
            raise nova_error(404, f"Keypair {name} not found for user {self.cloud.user_id}")
        return Reply(200, {"keypair": self._keypair_view(name, key)})

    def compute_limits(self, req: Request) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            instances, cores, ram = self._compute_usage(req.project)
            fips = len(_in(c.floating_ips, req.project))
        old: dict[str, int] = {}
        if _mv(self._mv(req)) < (2, 57):  # network and file-injection limits left Nova's answer in 2.36 / 2.57
            old = {"maxImageMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240}
            if _mv(self._mv(req)) < (2, 36):
                old.update({"maxTotalFloatingIps": c.limit(req.project, "max_floating_ips"),
                            "totalFloatingIpsUsed": fips,
                            "maxSecurityGroups": 10, "totalSecurityGroupsUsed": 1, "maxSecurityGroupRules": 20})
        return Reply(200, {"limits": {"rate": [], "absolute": {
            "maxTotalInstances": c.limit(req.project, "max_instances"), "totalInstancesUsed": instances,
            "maxTotalCores": c.limit(req.project, "max_cores"), "totalCoresUsed": cores,
            "maxTotalRAMSize": c.limit(req.project, "max_ram_mb"), "totalRAMUsed": ram,
            "maxServerMeta": 128, "maxTotalKeypairs": 100, "maxServerGroups": 10, "maxServerGroupMembers": 10,
            "totalServerGroupsUsed": 0, **old}}})

    def create_server(self, req: Request) -> Reply:
        c = self.cloud
        s = c.settings
        body = (req.body or {}).get("server")
        if not isinstance(body, dict) or not body.get("name"):
            raise nova_error(400, "Invalid input for field/attribute server. 'name' is a required property")
        flavor = c.flavor(str(body.get("flavorRef", "")).rsplit("/", 1)[-1])
        if flavor is None:
            raise nova_error(400, f"Flavor {body.get('flavorRef')} could not be found.")
        image_ref = str(body.get("imageRef", "")).rsplit("/", 1)[-1]
        if image_ref not in c.image_ids.values():
            raise nova_error(400, "Can not find requested image")
        az = body.get("availability_zone")
        if az is not None and az not in s.availability_zones:
            raise nova_error(400, "The requested availability zone is not available")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or any(len(str(k)) > 255 or len(str(v)) > 255 for k, v in metadata.items()):
            raise nova_error(400, "Invalid input for field/attribute metadata.")
        key_name = body.get("key_name")
        if key_name is not None and key_name not in s.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        user_data = body.get("user_data")
        if user_data is not None:
            import binascii
            try:
                user_data = base64.b64decode(user_data, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise nova_error(400, "Invalid input for field/attribute user_data. Value: ... is not a 'base64'")
        sg_names = [g.get("name") for g in body.get("security_groups") or []]
        for name in sg_names:
            if name not in s.security_groups and name not in c.sg_ids.values():
                raise nova_error(400, f"Security group {name} not found for project {project_id(req.project)}.")
        sid = _new_id()
        with c.lock:
            c.refresh()
            instances, cores, ram = self._compute_usage(req.project)
            for res, used, want, limit in (("instances", instances, 1, c.limit(req.project, "max_instances")),
                                           ("cores", cores, flavor["vcpus"], c.limit(req.project, "max_cores")),
                                           ("ram", ram, flavor["ram"], c.limit(req.project, "max_ram_mb"))):
                if not _check_quota(used, want, limit):
                    raise nova_error(403, f"Quota exceeded for {res}: Requested {want}, but already used {used} "
                                          f"of {limit} {res}")
            ports = self._server_ports(body.get("networks"), sid, req.project)
            volumes = self._server_volumes(body.get("block_device_mapping_v2") or [], req.project)
            for pid in ports:
                p = c.ports[pid]
                p.update(device_id=sid, device_owner="compute:" + (az or "nova"), status="ACTIVE")
            for i, (vid, dot) in enumerate(volumes):
                c.volumes[vid]["status"] = "in-use"
                c.volumes[vid]["attachments"] = [{
                    "server_id": sid, "attachment_id": _new_id(), "volume_id": vid, "id": vid,
                    "device": f"/dev/vd{chr(ord('b') + i)}", "host_name": "compute-1", "attached_at": _now()}]
            error = c.roll(s.server_error_rate)
            c.servers[sid] = {
                "id": sid, "name": body["name"], "status": "BUILD", "metadata": {str(k): str(v) for k, v in
                                                                                metadata.items()},
                "created": _now(), "updated": _now(), "_flavor": flavor, "_image": image_ref, "_ports": ports,
                "_volumes": volumes, "_error": error, "_ready_at": time.monotonic() + s.boot_delay,
                "_gone_at": None, "_az": az or "nova", "_sgs": sg_names or ["default"], "fault": None,
                "_backend_metadata": {}, "_host_key": new_host_key(), "_user_data": user_data,
                "tags": list(body.get("tags") or []), "_project": req.project, "key_name": key_name,
            }
            c.made("server", c.servers[sid])
        if not error:
            try:
                # cloud-init gives the login user the keypair's key from the metadata service, beside the user data's
                keys = [s.keypairs[key_name]] if key_name else []
                c.backend.boot(sid, body["name"], flavor, image_ref, with_public_keys(user_data, keys), s.boot_delay)
            except Exception as e:  # the backend could not make the machine: Nova would say ERROR
                with c.lock:
                    c.servers[sid].update(_error=True, _ready_at=0.0)
                    s_fault = f"the backing machine failed to boot: {e}"
                    c.servers[sid]["fault"] = {"code": 500, "created": _now(), "message": s_fault}
                    c.servers[sid]["status"] = "ERROR"
        return Reply(202, {"server": {
            "id": sid, "OS-DCF:diskConfig": "MANUAL", "adminPass": uuid.uuid4().hex[:12],
            "security_groups": [{"name": n} for n in sg_names or ["default"]],
            "links": [{"rel": "self", "href": f"{req.base}/compute/v2.1/servers/{sid}"}]}})

    def _server_ports(self, networks: Any, sid: str, project: str) -> list[str]:
        """The ports a new server plugs into: given ports, or new ones on given networks (Nova-owned)."""
        c = self.cloud
        s = c.settings
        if networks in (None, "auto"):
            if len(s.networks) != 1:
                raise nova_error(409, "Multiple possible networks found, use a Network ID to be more specific.")
            networks = [{"uuid": c.network_id(s.networks[0])}]
        if networks == "none":
            return []
        result = []
        for net in networks:
            if net.get("port"):
                port = c.ports.get(net["port"])
                if port is None or port["_project"] != project:
                    raise nova_error(400, f"Port id {net['port']} could not be found.")
                if port["device_id"]:
                    raise nova_error(409, f"Port {net['port']} is still in use.")
                result.append(port["id"])
            elif net.get("uuid"):
                if net["uuid"] not in [c.network_id(n) for n in s.networks]:
                    raise nova_error(400, f"Network {net['uuid']} could not be found.")
                if not _check_quota(len(_in(c.ports, project)), 1, c.limit(project, "max_ports")):
                    raise nova_error(403, "Maximum number of ports exceeded")
                port = self._new_port(net["uuid"], {"name": "", "_nova": True}, project)
                port["_nova_created"] = True
                result.append(port["id"])
            else:
                raise nova_error(400, "Bad networks format: network uuid is not in proper format")
        return result

    def _server_volumes(self, bdms: list[dict[str, Any]], project: str) -> list[tuple[str, bool]]:
        c = self.cloud
        volumes = []
        for bdm in bdms:
            if bdm.get("source_type") != "volume":
                continue  # the image's own root disk, or a blank/ephemeral disk: nothing to track
            vid = str(bdm.get("uuid"))
            v = c.volumes.get(vid)
            if v is None or v["_project"] != project:
                raise nova_error(400, f"Block Device Mapping is Invalid: failed to get volume {vid}.")
            if v["status"] != "available":
                raise nova_error(400, f"Invalid volume: volume '{vid}' status must be 'available'. "
                                      f"Currently in '{v['status']}'")
            volumes.append((vid, bool(bdm.get("delete_on_termination"))))
        return volumes

    def _server_view(self, req: Request, srv: dict[str, Any], mv: str) -> dict[str, Any]:
        c = self.cloud
        addresses: dict[str, list[dict[str, Any]]] = {}
        for pid in srv["_ports"]:
            port = c.ports.get(pid)
            if port is None:
                continue
            net = next((n["name"] for n in c.networks() if n["id"] == port["network_id"]), "private")
            entries = addresses.setdefault(net, [])
            for ip in port["fixed_ips"]:
                entries.append({"addr": ip["ip_address"], "version": 4, "OS-EXT-IPS:type": "fixed",
                                "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
            for fip in c.floating_ips.values():
                if fip["port_id"] == pid:
                    entries.append({"addr": fip["floating_ip_address"], "version": 4, "OS-EXT-IPS:type": "floating",
                                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        f = srv["_flavor"]
        if _mv(mv) >= (2, 47):
            flavor: dict[str, Any] = {"original_name": f["name"], "vcpus": f["vcpus"], "ram": f["ram"],
                                      "disk": f["disk"], "ephemeral": 0, "swap": 0, "extra_specs": {}}
        else:
            flavor = {"id": f["id"], "links": [{"rel": "bookmark", "href": f"{req.base}/compute/flavors/{f['id']}"}]}
        deleting = srv["_gone_at"] is not None
        status = srv["status"]
        view = {
            "id": srv["id"], "name": srv["name"], "status": status, "tenant_id": project_id(srv["_project"]),
            "user_id": c.user_id, "metadata": {**srv["metadata"], **srv["_backend_metadata"]},
            "hostId": "" if status == "BUILD" else uuid.uuid5(uuid.NAMESPACE_DNS, "host").hex,
            "image": {"id": srv["_image"], "links": []}, "flavor": flavor, "created": srv["created"],
            "updated": srv["updated"], "addresses": addresses, "accessIPv4": "", "accessIPv6": "",
            "links": [{"rel": "self", "href": f"{req.base}/compute/v2.1/servers/{srv['id']}"}],
            "key_name": srv["key_name"], "config_drive": "", "progress": 0, "locked": False, "description": None,
            "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": srv["_az"],
            "OS-EXT-STS:task_state": "deleting" if deleting else ("spawning" if status == "BUILD" else None),
            "OS-EXT-STS:vm_state": {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}.get(status, "active"),
            "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 0,
            "OS-SRV-USG:launched_at": None if status == "BUILD" else srv["created"], "OS-SRV-USG:terminated_at": None,
            "os-extended-volumes:volumes_attached": [{"id": vid, "delete_on_termination": dot}
                                                     for vid, dot in srv["_volumes"]],
            "security_groups": [{"name": n} for n in srv["_sgs"]],
            "tags": srv["tags"], "trusted_image_certificates": None,
        }
        if srv["fault"] and status == "ERROR":
            view["fault"] = srv["fault"]
        return view

    def _mv(self, req: Request) -> str:
        return _microversion(req, "compute", "2.1", self.cloud.settings.compute_microversion)

    def _server(self, req: Request, sid: str) -> dict[str, Any]:
        srv = self.cloud.servers.get(sid)
        if srv is None or srv["_project"] != req.project:
            raise nova_error(404, f"Instance {sid} could not be found.")
        return srv

    def list_servers(self, req: Request) -> Reply:
        c = self.cloud
        mv = self._mv(req)
        name = req.q("name")
        status = req.q("status")
        with c.lock:
            c.refresh()
            views = [self._server_view(req, s, mv) for s in _in(c.servers, req.project)
                     if (name is None or re.search(name, s["name"])) and (status is None or s["status"] == status)]
        if not req.path.endswith("/detail"):
            views = [{"id": v["id"], "name": v["name"], "links": v["links"]} for v in views]
        return Reply(200, {"servers": views})

    def get_server(self, req: Request, sid: str) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            return Reply(200, {"server": self._server_view(req, self._server(req, sid), self._mv(req))})

    def server_metadata(self, req: Request, sid: str) -> Reply:
        with self.cloud.lock:
            self.cloud.refresh()
            srv = self._server(req, sid)
            return Reply(200, {"metadata": {**srv["metadata"], **srv["_backend_metadata"]}})

    def delete_server(self, req: Request, sid: str) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            srv = self._server(req, sid)
            if srv["_gone_at"] is None:
                srv["_gone_at"] = time.monotonic() + c.settings.delete_delay
        c.backend.destroy(sid)
        return Reply(204)

    def server_action(self, req: Request, sid: str) -> Reply:
        c = self.cloud
        body = req.body or {}
        with c.lock:
            c.refresh()
            srv = self._server(req, sid)
            if "os-getConsoleOutput" not in body:
                raise nova_error(400, f"There is no such action: {', '.join(body) or 'none'}")
            if srv["status"] == "BUILD":
                raise nova_error(409, f"Instance {sid} is not ready")  # no host yet: Nova has no console
            if srv["status"] != "ACTIVE":
                raise nova_error(409, f"Cannot 'os-getConsoleOutput' instance {sid} while it is in vm_state "
                                      f"{srv['status'].lower()}")
            wrong_key = c.settings.wrong_host_key
            host_key = srv["_host_key"]
        output = c.backend.console(sid)
        if wrong_key:
            output = re.sub(r"(-----BEGIN SSH HOST KEY KEYS-----\n).*?(-----END SSH HOST KEY KEYS-----)",
                            lambda m: f"{m.group(1)}{host_key} root@localhost\n{m.group(2)}", output, flags=re.S)
        length = (body["os-getConsoleOutput"] or {}).get("length")
        if length not in (None, -1):
            output = "\n".join(output.splitlines()[-int(length):])
        return Reply(200, {"output": output})

    def volume_attachments(self, req: Request, sid: str) -> Reply:
        with self.cloud.lock:
            srv = self._server(req, sid)
            return Reply(200, {"volumeAttachments": [
                {"id": vid, "volumeId": vid, "serverId": sid, "device": self.cloud.volumes[vid]["attachments"][0][
                    "device"] if vid in self.cloud.volumes and self.cloud.volumes[vid]["attachments"] else None}
                for vid, _ in srv["_volumes"]]})

    def server_interfaces(self, req: Request, sid: str) -> Reply:
        c = self.cloud
        with c.lock:
            srv = self._server(req, sid)
            return Reply(200, {"interfaceAttachments": [
                {"port_id": pid, "net_id": c.ports[pid]["network_id"], "mac_addr": c.ports[pid]["mac_address"],
                 "port_state": "ACTIVE", "fixed_ips": c.ports[pid]["fixed_ips"]}
                for pid in srv["_ports"] if pid in c.ports]})

    # ---- image ----
    def _image_view(self, name: str, iid: str) -> dict[str, Any]:
        core: dict[str, Any] = {
            "id": iid, "name": name, "status": "active", "visibility": "public", "protected": False,
            "os_hidden": False, "disk_format": "qcow2", "container_format": "bare", "size": 536870912,
            "min_disk": 0, "min_ram": 0, "checksum": None, "owner": "admin", "tags": [],
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "self": f"/v2/images/{iid}", "file": f"/v2/images/{iid}/file", "schema": "/v2/schemas/image"}
        extra = self.cloud.settings.image_properties.get(name) or {}
        return {**{str(k): str(v) for k, v in extra.items() if k not in core}, **core}

    def list_images(self, req: Request) -> Reply:
        name = req.q("name")
        images = [self._image_view(n, i) for n, i in self.cloud.image_ids.items() if name in (None, n)]
        return Reply(200, {"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"})

    def get_image(self, req: Request, iid: str) -> Reply:
        for name, i in self.cloud.image_ids.items():
            if i == iid:
                return Reply(200, self._image_view(name, i))
        return Reply(404, "<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1>"
                          f"No image found with ID {iid}<br /><br /></body></html>")

    # ---- network ----
    def _filtered(self, req: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Neutron's list filters: field=value (repeatable), tags/tags-any, fields= ignored."""
        out = []
        for item in items:
            ok = True
            for key, values in req.query.items():
                if key in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                    continue
                if key == "tags":
                    wanted = {t for v in values for t in v.split(",")}
                    ok = wanted <= set(item.get("tags", []))
                elif key == "tags-any":
                    wanted = {t for v in values for t in v.split(",")}
                    ok = bool(wanted & set(item.get("tags", [])))
                elif key in item:
                    have = item[key]
                    have_s = str(have).lower() if isinstance(have, bool) else ("" if have is None else str(have))
                    ok = have_s in [v.lower() if isinstance(have, bool) else v for v in values]
                if not ok:
                    break
            if ok:
                out.append(item)
        return out

    def list_networks(self, req: Request) -> Reply:
        return Reply(200, {"networks": self._filtered(req, self.cloud.networks())})

    def get_network(self, req: Request, nid: str) -> Reply:
        for n in self.cloud.networks():
            if n["id"] == nid:
                return Reply(200, {"network": n})
        raise neutron_error(404, "NetworkNotFound", f"Network {nid} could not be found.")

    def list_security_groups(self, req: Request) -> Reply:
        c = self.cloud
        groups = [{"id": c.sg_id(n), "name": n, "description": "", "tenant_id": project_id(req.project),
                   "project_id": project_id(req.project), "security_group_rules": [], "tags": [], "stateful": True}
                  for n in c.settings.security_groups]
        return Reply(200, {"security_groups": self._filtered(req, groups)})

    def _public(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def _new_port(self, network_id: str, body: dict[str, Any], project: str) -> dict[str, Any]:
        c = self.cloud
        pid = _new_id()
        external = network_id in [c.network_id(n) for n in c.settings.external_networks]
        port = {"id": pid, "name": body.get("name") or "", "network_id": network_id, "status": "DOWN",
                "admin_state_up": True, "device_id": body.get("device_id") or "",
                "device_owner": body.get("device_owner") or "", "tenant_id": project_id(project),
                "project_id": project_id(project), "description": body.get("description") or "",
                "mac_address": "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3]),
                "fixed_ips": [{"subnet_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "subnet")),
                               "ip_address": c.next_ip(external)}],
                "security_groups": list(body.get("security_groups") or [c.sg_id("default")]),
                "tags": list(body.get("tags") or []), "created_at": _now(), "updated_at": _now(),
                "revision_number": 1, "port_security_enabled": True, "binding:vnic_type": "normal",
                "_project": project}
        c.ports[pid] = port
        if not body.get("_nova"):
            c.made("port", port)
        return port

    def list_ports(self, req: Request) -> Reply:
        with self.cloud.lock:
            self.cloud.refresh()
            ports = [self._public(p) for p in _in(self.cloud.ports, req.project)]
        return Reply(200, {"ports": self._filtered(req, ports)})

    def create_port(self, req: Request) -> Reply:
        c = self.cloud
        body = (req.body or {}).get("port")
        if not isinstance(body, dict) or not body.get("network_id"):
            raise neutron_error(400, "HTTPBadRequest", "Failed to parse request. Required attribute 'network_id' "
                                                       "not specified")
        if body["network_id"] not in [n["id"] for n in c.networks()]:
            raise neutron_error(404, "NetworkNotFound", f"Network {body['network_id']} could not be found.")
        valid_sgs = [c.sg_id(n) for n in c.settings.security_groups]
        for sg in body.get("security_groups") or []:
            if sg not in valid_sgs:
                raise neutron_error(404, "SecurityGroupNotFound", f"Security group {sg} does not exist")
        with c.lock:
            if not _check_quota(len(_in(c.ports, req.project)), 1, c.limit(req.project, "max_ports")):
                raise neutron_error(409, "OverQuota", "Quota exceeded for resources: ['port'].")
            port = self._new_port(body["network_id"], body, req.project)
            return Reply(201, {"port": self._public(port)})

    def _port(self, req: Request, pid: str) -> dict[str, Any]:
        port = self.cloud.ports.get(pid)
        if port is None or port["_project"] != req.project:
            raise neutron_error(404, "PortNotFound", f"Port {pid} could not be found.")
        return port

    def get_port(self, req: Request, pid: str) -> Reply:
        with self.cloud.lock:
            self.cloud.refresh()
            return Reply(200, {"port": self._public(self._port(req, pid))})

    def update_port(self, req: Request, pid: str) -> Reply:
        with self.cloud.lock:
            port = self._port(req, pid)
            body = (req.body or {}).get("port") or {}
            for key in ("name", "description", "security_groups", "admin_state_up"):
                if key in body:
                    port[key] = body[key]
            return Reply(200, {"port": self._public(port)})

    def delete_port(self, req: Request, pid: str) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            port = self._port(req, pid)
            if port["device_owner"].startswith("network:"):
                raise neutron_error(409, "PortInUse", f"Port {pid} cannot be deleted directly via the port API: "
                                                      "has device owner network:floatingip.")
            c._delete_port(pid)
        return Reply(204)

    def set_tags(self, req: Request, coll: str, rid: str) -> Reply:
        c = self.cloud
        store = c.ports if coll == "ports" else c.floating_ips
        tags = (req.body or {}).get("tags")
        if not isinstance(tags, list) or any(not isinstance(t, str) or len(t) > 60 for t in tags):
            raise neutron_error(400, "InvalidInput", "Invalid input for operation: tags must be a list of strings.")
        with c.lock:
            item = store.get(rid)
            if item is None or item["_project"] != req.project:
                kind = "Port" if coll == "ports" else "FloatingIP"
                raise neutron_error(404, f"{kind}NotFound", f"{kind} {rid} could not be found.")
            item["tags"] = list(tags)
            return Reply(200, {"tags": item["tags"]})

    def list_floating_ips(self, req: Request) -> Reply:
        with self.cloud.lock:
            fips = [self._public(f) for f in _in(self.cloud.floating_ips, req.project)]
        return Reply(200, {"floatingips": self._filtered(req, fips)})

    def create_floating_ip(self, req: Request) -> Reply:
        c = self.cloud
        body = (req.body or {}).get("floatingip")
        if not isinstance(body, dict) or not body.get("floating_network_id"):
            raise neutron_error(400, "HTTPBadRequest", "Failed to parse request. Required attribute "
                                                       "'floating_network_id' not specified")
        net = body["floating_network_id"]
        if net not in [c.network_id(n) for n in c.settings.external_networks]:
            raise neutron_error(404, "ExternalGatewayForFloatingIPNotFound" if net in c.network_ids.values()
                                else "NetworkNotFound", f"Network {net} could not be found.")
        with c.lock:
            if not _check_quota(len(_in(c.floating_ips, req.project)), 1, c.limit(req.project, "max_floating_ips")):
                raise neutron_error(409, "OverQuota", "Quota exceeded for resources: ['floatingip'].")
            port_id = body.get("port_id")
            if port_id is not None:
                self._port(req, port_id)
            fid = _new_id()
            fip = {"id": fid, "floating_network_id": net, "floating_ip_address": c.next_ip(True),
                   "port_id": port_id, "fixed_ip_address": c.ports[port_id]["fixed_ips"][0]["ip_address"]
                   if port_id else None, "status": "ACTIVE" if port_id else "DOWN", "router_id": None,
                   "tenant_id": project_id(req.project), "project_id": project_id(req.project),
                   "description": body.get("description", ""), "tags": list(body.get("tags") or []),
                   "created_at": _now(), "updated_at": _now(), "revision_number": 1, "_project": req.project}
            c.floating_ips[fid] = fip
            c.made("floating_ip", fip)
            return Reply(201, {"floatingip": fip})

    def _fip(self, req: Request, fid: str) -> dict[str, Any]:
        fip = self.cloud.floating_ips.get(fid)
        if fip is None or fip["_project"] != req.project:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fid} could not be found")
        return fip

    def get_floating_ip(self, req: Request, fid: str) -> Reply:
        with self.cloud.lock:
            return Reply(200, {"floatingip": self._fip(req, fid)})

    def update_floating_ip(self, req: Request, fid: str) -> Reply:
        c = self.cloud
        with c.lock:
            fip = self._fip(req, fid)
            body = (req.body or {}).get("floatingip") or {}
            if "port_id" in body:
                port_id = body["port_id"]
                if port_id is not None:
                    self._port(req, port_id)
                fip.update(port_id=port_id, status="ACTIVE" if port_id else "DOWN",
                           fixed_ip_address=c.ports[port_id]["fixed_ips"][0]["ip_address"] if port_id else None)
            return Reply(200, {"floatingip": fip})

    def delete_floating_ip(self, req: Request, fid: str) -> Reply:
        with self.cloud.lock:
            self._fip(req, fid)
            del self.cloud.floating_ips[fid]
        return Reply(204)

    # ---- volume ----
    def _volume_view(self, req: Request, v: dict[str, Any]) -> dict[str, Any]:
        view = self._public(v)
        view["links"] = [{"rel": "self", "href": f"{req.base}/volume/v3/{project_id(v['_project'])}/volumes/{v['id']}"}]
        return view

    def create_volume(self, req: Request, project: str) -> Reply:
        c = self.cloud
        s = c.settings
        body = (req.body or {}).get("volume")
        if not isinstance(body, dict) or not isinstance(body.get("size"), int) or body["size"] < 1:
            raise cinder_error(400, "Invalid input for field/attribute size. Value: None. None is not of type "
                                    "'integer', 'string'")
        size = body["size"]
        metadata = body.get("metadata") or {}
        with c.lock:
            c.refresh()
            mine = _in(c.volumes, req.project)
            used_gb = sum(v["size"] for v in mine)
            max_volumes, max_gigabytes = c.limit(req.project, "max_volumes"), c.limit(req.project, "max_gigabytes")
            if not _check_quota(len(mine), 1, max_volumes):
                raise cinder_error(413, f"VolumeLimitExceeded: Maximum number of volumes allowed ({max_volumes}) "
                                        "exceeded for quota 'volumes'.")
            if not _check_quota(used_gb, size, max_gigabytes):
                raise cinder_error(413, "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds "
                                        f"allowed gigabytes quota. Requested {size}G, quota is {max_gigabytes}G "
                                        f"and {used_gb}G has been consumed.")
            vid = _new_id()
            v = {"id": vid, "name": body.get("name"), "description": body.get("description"), "size": size,
                 "status": "creating", "metadata": {str(k): str(val) for k, val in metadata.items()},
                 "attachments": [], "availability_zone": body.get("availability_zone") or "nova",
                 "bootable": "false", "encrypted": False, "multiattach": False, "volume_type": "__DEFAULT__",
                 "snapshot_id": None, "source_volid": None, "user_id": c.user_id,
                 "os-vol-tenant-attr:tenant_id": project_id(req.project), "created_at": _now(), "updated_at": _now(),
                 "replication_status": None, "consistencygroup_id": None, "group_id": None,
                 "_ready_at": time.monotonic() + s.volume_delay, "_gone_at": None, "_project": req.project}
            c.volumes[vid] = v
            c.made("volume", v)
            return Reply(202, {"volume": self._volume_view(req, v)})

    def list_volumes(self, req: Request, project: str) -> Reply:
        c = self.cloud
        name, status = req.q("name"), req.q("status")
        with c.lock:
            c.refresh()
            views = [self._volume_view(req, v) for v in _in(c.volumes, req.project)
                     if name in (None, v["name"]) and status in (None, v["status"])]
        return Reply(200, {"volumes": views})

    def _volume(self, req: Request, vid: str) -> dict[str, Any]:
        v = self.cloud.volumes.get(vid)
        if v is None or v["_project"] != req.project:
            raise cinder_error(404, f"Volume {vid} could not be found.")
        return v

    def get_volume(self, req: Request, project: str, vid: str) -> Reply:
        with self.cloud.lock:
            self.cloud.refresh()
            return Reply(200, {"volume": self._volume_view(req, self._volume(req, vid))})

    def delete_volume(self, req: Request, project: str, vid: str) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            v = self._volume(req, vid)
            if v["status"] == "deleting":
                return Reply(202)
            if v["status"] not in ("available", "error", "error_restoring", "error_extending", "error_managing"):
                raise cinder_error(400, "Invalid volume: Volume status must be available or error or error_restoring "
                                        "or error_extending or error_managing and must not be migrating, attached, "
                                        "belong to a group, have snapshots or be disassociated from snapshots after "
                                        "volume transfer.")
            v["status"] = "deleting"
            v["_gone_at"] = time.monotonic() + c.settings.delete_delay
        return Reply(202)

    def update_volume_metadata(self, req: Request, project: str, vid: str) -> Reply:
        metadata = (req.body or {}).get("metadata")
        if not isinstance(metadata, dict):
            raise cinder_error(400, "Malformed request body: metadata must be a mapping")
        with self.cloud.lock:
            v = self._volume(req, vid)
            v["metadata"].update({str(k): str(val) for k, val in metadata.items()})
            return Reply(200, {"metadata": v["metadata"]})

    def volume_limits(self, req: Request, project: str) -> Reply:
        c = self.cloud
        with c.lock:
            c.refresh()
            mine = _in(c.volumes, req.project)
            return Reply(200, {"limits": {"rate": [], "absolute": {
                "maxTotalVolumes": c.limit(req.project, "max_volumes"), "totalVolumesUsed": len(mine),
                "maxTotalVolumeGigabytes": c.limit(req.project, "max_gigabytes"),
                "totalGigabytesUsed": sum(v["size"] for v in mine),
                "maxTotalSnapshots": 10, "totalSnapshotsUsed": 0, "maxTotalBackups": 10, "totalBackupsUsed": 0,
                "maxTotalBackupGigabytes": 1000, "totalBackupGigabytesUsed": 0}}})

    # ---- test hooks ----
    def get_settings(self, req: Request) -> Reply:
        return Reply(200, dataclasses.asdict(self.cloud.settings))

    def patch_settings(self, req: Request) -> Reply:
        s = self.cloud.settings
        names = {f.name for f in dataclasses.fields(s)}
        body = req.body or {}
        unknown = sorted(set(body) - names)
        if unknown:
            return Reply(400, {"error": {"code": 400, "message": f"unknown settings: {', '.join(unknown)}"}})
        with self.cloud.lock:
            for k, val in body.items():
                setattr(s, k, val)
        return Reply(200, dataclasses.asdict(s))

    def get_inventory(self, req: Request) -> Reply:
        return Reply(200, self.cloud.inventory(req.q("project")))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, 40 ms per request
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(Reply(400, {"badRequest": {"code": 400, "message": "Malformed request body"}}))
            return
        api = self.server.api
        split = urlsplit(self.path)
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        req = Request(self.command, split.path.rstrip("/") or "/", parse_qs(split.query, keep_blank_values=True),
                      self.headers, body, f"http://{host}")
        try:
            reply = api.handle(req)
        except Exception as e:  # a bug in the fake: answer 500 like a service would, and say so
            reply = Reply(500, {"computeFault": {"code": 500, "message": f"fake service error: {e!r}"}})
        if reply.status == DROP:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the connection dropped unanswered
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.body is None:
            data, ctype = b"", "application/json"
        elif isinstance(reply.body, str):
            data, ctype = reply.body.encode(), "text/html; charset=UTF-8"
        else:
            data, ctype = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Openstack-Request-Id", "req-" + str(uuid.uuid4()))
        for k, val in reply.headers.items():
            self.send_header(k, val)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins handler threads: nothing outlives stop()
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api, verbose: bool):
        self.api = api
        self.verbose = verbose
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class OpenStackApiService:
    """The service: start() it, point openstacksdk at `auth_url`, stop() it.

    `settings` may be changed while it runs; `inventory()` says what exists.
    """

    def __init__(self, settings: Settings | None = None, backend: ServerBackend | None = None,
                 host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.settings = settings or Settings()
        self.backend = backend or MemoryBackend()
        self.cloud = Cloud(self.settings, self.backend)
        self._httpd = _HttpServer((host, port), Api(self.cloud), verbose)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]!s}:{self.port}"

    @property
    def auth_url(self) -> str:
        return self.url + "/identity/v3"

    def start(self) -> OpenStackApiService:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"openstack-api:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.5)

    def inventory(self, project: str | None = None) -> dict[str, list[str]]:
        """What exists now (servers, volumes, ports, floating IPs), in `project` or in every project."""
        return self.cloud.inventory(project)

    def created(self, kind: str | None = None) -> list[dict[str, str]]:
        """Every resource ever made (`kind`: server, volume, port, floating_ip), with its id, name and project."""
        with self.cloud.lock:
            return [dict(c) for c in self.cloud.created if kind in (None, c["kind"])]

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.drop_connections()
        self._httpd.server_close()
        self.backend.close()

    def __enter__(self) -> OpenStackApiService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
