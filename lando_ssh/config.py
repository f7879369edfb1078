"""Reading and validating the YAML config, env overrides, defaults.

One file (`--config`, else `$LANDO_CONFIG`, else `/etc/lando_config.yml`, else built-in
defaults). lando's keys are kept where they mean the same thing (`work_queue`,
`cloud_settings`, `vm_settings`, `bespin_api`/`job_api`, `fake_cloud_service`,
`cwl_base_command`, `cwl_post_process_command`, `log_level`). Unknown keys and wrong types
are errors naming the file and the key. Environment overrides: `LANDO_<KEY>` for a top-level
key, `LANDO_<SECTION>__<KEY>` for a key in a section (e.g. `LANDO_WORK_QUEUE__HOST`).
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lando_ssh.errors import BadInput, ConfigError

DEFAULT_CONFIG_PATH = "/etc/lando_config.yml"
SYSTEM_DATA_DIR = "/var/lib/lando-ssh"


def default_data_dir(system: bool = False) -> str:
    """Where the job store, keys and local VMs live when the config names no data_dir: the service's
    (/var/lib/lando-ssh) for a system config (a file under /etc) or a process running as root, so an
    admin with the daemon's config reads the daemon's jobs; else the user's own (~/.local/share/lando-ssh)."""
    if system or os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "lando-ssh")


def is_system_config(path: str | None) -> bool:
    return bool(path) and os.path.abspath(str(path)).startswith("/etc/")


@dataclass
class WorkQueueConfig:
    """RabbitMQ (lando's `work_queue`)."""

    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = "guest"  # noqa: S105 (RabbitMQ's own default)
    virtual_host: str = "/"
    listen_queue: str = "lando"
    status_exchange: str = "job_status"
    heartbeat: int = 60
    max_message_bytes: int = 65536
    # lando's worker credentials: accepted for compatibility, unused (no worker runs on the VM)
    worker_username: str | None = None
    worker_password: str | None = None


@dataclass
class CloudSettings:
    """OpenStack credentials and placement (lando's `cloud_settings`)."""

    auth_url: str | None = None
    username: str | None = None
    password: str | None = None
    user_domain_name: str = "Default"
    project_name: str | None = None
    project_domain_name: str = "Default"
    region_name: str | None = None
    application_credential_id: str | None = None
    application_credential_secret: str | None = None
    cloud: str | None = None  # a named cloud in clouds.yaml
    network_name: str | None = None
    security_groups: list[str] = field(default_factory=list)
    availability_zone: str | None = None
    allocate_floating_ips: bool = False
    floating_ip_pool_name: str | None = None
    # other projects jobs run in (bespin-api's vm_project); the sweep and `vms` always look there too
    projects: list[str] = field(default_factory=list)
    ssh_key_name: str | None = None  # a Nova keypair also put on every VM (lando's shared key), beside the job's own
    verify: bool = True
    api_retries: int = 4  # transient API errors (5xx, 429, connection reset) retried this many times
    api_retry_delay: float = 2.0  # seconds before the first retry; doubles each time
    api_poll_interval: float = 2.0  # seconds between checks while waiting for a volume or a deletion
    resource_timeout: float = 300.0  # longest wait for a volume to be ready or a resource to be gone


