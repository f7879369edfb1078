"""`lando-ssh cwl-runner` takes its command line the way cwltool does: the job order or the workflow's
inputs after the workflow, cwltool's run options passed to the VM's cwltool, its questions answered by
the local cwltool. The sorting is pure logic (unit tests); each form also runs end to end through the
CLI, a real sshd VM and real cwltool, compared with bare cwltool where cwltool runs it too."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lando
from test_cwl_variety import CWLTOOL, VARIETY, WORKFLOWS, bare_cwltool, one_sentence

from lando_ssh.runner_args import UsageError, split

INPUTS = str(VARIETY / "inputs.cwl")


# -- sorting the words (pure) ------------------------------------------------------------------
def test_options_before_the_workflow_are_sorted_and_everything_after_it_is_the_inputs():
    got = split(["--outdir", "o", "--relax-path-checks", "--on-error=continue", "--provenance", "p", "--quiet",
                 "--flavor", "big", "wf.cwl", "--mode", "fast", "--outdir", "x", "job.yml"])

    assert got.lando == ["--outdir", "o", "--quiet", "--flavor", "big", "wf.cwl"]
    assert got.cwltool == ["--relax-path-checks", "--on-error=continue"]
    assert got.ignored == ["--provenance"]
    assert got.inputs == ["--mode", "fast", "--outdir", "x", "job.yml"]  # an input may be called outdir
    assert got.question is None


def test_debug_is_lando_ssh_s_and_the_vm_cwltool_s_and_a_double_dash_ends_the_options():
    got = split(["--debug", "--", "-odd-name.cwl", "job.yml"])

    assert got.lando == ["--debug", "-odd-name.cwl"] and got.cwltool == ["--debug"]
    assert got.inputs == ["job.yml"]


def test_an_archive_s_source_options_may_follow_it_but_a_local_workflow_s_inputs_may_be_called_path():
    zipped = split(["https://h/wf.zip", "--path", "dir/wf.cwl", "job.yml"])
    local = split(["wf.cwl", "--path", "p.txt"])
    repo = split(["--git", "https://h/r.git", "job.yml", "--ref=v1", "--path", "wf.cwl", "--x", "1"])

    assert zipped.lando == ["--path", "dir/wf.cwl", "https://h/wf.zip"] and zipped.inputs == ["job.yml"]
    assert local.lando == ["wf.cwl"] and local.inputs == ["--path", "p.txt"]
    assert repo.lando == ["--git", "https://h/r.git", "--ref=v1", "--path", "wf.cwl"]
    assert repo.inputs == ["job.yml", "--x", "1"]  # with --git the job order is among the inputs


def test_a_question_goes_to_the_local_cwltool_without_lando_ssh_s_own_options():
    got = split(["--flavor", "big", "--enable-ext", "--print-deps", "--relative-deps", "cwd", "wf.cwl", "j.yml"])

    assert got.question == "--print-deps"
    assert got.for_cwltool == ["--enable-ext", "--print-deps", "--relative-deps", "cwd", "wf.cwl", "j.yml"]


@pytest.mark.parametrize("args, said", [
    (["--target", "step1", "wf.cwl"], "runs only part of one"),
    (["--single-step=s", "wf.cwl"], "runs only part of one"),
    (["--on-error"], "--on-error needs a value"),
])
def test_partial_runs_and_missing_values_are_refused(args: list[str], said: str):
    with pytest.raises(UsageError, match=said):
        split(args)


# -- end to end --------------------------------------------------------------------------------
def test_the_workflow_s_inputs_on_the_command_line_run_as_under_cwltool(lando: Lando, tmp_path: Path):
    """String, int, boolean, File, a repeated array option and a record's fields, as cwltool's parser
    generated from the workflow's inputs takes them; `-w` writes the output object to a file instead."""
    (tmp_path / "reads.txt").write_text("a\nb\nc\n")
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    inputs = ["--reads", "reads.txt", "--mode", "fast", "--threads", "4", "--verbose", "--tags", "x", "--tags",
              "y z", "--limits.low", "1", "--limits.high", "9"]
    expected = bare_cwltool(bare_dir, INPUTS, *inputs, cwd=tmp_path)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(ours_dir), "-w", str(tmp_path / "summary.json"),
                     INPUTS, *inputs, cwd=tmp_path)

    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == ""  # with -w, as cwltool: the output object goes to that file only
    got = json.loads((tmp_path / "summary.json").read_text())
    assert got == json.loads(json.dumps(expected).replace(str(bare_dir), str(ours_dir)))
    assert (ours_dir / "said.txt").read_text() == "fast --threads 4 --verbose x y z --low 1 --high 9 --label plain\n3\n"


