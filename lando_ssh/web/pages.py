"""The status page's HTML: each page a function of what views.py computed. Every value from a job goes
through `e()` (HTML-escaped); nothing here reads the store or the config."""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

from lando_ssh.cwllog import error_without_log
from lando_ssh.model import ACTIVE_STATES, RESTARTABLE_STATES, Job, JobState
from lando_ssh.report import ran_commands
from lando_ssh.web import views
from lando_ssh.web.views import STATE_WORDS, STEP_WORDS, JobQuery, Page, Segment, row

#: the plots page's charts: (element id, title)
PLOTS = (("jobs_by_state", "Jobs by state"), ("queue", "The queue: jobs waiting, by what they wait for"),
         ("jobs_ended", "Jobs ended"), ("vms", "VMs held"),
         ("core_hours_by_project", "Core-hours per project per day"),
         ("core_hours_by_owner", "Core-hours per owner per day"),
         ("step_seconds", "Step durations (median, 90th percentile, longest)"),
         ("boot", "VM boot: seconds from asking to ACTIVE, and to answering SSH"))
STEP_COLORS = {"wait": "#e6e6e6", "V": "#8e7cc3", "S": "#6fa8dc", "R": "#93c47d", "o": "#ffd966", "O": "#f6b26b",
               "T": "#b7b7b7"}


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


WHO = "<!--who-->"  # where the app puts its sign-in or sign-out control, when actions are enabled


def layout(title: str, body: str, *, active: str = "", scripts: Iterable[str] = ()) -> str:
    nav = "".join(f'<a href="{href}"{" class=here" if key == active else ""}>{label}</a>'
                  for key, href, label in (("jobs", "/jobs", "Jobs"), ("vms", "/vms", "VMs"),
                                           ("plots", "/plots", "Plots")))
    nav += WHO
    tags = "".join(f'<script defer src="/static/{name}"></script>' for name in scripts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - lando-ssh</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="/static/style.css"><link rel="icon" href="data:,">{tags}</head>'
            f'<body><nav><b>lando-ssh</b>{nav}</nav><main><h1>{e(title)}</h1>{body}</main></body></html>')


def state_cell(r: dict[str, Any]) -> str:
    step = f' &middot; {e(r["step_words"])}' if r["step_words"] else ""
    code = r["state"] + (r["step"] or "")
    return f'<span class="st st-{e(r["state"])}">{e(r["state_words"])}</span>{step} <code>{e(code)}</code>'


def _age(seconds: float) -> str:
    return f' <small class="age">(as read {duration(seconds)} ago)</small>' if seconds >= 1 else ""


def jobs_page(page: Page, query: JobQuery, owners: list[str], projects: list[str], age: float = 0.0) -> str:
    checks = "".join(f'<label><input type="checkbox" name="state" value="{s.value}"'
                     f'{" checked" if s.value in query.states else ""}> {e(STATE_WORDS[s])}</label>'
                     for s in JobState)
    filters = (f'<form id="filters" method="get" action="/jobs"><fieldset>{checks}</fieldset>'
               f'{_select("owner", query.owner, owners)}{_select("project", query.project, projects)}'
               f'<label>name <input name="name" value="{e(query.name)}"></label>'
               f'<label>submitted since <input name="since" type="datetime-local" value="{e(_minute(query.since))}">'
               f'</label><label>until <input name="until" type="datetime-local" value="{e(_minute(query.until))}">'
               f'</label><small>(UTC)</small>'
               f'<button id="apply">Filter</button> <a href="/jobs">clear</a></form>')
    rows = "".join(
        f'<tr data-job="{r["id"]}"><td><a href="/jobs/{r["id"]}">{r["id"]}</a></td><td>{e(r["name"])}</td>'
        f'<td>{e(r["owner"])}</td><td>{e(r["project"])}</td><td>{state_cell(r)}</td>'
        f'<td>{e(when(r["created"]))}</td><td class="num">{duration(r["elapsed"])}</td><td>{e(r["reason"])}</td></tr>'
        for r in map(row, page.jobs))
    table = (f'<p id="total">{page.total} jobs{_age(age)}</p><table id="jobs"><thead><tr><th>id</th>'
             f'<th>name</th><th>owner</th><th>project</th><th>state</th><th>submitted</th><th>elapsed</th><th>reason</th></tr></thead>'
             f'<tbody>{rows}</tbody></table>{_pager(page, query)}')
    return layout("Jobs", filters + table, active="jobs")