@dataclass
class LocalCloudConfig:
    """The local cloud driver: each VM is an sshd on loopback. Fault knobs are for tests."""

    root: str | None = None  # where VM directories live; default <data_dir>/local-cloud
    path: list[str] = field(default_factory=list)  # extra PATH entries on the "image" (cwltool's bin)
    boot_delay: float = 0.0  # seconds before the VM answers SSH
    fail_create: bool = False  # every create fails (as a cloud error)
    max_instances: int = 0  # the "cloud quota" of VMs; 0 = unlimited
    stuck_boots: int = 0  # the first N VMs of this cloud never finish booting (boot retries)
    # random faults, each a share (0..1) drawn per VM or per call (chaos runs: bench/chaos.py)
    fail_create_fraction: float = 0.0  # creates that fail (a cloud error)
    fail_delete_fraction: float = 0.0  # deletes that fail (a cloud error; the VM stays)
    hang_boot_fraction: float = 0.0  # VMs that never finish booting
    die_fraction: float = 0.0  # VMs that die die_after seconds after they booted (status ERROR)
    die_after: float = 30.0
    drop_ssh_every: float = 0.0  # seconds between the cuts of every VM's SSH connections (0: never)
    disk_mb: int = 0  # as root: the VM's work dir is a tmpfs of this size (a disk that can fill up); 0 = host disk
    #: the first N console reads of this server raise an unexpected exception (a bug's stand-in: the step is retried)
    internal_errors: int = 0
    flavors: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "m1.small": {"vcpus": 1, "ram_mb": 2048, "disk_gb": 20},
        "m1.medium": {"vcpus": 2, "ram_mb": 4096, "disk_gb": 40},
        "m1.large": {"vcpus": 4, "ram_mb": 8192, "disk_gb": 80},
    })
    images: list[str] = field(default_factory=lambda: ["local"])


@dataclass
class CloudConfig:
    driver: str = "local"  # local | openstack
    installation_id: str = "lando-ssh"  # tags every resource we create, so a sweep finds ours
    local: LocalCloudConfig = field(default_factory=LocalCloudConfig)


@dataclass
class VmConfig:
    """Defaults for each job's VM; a job's own flavor/image/volume_size win."""

    flavor: str | None = None  # None: the cheapest allowed flavor that fits the workflow's ResourceRequirement
    image: str = "local"
    volume_size: int = 0  # GB; 0 = no data volume
    user: str | None = None  # login user on the VM; default: the image's (local: the current user)
    work_dir: str = "/work"  # mount point of the data volume; jobs live below it
    boot_timeout: float = 600.0
    ssh_timeout: float = 300.0
    host_key_from_console: bool = True  # False: accept the first host key seen (opt-out, insecure)
    boot_retries: int = 2  # a VM stuck in boot past boot_timeout is deleted and the job tried on a new one
    keepalive: float = 120.0  # seconds a pool VM whose jobs are done waits for the next job; 0: deleted at once


@dataclass
class LimitsConfig:
    max_concurrent_jobs: int = 50
    max_vms: int = 0  # 0 = no limit beyond the cloud's quota
    max_cores: int = 0
    max_ram_gb: int = 0
    max_run_time: float = 0.0  # seconds per job's run step; 0 = none
    staging_timeout: float = 3600.0
    reserve_after: float = 600.0  # seconds a job waits before later, smaller jobs may not take what it needs


@dataclass
class PoolConfig:
    """The VM pool (docs/vm-pool.md): which jobs may share a VM, and whether several boot onto one flavor."""

    share: str = "job"  # job | owner | project | any (docs/vm-pool.md says why job is the default)
    pack: bool = True  # several waiting jobs on one larger flavor when it costs no more than their small ones


POOL_SHARES = ("job", "owner", "project", "any")


def _check_pool(config: Config, where: str) -> None:
    if config.pool.share not in POOL_SHARES:
        raise ConfigError(f"{where}: pool.share must be one of {', '.join(POOL_SHARES)} (which jobs may share a VM), "
                          f"not {config.pool.share!r}")
    if not config.vm.keepalive >= 0:  # (also refuses nan)
        raise ConfigError(f"{where}: vm.keepalive is the seconds an idle pool VM is kept for the next job: 0 or "
                          f"more, not {config.vm.keepalive:g}")


@dataclass
class FlavorsConfig:
    allow: str | None = None  # regex: flavors the scheduler may pick for jobs that name none (None: all)


@dataclass
class HealthConfig:
    interval: float = 60.0  # seconds between checks of a running job's VM over SSH when it does not answer
    grace: float = 300.0  # seconds a running job's VM may stay unreachable before the job errors


@dataclass
class SweepConfig:
    interval: float = 300.0  # seconds between the daemon's orphan sweeps (0: never)
    grace: float = 600.0  # seconds a resource of ours without a live job is left alone


@dataclass
class MetricsConfig:
    listen: str | None = None  # "HOST:PORT" for Prometheus /metrics, e.g. 127.0.0.1:9464 (None: off)


