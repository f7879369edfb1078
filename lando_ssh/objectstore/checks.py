"""What submit checks of a job's object URLs, before anything runs."""
from __future__ import annotations

from typing import Any

from lando_ssh.config import Config
from lando_ssh.errors import BadInput, InputMissing
from lando_ssh.objectstore.stores import check_configured, store_for
from lando_ssh.objectstore.urls import is_object_url, parse
from lando_ssh.prepared import iter_files_dirs


def check_output_url(config: Config, url: str, may_hold_objects: bool = False, project: str | None = None) -> str:
    """The output URL as a prefix (ending in `/`). BadInput when no store is configured for it, or (unless
    `may_hold_objects`, cwl-runner's) when objects are already there: lando-ssh never overwrites what it did not
    write. `project`: the job's (its credentials, when object_store.projects names it)."""
    prefix = parse(url, "the output URL").as_prefix()
    store = store_for(config, prefix, project)
    if not may_hold_objects:
        try:
            held = store.listing(prefix)
        except InputMissing:  # no such container yet: it is made when the outputs are stored
            held = []
        if held:
            names = ", ".join(str(o.url) for o in held[:3]) + (", ..." if len(held) > 3 else "")
            raise BadInput(f"the output URL {prefix} already holds objects ({names}); "
                           "lando-ssh never overwrites what it did not write: give a new or empty prefix")
    return str(prefix)


def check_inputs(config: Config, job_order: Any, project: str | None = None) -> None:
    """BadInput for an object input whose scheme has no store configured here."""
    for obj in iter_files_dirs(job_order):
        location = obj.get("location", "")
        if is_object_url(location):
            check_configured(config, parse(location, f"the input {obj.get('class', 'File')}"), project)
