"""Inputs from and outputs to object storage, against the real OpenStack Swift of ../shared/swift (its Swift
protocol and its S3 protocol): downloaded and uploaded by the VM with grants the server signs, checked, and
never leaving a half object looking whole; secrets nowhere in the job's record, log or docs."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, WORKFLOWS, Lando

from lando_ssh.errors import BadInput, ConfigError, InputMissing, ObjectStoreRefused

SWIFT_DIR = REPO.parent / "shared" / "swift"
PROXY = "http://127.0.0.1:18080"
AUTH_URL = f"{PROXY}/auth/v1.0"
USER, KEY = "test:tester", "testing"  # ../shared/swift/README: admin of AUTH_test; also the S3 key pair
LANDO_OBJECTS = REPO / "remote_scripts" / "lando-objects"
MiB = 1024 * 1024


def _answers() -> bool:
    try:
        with urllib.request.urlopen(f"{PROXY}/healthcheck", timeout=2) as r:  # noqa: S310 (our own URL)
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def swift_service() -> Iterator[str]:
    """The real Swift of ../shared/swift: started (setup.sh) when its proxy does not answer, and then stopped
    (stop.sh) at the end; one already running is left as it was."""
    started = False
    if not _answers():
        proc = subprocess.run(["bash", str(SWIFT_DIR / "setup.sh")], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0 and _answers(), f"../shared/swift/setup.sh failed:\n{proc.stdout}\n{proc.stderr}"
        started = True
    yield PROXY
    if started:
        subprocess.run(["bash", str(SWIFT_DIR / "stop.sh")], capture_output=True, timeout=120)


def swift() -> Any:
    import swiftclient

    return swiftclient.Connection(authurl=AUTH_URL, user=USER, key=KEY)


def s3(secret: str = KEY) -> Any:
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=PROXY, aws_access_key_id=USER, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


@dataclass
class Containers:
    """Containers (S3 buckets are Swift containers too) made for one test, with their segments; emptied and
    deleted at its end."""

    names: list[str]

    def new(self) -> str:
        name = f"lando-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        swift().put_container(name)
        return name

    def remove(self) -> None:
        conn = swift()
        for base in self.names:
            for name in (base, f"{base}_segments", f"{base}+segments"):
                try:
                    _h, objects = conn.get_container(name, full_listing=True)
                except Exception:  # noqa: BLE001 (never made)
                    continue
                for o in objects:
                    conn.delete_object(name, o["name"])
                conn.delete_container(name)


@pytest.fixture
def containers(swift_service: str) -> Iterator[Containers]:
    made = Containers([])
    yield made
    made.remove()


def store_settings(**changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "segment_mb": 5,
        "swift": {"auth_url": AUTH_URL, "username": USER, "password": KEY},
        "s3": {"endpoint": PROXY, "access_key": USER, "secret_key": KEY, "region": "us-east-1"},
    }
    for k, v in changes.items():
        settings[k] = {**settings.get(k, {}), **v} if isinstance(v, dict) else v
    return settings


def put_slo(container: str, name: str, data: bytes, segment: int) -> None:
    """`data` as a static large object of `segment`-byte segments, as `swift upload --use-slo` makes it."""
    conn = swift()
    conn.put_container(f"{container}_segments")
    manifest = []
    for n, at in enumerate(range(0, len(data), segment)):
        part = data[at:at + segment]
        conn.put_object(f"{container}_segments", f"{name}/{n:08d}", part)
        manifest.append({"path": f"/{container}_segments/{name}/{n:08d}", "etag": hashlib.md5(part).hexdigest(),
                         "size_bytes": len(part)})
    conn.put_object(container, name, json.dumps(manifest), query_string="multipart-manifest=put")


def object_bytes(container: str, name: str) -> bytes:
    return swift().get_object(container, name)[1]


def no_secret_in(text: str, what: str) -> None:
    for secret in ("temp_url_sig", "X-Amz-Signature", "X-Amz-Credential", "Temp-URL-Key", f"secret_key: {KEY}",
                   f'"{KEY}"', f"password: {KEY}", "AUTH_tk"):
        assert secret not in text, f"{secret!r} in {what}"


# -- end to end, through the CLI, the local cloud's VM and the real Swift ------------------------------

def test_inputs_from_swift_and_s3_are_fetched_by_the_vm_and_outputs_go_to_swift_whole(
        lando: Lando, containers: Containers, tmp_path: Path):
    ins, outs = containers.new(), containers.new()
    reads = os.urandom(12 * MiB + 123)
    put_slo(ins, "sample/reads.bam", reads, 5 * MiB)  # a segmented input: fetched in parallel, each part checked
    swift().put_object(ins, "sample/reads.bam.bai", b"INDEX\n")
    s3().put_object(Bucket=ins, Key="refs/a.txt", Body=b"alpha\n")
    s3().put_object(Bucket=ins, Key="refs/sub/b.txt", Body=b"beta\n")
    lando.write_config(object_store=store_settings(), progress_interval=0.2)
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"swift://{ins}/sample/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"s3://{ins}/refs"},
                                     "megabytes": 12}))

    job_id = lando.submit(WORKFLOWS / "objects.cwl", order, "--output-url", f"swift://{outs}/run/")
    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    job = lando.status(job_id)
    assert job["state"] == "F"
    output = job["output"]
    assert output["report"]["location"] == f"swift://{outs}/run/report.txt" and "path" not in output["report"]
    assert output["big"]["secondaryFiles"][0]["location"] == f"swift://{outs}/run/big.md5"
    assert output["copy"]["location"] == f"swift://{outs}/run/copy"
    report = object_bytes(outs, "run/report.txt")
    assert report.startswith(reads + b"INDEX\n")  # the segmented input arrived whole, its .bai beside it
    assert b"./a.txt: alpha\n./sub/b.txt: beta\n" in report  # the Directory, with its subdirectory
    assert object_bytes(outs, "run/copy/sub/b.txt") == b"beta\n"
    # 12 MiB went up in 5 MiB segments: one static large object, whole, its segments those of this upload only
    head = swift().head_object(outs, "run/big.bin")
    assert head["x-static-large-object"] == "True" and int(head["content-length"]) == 12 * MiB
    big = object_bytes(outs, "run/big.bin")
    assert hashlib.md5(big).hexdigest() == object_bytes(outs, "run/big.md5").decode().strip()
    assert len(swift().get_container(f"{outs}_segments", prefix="run/big.bin/")[1]) == 3
    for doc in ("README.md", "logs/job-data.json", "logs/cwl-output.json", "scripts/job-order.json"):
        swift().head_object(outs, f"run/docs/{doc}")
    assert json.loads(object_bytes(outs, "run/docs/logs/cwl-output.json")) == output
    assert "stored" in proc.stderr and f"swift://{outs}/run/" in proc.stderr
    # no credential, key or grant in the log, the job's record, its docs, or the server's files about it
    no_secret_in(proc.stderr, "the job's log")
    no_secret_in(lando.cli("status", str(job_id), "--json").stdout, "the job's record")
    for doc in ("README.md", "logs/job-data.json", "scripts/job-order.json"):
        no_secret_in(object_bytes(outs, f"run/docs/{doc}").decode(), doc)
    for path in lando.data_dir.rglob("*"):
        if path.is_file() and path.suffix != ".sqlite":
            no_secret_in(path.read_text(errors="replace"), str(path))


def test_cwl_runner_takes_object_urls_in_its_job_order_and_prints_the_uploaded_locations(
        lando: Lando, containers: Containers, tmp_path: Path):
    ins, outs = containers.new(), containers.new()
    s3().put_object(Bucket=ins, Key="reads.bam", Body=b"READS\n")
    s3().put_object(Bucket=ins, Key="reads.bam.bai", Body=b"INDEX\n")
    s3().put_object(Bucket=ins, Key="reads.idx", Body=b"IDX\n")  # an optional secondary file, present here
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    lando.write_config(object_store=store_settings())
    order = tmp_path / "job.json"
    order.write_text(json.dumps({"reads": {"class": "File", "location": f"s3://{ins}/reads.bam"},
                                 "dir": {"class": "Directory", "location": f"swift://{ins}/refs/"},
                                 "megabytes": 11}))

    proc = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"), "--output-url",
                     f"s3://{outs}/results", str(WORKFLOWS / "objects.cwl"), str(order))

    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["big"]["location"] == f"s3://{outs}/results/big.bin"
    assert printed["copy"]["listing"][0]["location"] == f"s3://{outs}/results/copy/a.txt"
    head = s3().head_object(Bucket=outs, Key="results/big.bin")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == 11 * MiB  # multipart: 5 + 5 + 1 MiB
    big = s3().get_object(Bucket=outs, Key="results/big.bin")["Body"].read()
    assert hashlib.md5(big).hexdigest() == object_bytes(outs, "results/big.md5").decode().strip()
    report = s3().get_object(Bucket=outs, Key="results/report.txt")["Body"].read()
    assert report.startswith(b"READS\nINDEX\n") and b"reads.idx" in report
    # cwl-runner's outputs alone: lando's docs stay with the job's record
    keys = [o["Key"] for o in s3().list_objects_v2(Bucket=outs)["Contents"]]
    assert not [k for k in keys if "/docs/" in k]
    assert not list((tmp_path / "out").glob("*"))
    no_secret_in(proc.stderr, "cwl-runner's stderr")


@pytest.mark.parametrize("scheme", ["swift", "s3"])
def test_a_missing_input_object_fails_the_job_with_a_sentence_naming_it(lando: Lando, containers: Containers,
                                                                         tmp_path: Path, scheme: str):
    ins = containers.new()
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    lando.write_config(object_store=store_settings())
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"{scheme}://{ins}/no/such.bam"},
                                     "dir": {"class": "Directory", "location": f"swift://{ins}/refs"}}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order)

    proc = lando.cli("job", str(job_id))

    assert proc.returncode != 0
    job = lando.status(job_id)
    assert job["state"] == "E" and job["step"] == "S"
    assert f"{scheme}://{ins}/no/such.bam does not exist" in job["error"]


@pytest.mark.parametrize("scheme", ["swift", "s3"])
def test_a_refused_credential_fails_the_job_naming_the_object_and_never_showing_the_secret(
        lando: Lando, containers: Containers, tmp_path: Path, scheme: str):
    ins = containers.new()
    swift().put_object(ins, "reads.bam", b"READS\n")
    swift().put_object(ins, "reads.bam.bai", b"INDEX\n")
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    wrong = "not-the-Secret-42"
    lando.write_config(object_store=store_settings(swift={"password": wrong}, s3={"secret_key": wrong}))
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"{scheme}://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"{scheme}://{ins}/refs"}}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order)

    proc = lando.cli("job", str(job_id))

    job = lando.status(job_id)
    assert proc.returncode != 0 and job["state"] == "E"
    assert re.search(f"refused lando-ssh's credential (reading|listing) {scheme}://{ins}/(reads.bam|refs/) ",
                     job["error"]), job["error"]
    assert wrong not in proc.stderr and wrong not in json.dumps(job)


def test_a_full_container_quota_fails_the_store_step_naming_the_object(lando: Lando, containers: Containers,
                                                                      tmp_path: Path):
    ins, outs = containers.new(), containers.new()
    swift().put_object(ins, "reads.bam", b"READS\n")
    swift().put_object(ins, "reads.bam.bai", b"INDEX\n")
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    swift().post_container(outs, {"X-Container-Meta-Quota-Bytes": str(512 * 1024)})
    lando.write_config(object_store=store_settings())
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"swift://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"swift://{ins}/refs"},
                                     "megabytes": 1}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order, "--output-url", f"swift://{outs}/run/")

    proc = lando.cli("job", str(job_id))

    job = lando.status(job_id)
    assert proc.returncode != 0 and (job["state"], job["step"]) == ("E", "O")
    assert f"refused swift://{outs}/run/big.bin: the container's quota is full" in job["error"]
    assert not [o for o in swift().get_container(outs)[1] if o["name"] == "run/big.bin"]


def test_objects_too_large_for_the_vms_disk_fail_staging_before_a_byte_moves(lando: Lando, containers: Containers,
                                                                            tmp_path: Path):
    ins = containers.new()
    swift().put_object(ins, "reads.bam", os.urandom(12 * MiB))
    swift().put_object(ins, "reads.bam.bai", b"INDEX\n")
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    lando.write_config(object_store=store_settings(), cloud={"local": {"disk_mb": 8}})
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"swift://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"swift://{ins}/refs"}}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order)

    proc = lando.cli("job", str(job_id))

    job = lando.status(job_id)
    assert proc.returncode != 0 and (job["state"], job["step"]) == ("E", "S")
    assert "the VM's disk is too small for the objects: they need 12.0 MiB" in job["error"]


OTHER_USER, OTHER_KEY = "test2:tester2", "testing2"  # ../shared/swift/README: another account, AUTH_test2


def test_a_jobs_project_uses_its_own_credentials_from_the_config_and_no_other_job_does(
        lando: Lando, containers: Containers, tmp_path: Path):
    ins, outs = containers.new(), containers.new()  # in AUTH_test, which the server's own credentials cannot see
    swift().put_object(ins, "reads.bam", b"READS\n")
    swift().put_object(ins, "reads.bam.bai", b"INDEX\n")
    s3().put_object(Bucket=ins, Key="refs/a.txt", Body=b"alpha\n")
    lando.write_config(object_store=store_settings(
        swift={"username": OTHER_USER, "password": OTHER_KEY}, s3={"access_key": OTHER_USER, "secret_key": OTHER_KEY},
        projects={"lab": {"swift": {"username": USER, "password": KEY}, "s3": {"access_key": USER,
                                                                               "secret_key": KEY}}}))
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"swift://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"s3://{ins}/refs"}}))
    lab = lando.submit(WORKFLOWS / "objects.cwl", order, "--project", "lab", "--output-url", f"swift://{outs}/run/")
    other = lando.submit(WORKFLOWS / "objects.cwl", order)

    lab_run, other_run = lando.cli("job", str(lab)), lando.cli("job", str(other))

    assert lab_run.returncode == 0, lab_run.stderr
    job = lando.status(lab)
    assert job["state"] == "F" and job["output"]["report"]["location"] == f"swift://{outs}/run/report.txt"
    assert object_bytes(outs, "run/report.txt").startswith(b"READS\nINDEX\n")  # written with the lab's account
    failed = lando.status(other)
    assert other_run.returncode != 0 and (failed["state"], failed["step"]) == ("E", "S")
    assert re.search(f"(swift://{ins}/reads.bam|s3://{ins}/refs/) does not exist \\(.* {OTHER_USER}\\)\\)$",
                     failed["error"]), failed["error"]  # the server's own account holds no such object
    # the project's credentials are in the config alone: not in the job's record, its log, its docs, its files
    for text, what in ((json.dumps(job), "the job's record"), (lab_run.stderr, "the job's log"),
                       (object_bytes(outs, "run/docs/logs/job-data.json").decode(), "the job's docs")):
        assert KEY not in text and OTHER_KEY not in text, what
    for path in lando.data_dir.rglob("*"):
        if path.is_file() and path.suffix not in (".sqlite", ".pickle"):
            no_secret_in(path.read_text(errors="replace"), str(path))


def test_a_project_with_no_store_of_its_own_uses_the_servers(tmp_path: Path):
    from lando_ssh.config import load_config
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse

    path = tmp_path / "lando.yml"
    path.write_text(yaml.safe_dump({"object_store": store_settings(
        swift={"temp_url_key": "the-accounts-key"},
        projects={"lab": {"swift": {"username": OTHER_USER, "password": OTHER_KEY}}})}))
    config = load_config(str(path), env={})

    lab = config.object_store.for_project("lab")
    assert (lab.swift.auth_url, lab.swift.username, lab.swift.temp_url_key) == (AUTH_URL, OTHER_USER, None)
    assert lab.s3 == config.object_store.s3  # the project names no S3 credentials: the server's
    assert config.object_store.for_project("elsewhere") is config.object_store
    assert config.object_store.for_project(None) is config.object_store
    swift_store = store_for(config, parse("swift://c/o"), "lab")
    assert swift_store.describe() == f"Swift at {AUTH_URL} (user {OTHER_USER}, project lab's credentials)"
    assert store_for(config, parse("s3://b/k"), "lab").describe() == f"S3 at {PROXY} (access key {USER})"


def test_a_jobs_project_is_the_one_its_source_names():
    from lando_ssh.model import Job
    from lando_ssh.runner_args import split
    from lando_ssh.usage import named_project

    assert named_project(Job(id=1, name="a", workflow="w", job_order={}, facts={"project": "lab"})) == "lab"
    bespin = {"bespin": {"cloud_settings": {"vm_project": "genomics"}}}  # bespin-api's job
    assert named_project(Job(id=1, name="a", workflow="w", job_order={}, facts=bespin)) == "genomics"
    assert named_project(Job(id=1, name="a", workflow="w", job_order={}, facts={})) is None
    words = split(["--project", "lab", "--outdir", "o", "wf.cwl", "job.yml", "--reads", "r.bam"])
    assert words.lando[:2] == ["--project", "lab"] and "--project" not in words.for_cwltool + words.inputs


def test_an_output_url_that_holds_objects_is_refused_at_submit(lando: Lando, containers: Containers):
    outs = containers.new()
    swift().put_object(outs, "run/old.txt", b"someone's\n")
    lando.write_config(object_store=store_settings())

    proc = lando.cli("submit", str(WORKFLOWS / "no_inputs.cwl"), "--output-url", f"swift://{outs}/run")

    assert proc.returncode == 2
    assert f"swift://{outs}/run/ already holds objects (swift://{outs}/run/old.txt)" in proc.stderr


def test_an_object_input_without_its_store_configured_is_refused_at_submit(lando: Lando, tmp_path: Path):
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": "s3://bucket/reads.bam"},
                                     "dir": {"class": "Directory", "location": "s3://bucket/refs"}}))

    proc = lando.cli("submit", str(WORKFLOWS / "objects.cwl"), str(order))

    assert proc.returncode == 2 and "no S3 store configured (object_store.s3" in proc.stderr


# -- the VM's lando-objects, run here against the real Swift ------------------------------------------

def run_objects(plan: dict[str, Any]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LANDO_OBJECTS)], input=json.dumps(plan), capture_output=True,
                          text=True, timeout=120)


def stores(**changes: Any) -> Any:
    from lando_ssh.config import Config, ObjectStoreConfig, S3StoreConfig, SwiftStoreConfig

    settings = store_settings(**changes)
    config = Config(object_store=ObjectStoreConfig(swift=SwiftStoreConfig(**settings["swift"]),
                                                   s3=S3StoreConfig(**settings["s3"])))
    return config


def big_object(containers: Containers, tmp_path: Path, url: str, size: int) -> tuple[Path, Any, Any]:
    """A file of `size` random bytes to upload to `url` ({c}: a new container), the URL parsed and its store."""
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    parsed = parse(url.format(c=containers.new()))
    return src, parsed, store_for(stores(), parsed)


def answered(proc: subprocess.CompletedProcess) -> Any:
    """The answer of a lando-objects run that succeeded."""
    from lando_ssh.objectstore.vmplan import Answer

    assert proc.returncode == 0, proc.stderr
    answer = Answer()
    answer.read(proc.stdout.encode())
    return answer


def put_whole(upload: Any, src: Path) -> Any:
    """lando-objects sends `src` as `upload` plans it; its answer (the parts' ETags)."""
    from lando_ssh.objectstore.vmplan import put_plan

    return answered(run_objects(json.loads(put_plan([(upload, str(src))], 4, 0.1))))


@pytest.mark.parametrize("scheme", ["swift", "s3"])
def test_a_segmented_upload_cut_short_leaves_no_object_and_a_whole_one_reports_its_progress(
        containers: Containers, tmp_path: Path, scheme: str):
    from lando_ssh.objectstore.vmplan import put_plan

    src, url, store = big_object(containers, tmp_path, f"{scheme}://{{c}}/big.bin", 11 * MiB)
    outs = url.container
    upload = store.start_put(url, 11 * MiB, 5 * MiB)
    assert len(upload.urls) == 3
    broken = upload.urls[:2] + [upload.urls[2].replace("sig=", "sig=0").replace("Signature=", "Signature=0")]
    cut = type(upload)(upload.url, upload.size, broken, upload.part_size, upload.md5_header, upload.upload_id,
                       upload.extra)

    proc = run_objects(json.loads(put_plan([(cut, str(src))], 4, 0.1)))

    assert proc.returncode == 1
    assert f"refused the grant lando-ssh made for {scheme}://{outs}/big.bin" in proc.stderr
    assert "sig=" not in proc.stderr + proc.stdout and "Signature" not in proc.stderr + proc.stdout
    with pytest.raises(InputMissing):  # two parts went up, and nothing looks like the object
        store.stat(url)

    upload = store.start_put(url, 11 * MiB, 5 * MiB)  # a new attempt (an earlier one's parts: see the docs)
    answer = put_whole(upload, src)
    assert answer.bytes == 11 * MiB
    store.finish_put(upload, answer.result["items"][0]["etags"])
    info = store.stat(url)
    assert info.size == 11 * MiB
    got = object_bytes(outs, "big.bin")
    assert got == src.read_bytes()


def parts_left(scheme: str, container: str, key: str) -> list[str]:
    """The segments (Swift: lando's, in `<container>_segments`) or parts (S3, kept by Swift's s3api in
    `<container>+segments`) of `key` the store holds, and (S3) its multipart uploads still open."""
    held = f"{container}_segments" if scheme == "swift" else f"{container}+segments"
    try:
        names = [o["name"] for o in swift().get_container(held, prefix=f"{key}/", full_listing=True)[1]]
    except Exception:  # noqa: BLE001 (no such container: nothing held)
        names = []
    if scheme == "s3":
        names += [f"open upload {u['UploadId']}" for u in
                  s3().list_multipart_uploads(Bucket=container, Prefix=key).get("Uploads", []) if u["Key"] == key]
    return names


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A URL whose server takes the connection and never answers: a PUT to it hangs until its sender dies."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/never"


@pytest.mark.parametrize("scheme", ["swift", "s3"])
def test_an_upload_killed_mid_transfer_leaves_no_object_and_its_restart_removes_the_parts_it_sent(
        containers: Containers, tmp_path: Path, scheme: str):
    from lando_ssh.objectstore.vmplan import put_plan

    src, url, store = big_object(containers, tmp_path, f"{scheme}://{{c}}/run/big.bin", 11 * MiB)
    outs = url.container
    first = store.start_put(url, 11 * MiB, 5 * MiB)
    with black_hole() as never:  # the third part never ends: lando-objects is killed with two parts sent
        plan = put_plan([(dataclasses.replace(first, urls=[*first.urls[:2], never]), str(src))], 4, 0.05)
        proc = subprocess.Popen([sys.executable, str(LANDO_OBJECTS)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None
        proc.stdin.write(plan)
        proc.stdin.close()
        wait_for(lambda: len([n for n in parts_left(scheme, outs, "run/big.bin") if not n.startswith("open")]) >= 2,
                 "two parts stored")
        proc.kill()
        assert proc.wait() == -9

    with pytest.raises(InputMissing):  # two parts are in the store, and nothing looks like the object
        store.stat(url)
    assert len(parts_left(scheme, outs, "run/big.bin")) >= 2

    second = store.start_put(url, 11 * MiB, 5 * MiB)  # the upload restarted (the O step again, after a crash)

    left = parts_left(scheme, outs, "run/big.bin")
    assert not [n for n in left if str(first.upload_id) in n], left  # the first upload's parts: gone
    store.finish_put(second, put_whole(second, src).result["items"][0]["etags"])
    assert store.stat(url).size == 11 * MiB
    assert object_bytes(outs, "run/big.bin") == src.read_bytes()
    # what is left is the whole object's own three parts, of the second upload alone
    left = parts_left(scheme, outs, "run/big.bin")
    assert not [n for n in left if n.startswith("open")]
    ours = [n for n in left if n.rstrip("/").rsplit("/", 1)[-1].isdigit()]
    assert len(ours) == 3 and all(str(second.upload_id) in n for n in ours), left


def test_a_restarted_upload_of_a_whole_swift_object_keeps_it_whole_until_the_new_one_replaces_it(
        containers: Containers, tmp_path: Path):
    src, url, store = big_object(containers, tmp_path, "swift://{c}/big.bin", 0)
    outs = url.container

    def upload(data: bytes) -> Any:
        src.write_bytes(data)
        made = store.start_put(url, len(data), 5 * MiB)
        return made, put_whole(made, src).result["items"][0]["etags"]

    old = os.urandom(11 * MiB)
    store.finish_put(*upload(old))
    new = os.urandom(11 * MiB)
    made, etags = upload(new)  # a second upload of the object: the old one's segments were kept by start_put

    assert object_bytes(outs, "big.bin") == old
    store.finish_put(made, etags)
    assert object_bytes(outs, "big.bin") == new
    assert len(parts_left("swift", outs, "big.bin")) == 3


@pytest.mark.parametrize("scheme", ["swift", "s3"])
def test_an_upload_whose_vm_side_failed_is_aborted_leaving_no_part(containers: Containers, tmp_path: Path,
                                                                     scheme: str):
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.objectstore.vmplan import put_plan

    outs = containers.new()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MiB))
    url = parse(f"{scheme}://{outs}/big.bin")
    store = store_for(stores(), url)
    upload = store.start_put(url, 11 * MiB, 5 * MiB)
    refused = dataclasses.replace(upload, urls=[*upload.urls[:2], upload.urls[2].replace("sig=", "sig=0")
                                                .replace("Signature=", "Signature=0")])
    proc = run_objects(json.loads(put_plan([(refused, str(src))], 4, 0.1)))
    assert proc.returncode == 1 and len(parts_left(scheme, outs, "big.bin")) >= 2

    store.abort_put(upload)

    assert parts_left(scheme, outs, "big.bin") == []
    with pytest.raises(InputMissing):
        store.stat(url)


def test_an_output_upload_refused_mid_way_fails_the_job_and_leaves_no_segment(lando: Lando, containers: Containers,
                                                                              tmp_path: Path):
    ins, outs = containers.new(), containers.new()
    swift().put_object(ins, "reads.bam", b"READS\n")
    swift().put_object(ins, "reads.bam.bai", b"INDEX\n")
    swift().put_object(ins, "refs/a.txt", b"alpha\n")
    # 12 MiB go up as segments of 5, 5 and 2 MiB at once: the last fits in the quota, the others are refused
    swift().put_container(f"{outs}_segments", {"X-Container-Meta-Quota-Bytes": str(3 * MiB)})
    lando.write_config(object_store=store_settings())
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"swift://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"swift://{ins}/refs"},
                                     "megabytes": 12}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order, "--output-url", f"swift://{outs}/run/")

    proc = lando.cli("job", str(job_id))

    job = lando.status(job_id)
    assert proc.returncode != 0 and (job["state"], job["step"]) == ("E", "O")
    assert f"refused swift://{outs}/run/big.bin: the container's quota is full" in job["error"]
    assert parts_left("swift", outs, "run/big.bin") == []  # the segment that went in was deleted
    assert not [o for o in swift().get_container(outs)[1] if o["name"] == "run/big.bin"]


