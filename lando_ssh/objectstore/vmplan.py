"""What `lando-objects` on the VM reads (pure): the plans of a download and an upload, and its answer;
the output object rewritten to the uploaded objects."""
from __future__ import annotations

import builtins
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from lando_ssh.errors import StagingFailed
from lando_ssh.objectstore.stores import ObjectInfo, Upload
from lando_ssh.objectstore.urls import ObjectUrl
from lando_ssh.prepared import uri_to_path


@dataclass(frozen=True)
class Download:
    info: ObjectInfo
    dest: str  # absolute path on the VM
    grants: list[str]  # one URL for the object, or one per part
    checksum: str | None = None  # the job order's (`sha1$...`)
    required: bool = True


def get_plan(downloads: list[Download], parallel: int, interval: float) -> bytes:
    items = [{"name": str(d.info.url), "urls": d.grants, "dest": d.dest, "size": d.info.size, "etag": d.info.etag,
              "etag_rule": d.info.etag_rule, "parts": list(d.info.parts) if d.info.parts else None,
              "part_sizes": list(d.info.part_sizes), "part_size_known": d.info.part_size_known,
              "checksum": d.checksum, "required": d.required} for d in downloads]
    return json.dumps({"op": "get", "parallel": parallel, "interval": interval, "items": items}).encode()


def put_plan(uploads: list[tuple[Upload, str]], parallel: int, interval: float) -> bytes:
    items = [{"name": str(u.url), "src": src, "size": u.size, "md5_header": u.md5_header, "urls": u.urls,
              "part_size": u.part_size} for u, src in uploads]
    return json.dumps({"op": "put", "parallel": parallel, "interval": interval, "items": items}).encode()


@dataclass
class Answer:
    """What `lando-objects` said on stdout: bytes moved so far, and (at its end) its result."""

    bytes: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    def read(self, stdout: builtins.bytes) -> None:
        """Take in the stdout so far (it arrives whole each time, growing)."""
        lines = stdout.decode(errors="replace").splitlines()
        complete = lines if stdout.endswith(b"\n") else lines[:-1]
        for line in reversed(complete):
            if line.startswith("P "):
                self.bytes = int(line[2:])
                break
        for line in complete:
            if line.startswith("R "):
                self.result = json.loads(line[2:])


def etags_by_name(result: dict[str, Any]) -> dict[str, list[str]]:
    return {item["name"]: item["etags"] for item in result.get("items", [])}


def relative_key(prefix: ObjectUrl, info: ObjectInfo) -> str:
    """An object's name below a listed prefix: its path inside the staged Directory."""
    rel = info.url.key[len(prefix.as_prefix().key):]
    if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise StagingFailed(f"{info.url} cannot be a file below {prefix} on the VM (its name has an empty, '.' or "
                            "'..' segment)")
    return rel


def objects_output(output: dict[str, Any], vm_results: str, base: ObjectUrl) -> dict[str, Any]:
    """cwltool's output object with each File/Directory under `vm_results` located at its uploaded object."""
    root = vm_results.rstrip("/")

    def rel_of(path: str) -> str:
        if path == root:
            return ""
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
        raise StagingFailed(f"the workflow output {path} is not under the output directory {root} on the VM")

    def move(value: Any) -> Any:
        if isinstance(value, list):
            return [move(v) for v in value]
        if not isinstance(value, dict):
            return value
        moved = {k: move(v) for k, v in value.items() if k not in ("path", "dirname")}
        if value.get("class") in ("File", "Directory"):
            location = value.get("location", "")
            path = value.get("path") or (uri_to_path(location) if location.startswith("file://") else None)
            if path:
                rel = rel_of(path)
                moved["location"] = str(base.child(rel)) if rel else str(base.as_prefix())
        return moved

    return move(output)


def output_key_paths(sizes: dict[str, int]) -> list[str]:
    """The files to upload, relative to the results (sorted, so a plan is the same each time)."""
    return sorted(rel for rel in sizes if posixpath.normpath(rel) == rel)