def test_a_job_order_file_or_standard_input_with_inputs_on_the_command_line_over_it(lando: Lando, tmp_path: Path):
    (tmp_path / "reads.txt").write_text("a\n")
    (tmp_path / "job.yml").write_text("reads: {class: File, path: reads.txt}\nmode: from-file\nthreads: 2\n")
    over = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "a"), INPUTS, str(tmp_path / "job.yml"),
                     "--mode", "from-cli", "--label", "L")
    stdin = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "b"), INPUTS, "-",
                      input="{reads: {class: File, path: reads.txt}, mode: piped}\n", cwd=tmp_path)

    assert over.returncode == 0, over.stderr
    # what the command line names wins; the file's other values stay (cwltool would null them)
    assert (tmp_path / "a" / "said.txt").read_text() == "from-cli --threads 2 --label L\n1\n"
    assert json.loads(over.stdout)["threads_out"] == 2
    assert stdin.returncode == 0, stdin.stderr
    assert (tmp_path / "b" / "said.txt").read_text() == "piped --threads 1 --label plain\n1\n"


def test_inputs_that_do_not_fit_the_workflow_are_refused_before_anything_is_stored(lando: Lando, tmp_path: Path):
    (tmp_path / "reads.txt").write_text("a\n")
    cases = {
        ("--reads", "reads.txt", "--mode", "m", "--bogus", "1"): "unrecognized arguments: --bogus",
        ("--reads", "reads.txt", "--mode", "m", "--threads", "many"): "invalid int value: 'many'",
        ("--mode", "m"): "Missing required input parameter 'reads'",
        ("--reads", "nowhere.txt", "--mode", "m"): "nowhere.txt",
    }
    for inputs, sentence in cases.items():
        proc = lando.cli("cwl-runner", "--outdir", str(tmp_path / "out"), INPUTS, *inputs, cwd=tmp_path)
        assert proc.returncode == 2, (inputs, proc.stderr)
        assert sentence in proc.stderr, (inputs, proc.stderr)
        assert "Traceback" not in proc.stderr
    helped = lando.cli("cwl-runner", INPUTS, "--help")
    assert helped.returncode == 0 and "--threads THREADS" in helped.stdout and "--limits.low" in helped.stdout
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []
    assert lando.vm_dirs() == []