def test_a_download_that_does_not_match_the_stores_checksum_leaves_nothing_behind(containers: Containers,
                                                                                   tmp_path: Path):
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.objectstore.vmplan import Download, get_plan

    ins = containers.new()
    swift().put_object(ins, "a.txt", b"alpha\n")
    url = parse(f"swift://{ins}/a.txt")
    store = store_for(stores(), url)
    info = store.stat(url)
    assert (info.size, info.etag, info.etag_rule) == (6, hashlib.md5(b"alpha\n").hexdigest(), "md5")
    wrong = type(info)(info.url, info.size, "0" * 32, "md5")
    dest = tmp_path / "in" / "a.txt"

    proc = run_objects(json.loads(get_plan([Download(wrong, str(dest), store.get_grants(url))], 2, 0.1)))

    assert proc.returncode == 1
    assert f"swift://{ins}/a.txt arrived different from what the store holds" in proc.stderr
    assert list((tmp_path / "in").iterdir()) == []
    proc = run_objects(json.loads(get_plan([Download(info, str(dest), store.get_grants(url))], 2, 0.1)))
    assert proc.returncode == 0 and dest.read_bytes() == b"alpha\n"


def put_multipart(bucket: str, key: str, parts: list[bytes], metadata: dict[str, str] | None = None) -> str:
    """`parts` as one S3 multipart object (as a client like the AWS CLI makes it); its ETag."""
    client = s3()
    made = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata or {})
    sent = [{"PartNumber": n, "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=made["UploadId"],
                                                         PartNumber=n, Body=data)["ETag"]}
            for n, data in enumerate(parts, 1)]
    done = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=made["UploadId"],
                                            MultipartUpload={"Parts": sent})
    return str(done["ETag"]).strip('"')


