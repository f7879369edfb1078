"""Workflows from anywhere: an http(s) URL (a CWL document, or a packed JSON with `#main`), a zip
archive URL with the path inside it, a git repository at a ref. Each is fetched and validated on the
server before anything boots, and what ran (resolved URL, commit, sha256) is on the job and in its
docs/README.md."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from bespin_api import BespinApiService
from conftest import WORKFLOWS, Lando

from lando_ssh.errors import WorkflowInvalid
from lando_ssh.store.bespin import BespinStore
from lando_ssh.workflow import WorkflowSource, prepare

GIT_ID = ["-c", "user.name=Test", "-c", "user.email=test@example.org"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_upper_count(dest: Path) -> Path:
    """upper_count.cwl and the tools it runs (relative `run:` references) under `dest`/wf/."""
    (dest / "wf" / "tools").mkdir(parents=True)
    shutil.copy(WORKFLOWS / "upper_count.cwl", dest / "wf")
    for tool in ("upper.cwl", "count_lines.cwl"):
        shutil.copy(WORKFLOWS / "tools" / tool, dest / "wf" / "tools")
    return dest / "wf"


@pytest.fixture
def bare_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A bare git repository holding wf/upper_count.cwl: (its path, the commit tagged v1, a later commit on main)."""
    work = tmp_path / "work"
    work.mkdir()
    copy_upper_count(work)

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "upper_count")
    git("tag", "v1")
    v1 = git("rev-parse", "HEAD")
    (work / "wf" / "broken.cwl").write_text("cwlVersion: v1.2\nclass: Nonsense\n")
    git("add", ".")
    git("commit", "-qm", "a broken workflow")
    head = git("rev-parse", "HEAD")
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return bare, v1, head


def job_order(tmp_path: Path) -> Path:
    order = tmp_path / "job.yml"
    order.write_text(json.dumps({"text": {"class": "File", "path": str(WORKFLOWS / "data" / "hello.txt")},
                                 "more": {"class": "File", "path": str(WORKFLOWS / "data" / "more.txt")}}))
    return order


# -- through the CLI, end to end --------------------------------------------------------------------

def test_a_git_workflow_runs_at_its_tag_and_the_commit_is_recorded(lando: Lando, bare_repo, tmp_path: Path):
    bare, v1, _ = bare_repo
    job_id = lando.submit("--git", str(bare), "--ref", "v1", "--path", "wf/upper_count.cwl", str(job_order(tmp_path)))

    run = lando.cli("job", str(job_id))

    assert run.returncode == 0, run.stderr
    job = lando.status(job_id)
    source = job["facts"]["workflow_source"]
    assert (source["kind"], source["ref"], source["commit"], source["path"]) == ("git", "v1", v1, "wf/upper_count.cwl")
    assert source["sha256"] == sha256(WORKFLOWS / "upper_count.cwl")
    assert job["name"] == "upper_count" and str(bare) in job["workflow"]
    readme = (Path(job["output_dir"]) / "docs" / "README.md").read_text()
    assert v1 in readme and "wf/upper_count.cwl" in readme
    assert (Path(job["output_dir"]) / "count.txt").exists()
    assert lando.vm_dirs() == []


def test_a_zipped_workflow_runs_through_cwl_runner_and_its_checksum_is_recorded(
        lando: Lando, http_files: tuple[str, Path], tmp_path: Path):
    base, served = http_files
    wf = copy_upper_count(tmp_path / "src")
    with zipfile.ZipFile(served / "upper_count.zip", "w") as z:
        for f in sorted(wf.rglob("*.cwl")):
            z.write(f, f"upper_count/{f.relative_to(wf)}")
    outdir = tmp_path / "out"

    run = lando.cli("cwl-runner", "--outdir", str(outdir), "--path", "upper_count/upper_count.cwl",
                    f"{base}/upper_count.zip", str(job_order(tmp_path)))

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["count"]["path"] == str(outdir / "count.txt")
    (job,) = json.loads(lando.cli("status", "--json", check=True).stdout)
    source = job["facts"]["workflow_source"]
    assert source["kind"] == "zip" and source["sha256"] == sha256(served / "upper_count.zip")
    assert source["workflow_sha256"] == sha256(WORKFLOWS / "upper_count.cwl")
    assert sha256(served / "upper_count.zip") in (Path(job["run"]["docs_path"]) / "README.md").read_text()