def test_cwltool_s_run_options_reach_the_vm_s_cwltool_and_the_validation(lando: Lando, tmp_path: Path):
    """--relax-path-checks lets an input named with a space through, as under cwltool; --enable-ext
    loads cwltool's extensions, on the server (validation) and on the VM (the run)."""
    (tmp_path / "my reads.txt").write_text("a\nb\n")
    inputs = ["--reads", "my reads.txt", "--mode", "m", "--limits.low", "0", "--limits.high", "1"]
    strict = lando.cli("cwl-runner", "--outdir", str(tmp_path / "strict"), INPUTS, *inputs, cwd=tmp_path)
    expected = bare_cwltool(tmp_path / "bare", "--relax-path-checks", INPUTS, *inputs, cwd=tmp_path)

    relaxed = lando.cli("cwl-runner", "--quiet", "--relax-path-checks", "--outdir", str(tmp_path / "relaxed"),
                        INPUTS, *inputs, cwd=tmp_path)

    assert strict.returncode == 1 and "contains illegal characters" in strict.stderr, strict.stderr
    assert relaxed.returncode == 0, relaxed.stderr
    assert json.loads(relaxed.stdout) == json.loads(json.dumps(expected).replace(str(tmp_path / "bare"),
                                                                                 str(tmp_path / "relaxed")))
    job = json.loads(lando.cli("status", "--json", check=True).stdout)[-1]
    assert job["facts"]["cwltool_args"] == ["--relax-path-checks"]
    assert "--relax-path-checks" in job["run"]["commands"]["cwl_base_command"]
    assert "--relax-path-checks" in (Path(job["run"]["docs_path"]) / "README.md").read_text()

    plain = lando.cli("cwl-runner", "--outdir", str(tmp_path / "plain"), str(VARIETY / "extension.cwl"))
    extended = lando.cli("cwl-runner", "--quiet", "--enable-ext", "--outdir", str(tmp_path / "ext"),
                         str(VARIETY / "extension.cwl"))
    assert plain.returncode == 2 and "undefined reference to 'http://commonwl.org/cwltool#ShmSize'" in \
        one_sentence(plain.stderr) + plain.stderr
    assert extended.returncode == 0, extended.stderr
    assert (tmp_path / "ext" / "extended.txt").read_text() == "extended\n"


def test_cwltool_s_questions_are_answered_by_the_local_cwltool_as_it_would(lando: Lando, tmp_path: Path):
    for question in (["--validate"], ["--print-deps"], ["--make-template"]):
        bare = subprocess.run([CWLTOOL, "--quiet", *question, INPUTS], capture_output=True, text=True)
        ours = lando.cli("cwl-runner", "--quiet", "--flavor", "big", *question, INPUTS)
        assert (ours.returncode, ours.stdout) == (bare.returncode, bare.stdout), question
        assert bare.stdout.strip(), question
    version = lando.cli("cwl-runner", "--version")
    assert version.returncode == 0 and "cwltool" in version.stdout
    partial = lando.cli("cwl-runner", "--target", "x", INPUTS)
    assert partial.returncode == 2 and "runs only part of one" in one_sentence(partial.stderr)
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []
    assert os.path.exists(sys.executable)


def test_an_output_copied_from_a_read_only_input_keeps_its_mode_as_under_cwltool(lando: Lando, tmp_path: Path):
    (tmp_path / "frozen.txt").write_text("x\n")
    (tmp_path / "frozen.txt").chmod(0o444)
    wf = str(VARIETY / "passthrough.cwl")
    bare_cwltool(tmp_path / "bare", wf, "-f", "frozen.txt", cwd=tmp_path)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), wf, "-f", "frozen.txt",
                     cwd=tmp_path)

    assert ours.returncode == 0, ours.stderr
    assert (tmp_path / "bare" / "frozen.txt").stat().st_mode & 0o777 == 0o444
    assert (tmp_path / "ours" / "frozen.txt").stat().st_mode & 0o777 == 0o444
    assert (tmp_path / "ours" / "frozen.txt").read_text() == "x\n"


def test_a_read_only_output_directory_keeps_its_mode_as_under_cwltool_also_when_pulled_again(
        lando: Lando, tmp_path: Path):
    wf = str(VARIETY / "readonly_dir.cwl")
    bare_cwltool(tmp_path / "bare", wf, cwd=tmp_path)
    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), wf, cwd=tmp_path)
    again = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), wf, cwd=tmp_path)

    try:
        assert ours.returncode == 0, ours.stderr
        assert again.returncode == 0, again.stderr  # into the read-only directory the first run left
        for out in ("bare", "ours"):
            locked = tmp_path / out / "locked"
            assert (locked.stat().st_mode & 0o777, (locked / "sub").stat().st_mode & 0o777) == (0o555, 0o555), out
            assert (locked / "inside.txt").read_text() == "kept\n"
        assert (tmp_path / "ours").stat().st_mode & 0o777 == 0o755  # the outdir itself: as it was made here
    finally:
        for out in ("bare", "ours"):
            for d in (tmp_path / out / "locked", tmp_path / out / "locked" / "sub"):
                if d.exists():
                    d.chmod(0o755)  # so the test's temp dir can go, even for a user other than root