def test_an_s3_multipart_input_is_checked_against_its_etag_at_the_part_size_it_was_cut_at(containers: Containers,
                                                                                          tmp_path: Path):
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.objectstore.vmplan import Download, get_plan

    ins = containers.new()
    usual = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 7)]  # the AWS minimum part size
    etag = put_multipart(ins, "in/usual.bin", usual)
    odd = [os.urandom(7 * MiB), os.urandom(7 * MiB), os.urandom(MiB)]  # 7 MiB: no client's default
    put_multipart(ins, "in/odd.bin", odd)
    store = store_for(stores(), parse(f"s3://{ins}/in/"))

    infos = {str(i.url): i for i in store.listing(parse(f"s3://{ins}/in/"))}
    info = infos[f"s3://{ins}/in/usual.bin"]
    assert (info.etag, info.etag_rule, info.part_sizes, info.part_size_known) == (etag, "s3multipart", (5 * MiB,),
                                                                                  False)
    assert etag.endswith("-3")
    odd_info = infos[f"s3://{ins}/in/odd.bin"]  # 5 MiB cuts 15 MiB in 3 parts too: it is tried, and fails
    assert odd_info.etag_rule == "s3multipart" and not odd_info.part_size_known

    def get(*items: Any) -> subprocess.CompletedProcess:
        return run_objects(json.loads(get_plan([Download(i, str(tmp_path / "in" / i.url.basename),
                                                         store.get_grants(i.url)) for i in items], 2, 0.1)))

    answer = answered(get(info, odd_info))

    assert answer.result["unchecked"] == [f"s3://{ins}/in/odd.bin"]  # its size alone: no part size gives its ETag
    assert (tmp_path / "in" / "usual.bin").read_bytes() == b"".join(usual)
    assert (tmp_path / "in" / "odd.bin").read_bytes() == b"".join(odd)
    # the bytes are checked: an ETag the bytes do not give fails when the part size is sure; when it was a guess,
    # the ETag is said unchecked
    (tmp_path / "in" / "usual.bin").unlink()
    wrong = f"{'0' * 32}-3"
    proc = get(dataclasses.replace(info, etag=wrong, part_size_known=True))
    assert proc.returncode == 1
    assert f"s3://{ins}/in/usual.bin arrived different from what the store holds (its ETag is {wrong}" in proc.stderr
    assert list((tmp_path / "in").iterdir()) == [tmp_path / "in" / "odd.bin"]
    proc = get(dataclasses.replace(info, etag=wrong))
    assert proc.returncode == 0 and f"s3://{ins}/in/usual.bin" in proc.stdout


