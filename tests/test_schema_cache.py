"""cwltool's CWL schemas are loaded once per installation and cwltool version (data_dir/cwl-schemas), and the
VM's cwltool takes them from the server instead of loading them again."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from conftest import REPO, WORKFLOWS, Lando

from lando_ssh import schemacache

BIN = Path(sys.executable).parent


def test_submit_saves_the_schemas_it_loads_and_the_next_submit_takes_them(lando: Lando):
    lando.submit(WORKFLOWS / "scatter.cwl", WORKFLOWS / "scatter.yml")
    saved = Path(schemacache.schemas_dir(schemacache.root_in(str(lando.data_dir))))
    first = {p.name: p.stat().st_mtime_ns for p in saved.iterdir()}

    second = lando.submit(WORKFLOWS / "scatter.cwl", WORKFLOWS / "scatter.yml")

    assert set(first) == {"v1.0.pickle", "v1.2.pickle", schemacache.METASCHEMA}
    assert {p.name: p.stat().st_mtime_ns for p in saved.iterdir()} == first  # taken, not built again
    assert lando.status(second)["state"] == "N"


def test_a_schema_made_with_cwltools_extensions_is_not_saved(lando: Lando):
    lando.submit(WORKFLOWS / "variety" / "extension.cwl", None, "--cwltool-option=--enable-ext")

    saved = Path(schemacache.schemas_dir(schemacache.root_in(str(lando.data_dir))))
    assert not saved.exists() or "v1.2.pickle" not in os.listdir(saved)


def _vm_side(tmp_path: Path, tag: str, schema: object, saved_as: str = "v1.2.pickle") -> subprocess.CompletedProcess:
    """`lando-cwltool` as the VM runs it, with `schema` saved as the v1.2 schema (or `saved_as`) of versions `tag`."""
    (tmp_path / "bin").mkdir()
    for name, data in schemacache.files_for_vm(str(tmp_path / "none")).items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "schemas" / tag).mkdir(parents=True)
    (tmp_path / "schemas" / tag / saved_as).write_bytes(pickle.dumps(schema))
    (tmp_path / "bin" / "lando-cwltool").write_bytes((REPO / "remote_scripts" / "lando-cwltool").read_bytes())
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(["sh", str(tmp_path / "bin" / "lando-cwltool"), str(tmp_path), str(tmp_path / "schemas"),
                           "cwltool",
                           "--validate", str(WORKFLOWS / "scatter.cwl")], capture_output=True, text=True, env=env)


def test_the_vms_cwltool_takes_the_schemas_of_its_own_version_from_the_server(tmp_path: Path):
    # a schema that is not one shows that it was taken: cwltool cannot validate with it
    ran = _vm_side(tmp_path, schemacache.versions_tag(), ("not", "a", "schema"))

    assert ran.returncode != 0
    assert "is valid CWL" not in ran.stdout + ran.stderr
    assert "'str' object has no attribute 'ctx'" in ran.stdout + ran.stderr  # the 3 words taken as its schema


def test_the_vms_cwltool_takes_schema_salads_metaschema_from_the_server(tmp_path: Path):
    # three items, as get_metaschema returns, but not the metaschema: taken, cwltool cannot make its types with it
    ran = _vm_side(tmp_path, schemacache.versions_tag(), ("not", "the", "metaschema"), schemacache.METASCHEMA)

    assert ran.returncode != 0
    assert "is valid CWL" not in ran.stdout + ran.stderr


def test_a_damaged_metaschema_file_is_built_again_and_saved_whole(tmp_path: Path):
    ran = _vm_side(tmp_path, schemacache.versions_tag(), "damaged", schemacache.METASCHEMA)

    assert ran.returncode == 0, ran.stderr
    assert "is valid CWL" in ran.stdout + ran.stderr
    saved = pickle.loads((tmp_path / "schemas" / schemacache.versions_tag() / schemacache.METASCHEMA).read_bytes())
    assert isinstance(saved, tuple) and len(saved) == 3


def test_the_vms_cwltool_loads_its_own_schemas_when_the_servers_are_of_another_version(tmp_path: Path):
    ran = _vm_side(tmp_path, "cwltool-0.1-salad-0.1", ("not", "a", "schema"))

    assert ran.returncode == 0, ran.stderr
    assert "is valid CWL" in ran.stdout + ran.stderr


def test_a_job_runs_with_the_saved_schemas_as_cwltool_does_without(lando: Lando, tmp_path: Path):
    bare = subprocess.run([str(BIN / "cwltool"), "--quiet", "--no-container", "--outdir", str(tmp_path / "bare"),
                           str(WORKFLOWS / "scatter.cwl"), str(WORKFLOWS / "scatter.yml")], capture_output=True,
                          text=True, check=True)
    lando.submit(WORKFLOWS / "scatter.cwl", WORKFLOWS / "scatter.yml")  # the schemas are saved by now

    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "lando"), str(WORKFLOWS / "scatter.cwl"),
                    str(WORKFLOWS / "scatter.yml"))

    assert ran.returncode == 0, ran.stderr
    ours, theirs = json.loads(ran.stdout), json.loads(bare.stdout)
    assert [f["checksum"] for f in ours["shouted"]] == [f["checksum"] for f in theirs["shouted"]]
    assert ours["total"]["checksum"] == theirs["total"]["checksum"]