@dataclass
class WebConfig:
    listen: str | None = None  # "HOST:PORT" for the status page, e.g. 127.0.0.1:8080 (None: off)
    token: str | None = None  # set: cancel and restart from the page, after logging in with it (None: read-only)


@dataclass
class StoreConfig:
    url: str | None = None  # sqlite:///path | postgresql://...; default sqlite in data_dir
    lease_ttl: float = 60.0  # shared (PostgreSQL) store: seconds a server's claim on a job lasts unrenewed


@dataclass
class BespinApiConfig:
    url: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    #: where a job's results go when bespin-api gives it an output project (DukeDS there; an object store here):
    #: a swift:// or s3:// prefix naming {job_id}, and maybe {project_id} and {owner} (docs/bespin-api.md)
    output_url: str | None = None


#: what bespin_api.output_url may name: bespin's job id, its output project's project_id, its owner's username
BESPIN_OUTPUT_FIELDS = ("job_id", "project_id", "owner")


def _check_bespin(config: Config, where: str) -> None:
    """bespin_api.output_url: a swift:// or s3:// prefix of known fields, always {job_id} (so two jobs' results
    never mix), with a store for its scheme configured."""
    template = config.bespin_api.output_url if config.bespin_api is not None else None
    if template is None:
        return
    import string

    key = "bespin_api.output_url"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{where}: {key} is not a template of {{fields}}: {e}") from None
    named = set()
    for _text, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in BESPIN_OUTPUT_FIELDS or spec or conversion:
            given = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"{where}: {key} may name only " + ", ".join(f"{{{f}}}" for f in BESPIN_OUTPUT_FIELDS)
                              + f" (without a format or conversion), not {given}")
        named.add(name)
    if "job_id" not in named:
        raise ConfigError(f"{where}: {key} must name {{job_id}}, so that each job's results have a prefix of their "
                          f"own (e.g. swift://results/job-{{job_id}}/), not {template!r}")
    from lando_ssh.objectstore.urls import parse

    try:
        url = parse(template.format(job_id=1, project_id="p", owner="o"), "as job 1 of project p of o, it gives")
    except BadInput as e:
        raise ConfigError(f"{where}: {key} must be a swift://CONTAINER/PREFIX/ or s3://BUCKET/PREFIX/ template, "
                          f"not {template!r}: {e}") from None
    stores = config.object_store
    if not any(getattr(s, url.scheme) is not None for s in (stores, *stores.projects.values())):
        raise ConfigError(f"{where}: {key} is an {url.scheme}:// URL, but object_store.{url.scheme} is not configured")


@dataclass
class SwiftStoreConfig:
    """`swift://container/path` (object_store.swift). Keystone from cloud_settings when auth_url is omitted."""

    auth_url: str | None = None  # .../auth/v1.0 (v1 auth), or a Keystone v3 URL
    username: str | None = None
    password: str | None = None
    project_name: str | None = None  # Keystone: default cloud_settings'
    user_domain_name: str | None = None
    project_domain_name: str | None = None
    region_name: str | None = None
    temp_url_key: str | None = None  # the account's temp URL key, when the admin set one (else looked up/made)


@dataclass
class S3StoreConfig:
    """`s3://bucket/key` (object_store.s3): any S3 endpoint (Swift's s3api, Ceph, MinIO, AWS)."""

    endpoint: str | None = None  # None: AWS
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"


@dataclass
class ProjectStoresConfig:
    """object_store.projects.<project>: the credentials a project's jobs use instead of the server's, each store's
    other keys (auth_url, endpoint, region...) taken from the server's when not given."""

    swift: SwiftStoreConfig | None = None
    s3: S3StoreConfig | None = None


