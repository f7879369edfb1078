"""What moves where: a job's input Files/Directories to VM paths, and its output object back.

Planning only: pure functions over data and the local filesystem. The pipeline carries out the
`Transfer`s over SSH (and downloads URLs on the VM), then writes the rewritten job order and
workflow to the VM.

Layout on the VM: every input lands in `<vm_inputs_dir>/<n>/<basename>`, one numbered directory
per source directory (local directory or URL directory), so basenames are kept (tools rely on
them), inputs with the same basename from different places do not collide, and secondary files
land next to their primary file, where cwltool looks for them. The numbering follows the order in
which inputs appear, so planning the same job twice gives the same plan (staging is resumable).

Secondary files implied by a workflow input's `secondaryFiles` patterns are transferred but not
listed in the rewritten job order: cwltool on the VM finds them next to the primary, as it does
locally. Patterns that are expressions (`$(...)`, `${...}`) cannot be evaluated here and are
skipped; for a workflow that has them, `workflow.prepare` lists every input's secondary files in the
job order at submit (found by cwltool itself), and listed secondary files are moved like inputs.

Local ontology files named by the workflow's `$schemas` (for `format` checks) are staged like inputs.
"""
from __future__ import annotations

import functools
import os
import posixpath
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from lando_ssh.errors import InputMissing, StagingFailed, WorkflowInvalid
from lando_ssh.objectstore.urls import is_object_url
from lando_ssh.prepared import PreparedWorkflow, check_schemes, iter_files_dirs, path_to_uri, shortname, uri_to_path

Pattern = tuple[str, bool]  # (secondaryFiles pattern, required)


@dataclass
class Transfer:
    """One input to put on the VM."""

    source: str  # local absolute path, http(s) URL, or swift:// / s3:// URL
    dest: str  # absolute path on the VM
    kind: str  # "file" | "directory" | "url" | "object" | "object-directory" (swift://, s3://: lando_ssh.objectstore)
    size: int | None = None  # expected bytes: local stat (a directory: its files' total), or the job order's `size`
    checksum: str | None = None  # as the job order gave it, e.g. "sha1$..."
    #: False for a URL secondary file implied by an optional pattern: skip it when the server says 404
    required: bool = True


def plan_inputs(prepared: PreparedWorkflow, vm_inputs_dir: str) -> tuple[list[Transfer], dict, dict]:
    """The transfers to make, the job order rewritten to VM paths, and the packed workflow rewritten
    where its defaults named local files (or URLs).

    Raises `InputMissing` naming the input and path of a local File/Directory (or a required
    secondary file) that does not exist.
    """
    inputs = prepared.main_inputs
    given = {p["id"] for name, p in inputs.items() if prepared.job_order.get(name) is not None}
    planner = _Planner(vm_inputs_dir, _named_types(prepared.packed), main_inputs={p["id"] for p in inputs.values()},
                       given=given, directories=_local_directories(prepared.job_order))
    job_order: dict[str, Any] = {}
    for name, value in prepared.job_order.items():
        param = inputs.get(name, {})
        job_order[name] = planner.stage_value(value, param.get("type"), _patterns(param.get("secondaryFiles")),
                                              f"input {name!r}")
    packed = planner.stage_schemas(planner.stage_document(prepared.packed))
    return planner.transfers, job_order, packed


def rewrite_outputs(output: dict[str, Any], vm_outdir: str, local_outdir: str) -> dict[str, Any]:
    """cwltool's output object as printed on the VM, with locations and paths under `local_outdir`.

    Only the directory prefix changes, so the result is what `cwltool --outdir local_outdir` prints
    for the same run. Raises `StagingFailed` for a file outside `vm_outdir` (it would not be pulled).
    """
    vm_dir, local_dir = vm_outdir.rstrip("/") or "/", local_outdir.rstrip("/") or "/"

    def move_path(path: str) -> str:
        if path == vm_dir:
            return local_dir
        if path.startswith(vm_dir + "/"):
            return local_dir + path[len(vm_dir):]
        raise StagingFailed(f"the workflow output {path} is not under the output directory {vm_dir} on the VM")

    def move(value: Any) -> Any:
        if isinstance(value, list):
            return [move(v) for v in value]
        if not isinstance(value, dict):
            return value
        moved = {k: move(v) for k, v in value.items()}
        if value.get("class") in ("File", "Directory"):
            if "location" in value and value["location"].startswith("file://"):
                moved["location"] = path_to_uri(move_path(uri_to_path(value["location"])))
            if "path" in value:
                moved["path"] = move_path(value["path"])
        return moved

    return move(output)


