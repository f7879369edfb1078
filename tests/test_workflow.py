"""Submitting a workflow: cwltool validates it and its job order before anything is stored or booted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from lando_ssh.errors import InputMissing, WorkflowInvalid
from lando_ssh.prepared import PreparedWorkflow
from lando_ssh.workflow import prepare

WORKFLOWS = Path(__file__).parent / "workflows"
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).parent.parent


def wf(name: str) -> str:
    return str(WORKFLOWS / name)


def test_prepare_packs_a_workflow_with_separate_tool_files_exactly_like_cwltool_pack():
    prepared = prepare(wf("upper_count.cwl"), wf("upper_count.yml"))

    cli = subprocess.run([str(VENV_BIN / "cwltool"), "--pack", wf("upper_count.cwl")],
                         capture_output=True, text=True, check=True)
    assert prepared.packed == json.loads(cli.stdout)
    assert prepared.source == wf("upper_count.cwl")
    assert {p["id"] for p in prepared.packed["$graph"]} == {"#main", "#upper.cwl", "#count_lines.cwl"}
    assert sorted(prepared.main_inputs) == ["more", "text"]


def test_a_packed_single_tool_is_the_tool_itself_not_a_graph():
    prepared = prepare(wf("secondary.cwl"), wf("secondary.yml"))

    assert prepared.packed["class"] == "CommandLineTool"
    assert prepared.packed["id"] == "#main"
    assert "$graph" not in prepared.packed
    assert [p["pattern"] for p in prepared.main_inputs["reads"]["secondaryFiles"]] == [".bai", "^.idx"]


def test_job_order_locations_become_absolute_relative_to_the_job_order_file(tmp_path, monkeypatch):
    jobdir = tmp_path / "jobs"
    (jobdir / "in").mkdir(parents=True)
    (jobdir / "in" / "a b.txt").write_text("a\n")
    (jobdir / "more.txt").write_text("more\n")
    job = jobdir / "job.yml"
    job.write_text(yaml.safe_dump({
        "text": {"class": "File", "path": "in/a b.txt"},
        "more": {"class": "File", "location": "more.txt", "size": 5},
    }))
    monkeypatch.chdir(tmp_path)  # not the job order's directory

    prepared = prepare(wf("upper_count.cwl"), "jobs/job.yml")

    assert prepared.job_order == {
        "text": {"class": "File", "location": (jobdir / "in" / "a b.txt").as_uri()},
        "more": {"class": "File", "location": (jobdir / "more.txt").as_uri(), "size": 5},
    }
    json.dumps(prepared.job_order)  # plain data, ready for the job record


def test_http_locations_are_kept_as_given():
    order = {"text": {"class": "File", "location": "http://127.0.0.1:9/data/hello.txt", "size": 24},
             "more": {"class": "File", "location": "https://example.org/more.txt?sig=1"}}

    prepared = prepare(wf("upper_count.cwl"), None, order)

    assert prepared.job_order["text"]["location"] == "http://127.0.0.1:9/data/hello.txt"
    assert prepared.job_order["more"]["location"] == "https://example.org/more.txt?sig=1"


def test_a_job_order_given_as_data_resolves_against_the_named_job_file_directory():
    order = {"text": {"class": "File", "location": "data/hello.txt"},
             "more": {"class": "File", "location": "data/more.txt"}}

    prepared = prepare(wf("upper_count.cwl"), wf("upper_count.yml"), order)

    assert prepared.job_order["text"]["location"] == (WORKFLOWS / "data" / "hello.txt").as_uri()


def test_an_invalid_workflow_is_refused_with_cwltools_own_message():
    with pytest.raises(WorkflowInvalid) as e:
        prepare(wf("invalid.cwl"), None)

    message = str(e.value)
    assert "references unknown identifier 'no_such_input'" in message
    assert "invalid.cwl:15:7" in message  # cwltool's file:line:col kept
    assert "\x1b[" not in message and "--debug" not in message
    assert e.value.exit_code == 2


def test_a_workflow_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(WorkflowInvalid, match="nothing.cwl"):
        prepare(str(tmp_path / "nothing.cwl"), None)


def test_a_job_order_missing_a_required_input_is_refused():
    with pytest.raises(WorkflowInvalid, match="Missing required input parameter 'more'"):
        prepare(wf("upper_count.cwl"), wf("upper_count_missing.yml"))


def test_a_job_order_with_the_wrong_type_is_refused_naming_the_line():
    with pytest.raises(WorkflowInvalid) as e:
        prepare(wf("upper_count.cwl"), wf("upper_count_wrong_type.yml"))

    assert "the 'more' field is not valid" in str(e.value)
    assert "Expected a File object" in str(e.value)
    assert "upper_count_wrong_type.yml:5:1" in str(e.value)


def test_no_job_order_is_refused_when_the_workflow_has_required_inputs():
    with pytest.raises(WorkflowInvalid, match="Missing required input parameter"):
        prepare(wf("upper_count.cwl"), None)


def test_a_workflow_without_required_inputs_needs_no_job_order():
    assert prepare(wf("no_inputs.cwl"), None).job_order == {}
    assert prepare(wf("fail.cwl"), None, {}).job_order == {}


def test_a_job_order_that_is_not_a_mapping_is_refused(tmp_path):
    job = tmp_path / "job.yml"
    job.write_text("- just\n- a list\n")

    with pytest.raises(WorkflowInvalid, match="must be a mapping"):
        prepare(wf("no_inputs.cwl"), str(job))


def test_a_missing_job_order_file_is_an_input_missing(tmp_path):
    with pytest.raises(InputMissing, match="job.yml"):
        prepare(wf("no_inputs.cwl"), str(tmp_path / "job.yml"))


def test_a_missing_local_input_file_names_the_input_and_the_path(tmp_path):
    order = {"text": {"class": "File", "location": str(tmp_path / "gone.txt")},
             "more": {"class": "File", "location": wf("data/more.txt")}}

    with pytest.raises(InputMissing) as e:
        prepare(wf("upper_count.cwl"), None, order)

    assert "'text'" in str(e.value) and str(tmp_path / "gone.txt") in str(e.value)


def test_a_missing_required_secondary_file_is_refused_at_submit(tmp_path):
    (tmp_path / "reads.bam").write_text("r\n")  # no reads.bam.bai next to it

    with pytest.raises(InputMissing) as e:
        prepare(wf("secondary.cwl"), None, {"reads": {"class": "File", "location": str(tmp_path / "reads.bam")}})

    assert str(tmp_path / "reads.bam.bai") in str(e.value)
    assert "'reads'" in str(e.value)


def test_locations_staging_cannot_move_are_refused(tmp_path):
    with pytest.raises(WorkflowInvalid, match="unsupported scheme 'gs'.* or a swift:// or s3:// object"):
        prepare(wf("upper_count.cwl"), None, {"text": {"class": "File", "location": "gs://bucket/a.txt"},
                                              "more": {"class": "File", "location": wf("data/more.txt")}})
    with pytest.raises(WorkflowInvalid, match="Directory inputs must be local"):
        prepare(wf("directory.cwl"), None, {"dir": {"class": "Directory", "location": "http://127.0.0.1:9/d/"}})


def test_a_default_file_named_by_the_workflow_is_exposed_for_staging():
    prepared = prepare(wf("default_file.cwl"), wf("default_file.yml"))

    reference = str(WORKFLOWS / "data" / "reference.txt")
    assert prepared.default_files == [reference]
    assert prepared.main_inputs["reference"]["default"]["location"] == Path(reference).as_uri()
    assert "reference" not in prepared.job_order  # the job order stays as the user wrote it


def test_cwltool_says_nothing_while_preparing_and_its_warnings_are_kept(tmp_path):
    # a step and an output with the same id: cwltool warns "previously defined"
    text = (WORKFLOWS / "upper_count.cwl").read_text().replace("count_lines:", "count:") \
        .replace("count_lines/count", "count/count")
    (tmp_path / "dup.cwl").write_text(text)
    shutil.copytree(WORKFLOWS / "tools", tmp_path / "tools")  # beside it, as it was written
    # a fresh process with root logging at DEBUG: importing cwltool must not be heard either
    code = ("import json, logging, sys; logging.basicConfig(level=logging.DEBUG); "
            "from lando_ssh.workflow import prepare; "
            "print(json.dumps(prepare(sys.argv[1], sys.argv[2]).warnings))")

    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dup.cwl"), wf("upper_count.yml")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert any("previously defined" in w for w in json.loads(run.stdout))


def test_prepare_can_be_called_from_several_threads_at_once():
    results: list[PreparedWorkflow | BaseException] = []

    def submit(name: str, job: str | None) -> None:
        try:
            results.append(prepare(wf(name), wf(job) if job else None))
        except BaseException as e:  # collected so the assertion below shows it
            results.append(e)

    jobs = [("upper_count.cwl", "upper_count.yml"), ("scatter.cwl", "scatter.yml"),
            ("directory.cwl", "directory.yml"), ("no_inputs.cwl", None)] * 2
    threads = [threading.Thread(target=submit, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert all(isinstance(r, PreparedWorkflow) for r in results), results
    assert len(results) == len(jobs)


def test_importing_workflow_and_staging_does_not_import_cwltool():
    code = ("import sys, lando_ssh.workflow, lando_ssh.staging; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cwltool', 'schema_salad')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"