@dataclass
class ObjectStoreConfig:
    """Where `swift://` and `s3://` inputs and outputs live; see docs/object-storage.md."""

    swift: SwiftStoreConfig | None = None
    s3: S3StoreConfig | None = None
    grant_seconds: float = 21600.0  # how long a grant handed to a VM (temp URL, presigned URL) stays valid
    segment_mb: int = 64  # files larger go up in segments (Swift SLO, S3 multipart) of this size
    parallel: int = 4  # objects, and parts of one object, moved at once by the VM
    projects: dict[str, ProjectStoresConfig] = field(default_factory=dict)  # per project credentials

    def for_project(self, project: str | None) -> ObjectStoreConfig:
        """The stores a job of `project` uses: the project's credentials over the server's stores, when
        `projects` names it; the server's otherwise. A project's Swift store never takes the server's
        temp_url_key (its account is another's)."""
        mine = self.projects.get(project) if project else None
        if mine is None:
            return self
        swift, s3 = self.swift, self.s3
        if mine.swift is not None:
            swift = _over(self.swift or SwiftStoreConfig(), mine.swift, "temp_url_key")
        if mine.s3 is not None:
            s3 = _over(self.s3 or S3StoreConfig(), mine.s3)
        return dataclasses.replace(self, swift=swift, s3=s3, projects={})


def _over(base: Any, given: Any, *not_inherited: str) -> Any:
    """`base` with each key `given` sets (not None) replaced; `not_inherited` keys from `given` alone."""
    keep = {f.name: getattr(given, f.name) if f.name in not_inherited or getattr(given, f.name) is not None
            else getattr(base, f.name) for f in dataclasses.fields(base)}
    return type(base)(**keep)