def test_an_s3_multipart_object_lando_uploaded_says_its_part_size_and_is_checked_when_read(containers: Containers,
                                                                                           tmp_path: Path):
    from lando_ssh.objectstore.vmplan import Download, get_plan

    src, url, store = big_object(containers, tmp_path, "s3://{c}/run/big.bin", 13 * MiB)
    upload = store.start_put(url, 13 * MiB, 6 * MiB)  # 6 MiB: no client's default, so only the metadata says it
    store.finish_put(upload, put_whole(upload, src).result["items"][0]["etags"])

    info = store.stat(url)

    assert (info.etag_rule, info.part_sizes, info.part_size_known) == ("s3multipart", (6 * MiB,), True)
    dest = tmp_path / "back" / "big.bin"
    answer = answered(run_objects(json.loads(get_plan([Download(info, str(dest), store.get_grants(url))], 2, 0.1))))
    assert answer.result["unchecked"] == [] and dest.read_bytes() == src.read_bytes()


def test_a_job_says_which_s3_multipart_inputs_had_their_size_alone_checked(lando: Lando, containers: Containers,
                                                                           tmp_path: Path):
    ins = containers.new()
    reads = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"READS\n"]
    put_multipart(ins, "reads.bam", reads)  # 5 MiB parts: tried, and its ETag checked
    s3().put_object(Bucket=ins, Key="reads.bam.bai", Body=b"INDEX\n")
    s3().put_object(Bucket=ins, Key="refs/a.txt", Body=b"alpha\n")
    put_multipart(ins, "refs/odd.bin", [b"o" * 7 * MiB, b"d" * 7 * MiB, b"d\n"])  # 7 MiB: nobody says so
    lando.write_config(object_store=store_settings())
    order = tmp_path / "job.yml"
    order.write_text(yaml.safe_dump({"reads": {"class": "File", "location": f"s3://{ins}/reads.bam"},
                                     "dir": {"class": "Directory", "location": f"s3://{ins}/refs"}}))
    job_id = lando.submit(WORKFLOWS / "objects.cwl", order)

    proc = lando.cli("job", str(job_id))

    assert proc.returncode == 0, proc.stderr
    assert lando.status(job_id)["state"] == "F"
    said = [line for line in proc.stderr.splitlines() if "size alone checked" in line]
    assert len(said) == 1 and said[0].endswith(f"(S3 multipart ETag, part size unknown): s3://{ins}/refs/odd.bin")


