"""`submit` refuses, with the sentence the job would have got, what it can already tell would fail:
an unknown flavor or image, a workflow no allowed flavor fits, an output dir that cannot be written.
A cloud that does not answer is no reason to refuse: the job is stored and checked when it starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import WORKFLOWS, Lando

WF, ORDER = str(WORKFLOWS / "upper_count.cwl"), str(WORKFLOWS / "upper_count.yml")


def jobs(lando: Lando) -> list:
    return json.loads(lando.cli("status", "--json", check=True).stdout)


@pytest.mark.parametrize(("options", "sentence"), [
    (["--flavor", "m9.huge"], "flavor 'm9.huge' does not exist; flavors: m1.small, m1.medium, m1.large"),
    (["--image", "ubuntu-24.04"], "image 'ubuntu-24.04' does not exist; images: local"),
])
def test_submit_refuses_an_unknown_flavor_or_image(lando: Lando, options: list[str], sentence: str):
    proc = lando.cli("submit", WF, ORDER, *options)
    assert (proc.returncode, proc.stderr.strip()) == (2, f"lando-ssh: {sentence}")
    assert jobs(lando) == []


def test_submit_refuses_a_workflow_no_allowed_flavor_fits_with_the_sentence_the_job_got(lando: Lando):
    lando.write_config(flavors={"allow": "^m1[.]medium$"})
    proc = lando.cli("submit", str(WORKFLOWS / "needs_cores.cwl"))
    sentence = ("no allowed flavor fits the job: it needs 3 cores, 3000 MB RAM; the largest allowed flavor, "
                "m1.medium, has 2 vCPUs, 4096 MB RAM, 40 GB disk")
    assert (proc.returncode, proc.stderr.strip()) == (2, f"lando-ssh: {sentence}")
    assert jobs(lando) == []

    lando.write_config(flavors={"allow": None})  # a job stored before the allow-list changed meets it at V
    job_id = lando.submit(WORKFLOWS / "needs_cores.cwl")
    lando.write_config(flavors={"allow": "^m1[.]medium$"})
    assert lando.cli("job", str(job_id)).returncode == 1
    assert lando.status(job_id)["reason"] == f"step V (create VM) failed: {sentence}"


def test_submit_refuses_an_output_dir_it_cannot_create(lando: Lando, tmp_path: Path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output dir's parent should be\n")
    proc = lando.cli("submit", WF, ORDER, "--output-dir", str(blocker / "job"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"lando-ssh: the output directory {blocker / 'job'} cannot be created: "
                                   f"{blocker} is not a directory")
    assert jobs(lando) == []


def test_submit_accepts_when_the_cloud_does_not_answer_and_says_so(lando: Lando):
    lando.write_config(cloud={"driver": "openstack"}, cloud_settings={
        "auth_url": "http://127.0.0.1:9/identity/v3", "username": "lando", "password": "secret",
        "project_name": "lando", "api_retries": 0})
    proc = lando.cli("submit", WF, ORDER, "--flavor", "m9.huge")
    assert proc.returncode == 0, proc.stderr
    assert "lando-ssh: the cloud did not answer (cannot reach the OpenStack auth_url" in proc.stderr
    assert "the job's flavor and image are checked when its VM is created" in proc.stderr
    assert [j["id"] for j in jobs(lando)] == [int(proc.stdout)]
