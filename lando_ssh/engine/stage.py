"""Step S: stage the inputs. The remote scripts, the workflow and the job order go to the VM with the small
inputs in one stream; the free disk is checked; larger inputs follow; URLs are fetched on the VM; every
file's size on the VM is checked against what was sent."""
from __future__ import annotations

import posixpath
import time
from typing import Any

from lando_ssh import exactjson, schemacache
from lando_ssh.errors import RemoteCommandFailed, StagingFailed
from lando_ssh.journal import recording
from lando_ssh.model import Job
from lando_ssh.progress import size_text as _size
from lando_ssh.remote import Remote

from .cwl_inline import inline_single_use_processes
from .paths import JobPaths, remote_scripts_dir
from .runtime import ONE_STREAM_BYTES, Runtime


def stage_inputs(rt: Runtime, job_id: int) -> None:
    from lando_ssh import staging

    job = rt.journal.get(job_id)
    paths = rt.paths(job)
    remote = rt.remote(job)
    transfers, vm_order, vm_workflow = staging.plan_inputs(_prepared(job), paths.inputs)
    local = [t for t in transfers if t.kind in ("file", "directory")]
    urls = [t for t in transfers if t.kind == "url"]
    objects = [t for t in transfers if t.kind in ("object", "object-directory")]  # lando_ssh.objectstore
    needed = sum(t.size or 0 for t in transfers)
    scripts = {f"bin/{p.name}": p.read_bytes() for p in sorted(remote_scripts_dir().iterdir()) if p.is_file()}
    executable = list(scripts)  # the docs copy the workflow and job order: those stay 0644
    scripts.update(schemacache.files_for_vm(schemacache.root_in(rt.config.data_dir)))  # see lando-cwltool
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
    with rt.deadline(remote, "staging"), rt.reporting(job_id, remote, "staging", from_here):
        if with_scripts:
            entries = [(t.source, posixpath.relpath(t.dest, paths.job_dir)) for t in local]
            then = [*df, paths.inputs]  # lando-df DIR LIST_DIR: the free bytes, then the sizes
            sent, out = remote.put_files(entries, paths.job_dir, then=then, files=scripts,
                                         executable=executable)
            free_line, _, listing = out.partition("\n")
            _check_free(needed - sent, int(free_line.strip() or 0), paths)
            listing = None if urls or objects else listing
            rt.progress(job_id, f"staged {_size(sent)} from this server")
        else:  # scripts, workflow and job order in one stream, then the free disk: one round trip
            free = remote.put_bytes(scripts, paths.job_dir, executable=executable, then=df)
            _check_free(needed, int(free.strip() or 0), paths)
        if local and not with_scripts:
            entries = [(t.source, posixpath.relpath(t.dest, paths.inputs)) for t in local]
            sizes = () if urls or objects else sizes_argv(paths, paths.inputs)  # the same round trip
            pushed, listing = remote.put_files(entries, paths.inputs, then=sizes)
            sent += pushed
            listing = listing if sizes else None
            rt.progress(job_id, f"staged {_size(sent)} from this server")
        for t in urls:
            rt.check_cancel(job_id)
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
            rt.progress(job_id, f"downloaded {t.source} on the VM")
        if objects:  # downloaded by the VM straight from the store
            from lando_ssh.objectstore.transfer import stage_objects
            from lando_ssh.usage import named_project

            got = stage_objects(rt.config, remote, paths.bin, objects,
                                lambda total, meter: rt.reporting(job_id, remote, "staging", total, meter),
                                named_project(job))
            sent += got.bytes
            optional_missing |= {posixpath.relpath(d, paths.inputs) for d in got.missing}
            rt.progress(job_id, f"downloaded {len(got.sizes)} objects ({_size(got.bytes)}) on the VM")
            if got.unchecked:
                rt.progress(job_id, "size alone checked (S3 multipart ETag, part size unknown): "
                            + ", ".join(got.unchecked))
    expected = {posixpath.relpath(t.dest, paths.inputs): t.size for t in transfers
                if t.kind not in ("directory", "object-directory")}
    if objects:
        expected.update({posixpath.relpath(d, paths.inputs): n for d, n in got.sizes.items()})
    for rel in optional_missing:
        expected.pop(rel, None)
    check_sizes(remote, paths, paths.inputs, expected, "input", listing)
    elapsed = time.monotonic() - started
    rt.journal.update(job_id, recording(bytes_staged=sent, staging_seconds=round(elapsed, 3), progress=None))


def _check_free(needed: int, free: int, paths: JobPaths) -> None:
    if needed > free:
        raise StagingFailed(f"the VM's disk is too small for the inputs: they need {_size(needed)}, "
                            f"{_size(free)} is free under {paths.job_dir} (ask for a larger volume_size)")


def sizes_argv(paths: JobPaths, base: str) -> list[str]:
    return ["sh", posixpath.join(paths.bin, "lando-sizes"), base]


def check_sizes(remote: Remote, paths: JobPaths, base: str, expected: dict[str, int | None],
                what: str, listing: str | None = None) -> dict[str, int]:
    """The size of every file below base on the VM (`listing`: lando-sizes' output, if it came back
    with a transfer), checked against `expected`."""
    out = remote.run(sizes_argv(paths, base)).stdout if listing is None else listing
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


def _prepared(job: Job) -> Any:
    from lando_ssh.prepared import PreparedWorkflow

    return PreparedWorkflow(source=job.workflow, packed=job.workflow_doc or {}, job_order=job.job_order)