def output_files(output: dict[str, Any]) -> list[tuple[str, int | None]]:
    """Every file in an output object (secondaryFiles and Directory listings included) with its expected size."""
    found: dict[str, int | None] = {}

    def visit(value: Any) -> None:
        if isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            if value.get("class") == "File":
                path = value.get("path") or (uri_to_path(value["location"])
                                             if value.get("location", "").startswith("file://") else None)
                if path and path not in found:
                    found[path] = value.get("size")
            for v in value.values():
                visit(v)

    visit(output)
    return list(found.items())


def substitute(basename: str, pattern: str) -> str:
    """A secondaryFiles pattern applied to a basename: each leading `^` strips one extension (cwltool's rule)."""
    while pattern.startswith("^"):
        if "." not in basename:
            return basename + pattern.lstrip("^")
        basename, pattern = basename[:basename.rindex(".")], pattern[1:]
    return basename + pattern


def _patterns(secondary_files: Any) -> list[Pattern]:
    """A parameter's `secondaryFiles` as (pattern, required); expressions left out (see the module doc)."""
    if secondary_files is None:
        return []
    found: list[Pattern] = []
    for entry in secondary_files if isinstance(secondary_files, list) else [secondary_files]:
        if isinstance(entry, str):
            pattern, required = entry.rstrip("?"), not entry.endswith("?")
        elif isinstance(entry, dict) and isinstance(entry.get("pattern"), str):
            required_value = entry.get("required")
            # an input's secondary file is required unless it says otherwise (CWL v1.2); an expression counts as no
            pattern, required = entry["pattern"], required_value is None or required_value is True
        else:
            continue
        if "$(" not in pattern and "${" not in pattern:
            found.append((pattern, required))
    return found


class _Member(NamedTuple):
    """A primary file or one of its secondary files, about to be placed in a VM directory."""

    source: str
    name: str  # its basename on the VM
    cls: str  # "File" | "Directory"
    size: int | None = None  # a URL's size when the job order gave it
    checksum: str | None = None
    required: bool = True


def _source(location: str) -> str:
    """A local path for a file:// location; a URL stays a URL."""
    return uri_to_path(location) if _is_local(location) else location


def _is_local(location: str) -> bool:
    return location.startswith("file://")


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _is_remote(location: str) -> bool:
    """Not on this server: an http(s) URL, or an object in a store (moved by the VM)."""
    return _is_url(location) or is_object_url(location)


