"""The status page over a store of made-up jobs, through real HTTP (no browser): pages, filters, the JSON
twins (the objects `status --json` prints), secrets masked, read-only without a token, actions behind the
token with CSRF."""
from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import WORKFLOWS
from made_jobs import made_job

from lando_ssh.commands.status import Drivers, status_object
from lando_ssh.config import load_config
from lando_ssh.model import HistoryEntry, Job, JobState, JobStep, now
from lando_ssh.store import open_store
from lando_ssh.web import start_web_server, views


class Web:
    def __init__(self, root: Path, jobs: list[Job], token: str | None):
        self.sent: list[tuple[str, int]] = []
        cfg = {"data_dir": str(root / "data"), "cloud": {"driver": "local", "installation_id": "web-test"}}
        if token:
            cfg["web"] = {"token": token}
        (root / "lando.yml").write_text(json.dumps(cfg))
        self.config = load_config(str(root / "lando.yml"), env={})
        store = open_store(self.config.store_url)
        self.ids = [store.create(j).id for j in jobs]
        self.jobs = {i: store.get(i) for i in self.ids}
        store.close()
        self.server = start_web_server(self.config, "127.0.0.1:0",
                                       send=lambda command, job_id: self.sent.append((command, job_id)))
        self.port = self.server.server_address[1]

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = urllib.parse.urlencode(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})} if data else (headers or {})
        conn.request(method, path, data, hdrs)
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text

    def get(self, path: str, **kw: Any) -> str:
        status, _, text = self.request("GET", path, **kw)
        assert status == 200, (path, status, text[:500])
        return text

    def api(self, path: str) -> Any:
        return json.loads(self.get(path))


def sample_jobs() -> list[Job]:
    return [made_job("align-a", "ann", JobState.FINISHED, minutes_ago=300, project="genomics"),
            made_job("align-b", "bob", JobState.ERROR, minutes_ago=200, project="genomics", restarts=1),
            made_job("count <script>", "ann", JobState.RUNNING, minutes_ago=10, project="imaging"),
            made_job("secretive", "cid", JobState.FINISHED, minutes_ago=100, secret=True),
            made_job("queued", "bob", JobState.STARTING, minutes_ago=1)]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path, sample_jobs(), token=None)
    yield w
    w.server.shutdown()
    w.server.server_close()


@pytest.fixture
def web_with_token(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path, sample_jobs()[:3], token="s3cret-token")
    yield w
    w.server.shutdown()
    w.server.server_close()


def test_the_jobs_table_lists_the_newest_first_with_state_and_step_in_words(web: Web) -> None:
    page = web.get("/jobs")
    ids = [int(x) for x in re.findall(r'<tr data-job="(\d+)"', page)]
    assert ids == sorted(web.ids, reverse=True)
    assert "waiting" in page and "run workflow" in page and "<code>RR</code>" in page
    assert "count &lt;script&gt;" in page and "count <script>" not in page  # job data is escaped