def test_outputs_cwltool_leaves_as_links_to_the_inputs_arrive_as_copies_and_links_within_stay(
        lando: Lando, tmp_path: Path):
    (tmp_path / "in" / "d").mkdir(parents=True)
    (tmp_path / "in" / "f.txt").write_text("f\n")
    (tmp_path / "in" / "d" / "y.txt").write_text("y\n")
    wf = str(VARIETY / "links.cwl")
    args = [wf, "--file", "in/f.txt", "--dir", "in/d"]
    expected = bare_cwltool(tmp_path / "bare", *args, cwd=tmp_path)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), *args, cwd=tmp_path)

    assert ours.returncode == 0, ours.stderr  # the pull had refused the links to the VM's inputs
    got = json.loads(ours.stdout)
    assert sorted(e["basename"] for e in got["out"]["listing"]) == \
        sorted(e["basename"] for e in expected["out"]["listing"]) == ["alias.txt", "own.txt", "staged_dir",
                                                                      "staged_file"]
    out = Path(got["out"]["path"])
    assert (out / "staged_file").read_text() == "f\n" and not (out / "staged_file").is_symlink()
    assert (out / "staged_dir" / "y.txt").read_text() == "y\n" and not (out / "staged_dir").is_symlink()
    assert os.readlink(out / "alias.txt") == "own.txt" and (out / "alias.txt").read_text() == "own\n"


def test_defaults_that_name_missing_or_foreign_files_but_go_unused_do_not_stop_the_run_as_under_cwltool(
        lando: Lando, tmp_path: Path):
    args = [str(WORKFLOWS / "unused_defaults.cwl"), str(WORKFLOWS / "unused_defaults.yml")]
    expected = bare_cwltool(tmp_path / "bare", *args)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), *args)

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout)["joined"]["checksum"] == expected["joined"]["checksum"]
    assert (tmp_path / "ours" / "joined.txt").read_text() == "hello world\nsecond line\nreference line\n"


def test_a_type_that_a_workflow_and_its_step_s_tool_both_import_runs_as_under_cwltool(lando: Lando, tmp_path: Path):
    # cwltool packs the second import as a `$import` of the type the packed document already holds
    wf, job = WORKFLOWS / "shared_types" / "workflow.cwl", WORKFLOWS / "shared_types" / "job.yml"
    expected = bare_cwltool(tmp_path / "bare", str(wf), str(job))

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "ours"), str(wf), str(job))

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout)["said"]["checksum"] == expected["said"]["checksum"]
    assert (tmp_path / "ours" / "said.txt").read_text() == "s1 mouse\n"


def test_a_file_inside_a_directory_input_stays_inside_it_as_under_cwltool(lando: Lando, tmp_path: Path):
    (tmp_path / "in dir" / "sub é").mkdir(parents=True)
    (tmp_path / "in dir" / "sub é" / "c.txt").write_text("c\n")
    (tmp_path / "job.yml").write_text("d: {class: Directory, path: in dir}\n"
                                      "f: {class: File, path: in dir/sub é/c.txt}\n")
    args = ["--relax-path-checks", str(VARIETY / "dir_and_file_in_it.cwl"), "job.yml"]
    bare_dir, ours_dir = tmp_path / "bare", tmp_path / "ours"
    expected = bare_cwltool(bare_dir, *args, cwd=tmp_path)

    ours = lando.cli("cwl-runner", "--quiet", "--outdir", str(ours_dir), *args, cwd=tmp_path)

    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(json.dumps(expected).replace(str(bare_dir), str(ours_dir)))
    assert sorted(p.name for p in ours_dir.iterdir()) == ["in dir"]  # no second copy of c.txt, no lando docs