def test_a_refused_grant_on_download_names_the_object_not_the_grant(containers: Containers, tmp_path: Path):
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.objectstore.vmplan import Download, get_plan

    ins = containers.new()
    s3().put_object(Bucket=ins, Key="a.txt", Body=b"alpha\n")
    url = parse(f"s3://{ins}/a.txt")
    store = store_for(stores(), url)
    grant = store.get_grants(url)[0].replace("Signature=", "Signature=0")

    proc = run_objects(json.loads(get_plan([Download(store.stat(url), str(tmp_path / "a.txt"), [grant])], 2, 0.1)))

    assert proc.returncode == 1
    assert f"refused the grant lando-ssh made for s3://{ins}/a.txt (HTTP 403" in proc.stderr
    assert "Signature" not in proc.stderr


def test_the_stores_refuse_a_wrong_credential_with_a_sentence_naming_the_object(containers: Containers):
    from lando_ssh.objectstore.stores import store_for
    from lando_ssh.objectstore.urls import parse

    ins = containers.new()
    for scheme in ("swift", "s3"):
        url = parse(f"{scheme}://{ins}/a.txt")
        store = store_for(stores(swift={"password": "nope"}, s3={"secret_key": "nope"}), url)
        with pytest.raises(ObjectStoreRefused, match=f"refused lando-ssh's credential reading {scheme}://{ins}/a.txt"):
            store.stat(url)


