"""Where a job's outputs and lando's docs of it go, and what the job may write there.

lando-ssh never overwrites a file it did not write. A job's output dir (`submit --output-dir`, or
`<output_dir>/job-N`) must be new or empty when the job is submitted, and is checked again when the
results are stored: a file there that the job did not write fails the store step (the results stay on
the VM). What the job writes is noted, before it is written, in `<data_dir>/jobs/job-N/written` (the
output dir on the first line, then one path per line), so a resumed or restarted job may write its own
files again.

`cwl-runner` behaves like cwltool instead: its outdir may hold anything, it receives the workflow's
outputs alone (an output replaces a file of the same name, as cwltool's does), and lando's docs of the
job go with the job's record, in `<data_dir>/jobs/job-N/docs`.
"""
from __future__ import annotations

import os
from typing import Any

from lando_ssh.config import Config
from lando_ssh.errors import BadInput
from lando_ssh.model import Job

#: a job fact: the job writes its outputs alone to its output dir, as cwltool does (cwl-runner's jobs)
OUTPUTS_ONLY = "outputs_only"


def docs_apart(job: Job) -> bool:
    """Whether lando's docs of the job go with its record rather than into its output dir."""
    return bool(job.facts.get(OUTPUTS_ONLY))


def record_dir(config: Config, job_id: int) -> str:
    """This server's files about job N, beside the job store: `<data_dir>/jobs/job-N`."""
    return os.path.join(os.path.abspath(config.data_dir), "jobs", f"job-{job_id}")


def docs_path(config: Config, job: Job) -> str:
    """Where lando's docs of the job are (or will be) on this server."""
    if docs_apart(job):
        return os.path.join(record_dir(config, job.id), "docs")
    return os.path.join(os.path.abspath(job.output_dir), job.run.docs_dir or "docs")


def check_output_dir(path: str, what: str = "the output directory", may_hold_files: bool = False) -> None:
    """BadInput unless `path` is a directory that is empty (or `may_hold_files`) or can be made, and this server
    can write there."""
    probe = path
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if probe == path:
        if not os.path.isdir(path):
            raise BadInput(f"{what} {path} is not a directory")
        held = [] if may_hold_files else files_in(path, limit=3)
        if held:
            raise BadInput(f"{what} {path} already holds files ({', '.join(held)}{', ...' if len(held) == 3 else ''})"
                           "; lando-ssh never overwrites files it did not write: give a new or empty directory")
    elif not os.path.isdir(probe):
        raise BadInput(f"{what} {path} cannot be created: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        made = "written" if probe == path else f"created ({probe} is not writable)"
        raise BadInput(f"{what} {path} cannot be {made} by this server (user {_user()})")


def files_in(directory: str, limit: int | None = None, but: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Paths (relative, sorted) of the files and links below `directory` that are not in `but`; the first `limit`."""
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel not in but:
                found.append(rel)
    return sorted(found)[:limit]


def written(config: Config, job: Job) -> set[str]:
    """What the job wrote into its current output dir (relative paths)."""
    try:
        with open(_manifest(config, job.id)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return set()
    if not lines or lines[0] != os.path.abspath(job.output_dir):
        return set()  # another output dir: nothing there is the job's
    return set(lines[1:])


def note_written(config: Config, job: Job, paths: set[str]) -> None:
    """Note, before writing them, the paths the job writes into its output dir (with what it wrote before)."""
    path = _manifest(config, job.id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [os.path.abspath(job.output_dir), *sorted(written(config, job) | paths)]
    draft = path + ".new"
    with open(draft, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(draft, path)


def foreign_files(config: Config, job: Job) -> list[str]:
    """Files in the job's output dir that the job did not write (the first few)."""
    local_dir = os.path.abspath(job.output_dir)
    if not os.path.isdir(local_dir):
        return []
    return files_in(local_dir, limit=3, but=written(config, job))


def _manifest(config: Config, job_id: int) -> str:
    return os.path.join(record_dir(config, job_id), "written")


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def set_output_dir(config: Config, journal: Any, job_id: int, path: str) -> Job:
    """Give a failed or canceled job another output dir (new or empty; for cwl-runner's, any writable one),
    for its resume to store its results there (from its kept VM when it has one)."""
    from lando_ssh.errors import JobConflict
    from lando_ssh.model import RESTARTABLE_STATES

    path = os.path.abspath(path)
    job = journal.get(job_id)
    check_output_dir(path, may_hold_files=docs_apart(job))

    def change(j: Job) -> None:
        if j.state not in RESTARTABLE_STATES:
            raise JobConflict(f"job {job_id} is {j.state.name.lower()}; only a failed or canceled job's output "
                              "directory can be changed")
        j.output_dir = path

    return journal.update(job_id, change)