class _Planner:
    """Accumulates transfers and hands out VM directories so that names never collide."""

    def __init__(self, vm_inputs_dir: str, named_types: dict[str, Any] | None = None, *,
                 main_inputs: set[str] | None = None, given: set[str] | None = None,
                 directories: Sequence[tuple[str, str]] = ()):
        self.root = vm_inputs_dir.rstrip("/") or "/"
        self.named_types = named_types or {}  # record types by name (SchemaDefRequirement), for their fields' patterns
        self.main_inputs = main_inputs or set()  # the ids of the main process's inputs
        self.given = given or set()  # ... of those the job order gives a value
        self.directories = list(directories)  # the job order's local Directories (source, name), outermost first
        self.transfers: list[Transfer] = []
        self.by_dest: dict[str, Transfer] = {}
        self.dirs_of_parent: dict[str, list[str]] = {}  # source directory -> VM directories holding its files
        self.placed: dict[tuple[str, str], str] = {}  # (source, name) -> VM directory it went to
        self.dir_count = 0

    # -- values --------------------------------------------------------------------------------

    def stage_value(self, value: Any, cwl_type: Any, patterns: list[Pattern], where: str) -> Any:
        """`value` with every File/Directory staged; `cwl_type` guides record fields to their own patterns."""
        cwl_type = self._resolve(cwl_type)
        if isinstance(value, list):
            item_type = _array_items(cwl_type)
            return [self.stage_value(v, item_type, patterns, where) for v in value]
        if not isinstance(value, dict):
            return value
        if value.get("class") in ("File", "Directory"):
            return self.stage_object(value, patterns, where)
        fields = _record_fields(cwl_type)
        staged = {}
        for key, v in value.items():
            field = fields.get(key, {})
            staged[key] = self.stage_value(v, field.get("type"), _patterns(field.get("secondaryFiles")),
                                           f"{where} field {key!r}")
        return staged

    def stage_document(self, node: Any, where: str = "the workflow") -> Any:
        """The packed workflow with the Files it names itself (defaults, literals) staged."""
        if isinstance(node, list):
            return [self.stage_document(n, where) for n in node]
        if not isinstance(node, dict):
            return node
        if node.get("class") in ("File", "Directory"):
            return self.stage_object(node, [], f"a File in {where}")
        staged = {}
        for key, value in node.items():
            if key == "default" and "id" in node:
                staged[key] = self._stage_default(node, value)
            else:
                staged[key] = self.stage_document(value, where)
        return staged

    def _stage_default(self, param: dict[str, Any], value: Any) -> Any:
        """A default as the VM's cwltool may use it, judged as cwltool judges it. A location staging cannot
        move (`keep:`, a Directory URL) is left as it is: the VM's cwltool reads it as cwltool would here. The
        main process's default for an input the job order leaves out is used: a local file it names must
        exist, and is staged. One for an input the job order gives is never used: left as it is. One of a
        step or an inner process is used only when nothing is connected to that input: staged when what it
        names is here, else left for the VM's cwltool to refuse if it comes to use it."""
        if param["id"] in self.given:
            return value
        where = f"the default of {shortname(param['id'])!r}"
        try:
            check_schemes(value, where)
        except WorkflowInvalid:
            return value
        stage = functools.partial(self.stage_value, value, param.get("type"), _patterns(param.get("secondaryFiles")),
                                  where)
        if param["id"] in self.main_inputs:
            return stage()
        saved = (list(self.transfers), dict(self.by_dest), {k: list(v) for k, v in self.dirs_of_parent.items()},
                 dict(self.placed), self.dir_count)
        try:
            return stage()
        except InputMissing:
            self.transfers, self.by_dest, self.dirs_of_parent, self.placed, self.dir_count = saved
            return value

    def stage_schemas(self, packed: Any) -> Any:
        """The packed workflow with the local ontology files its `$schemas` names (for `format` checks) staged:
        the VM has no copy of this server's files. One that does not exist here is left as it is: cwltool
        warns about it, as it does locally."""
        schemas = packed.get("$schemas") if isinstance(packed, dict) else None
        if not isinstance(schemas, list):
            return packed
        staged = []
        for schema in schemas:
            if isinstance(schema, str) and _is_local(schema) and os.path.isfile(uri_to_path(schema)):
                source = uri_to_path(schema)
                name = _location_basename(schema)
                staged.append(path_to_uri(posixpath.join(self._place([_Member(source, name, "File")]), name)))
            else:
                staged.append(schema)
        return {**packed, "$schemas": staged}

    def stage_object(self, obj: dict[str, Any], patterns: list[Pattern], where: str) -> dict[str, Any]:
        location = obj.get("location", "")
        if not (_is_local(location) or _is_remote(location)):
            # a literal (`contents`, or a Directory made of its `listing`): cwltool creates it; stage what it lists
            staged = dict(obj)
            for key in ("listing", "secondaryFiles"):
                if key in obj:
                    staged[key] = [self.stage_object(o, [], where) for o in obj[key]]
            return staged
        name = obj.get("basename") or _location_basename(location)
        source = _source(location)
        self._check_exists(obj["class"], source, where)
        if (inside := self._inside_directory(obj, source, name, patterns, where)) is not None:
            return inside
        members = [_Member(source, name, obj["class"], obj.get("size"), obj.get("checksum"))]
        moving: dict[int, _Member] = {}  # secondary files the job order lists, by id() of their object
        for sf in obj.get("secondaryFiles", []):
            sf_location = sf.get("location", "")
            if _is_local(sf_location) or _is_remote(sf_location):
                member = _Member(_source(sf_location), sf.get("basename") or _location_basename(sf_location),
                                 sf["class"], sf.get("size"), sf.get("checksum"))
                self._check_exists(member.cls, member.source, f"{where} (secondary file)")
                moving[id(sf)] = member
                members.append(member)
        for pattern, required in patterns:
            sf_name = substitute(name, pattern)
            if any(m.name == sf_name for m in members):
                continue
            if _is_remote(source):
                members.append(_Member(_sibling_url(source, sf_name), sf_name, "File", required=required))
                continue
            sf_source = os.path.join(os.path.dirname(source), sf_name)
            if os.path.exists(sf_source):
                members.append(_Member(sf_source, sf_name, "Directory" if os.path.isdir(sf_source) else "File"))
            elif required:
                raise InputMissing(f"{where}: the secondary file {sf_source} (pattern {pattern!r} of {source}) "
                                   "does not exist")
        vm_dir = self._place(members)
        staged = self._moved(obj, posixpath.join(vm_dir, name))
        if "secondaryFiles" in obj:
            staged["secondaryFiles"] = [
                self._moved(sf, posixpath.join(vm_dir, moving[id(sf)].name)) if id(sf) in moving
                else self.stage_object(sf, [], where)  # a literal
                for sf in obj["secondaryFiles"]]
        if obj["class"] == "Directory" and "listing" in obj:
            staged["listing"] = self._listing_inside(obj["listing"], source, posixpath.join(vm_dir, name), where)
        return staged

    def _inside_directory(self, obj: dict[str, Any], source: str, name: str, patterns: list[Pattern],
                          where: str) -> dict[str, Any] | None:
        """`obj` pointing into the VM's copy of a job order Directory that holds it, as cwltool sees it locally
        (a file inside a directory given too): sent once, and found inside it. None when it is not inside one,
        or brings secondary files or a name of its own (then it travels on its own)."""
        if not _is_local(obj.get("location", "")) or obj.get("secondaryFiles") or patterns \
                or name != os.path.basename(source.rstrip("/")):
            return None
        for directory, dir_name in self.directories:
            if source.startswith(directory.rstrip("/") + "/"):
                vm_dir = self._place([_Member(directory, dir_name, "Directory")])
                dest = posixpath.join(vm_dir, dir_name, *os.path.relpath(source, directory).split(os.sep))
                staged = self._moved(obj, dest)
                if obj["class"] == "Directory" and "listing" in obj:
                    staged["listing"] = self._listing_inside(obj["listing"], source, dest, where)
                return staged
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _resolve(self, cwl_type: Any) -> Any:
        """A type named by a string (`#types.yml/Sample`) replaced by its definition; unions member by member."""
        if isinstance(cwl_type, str):
            return self.named_types.get(cwl_type, cwl_type)
        if isinstance(cwl_type, list):
            return [self.named_types.get(t, t) if isinstance(t, str) else t for t in cwl_type]
        return cwl_type

    def _moved(self, obj: dict[str, Any], dest: str) -> dict[str, Any]:
        """`obj` pointing at `dest` on the VM; keys derived from the old place (`path`, `dirname`) dropped."""
        moved = {k: v for k, v in obj.items() if k not in ("path", "dirname")}
        moved["location"] = path_to_uri(dest)
        return moved

    def _listing_inside(self, listing: list[dict[str, Any]], source_dir: str, vm_dir: str,
                        where: str) -> list[dict[str, Any]]:
        """A transferred Directory's listing: entries inside it follow it; entries from elsewhere are staged."""
        entries = []
        for entry in listing:
            location = entry.get("location", "")
            if _is_local(location) and uri_to_path(location).startswith(source_dir.rstrip("/") + "/"):
                rel = os.path.relpath(uri_to_path(location), source_dir)
                moved = self._moved(entry, posixpath.join(vm_dir, *rel.split(os.sep)))
                if entry.get("class") == "Directory" and "listing" in entry:
                    moved["listing"] = self._listing_inside(entry["listing"], uri_to_path(location),
                                                            posixpath.join(vm_dir, *rel.split(os.sep)), where)
                entries.append(moved)
            else:
                entries.append(self.stage_object(entry, [], f"{where} (listing)"))
        return entries

    def _check_exists(self, cls: str, source: str, where: str) -> None:
        if _is_remote(source):
            return
        if not os.path.exists(source):
            raise InputMissing(f"{where}: {cls} {source} does not exist")
        if cls == "File" and not os.path.isfile(source):
            raise InputMissing(f"{where}: {source} is not a file")
        if cls == "Directory" and not os.path.isdir(source):
            raise InputMissing(f"{where}: {source} is not a directory")
        if not os.access(source, os.R_OK | (os.X_OK if cls == "Directory" else 0)):
            raise InputMissing(f"{where}: {cls} {source} cannot be read")
        if cls == "Directory" and (link := _broken_link(source)):
            # the transfer follows links: one that leads nowhere, or back up the tree, cannot be sent
            problem = "leads nowhere" if not os.path.exists(link) else "leads back into the directory holding it"
            raise InputMissing(f"{where}: the Directory {source} holds a symbolic link that {problem} "
                               f"({os.path.relpath(link, source)} -> {os.readlink(link)}); remove it or give the "
                               "directory without it")

    def _place(self, members: list[_Member]) -> str:
        """A VM directory where the primary (first) and its secondary files can all land; plans their transfers."""
        source, name = members[0].source, members[0].name
        parent = _source_parent(source)
        candidates = ([self.placed[(source, name)]] if (source, name) in self.placed else []) + \
            self.dirs_of_parent.get(parent, [])
        vm_dir = next((d for d in candidates if self._fits(d, members)), None)
        if vm_dir is None:
            self.dir_count += 1
            vm_dir = posixpath.join(self.root, str(self.dir_count))
            self.dirs_of_parent.setdefault(parent, []).append(vm_dir)
        for m in members:
            dest = posixpath.join(vm_dir, m.name)
            self.placed.setdefault((m.source, m.name), vm_dir)
            if dest in self.by_dest:
                continue
            kind = _kind(m)
            transfer = Transfer(m.source, dest, kind, _local_size(m.source, kind) if kind in ("file", "directory")
                                else m.size, m.checksum, m.required)
            self.transfers.append(transfer)
            self.by_dest[dest] = transfer
        return vm_dir

    def _fits(self, vm_dir: str, members: list[_Member]) -> bool:
        """No member's name in `vm_dir` is taken by another source."""
        return all(self.by_dest[dest].source == m.source
                   for m in members if (dest := posixpath.join(vm_dir, m.name)) in self.by_dest)


