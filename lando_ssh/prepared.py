"""A workflow as submit left it, and the walks over its File and Directory values.

The job path (staging, the pipeline) needs these and not cwltool: `workflow.py`, which validates with
cwltool at submit, and its imports stay out of every `lando-ssh job`.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lando_ssh.errors import WorkflowInvalid
from lando_ssh.objectstore.urls import OBJECT_SCHEMES

#: URL schemes an input may use; anything else is refused at submit.
LOCAL_SCHEME = "file"
URL_SCHEMES = ("http", "https")


@dataclass
class PreparedWorkflow:
    """A workflow and job order that cwltool accepted, ready to be stored and staged."""

    source: str  # the workflow as the user named it (path or URL)
    packed: dict[str, Any]  # one self-contained document, as `cwltool --pack` prints it
    job_order: dict[str, Any]  # the input object; every File/Directory `location` absolute (file:// or http(s)://)
    #: local paths the packed document itself names (File defaults, literals): staged like inputs
    default_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what cwltool warned about while loading
    #: what was fetched and validated: kind, url/resolved_url or repository/ref/commit, path, sha256
    source_record: dict[str, Any] = field(default_factory=dict)
    #: the job order's file names with a `#` that cwltool's default path checks refuse (`item #1.txt`); CWL allows them
    odd_names: list[str] = field(default_factory=list)

    @property
    def main(self) -> dict[str, Any]:
        """The process that runs: `#main` of a packed `$graph`, or the document itself."""
        return main_process(self.packed)

    @property
    def main_inputs(self) -> dict[str, dict[str, Any]]:
        """The main process's input parameters by short name (`text`, not `#main/text`)."""
        return {shortname(p["id"]): p for p in self.main.get("inputs", [])}


def main_process(packed: dict[str, Any]) -> dict[str, Any]:
    graph = packed.get("$graph")
    if graph is None:
        return packed
    for proc in graph:
        if proc.get("id") == "#main":
            return proc
    raise WorkflowInvalid("the packed workflow has no #main process")


def shortname(cwl_id: str) -> str:
    """`#main/step/input` -> `input`, as cwltool names job order keys."""
    return cwl_id.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside `value`, `value` included."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from dicts(v)


def check_schemes(value: Any, where: str) -> None:
    """Refuse locations staging cannot move: local paths, http(s) URLs (Files only), swift:// and s3:// objects."""
    for obj in iter_files_dirs(value):
        location = obj.get("location", "")
        if not location or location.startswith("_:"):
            continue
        scheme = urllib.parse.urlsplit(location).scheme
        if scheme == LOCAL_SCHEME:
            continue
        if scheme in OBJECT_SCHEMES:  # a File or a Directory (a prefix) in an object store
            continue
        if scheme not in URL_SCHEMES:
            raise WorkflowInvalid(f"{where} {location} has an unsupported scheme {scheme!r}: "
                                  "use a local path, an http(s):// URL, or a swift:// or s3:// object")
        if obj.get("class") == "Directory":
            raise WorkflowInvalid(f"{where} Directory {location} is a URL; Directory inputs must be local paths "
                                  "or swift:// or s3:// prefixes")


def local_files_in(packed: dict[str, Any]) -> list[str]:
    """Local paths named by File/Directory values inside the packed document (defaults, literals)."""
    paths: list[str] = []
    for obj in iter_files_dirs(packed):
        location = obj.get("location", "")
        if location.startswith("file://"):
            path = uri_to_path(location)
            if path not in paths:
                paths.append(path)
    return paths


def iter_files_dirs(value: Any) -> Iterator[dict[str, Any]]:
    """Every File and Directory object in `value`, outermost first (secondaryFiles and listing included)."""
    return (obj for obj in dicts(value) if obj.get("class") in ("File", "Directory"))


def uri_to_path(uri: str) -> str:
    """`file:///a/b%20c` -> `/a/b c` (a `#` in a file name comes back from the fragment, as cwltool does)."""
    split = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(split.path)
    return path + ("#" + urllib.parse.unquote(split.fragment) if split.fragment else "")


def path_to_uri(path: str) -> str:
    """`/a/b c` -> `file:///a/b%20c`, the way cwltool writes locations."""
    return "file://" + urllib.parse.quote(path)