def _minute(t: datetime | None) -> str:
    """A time as a datetime-local input shows it (UTC, to the minute)."""
    return t.strftime("%Y-%m-%dT%H:%M") if t else ""


def _select(name: str, chosen: str, values: list[str]) -> str:
    opts = "".join(f'<option{" selected" if v == chosen else ""}>{e(v)}</option>' for v in values)
    return f'<label>{name} <select name="{name}"><option value="">any</option>{opts}</select></label>'


def _pager(page: Page, query: JobQuery) -> str:
    if page.pages <= 1:
        return ""
    params = [("state", s) for s in query.states] + [(k, v) for k, v in (
        ("owner", query.owner), ("project", query.project), ("name", query.name),
        ("since", _minute(query.since)), ("until", _minute(query.until))) if v]

    def link(n: int, label: str) -> str:
        qs = urllib.parse.urlencode([*params, ("page", str(n))])
        return f'<a href="/jobs?{e(qs)}" rel="{label}">{label}</a>'

    prev = link(page.page - 1, "prev") if page.page > 1 else ""
    nxt = link(page.page + 1, "next") if page.page < page.pages else ""
    return f'<p class="pager">{prev} page {page.page} of {page.pages} {nxt}</p>'


def job_page(job: Job, status: dict[str, Any], attempts: list[list[Segment]], *, can_act: bool,
             csrf: str, log: str) -> str:
    r = row(job)
    facts = job.facts
    parts = [f'<p id="state">{state_cell(r)} &middot; submitted {e(when(job.created))} by {e(job.user or "-")}'
             f' &middot; elapsed {duration(r["elapsed"])}</p>',
             f'<p>workflow <code>{e(job.workflow)}</code></p>']
    if job.reason:
        parts.append(f'<p id="reason"><b>reason:</b> {e(job.reason)}</p>')
    if job.error:  # (the tail of the log it quotes is shown below, in the log)
        error = error_without_log(job.error) if log else job.error
        parts.append(f'<details open id="error"><summary>error</summary><pre>{e(error)}</pre></details>')
    if can_act:
        parts.append(_actions(job, csrf))
    parts.append(f'<h2>Timeline</h2><div id="timeline">{timeline_html(attempts)}</div>')
    parts.append(f'<h2>cwltool log</h2><pre id="log" data-job="{job.id}" '
                 f'data-live="{"1" if job.state in ACTIVE_STATES else "0"}">{e(log)}</pre>')
    parts.append("<h2>VM</h2>" + _vm_html(status.get("vm"), status.get("past_vms") or []))
    parts.append("<h2>Outputs</h2>" + _outputs_html(job))
    ran = ran_commands(facts.get("commands"))
    items = "".join(f"<li>{e(what)}: <code>{e(line)}</code></li>" for what, line in ran)
    parts.append(f'<h2>Commands</h2><ul id="commands">{items}</ul>' if ran else
                 "<h2>Commands</h2><p>none yet (recorded when the workflow starts on the VM)</p>")
    parts.append('<h2>Usage</h2><div id="usage">' + _table(views.job_usage(job).items()) + "</div>")
    parts.append(f'<h2>Inputs</h2><pre id="inputs">{e(json.dumps(status["job_order"], indent=2))}</pre>'
                 f'<p><a href="/api/jobs/{job.id}">as JSON</a></p>')
    return layout(f"Job {job.id}: {job.name}", "".join(parts), active="jobs", scripts=["job.js"])


def _actions(job: Job, csrf: str) -> str:
    buttons = []
    if job.state not in (JobState.FINISHED, JobState.CANCELED, JobState.CANCELING, JobState.DELETED):
        buttons.append("cancel")
    if job.state in RESTARTABLE_STATES:
        buttons.append("restart")
    forms = "".join(f'<form method="post" action="/jobs/{job.id}/{b}"><input type="hidden" name="csrf" '
                    f'value="{e(csrf)}"><button id="{b}">{b.capitalize()}</button></form>' for b in buttons)
    return f'<div class="actions">{forms}</div>' if forms else ""


