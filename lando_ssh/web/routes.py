"""Which page or JSON answers which request. Each page's data has a JSON twin under /api/ holding the
same objects `lando-ssh status --json` prints for jobs."""
from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING

from lando_ssh.commands.status import Drivers
from lando_ssh.model import ACTIVE_STATES, Job, Verdict, command_verdict
from lando_ssh.web import pages, views

if TYPE_CHECKING:
    from lando_ssh.web.app import Handler, StatusApp

Params = dict[str, list[str]]
ACTIONS = {"cancel": "cancel_job", "restart": "restart_job"}


def route(h: Handler, method: str, path: str, params: Params) -> None:
    from lando_ssh.web.app import HttpError

    if method == "POST":
        return _post(h, path)
    if path in ("/", ""):
        return h.redirect("/jobs")
    if path.startswith("/static/"):
        return h.static(path[len("/static/"):])
    if path == "/login":
        return h.html(pages.login_page() if h.app.token else
                      pages.error_page(404, "this status page is read-only: web.token is not set"))
    if path == "/jobs":
        query = views.JobQuery.from_params(params)
        jobs = h.app.jobs()
        owners = sorted({j.user for j in jobs if j.user})
        projects = sorted({p for j in jobs if (p := views.project_of(j))})
        return h.html(pages.jobs_page(views.select(jobs, query), query, owners, projects, h.app.listed_age()))
    if path == "/api/jobs":
        query = views.JobQuery.from_params(params)
        page = views.select(h.app.jobs(), query)
        drivers = Drivers(h.app.config)  # (the kernel's lock table, read once a request)
        return h.json({"total": page.total, "page": page.page, "pages": page.pages, "per_page": query.per_page,
                       "jobs": [status_object(h.app.job(j.id), drivers) for j in page.jobs]})  # whole
    if m := re.fullmatch(r"/jobs/(\d+)", path):
        job = h.app.job(int(m.group(1)))
        cookie = h.cookie()
        can_act = h.app.session_ok(cookie)
        return h.html(pages.job_page(job, status_object(job, Drivers(h.app.config)), views.timeline(job),
                                     can_act=can_act,
                                     csrf=h.app.csrf_for(cookie), log=h.app.logs.tail(job)))
    if m := re.fullmatch(r"/api/jobs/(\d+)", path):
        return h.json(status_object(h.app.job(int(m.group(1))), Drivers(h.app.config)))
    if m := re.fullmatch(r"/api/jobs/(\d+)/log", path):
        job = h.app.job(int(m.group(1)))
        return h.json({"id": job.id, "state": job.state.value, "step": job.step.value,
                       "live": job.state in ACTIVE_STATES, "log": h.app.logs.tail(job),
                       "timeline": pages.timeline_html(views.timeline(job))})
    if path == "/vms":
        jobs = h.app.jobs()
        return h.html(pages.vms_page(views.vms_view(jobs), h.app.listed_age()))
    if path == "/api/vms":
        return h.json(views.vms_view(h.app.jobs()))
    if path == "/plots":
        name = (params.get("period") or ["week"])[0]
        views.period(name, *_since_until(params))  # a bad period is told here, not by the script
        return h.html(pages.plots_page(name, *(params.get(k, [""])[0] for k in ("since", "until"))))
    if path == "/api/plots":
        key = tuple((params.get(k) or [""])[0] for k in ("period", "since", "until"))
        since, until = views.period(key[0] or "week", *_since_until(params))
        return h.json(h.app.plots(key, since, until))
    raise HttpError(HTTPStatus.NOT_FOUND, f"no page {path}")


def _since_until(params: Params) -> tuple[views.datetime | None, views.datetime | None]:
    return (views.parse_when((params.get("since") or [""])[0], "since"),
            views.parse_when((params.get("until") or [""])[0], "until"))


def status_object(job: views.Job, drivers: Drivers) -> dict[str, object]:
    from lando_ssh.commands.status import status_object as of

    return of(job, drivers)


def _post(h: Handler, path: str) -> None:
    from lando_ssh.web.app import COOKIE, SESSION_SECONDS, HttpError

    app = h.app
    if not app.token:
        raise HttpError(HTTPStatus.FORBIDDEN, "this status page is read-only: web.token is not set")
    if m := re.fullmatch(r"/api/jobs/(\d+)/(cancel|restart)", path):
        auth = h.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not app.token_ok(auth[len("Bearer "):]):
            raise HttpError(HTTPStatus.UNAUTHORIZED, "send the web.token as Authorization: Bearer TOKEN")
        job = app.job(int(m.group(1)))
        _send(app, ACTIONS[m.group(2)], job)
        return h.json({"sent": ACTIONS[m.group(2)], "job": job.id}, HTTPStatus.ACCEPTED)
    _same_origin(h)
    form = h.form()
    if path == "/login":
        if not app.token_ok(form.get("token", "")):
            return h.html(pages.login_page("that is not the token"), HTTPStatus.FORBIDDEN)
        session = f"{COOKIE}={app.new_session()}; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict; Path=/"
        return h.redirect("/jobs", {"Set-Cookie": session})
    cookie = h.cookie()
    if not app.session_ok(cookie):
        raise HttpError(HTTPStatus.FORBIDDEN, "sign in with the token first")
    if not app.csrf_for(cookie) or form.get("csrf") != app.csrf_for(cookie):
        raise HttpError(HTTPStatus.FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page")
    if path == "/logout":
        return h.redirect("/jobs", {"Set-Cookie": f"{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"})
    if m := re.fullmatch(r"/jobs/(\d+)/(cancel|restart)", path):
        job = app.job(int(m.group(1)))
        _send(app, ACTIONS[m.group(2)], job)
        return h.redirect(f"/jobs/{job.id}")
    raise HttpError(HTTPStatus.NOT_FOUND, f"no action {path}")


def _same_origin(h: Handler) -> None:
    """A browser's form post names where it comes from: it must be this page (defense beside the CSRF token)."""
    from lando_ssh.web.app import HttpError

    origin = h.headers.get("Origin")
    host = h.headers.get("Host")
    if origin and origin != "null" and host and origin.split("://", 1)[-1] != host:
        raise HttpError(HTTPStatus.FORBIDDEN, f"a form from {origin} may not act here")


def _send(app: StatusApp, command: str, job: Job) -> None:
    """Publish `command` unless the daemon would refuse it for the job's state (the rule `lando-ssh send` keeps:
    model.command_verdict): a refused one is a 409 with the daemon's sentence, never a dead letter."""
    from lando_ssh.web.app import HttpError

    verdict, why = command_verdict(command, job)
    if verdict == Verdict.REFUSE:
        raise HttpError(HTTPStatus.CONFLICT, why)
    app.send(command, job.id)