def test_a_packed_workflow_url_with_main_runs_and_its_resolved_url_and_checksum_are_recorded(
        lando: Lando, http_files: tuple[str, Path], tmp_path: Path):
    base, served = http_files
    packed = prepare(str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count.yml")).packed
    (served / "packed.cwl").write_text(json.dumps(packed))

    job_id = lando.submit(f"{base}/packed.cwl#main", job_order(tmp_path))
    run = lando.cli("job", str(job_id))

    assert run.returncode == 0, run.stderr
    source = lando.status(job_id)["facts"]["workflow_source"]
    assert source == {"kind": "url", "url": f"{base}/packed.cwl#main", "resolved_url": f"{base}/packed.cwl#main",
                      "sha256": sha256(served / "packed.cwl")}


# -- refused before anything boots ----------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--git", "{bare}", "--ref", "no-such-ref", "--path", "wf/upper_count.cwl"], "has no branch, tag or commit"),
    (["--git", "{bare}", "--ref", "main", "--path", "wf/broken.cwl"], "is not valid CWL"),
    (["--git", "{bare}", "--path", "../outside.cwl"], "leaves the repository"),
    (["--git", "{tmp}/no-such-repo.git", "--path", "wf/upper_count.cwl"], "failed"),
    (["{base}/missing.cwl"], "answered HTTP 404"),
    (["{base}/not-a-zip.zip", "--path", "wf.cwl"], "is not a zip file"),
])
def test_a_workflow_that_cannot_be_fetched_or_validated_is_refused_and_nothing_is_stored_or_booted(
        lando: Lando, bare_repo, http_files: tuple[str, Path], tmp_path: Path, args: list[str], message: str):
    bare, _, _ = bare_repo
    base, served = http_files
    (served / "not-a-zip.zip").write_text("plain text")
    args = [a.format(bare=bare, base=base, tmp=tmp_path) for a in args]

    proc = lando.cli("submit", *args, str(job_order(tmp_path)))

    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(lando.cli("status", "--json", check=True).stdout) == []
    assert lando.vm_dirs() == []


def test_git_and_path_options_are_checked(lando: Lando, tmp_path: Path):
    for args, message in ((["--git", "x.git", str(job_order(tmp_path))], "--git needs --path"),
                          ([str(WORKFLOWS / "upper_count.cwl"), "--ref", "main"], "--ref is only for --git"),
                          ([], "name a workflow")):
        proc = lando.cli("submit", *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# -- bespin-api's workflow types -----------------------------------------------------------------

def test_a_bespin_zipped_workflow_is_fetched_validated_and_recorded_when_the_job_is_loaded(
        lando: Lando, http_files: tuple[str, Path], tmp_path: Path):
    base, served = http_files
    wf = copy_upper_count(tmp_path / "src")
    with zipfile.ZipFile(served / "wf.zip", "w") as z:
        for f in sorted(wf.rglob("*.cwl")):
            z.write(f, str(f.relative_to(wf)))
    (served / "hello.txt").write_text("hello\n")
    bespin = BespinApiService("t0ken").start()
    try:
        job_id = bespin.add_job(f"{base}/wf.zip", {"text": {"class": "File", "path": "hello.txt"},
                                                   "more": {"class": "File", "path": "hello.txt"}},
                                workflow_type="zipped", workflow_path="upper_count.cwl",
                                url_files=[{"url": f"{base}/hello.txt", "destination_path": "hello.txt", "size": 6}])
        lando.settings["bespin_api"] = {"url": bespin.url, "token": "t0ken"}
        lando.write_config()
        store = BespinStore(lando.config())
        try:
            job = store.load(job_id)  # a command loads it (reading alone never does)
        finally:
            store.close()
    finally:
        bespin.stop()

    assert job.id == job_id and job.state.value == "A" and job.workflow_doc is not None
    assert job.facts["workflow_source"]["kind"] == "zip"
    assert job.facts["workflow_source"]["sha256"] == sha256(served / "wf.zip")
    assert job.job_order["text"] == {"class": "File", "location": f"{base}/hello.txt", "basename": "hello.txt",
                                     "size": 6}
    assert job.vm_spec.flavor == "m1.small" and job.vm_spec.image == "local"
    assert bespin.puts == [] and lando.vm_dirs() == []


def test_prepare_takes_a_workflow_source_and_refuses_path_options_for_a_local_file():
    with pytest.raises(WorkflowInvalid, match="takes no --path"):
        prepare(WorkflowSource(str(WORKFLOWS / "upper_count.cwl"), path="x.cwl", kind="path"), None)