def _kind(member: _Member) -> str:
    directory = member.cls == "Directory"
    if is_object_url(member.source):
        return "object-directory" if directory else "object"
    if _is_url(member.source):
        return "url"
    return "directory" if directory else "file"


def _broken_link(root: str) -> str | None:
    """The first symbolic link below `root` (following links to directories, as the transfer does) that leads
    nowhere or into a directory it is already inside, or None."""

    def walk(path: str, ancestors: frozenset[str]) -> str | None:
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return None  # unreadable below: the transfer says so
        for name in names:
            entry = os.path.join(path, name)
            if os.path.islink(entry) and not os.path.exists(entry):
                return entry
            if os.path.isdir(entry):
                real = os.path.realpath(entry)
                if real in ancestors:
                    return entry
                found = walk(entry, ancestors | {real})
                if found:
                    return found
        return None

    return walk(root, frozenset([os.path.realpath(root)]))


def _local_size(path: str, kind: str) -> int:
    if kind == "file":
        return os.stat(path).st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with_link = os.path.join(dirpath, f)
            if os.path.isfile(with_link):
                total += os.stat(with_link).st_size
    return total


def _local_directories(job_order: Any) -> list[tuple[str, str]]:
    """The local Directories a job order names, as (source, name on the VM), outermost first."""
    found = {(uri_to_path(obj["location"]), obj.get("basename") or _location_basename(obj["location"]))
             for obj in iter_files_dirs(job_order)
             if obj.get("class") == "Directory" and _is_local(obj.get("location", ""))}
    return sorted(found, key=lambda d: (len(d[0]), d))


