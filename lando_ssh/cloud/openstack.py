"""The OpenStack driver: per-job VMs through openstacksdk (the only module that imports it).

Credentials, in the order every OpenStack tool uses: `cloud_settings.cloud` (a named cloud
in clouds.yaml), else `cloud_settings.auth_url` with a password or an application
credential, else the `OS_*` environment (or `OS_CLOUD`). The constructor authenticates, so a
wrong password or an unreachable auth_url stops the caller at once with a `CloudError`
naming which.

Projects: a `VmRequest.project` (bespin-api's per-job `vm_project`) other than the configured
project is worked in over a second connection, made on first use with the same credentials
scoped to that project (`connect_as`: user and project domains kept). An application
credential is bound to its own project, so a job naming another fails with a `CloudError`
saying so, as does a project Keystone refuses (401: it does not exist, or the user has no
role in it). The id of a VM outside the configured project is "<project>/<server id>", so
`get_vm`, `console_log`, `delete_vm` and `wait_until_active` reach it from the id alone
(after a restart too); ids in the configured project are the bare server ids. `find_vms`
and `find_orphans` cover the configured project, `cloud_settings.projects`, and every
project noted in `<data_dir>/openstack-projects` (appended when a connection to a project is
first made). `flavors`, `images` and `quota` are the configured project's; a quota refusal in
another project names it ("waiting for quota in project 'lab': instances 10 of 10").

What `create_vm` makes, in order, each carrying the request's metadata (Nova and Cinder
metadata; Neutron tags `key=value`), so a sweep can find orphans:
1. names resolved to ids first (flavor, image, network, security groups, floating IP pool, and
   the Nova keypair `ssh_key_name` when one is named);
   an unknown name raises `CloudNotFound` listing what exists, before anything is created;
   the compute (and volume) quota is checked, raising `QuotaExceeded` with a reason such
   as "waiting for quota: instances 10 of 10";
2. a data volume `<name>-data` (when `volume_size` > 0), waited for until available;
3. a port `<name>-port` on the network, with the security groups;
4. a floating IP on that port (when `allocate_floating_ips`, from `floating_ip_pool_name`);
5. the server, with the cloud-init user data, the port, and the volume attached at boot as
   the second disk (`/dev/vdb` on KVM) so cloud-init can format and mount it on first boot;
   with `ssh_key_name` (the job's, else `cloud_settings.ssh_key_name`), that Nova keypair too,
   as lando's VMs had it, so the facility's admins reach a VM with their own key (lando-ssh
   itself logs in only with the job's key, which the user data carries).
   Its metadata also records the ids of the volume, port and floating IP.
Then the volume, port and floating IP are marked with the server's id (`lando_vm_id`), so
`delete_vm` can find them even after the server is gone. If any step fails, what was
made is deleted before the error is raised.

`delete_vm` deletes the server, waits for it to be gone, then the volume (once Nova has
detached it), the floating IP and the port, and verifies each is gone; what cannot be
deleted raises `CloudError` naming it (the caller records it and retries later). A server carrying
another installation's token (installation.py) is refused, never deleted.
Beyond the `Cloud` protocol: `wait_until_active(vm_id)` (VmFailed with Nova's fault on
ERROR), and for the sweep `find_orphans(metadata)`, which lists volumes, floating IPs and
ports carrying our metadata that no live server owns (with their age), and `delete_orphan`.

Errors: quota refusals (403/413/409 "Quota exceeded", "Maximum number of ... exceeded")
become `QuotaExceeded`; 5xx, 429 and dropped connections are retried `api_retries` times
with doubling back-off (a retried create first looks for what the lost answer may have
made); anything else becomes `CloudError` with the service's own message.

SSH port: a VM's sshd is on port 22 unless the server's metadata carries `lando_ssh_port`
(the local OpenStack API service used in the tests publishes its sshd ports that way).
Address: the floating IP when there is one, else the fixed IPv4 on `network_name`.
Login user: `vm.user`, else the image's `os_admin_user` property (Glance's name for it), else
its `default_user` property, else "ubuntu". Work dir: `vm.work_dir`, where "{vm_name}" is
replaced by the VM's name (for VMs sharing one filesystem, as the test service's do).
A `create_vm` for a name that already has our live server returns that server.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import keystoneauth1.exceptions as ks_exc
import openstack
import openstack.exceptions as os_exc
import requests
from openstack.network.v2.floating_ip import FloatingIP
from openstack.network.v2.port import Port

from lando_ssh.cloud import META_TOKEN, Flavor, Orphan, Quota, VmInfo, VmRequest
from lando_ssh.config import Config
from lando_ssh.errors import CloudError, CloudNotFound, LandoError, QuotaExceeded, VmFailed
from lando_ssh.installation import is_anothers

log = logging.getLogger(__name__)

T = TypeVar("T")

#: server metadata key that announces an sshd port other than 22
META_SSH_PORT = "lando_ssh_port"
#: the server id, on the volume, port and floating IP made for it
META_VM_ID = "lando_vm_id"
META_VOLUME_ID = "lando_volume_id"
META_PORT_ID = "lando_port_id"
META_FLOATING_IP_ID = "lando_floating_ip_id"
#: in data_dir: the projects other than the configured one that VMs were made in, one JSON string a line
PROJECTS_FILE = "openstack-projects"

_QUOTA_WORDS = re.compile(r"quota|maximum number of .* (exceeded|allowed)|overlimit|over limit", re.I)
_NOVA_QUOTA = re.compile(r"Quota exceeded for (\w+): Requested (\d+), but already used (\d+) of (\d+)")
_CINDER_COUNT = re.compile(r"Maximum number of (\w+) allowed \((\d+)\) exceeded")
_CINDER_SIZE = re.compile(r"allowed (\w+) quota\. Requested (\d+)G, quota is (\d+)G and (\d+)G has been consumed")
_NEUTRON_QUOTA = re.compile(r"Quota exceeded for resources: \[(.*?)\]")
_MAX_PORTS = re.compile(r"Maximum number of (\w+) exceeded", re.I)


class _Transient(CloudError):
    """A failure worth retrying (5xx, 429, a dropped connection)."""


class OpenStackCloud:
    """The `Cloud` protocol over openstacksdk, in the configured project and in the projects jobs name.
    One instance per process; safe to share across threads."""

    name = "openstack"

    def __init__(self, config: Config):
        self.config = config
        self.settings = config.cloud_settings
        self._source = "the OS_* environment"
        self._home = self._connect()
        self._others: dict[str, _Project] = {}
        self._lock = threading.Lock()
        self._projects_file = os.path.join(config.data_dir, PROJECTS_FILE)
        named = [p for p in self.settings.projects if p != self._home.scope]
        if named and self._app_credential(self._home.conn):
            raise CloudError(self._bound_to_home(named[0], "cloud_settings.projects names it"))

    # ---- credentials -------------------------------------------------------------------
    def _connect(self) -> _Project:
        s = self.settings
        try:
            if s.cloud:
                self._source = f"cloud {s.cloud!r} in clouds.yaml"
                conn = openstack.connect(cloud=s.cloud, region_name=s.region_name)
            elif s.auth_url:
                self._source = f"cloud_settings (auth_url {s.auth_url})"
                auth: dict[str, Any] = {"auth_url": s.auth_url}
                if s.application_credential_id:
                    auth.update(auth_type="v3applicationcredential",
                                application_credential_id=s.application_credential_id,
                                application_credential_secret=s.application_credential_secret)
                else:
                    auth.update(username=s.username, password=s.password, project_name=s.project_name,
                                user_domain_name=s.user_domain_name, project_domain_name=s.project_domain_name)
                conn = openstack.connect(**auth, region_name=s.region_name, verify=s.verify,
                                         load_yaml_config=False, load_envvars=False)
            else:
                conn = openstack.connect(region_name=s.region_name)
        except os_exc.ConfigException as e:
            raise CloudError(f"no usable OpenStack credentials from {self._source}: {e}; set cloud_settings "
                             "(auth_url, username, password, project_name), cloud_settings.cloud, or OS_* "
                             "variables") from None
        except ks_exc.ClientException as e:
            raise CloudError(f"the OpenStack credentials from {self._source} are incomplete: {e}") from None
        self._auth_url = str((conn.config.config.get("auth") or {}).get("auth_url") or "an unnamed auth_url")
        home = _Project(self.config, conn, None)
        who = self._who(conn)
        try:
            home.authenticate()
        except _AuthRefused as e:
            raise CloudError(f"the cloud at {self._auth_url} refused the credentials of {who} "
                             f"(from {self._source}): {e}") from None
        except _Unreachable as e:
            raise CloudError(f"cannot reach the OpenStack auth_url {self._auth_url} "
                             f"(from {self._source}): {e}") from None
        except CloudError as e:
            raise CloudError(f"cannot authenticate {who} at {self._auth_url} (from {self._source}): {e}") from None
        return home

    @staticmethod
    def _who(conn: Any) -> str:
        auth = conn.config.config.get("auth") or {}
        if auth.get("application_credential_id"):
            return f"application credential {auth['application_credential_id']}"
        return f"user {auth.get('username')!r} in project {auth.get('project_name') or auth.get('project_id')!r}"

    @staticmethod
    def _app_credential(conn: Any) -> bool:
        return bool((conn.config.config.get("auth") or {}).get("application_credential_id"))

    def _bound_to_home(self, project: str, why: str) -> str:
        return (f"cannot work in OpenStack project {project!r} ({why}): lando-ssh logs in with "
                f"{self._who(self._home.conn)}, and an application credential is bound to the one project it "
                f"was made in ({self._home.scope!r}); give cloud_settings a username and password with a role "
                f"in {project!r} instead")

    # ---- projects ----------------------------------------------------------------------
    def _in(self, project: str | None, why: str = "the job asks for it") -> _Project:
        """The project of that name: the configured one for None or its own name, else a connection
        made on first use (the same credentials, scoped to that project) and noted in PROJECTS_FILE."""
        if not project or project == self._home.scope:
            return self._home
        with self._lock:
            known = self._others.get(project)
        if known is not None:
            return known
        made = self._connect_to(project, why)
        with self._lock:
            known = self._others.setdefault(project, made)
        if known is not made:  # another thread connected meanwhile
            made.close()
        else:
            self._note(project)
        return known

    def _connect_to(self, project: str, why: str) -> _Project:
        conn = self._home.conn
        if self._app_credential(conn):
            raise CloudError(self._bound_to_home(project, why))
        try:
            scoped = _Project(self.config, conn.connect_as(project_name=project), project)
        except (os_exc.SDKException, ks_exc.ClientException) as e:
            raise CloudError(f"cannot log in to OpenStack project {project!r} ({why}): {_short(e)}") from None
        try:
            scoped.authenticate()
        except _AuthRefused:
            scoped.close()
            raise CloudError(f"cannot work in OpenStack project {project!r} ({why}): the cloud at {self._auth_url} "
                             f"refused {self._who(scoped.conn)} (HTTP 401): the project does not exist or the user "
                             "has no role in it") from None
        except CloudError as e:
            scoped.close()
            raise CloudError(f"cannot log in to OpenStack project {project!r} ({why}): {e}") from None
        return scoped

    def _covered(self) -> list[_Project]:
        """Where our VMs may be: the configured project, cloud_settings.projects, and every project noted
        in PROJECTS_FILE because a VM was made or looked up there. One that refuses us is skipped, logged."""
        found = [self._home]
        for name in dict.fromkeys([*self.settings.projects, *self._noted()]):
            try:
                project = self._in(name, "cloud_settings.projects names it" if name in self.settings.projects
                                   else f"lando-ssh has worked there, as {self._projects_file} notes")
            except CloudError as e:
                log.warning("%s; its VMs are not listed or swept", e)
                continue
            if project not in found:
                found.append(project)
        return found

    def _noted(self) -> list[str]:
        try:
            with open(self._projects_file) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            log.warning("cannot read %s: %s", self._projects_file, e.strerror)
            return []
        names = []
        for line in lines:
            try:
                names.append(str(json.loads(line)))
            except ValueError:
                continue  # a line cut short by a crash
        return names

    def _note(self, project: str) -> None:
        """Remember a project we used, so a restarted server, the sweep and `vms` look there too."""
        if project in self._noted():
            return
        try:
            os.makedirs(self.config.data_dir, exist_ok=True)
            with open(self._projects_file, "a") as f:  # one short append: atomic next to other processes' own
                f.write(json.dumps(project) + "\n")
        except OSError as e:
            log.warning("cannot note OpenStack project %r in %s (%s): the sweep and `vms` look there only if "
                        "cloud_settings.projects names it", project, self._projects_file, e.strerror)

    def _locate(self, vm_id: str) -> tuple[_Project, str]:
        """The project and server id of one of our VM ids ("<project>/<server id>" outside the configured one)."""
        project, _, server_id = vm_id.rpartition("/")
        return self._in(project or None, f"VM {vm_id} is there"), server_id

    # ---- the Cloud protocol ------------------------------------------------------------
    def default_user(self, image: str | None = None) -> str:
        """`vm.user`, else the image's login user as Glance records it (the `os_admin_user` property, else
        `default_user`), else "ubuntu"."""
        if self.config.vm.user:
            return self.config.vm.user
        return (self._home.image_user(image) if image else None) or "ubuntu"

    def default_cwl_command(self) -> list[str]:
        return ["cwltool"]

    def vm_work_dir(self, vm_name: str) -> str:
        # "{vm_name}" lets VMs that share a filesystem (the local test service) keep apart
        return self.config.vm.work_dir.replace("{vm_name}", vm_name)

    def flavors(self) -> list[Flavor]:
        return self._home.flavors()

    def images(self) -> list[str]:
        return self._home.images()

    def check_image(self, name_or_id: str) -> None:
        self._home._resolve_image(name_or_id)

    def quota(self) -> Quota:
        """The configured project's quota (a job in another project meets that project's at create)."""
        return self._home.quota()

    def create_vm(self, request: VmRequest) -> VmInfo:
        return self._in(request.project).create_vm(request)

    def preflight(self, image: str, flavor: str, volume_size: int = 0) -> list[str]:
        """What a VM of `image` and `flavor` lacks in the configured project, one sentence each (for
        `lando-ssh cloud-check`): the flavor, the image, the network, security groups, floating IP pool and
        keypair the settings name, and room in the quota."""
        return self._home.preflight(image, flavor, volume_size)

    def get_vm(self, vm_id: str) -> VmInfo | None:
        project, server_id = self._locate(vm_id)
        return project.get_vm(server_id)

    def wait_until_active(self, vm_id: str, timeout: float | None = None) -> VmInfo:
        """Poll until ACTIVE; VmFailed with Nova's fault on ERROR, on disappearance or at the boot timeout."""
        project, server_id = self._locate(vm_id)
        return project.wait_until_active(server_id, timeout)

    def find_vms(self, metadata: dict[str, str]) -> list[VmInfo]:
        found: list[VmInfo] = []
        for project in self._covered():
            try:
                found += project.find_vms(metadata)
            except CloudError as e:
                if project is self._home:
                    raise
                log.warning("cannot list the servers in OpenStack project %r: %s", project.scope, e)
        return found

    def console_log(self, vm_id: str) -> str:
        project, server_id = self._locate(vm_id)
        return project.console_log(server_id)

    def delete_vm(self, vm_id: str) -> None:
        project, server_id = self._locate(vm_id)
        project.delete_vm(server_id)

    def find_orphans(self, metadata: dict[str, str]) -> list[Orphan]:
        """Volumes, floating IPs and ports carrying `metadata` that no live server owns, in every project
        `find_vms` covers (see `_Project.find_orphans`); deleted with `delete_orphan`."""
        found: list[Orphan] = []
        failed: list[str] = []
        for project in self._covered():
            try:
                found += project.find_orphans(metadata)
            except CloudError as e:
                failed.append(str(e))
        if failed:
            raise CloudError("; ".join(failed))
        return found

    def delete_orphan(self, orphan: Orphan) -> None:
        """Delete one resource `find_orphans` listed and wait until it is gone (CloudError naming it if not)."""
        project, rid = self._locate(orphan.id)
        left: list[str] = []
        project._delete_one(orphan.kind.replace(" ", "_"), rid, left)
        if left:
            raise CloudError(f"could not delete orphaned {', '.join(left)}")

    def close(self) -> None:
        with self._lock:
            others = list(self._others.values())
            self._others.clear()
        for project in [self._home, *others]:
            project.close()