@dataclass
class Config:
    log_level: str = "INFO"
    data_dir: str = field(default_factory=default_data_dir)
    output_dir: str | None = None  # base for job outputs; default <data_dir>/outputs
    store: StoreConfig = field(default_factory=StoreConfig)
    work_queue: WorkQueueConfig = field(default_factory=WorkQueueConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    cloud_settings: CloudSettings = field(default_factory=CloudSettings)
    bespin_api: BespinApiConfig | None = None
    vm: VmConfig = field(default_factory=VmConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    flavors: FlavorsConfig = field(default_factory=FlavorsConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    object_store: ObjectStoreConfig = field(default_factory=ObjectStoreConfig)
    cwl_base_command: list[str] | None = None  # default: the cloud's (cwltool; --no-container locally)
    cwl_post_process_command: list[str] | None = None
    cwl_pre_process_command: list[str] | None = None
    keep_vm_on_error: bool = False
    save_outputs_on_error: bool = True  # a failed run's partial outputs and logs are pulled, as cwltool leaves them
    poll_interval: float = 60.0  # longest wait between checks of a running workflow (its end is seen at once)
    progress_interval: float = 2.0  # seconds between progress updates of a long transfer (stderr, status)
    source: str = "built-in defaults"  # where this config came from (not a key)
    unused: list[str] = field(default_factory=list)  # lando keys accepted but meaning nothing here (not a key)

    @property
    def store_url(self) -> str:
        return self.store.url or "sqlite:///" + os.path.join(self.data_dir, "jobs.sqlite")

    @property
    def outputs_base(self) -> str:
        return self.output_dir or os.path.join(self.data_dir, "outputs")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.data_dir, "keys")

    @property
    def local_cloud_root(self) -> str:
        return self.cloud.local.root or os.path.join(self.data_dir, "local-cloud")


def load_config(path: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the config from `path`, `$LANDO_CONFIG`, /etc/lando_config.yml or defaults."""
    env = os.environ if env is None else env
    source = path or env.get("LANDO_CONFIG")
    data: dict[str, Any] = {}
    if source:
        data = _read_yaml(source)
    elif os.path.exists(DEFAULT_CONFIG_PATH):
        source = DEFAULT_CONFIG_PATH
        data = _read_yaml(source)
    where = source or "built-in defaults"
    data, unused = _apply_lando_aliases(data, where)
    from_env = _apply_env(data, env)
    try:
        config = _build(Config, data, where, "")
        _check_pool(config, where)
        _check_bespin(config, where)
    except ConfigError as e:  # a value from the environment: name the variable, not the file
        text = str(e)[len(where) + 2:]
        for key, name in from_env.items():
            if text.startswith((f"{key} ", f"unknown key {key}")):
                raise ConfigError(f"{name} (environment): {text}") from None
        raise
    config.source = where
    config.unused = unused
    if "data_dir" not in data:
        config.data_dir = default_data_dir(system=is_system_config(source))
    config.data_dir = os.path.expanduser(config.data_dir)
    if config.cloud.driver not in ("local", "openstack"):
        raise ConfigError(f"{where}: cloud.driver must be 'local' or 'openstack', not {config.cloud.driver!r}")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{where}: log_level must be one of DEBUG, INFO, WARNING, ERROR, not {config.log_level!r}")
    if config.flavors.allow is not None:
        import re
        try:
            re.compile(config.flavors.allow)
        except re.error as e:
            raise ConfigError(f"{where}: flavors.allow is not a valid regular expression: {e}") from None
    _check_object_store(config, where)
    return config


def _check_object_store(config: Config, where: str) -> None:
    """The object_store section's parts that hang together (its secrets are never repeated here)."""
    stores = config.object_store
    if stores.grant_seconds < 60:
        raise ConfigError(f"{where}: object_store.grant_seconds must be at least 60 (a grant must outlive the "
                          "transfer it is for)")
    if not 5 <= stores.segment_mb <= 5120:
        raise ConfigError(f"{where}: object_store.segment_mb must be between 5 and 5120 (S3's part sizes; "
                          f"Swift's default object limit is 5 GiB), not {stores.segment_mb}")
    if not 1 <= stores.parallel <= 64:
        raise ConfigError(f"{where}: object_store.parallel must be between 1 and 64, not {stores.parallel}")
    _check_stores(config, stores, where, "object_store")
    for name, mine in stores.projects.items():
        at = f"object_store.projects.{name}"
        if mine.swift is not None and not (mine.swift.username and mine.swift.password):
            raise ConfigError(f"{where}: {at}.swift needs username and password (the project's credentials)")
        if mine.s3 is not None and not (mine.s3.access_key and mine.s3.secret_key):
            raise ConfigError(f"{where}: {at}.s3 needs access_key and secret_key (the project's credentials)")
        _check_stores(config, stores.for_project(name), where, at)


def _check_stores(config: Config, stores: ObjectStoreConfig, where: str, at: str) -> None:
    if (swift := stores.swift) is not None:
        if swift.auth_url and not (swift.username and swift.password):
            raise ConfigError(f"{where}: {at}.swift.auth_url needs username and password too")
        if not swift.auth_url and not (config.cloud_settings.auth_url or config.cloud_settings.cloud):
            raise ConfigError(f"{where}: {at}.swift has no auth_url, and cloud_settings names no Keystone "
                              "(auth_url or cloud) to take it from")
    if (s3 := stores.s3) is not None and bool(s3.access_key) != bool(s3.secret_key):
        raise ConfigError(f"{where}: {at}.s3 needs access_key and secret_key together")


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        import yaml  # here, not at the top: a command run on the built-in defaults never needs it

        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, not a {type(data).__name__}")
    return data


def _yaml_problem(e: Exception) -> str:
    """Where and what, in one line: PyYAML's own text names an anonymous "<unicode string>" over several."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {f'{context}: ' if context else ''}{' '.join(str(problem).split())}"


_NOT_KEYS = ("source", "unused")

#: Keys of a lando 0.11.x config (lando/server/config.py, and lando/k8s/config.py for its Kubernetes
#: server) that mean nothing to lando-ssh, with why: accepted, so lando's file loads unchanged, and listed
#: as unused (Config.unused; the daemon logs them once at start).
LANDO_UNUSED_KEYS = {
    "commands": "lando's worker commands (stage_data_command, organize_output_command, save_output_command): "
                "lando-ssh runs its own steps on the VM over SSH",
    "cluster_api_settings": "lando's Kubernetes server: lando-ssh runs jobs on VMs",
    "data_store_settings": "lando's Kubernetes server (DukeDS credentials): lando-ssh does not use DukeDS",
    "run_workflow_settings": "lando's Kubernetes server: lando-ssh runs jobs on VMs",
    "record_output_project_settings": "lando's Kubernetes server: lando-ssh runs jobs on VMs",
    "storage_class_name": "lando's Kubernetes server: lando-ssh runs jobs on VMs",
    "base_stage_data_volume_size_in_g": "lando's Kubernetes server: lando-ssh runs jobs on VMs",
}
#: lando wrote log_level as Python's logging number as often as its name
_LOG_LEVEL_NUMBERS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _apply_lando_aliases(data: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Map lando's keys onto ours, so an existing lando config file works unchanged; the keys of lando's
    that mean nothing here go to `unused` (with the reason)."""
    data = dict(data)
    unused = [f"{key} ({why})" for key, why in LANDO_UNUSED_KEYS.items() if data.pop(key, None) is not None]
    level = data.get("log_level")
    if isinstance(level, int) and not isinstance(level, bool):
        if level not in _LOG_LEVEL_NUMBERS:
            raise ConfigError(f"{where}: log_level must be one of DEBUG, INFO, WARNING, ERROR (or lando's "
                              f"10, 20, 30, 40), not {level}")
        data["log_level"] = _LOG_LEVEL_NUMBERS[level]
    if "fake_cloud_service" in data:
        fake = data.pop("fake_cloud_service")
        if not isinstance(fake, bool):
            raise ConfigError(f"{where}: fake_cloud_service must be true or false")
        cloud = dict(data.get("cloud") or {})
        cloud.setdefault("driver", "local" if fake else "openstack")
        data["cloud"] = cloud
    if "job_api" in data:
        data.setdefault("bespin_api", data.pop("job_api"))
    if "vm_settings" in data:
        vs = data.pop("vm_settings") or {}
        if not isinstance(vs, dict):
            raise ConfigError(f"{where}: vm_settings must be a mapping")
        vm = dict(data.get("vm") or {})
        cs = dict(data.get("cloud_settings") or {})
        mapping = {"worker_image_name": (vm, "image"), "default_favor_name": (vm, "flavor"),
                   "default_flavor_name": (vm, "flavor"), "network_name": (cs, "network_name"),
                   "floating_ip_pool_name": (cs, "floating_ip_pool_name"),
                   "allocate_floating_ips": (cs, "allocate_floating_ips"), "ssh_key_name": (cs, "ssh_key_name")}
        for key, value in vs.items():
            if key in mapping:
                target, name = mapping[key]
                target.setdefault(name, value)
            elif key in ("cwl_base_command", "cwl_post_process_command", "cwl_pre_process_command"):
                data.setdefault(key, value)
            else:
                raise ConfigError(f"{where}: unknown key vm_settings.{key}")
        data["vm"], data["cloud_settings"] = vm, cs
    for key in ("cwl_base_command", "cwl_post_process_command", "cwl_pre_process_command"):
        if isinstance(data.get(key), str):  # lando allowed a string; we keep argv lists
            import shlex
            data[key] = shlex.split(data[key])
    return data, unused


def _apply_env(data: dict[str, Any], env: typing.Mapping[str, str]) -> dict[str, str]:
    """Put LANDO_* values into data; returns which key came from which variable."""
    applied = {}
    for name, value in env.items():
        if not name.startswith("LANDO_") or name == "LANDO_CONFIG":
            continue
        parts = [p.lower() for p in name[len("LANDO_"):].split("__")]
        target = data
        for p in parts[:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                break
        else:
            target[parts[-1]] = _env_value(value)
            applied[".".join(parts)] = name
    return applied


def _env_value(value: str) -> Any:
    """An environment value as YAML would read it; plain words and numbers without loading YAML."""
    if not value or value.replace("/", "").replace("-", "").replace("_", "").replace(".", "").isalnum():
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False, "null": None}
        return words.get(value.lower(), value) if value else value
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # not YAML: the words themselves (the key's type check says if they do not fit)


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {prefix}{key}")
        kwargs[key] = _coerce(hints[key], value, where, prefix + key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, where, key + ".")  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, not {_kind(value)}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, not {_kind(value)}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(item, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, not {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be a whole number, not {_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: {key} must be a number, not {_kind(value)}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: {key} must be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
