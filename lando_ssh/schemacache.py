"""cwltool's CWL schemas, loaded once and kept in files: the server's and the VM's cwltool each load them from
scratch (~0.5 s of YAML parsing for v1.2 and v1.0, which every run loads, and ~0.13 s for schema-salad's
metaschema, which every process cwltool loads asks for), the same objects every time.

`install(directory)` makes cwltool's `get_schema` take a schema from `directory` (a pickle of exactly what
`get_schema` built) and save one it had to build, and fills schema-salad's own cache of its metaschema (what
`schema_salad.schema.get_metaschema` builds, kept there as `metaschema.pickle`); nothing else changes: a schema
made with cwltool's extensions (`--enable-ext`) is never saved or taken. The files are kept per cwltool and
schema-salad version (`schemas_dir`); a directory of other versions is never read.

This file is also sent with each job (standard library only, cwltool imported when used), with the schemas:
`vmcwltool` installs them in the VM's cwltool when it is of the same versions.
"""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)
_installed: list[str] = []  # the directory in use (one per process)
METASCHEMA = "metaschema.pickle"  # beside the CWL schemas (v1.2.pickle...): schema-salad's metaschema


def versions_tag() -> str:
    """`cwltool-3.3.2026...-salad-8.10...`: the versions a schema file belongs to."""
    return f"cwltool-{_version('cwltool')}-salad-{_version('schema_salad')}"


def _version(package: str) -> str:
    """An installed package's version, from the name of its dist-info directory beside it (importlib.metadata's
    first call costs ~50-500 ms, paid by every job here), else from importlib.metadata."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec(package)  # found, not imported
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        found = glob.glob(os.path.join(glob.escape(site), f"{package}-*.dist-info"))
        if len(found) == 1:
            return os.path.basename(found[0])[len(package) + 1:-len(".dist-info")]
    from importlib.metadata import version

    return version(package)


def schemas_dir(root: str) -> str:
    """The directory under `root` for this cwltool's schemas."""
    return os.path.join(root, versions_tag())


def root_in(data_dir: str) -> str:
    """Where an installation keeps its schema files: `<data_dir>/cwl-schemas`."""
    return os.path.join(data_dir, "cwl-schemas")


def files_for_vm(root: str) -> dict[str, bytes]:
    """What a job sends its VM for `lando-cwltool`: this module and `vmcwltool` as `bin/lando_schemacache.py` and
    `bin/lando_vmcwltool.py`, and `schemas/<versions>/*.pickle`, the schemas this cwltool saved in `root`."""
    sent = {}
    for module in ("schemacache", "vmcwltool"):
        with open(os.path.join(os.path.dirname(__file__), f"{module}.py"), "rb") as f:
            sent[f"bin/lando_{module}.py"] = f.read()
    try:
        directory = schemas_dir(root)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".pickle"):
                with open(os.path.join(directory, name), "rb") as f:
                    sent[f"schemas/{os.path.basename(directory)}/{name}"] = f.read()
    except OSError:  # none saved yet, or cwltool not installed here: the VM's cwltool loads its own
        pass
    return sent


def install(directory: str) -> None:
    """Make cwltool take its schemas from `directory` (and save those it builds there). Idempotent."""
    import copyreg
    import pickle

    import cwltool.load_tool
    import cwltool.process
    from schema_salad.ref_resolver import NormDict

    if _installed:
        return
    _installed.append(directory)
    copyreg.pickle(NormDict, _reduce_normdict)  # a dict whose items need its normalize function first
    build = cwltool.process.get_schema
    cache = cwltool.process.SCHEMA_CACHE

    def get_schema(version: str) -> Any:
        if version in cache or version in cwltool.process.custom_schemas:
            return build(version)
        path = os.path.join(directory, f"{version.split('#')[-1]}.pickle")
        try:
            with open(path, "rb") as f:
                cache[version] = pickle.load(f)  # noqa: S301  (written by lando-ssh itself, see save)
            return cache[version]
        except FileNotFoundError:
            pass
        except Exception as e:  # a damaged file: build it again
            log.debug("the cached CWL schema %s cannot be read: %s", path, e)
        schema = build(version)
        _save(schema, path)
        return schema

    cwltool.process.get_schema = get_schema
    cwltool.load_tool.get_schema = get_schema
    _install_metaschema(os.path.join(directory, METASCHEMA))


def _install_metaschema(path: str) -> None:
    """Fill schema-salad's cache of its metaschema (`get_metaschema` returns what it holds) from `path`, else build
    it once and save it there. Each cwltool Process asks for it (its types are made with its vocabulary)."""
    import pickle

    import schema_salad.schema as salad

    if salad.cached_metaschema is not None:
        return
    try:
        with open(path, "rb") as f:
            taken = pickle.load(f)  # noqa: S301  (written by lando-ssh itself, see _save)
        if isinstance(taken, tuple) and len(taken) == 3:
            salad.cached_metaschema = taken
            return
    except FileNotFoundError:
        pass
    except Exception as e:  # a damaged file: build it again
        log.debug("the cached metaschema %s cannot be read: %s", path, e)
    _save(salad.get_metaschema(), path)


def _save(schema: Any, path: str) -> None:
    import pickle
    import tempfile

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        data = pickle.dumps(schema, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".schema-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # whole or not at all: another process may be reading
    except (OSError, pickle.PicklingError, RecursionError, TypeError, AttributeError) as e:
        log.debug("the CWL schema cannot be cached in %s: %s", path, e)


def _reduce_normdict(d: Any) -> Any:
    """NormDict(normalize), then its items: read back with schema-salad alone (as on the VM)."""
    return type(d), (d.normalize,), None, None, iter(d.items())