class _Project:
    """Everything the driver does inside one OpenStack project, over one connection scoped to it."""

    def __init__(self, config: Config, conn: Any, project: str | None):
        self.config = config
        self.settings = config.cloud_settings
        self.conn = conn
        self.project = project  # None: the configured project (its VM ids carry no project)
        self.scope = project  # the name of the project the token is scoped to (known once authenticated)
        self._flavors: list[Flavor] | None = None

    def authenticate(self) -> None:
        """Get a token (errors translated), and learn which project it is scoped to."""
        self._retrying("authenticate", self.conn.session.get_token)
        if self.scope is None:
            try:
                self.scope = str(self.conn.session.auth.get_access(self.conn.session).project_name or "") or None
            except Exception:  # an auth plugin without access info: no name to match jobs' projects against
                self.scope = None

    # ---- facts -------------------------------------------------------------------------
    def flavors(self) -> list[Flavor]:
        found = self._retrying("list flavors", lambda: list(self.conn.compute.flavors(details=True)))
        self._flavors = [Flavor(name=f.name, id=f.id, vcpus=f.vcpus or 0, ram_mb=f.ram or 0, disk_gb=f.disk or 0)
                         for f in found]
        return list(self._flavors)

    def images(self) -> list[str]:
        return [i.name for i in self._images()]

    def image_user(self, name_or_id: str) -> str | None:
        """The login user the image's properties name (`os_admin_user`, else `default_user`), if any."""
        images = self._images()
        match = [i for i in images if i.id == name_or_id] or [i for i in images if i.name == name_or_id]
        if len(match) != 1:
            return None  # unknown or ambiguous: create_vm says which, listing the images
        properties = match[0].properties or {}
        user = match[0].os_admin_user or properties.get("os_admin_user") or properties.get("default_user")
        return str(user).strip() or None if user else None  # (an empty property names no one)

    def _images(self) -> list[Any]:
        return self._retrying("list images", lambda: [i for i in self.conn.image.images() if i.status == "active"])

    def quota(self) -> Quota:
        lim = self._retrying("read compute limits", self.conn.compute.get_limits).absolute

        def cap(v: Any) -> int | None:
            return None if v is None or v < 0 else int(v)

        return Quota(max_instances=cap(lim.instances), max_cores=cap(lim.total_cores), max_ram_mb=cap(lim.total_ram),
                     instances_used=lim.instances_used or 0, cores_used=lim.total_cores_used or 0,
                     ram_mb_used=lim.total_ram_used or 0)

    # ---- VMs ---------------------------------------------------------------------------
    def create_vm(self, request: VmRequest) -> VmInfo:
        flavor = self._resolve_flavor(request.flavor)
        image_id = self._resolve_image(request.image)
        networks = self._networks()  # one listing for the network and the floating IP pool
        network_id = self._resolve_network(request.network, networks)
        group_ids = self._resolve_security_groups()
        allocate = self.settings.allocate_floating_ips if request.allocate_floating_ip is None \
            else request.allocate_floating_ip
        pool_id = self._resolve_floating_pool(request.floating_ip_pool, networks) if allocate else None
        key_name = self._resolve_keypair(request.key_name or self.settings.ssh_key_name)
        existing = self._server_named(request)
        if existing is not None:
            return self._vm_info(existing)  # a resumed job, or a create whose answer was lost
        self._check_quota(flavor, request.volume_size)

        made: list[tuple[str, str]] = []  # (kind, id) to delete if a later step fails
        metadata = dict(request.metadata)
        tags = _tags(request.metadata)
        try:
            volume_id = None
            if request.volume_size > 0:
                volume_id = self._create_volume(request)
                made.append(("volume", volume_id))
                metadata[META_VOLUME_ID] = volume_id
            port_id = self._create_port(request, network_id, group_ids, tags)
            made.append(("port", port_id))
            metadata[META_PORT_ID] = port_id
            if pool_id:
                fip_id = self._create_floating_ip(request, pool_id, port_id, tags)
                made.append(("floating_ip", fip_id))
                metadata[META_FLOATING_IP_ID] = fip_id
            server_id = self._create_server(request, flavor, image_id, port_id, volume_id, metadata, key_name)
            made.append(("server", server_id))
            self._mark_with_server(server_id, made, tags)
            server = self._get_server(server_id)
        except BaseException:
            self._undo(made)
            raise
        if server is None:
            raise VmFailed(f"the cloud lost server {request.name} ({server_id}) right after creating it")
        info = self._vm_info(server)
        if info.status == "ERROR":
            self._undo(made)
            raise VmFailed(f"the cloud could not boot {request.name}: {info.fault or 'no reason given'}")
        return info

    def preflight(self, image: str, flavor: str, volume_size: int) -> list[str]:
        problems: list[str] = []

        def missing(find: Callable[[], T]) -> T | None:
            try:
                return find()
            except CloudNotFound as e:
                problems.append(str(e))
                return None

        found = missing(lambda: self._resolve_flavor(flavor))
        missing(lambda: self._resolve_image(image))
        missing(self._resolve_network)
        missing(self._resolve_security_groups)
        if self.settings.allocate_floating_ips:
            missing(self._resolve_floating_pool)
        missing(lambda: self._resolve_keypair(self.settings.ssh_key_name))
        if found is not None:
            try:
                self._check_quota(found, volume_size)
            except QuotaExceeded as e:
                room = f"one {found.name} VM" + (f" and its {volume_size} GB volume" if volume_size else "")
                problems.append(f"the quota has no room for {room}: {str(e).split(': ', 1)[-1]}")
        return problems

    def get_vm(self, vm_id: str) -> VmInfo | None:
        server = self._get_server(vm_id)
        return self._vm_info(server) if server is not None else None

    def wait_until_active(self, vm_id: str, timeout: float | None = None) -> VmInfo:
        """Poll until ACTIVE; VmFailed with Nova's fault on ERROR, on disappearance or at the boot timeout."""
        timeout = self.config.vm.boot_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        interval = min(self.settings.api_poll_interval, 1.0)
        while True:
            info = self.get_vm(vm_id)
            if info is None:
                raise VmFailed(f"server {vm_id} disappeared while booting")
            if info.status == "ACTIVE":
                return info
            if info.status == "ERROR":
                raise VmFailed(f"server {info.name} went to ERROR: {info.fault or 'no reason given'}")
            if time.monotonic() >= deadline:
                raise VmFailed(f"server {info.name} was still {info.status} after {timeout:.0f} s")
            time.sleep(interval)
            interval = min(interval * 1.5, self.settings.api_poll_interval)

    def find_vms(self, metadata: dict[str, str]) -> list[VmInfo]:
        servers = self._retrying("list servers", lambda: list(self.conn.compute.servers(details=True)))
        return [self._vm_info(s) for s in servers
                if all((s.metadata or {}).get(k) == v for k, v in metadata.items())]

    def console_log(self, vm_id: str) -> str:
        try:
            out = self._retrying(f"read the console of server {vm_id}",
                                 lambda: self.conn.compute.get_server_console_output(vm_id))
        except _NotFound:
            raise CloudNotFound(f"there is no server {vm_id}") from None
        except _Conflict:
            return ""  # Nova has no console for a server that is not running yet
        return str((out or {}).get("output") or "")

    def delete_vm(self, vm_id: str) -> None:
        server = self._get_server(vm_id)
        volumes: set[str] = set()
        ports: set[str] = set()
        fips: set[str] = set()
        if server is not None:  # only what we made for it: a volume someone else attached survives
            meta = server.metadata or {}
            if is_anothers(self.config, meta):
                raise CloudError(f"server {vm_id} ({server.name}) was made by another lando-ssh installation (its "
                                 f"{META_TOKEN} is not this data dir's); it is not this one's to delete")
            volumes |= {meta[META_VOLUME_ID]} if META_VOLUME_ID in meta else set()
            ports |= {meta[META_PORT_ID]} if META_PORT_ID in meta else set()
            fips |= {meta[META_FLOATING_IP_ID]} if META_FLOATING_IP_ID in meta else set()
        tag = f"{META_VM_ID}={vm_id}"
        ports |= {p.id for p in self._retrying("list ports", lambda: list(self.conn.network.ports(tags=tag)))}
        fips |= {f.id for f in self._retrying("list floating IPs", lambda: list(self.conn.network.ips(tags=tag)))}
        if server is None:  # a second attempt: the volume is found by its mark, not the server's record
            listed = self._retrying("list volumes", lambda: list(self.conn.block_storage.volumes(details=True)))
            volumes |= {v.id for v in listed if (v.metadata or {}).get(META_VM_ID) == vm_id}

        left: list[str] = []
        if server is not None:
            self._delete_one("server", vm_id, left)
            if left:
                raise CloudError(f"could not delete {', '.join(left)}; the volume, floating IP and port are kept "
                                 "until it is gone")
        for kind, ids in (("volume", volumes), ("floating_ip", fips), ("port", ports)):
            for rid in sorted(ids):
                self._delete_one(kind, rid, left)
        if left:
            raise CloudError(f"could not delete {', '.join(left)} of server {vm_id}")

    def find_orphans(self, metadata: dict[str, str]) -> list[Orphan]:
        """Volumes, floating IPs and ports carrying `metadata` that no live server owns, with their age.

        Owned means marked with a server that still exists. Unmarked ones are a create_vm that stopped
        before its server existed, or one still in progress elsewhere: the caller spares the young ones.
        A volume attached to something (in-use) is not ours to judge and is not listed.
        """
        tags = ",".join(_tags(metadata))
        net = self.conn.network
        found: list[tuple[str, Any, dict[str, str]]] = []
        volumes = self._retrying("list volumes", lambda: list(self.conn.block_storage.volumes(details=True)))
        for v in volumes:
            meta = v.metadata or {}
            if all(meta.get(k) == val for k, val in metadata.items()) and v.status != "in-use":
                found.append(("volume", v, meta))

        def listing(lister: Callable[..., Any]) -> list[Any]:
            return list(lister(tags=tags))

        for kind, lister in (("floating_ip", net.ips), ("port", net.ports)):
            listed = self._retrying(f"list {kind}s", functools.partial(listing, lister))
            for r in listed:
                found.append((kind, r, dict(t.split("=", 1) for t in r.tags or [] if "=" in t)))
        orphans: list[Orphan] = []
        servers: dict[str, bool] = {}
        now = datetime.now(UTC)
        for kind, r, meta in found:
            owner = meta.get(META_VM_ID)
            if owner:
                if owner not in servers:
                    servers[owner] = self._get_server(owner) is not None
                if servers[owner]:
                    continue
            age = _age(r.created_at, now)
            name = str(getattr(r, "floating_ip_address", None) if kind == "floating_ip" else r.name or r.id)
            orphans.append(Orphan(kind.replace("_", " "), self._qualified(r.id), name,
                                  self._qualified(owner) if owner else None, None if age == float("inf") else age))
        return orphans

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing must not fail a shutdown
            log.debug("closing the OpenStack connection failed", exc_info=True)

    # ---- name resolution ---------------------------------------------------------------
    def _resolve_flavor(self, name_or_id: str) -> Flavor:
        flavors = self.flavors()
        for f in flavors:
            if name_or_id in (f.id, f.name):
                return f
        raise CloudNotFound(f"flavor {name_or_id!r} does not exist; flavors: "
                            f"{', '.join(f.name for f in flavors) or 'none'}")

    def _resolve_image(self, name_or_id: str) -> str:
        images = self._images()
        by_id = [i for i in images if i.id == name_or_id]
        by_name = [i for i in images if i.name == name_or_id]
        if by_id:
            return str(by_id[0].id)
        if len(by_name) > 1:
            raise CloudError(f"image name {name_or_id!r} is ambiguous ({len(by_name)} images); give its id: "
                             f"{', '.join(i.id for i in by_name)}")
        if by_name:
            return str(by_name[0].id)
        raise CloudNotFound(f"image {name_or_id!r} does not exist; images: "
                            f"{', '.join(sorted(i.name for i in images)) or 'none'}")

    def _networks(self) -> list[Any]:
        return self._retrying("list networks", lambda: list(self.conn.network.networks()))

    def _resolve_network(self, wanted: str | None = None, networks: list[Any] | None = None) -> str:
        networks = self._networks() if networks is None else networks
        internal = [n for n in networks if not n.is_router_external]
        return _named_or_only(wanted or self.settings.network_name, networks, internal, "network", "networks",
                              "cloud_settings.network_name")

    def _resolve_security_groups(self) -> list[str]:
        if not self.settings.security_groups:
            return []
        groups = self._retrying("list security groups", lambda: list(self.conn.network.security_groups()))
        ids = []
        for wanted in self.settings.security_groups:
            match = [g for g in groups if wanted in (g.id, g.name)]
            if not match:
                raise CloudNotFound(f"security group {wanted!r} does not exist; security groups: "
                                    f"{', '.join(sorted({g.name for g in groups})) or 'none'}")
            ids.append(str(match[0].id))
        return ids

    def _resolve_floating_pool(self, wanted: str | None = None, networks: list[Any] | None = None) -> str:
        external = [n for n in (self._networks() if networks is None else networks) if n.is_router_external]
        return _named_or_only(wanted or self.settings.floating_ip_pool_name, external, external, "floating IP pool",
                              "external networks", "cloud_settings.floating_ip_pool_name")

    def _resolve_keypair(self, wanted: str | None) -> str | None:
        if not wanted:
            return None
        pairs = self._retrying("list keypairs", lambda: list(self.conn.compute.keypairs()))
        if any(p.name == wanted for p in pairs):
            return wanted
        raise CloudNotFound(f"keypair {wanted!r} (ssh_key_name) does not exist for this OpenStack user; keypairs: "
                            f"{', '.join(sorted(p.name for p in pairs)) or 'none'}")

    def _check_quota(self, flavor: Flavor, volume_size: int) -> None:
        q = self.quota()
        for what, used, want, limit in (("instances", q.instances_used, 1, q.max_instances),
                                        ("cores", q.cores_used, flavor.vcpus, q.max_cores),
                                        ("ram", q.ram_mb_used, flavor.ram_mb, q.max_ram_mb)):
            if limit is not None and used + want > limit:
                unit = " MB" if what == "ram" else ""
                raise QuotaExceeded(f"{_waiting(self.project)}: {what} {used}{unit} of {limit}{unit} in use")
        if volume_size > 0:
            lim = self._retrying("read volume limits", self.conn.block_storage.get_limits).absolute
            vols, max_vols = lim.total_volumes_used or 0, lim.max_total_volumes
            gbs, max_gbs = lim.total_gigabytes_used or 0, lim.max_total_volume_gigabytes
            if max_vols is not None and max_vols >= 0 and vols + 1 > max_vols:
                raise QuotaExceeded(f"{_waiting(self.project)}: volumes {vols} of {max_vols} in use")
            if max_gbs is not None and max_gbs >= 0 and gbs + volume_size > max_gbs:
                raise QuotaExceeded(f"{_waiting(self.project)}: volume gigabytes {gbs} of {max_gbs} in use "
                                    f"({volume_size} more needed)")

    # ---- creating ----------------------------------------------------------------------
    def _create_volume(self, request: VmRequest) -> str:
        name = f"{request.name}-data"

        def find() -> Any:
            # filtered here: Cinder lets a member filter by name only where its resource_filters.json allows
            # it (else 400 "Invalid filters name are found in query options.")
            return next((v for v in self.conn.block_storage.volumes(details=True)
                         if v.name == name and v.status != "in-use"
                         and all((v.metadata or {}).get(k) == val for k, val in request.metadata.items())), None)

        volume = self._create_once(f"create volume {name}", lambda: self.conn.block_storage.create_volume(
            size=request.volume_size, name=name, metadata=dict(request.metadata),
            availability_zone=self.settings.availability_zone,
            description=f"lando-ssh data volume of {request.name}"), find)
        volume_id = str(volume.id)
        deadline = time.monotonic() + self.settings.resource_timeout
        while True:
            current = self._retrying(f"read volume {name}", lambda: self.conn.block_storage.get_volume(volume_id))
            if current.status == "available":
                return volume_id
            if current.status in ("error", "error_restoring", "error_extending"):
                raise VmFailed(f"volume {name} for {request.name} went to {current.status}")
            if time.monotonic() >= deadline:
                raise VmFailed(f"volume {name} was still {current.status} after {self.settings.resource_timeout:.0f} s")
            time.sleep(self.settings.api_poll_interval)

    def _create_port(self, request: VmRequest, network_id: str, group_ids: list[str], tags: list[str]) -> str:
        name = f"{request.name}-port"
        attrs: dict[str, Any] = {"network_id": network_id, "name": name,
                                 "description": f"lando-ssh port of {request.name}"}
        if group_ids:
            attrs["security_group_ids"] = group_ids

        def find() -> Any:
            return next(iter(self.conn.network.ports(name=name, network_id=network_id)), None)

        port = self._create_once(f"create port {name}", lambda: self.conn.network.create_port(**attrs), find)
        self._retrying(f"tag port {name}", lambda: self.conn.network.set_tags(port, tags))
        return str(port.id)

    def _create_floating_ip(self, request: VmRequest, pool_id: str, port_id: str, tags: list[str]) -> str:
        def find() -> Any:
            return next(iter(self.conn.network.ips(port_id=port_id)), None)

        fip = self._create_once(f"create a floating IP for {request.name}", lambda: self.conn.network.create_ip(
            floating_network_id=pool_id, port_id=port_id, description=f"lando-ssh floating IP of {request.name}"),
            find)
        self._retrying("tag floating IP", lambda: self.conn.network.set_tags(fip, tags))
        return str(fip.id)

    def _create_server(self, request: VmRequest, flavor: Flavor, image_id: str, port_id: str,
                       volume_id: str | None, metadata: dict[str, str], key_name: str | None) -> str:
        attrs: dict[str, Any] = {
            "name": request.name, "flavor_id": flavor.id, "image_id": image_id, "metadata": metadata,
            "networks": [{"port": port_id}],
            "user_data": base64.b64encode(request.user_data.encode()).decode(),
        }
        if self.settings.availability_zone:
            attrs["availability_zone"] = self.settings.availability_zone
        if key_name:
            attrs["key_name"] = key_name
        if volume_id:
            # the image as the root disk, the volume as the second disk, both present at first boot
            attrs["block_device_mapping_v2"] = [
                {"boot_index": 0, "source_type": "image", "destination_type": "local", "uuid": image_id,
                 "delete_on_termination": True},
                {"boot_index": -1, "source_type": "volume", "destination_type": "volume", "uuid": volume_id,
                 "delete_on_termination": False},
            ]

        def find() -> Any:
            return self._server_named(request)

        server = self._create_once(f"create server {request.name}", lambda: self.conn.compute.create_server(**attrs),
                                   find)
        return str(server.id)

    def _mark_with_server(self, server_id: str, made: list[tuple[str, str]], tags: list[str]) -> None:
        """Put the server's id on its volume, port and floating IP, so delete_vm finds them later."""
        mark = f"{META_VM_ID}={server_id}"
        net = self.conn.network
        for kind, rid in made:
            if kind == "volume":
                self._retrying("mark the volume", functools.partial(
                    self.conn.block_storage.set_volume_metadata, rid, **{META_VM_ID: server_id}))
            elif kind in ("port", "floating_ip"):  # tags are replaced whole: no need to read the resource first
                resource = (Port if kind == "port" else FloatingIP).existing(id=rid)
                self._retrying(f"mark {kind} {rid}", functools.partial(net.set_tags, resource, [*tags, mark]))

    def _server_named(self, request: VmRequest) -> Any:
        """Our live server of this name (same job and installation), if any."""
        pattern = "^" + re.escape(request.name) + "$"
        servers = self._retrying("list servers", lambda: list(self.conn.compute.servers(details=True, name=pattern)))
        for s in servers:
            meta = s.metadata or {}
            if (s.name == request.name and s.task_state != "deleting"
                    and all(meta.get(k) == v for k, v in request.metadata.items())):
                return s
        return None

    def _create_once(self, what: str, create: Callable[[], T], find: Callable[[], T | None]) -> T:
        """Create, retrying transient failures; before each retry look for what a lost answer may have made."""
        def made() -> T | None:
            try:
                return self._retrying(f"look for the result of {what}", find)
            except CloudError:
                return None

        return self._retrying(what, create, before_retry=made)

    def _undo(self, made: list[tuple[str, str]]) -> None:
        """Delete, newest first, what a failed create_vm made; leftovers are logged for the sweep."""
        left: list[str] = []
        for kind, rid in reversed(made):
            try:
                self._delete_one(kind, rid, left)
            except LandoError as e:
                left.append(f"{kind} {rid} ({e})")
        if left:
            log.error("after a failed create, could not delete %s; the sweep will find them by their metadata",
                      ", ".join(left))

    # ---- deleting ----------------------------------------------------------------------
    def _delete_one(self, kind: str, rid: str, left: list[str]) -> None:
        """Delete one resource we made (server, volume, floating_ip, port) and wait until it is gone."""
        if kind == "volume":
            self._delete_volume(rid, left)
            return
        net = self.conn.network
        delete, get = {"server": (self.conn.compute.delete_server, self._get_server),
                       "floating_ip": (net.delete_ip, net.get_ip),
                       "port": (net.delete_port, net.get_port)}[kind]
        label = "floating IP" if kind == "floating_ip" else kind
        self._delete(label, rid, functools.partial(delete, rid), functools.partial(get, rid), left)

    def _delete(self, kind: str, rid: str, delete: Callable[[], Any], get: Callable[[], Any],
                left: list[str]) -> None:
        """Delete one resource and wait until it is gone; on failure, name it in `left`."""
        try:
            self._retrying(f"delete {kind} {rid}", delete)
        except _NotFound:
            return
        except CloudError as e:
            left.append(f"{kind} {rid} ({e})")
            return
        deadline = time.monotonic() + self.settings.resource_timeout
        interval = min(0.2, self.settings.api_poll_interval)
        while True:
            try:
                if self._retrying(f"check {kind} {rid}", get) is None:
                    return
            except _NotFound:
                return
            except CloudError as e:
                left.append(f"{kind} {rid} ({e})")
                return
            if time.monotonic() >= deadline:
                left.append(f"{kind} {rid} (still there after {self.settings.resource_timeout:.0f} s)")
                return
            time.sleep(interval)
            interval = min(interval * 2, self.settings.api_poll_interval)

    def _delete_volume(self, volume_id: str, left: list[str]) -> None:
        deadline = time.monotonic() + self.settings.resource_timeout
        interval = min(0.2, self.settings.api_poll_interval)
        while True:  # Nova detaches the volume after the server is gone; Cinder refuses to delete it before
            try:
                volume = self._retrying(f"read volume {volume_id}",
                                        lambda: self.conn.block_storage.get_volume(volume_id))
            except _NotFound:
                return
            except CloudError as e:
                left.append(f"volume {volume_id} ({e})")
                return
            if volume.status not in ("in-use", "detaching", "attaching", "reserved", "creating"):
                break
            if time.monotonic() >= deadline:
                left.append(f"volume {volume_id} (still {volume.status} after {self.settings.resource_timeout:.0f} s)")
                return
            time.sleep(interval)
            interval = min(interval * 2, self.settings.api_poll_interval)
        if volume.status == "deleting":
            delete: Callable[[], Any] = lambda: None  # noqa: E731 - already on its way
        else:
            delete = lambda: self.conn.block_storage.delete_volume(volume_id)  # noqa: E731
        self._delete("volume", volume_id, delete, lambda: self.conn.block_storage.get_volume(volume_id), left)

    # ---- reading -----------------------------------------------------------------------
    def _get_server(self, vm_id: str) -> Any:
        try:
            return self._retrying(f"read server {vm_id}", lambda: self.conn.compute.get_server(vm_id))
        except _NotFound:
            return None

    def _vm_info(self, server: Any) -> VmInfo:
        meta = {str(k): str(v) for k, v in (server.metadata or {}).items()}
        status = str(server.status or "BUILD")
        if server.task_state == "deleting":
            status = "DELETED"
        fault = None
        if status == "ERROR":
            fault = (server.fault or {}).get("message") or "Nova gave no fault message"
        created = None
        if server.created_at:
            try:
                created = datetime.fromisoformat(str(server.created_at).replace("Z", "+00:00"))
            except ValueError:
                created = None
        try:
            port = int(meta.get(META_SSH_PORT, 22))
        except ValueError:
            port = 22
        return VmInfo(id=self._qualified(server.id), name=str(server.name), status=status,
                      address=self._address(server), port=port, metadata=meta, fault=fault,
                      flavor=self._server_flavor(server), created=created,
                      volume_ids=[v["id"] for v in server.attached_volumes or [] if v.get("id")], project=self.project)

    def _qualified(self, resource_id: Any) -> str:
        """A resource id as the driver hands it out: "<project>/<id>" outside the configured project."""
        return f"{self.project}/{resource_id}" if self.project is not None else str(resource_id)

    def _address(self, server: Any) -> str | None:
        """The floating IP if there is one, else the fixed IPv4 (on the configured network first)."""
        entries: list[tuple[str, dict[str, Any]]] = [
            (net, a) for net, addrs in (server.addresses or {}).items() for a in addrs]
        wanted = self.settings.network_name

        def rank(item: tuple[str, dict[str, Any]]) -> tuple[int, int, int]:
            net, a = item
            return (0 if a.get("OS-EXT-IPS:type") == "floating" else 1, 0 if net == wanted else 1,
                    0 if a.get("version") == 4 else 1)

        entries.sort(key=rank)
        return str(entries[0][1]["addr"]) if entries else None

    def _server_flavor(self, server: Any) -> Flavor | None:
        f = server.flavor
        if f is None:
            return None
        name = getattr(f, "original_name", None) or getattr(f, "name", None)
        if name and getattr(f, "vcpus", None) is not None:  # microversion >= 2.47 embeds the flavor
            known = next((k for k in self._flavors or [] if k.name == name), None)
            return Flavor(name=name, id=known.id if known else name, vcpus=f.vcpus or 0, ram_mb=f.ram or 0,
                          disk_gb=f.disk or 0)
        flavor_id = getattr(f, "id", None)
        flavors = self._flavors if self._flavors is not None else self.flavors()
        return next((k for k in flavors if k.id == flavor_id), None)

    # ---- errors and retries ------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T], before_retry: Callable[[], T | None] | None = None) -> T:
        """`call`, with transient failures retried `api_retries` times and errors translated; `before_retry`
        may find that a failed call's work was done after all (its answer was lost), and return that."""
        if self.project is not None:
            what = f"{what} in project {self.project!r}"
        delay = self.settings.api_retry_delay
        for attempt in range(self.settings.api_retries + 1):
            try:
                return self._translated(what, call)
            except _Transient as e:
                if attempt == self.settings.api_retries:
                    # a create that gave up is final: no caller may retry it as a transient failure
                    unreachable = isinstance(e, _Unreachable) and before_retry is None
                    raise (_Unreachable if unreachable else CloudError)(
                        f"{what} failed {attempt + 1} times; last: {e}") from None
                log.warning("%s failed (%s); retrying in %.1f s", what, e, delay)
                time.sleep(delay)
                delay *= 2
                found = before_retry() if before_retry is not None else None
                if found is not None:
                    return found
        raise AssertionError("unreachable")

    def _translated(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except os_exc.HttpException as e:
            raise _translate_http(what, e.status_code, _details(e), self.project) from None
        except ks_exc.http.HttpError as e:
            raise _translate_http(what, e.http_status, str(e.message or e), self.project) from None
        except (ks_exc.ConnectFailure, ks_exc.ConnectionError, ks_exc.RetriableConnectionFailure,
                requests.ConnectionError) as e:
            raise _Unreachable(f"{what}: cannot reach the cloud: {_connection_reason(e)}") from None
        except ks_exc.DiscoveryFailure as e:
            if isinstance(e.__context__, ks_exc.ConnectFailure) or "Unable to establish connection" in str(e):
                raise _Unreachable(f"{what}: cannot reach the cloud: {_connection_reason(e)}") from None
            raise CloudError(f"{what}: the cloud's service catalog or version discovery failed: {_short(e)}") from None
        except ks_exc.EndpointNotFound as e:
            raise CloudError(f"{what}: the cloud has no such service endpoint: {_short(e)}") from None
        except ks_exc.ClientException as e:
            raise CloudError(f"{what}: {_short(e)}") from None
        except os_exc.SDKException as e:
            raise CloudError(f"{what}: {_short(e)}") from None


class _Unreachable(_Transient):
    pass


class _AuthRefused(CloudError):
    pass


class _NotFound(CloudError):
    pass


class _Conflict(CloudError):
    pass


def _translate_http(what: str, status: int | None, details: str, project: str | None = None) -> CloudError:
    if status == 413 and "rate-limited" in details:  # Nova's old rate limiting: wait, like a 429
        return _Transient(f"{what}: HTTP 413: {details}")
    if status in (403, 409, 413) and _QUOTA_WORDS.search(details):
        return QuotaExceeded(quota_reason(details, project))
    if status == 401:
        return _AuthRefused(f"{what}: {details or 'unauthorized'}")
    if status == 404:
        return _NotFound(f"{what}: {details or 'not found'}")
    if status == 409:
        return _Conflict(f"{what}: {details}")
    if status is None or status >= 500 or status == 429:
        return _Transient(f"{what}: HTTP {status}: {details}")
    return CloudError(f"{what}: {details} (HTTP {status})")


def quota_reason(message: str, project: str | None = None) -> str:
    """A reason a job can show while it waits, from a Nova/Cinder/Neutron quota message (naming the
    project when it is not the configured one)."""
    waiting = _waiting(project)
    m = _NOVA_QUOTA.search(message)
    if m:
        return f"{waiting}: {m.group(1)} {m.group(3)} of {m.group(4)}"
    m = _CINDER_COUNT.search(message)
    if m:
        return f"{waiting}: {m.group(1)} {m.group(2)} of {m.group(2)}"
    m = _CINDER_SIZE.search(message)
    if m:
        return f"{waiting}: volume {m.group(1)} {m.group(4)} of {m.group(3)} ({m.group(2)} more needed)"
    m = _NEUTRON_QUOTA.search(message)
    if m:
        names = ", ".join(n.strip(" '\"") for n in m.group(1).split(","))
        return f"{waiting}: {names} (none left)"
    m = _MAX_PORTS.search(message)
    if m:
        return f"{waiting}: {m.group(1).lower()} (none left)"
    return f"{waiting}: {message.strip().splitlines()[0] if message.strip() else 'the cloud is full'}"


def _waiting(project: str | None) -> str:
    return "waiting for quota" + (f" in project {project!r}" if project else "")


def _details(e: os_exc.HttpException) -> str:
    return str(e.details or e.message or e).strip()


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _age(created_at: Any, now: datetime) -> float:
    """Seconds since an OpenStack `created_at` timestamp (unknown or unreadable: very old)."""
    try:
        created = datetime.fromisoformat(str(created_at).replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)  # Cinder omits the zone; it is UTC
    return (now - created).total_seconds()


def _connection_reason(e: BaseException) -> str:
    """The OS's words ("Connection refused") out of a long requests/urllib3 message."""
    m = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(e))
    return m.group(1).strip() if m else _short(e)


def _tags(metadata: dict[str, str]) -> list[str]:
    """Neutron tags for our metadata (`key=value`; Neutron allows 60 characters per tag)."""
    return [f"{k}={v}"[:60] for k, v in sorted(metadata.items())]


def _named_or_only(wanted: str | None, search: list[Any], offered: list[Any], what: str, plural: str,
                   setting: str) -> str:
    """The id of `wanted` (a name or an id) among `search`, or of the only one `offered` when none is named;
    otherwise CloudNotFound listing what is offered."""
    names = ", ".join(sorted(n.name for n in offered)) or "none"
    if wanted:
        for n in search:
            if wanted in (n.id, n.name):
                return str(n.id)
        raise CloudNotFound(f"{what} {wanted!r} does not exist; {plural}: {names}")
    if len(offered) == 1:
        return str(offered[0].id)
    if not offered:
        raise CloudNotFound(f"the project sees no {plural}; create one, or set {setting} to one it may use")
    raise CloudNotFound(f"set {setting} to one of the {plural}: {names}")