# -- pure logic -------------------------------------------------------------------------------------

def test_object_urls_name_a_container_and_a_key():
    from lando_ssh.objectstore.urls import parse

    url = parse("swift://data/runs/2024%20a/reads.bam")
    assert (url.scheme, url.container, url.key) == ("swift", "data", "runs/2024 a/reads.bam")
    assert str(url) == "swift://data/runs/2024%20a/reads.bam"
    assert str(parse("s3://bucket/out").child("docs/README.md")) == "s3://bucket/out/docs/README.md"
    assert str(parse("s3://bucket").as_prefix()) == "s3://bucket/"
    for bad, said in (("swift:///x", "names no container"), ("s3:///x", "names no bucket"),
                      ("s3://b/a/../c", "'..'"), ("swift://c/x?temp_url_sig=1", "query"),
                      ("http://c/x", "not a swift:// or s3:// URL")):
        with pytest.raises(BadInput, match=said):
            parse(bad)


def test_staging_plans_object_inputs_for_the_vm_with_their_secondary_files():
    from lando_ssh.prepared import PreparedWorkflow
    from lando_ssh.staging import plan_inputs

    packed = {"class": "CommandLineTool", "id": "#main", "cwlVersion": "v1.2", "inputs": [
        {"id": "#main/reads", "type": "File", "secondaryFiles": [".bai", {"pattern": "^.idx", "required": False}]},
        {"id": "#main/dir", "type": "Directory"}], "outputs": []}
    order = {"reads": {"class": "File", "location": "swift://c/s/reads.bam", "size": 6},
             "dir": {"class": "Directory", "location": "s3://b/refs/"}}
    prepared = PreparedWorkflow(source="t", packed=packed, job_order=order)

    transfers, vm_order, _ = plan_inputs(prepared, "/vm/in")

    assert [(t.kind, t.source, t.dest, t.size, t.required) for t in transfers] == [
        ("object", "swift://c/s/reads.bam", "/vm/in/1/reads.bam", 6, True),
        ("object", "swift://c/s/reads.bam.bai", "/vm/in/1/reads.bam.bai", None, True),
        ("object", "swift://c/s/reads.idx", "/vm/in/1/reads.idx", None, False),
        ("object-directory", "s3://b/refs/", "/vm/in/2/refs", None, True)]
    assert vm_order["reads"]["location"] == "file:///vm/in/1/reads.bam"
    assert vm_order["dir"]["location"] == "file:///vm/in/2/refs"