def timeline_html(attempts: list[list[Segment]]) -> str:
    if not attempts:
        return "<p>no history</p>"
    out = []
    for n, segments in enumerate(attempts, 1):
        total = sum(s.seconds for s in segments) or 1.0
        bar = "".join(f'<span class="seg seg-{e(s.label)}" style="flex-grow:{max(s.seconds / total, 0.005):.4f};'
                      f'background:{STEP_COLORS.get(s.label, "#ddd")}" title="{e(s.words)} {duration(s.seconds)}">'
                      f'{e(s.label)}</span>' for s in segments)
        rows = "".join(f'<tr><td><code>{e(s.label)}</code> {e(s.words)}</td><td>{e(when(s.started))}</td>'
                       f'<td class="num">{duration(s.seconds)}{" (now)" if s.running else ""}</td>'
                       f'<td>{e(s.note)}</td></tr>' for s in segments)
        out.append(f'<div class="attempt"><h3>attempt {n}</h3><div class="gantt">{bar}</div>'
                   f'<table class="steps"><tbody>{rows}</tbody></table></div>')
    return "".join(out)


def _vm_html(vm: dict[str, Any] | None, past: list[dict[str, Any]]) -> str:
    if not vm and not past:
        return "<p>none yet</p>"
    lines = []
    for v, what in [*(([(vm, "current")]) if vm else []), *((p, "earlier") for p in past)]:
        where = f'{v.get("address")}:{v.get("port")}' if v.get("address") else "no address"
        gone = f', deleted {v["deleted"]}' if v.get("deleted") else ""
        boot = _vm_boot(v)
        lines.append(f'<li>{e(what)}: <b>{e(v.get("name"))}</b> ({e(v.get("flavor") or "flavor unknown")}, '
                     f'{e(where)}, asked for {e(v.get("created"))}{e(boot)}{e(gone)})</li>')
    return f'<ul id="vm">{"".join(lines)}</ul>'


def _vm_boot(vm: dict[str, Any]) -> str:
    """", ACTIVE after 20.1s, SSH after 31s" of a VM record (as JSON) that lando-ssh saw boot."""
    from lando_ssh.model import parse_time

    created, active, ready = (parse_time(vm.get(k)) for k in ("created", "active", "ready"))
    if created is None or active is None:
        return ""
    ssh = f", SSH after {duration((ready - created).total_seconds())}" if ready else ""
    return f", ACTIVE after {duration((active - created).total_seconds())}{ssh}"


def _outputs_html(job: Job) -> str:
    if not job.output:
        return f"<p>none yet (they go to <code>{e(job.output_dir)}</code>)</p>"
    items = []
    for name, value in sorted(job.output.items()):
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict) and v.get("class") in ("File", "Directory"):
                items.append(f"<li>{e(name)}: {_file_html(v)}</li>")
            else:
                items.append(f"<li>{e(name)}: <code>{e(json.dumps(v))}</code></li>")
    return f'<p>in <code>{e(job.output_dir)}</code></p><ul id="outputs">{"".join(items)}</ul>'


LISTED = 100  # entries of a Directory output shown (deeper levels and the rest are counted)


def _file_html(v: dict[str, Any], depth: int = 0) -> str:
    """A File or Directory output: its path and size; a Directory's listing, two levels deep."""
    size = f' {v["size"]} bytes' if isinstance(v.get("size"), int) else ""
    where = v.get("basename") if depth else v.get("path") or v.get("location")
    out = f'{e(v.get("class"))} <code>{e(where or v.get("basename"))}</code>{e(size)}'
    extra = [s for s in v.get("secondaryFiles") or [] if isinstance(s, dict)]
    listing = [x for x in v.get("listing") or [] if isinstance(x, dict)] if depth < 2 else []
    if extra:
        out += " with " + ", ".join(f'<code>{e(s.get("basename") or s.get("path"))}</code>' for s in extra)
    if listing:
        shown = "".join(f"<li>{_file_html(x, depth + 1)}</li>" for x in listing[:LISTED])
        more = f"<li>and {len(listing) - LISTED} more</li>" if len(listing) > LISTED else ""
        out += f'<ul class="listing">{shown}{more}</ul>'
    return out


