"""The engine's hooks: stage `swift://`/`s3://` inputs on the VM, and store a job's outputs and lando's docs
in an object store from the VM. This server signs one grant per object and reads the VM's progress;
the bytes go between the VM and the store (see the package doc)."""
from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lando_ssh import exactjson, outputs
from lando_ssh.config import Config
from lando_ssh.errors import InputMissing, RemoteCommandFailed, StagingFailed
from lando_ssh.model import masked
from lando_ssh.objectstore.stores import Store, store_for
from lando_ssh.objectstore.urls import ObjectUrl, parse
from lando_ssh.objectstore.vmplan import (
    Answer,
    Download,
    etags_by_name,
    get_plan,
    objects_output,
    output_key_paths,
    put_plan,
    relative_key,
)
from lando_ssh.progress import ByteMeter
from lando_ssh.progress import size_text as _size
from lando_ssh.remote import Remote
from lando_ssh.usage import named_project

if TYPE_CHECKING:
    from lando_ssh.engine.runtime import Runtime

#: a job fact: where its outputs and docs go (`submit --output-url`), a swift:// or s3:// prefix
OUTPUT_URL = "output_url"
#: the staging.Transfer kinds moved by lando-objects
OBJECT_KINDS = ("object", "object-directory")

#: how the engine shows a transfer's progress: `reporting(total, meter)` around it
Reporting = Callable[[int, ByteMeter], AbstractContextManager[None]]


class ObjectTransfer(Protocol):
    """A staging.Transfer of kind "object" or "object-directory"."""

    source: str
    dest: str
    kind: str
    size: int | None
    checksum: str | None
    required: bool


@dataclass
class Staged:
    bytes: int = 0
    missing: set[str] = field(default_factory=set)  # VM paths of optional objects the store does not hold
    sizes: dict[str, int] = field(default_factory=dict)  # VM path -> bytes of every file downloaded
    seconds: float | None = None  # the VM's transfer alone
    #: S3 multipart objects whose ETag could not be checked (their part size unknown): their size was
    unchecked: list[str] = field(default_factory=list)


class _Stores:
    """One store per scheme for one transfer (its connection and temp URL keys reused), with the credentials of
    the job's project when object_store.projects names it."""

    def __init__(self, config: Config, project: str | None):
        self.config, self.project = config, project
        self.made: dict[str, Store] = {}

    def __call__(self, url: ObjectUrl) -> Store:
        if url.scheme not in self.made:
            self.made[url.scheme] = store_for(self.config, url, self.project)
        return self.made[url.scheme]


def stage_objects(config: Config, remote: Remote, bin_dir: str, transfers: list[Any],
                  reporting: Reporting, project: str | None = None) -> Staged:
    """Download the object inputs on the VM, each checked (size, the store's checksum, the job order's).
    `project`: the job's (`usage.named_project`)."""
    stores, staged, downloads = _Stores(config, project), Staged(), []
    for t in transfers:
        url = parse(t.source, "the input")
        store = stores(url)
        if t.kind == "object-directory":
            infos = store.listing(url)
            if not infos:
                raise InputMissing(f"the Directory {url.as_prefix()} holds no objects ({store.describe()})")
            downloads += [Download(i, posixpath.join(t.dest, *relative_key(url, i).split("/")),
                                   store.get_grants(i.url)) for i in infos]
            continue
        try:
            info = store.stat(url)
        except InputMissing:
            if not t.required:  # a secondary file of an optional pattern
                staged.missing.add(t.dest)
                continue
            raise
        if t.size is not None and t.size != info.size:
            raise StagingFailed(f"{url} holds {info.size} bytes; the job order says {t.size}")
        downloads.append(Download(info, t.dest, store.get_grants(url), t.checksum, t.required))
    if downloads:
        total = sum(d.info.size for d in downloads)
        plan = get_plan(downloads, config.object_store.parallel, config.progress_interval / 2)
        result = _run(remote, bin_dir, plan, total, reporting, "downloading objects").result
        staged.seconds, staged.unchecked = result.get("seconds"), list(result.get("unchecked", []))
        staged.bytes = total
        staged.sizes = {d.dest: d.info.size for d in downloads}
    return staged