def test_the_output_object_points_at_the_uploaded_objects():
    from lando_ssh.objectstore.urls import parse
    from lando_ssh.objectstore.vmplan import objects_output

    output = {"out": {"class": "File", "location": "file:///vm/results/a%20b.txt", "path": "/vm/results/a b.txt",
                      "size": 3, "secondaryFiles": [{"class": "File", "location": "file:///vm/results/a b.txt.md5"}]},
              "n": 3}

    moved = objects_output(output, "/vm/results", parse("s3://bucket/run/"))

    assert moved == {"out": {"class": "File", "location": "s3://bucket/run/a%20b.txt", "size": 3,
                             "secondaryFiles": [{"class": "File", "location": "s3://bucket/run/a%20b.txt.md5"}]},
                     "n": 3}


def test_the_answer_of_lando_objects_is_read_as_it_grows():
    from lando_ssh.objectstore.vmplan import Answer

    answer = Answer()
    answer.read(b"P 10\nP 2")  # a line still arriving is not read
    assert answer.bytes == 10
    answer.read(b"P 10\nP 20\nR {\"items\": [], \"missing\": [\"swift://c/x\"]}\n")
    assert answer.bytes == 20 and answer.result["missing"] == ["swift://c/x"]


@pytest.mark.parametrize("section, said", [
    ({"swift": {"auth_url": AUTH_URL}}, "object_store.swift.auth_url needs username and password too"),
    ({"swift": {"username": "u"}}, "object_store.swift has no auth_url, and cloud_settings names no Keystone"),
    ({"s3": {"access_key": "a"}}, "object_store.s3 needs access_key and secret_key together"),
    ({"segment_mb": 1}, "object_store.segment_mb must be between 5 and 5120"),
    ({"grant_seconds": 5}, "object_store.grant_seconds must be at least 60"),
    ({"s3": {"bucket": "x"}}, "unknown key object_store.s3.bucket"),
    ({"projects": {"lab": {"s3": {"access_key": "a"}}}},
     "object_store.projects.lab.s3 needs access_key and secret_key \\(the project's credentials\\)"),
    ({"projects": {"lab": {"swift": {"password": "p"}}}}, "object_store.projects.lab.swift needs username and"),
    ({"projects": {"lab": {"swift": {"username": "u", "password": "p"}}}},
     "object_store.projects.lab.swift has no auth_url, and cloud_settings names no Keystone"),
    ({"projects": {"lab": {"s3": {"bucket": "x"}}}}, "unknown key object_store.projects.lab.s3.bucket"),
    ({"projects": {"lab": {"gcs": {}}}}, "unknown key object_store.projects.lab.gcs"),
])
def test_the_object_store_config_is_checked(tmp_path: Path, section: dict[str, Any], said: str):
    from lando_ssh.config import load_config

    path = tmp_path / "lando.yml"
    path.write_text(yaml.safe_dump({"object_store": section}))
    with pytest.raises(ConfigError, match=said):
        load_config(str(path), env={})
