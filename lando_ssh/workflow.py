"""Preparing a submission on the server: validate a workflow and its job order with cwltool, pack it.

`prepare()` is what `lando-ssh submit` calls before anything is stored or booted. It runs
cwltool's own loader and validator in-process (a cwltool subprocess costs ~0.7 s just to start),
so its messages are cwltool's, cleaned of colour codes and hints about `--debug`.

cwltool is imported inside the functions that need it: importing it takes ~0.3 s and loading
its schema ~0.5 s more, which `lando-ssh job` and the daemon's other paths must not pay.

Thread safety: `prepare()` may be called from several threads; calls are serialized by a lock,
because cwltool's schema caches and loggers are process-wide. After the first call (~1 s) a
call costs tens of milliseconds.

Where a workflow may come from (`WorkflowSource`): a local path; an `http(s)://` URL to a CWL
document or a packed CWL JSON, with an optional `#main`-style fragment; a zip archive URL and the
path of the workflow inside it (bespin-api's "zipped" workflows); a git repository, a ref and the
path inside it. URLs and repositories are fetched here, on the server, before anything boots, and
what was fetched is recorded (`PreparedWorkflow.source_record`: resolved URL, git commit, sha256).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lando_ssh import exactjson
from lando_ssh.errors import InputMissing, WorkflowInvalid
from lando_ssh.prepared import (
    PreparedWorkflow,
    check_schemes,
    dicts,
    iter_files_dirs,
    local_files_in,
    path_to_uri,
    uri_to_path,
)

log = logging.getLogger(__name__)
_lock = threading.Lock()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# cwltool logs through these; during prepare() their records are captured instead of printed
_CWL_LOGGERS = ("cwltool", "salad", "cwl_utils")


@dataclass(frozen=True)
class LoadOptions:
    """cwltool's options that change how a workflow loads; given to cwl-runner, they go to the VM's
    cwltool too, so the server validates the workflow as the VM will load it."""

    strict: bool = True  # --strict / --non-strict
    enable_dev: bool = False  # --enable-dev: development versions of CWL
    enable_ext: bool = False  # --enable-ext: cwltool's extensions (cwltool:... requirements)

    @classmethod
    def from_cwltool_args(cls, args: Sequence[str]) -> LoadOptions:
        """From cwltool's run options for the VM, read by cwltool's own argparser, so a bad value
        (`--on-error=bogus`) is refused now, before anything boots, with cwltool's message. Raises
        `WorkflowInvalid`."""
        if not args:
            return cls()
        from cwltool.argparser import arg_parser

        parser = arg_parser()

        def refuse(message: str) -> Any:
            raise WorkflowInvalid(f"cwltool does not take these options ({' '.join(args)}): {message}")

        parser.error = refuse  # type: ignore[method-assign]
        given = parser.parse_args([*args, "workflow.cwl"])
        return cls(strict=given.strict, enable_dev=given.enable_dev, enable_ext=given.enable_ext)


def prepare(workflow: str | WorkflowSource, job_order_path: str | None,
            job_order: dict[str, Any] | None = None, *, input_args: Sequence[str] | None = None,
            options: LoadOptions = LoadOptions()) -> PreparedWorkflow:
    """Fetch `workflow` (a path or URL, or a `WorkflowSource`), validate it and its job order with
    cwltool, and pack the workflow.

    The job order is read from `job_order_path`, or given as `job_order` (then relative paths
    in it resolve against `job_order_path`'s directory when given, else the current directory).
    Neither: the workflow must not have required inputs. `input_args`: the workflow's inputs as
    options, as cwltool takes them after the workflow (`--threads 4 --reads r.fq [job.yml]`);
    they override the job order's values.

    Raises `WorkflowInvalid` (cwltool's message) when the workflow or the job order does not
    validate, and `InputMissing` when a local File/Directory it names does not exist.
    """
    source = workflow if isinstance(workflow, WorkflowSource) else WorkflowSource(workflow)
    shown = source.describe()
    import_cwltool()  # before our log capture: importing cwltool adds its own stderr handler
    with fetched(source) as (cwl_ref, record, scratch):
        with _lock, _captured_cwltool_logs() as warnings, _schemas(options):
            uri, process, loading_context = _load_workflow(cwl_ref, shown, options)
            packed = _pack(loading_context, uri)
            if any("$import" in obj for obj in dicts(packed)):
                # cwltool packs a process shared through a YAML anchor (`run: &tool` ... `run: *tool`) as
                # `$import`s of ids it never defines: pack again from the documents with their aliases expanded
                packed = _pack(_load_workflow(cwl_ref, shown, options, unalias=True)[2], uri)
                # what is left may name something the packed document holds (a type a step's tool imports
                # again): the document that loads runs on the VM
                if any("$import" in obj for obj in dicts(packed)) and not _packed_loads(packed, shown, options):
                    raise WorkflowInvalid(f"the workflow {shown} cannot be packed into one document, as it must be "
                                          "to run on a VM (cwltool's pack leaves references it cannot resolve)")
            if any("previously defined" in w for w in warnings):
                _check_packed_loads(packed, shown, warnings, options)
            from_args: dict[str, Any] = {}
            if input_args is not None:
                job_order_path, from_args = _inputs_from_args(process, list(input_args), shown, job_order_path)
            if loading_context.jobdefaults is not None:
                # `cwltool job.yml`: a job order naming its workflow with `cwl:tool`; its values are the inputs
                # (a job order given besides it wins, as cwltool takes the first as defaults)
                loaded = _load_job_order(cwl_ref.split("#", 1)[0], None)
                if job_order_path is not None or job_order is not None:
                    loaded.update(_load_job_order(job_order_path, job_order))
            else:
                loaded = _load_job_order(job_order_path, job_order)
            for key, value in from_args.items():  # `--rec.low 9` changes that field of the file's record
                if isinstance(value, dict) and "class" not in value and isinstance(loaded.get(key), dict):
                    loaded[key].update(value)
                else:
                    loaded[key] = value
            filled = _validate_job_order(process, loaded, shown)
            discovered = _discover_secondary_files(process, filled) if _expression_patterns(packed) else None
        default_files = local_files_in(packed)
        if scratch and any(p.startswith(scratch + os.sep) for p in default_files):
            raise WorkflowInvalid(f"the workflow {shown} names a File inside its archive or repository as a default; "
                                  "only the workflow is kept, so give that file in the job order instead")
    order = _plain_job_order(loaded)
    if discovered is not None:
        _list_secondary_files(order, discovered)
    check_schemes(order, "input")
    prepared = PreparedWorkflow(source=shown, packed=packed, job_order=order, default_files=default_files,
                                warnings=list(warnings), source_record=record, odd_names=_odd_names(order))
    # planning onto a dummy VM dir checks that every local file and secondary file exists, now
    from lando_ssh.staging import plan_inputs
    plan_inputs(prepared, "/nonexistent")
    return prepared


# -- where the workflow comes from -------------------------------------------------------------

#: The largest workflow document or archive fetched from a URL.
MAX_WORKFLOW_BYTES = 100 * 1024 * 1024
FETCH_TIMEOUT = 60.0  # seconds for a URL to answer (and between bytes)
GIT_TIMEOUT = 300.0  # seconds for a clone


class WorkflowUnavailable(WorkflowInvalid):
    """The workflow's URL or repository could not be fetched (named, with the reason)."""


@dataclass(frozen=True)
class WorkflowSource:
    """Where a workflow comes from.

    kind `path`: a local file. `url`: an http(s) URL to a CWL document or a packed CWL JSON (a
    `#main`-style fragment names the process inside it). `zip`: an http(s) URL to a zip archive and
    `path`, the workflow inside it. `git`: a repository (URL or local path), `ref` (branch, tag or
    commit; default: its HEAD) and `path`, the workflow inside it. `auto` is `url` for an http(s)
    location with no `path`, `zip` for one with a `path`, and `path` otherwise.
    """

    location: str
    kind: str = "auto"
    path: str | None = None  # inside the archive or repository; may end in a #fragment
    ref: str | None = None  # git only

    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        if self.location.startswith(("http://", "https://")):
            return "zip" if self.path else "url"
        return "path"

    def describe(self) -> str:
        kind = self.resolved_kind()
        if kind == "git":
            return f"{self.location} at {self.ref or 'HEAD'}, {self.path}"
        if kind == "zip":
            return f"{self.path} in {self.location}"
        return self.location


@contextlib.contextmanager
def fetched(source: WorkflowSource) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(what cwltool should load, the record of what was fetched, the scratch dir or None) for `source`;
    any download or checkout is removed on exit."""
    kind = source.resolved_kind()
    if kind == "path":
        if source.path or source.ref:
            raise WorkflowInvalid("a local workflow takes no --path or --ref (those are for --git or a zip URL)")
        path, _, fragment = source.location.partition("#")
        record = {"kind": "path", "path": os.path.abspath(path)}
        if os.path.isfile(path):
            record["sha256"] = _sha256_file(path)
        yield source.location, record, None
        return
    if kind not in ("url", "zip", "git"):
        raise WorkflowInvalid(f"unknown workflow source kind {kind!r} (path, url, zip or git)")
    if kind in ("zip", "git") and not source.path:
        raise WorkflowInvalid(f"a {kind} workflow needs the path of the workflow inside it (--path)")
    scratch = tempfile.mkdtemp(prefix="lando-ssh-workflow-")
    try:
        if kind == "url":
            yield _fetch_url(source.location, scratch)
        elif kind == "zip":
            yield _fetch_zip(source.location, source.path or "", scratch)
        else:
            yield _fetch_git(source.location, source.ref, source.path or "", scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch_url(url: str, scratch: str) -> tuple[str, dict[str, Any], str | None]:
    """cwltool loads the URL itself (so relative `run:` references resolve against it); we fetch it
    once more to record where it resolved to and its checksum."""
    base, _, fragment = url.partition("#")
    resolved, digest, _ = _download(base, os.path.join(scratch, "workflow"))
    record = {"kind": "url", "url": url, "resolved_url": resolved + (f"#{fragment}" if fragment else ""),
              "sha256": digest}
    return record["resolved_url"], record, scratch


def _fetch_zip(url: str, inner: str, scratch: str) -> tuple[str, dict[str, Any], str | None]:
    archive = os.path.join(scratch, "workflow.zip")
    resolved, digest, _ = _download(url, archive)
    root = os.path.join(scratch, "unpacked")
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                target = os.path.realpath(os.path.join(root, member.filename))
                if not target.startswith(os.path.realpath(root) + os.sep) and target != os.path.realpath(root):
                    raise WorkflowInvalid(f"the workflow archive {url} holds a path outside itself: {member.filename}")
            z.extractall(root)
    except zipfile.BadZipFile as e:
        raise WorkflowInvalid(f"the workflow archive {url} is not a zip file: {e}") from None
    path, fragment = _inside(root, inner, f"the archive {url}")
    record = {"kind": "zip", "url": url, "resolved_url": resolved, "path": inner, "sha256": digest,
              "workflow_sha256": _sha256_file(path)}
    return path + fragment, record, scratch


def _fetch_git(repository: str, ref: str | None, inner: str, scratch: str) -> tuple[str, dict[str, Any], str | None]:
    if repository.startswith("-") or (ref or "").startswith("-"):
        raise WorkflowInvalid("a git repository or ref may not start with '-'")
    checkout = os.path.join(scratch, "checkout")
    _git(["clone", "--quiet", "--no-checkout", "--", repository, checkout], f"cloning {repository}")
    commit = None
    for candidate in ([ref, f"origin/{ref}"] if ref else ["HEAD"]):
        found = subprocess.run(["git", "-C", checkout, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
                               capture_output=True, text=True, timeout=GIT_TIMEOUT, env=_git_env())
        if found.returncode == 0:
            commit = found.stdout.strip()
            break
    if commit is None:
        raise WorkflowUnavailable(f"the git repository {repository} has no branch, tag or commit {ref!r}")
    _git(["-C", checkout, "checkout", "--quiet", "--detach", commit], f"checking out {commit} of {repository}")
    path, fragment = _inside(checkout, inner, f"the repository {repository} at {ref or 'HEAD'}")
    record = {"kind": "git", "repository": repository, "ref": ref or "HEAD", "commit": commit, "path": inner,
              "sha256": _sha256_file(path)}
    return path + fragment, record, scratch


def _git(args: list[str], what: str) -> None:
    try:
        proc = subprocess.run(["git", "-c", "protocol.ext.allow=never", *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, env=_git_env())
    except FileNotFoundError:
        raise WorkflowUnavailable("git is not installed on this server; it is needed for git workflows") from None
    except subprocess.TimeoutExpired:
        raise WorkflowUnavailable(f"{what} took longer than {GIT_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise WorkflowUnavailable(f"{what} failed: {lines[-1] if lines else f'git exited {proc.returncode}'}")


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def _inside(root: str, inner: str, where: str) -> tuple[str, str]:
    """The local path of `inner` (`dir/wf.cwl#main`) under `root`, refusing paths that leave it; and the fragment."""
    rel, _, fragment = inner.partition("#")
    rel = rel.lstrip("/")
    path = os.path.realpath(os.path.join(root, rel))
    if not path.startswith(os.path.realpath(root) + os.sep):
        raise WorkflowInvalid(f"the workflow path {inner!r} leaves {where}")
    if not os.path.isfile(path):
        raise WorkflowInvalid(f"{where} has no file {rel}")
    return path, f"#{fragment}" if fragment else ""


def _download(url: str, dest: str) -> tuple[str, str, int]:
    """Download `url` to `dest`: (the URL after redirects, sha256 hex, bytes)."""
    import requests

    digest = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=FETCH_TIMEOUT) as resp:
            if resp.status_code != 200:
                raise WorkflowUnavailable(f"the workflow URL {url} answered HTTP {resp.status_code} {resp.reason}")
            with open(dest, "wb") as f:
                for chunk in resp.iter_content(1 << 16):
                    size += len(chunk)
                    if size > MAX_WORKFLOW_BYTES:
                        raise WorkflowUnavailable(f"the workflow at {url} is larger than "
                                                  f"{MAX_WORKFLOW_BYTES // (1024 * 1024)} MiB")
                    digest.update(chunk)
                    f.write(chunk)
            return resp.url, digest.hexdigest(), size
    except requests.RequestException as e:
        raise WorkflowUnavailable(f"cannot fetch the workflow {url}: {type(e).__name__}: {e}") from None


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()

def import_cwltool() -> None:
    logging.getLogger("pydot").setLevel(logging.WARNING)  # cwltool imports pydot, which logs its start at DEBUG
    # the loader, packer and validator, and cwltool's logger (its stderr handler); not cwltool.main, whose command
    # line, executors and provenance a submit does not use (~60 ms)
    import cwltool.loghandler  # noqa: F401
    import cwltool.pack  # noqa: F401
    import cwltool.workflow  # noqa: F401


@contextlib.contextmanager
def _schemas(options: LoadOptions) -> Iterator[None]:
    """cwltool's extension schemas in use while loading, with --enable-ext (process-wide: under `_lock`)."""
    if not options.enable_ext:
        yield
        return
    from cwltool.main import setup_schema

    setup_schema(argparse.Namespace(enable_ext=True), None)
    try:
        yield
    finally:
        setup_schema(argparse.Namespace(enable_ext=False), None)


def _load_workflow(workflow: str, shown: str, options: LoadOptions,
                   unalias: bool = False) -> tuple[str, Any, Any]:
    """(its URI, the process, the loading context); `unalias`: read every document with its YAML
    aliases expanded into copies (see `_UnaliasingFetcher`)."""
    from cwltool.context import LoadingContext
    from cwltool.load_tool import fetch_document, make_tool, resolve_and_validate_document, resolve_tool_uri
    from cwltool.resolver import resolve_local
    from cwltool.workflow import default_make_tool

    local = None if "://" in workflow else workflow if os.path.exists(workflow) else workflow.split("#", 1)[0]
    if local is not None and not os.path.exists(local):
        raise WorkflowInvalid(f"the workflow {shown} does not exist")
    if local is not None and os.path.isdir(local):
        raise WorkflowInvalid(f"the workflow {shown} is a directory, not a CWL file")
    try:
        uri, _ = resolve_tool_uri(workflow, resolver=resolve_local)  # resolve_local: `wf.cwl#main`, as cwltool
        loading_context = LoadingContext({"strict": options.strict, "enable_dev": options.enable_dev,
                                          "construct_tool_object": default_make_tool})
        if unalias:
            loading_context.fetcher_constructor = _unaliasing_fetcher()
        loading_context, document, uri = fetch_document(uri, loading_context)
        if not isinstance(document, dict):
            raise WorkflowInvalid(f"the workflow {shown} is not a CWL document: it holds a "
                                  f"{_yaml_kind(document)}, not a mapping with a `class`")
        loading_context, uri = resolve_and_validate_document(loading_context, document, uri)
        process = make_tool(uri, loading_context)
    except WorkflowInvalid:
        raise
    except StopIteration as e:  # schema-salad's way of saying the file is empty
        raise WorkflowInvalid(f"the workflow {shown} is empty") from e
    except Exception as e:  # cwltool raises ValidationException, WorkflowException, IOError, ruamel errors...
        raise WorkflowInvalid(f"the workflow {shown} is not valid CWL:\n{clean_message(e)}") from e
    return uri, process, loading_context


def _unaliasing_fetcher() -> Any:
    """A schema-salad fetcher that hands over each YAML document as JSON, which expands its aliases: a node
    shared through an anchor becomes one copy per use, each of which gets its own ids when loaded."""
    from ruamel.yaml import YAML
    from schema_salad.fetcher import DefaultFetcher

    class _UnaliasingFetcher(DefaultFetcher):
        def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
            text = super().fetch_text(url, content_types)
            return exactjson.dumps(YAML(typ="rt").load(text))  # each float's text kept

    return _UnaliasingFetcher


def _check_packed_loads(packed: dict[str, Any], shown: str, warnings: list[str], options: LoadOptions) -> None:
    """cwltool warned that an id is defined twice (e.g. a workflow output and a step of the same name):
    it runs such a file, but its packed form, which the VM runs, may no longer load. Refuse that now
    rather than on the VM."""
    if not _packed_loads(packed, shown, options):
        twice = next(w for w in warnings if "previously defined" in w)
        raise WorkflowInvalid(f"the workflow {shown} cannot be packed into one document, as it must be to run "
                              f"on a VM: it defines an id twice ({twice}); give its steps, inputs and outputs "
                              "distinct names")


def _packed_loads(packed: dict[str, Any], shown: str, options: LoadOptions) -> bool:
    """Whether cwltool loads the packed document, as the VM's cwltool will."""
    with tempfile.TemporaryDirectory(prefix="lando-ssh-packed-") as tmp:
        path = os.path.join(tmp, "packed.cwl")
        with open(path, "w") as f:
            f.write(exactjson.dumps(packed))
        try:
            _load_workflow(path, shown, options)
        except WorkflowInvalid:
            return False
    return True


def _pack(loading_context: Any, uri: str) -> dict[str, Any]:
    import cwltool.pack

    # cwltool's pack makes every object whose id it has seen before an `$import` of that id; for a tool whose
    # input and output share a name (`testdir` in and out) that drops the output's binding, and the packed tool
    # no longer runs as the file does. Only a true repeat becomes an `$import` here (under `_lock`)
    original = cwltool.pack.import_embed
    cwltool.pack.import_embed = _import_repeats  # type: ignore[assignment]
    try:
        packed: Any = cwltool.pack.pack(loading_context, uri)
    finally:
        cwltool.pack.import_embed = original
    graph = packed["$graph"]
    # like `cwltool --pack`: a single process is printed on its own, not inside a $graph
    doc = graph[0] if len(graph) == 1 else packed
    return exactjson.plain(doc)  # each float as the document wrote it, as the VM's cwltool must read it


def _import_repeats(node: Any, seen: Any, first: dict[str, Any] | None = None) -> None:
    """cwltool's `import_embed`, but an object is made an `$import` of an id seen before only when it repeats
    that object (the same content): two different objects of one id (a tool's input and output of the same
    name, which cwltool runs with a warning) both stay."""
    first = {} if first is None else first
    if isinstance(node, list):
        for item in node:
            _import_repeats(item, seen, first)
        return
    if not isinstance(node, dict):
        return
    for key in ("id", "name"):
        ident = node.get(key)
        if isinstance(ident, str):
            if ident not in first:
                first[ident] = node
            elif first[ident] is not node and first[ident] == node:
                node.clear()
                node["$import"] = ident
            break
    for key in sorted(node):
        _import_repeats(node[key], seen, first)


def _load_job_order(path: str | None, given: dict[str, Any] | None) -> Any:
    """The job order as cwltool's loader reads it: locations absolute, line numbers kept for messages."""
    from cwltool.load_tool import jobloaderctx
    from cwltool.utils import path_to_loc, visit_files_directories
    from schema_salad.ref_resolver import Loader, file_uri
    from schema_salad.sourceline import cmap
    from schema_salad.utils import yaml_no_ts

    loader = Loader(jobloaderctx.copy())
    named = "on standard input" if path == "-" else path or "(given)"
    order: Any
    try:
        if given is not None:
            base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
            order, _ = loader.resolve_all(cmap(copy.deepcopy(given)), file_uri(base_dir) + "/", checklinks=False)
        elif path is not None and "://" in path:  # a job order named by URL (a `cwl:tool` one fetched as the workflow)
            order, _ = loader.resolve_ref(path, checklinks=False)
        elif path == "-" or (path is not None and os.path.exists(path) and not os.path.isfile(path)
                             and not os.path.isdir(path)):
            # standard input (`-`, as cwltool reads it) or a pipe (`<(...)`): read once; relative paths in it
            # are from the current directory
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path) as stream:
                    text = stream.read()
            order = yaml_no_ts().load(text)
            if isinstance(order, dict):
                order, _ = loader.resolve_all(cmap(order), file_uri(os.getcwd()) + "/", checklinks=False)
        elif path is not None:
            if os.path.isdir(path):
                raise InputMissing(f"the job order {path} is a directory, not a file")
            if not os.path.isfile(path):
                raise InputMissing(f"the job order file {path} does not exist")
            order, _ = loader.resolve_ref(file_uri(os.path.abspath(path)), checklinks=False)
        else:
            order = cmap({})
    except InputMissing:
        raise
    except StopIteration as e:  # schema-salad's way of saying the file is empty
        raise WorkflowInvalid(f"the job order {path} is empty; it should be a mapping of input names to values, "
                              "or '{}' if the workflow takes no inputs") from e
    except Exception as e:  # YAML syntax errors, unreadable files
        raise WorkflowInvalid(f"the job order {named} cannot be read:\n{clean_message(e)}") from e
    if not isinstance(order, dict):
        raise WorkflowInvalid(f"the job order {named} must be a mapping of input names to values, "
                              f"not a {_yaml_kind(order)}")
    for key in ("__id", "cwl:tool", "https://w3id.org/cwl/cwl#tool"):  # what cwltool drops too
        order.pop(key, None)
    if given is not None:  # the loader sorts keys; keep the user's order (staging numbers inputs in it)
        for key in [k for k in given if k in order] + [k for k in order if k not in given]:
            order[key] = order.pop(key)
    visit_files_directories(order, path_to_loc)  # `path: x` becomes `location: file:///abs/x`
    return order


class _InputsParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise WorkflowInvalid(message)


def _inputs_parser(process: Any, shown: str, required: bool) -> tuple[argparse.ArgumentParser, dict[str, str],
                                                                       list[str]]:
    """cwltool's parser of the workflow's inputs (its own generate_parser), with `--help` but no `-h`: a
    one-letter input may be called h. Unambiguous prefixes of the inputs' names are taken, as cwltool's are."""
    from cwltool.argparser import generate_parser
    from schema_salad.ref_resolver import file_uri

    namemap: dict[str, str] = {}
    records: list[str] = []
    parser = _InputsParser(prog=shown, add_help=False)
    parser.add_argument("--help", action="help", help="show the workflow's inputs and exit")
    try:
        generate_parser(parser, process, namemap, records, input_required=required, urljoin=urllib.parse.urljoin,
                        base_uri=file_uri(os.getcwd()) + "/")
    except argparse.ArgumentError as e:  # e.g. an input named help
        raise WorkflowInvalid(f"the inputs of {shown} cannot be given on the command line ({e}); give them in a "
                              "job order file") from None
    return parser, namemap, records


def _inputs_from_args(process: Any, args: list[str], shown: str,
                      job_order_path: str | None) -> tuple[str | None, dict[str, Any]]:
    """The workflow's inputs given as options (`--threads 4 --reads r.fq`), read by the parser cwltool
    builds from the workflow's inputs, and the job order file among them, if any: (that file, or
    `job_order_path`; the inputs given). Only the inputs given are returned (cwltool also sets every
    other one to null, dropping a job order file's values); a missing required one is found when the
    job order is validated. `--help` prints the workflow's inputs and exits, as cwltool's does."""
    from schema_salad.ref_resolver import file_uri

    if "--help" in args:
        _inputs_parser(process, shown, required=True)[0].print_help()
        raise SystemExit(0)
    parser, namemap, records = _inputs_parser(process, shown, required=False)
    given_dests: set[str] = set()
    for action in parser._actions:  # note which inputs the command line names (abbreviated or not)
        if action.option_strings:
            original = type(action)

            def call(self: Any, *a: Any, _original: Any = original, **k: Any) -> None:
                given_dests.add(self.dest)
                _original.__call__(self, *a, **k)

            action.__class__ = type(original.__name__, (original,), {"__call__": call})
    try:
        parsed = vars(parser.parse_args(args))
    except WorkflowInvalid as e:
        raise WorkflowInvalid(f"the inputs given on the command line do not fit {shown}: {e}\n"
                              f"(`{shown} --help` lists its inputs; lando-ssh's and cwltool's own options go before "
                              "the workflow)") from None
    given = {k: v for k, v in parsed.items() if k in given_dests}
    path = parsed.get("job_order")
    if path is not None and job_order_path is not None:
        raise WorkflowInvalid(f"two job orders: {job_order_path} and {path}")
    for record in records:  # `--rec.field 1` -> {"rec": {"field": 1}}
        fields = {k[len(record) + 1:]: given.pop(k) for k in list(given) if k.startswith(record + ".")}
        if fields:
            given[record] = fields
    base = file_uri(os.getcwd()) + "/"
    for obj in iter_files_dirs(given):  # cwltool gives a record's File fields no base: relative to here
        if "location" in obj and "://" not in obj["location"]:
            obj["location"] = urllib.parse.urljoin(base, obj["location"])
    return path or job_order_path, {namemap.get(k, k): v for k, v in given.items()}


def _odd_names(order: Any) -> list[str]:
    """The names with a `#` among the job order's Files and Directories that cwltool's default (strict) path checks
    refuse: CWL's conformance tests require such a name to work (`item #1.txt`, from `item%20%231.txt`). A name
    refused for anything else (`my reads.txt`) is refused, as under cwltool."""
    from cwltool.command_line_tool import PathCheckingMode

    names = []
    for obj in iter_files_dirs(order):
        location = obj.get("location", "")
        name = obj.get("basename") or (uri_to_path(location).rstrip("/").rsplit("/", 1)[-1] if location else "")
        if "#" in name and not PathCheckingMode.STRICT.value.match(name) and name not in names:
            names.append(name)
    return names


def _yaml_kind(value: Any) -> str:
    """What a YAML/JSON document holds, in words: `list`, `string`, `number`..."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _plain_job_order(loaded: Any) -> dict[str, Any]:
    """Plain JSON data, as the job record stores it, with local locations properly %-quoted."""
    order = exactjson.plain(loaded)  # each float as the job order wrote it: cwltool prints it so
    for obj in iter_files_dirs(order):
        if obj.get("location", "").startswith("file://"):
            obj["location"] = path_to_uri(uri_to_path(obj["location"]))  # cwltool's loader leaves spaces raw
    return order


def _validate_job_order(process: Any, order: Any, workflow: str) -> Any:
    """What cwltool does before it runs a job: fill in defaults, then check the input record schema.
    Returns the job order so filled in (a copy)."""
    from cwltool.builder import INPUT_OBJ_VOCAB
    from cwltool.process import _logger_validation_warnings, fill_in_defaults
    from cwltool.stdfsaccess import StdFsAccess
    from cwltool.utils import normalizeFilesDirs
    from schema_salad.validate import validate_ex

    job = _copy_keeping_lines(order)  # fill_in_defaults and normalizeFilesDirs change what they are given
    try:
        fill_in_defaults(process.tool["inputs"], job, StdFsAccess(""))
        normalizeFilesDirs(job)
        validate_ex(process.names.get_name("input_record_schema", None), job, strict=False,
                    logger=_logger_validation_warnings, vocab=INPUT_OBJ_VOCAB)
    except Exception as e:  # ValidationException, WorkflowException
        raise WorkflowInvalid(f"the job order does not match the inputs of {workflow}:\n{clean_message(e)}") from e
    return job


def _expression_patterns(packed: dict[str, Any]) -> bool:
    """Whether any secondaryFiles pattern of the workflow is an expression (`$(...)`, `${...}`)."""
    for obj in dicts(packed):
        for entry in _as_list(obj.get("secondaryFiles")) if obj.get("class") not in ("File", "Directory") else []:
            pattern = entry.get("pattern") if isinstance(entry, dict) else entry
            if isinstance(pattern, str) and ("$(" in pattern or "${" in pattern):
                return True
    return False


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _discover_secondary_files(process: Any, filled: Any) -> Any:
    """The job order with the secondary files of its Files found as cwltool finds them before a run (the
    patterns evaluated, expressions included), or None when that cannot be done here (URL inputs: found on
    the VM). Staging cannot evaluate expression patterns; listed explicitly, those files travel too.
    Raises InputMissing, with cwltool's message, when a required one does not exist."""
    from cwltool.context import RuntimeContext
    from schema_salad.ref_resolver import Loader

    if any(not obj.get("location", "file://").startswith("file://") for obj in iter_files_dirs(filled)):
        return None
    # formats as cwltool expands them before a run (`edam:format_1929` -> its URL), or the format check fails
    names = Loader({**(filled.get("$namespaces") or {}), **(process.metadata.get("$namespaces") or {})})
    for obj in iter_files_dirs(filled):
        if isinstance(obj.get("format"), str):
            obj["format"] = names.expand_url(obj["format"], "")
    try:
        # directories named so that cwltool does not make temporary ones (nothing is run or written here)
        unused = {"outdir": "/nonexistent/out", "tmpdir": "/nonexistent/tmp", "stagedir": "/nonexistent/stage"}
        return process._init_job(filled, RuntimeContext({"toplevel": True, **unused})).job
    except Exception as e:  # WorkflowException for a missing file; anything else: leave it to the VM's cwltool
        if "Missing required secondary file" in str(e):
            raise InputMissing(clean_message(e).split(" from file object:")[0]) from None
        log.debug("secondary files not discovered at submit: %s", e)
        return None


def _list_secondary_files(order: Any, discovered: Any) -> None:
    """Copy into `order` the secondaryFiles that `discovered` (the same job order, as cwltool filled it in)
    found for Files that list none."""
    if isinstance(order, list) and isinstance(discovered, list):
        for mine, theirs in zip(order, discovered, strict=False):
            _list_secondary_files(mine, theirs)
    elif isinstance(order, dict) and isinstance(discovered, dict):
        if order.get("class") == "File" and "secondaryFiles" not in order:
            found = [sf for sf in discovered.get("secondaryFiles") or [] if isinstance(sf, dict) and sf.get("location")]
            if found:
                order["secondaryFiles"] = [
                    {"class": sf.get("class", "File"), "location": path_to_uri(uri_to_path(sf["location"]))
                     if sf["location"].startswith("file://") else sf["location"]} for sf in found]
            return
        for key, value in order.items():
            if key in discovered:
                _list_secondary_files(value, discovered[key])


def _copy_keeping_lines(node: Any) -> Any:
    """A deep copy of a loaded job order that shares its YAML line/column records, so messages still name
    the line. (copy.deepcopy copies ruamel's records too, which took 13 s for a job order of 1,500 Files.)"""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, LineCol

    new: Any
    if isinstance(node, dict):
        new = CommentedMap((k, _copy_keeping_lines(v)) for k, v in node.items())
    elif isinstance(node, list):
        new = CommentedSeq(_copy_keeping_lines(v) for v in node)
    else:
        return node
    if hasattr(node, LineCol.attrib):
        setattr(new, LineCol.attrib, getattr(node, LineCol.attrib))
    return new


def clean_message(e: BaseException) -> str:
    """cwltool's message without colour codes, `--debug` hints or trailing blanks; the substance kept."""
    text = _ANSI.sub("", str(e) or type(e).__name__)
    text = text.replace(", try again with --debug for more information", "")
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


@contextlib.contextmanager
def _captured_cwltool_logs() -> Iterator[list[str]]:
    """Keep cwltool's log records out of our logs while it loads (its warnings are returned instead),
    and its messages unwrapped."""
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                captured.append(_ANSI.sub("", record.getMessage()))

    handler = Capture()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"  # schema-salad wraps its messages at $COLUMNS; a job record wants them whole
    saved = []
    for name in _CWL_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, list(logger.handlers)))
        logger.handlers = [handler]
        logger.propagate = False
    try:
        yield captured
    finally:
        for logger, propagate, handlers in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
