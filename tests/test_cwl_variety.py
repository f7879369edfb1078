"""CWL documents, job orders and command lines that lando-ssh once got wrong, run end to end the way
its users and CWL test harnesses do: `lando-ssh cwl-runner` (and `submit`, `job`) through the real
CLI, a real sshd per VM (local cloud) and real cwltool, compared with bare cwltool where it runs them.
The documents are in tests/workflows/variety/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import WORKFLOWS, Lando

from lando_ssh.staging import plan_inputs
from lando_ssh.workflow import prepare

VARIETY = WORKFLOWS / "variety"
CWLTOOL = os.path.join(os.path.dirname(sys.executable), "cwltool")


def bare_cwltool(outdir: Path, *args: str, cwd: Path | None = None) -> dict:
    proc = subprocess.run([CWLTOOL, "--quiet", "--no-container", "--outdir", str(outdir), *args],
                          capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_sentence(stderr: str) -> str:
    """The error line of a command that failed before running anything: no traceback."""
    assert "Traceback" not in stderr, stderr
    # "lando-ssh: ..." from the command, "lando-ssh status: ..." from its argument parser (a usage error)
    lines = [line for line in stderr.splitlines()
             if re.match(r"lando-ssh( [a-z-]+)?: ", line) and "note:" not in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_anchored_tool_docs_output_and_local_schemas_give_what_cwltool_gives(lando: Lando, tmp_path: Path):
    """One run: a tool shared by two steps through a YAML anchor, an output named `docs`, `$schemas`
    naming a local ontology, a SchemaDefRequirement record whose File field has secondaryFiles;
    cwltool-style flags whose values must not be taken for the workflow."""
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    wf, order = str(VARIETY / "variety.cwl"), str(VARIETY / "variety.yml")
    expected = bare_cwltool(bare_dir, wf, order)

    ours = lando.cli("cwl-runner", "--outdir", str(ours_dir), "--parallel", "--provenance", str(tmp_path / "prov"),
                     "--timestamps", "--quiet", wf, order)

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(json.dumps(expected).replace(str(bare_dir), str(ours_dir)))
    assert "cwltool option --provenance is not used" in ours.stderr
    # the outdir holds what cwltool's holds: the workflow's own docs/ as it made it, nothing of lando's
    assert sorted(p.name for p in ours_dir.iterdir()) == sorted(p.name for p in bare_dir.iterdir())
    assert sorted(p.name for p in (ours_dir / "docs").iterdir()) == ["README.md"]
    assert (ours_dir / "docs" / "README.md").read_text() == "the workflow own docs\n"
    job_id = max(j["id"] for j in json.loads(lando.cli("status", "--json", check=True).stdout))
    lando_docs = lando.data_dir / "jobs" / f"job-{job_id}" / "docs"  # with the job's record
    for doc in ("README.md", "scripts/workflow.cwl", "logs/cwltool-output.log", "logs/cwl-output.json"):
        assert (lando_docs / doc).is_file(), doc
    assert "`docs/scripts/`" in (lando_docs / "README.md").read_text()
    assert "\x1b[" not in (lando_docs / "logs" / "cwltool-output.log").read_text()  # plain text, not colours
    # the ontology went to the VM with the inputs, and the workflow run there named that copy
    ran = json.loads((lando_docs / "scripts" / "workflow.cwl").read_text())
    [schema] = ran["$schemas"]
    assert "/lando-job-" in schema and schema.endswith("/formats.owl"), schema
    assert (ours_dir / "sample_dir.txt").read_text() == "sample.bam\nsample.bam.bai\n"
    logs = lando.cli("logs", str(job_id), check=True).stdout
    assert "Final process status is success" in logs and "\x1b[" not in logs


def test_secondary_files_of_a_named_record_type_field_are_staged():
    """Planning alone (the run is in the test above, where an expression pattern makes the server list every
    secondary file itself): a field of a SchemaDefRequirement record type brings its own secondaryFiles."""
    prepared = prepare(str(VARIETY / "sample_dir.cwl"), str(VARIETY / "sample_dir.yml"))
    assert "secondaryFiles" not in prepared.job_order["sample"]["reads"]  # no expression: staging finds it

    transfers, order, _ = plan_inputs(prepared, "/vm/inputs")

    assert [(Path(t.source).name, t.dest) for t in transfers] == [
        ("sample.bam", "/vm/inputs/1/sample.bam"), ("sample.bam.bai", "/vm/inputs/1/sample.bam.bai")]
    assert order["sample"]["reads"]["location"] == "file:///vm/inputs/1/sample.bam"


def test_secondary_files_from_expressions_are_found_at_submit_leaving_nothing_behind(tmp_path: Path):
    """A tool (not a workflow) with expression patterns: cwltool's discovery at submit made three temporary
    directories for a run that never happens here, once per submit."""
    (tmp_path / "reads.fa").write_text("acgt\n")
    (tmp_path / "reads.idx").write_text("index\n")
    (tmp_path / "job.yml").write_text("text: {class: File, path: reads.fa}\n")
    tool = tmp_path / "tool.cwl"
    tool.write_text((VARIETY / "greet.cwl").read_text().replace(
        "  file: {type: File, inputBinding: {position: 2}}\n", "").replace(
        "  name: {type: string, inputBinding: {position: 1, prefix: hello}}\n",
        "  text:\n    type: File\n    secondaryFiles: [\"$(self.nameroot).idx\"]\n"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = ("import json, sys; from lando_ssh.workflow import prepare; "
            "print(json.dumps(prepare(sys.argv[1], sys.argv[2]).job_order))")
    run = subprocess.run([sys.executable, "-c", code, str(tool), str(tmp_path / "job.yml")], capture_output=True,
                         text=True, env={**os.environ, "TMPDIR": str(scratch)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["text"]["secondaryFiles"] == [
        {"class": "File", "location": (tmp_path / "reads.idx").as_uri()}]
    assert list(scratch.iterdir()) == []


def test_a_job_order_naming_its_tool_with_cwl_tool_runs_alone(lando: Lando, tmp_path: Path):
    """`cwltool job.yml` where job.yml says `cwl:tool: greet.cwl`: its values are the inputs."""
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    job = str(VARIETY / "greet_job.yml")
    expected = bare_cwltool(bare_dir, job)

    ours = lando.cli("cwl-runner", f"--outdir={ours_dir}", "--quiet", job)

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(json.dumps(expected).replace(str(bare_dir), str(ours_dir)))
    assert (ours_dir / "greeting.txt").read_text() == "hello lando\nindex of reads\n"


def test_a_process_named_by_fragment_in_a_local_graph_runs(lando: Lando, tmp_path: Path):
    """`graph.cwl#shout`: cwltool runs that process of the $graph; lando-ssh said 'Not found'."""
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    wf, order = str(VARIETY / "graph.cwl") + "#shout", str(VARIETY / "graph.yml")
    expected = bare_cwltool(bare_dir, wf, order)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(ours_dir), wf, order)

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(json.dumps(expected).replace(str(bare_dir), str(ours_dir)))
    assert (ours_dir / "shouted.txt").read_text() == "INDEX OF READS\n"


def test_documents_that_cannot_run_are_refused_at_submit_in_one_sentence(lando: Lando, tmp_path: Path):
    (tmp_path / "empty.cwl").write_text("")
    (tmp_path / "list.cwl").write_text("- a\n- b\n")
    (tmp_path / "list.yml").write_text("- 1\n")
    (tmp_path / "jobs").mkdir()
    for name, target in (("dangling", "/nonexistent/target"), ("looping", "..")):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "link").symlink_to(target)
        (tmp_path / f"{name}.yml").write_text(f"dir: {{class: Directory, path: {name}}}\n")
    cases = {
        ("submit", str(tmp_path / "empty.cwl")): "is empty",
        ("submit", str(tmp_path / "list.cwl")): "holds a list, not a mapping",
        ("submit", str(tmp_path / "nowhere.cwl")): "does not exist",
        ("submit", str(tmp_path)): "is a directory, not a CWL file",
        ("submit", str(VARIETY / "greet.cwl"), str(tmp_path / "jobs")): "is a directory, not a file",
        ("submit", str(VARIETY / "greet.cwl"), str(tmp_path / "list.yml")): "not a list",
        # the transfer follows links: one to nowhere failed staging with a traceback, a loop with a broken tar
        ("submit", str(WORKFLOWS / "directory.cwl"), str(tmp_path / "dangling.yml")): "link that leads nowhere",
        ("submit", str(WORKFLOWS / "directory.cwl"), str(tmp_path / "looping.yml")): "leads back into the directory",
        # an output dir that cannot be made: found before a VM boots, not when the outputs have nowhere to go
        ("cwl-runner", "--outdir", str(tmp_path / "list.yml" / "out"), str(VARIETY / "greet_job.yml")):
            "cannot be created: Not a directory",
    }
    for args, sentence in cases.items():
        proc = lando.cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert sentence in one_sentence(proc.stderr), (args, proc.stderr)
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []  # nothing stored
    assert lando.vm_dirs() == []


def test_a_job_order_of_1500_files_is_validated_and_stored_whole(lando: Lando, tmp_path: Path):
    """Validation copied the loaded job order with copy.deepcopy, which copies ruamel's line records
    quadratically: 15 s for 1,500 Files before anything was stored (~3 s now, most of it cwltool loading;
    how long it takes is a speed, measured by benchmarks, not asserted by a test)."""
    files = tmp_path / "files"
    files.mkdir()
    for i in range(1500):
        (files / f"f{i}.txt").write_text(f"{i}\n")
    order = tmp_path / "many.json"
    order.write_text(json.dumps({"files": [{"class": "File", "path": f"files/f{i}.txt"} for i in range(1500)],
                                 "label": "many"}))
    job_id = lando.submit(VARIETY / "count_files.cwl", order)
    stored = lando.status(job_id)["job_order"]
    assert len(stored["files"]) == 1500 and stored["files"][7]["location"].endswith("/files/f7.txt")


def test_an_unknown_job_or_state_is_exit_2_every_time_never_an_abort(lando: Lando):
    """`job N` loads paramiko in the background; a process ending while it loads used to abort (exit 134)."""
    for _ in range(8):
        proc = lando.cli("job", "99999")
        assert proc.returncode == 2, proc.stderr
        assert one_sentence(proc.stderr) == "lando-ssh: there is no job 99999"
    # and a state code that does not exist is bad usage, not a ValueError traceback
    proc = lando.cli("status", "--state", "Z")
    assert proc.returncode == 2 and "invalid choice: 'Z'" in one_sentence(proc.stderr)


def test_the_workflows_tools_get_ctrl_c_and_quit_as_under_a_shell_not_ignored(lando: Lando, tmp_path: Path):
    """The run is started in the background on the VM, where sh ignores SIGINT and SIGQUIT for what it starts:
    the workflow's tools must not inherit that (a tool's own Ctrl-C handling, `timeout --foreground`, ...)."""
    proc = lando.cli("cwl-runner", "--outdir", str(tmp_path / "out"), str(VARIETY / "signals.cwl"))

    assert proc.returncode == 0, proc.stderr
    line = Path(json.loads(proc.stdout)["signals"]["path"]).read_text()
    ignored = int(line.split()[1], 16)
    for signal_number, name in ((2, "SIGINT"), (3, "SIGQUIT")):
        assert not ignored & (1 << (signal_number - 1)), f"{name} is ignored by the tool: {line.strip()}"
