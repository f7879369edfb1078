"""Planning what moves: a job's inputs onto the VM and the output object back, checked with real cwltool runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lando_ssh.errors import InputMissing, StagingFailed
from lando_ssh.staging import Transfer, output_files, plan_inputs, rewrite_outputs, substitute
from lando_ssh.workflow import prepare

WORKFLOWS = Path(__file__).parent / "workflows"
CWLTOOL = str(Path(sys.executable).parent / "cwltool")
VM = "/home/vm/job/inputs"


def wf(name: str) -> str:
    return str(WORKFLOWS / name)


def file(path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"class": "File", "location": str(path), **extra}


def uri(path: str) -> str:
    return Path(path).as_uri()


# ---- where inputs land ------------------------------------------------------------------------


def test_files_from_one_directory_share_a_vm_directory_and_keep_their_basenames():
    prepared = prepare(wf("upper_count.cwl"), wf("upper_count.yml"))

    transfers, job_order, _ = plan_inputs(prepared, VM)

    data = WORKFLOWS / "data"
    assert transfers == [Transfer(str(data / "hello.txt"), f"{VM}/1/hello.txt", "file", 24),
                         Transfer(str(data / "more.txt"), f"{VM}/1/more.txt", "file", 10)]
    assert job_order == {"text": {"class": "File", "location": uri(f"{VM}/1/hello.txt")},
                         "more": {"class": "File", "location": uri(f"{VM}/1/more.txt")}}


def test_inputs_with_the_same_basename_from_different_directories_do_not_collide(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.txt").write_text(f"from {d}\n")
    prepared = prepare(wf("upper_count.cwl"), None, {"text": file(tmp_path / "a" / "x.txt"),
                                                     "more": file(tmp_path / "b" / "x.txt")})

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert [(t.source, t.dest) for t in transfers] == [(str(tmp_path / "a" / "x.txt"), f"{VM}/1/x.txt"),
                                                       (str(tmp_path / "b" / "x.txt"), f"{VM}/2/x.txt")]
    assert job_order["text"]["location"] == uri(f"{VM}/1/x.txt")
    assert job_order["more"]["location"] == uri(f"{VM}/2/x.txt")


def test_the_same_file_referenced_twice_is_transferred_once():
    hello = wf("data/hello.txt")
    prepared = prepare(wf("upper_count.cwl"), None, {"text": file(hello), "more": file(hello)})

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert [t.dest for t in transfers] == [f"{VM}/1/hello.txt"]
    assert job_order["text"]["location"] == job_order["more"]["location"]


def test_a_basename_given_in_the_job_order_names_the_file_on_the_vm(tmp_path):
    (tmp_path / "download.bin").write_text("x\n")
    prepared = prepare(wf("upper_count.cwl"), None, {
        "text": file(tmp_path / "download.bin", basename="sample.txt"), "more": file(wf("data/more.txt"))})

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert transfers[0].source == str(tmp_path / "download.bin")
    assert transfers[0].dest == f"{VM}/1/sample.txt"
    assert job_order["text"] == {"class": "File", "location": uri(f"{VM}/1/sample.txt"), "basename": "sample.txt"}


def test_a_basename_given_in_the_job_order_cannot_clash_with_a_file_of_that_name(tmp_path):
    (tmp_path / "x.txt").write_text("x\n")
    (tmp_path / "y.txt").write_text("y\n")
    prepared = prepare(wf("upper_count.cwl"), None, {"text": file(tmp_path / "y.txt"),
                                                     "more": file(tmp_path / "x.txt", basename="y.txt")})

    transfers, _, _ = plan_inputs(prepared, VM)

    assert [(t.source, t.dest) for t in transfers] == [(str(tmp_path / "y.txt"), f"{VM}/1/y.txt"),
                                                       (str(tmp_path / "x.txt"), f"{VM}/2/y.txt")]


def test_the_plan_keeps_the_job_orders_order_so_a_resumed_job_plans_the_same_vm_paths():
    prepared = prepare(wf("scatter.cwl"), wf("scatter.yml"))

    transfers, order, _ = plan_inputs(prepared, VM)

    assert [(t.source, t.dest) for t in transfers] == [(wf(f"data/s{i}.txt"), f"{VM}/1/s{i}.txt") for i in (1, 2, 3)]
    assert order == {"samples": [{"class": "File", "location": f"file://{VM}/1/s{i}.txt"} for i in (1, 2, 3)]}


def test_a_vm_path_with_spaces_is_a_quoted_file_uri():
    prepared = prepare(wf("upper_count.cwl"), wf("upper_count.yml"))

    transfers, job_order, _ = plan_inputs(prepared, "/vm/my job/inputs/")

    assert transfers[0].dest == "/vm/my job/inputs/1/hello.txt"
    assert job_order["text"]["location"] == "file:///vm/my%20job/inputs/1/hello.txt"


# ---- secondaryFiles ---------------------------------------------------------------------------


def test_secondary_files_implied_by_patterns_travel_next_to_the_primary():
    prepared = prepare(wf("secondary.cwl"), wf("secondary.yml"))

    transfers, job_order, _ = plan_inputs(prepared, VM)

    data = WORKFLOWS / "data"
    assert [(t.source, t.dest) for t in transfers] == [
        (str(data / "reads.bam"), f"{VM}/1/reads.bam"),
        (str(data / "reads.bam.bai"), f"{VM}/1/reads.bam.bai"),  # pattern .bai
        (str(data / "reads.idx"), f"{VM}/1/reads.idx"),  # pattern ^.idx
    ]
    # cwltool on the VM finds them next to the primary by the same patterns, as it does locally
    assert job_order == {"reads": {"class": "File", "location": uri(f"{VM}/1/reads.bam")}}


def test_an_optional_secondary_file_may_be_absent_but_a_required_one_may_not(tmp_path):
    (tmp_path / "reads.bam").write_text("r\n")
    (tmp_path / "reads.bam.bai").write_text("i\n")
    prepared = prepare(wf("secondary.cwl"), None, {"reads": file(tmp_path / "reads.bam")})

    transfers, _, _ = plan_inputs(prepared, VM)
    assert [t.dest for t in transfers] == [f"{VM}/1/reads.bam", f"{VM}/1/reads.bam.bai"]  # no reads.idx

    (tmp_path / "reads.bam.bai").unlink()  # gone between submit and staging
    with pytest.raises(InputMissing) as e:
        plan_inputs(prepared, VM)
    assert "'reads'" in str(e.value) and str(tmp_path / "reads.bam.bai") in str(e.value)


def test_secondary_files_listed_in_the_job_order_land_next_to_the_primary_wherever_they_come_from(tmp_path):
    (tmp_path / "bams").mkdir()
    (tmp_path / "indexes").mkdir()
    (tmp_path / "bams" / "reads.bam").write_text("r\n")
    (tmp_path / "indexes" / "reads.bam.bai").write_text("index\n")
    order = {"reads": file(tmp_path / "bams" / "reads.bam",
                           secondaryFiles=[file(tmp_path / "indexes" / "reads.bam.bai")])}
    prepared = prepare(wf("secondary.cwl"), None, order)

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert [(t.source, t.dest, t.size) for t in transfers] == [
        (str(tmp_path / "bams" / "reads.bam"), f"{VM}/1/reads.bam", 2),
        (str(tmp_path / "indexes" / "reads.bam.bai"), f"{VM}/1/reads.bam.bai", 6)]
    assert job_order["reads"]["secondaryFiles"] == [{"class": "File", "location": uri(f"{VM}/1/reads.bam.bai")}]


def test_secondary_file_patterns_follow_cwltools_caret_rule():
    assert substitute("reads.bam", ".bai") == "reads.bam.bai"
    assert substitute("reads.bam", "^.bai") == "reads.bai"
    assert substitute("ref.fa.gz", "^^.dict") == "ref.dict"
    assert substitute("noext", "^.idx") == "noext.idx"


# ---- Directories, arrays, records, literals, URLs ----------------------------------------------


def test_a_directory_input_transfers_whole_and_its_listing_follows_it(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.txt").write_text("gamma\n")
    data_dir = WORKFLOWS / "data" / "dir"
    order = {"dir": {"class": "Directory", "location": str(data_dir),
                     "listing": [file(data_dir / "a.txt"),
                                 {"class": "Directory", "location": str(data_dir / "sub"),
                                  "listing": [file(data_dir / "sub" / "b.txt")]},
                                 file(tmp_path / "elsewhere" / "c.txt")]}}
    prepared = prepare(wf("directory.cwl"), None, order)

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert transfers == [Transfer(str(data_dir), f"{VM}/1/dir", "directory", 11),  # a.txt 6 + sub/b.txt 5
                         Transfer(str(tmp_path / "elsewhere" / "c.txt"), f"{VM}/2/c.txt", "file", 6)]
    listing = job_order["dir"]["listing"]
    assert listing[0]["location"] == uri(f"{VM}/1/dir/a.txt")
    assert listing[1]["location"] == uri(f"{VM}/1/dir/sub")
    assert listing[1]["listing"][0]["location"] == uri(f"{VM}/1/dir/sub/b.txt")
    assert listing[2]["location"] == uri(f"{VM}/2/c.txt")


def test_arrays_records_and_literal_files(tmp_path):
    (tmp_path / "tool.cwl").write_text(json.dumps({
        "cwlVersion": "v1.2", "class": "CommandLineTool", "baseCommand": "true", "outputs": [],
        "inputs": {
            "samples": "File[]",
            "genome": {"type": {"type": "record", "fields": {
                "fasta": {"type": "File", "secondaryFiles": [".fai"]},
                "label": "string"}}},
            "note": "File",
            "maybe": "File?"}}))
    (tmp_path / "s").mkdir()
    for name in ("s/1.txt", "s/2.txt", "ref.fa", "ref.fa.fai"):
        (tmp_path / name).write_text(name + "\n")
    literal = {"class": "File", "basename": "note.txt", "contents": "a literal\n"}
    prepared = prepare(str(tmp_path / "tool.cwl"), None, {
        "samples": [file(tmp_path / "s/1.txt"), file(tmp_path / "s/2.txt")],
        "genome": {"fasta": file(tmp_path / "ref.fa"), "label": "hg"},
        "note": literal, "maybe": None})

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert [t.dest for t in transfers] == [f"{VM}/1/1.txt", f"{VM}/1/2.txt", f"{VM}/2/ref.fa", f"{VM}/2/ref.fa.fai"]
    assert [f["location"] for f in job_order["samples"]] == [uri(f"{VM}/1/1.txt"), uri(f"{VM}/1/2.txt")]
    assert job_order["genome"] == {"fasta": {"class": "File", "location": uri(f"{VM}/2/ref.fa")}, "label": "hg"}
    assert job_order["note"] == literal
    assert job_order["maybe"] is None


def test_urls_are_downloaded_on_the_vm_with_the_size_and_checksum_the_job_order_gives():
    order = {"text": file("http://127.0.0.1:8000/d/hello.txt", size=24, checksum="sha1$abc"),
             "more": file("https://example.org/get/more%20text.txt?token=s3cret")}
    prepared = prepare(wf("upper_count.cwl"), None, order)

    transfers, job_order, _ = plan_inputs(prepared, VM)

    assert transfers == [
        Transfer("http://127.0.0.1:8000/d/hello.txt", f"{VM}/1/hello.txt", "url", 24, "sha1$abc"),
        Transfer("https://example.org/get/more%20text.txt?token=s3cret", f"{VM}/2/more text.txt", "url")]
    assert job_order["text"] == {"class": "File", "location": uri(f"{VM}/1/hello.txt"),
                                 "size": 24, "checksum": "sha1$abc"}


def test_a_url_input_brings_its_pattern_secondary_files_optional_ones_only_if_there():
    prepared = prepare(wf("secondary.cwl"), None, {"reads": file("http://127.0.0.1:8000/d/reads.bam")})

    transfers, _, _ = plan_inputs(prepared, VM)

    assert [(t.source, t.dest, t.kind, t.required) for t in transfers] == [
        ("http://127.0.0.1:8000/d/reads.bam", f"{VM}/1/reads.bam", "url", True),
        ("http://127.0.0.1:8000/d/reads.bam.bai", f"{VM}/1/reads.bam.bai", "url", True),
        ("http://127.0.0.1:8000/d/reads.idx", f"{VM}/1/reads.idx", "url", False)]


def test_a_default_file_is_staged_and_the_packed_workflow_points_at_it_on_the_vm():
    prepared = prepare(wf("default_file.cwl"), wf("default_file.yml"))

    transfers, _, packed = plan_inputs(prepared, VM)

    reference = str(WORKFLOWS / "data" / "reference.txt")
    assert Transfer(reference, f"{VM}/1/reference.txt", "file", 15) in transfers
    main = next(p for p in packed["$graph"] if p["id"] == "#main")
    default = next(i for i in main["inputs"] if i["id"] == "#main/reference")["default"]
    assert default == {"class": "File", "location": uri(f"{VM}/1/reference.txt")}
    assert str(WORKFLOWS) not in json.dumps(packed)
    assert prepared.packed["$graph"][0]["inputs"][0]["default"]["location"] == uri(reference)  # not mutated


def test_a_file_inside_a_directory_input_is_sent_once_and_found_inside_the_directory_on_the_vm(tmp_path):
    (tmp_path / "ref" / "sub").mkdir(parents=True)
    (tmp_path / "ref" / "sub" / "genome.fa").write_text(">g\n")
    order = {"f": file(tmp_path / "ref" / "sub" / "genome.fa"),
             "d": {"class": "Directory", "location": str(tmp_path / "ref")}}
    prepared = prepare(wf("variety/dir_and_file_in_it.cwl"), None, order)

    transfers, vm_order, _ = plan_inputs(prepared, VM)

    assert transfers == [Transfer(str(tmp_path / "ref"), f"{VM}/1/ref", "directory", 3)]
    assert vm_order["d"]["location"] == uri(f"{VM}/1/ref")
    assert vm_order["f"]["location"] == uri(f"{VM}/1/ref/sub/genome.fa")


def test_defaults_cwltool_would_not_use_are_left_as_they_are_and_one_it_uses_is_staged():
    prepared = prepare(wf("unused_defaults.cwl"), wf("unused_defaults.yml"))  # the missing files: no refusal

    transfers, _, packed = plan_inputs(prepared, VM)

    data = WORKFLOWS / "data"
    assert sorted(t.source for t in transfers) == [str(data / "hello.txt"), str(data / "reference.txt")]
    text = json.dumps(packed)
    for unused in ("data/not-here.txt", "data/not-here-either.txt", "keep:99999999999999999999999999999999+118"):
        assert unused in text, unused  # as the workflow names it: the VM's cwltool judges it as cwltool does
    assert uri(str(data / "reference.txt")) not in text  # the step's default that runs: on the VM


def test_the_main_process_default_that_is_used_must_exist():
    with pytest.raises(InputMissing, match="the default of 'text': File .*data/not-here.txt does not exist"):
        prepare(wf("unused_defaults.cwl"), None)


# ---- outputs ------------------------------------------------------------------------------------


def test_rewrite_outputs_moves_every_location_and_path_and_keeps_everything_else():
    vm_output: dict[str, Any] = {
        "none": None, "n": 3,
        "files": [[{"class": "File", "location": "file:///vm/out/a%20b.txt", "path": "/vm/out/a b.txt",
                    "basename": "a b.txt", "nameroot": "a b", "nameext": ".txt", "size": 1, "checksum": "sha1$x",
                    "secondaryFiles": [{"class": "File", "location": "file:///vm/out/a%20b.txt.idx",
                                        "path": "/vm/out/a b.txt.idx", "basename": "a b.txt.idx", "size": 2}]}]],
        "rec": {"d": {"class": "Directory", "location": "file:///vm/out/d", "path": "/vm/out/d", "basename": "d",
                      "listing": [{"class": "File", "location": "file:///vm/out/d/e", "path": "/vm/out/d/e",
                                   "basename": "e", "size": 0}]}},
    }

    local = rewrite_outputs(vm_output, "/vm/out/", "/srv/results")

    assert local["none"] is None and local["n"] == 3
    f = local["files"][0][0]
    assert (f["location"], f["path"]) == ("file:///srv/results/a%20b.txt", "/srv/results/a b.txt")
    assert {k: v for k, v in f.items() if k not in ("location", "path", "secondaryFiles")} == \
        {k: v for k, v in vm_output["files"][0][0].items() if k not in ("location", "path", "secondaryFiles")}
    assert f["secondaryFiles"][0]["path"] == "/srv/results/a b.txt.idx"
    assert local["rec"]["d"]["listing"][0]["location"] == "file:///srv/results/d/e"
    assert vm_output["files"][0][0]["path"] == "/vm/out/a b.txt"  # the input is not mutated
    assert output_files(local) == [("/srv/results/a b.txt", 1), ("/srv/results/a b.txt.idx", 2),
                                   ("/srv/results/d/e", 0)]


def test_an_output_outside_the_vm_output_directory_is_refused():
    with pytest.raises(StagingFailed, match="/vm/elsewhere/x"):
        rewrite_outputs({"x": {"class": "File", "location": "file:///vm/elsewhere/x"}}, "/vm/out", "/srv/r")


# ---- the plan carried out: cwltool on the "VM" gives what bare cwltool gives ------------------


def carry_out(transfers: list[Transfer], vm_root: Path) -> None:
    """What the pipeline does over SSH, done on this machine."""
    for t in transfers:
        assert Path(t.dest).is_relative_to(vm_root)
        Path(t.dest).parent.mkdir(parents=True, exist_ok=True)
        if t.kind == "file":
            shutil.copyfile(t.source, t.dest)
        elif t.kind == "directory":
            shutil.copytree(t.source, t.dest)
        else:
            pytest.fail(f"no URL expected here: {t}")
        assert sum(p.stat().st_size for p in [Path(t.dest), *Path(t.dest).rglob("*")] if p.is_file()) == t.size


def cwltool(args: list[str], outdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([CWLTOOL, "--quiet", "--no-container", "--outdir", str(outdir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def sorted_listings(value: Any) -> Any:
    """Directory listings in name order (cwltool lists in the order the filesystem returns)."""
    if isinstance(value, list):
        return [sorted_listings(v) for v in value]
    if isinstance(value, dict):
        out = {k: sorted_listings(v) for k, v in value.items()}
        if out.get("class") == "Directory" and "listing" in out:
            out["listing"] = sorted(out["listing"], key=lambda e: e["basename"])
        return out
    return value


@pytest.mark.parametrize("name", ["secondary", "directory", "scatter", "default_file"])
def test_the_staged_run_gives_the_output_object_bare_cwltool_gives(name, tmp_path):
    server = tmp_path / "server"  # a copy, removed before the run: the VM side must not need it
    shutil.copytree(WORKFLOWS, server)
    vm, local = tmp_path / "vm", tmp_path / "local"
    bare = cwltool([wf(f"{name}.cwl"), wf(f"{name}.yml")], local)  # runs while we stage

    prepared = prepare(str(server / f"{name}.cwl"), str(server / f"{name}.yml"))
    transfers, job_order, packed = plan_inputs(prepared, str(vm / "inputs"))
    carry_out(transfers, vm)
    (vm / "workflow.cwl").write_text(json.dumps(packed))
    (vm / "job.json").write_text(json.dumps(job_order))
    assert str(server) not in (vm / "workflow.cwl").read_text() + (vm / "job.json").read_text()
    shutil.rmtree(server)
    vm_output = finished(cwltool([str(vm / "workflow.cwl"), str(vm / "job.json")], vm / "out"))

    expected = finished(bare)
    rewritten = rewrite_outputs(vm_output, str(vm / "out"), str(local))
    assert sorted_listings(rewritten) == sorted_listings(expected)
    assert list(rewritten) == list(expected)  # same keys in the same order, as cwltool prints them
    files = output_files(rewritten)
    assert files and len(files) == len(output_files(vm_output))
    for (path, size), (vm_path, _) in zip(files, output_files(vm_output), strict=True):
        assert Path(path).stat().st_size == size
        assert Path(path).read_bytes() == Path(vm_path).read_bytes()