def test_submit_takes_run_options_for_the_vm_s_cwltool_and_refuses_anything_else(lando: Lando):
    wf = str(VARIETY / "extension.cwl")
    refused = [lando.cli("submit", "--cwltool-option=--provenance=x", wf), lando.cli("submit", wf),
               lando.cli("submit", "--cwltool-option=--on-error", wf)]
    assert [p.returncode for p in refused] == [2, 2, 2]
    assert "not one of cwltool's options that change a run" in one_sentence(refused[0].stderr)
    assert "ShmSize" in refused[1].stderr  # an extension without --enable-ext does not validate
    assert "needs its value in the same word" in one_sentence(refused[2].stderr)
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []

    job_id = lando.submit(wf, None, "--cwltool-option=--enable-ext", "--cwltool-option=--on-error=continue")
    ran = lando.cli("job", str(job_id))

    assert ran.returncode == 0, ran.stderr
    job = lando.status(job_id)
    assert job["facts"]["cwltool_args"] == ["--enable-ext", "--on-error=continue"]
    assert (Path(job["output_dir"]) / "extended.txt").read_text() == "extended\n"


def test_lando_ssh_cwl_runner_is_cwl_runner_as_one_executable_for_test_harnesses(lando: Lando, tmp_path: Path):
    """`cwltest --tool lando-ssh-cwl-runner` runs `lando-ssh-cwl-runner --outdir=DIR --quiet TOOL JOB`."""
    (tmp_path / "reads.txt").write_text("a\n")
    (tmp_path / "job.yml").write_text("reads: {class: File, path: reads.txt}\nmode: harness\n")
    runner = os.path.join(os.path.dirname(sys.executable), "lando-ssh-cwl-runner")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
    env["LANDO_CONFIG"] = str(lando.config_path)

    ran = subprocess.run([runner, f"--outdir={tmp_path / 'out'}", "--quiet", INPUTS, str(tmp_path / "job.yml")],
                         capture_output=True, text=True, env=env, timeout=300)

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["said"]["path"] == str(tmp_path / "out" / "said.txt")
    assert (tmp_path / "out" / "said.txt").read_text() == "harness --threads 1 --label plain\n1\n"
    assert len(json.loads(lando.cli("status", "--json", check=True).stdout)) == 1  # in the config's job store


