"""The status page in a real browser (Debian's headless Chromium, driven by Selenium through the system
chromedriver; `scripts/browser` installs them) against `lando-ssh run` serving it while it runs real jobs
on the local cloud with one job slot: the pages render, every filter works, a running job's log updates
without a reload, the plots draw from the jobs' records (the queue and what it waited for, the VMs' boot
times among them), the VMs page shows a job waiting and why, no console errors, and only a signed-in
admin may cancel and restart (a script with the token may too). Fails (never skips) when the browser
cannot start. With LANDO_SCREENSHOTS=DIR, each page's screenshot is saved there too (docs/status-page/)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, send, store_job, wait_job

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-token"  # noqa: S105 (a test's own)
WAIT = 120.0  # seconds any one condition may take (a busy 2-core machine)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), f"{path} is missing: run scripts/browser (apt-get install chromium " \
                                         f"chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1300,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(what: str, condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception as e:  # noqa: BLE001 (a page in the middle of changing: ask again)
            value, last = None, e
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so within {timeout:.0f}s" + (f" ({last})" if last else ""))
        time.sleep(0.2)


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def shot(driver: Any, tmp_path: Path, name: str) -> None:
    """The page as far down as it goes (within 3,000 pixels)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1300, min(3000, max(800, height + 200)))  # (the window's own frame is in its size)
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    driver.set_window_size(1300, 1000)
    if os.environ.get("LANDO_SCREENSHOTS"):
        Path(os.environ["LANDO_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(os.environ["LANDO_SCREENSHOTS"]) / f"{name}.png")


def as_job_source_names_it(lando: Lando, job_id: int, owner: str, project: str) -> None:
    """The owner and project a job source (bespin-api) gives a job: submit names the local user and none."""
    from lando_ssh.store import open_store

    def name(job: Any) -> None:
        job.user, job.facts["project"] = owner, project

    store = open_store(lando.config().store_url)
    try:
        store.update(job_id, name)
    finally:
        store.close()


@pytest.mark.timeout(900)  # five real jobs, one slot, on a busy 2-core machine
def test_the_status_page_of_a_daemon_running_real_jobs_in_a_browser(lando: Lando, daemon: Daemon, browser: Any,
                                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    began = datetime.now(UTC)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # one job slot: the jobs started while one runs wait in the queue, and say why
    lando.settings["web"] = {"listen": f"127.0.0.1:{port}", "token": TOKEN}
    lando.settings["limits"] = {"max_concurrent_jobs": 1}
    lando.write_config()
    short = tmp_path / "short.yml"
    short.write_text(yaml.safe_dump({"seconds": 20}))  # time to load its page while it runs
    long = tmp_path / "long.yml"
    long.write_text(yaml.safe_dump({"seconds": 600}))
    done = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml", "--name", "counting")
    as_job_source_names_it(lando, done, "ann", "genomics")
    failing = lando.submit(WORKFLOWS / "fail.cwl", None, "--name", "exploding")
    sleeper = lando.submit(WORKFLOWS / "sleep.cwl", short, "--name", "sleeping")
    daemon.start()
    until("the status page answers", lambda: urllib.request.urlopen(base + "/jobs", timeout=10).status == 200)
    send(lando, "start_job", sleeper)
    running = wait_job(lando, sleeper, lambda j: j.state.value == "R" and j.step.value == "R", daemon=daemon)
    assert running.vm is not None

    # a running job's page: its log grows in place (the page is not loaded again)
    browser.get(f"{base}/jobs/{sleeper}")
    try:
        until("the job page shows the workflow's start in its log",
              lambda: "sleep" in browser.find_element(By.ID, "log").get_attribute("textContent"))
    except AssertionError:
        print(browser.page_source[:5000], browser.get_log("browser"), urllib.request.urlopen(
            f"{base}/api/jobs/{sleeper}/log").read()[:3000])
        raise
    assert "Final process status" not in browser.find_element(By.ID, "log").get_attribute("textContent")
    browser.execute_script("window.notReloaded = true")
    shot(browser, tmp_path, "job-running")
    for job_id in (done, failing):  # they wait for the one slot
        send(lando, "start_job", job_id)
    until("the log shows the end of the workflow without a reload",
          lambda: "Final process status is success" in browser.find_element(By.ID, "log").get_attribute("textContent"))
    assert browser.execute_script("return window.notReloaded === true")
    until("the timeline shows the finished job", lambda: browser.find_element(By.ID, "state").text.startswith(
        "finished") or "F" in browser.find_element(By.CSS_SELECTOR, "#state code").text)
    wait_job(lando, done, finished, daemon=daemon)
    wait_job(lando, failing, finished, daemon=daemon)

    # the jobs table and its filters: state, owner, project, name, time
    def listed() -> list[int]:
        return [int(r.get_attribute("data-job")) for r in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]

    def reloaded(path: str) -> bool:  # the jobs list a page shows may be a few seconds old
        browser.get(base + path)
        return True

    def apply(**fields: str) -> None:
        from selenium.webdriver.support.ui import Select

        for name, value in fields.items():
            field = browser.find_element(By.NAME, name)
            if field.tag_name == "select":
                Select(field).select_by_visible_text(value)
            else:  # (a datetime input's typing depends on the locale)
                browser.execute_script("arguments[0].value = arguments[1]", field, value)
        browser.find_element(By.ID, "apply").click()

    until("the jobs table lists every job, newest first, when it was read again",
          lambda: reloaded("/jobs") and listed() == [sleeper, failing, done]
          and "error" in browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{failing}']").text)
    shot(browser, tmp_path, "jobs")
    browser.find_element(By.CSS_SELECTOR, "input[name=state][value=E]").click()
    browser.find_element(By.ID, "apply").click()
    until("the state filter leaves the failed job", lambda: listed() == [failing])
    for fields, expected in (({"name": "count"}, [done]), ({"owner": "ann"}, [done]),
                             ({"project": "genomics"}, [done]),
                             ({"since": began.strftime("%Y-%m-%dT%H:%M")}, [sleeper, failing, done]),
                             ({"until": began.strftime("%Y-%m-%dT%H:%M")}, [])):  # submitted before the test: none
        browser.get(f"{base}/jobs")
        apply(**fields)
        until(f"the filter {fields} leaves {expected}", lambda e=expected: listed() == e)  # type: ignore[misc]
        assert browser.current_url.startswith(f"{base}/jobs?")

    # a failed job: every step of its attempt, the error, the wait for the slot
    browser.get(f"{base}/jobs/{failing}")
    assert "explode" in browser.find_element(By.ID, "error").text
    segments = [s.text for s in browser.find_elements(By.CSS_SELECTOR, ".gantt .seg")]
    assert {"wait", "V", "S", "R"} <= set(segments) and segments[-1] == "E", segments
    assert "job slots busy" in browser.find_element(By.ID, "timeline").text
    shot(browser, tmp_path, "job-failed")

    # plots drawn from these jobs' records, over the test's own minutes (a day's samples are half an hour apart)
    since = (began - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    data = json.loads(urllib.request.urlopen(f"{base}/api/plots?period=custom&since={since}", timeout=60).read())
    assert max(data["queue"]["length"]) >= 1, data["queue"]  # the two jobs that waited for the slot
    assert any("job slots busy" in why and max(n) >= 1 for why, n in data["queue"]["reasons"].items()), data["queue"]
    assert data["boot"]["n_active"] == data["boot"]["n_ssh"] == 3, data["boot"]  # one VM a job, each seen boot
    browser.get(f"{base}/plots?period=custom&since={since}")
    until("the plots are drawn", lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-plotted"))
    drawn = {chart: browser.find_element(By.ID, chart) for chart in
             ("jobs_by_state", "queue", "jobs_ended", "vms", "core_hours_by_project", "core_hours_by_owner",
              "step_seconds", "boot")}
    for chart, element in drawn.items():
        assert element.get_attribute("data-drawn"), chart
        assert element.find_element(By.TAG_NAME, "canvas").size["width"] > 100, chart
    assert int(drawn["queue"].get_attribute("data-drawn")) == 1 + len(data["queue"]["reasons"])  # the length too
    assert drawn["boot"].get_attribute("data-drawn") == "2"  # to ACTIVE, to SSH
    assert "genomics" in drawn["core_hours_by_project"].text and "ann" in drawn["core_hours_by_owner"].text
    shot(browser, tmp_path, "plots")

    # the VMs page: the VM a long job holds, and a job waiting behind it, and why
    blocker = lando.submit(WORKFLOWS / "sleep.cwl", long, "--name", "to-cancel")
    send(lando, "start_job", blocker)
    wait_job(lando, blocker, lambda j: j.state.value == "R" and j.step.value == "R", daemon=daemon)
    queued = lando.submit(WORKFLOWS / "upper_count.cwl", WORKFLOWS / "upper_count.yml", "--name", "queued")
    send(lando, "start_job", queued)
    wait_job(lando, queued, lambda j: j.state.value == "S" and "job slots busy" in j.reason, daemon=daemon)
    until("the VMs page lists the running job's VM and the job waiting behind it",
          lambda: reloaded("/vms") and str(blocker) in browser.find_element(By.ID, "vms").text
          and "job slots busy" in browser.find_element(By.ID, "waiting").text)
    assert "busy" in browser.find_element(By.ID, "vms").text
    shot(browser, tmp_path, "vms")

    # the token gates actions: the long job is canceled only once signed in
    browser.get(f"{base}/jobs/{blocker}")
    assert browser.find_elements(By.ID, "cancel") == []
    refused = urllib.request.Request(f"{base}/api/jobs/{blocker}/cancel", method="POST")
    with pytest.raises(urllib.error.HTTPError) as no_token:
        urllib.request.urlopen(refused, timeout=30)
    assert no_token.value.code == 401
    browser.find_element(By.ID, "signin-link").click()
    browser.find_element(By.ID, "token").send_keys("not the token")
    browser.find_element(By.ID, "signin").click()
    until("a wrong token is refused", lambda: "not the token" in browser.find_element(By.CLASS_NAME, "error").text)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "signin").click()
    until("signed in", lambda: browser.find_elements(By.ID, "signout"))
    browser.get(f"{base}/jobs/{blocker}")
    browser.find_element(By.ID, "cancel").click()
    job = wait_job(lando, blocker, finished, daemon=daemon)
    assert job.state.value == "C"
    assert wait_job(lando, queued, finished, daemon=daemon).state.value == "F"  # the slot it waited for
    # restarted from its page, then canceled again by a script with the token
    until("the canceled job's page offers a restart",
          lambda: reloaded(f"/jobs/{blocker}") and browser.find_elements(By.ID, "restart"))
    browser.find_element(By.ID, "restart").click()
    wait_job(lando, blocker, lambda j: j.state.value == "R" and j.step.value == "R", daemon=daemon)
    request = urllib.request.Request(f"{base}/api/jobs/{blocker}/cancel", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert urllib.request.urlopen(request, timeout=30).status == 202
    assert wait_job(lando, blocker, finished, daemon=daemon).state.value == "C"
    assert store_job(lando, done).state.value == "F"

    errors = [e for e in console_errors(browser) if "/login" not in e]  # the wrong token's 403 is expected
    assert errors == []