def _table(pairs: Iterable[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in pairs) + "</table>"


def vms_page(view: dict[str, Any], age: float = 0.0) -> str:
    vms = "".join(
        f'<tr><td>{e(v["name"])}</td><td>{e(v["state"])}</td><td><a href="/jobs/{v["job"]}">{v["job"]}</a></td>'
        f'<td><code>{e(v["job_state"] + v["job_step"])}</code></td><td>{e(_flavor(v))}</td>'
        f'<td>{e(v["address"] or "-")}{":" + e(v["port"]) if v["address"] else ""}</td>'
        f'<td class="num">{duration(v["age_seconds"])}</td>'
        f'<td class="num">{_boot(v["boot_seconds"], v["ssh_seconds"])}</td></tr>'
        for v in view["vms"])
    queue = "".join(
        f'<tr><td><a href="/jobs/{w["id"]}">{w["id"]}</a></td><td>{e(w["name"])}</td><td>{e(w["owner"])}</td>'
        f'<td>{e(when(w["since"]))}</td><td class="num">{duration(w["waiting_seconds"])}</td>'
        f'<td>{e(w["reason"] or "about to start")}</td></tr>' for w in view["waiting"])
    body = (f'<p>From the job records{_age(age)}: the VMs our jobs hold (their own and those kept after an '
            f'error) and the jobs waiting, longest first.</p><h2>VMs we hold ({len(view["vms"])})</h2>'
            f'<table id="vms"><thead><tr><th>name</th><th>state</th><th>job</th>'
            f'<th>job state</th><th>flavor</th><th>address</th><th>age</th><th>boot (ACTIVE, SSH)</th></tr></thead>'
            f'<tbody>{vms}</tbody></table>'
            f'<h2>Jobs waiting ({len(view["waiting"])})</h2><table id="waiting"><thead><tr><th>id</th><th>name</th>'
            f'<th>owner</th><th>since</th><th>waiting</th><th>why</th></tr></thead><tbody>{queue}</tbody></table>')
    return layout("VMs and the queue", body, active="vms")


def _flavor(vm: dict[str, Any]) -> str:
    return f'{vm["flavor"] or "?"} ({vm["vcpus"]} vCPUs)' if vm["vcpus"] else str(vm["flavor"] or "?")


def _boot(active: float | None, ssh: float | None) -> str:
    if active is None:
        return "-"
    return f"{duration(active)}, {duration(ssh)}" if ssh is not None else f"{duration(active)}, -"


def plots_page(period: str, since: str, until: str) -> str:
    choices = "".join(f'<option{" selected" if p == period else ""}>{p}</option>'
                      for p in ("day", "week", "month", "custom"))
    form = (f'<form id="period" method="get" action="/plots"><label>period <select name="period">{choices}'
            f'</select></label> <label>since <input type="datetime-local" name="since" value="{e(_local(since))}">'
            f'</label> <label>until <input type="datetime-local" name="until" value="{e(_local(until))}"></label> '
            f'<button>Show</button> <small>(UTC; since and until for a custom period)</small></form>')
    charts = "".join(f'<section class="plot"><h2>{title}</h2><div id="{key}" class="chart"></div></section>'
                     for key, title in PLOTS)
    return layout("Plots", form + charts, active="plots", scripts=["uPlot.iife.min.js", "plots.js"]).replace(
        '<link rel="icon"', '<link rel="stylesheet" href="/static/uPlot.min.css"><link rel="icon"', 1)


def who(signed_in: bool, csrf: str) -> str:
    if signed_in:
        return (f'<form method="post" action="/logout" class="who"><input type="hidden" name="csrf" '
                f'value="{e(csrf)}"><button id="signout">Sign out</button></form>')
    return '<a class="who" id="signin-link" href="/login">Sign in</a>'


def _local(when: str) -> str:
    """A since/until value as a datetime-local input shows it (YYYY-MM-DDTHH:MM)."""
    if not when:
        return ""
    return when[:16] if "T" in when else when[:10] + "T00:00"


def login_page(error: str = "") -> str:
    msg = f'<p class="error">{e(error)}</p>' if error else ""
    return layout("Sign in", f'{msg}<form method="post" action="/login"><label>token <input type="password" '
                             f'name="token" id="token" autocomplete="current-password"></label> '
                             f'<button id="signin">Sign in</button></form>'
                             f'<p>The token is <code>web.token</code> in the daemon\'s config.</p>')


def error_page(status: int, message: str) -> str:
    return layout(f"{status}", f'<p class="error">{e(message)}</p>')


__all__ = ["STEP_WORDS", "e", "error_page", "job_page", "jobs_page", "login_page", "plots_page", "vms_page"]