def _run(remote: Remote, bin_dir: str, plan: bytes, total: int, reporting: Reporting, what: str) -> Answer:
    """lando-objects with `plan` on its stdin (the grants never on a command line); its answer."""
    answer = Answer()
    argv = ["python3", posixpath.join(bin_dir, "lando-objects")]
    try:
        with reporting(total, answer):
            remote.run(argv, stdin=plan, on_stdout=answer.read, what=what)
    except RemoteCommandFailed as e:
        said = [line for line in e.stderr.strip().splitlines() if line.strip()]
        raise StagingFailed(said[-1].removeprefix("lando-objects: ") if said else str(e)) from None
    return answer



def store_output(rt: Runtime, job_id: int) -> None:
    """The O step for a job with an output URL: the results (and, unless cwl-runner's, lando's docs beside them)
    uploaded from the VM; the output object pointing at the uploaded objects."""
    from lando_ssh.engine.stage import check_sizes
    from lando_ssh.engine.store_output import record_stored

    job = rt.journal.get(job_id)
    paths, remote, config = rt.paths(job), rt.remote(job), rt.config
    base = parse(job.facts[OUTPUT_URL], "the output URL").as_prefix()
    store = store_for(config, base, named_project(job))
    sizes = check_sizes(remote, paths, paths.results, {}, "output", rt.result_sizes.pop(job_id, None))
    apart = outputs.docs_apart(job)
    docs_name = job.run.docs_dir or "docs"
    vm_docs = paths.docs if apart else posixpath.join(paths.results, docs_name)
    if job.secret_inputs:  # the VM's job order held the secrets cwltool needed; the docs' copy does not
        ran = posixpath.join(vm_docs, "scripts", "job-order.json")
        order = masked(exactjson.loads(remote.run(["cat", ran], what="reading the job order").stdout),
                       job.secret_inputs)
        remote.put_bytes({"job-order.json": exactjson.dumps(order, indent=2).encode()},
                         posixpath.join(vm_docs, "scripts"))
    store.ensure_container(base)
    sent = _upload(rt, job_id, remote, paths.bin, store, base, paths.results, sizes, "storing")
    output = objects_output(job.run.vm_output or {}, paths.results, base)
    docs_at = outputs.docs_path(config, job) if apart else str(base.child(docs_name))
    job, docs = record_stored(rt, job_id, output, sent, docs_at)
    if apart:  # cwl-runner's: lando's docs go with the job's record, on this server
        _write_docs_here(remote, vm_docs, docs_at, docs)
    else:
        remote.put_bytes(docs, vm_docs)
        doc_sizes = {posixpath.join(docs_name, rel): len(data) for rel, data in docs.items()}
        _upload(rt, job_id, remote, paths.bin, store, base, paths.results, doc_sizes, "storing docs")
    rt.progress(job_id, f"stored {_size(sent)} in {base}")


def _upload(rt: Runtime, job_id: int, remote: Remote, bin_dir: str, store: Store, base: ObjectUrl,
            root: str, sizes: dict[str, int], what: str) -> int:
    config = rt.config
    part = config.object_store.segment_mb * 1024 * 1024
    uploads = [(store.start_put(base.child(rel), sizes[rel], part), posixpath.join(root, rel))
               for rel in output_key_paths(sizes)]
    if not uploads:
        return 0
    total = sum(u.size for u, _src in uploads)
    plan = put_plan(uploads, config.object_store.parallel, config.progress_interval / 2)
    finished: set[str] = set()
    try:
        with rt.deadline(remote, what):
            answer = _run(remote, bin_dir, plan, total,
                          lambda n, meter: rt.reporting(job_id, remote, "storing", n, meter), f"uploading to {base}")
        etags = etags_by_name(answer.result)
        for upload, _src in uploads:
            if str(upload.url) not in etags:
                raise StagingFailed(f"the VM did not report the upload of {upload.url}")
            store.finish_put(upload, etags[str(upload.url)])
            finished.add(str(upload.url))
    except Exception:
        # cut short (the VM's lando-objects failed or was killed, a grant was refused): the parts sent are removed
        # now; those of a crash or stop of this server, by the next upload of the same object (start_put)
        for upload, _src in uploads:
            if str(upload.url) not in finished:
                store.abort_put(upload)
        raise
    return total


def _write_docs_here(remote: Remote, vm_docs: str, docs_dir: str, docs: dict[str, bytes]) -> None:
    try:
        os.makedirs(docs_dir, exist_ok=True)
        remote.get_dir(vm_docs, docs_dir)
        for rel, data in docs.items():
            path = os.path.join(docs_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    except OSError as e:
        raise StagingFailed(f"cannot write the job's docs to {docs_dir}: {e.strerror}") from None