def _location_basename(location: str) -> str:
    """The last path segment of a location (URL-decoded), or `download` for a URL without one."""
    path = uri_to_path(location) if _is_local(location) else urllib.parse.unquote(urllib.parse.urlsplit(location).path)
    return posixpath.basename(path.rstrip("/")) or "download"


def _source_parent(source: str) -> str:
    """The directory a source sits in: its local directory, or its URL up to the last `/`."""
    if _is_remote(source):
        split = urllib.parse.urlsplit(source)
        return urllib.parse.urlunsplit((split.scheme, split.netloc, posixpath.dirname(split.path), "", ""))
    return os.path.dirname(source)


def _sibling_url(url: str, name: str) -> str:
    """The URL of `name` in the same URL directory as `url` (query and fragment dropped)."""
    split = urllib.parse.urlsplit(url)
    path = posixpath.join(posixpath.dirname(split.path), urllib.parse.quote(name))
    return urllib.parse.urlunsplit((split.scheme, split.netloc, path, "", ""))


def _named_types(packed: Any) -> dict[str, Any]:
    """Every named record type the packed workflow defines (SchemaDefRequirement's, or inline), by name."""
    found: dict[str, Any] = {}

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                visit(n)
        elif isinstance(node, dict):
            if node.get("type") == "record" and isinstance(node.get("name"), str):
                found.setdefault(node["name"], node)
            for v in node.values():
                visit(v)

    visit(packed)
    return found


def _array_items(cwl_type: Any) -> Any:
    for t in cwl_type if isinstance(cwl_type, list) else [cwl_type]:
        if isinstance(t, dict) and t.get("type") == "array":
            return t.get("items")
    return None


def _record_fields(cwl_type: Any) -> dict[str, dict[str, Any]]:
    for t in cwl_type if isinstance(cwl_type, list) else [cwl_type]:
        if isinstance(t, dict) and t.get("type") == "record":
            return {shortname(f["name"]): f for f in t.get("fields", []) if "name" in f}
    return {}