def test_the_jobs_table_filters_by_state_owner_project_name_and_time(web: Web) -> None:
    def listed(qs: str) -> set[str]:
        return {j["name"] for j in web.api("/api/jobs?" + qs)["jobs"]}

    assert listed("state=F") == {"align-a", "secretive"}
    assert listed("state=F&state=E") == {"align-a", "align-b", "secretive"}
    assert listed("owner=bob") == {"align-b", "queued"}
    assert listed("project=genomics") == {"align-a", "align-b"}
    assert listed("name=ALIGN") == {"align-a", "align-b"}
    since = (now() - timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M")
    assert listed("since=" + since) == {"count <script>", "queued"}
    page = web.get("/jobs?owner=bob")
    assert len(re.findall(r"<tr data-job=", page)) == 2


def test_the_jobs_table_is_paginated(web: Web) -> None:
    first, second = web.api("/api/jobs?per_page=2"), web.api("/api/jobs?per_page=2&page=2")
    assert (first["total"], first["pages"]) == (5, 3)
    assert [j["id"] for j in first["jobs"]] + [j["id"] for j in second["jobs"]] == sorted(web.ids, reverse=True)[:4]
    assert 'rel="next"' in web.get("/jobs?per_page=2")


def test_a_bad_filter_is_one_sentence_and_a_400(web: Web) -> None:
    status, _, text = web.request("GET", "/api/jobs?state=X")
    assert status == 400 and "not one of lando's state codes" in json.loads(text)["error"]
    status, _, text = web.request("GET", "/jobs?since=yesterday")
    assert status == 400 and "is not a date or time" in text


def test_the_json_twins_hold_what_status_json_prints(web: Web) -> None:
    drivers = Drivers(web.config)
    for job_id, job in web.jobs.items():
        assert web.api(f"/api/jobs/{job_id}") == json.loads(json.dumps(status_object(job, drivers)))
    listed = web.api("/api/jobs?per_page=500")["jobs"]
    assert listed == [json.loads(json.dumps(status_object(web.jobs[i], drivers)))
                      for i in sorted(web.ids, reverse=True)]
    assert listed[2]["driven"] is False  # the running job: no process here drives it, as status --json says


def test_an_unknown_job_is_a_404(web: Web) -> None:
    assert web.request("GET", "/jobs/999")[0] == 404
    assert web.request("GET", "/api/jobs/999")[0] == 404


def test_a_jobs_page_shows_every_attempts_steps_reason_error_vm_and_usage(web: Web) -> None:
    failed = web.ids[1]
    page = web.get(f"/jobs/{failed}")
    assert page.count('<div class="attempt">') == 2  # restarted once
    for code in "VSRoOT":
        assert f'class="seg seg-{code}"' in page
    assert "the workflow failed: exit 1" in page and "step R failed" in page
    assert "vm-align-b-1" in page and "m1.small" in page
    assert views.job_usage(web.jobs[failed])["core-hours"] == round(2 * 2 * 60 / 3600, 4)  # 2 VMs of 2 vCPUs, 60 s
    assert "core-hours" in page
    timeline = views.timeline(web.jobs[failed])
    assert [s.label for s in timeline[1]] == ["r", "V", "S", "R", "o", "O", "T", "E"]
    assert all(s.seconds == 10 for s in timeline[1][1:7])


def test_secrets_never_appear_in_a_page_or_its_json(web: Web) -> None:
    secret = web.ids[3]
    for path in (f"/jobs/{secret}", f"/api/jobs/{secret}", "/api/jobs", "/jobs"):
        assert "hunter2" not in web.get(path)
    assert "(secret)" in web.get(f"/jobs/{secret}")


def test_the_vms_page_lists_the_vms_held_and_the_jobs_waiting_and_why(web: Web) -> None:
    data = web.api("/api/vms")
    assert [v["name"] for v in data["vms"]] == ["vm-count <script>-0"]
    assert [(w["name"], w["reason"]) for w in data["waiting"]] == [("queued", "waiting: 1 of 1 job slots busy")]
    assert [(v["state"], v["boot_seconds"], v["ssh_seconds"]) for v in data["vms"]] == [("busy", 4.0, 9.0)]
    page = web.get("/vms")
    assert "waiting: 1 of 1 job slots busy" in page and "vm-count &lt;script&gt;-0" in page


def test_a_vms_state_is_told_from_its_record() -> None:
    from lando_ssh.model import VmRecord

    job = made_job("x", "ann", JobState.RUNNING, minutes_ago=5)
    assert views.vm_state(job, VmRecord("asked")) == "asked for"  # the cloud's quota full: not taken yet
    assert views.vm_state(job, VmRecord("new", id="i-1")) == "booting"
    assert views.vm_state(job, VmRecord("up", id="i-1", address="10.0.0.5")) == "busy"
    job.state = JobState.ERROR
    assert views.vm_state(job, VmRecord("up", id="i-1", address="10.0.0.5")) == "kept"


def test_the_plots_series_count_states_core_hours_steps_and_boots(web: Web) -> None:
    data = web.api("/api/plots?period=day")
    assert len(data["times"]) == views.BUCKETS
    assert data["jobs_by_state"]["running"][-1] == 1 and data["jobs_by_state"]["waiting"][-1] == 1
    assert sum(data["jobs_ended"]["finished"]) == 2 and sum(data["jobs_ended"]["error"]) == 1
    assert set(data["core_hours_by_project"]["series"]) == {"genomics", "imaging", "-"}
    assert set(data["core_hours_by_owner"]["series"]) == {"ann", "bob", "cid"}
    assert data["step_seconds"]["steps"] == ["V", "S", "R", "o", "O", "T"]
    assert data["step_seconds"]["median"][0] == 10
    assert data["queue"]["length"][-1] == 1
    assert data["queue"]["reasons"] == {"waiting: N of N job slots busy": data["queue"]["length"]}
    boot = data["boot"]
    assert (boot["n_active"], boot["n_ssh"]) == (5, 5)  # every VM of every attempt
    assert (boot["median_active"], boot["median_ssh"]) == (4.0, 9.0)
    assert sum(boot["active"]) == sum(boot["ssh"]) == 5 and boot["active"].index(5) < boot["ssh"].index(5)
    assert web.request("GET", "/api/plots?period=year")[0] == 400
    assert web.request("GET", "/plots?period=custom")[0] == 400
    assert 'id="jobs_by_state"' in web.get("/plots?period=week")


def test_a_waiting_jobs_history_records_what_it_waits_for_each_time_that_changes(tmp_path: Path) -> None:
    from lando_ssh.journal import Journal
    from lando_ssh.model import reason_kind

    store = open_store(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    journal = Journal(store)
    job = store.create(Job(0, "queued", "wf.cwl", {}))

    def start(j: Job) -> None:
        j.set_state(JobState.STARTING, JobStep.NONE, note="start_job received")
        j.reason = "waiting: 2 of 2 job slots busy"

    def reason(why: str) -> Any:
        return lambda j: setattr(j, "reason", why)

    journal.update(job.id, start)
    journal.update(job.id, reason("waiting: 3 of 3 job slots busy"))  # the same limit: not a new entry
    journal.update(job.id, reason(""))  # a slot may be free: no reason is not a wait of its own
    journal.update(job.id, reason("waiting for cloud quota: 4 of 4 cores in use, job needs 2"))
    journal.update(job.id, lambda j: (j.set_state(JobState.STARTING, JobStep.CREATE_VM), setattr(j, "reason", "")))
    journal.update(job.id, reason("the cloud's quota is full: instances"))  # (the create step's own wait)
    journal.update(job.id, lambda j: (setattr(j, "reason", ""), j.set_state(JobState.RUNNING, JobStep.CREATE_VM)))
    history = store.get(job.id).history
    store.close()
    assert [(h.state.value, h.step.value, h.note, h.reason) for h in history] == [
        ("S", "", "start_job received", "waiting: 2 of 2 job slots busy"),
        ("S", "", "", "waiting for cloud quota: 4 of 4 cores in use, job needs 2"),
        ("S", "V", "", ""),
        ("S", "V", "", "the cloud's quota is full: instances"),
        ("R", "V", "", "")]
    assert reason_kind("waiting: 16 of 16 GB RAM in use, job needs 2.5 GB") == \
        "waiting: N of N GB RAM in use, job needs N GB"


def test_the_queue_plot_counts_the_waiting_jobs_by_what_they_wait_for() -> None:
    t = now() - timedelta(hours=1)
    job = Job(7, "waits", "wf.cwl", {}, created=t, history=[
        HistoryEntry(t, JobState.STARTING, JobStep.NONE, "start_job received", "waiting: 1 of 1 job slots busy"),
        HistoryEntry(t + timedelta(minutes=20), JobState.STARTING, JobStep.NONE, "", "waiting for cloud quota: 4 of "
                     "4 cores in use, job needs 2"),
        HistoryEntry(t + timedelta(minutes=40), JobState.STARTING, JobStep.CREATE_VM),
        HistoryEntry(t + timedelta(minutes=41), JobState.RUNNING, JobStep.CREATE_VM)])
    job.state, job.step = JobState.RUNNING, JobStep.CREATE_VM
    data = views.plots([job], t, t + timedelta(hours=1))
    at = [t + timedelta(minutes=m) for m in (10, 30, 50)]
    index = [min(range(len(data["times"])), key=lambda i: abs(data["times"][i] - a.timestamp())) for a in at]
    reasons = data["queue"]["reasons"]
    assert [data["queue"]["length"][i] for i in index] == [1, 1, 0]
    assert [reasons["waiting: N of N job slots busy"][i] for i in index] == [1, 0, 0]
    assert [reasons["waiting for cloud quota: N of N cores in use, job needs N"][i] for i in index] == [0, 1, 0]
    assert [s.label for s in views.timeline(job)[0]] == ["wait", "V"]


def test_without_a_token_the_page_is_read_only(web: Web) -> None:
    job = web.ids[2]
    assert "Cancel" not in web.get(f"/jobs/{job}") and "Sign in" not in web.get("/jobs")
    assert web.request("POST", f"/jobs/{job}/cancel", {"csrf": "x"})[0] == 403
    assert web.request("POST", f"/api/jobs/{job}/cancel", headers={"Authorization": "Bearer "})[0] == 403
    assert web.sent == []


def test_with_a_token_an_action_needs_a_session_and_its_csrf_token(web_with_token: Web) -> None:
    web = web_with_token
    running = web.ids[2]
    assert "Cancel" not in web.get(f"/jobs/{running}")  # not signed in
    assert web.request("POST", "/login", {"token": "wrong"})[0] == 403
    status, headers, _ = web.request("POST", "/login", {"token": "s3cret-token"})
    assert status == 303 and "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    cookie = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
    page = web.get(f"/jobs/{running}", headers=cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"><button id="cancel"', page)
    assert csrf
    assert web.request("POST", f"/jobs/{running}/cancel", {"csrf": "0" * 64}, cookie)[0] == 403
    assert web.request("POST", f"/jobs/{running}/cancel", {"csrf": csrf.group(1)})[0] == 403  # no session
    assert web.request("POST", f"/jobs/{running}/cancel", {"csrf": csrf.group(1)},
                       {**cookie, "Origin": "http://evil.example"})[0] == 403
    assert web.sent == []
    status, headers, _ = web.request("POST", f"/jobs/{running}/cancel", {"csrf": csrf.group(1)}, cookie)
    assert status == 303 and headers["location"] == f"/jobs/{running}"
    assert web.sent == [("cancel_job", running)]
    status, _, _ = web.request("POST", f"/api/jobs/{web.ids[1]}/restart",
                               headers={"Authorization": "Bearer s3cret-token"})
    assert status == 202 and web.sent[-1] == ("restart_job", web.ids[1])
    sent = len(web.sent)  # a command the daemon would refuse (restart of a finished job) is not published
    status, _, body = web.request("POST", f"/api/jobs/{web.ids[0]}/restart",
                                  headers={"Authorization": "Bearer s3cret-token"})
    assert status == 409 and len(web.sent) == sent and "restart_job" in str(body), body
    assert "s3cret-token" not in web.get(f"/jobs/{running}", headers=cookie)
    stale = {"Cookie": "lando_session=" + web.server.RequestHandlerClass.app.new_session(time.time() - 13 * 3600)}
    assert web.request("POST", f"/jobs/{running}/cancel", {"csrf": csrf.group(1)}, stale)[0] == 403


def test_pages_forbid_framing_and_foreign_scripts(web: Web) -> None:
    _, headers, _ = web.request("GET", "/jobs")
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    status, headers, _ = web.request("GET", "/static/uPlot.iife.min.js")
    assert status == 200 and "javascript" in headers["content-type"]
    assert web.request("GET", "/static/../app.py")[0] == 404


def test_a_running_jobs_log_tail_is_read_from_its_vm_dir(web: Web, tmp_path: Path) -> None:
    running = web.jobs[web.ids[2]]
    store = open_store(web.config.store_url)
    work = tmp_path / "vm-work"
    run = work / f"lando-job-{running.id}" / "run"
    run.mkdir(parents=True)
    (run / "stderr").write_text("\x1b[1;30mINFO\x1b[0m [job count] start\n")

    old_docs = tmp_path / "out" / "docs" / "logs"
    old_docs.mkdir(parents=True)
    (old_docs / "cwltool-output.log").write_text("INFO the run before the restart\n")

    def on_vm(j: Job) -> None:
        assert j.vm is not None
        j.vm.work_dir, j.output_dir = str(work), str(tmp_path / "out")

    store.update(running.id, on_vm)
    store.close()
    log = web.api(f"/api/jobs/{running.id}/log")
    assert log["live"] is True and log["log"] == "INFO [job count] start\n" and 'class="attempt"' in log["timeline"]
    (run / "stderr").write_text("INFO [job count] start\nINFO [job count] completed success\n")
    assert "completed success" in web.api(f"/api/jobs/{running.id}/log")["log"]


def test_a_step_begun_in_one_state_and_continued_in_another_is_one_segment() -> None:
    job = made_job("boot", "ann", JobState.RUNNING, minutes_ago=5)
    t = job.created
    job.history = [HistoryEntry(t, JobState.STARTING, JobStep.CREATE_VM),
                   HistoryEntry(t + timedelta(seconds=3), JobState.RUNNING, JobStep.CREATE_VM),
                   HistoryEntry(t + timedelta(seconds=10), JobState.RUNNING, JobStep.STAGING)]
    [attempt] = views.timeline(job, at=t + timedelta(seconds=12))
    assert [(s.label, s.seconds, s.running) for s in attempt] == [("V", 10.0, False), ("S", 2.0, True)]


def test_lando_ssh_web_serves_the_page_from_the_store_alone_until_sigterm(lando: Any) -> None:
    lando.submit(WORKFLOWS / "no_inputs.cwl", None, "--name", "just-stored")
    proc = lando.popen("web", "--listen", "127.0.0.1:0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/jobs")
        listed = json.loads(conn.getresponse().read())
        assert [j["name"] for j in listed["jobs"]] == ["just-stored"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_web_listen_that_is_not_host_port_is_refused_in_one_sentence(lando: Any) -> None:
    proc = lando.cli("web", "--listen", "localhost")
    assert proc.returncode == 2 and "web.listen must be HOST:PORT" in proc.stderr


def test_a_job_stored_after_the_list_was_read_shows_once_it_is_read_again(web: Web,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from lando_ssh.web import app

    assert web.api("/api/jobs")["total"] == 5
    assert web.api("/api/plots?period=day")["jobs_by_state"]["waiting"][-1] == 1
    store = open_store(web.config.store_url)
    store.create(made_job("late", "dan", JobState.STARTING, minutes_ago=0))
    store.close()
    assert web.api("/api/jobs")["total"] == 5  # within LIST_TTL: the list as read
    monkeypatch.setattr(app, "LIST_TTL", 0.0)
    deadline = time.monotonic() + 30
    while web.api("/api/jobs")["total"] != 6:  # served as read while it is read again in the background
        assert time.monotonic() < deadline, "the jobs list was not read again"
        time.sleep(0.05)
    assert web.api("/api/plots?period=day")["jobs_by_state"]["waiting"][-1] == 2


def test_a_running_jobs_log_is_read_over_ssh_where_its_vm_disk_is_not_on_this_host(
        lando: Any, daemon: Any, tmp_path: Path) -> None:
    from conftest import finished, send, wait_job

    from lando_ssh.cwllog import CwltoolLog
    from lando_ssh.journal import Journal

    order = tmp_path / "sleep.yml"
    order.write_text("seconds: 300\n")
    job_id = lando.submit(WORKFLOWS / "sleep.cwl", order)
    daemon.start()
    send(lando, "start_job", job_id)
    wait_job(lando, job_id, lambda j: j.state.value == "R" and j.step.value == "R", daemon=daemon)
    store = open_store(lando.config().store_url)
    tails = CwltoolLog(lando.config(), Journal(store), local_disk=False)  # as where the VM's disk is elsewhere
    try:
        deadline = time.monotonic() + 120
        while "sleep $0" not in (text := tails.tail(store.get(job_id))):
            assert time.monotonic() < deadline, f"the log over SSH is still {text!r}"
            time.sleep(0.2)
        lines = tails.lines(store.get(job_id))  # as `lando-ssh logs --follow` reads it: whole lines, then the new
        assert any("sleep $0" in line for line in lines) and text.startswith(lines[0])
        assert tails.lines(store.get(job_id), after=len(lines)) == []  # nothing new while it sleeps
        assert tails.lines(store.get(job_id), after=1) == lines[1:]
    finally:
        tails.close()
        store.close()
        send(lando, "cancel_job", job_id)
        wait_job(lando, job_id, finished, daemon=daemon)


def test_a_real_jobs_secret_input_its_key_and_the_token_appear_in_no_page(lando: Any, tmp_path: Path) -> None:
    secret, token = "hunter2-real-secret", "web-token-not-shown"  # noqa: S105 (a test's own)
    lando.settings["web"] = {"token": token}
    lando.write_config()
    order = tmp_path / "secret.yml"
    order.write_text(f"password: {secret}\nuser: ann\n")
    job_id = lando.submit(WORKFLOWS / "variety" / "secret.cwl", order, "--name", "secretive")
    lando.cli("job", str(job_id), check=True)
    config = lando.config()
    server = start_web_server(config, "127.0.0.1:0", send=lambda command, job: None)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
        shown = {}
        for path in ("/jobs", "/api/jobs", f"/jobs/{job_id}", f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/log",
                     "/vms", "/api/vms", "/plots", "/api/plots?period=day", "/login"):
            conn.request("GET", path)
            response = conn.getresponse()
            shown[path] = response.read().decode()
            assert response.status == 200, (path, shown[path][:300])
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(shown[f"/api/jobs/{job_id}"])["state"] == "F"
    assert "wc -c" in json.loads(shown[f"/api/jobs/{job_id}/log"])["log"]  # its log is shown
    for path, text in shown.items():
        assert secret not in text and token not in text and "PRIVATE KEY" not in text, path
    assert "(secret)" in shown[f"/jobs/{job_id}"]
