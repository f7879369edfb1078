"""cwl-runner gives what bare cwltool gives where the CWL conformance suite once found it did not: floats printed
from the text they were written as, positions from expressions and characters outside ASCII, a tool whose input
and output share a name. (The whole suite runs in scripts/conformance.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKFLOWS, Lando

from lando_ssh import exactjson
from lando_ssh.workflow import prepare

FIDELITY = WORKFLOWS / "fidelity"
CWLTOOL = os.path.join(os.path.dirname(sys.executable), "cwltool")


def bare_cwltool(outdir: Path, *args: str) -> dict:
    proc = subprocess.run([CWLTOOL, "--quiet", "--no-container", "--outdir", str(outdir), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_floats_keep_the_text_they_were_written_as_through_json():
    loaded = exactjson.loads('{"a": 1.50, "b": [2.5e3, 1e40, 0.0000001], "c": 3, "d": "🕺"}')

    assert loaded["a"] == 1.5 and isinstance(loaded["a"], float)
    assert exactjson.dumps(loaded) == '{"a": 1.50, "b": [2.5e3, 1e40, 0.0000001], "c": 3, "d": "🕺"}'
    assert exactjson.dumps(exactjson.loads(exactjson.dumps(loaded, indent=2))) == exactjson.dumps(loaded)


def test_floats_read_from_yaml_keep_their_text_and_yaml_only_forms_become_the_same_json_number():
    from ruamel.yaml import YAML

    loaded = YAML(typ="rt").load("a: 1.50\nb: [1.23e5, .5, 1_000.5]\nc: 0.1\n")

    assert exactjson.dumps(loaded) == '{"a": 1.50, "b": [1.23e5, 0.5, 1000.5], "c": 0.1}'
    assert json.loads(exactjson.dumps(loaded)) == {"a": 1.5, "b": [123000.0, 0.5, 1000.5], "c": 0.1}


def test_plain_python_values_are_written_as_json_writes_them():
    value = {"a": [1, 2.5, {"b": "é\n\"", "c": None, "d": True, "e": False, "f": []}, {}], 3: "x", "g": float("inf")}

    assert exactjson.dumps(value) == json.dumps(value, ensure_ascii=False)
    assert exactjson.dumps(value, indent=2) == json.dumps(value, indent=2, ensure_ascii=False)


def test_submit_keeps_the_floats_of_the_workflow_and_the_job_order_as_written():
    prepared = prepare(str(FIDELITY / "floats.cwl"), str(FIDELITY / "floats.yml"))

    assert exactjson.dumps(prepared.job_order["given"]) == "[2.5e3, 1.50, 1e40, 0.0000001, -0.0]"
    defaults = {i["id"].rsplit("/", 1)[-1]: i.get("default") for i in prepared.packed["inputs"]}
    assert exactjson.dumps([defaults["tiny"], defaults["big"], defaults["trailing"]]) == "[1.23e-05, 1.23e5, 1.50]"


def test_a_tool_whose_input_and_output_share_a_name_is_packed_with_both():
    prepared = prepare(str(FIDELITY / "subdir.cwl"), str(FIDELITY / "subdir.yml"))

    assert prepared.packed["outputs"][0]["outputBinding"] == {"glob": "dir/sub"}
    assert prepared.packed["inputs"][0]["type"] == "Directory"


@pytest.mark.parametrize("tool, job, output", [
    ("floats.cwl", "floats.yml", "floats"),
    ("positions.cwl", None, "said"),
    ("subdir.cwl", "subdir.yml", "dir"),
    # a workflow output and a step of the same name (cwltool runs it, warning that an id is defined twice)
    ("../variety/twice.cwl", "../variety/twice.yml", "greeting"),
])
def test_cwl_runner_gives_what_bare_cwltool_gives(lando: Lando, tmp_path: Path, tool: str, job: str | None,
                                                  output: str):
    args = [str(FIDELITY / tool)] + ([str(FIDELITY / job)] if job else [])
    expected = bare_cwltool(tmp_path / "cwltool", *args)

    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "lando"), *args)

    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)[output]
    want = expected[output]
    for key in ("class", "basename", "size", "checksum"):
        assert got.get(key) == want.get(key), (key, got, want)
    if want["class"] == "File":
        assert Path(got["path"]).read_bytes() == Path(want["path"]).read_bytes()
    else:
        assert [e["basename"] for e in got["listing"]] == [e["basename"] for e in want["listing"]] == ["inner"]


def test_a_run_that_writes_no_file_prints_its_output_object_as_cwltool_does(lando: Lando, tmp_path: Path):
    """cwltool makes no outdir for a run without output files (the conformance tests expression_any...)."""
    tool = tmp_path / "number.cwl"
    tool.write_text("cwlVersion: v1.2\nclass: ExpressionTool\nrequirements: {InlineJavascriptRequirement: {}}\n"
                    "inputs: {n: {type: int, default: 41}}\noutputs: {m: int}\nexpression: '$({m: inputs.n + 1})'\n")
    expected = bare_cwltool(tmp_path / "cwltool", str(tool))

    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "lando"), str(tool))

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == expected == {"m": 42}
    assert list((tmp_path / "lando").iterdir()) == []


def test_a_file_name_cwl_allows_and_cwltool_refuses_is_run_with_relaxed_path_checks(lando: Lando, tmp_path: Path):
    """`item #1.txt` (a `%23` in the job order's location): cwltool's default path checks refuse it, CWL does not
    (the conformance test filename_with_hash_mark)."""
    assert prepare(str(FIDELITY / "cat.cwl"), str(FIDELITY / "octo.yml")).odd_names == ["item #1.txt"]
    assert prepare(str(FIDELITY / "floats.cwl"), str(FIDELITY / "floats.yml")).odd_names == []

    ran = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path), str(FIDELITY / "cat.cwl"),
                    str(FIDELITY / "octo.yml"))

    assert ran.returncode == 0, ran.stderr
    assert Path(json.loads(ran.stdout)["output"]["path"]).read_text() == "hashed\n"
    job = json.loads(lando.cli("status", "--json", check=True).stdout)[0]
    assert job["facts"]["cwltool_args"] == ["--relax-path-checks"]


def test_an_output_linking_out_of_the_jobs_inputs_and_outputs_fails_the_run_as_cwl_says(lando: Lando,
                                                                                        tmp_path: Path):
    """The conformance test illegal_symlink: cwltool without a container lets such an output through."""
    target = tmp_path / "outside.txt"

    ran = lando.cli("cwl-runner", "--outdir", str(tmp_path / "out"), str(FIDELITY / "link_out.cwl"),
                    "--target", str(target))

    assert ran.returncode == 1, ran.stderr
    assert f"the output link.txt is a symbolic link to {target}, outside the workflow's inputs and outputs" \
        in ran.stderr
    assert lando.vm_dirs() == []