def test_cwltest_drives_lando_ssh_cwl_runner_through_conformance_tests(lando: Lando, tmp_path: Path):
    """The CWL project's own test harness, as a facility checks a runner: `cwltest --tool lando-ssh-cwl-runner`
    over tests/workflows/conformance.yaml (outputs compared by cwltest: class, basename, size, checksum)."""
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
    env.update(LANDO_CONFIG=str(lando.config_path), PATH=f"{bin_dir}:{env.get('PATH', '')}", TMPDIR=str(tmp_path))

    ran = subprocess.run([os.path.join(bin_dir, "cwltest"), "--test", str(VARIETY.parent / "conformance.yaml"),
                          "--tool", "lando-ssh-cwl-runner", "-j", "1"],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Test [6/6]" in ran.stderr and "All tests passed" in ran.stderr, ran.stderr
    jobs = json.loads(lando.cli("status", "--json", check=True).stdout)
    assert sorted(j["state"] for j in jobs) == ["E", "F", "F", "F", "F"]  # the invalid one was never stored
    assert lando.vm_dirs() == []


def test_a_record_s_fields_and_one_letter_inputs_on_the_command_line(lando: Lando, tmp_path: Path):
    """A record's File field relative to here, an input called h (cwltool's parser would take -h for help),
    an abbreviated input name, and a job order on standard input or from a pipe with a field overridden."""
    (tmp_path / "notes.txt").write_text("noted\n")
    wf = str(VARIETY / "records.cwl")
    full = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "a"), wf, "--range.low", "1",
                     "--range.high", "9", "--range.notes", "notes.txt", "-h", "hh", "-x", "xx", cwd=tmp_path)
    order = "range: {low: 2, high: 8, notes: {class: File, path: notes.txt}}\n"
    piped = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "b"), wf, "-", "--range.low", "5",
                      input=order, cwd=tmp_path)
    (tmp_path / "job.yml").write_text(order)
    merged = lando.cli("cwl-runner", "--quiet", "--outdir", str(tmp_path / "c"), wf, "job.yml", "--range.hi", "7",
                       cwd=tmp_path)
    fifo = subprocess.run(["bash", "-c", f"{shlex.join(lando.cli_argv('cwl-runner', '--quiet', '--outdir'))} "
                                         f"{tmp_path / 'd'} {wf} <(cat job.yml)"],
                          capture_output=True, text=True, cwd=tmp_path, env=lando.env(), timeout=300)

    for run in (full, piped, merged, fifo):
        assert run.returncode == 0, run.stderr
    assert (tmp_path / "a" / "said.txt").read_text() == "--low 1 --high 9 -h hh -x xx\nnoted\n"
    assert (tmp_path / "b" / "said.txt").read_text() == "--low 5 --high 8 -h none -x none\nnoted\n"
    assert (tmp_path / "c" / "said.txt").read_text() == "--low 2 --high 7 -h none -x none\nnoted\n"
    assert (tmp_path / "d" / "said.txt").read_text() == "--low 2 --high 8 -h none -x none\nnoted\n"


def test_a_secret_input_runs_but_is_shown_nowhere(lando: Lando, tmp_path: Path):
    """cwltool:Secrets: the VM's cwltool gets the value; status, the docs and the job's README do not."""
    out = tmp_path / "out"
    ran = lando.cli("cwl-runner", "--quiet", "--enable-ext", "--outdir", str(out), str(VARIETY / "secret.cwl"),
                    "--password", "hunter2-sesame", "--user", "ada")

    assert ran.returncode == 0, ran.stderr
    assert (out / "counted.txt").read_text().strip() == "14"  # it reached the tool
    job = json.loads(lando.cli("status", "1", "--json", check=True).stdout)
    docs = Path(job["run"]["docs_path"])  # lando's docs of a cwl-runner job, with its record
    shown = [lando.cli("status", "--json", check=True).stdout, lando.cli("logs", "1", check=True).stdout, ran.stderr,
             *(p.read_text() for d in (out, docs) for p in d.rglob("*") if p.is_file())]
    assert not [text for text in shown if "hunter2-sesame" in text]
    assert job["job_order"] == {"password": "(secret)", "user": "ada"}
    assert json.loads((docs / "scripts" / "job-order.json").read_text())["password"] == "(secret)"


def test_abbreviated_options_bad_option_values_and_the_summary_file(lando: Lando, tmp_path: Path):
    assert split(["--relax", "--on-err=continue", "--out", "o", "wf.cwl"]).cwltool == [
        "--relax-path-checks", "--on-error=continue"]
    with pytest.raises(UsageError, match="ambiguous option: --no could match"):
        split(["--no", "wf.cwl"])
    bad = lando.cli("cwl-runner", "--on-error", "sometimes", str(VARIETY / "extension.cwl"))
    assert bad.returncode == 2 and "invalid choice: 'sometimes'" in one_sentence(bad.stderr)
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []

    summary = tmp_path / "summary.json"
    ran = lando.cli("cwl-runner", "--quiet", "--enable-ext", "-w", str(summary), "--outdir", str(tmp_path / "o"),
                    str(VARIETY / "extension.cwl"))
    assert ran.returncode == 0 and ran.stdout == ""  # as cwltool: the output object goes to the file alone
    assert json.loads(summary.read_text())["said"]["basename"] == "extended.txt"
