"""Step O: store the output. The results come back from the VM into the job's output dir (never over files
the job did not write), each file's size checked; the output object is rewritten to local paths, and lando's
docs of the job are written beside them."""
from __future__ import annotations

import json
import os
from typing import Any

from lando_ssh import exactjson, outputs, report
from lando_ssh.errors import StagingFailed
from lando_ssh.model import Job, masked
from lando_ssh.progress import size_text as _size

from .runtime import Runtime
from .stage import check_sizes


def store_output(rt: Runtime, job_id: int) -> None:
    from lando_ssh import staging

    job = rt.journal.get(job_id)
    if job.facts.get("output_url"):  # to an object store, from the VM
        from lando_ssh.objectstore.transfer import store_output as store_in_objects

        store_in_objects(rt, job_id)
        return
    paths = rt.paths(job)
    remote = rt.remote(job)
    local_dir = os.path.abspath(job.output_dir)
    sizes = check_sizes(remote, paths, paths.results, {}, "output", rt.result_sizes.pop(job_id, None))
    total = sum(sizes.values())
    apart = outputs.docs_apart(job)  # cwl-runner's: the outputs alone, into a dir that may hold anything
    docs_dir = outputs.docs_path(rt.config, job)
    try:
        if not apart:
            _claim_output_dir(rt, job, sizes, docs_dir)
        os.makedirs(local_dir, exist_ok=True)
        with rt.deadline(remote, "storing output"), rt.reporting(job_id, remote, "storing", total):
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
    output = staging.rewrite_outputs(job.run.vm_output or {}, paths.results, local_dir)
    # lando's docs of the job are written here, not on the VM: what the VM made was pulled as it was
    job, docs = record_stored(rt, job_id, output, received, docs_dir)
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
    rt.progress(job_id, f"stored {_size(received)} in {local_dir}")


def record_stored(rt: Runtime, job_id: int, output: dict[str, Any], stored_bytes: int,
                  docs_path: str) -> tuple[Job, dict[str, bytes]]:
    """Record the stored output object, its bytes and where lando's docs go; the job and lando's docs of it
    (each file's path under the docs dir: its bytes), the output object among them."""
    def stored(j: Job) -> None:
        j.output = output
        j.run.bytes_stored, j.run.docs_path, j.run.progress = stored_bytes, docs_path, None

    job = rt.journal.update(job_id, stored)
    docs = report.docs_files(job, job.run.usage or {}, job.run.cwltool_version)
    docs["logs/cwl-output.json"] = (json.dumps(output, indent=2) + "\n").encode()
    return job, docs


def _claim_output_dir(rt: Runtime, job: Job, sizes: dict[str, int], docs_dir: str) -> None:
    """Refuse an output dir holding files the job did not write; note what it is about to write there."""
    foreign = outputs.foreign_files(rt.config, job)
    if foreign:
        more = ", ..." if len(foreign) == 3 else ""
        raise StagingFailed(f"the output directory {job.output_dir} holds files this job did not write "
                            f"({', '.join(foreign)}{more}); lando-ssh does not overwrite them. Free the directory, "
                            f"or give the job another with `lando-ssh set-output-dir {job.id} DIR`, then resume "
                            f"it (`lando-ssh job {job.id}` or `lando-ssh send restart_job {job.id}`)")
    docs_rel = os.path.relpath(docs_dir, os.path.abspath(job.output_dir))
    ours = report.docs_files(job, {}, None).keys() | {"logs/cwl-output.json"}
    outputs.note_written(rt.config, job, set(sizes) | {os.path.join(docs_rel, name) for name in ours})
