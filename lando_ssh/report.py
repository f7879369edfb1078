"""What lando-ssh writes beside a job's results in `docs/` (`lando-docs/` when the workflow has an output
named `docs`): README.md (what ran, when, on what), `logs/job-data.json` (the job record) and
`logs/usage.json` (times and peak memory)."""
from __future__ import annotations

import json
import re
import shlex
from datetime import datetime
from typing import Any

from lando_ssh.model import Job

_CWLTOOL_VERSION = re.compile(r"cwltool (\d[\w.+-]*)")


def usage_from(raw: dict[str, str]) -> dict[str, Any]:
    """The run's usage from what lando-runner recorded on the VM."""
    started, finished = raw.get("started") or None, raw.get("finished") or None
    wall = None
    if started and finished:
        wall = (_parse(finished) - _parse(started)).total_seconds()
    rss = raw.get("maxrss_kb", "").strip()
    code = raw.get("exit_code", "").strip()
    return {"started": started, "finished": finished, "wall_seconds": wall,
            "peak_memory_kb": int(rss) if rss.isdigit() else None,
            "exit_code": int(code) if code.lstrip("-").isdigit() else None}


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def cwltool_version(log_text: str) -> str | None:
    m = _CWLTOOL_VERSION.search(log_text[:2000])
    return m.group(1) if m else None


def docs_files(job: Job, usage: dict[str, Any], cwltool: str | None = None) -> dict[str, bytes]:
    """lando's own files in a job's docs dir (the VM's lando-organize made the rest): README.md, the job's
    record, its usage; `cwltool`: the version that ran the workflow, when known."""
    record = job.to_dict()
    record.pop("workflow_doc", None)  # the workflow itself is in docs/scripts
    record["job_order"] = job.public_job_order()
    files = {
        "README.md": readme(job, usage, cwltool).encode(),
        "logs/job-data.json": json.dumps(record, indent=2).encode(),
        "logs/usage.json": json.dumps(usage, indent=2).encode(),
    }
    methods = job.facts.get("methods_document")  # bespin-api's workflow methods document (markdown), as lando wrote it
    if isinstance(methods, str) and methods.strip():
        files["Methods.md"] = methods.encode()
    return files


def readme(job: Job, usage: dict[str, Any], cwltool: str | None) -> str:
    vm = job.vm
    lines = [
        f"# {job.name or 'Job ' + str(job.id)}",
        "",
        f"These results were produced by lando-ssh job {job.id}, running the CWL workflow "
        f"`{job.workflow}` with cwltool{' ' + cwltool if cwltool else ''}.",
        *_workflow_source_lines(job.facts.get("workflow_source")),
        *_share_group_lines(job.facts.get("share_group")),
        "",
        "## When and where",
        "",
        f"- submitted: {job.created.isoformat(timespec='seconds')}",
        f"- workflow started: {usage.get('started') or 'unknown'}",
        f"- workflow finished: {usage.get('finished') or 'unknown'}",
    ]
    if usage.get("wall_seconds") is not None:
        lines.append(f"- wall time: {usage['wall_seconds']:.0f} s")
    if usage.get("peak_memory_kb"):
        lines.append(f"- peak memory of the largest process: {usage['peak_memory_kb'] / 1024:.0f} MiB")
    if vm:
        lines.append(f"- VM: {vm.name} (flavor {vm.flavor or 'unknown'}"
                     f"{f', {vm.vcpus} vCPUs' if vm.vcpus else ''}"
                     f"{f', {vm.ram_mb} MB RAM' if vm.ram_mb else ''})")
    lines += _command_lines(job.facts.get("commands"))
    docs = job.facts.get("docs_dir") or "docs"  # lando-docs when the workflow has an output named docs
    lines += [
        "",
        "## Inputs",
        "",
        *[f"- `{name}`: {_describe(value)}" for name, value in sorted(job.public_job_order().items())],
        "",
        "## What is here",
        "",
        f"- the workflow's outputs, beside this `{docs}/` directory",
        f"- `{docs}/scripts/`: the workflow (packed into one document) and the job order as run",
        f"- `{docs}/logs/cwltool-output.log`: cwltool's log; `cwltool-output.json`: its output object",
        f"- `{docs}/logs/job-data.json`: the job record; `{docs}/logs/usage.json`: times and memory",
        "",
    ]
    return "\n".join(lines)


def ran_commands(commands: Any) -> list[tuple[str, str]]:
    """The commands the VM ran (a job's `commands` fact), in order: (what it was, the command line) -- the
    workflow's (its own arguments follow), and lando's pre- and post-process."""
    if not isinstance(commands, dict):
        return []
    ran = []
    for key, what in (("cwl_pre_process_command", "before the workflow, in the results dir"),
                      ("cwl_base_command", "the workflow, with its outdir, workflow and job order after it"),
                      ("cwl_post_process_command", "after the workflow, in the results dir")):
        argv = commands.get(key)
        if isinstance(argv, list) and argv:
            ran.append((what, shlex.join(str(a) for a in argv)))
    return ran


def _command_lines(commands: Any) -> list[str]:
    return [f"- ran {what}: `{line}`" for what, line in ran_commands(commands)]


def _describe(value: Any) -> str:
    if isinstance(value, dict) and value.get("class") in ("File", "Directory"):
        return f"{value['class']} {value.get('location') or value.get('path') or value.get('basename', '')}"
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value[:10]) + (", ..." if len(value) > 10 else "") + "]"
    text = json.dumps(value)
    return text if len(text) < 200 else text[:200] + "..."


def _workflow_source_lines(record: Any) -> list[str]:
    """What exactly ran: the URL it resolved to, the git commit, the checksums (workflow.source_record)."""
    if not isinstance(record, dict) or not record:
        return []
    kind = record.get("kind")
    if kind == "git":
        where = f"git repository `{record.get('repository')}`, ref `{record.get('ref')}` at commit " \
                f"`{record.get('commit')}`, file `{record.get('path')}`"
    elif kind == "zip":
        where = f"file `{record.get('path')}` in the zip archive `{record.get('resolved_url') or record.get('url')}` " \
                f"(archive sha256 `{record.get('sha256')}`)"
    elif kind == "url":
        where = f"`{record.get('resolved_url') or record.get('url')}`"
    else:
        where = f"`{record.get('path')}`"
    digest = record.get("workflow_sha256") or (record.get("sha256") if kind != "zip" else None)
    return ["", f"Workflow source: {where}" + (f", sha256 `{digest}`." if digest else ".")]


def _share_group_lines(record: Any) -> list[str]:
    """Who the results are meant for: the job source's share group (bespin-api's; lando shared its DukeDS output
    project with its members, lando-ssh grants nobody access), as the bespin store recorded it, or why it could
    not be read."""
    if not isinstance(record, dict) or not record:
        return []
    lines = ["", "## Share group", ""]
    if record.get("error"):
        reason = str(record["error"]).splitlines()[0]
        return lines + [f"The job's share group (bespin-api share group {record.get('id')}) could not be read, so "
                        f"who these results are meant for is not known: {reason}"]
    name = f"**{record.get('name') or record.get('id')}**"
    contact = f" (contact: {record['email']})" if record.get("email") else ""
    granted = ("lando-ssh has not given anyone access to them: the results are in this directory, readable by "
               "whoever can read it.")
    users = [u for u in record.get("users") or [] if isinstance(u, dict)]
    if not users:
        return lines + [f"The job names the bespin-api share group {name}{contact}, which has no members. {granted}"]
    lines.append(f"The job names the bespin-api share group {name}{contact}, whose members are listed below "
                 f"(lando shared its results with them in DukeDS). {granted}")
    lines.append("")
    for user in users:
        label = user.get("name") or user.get("username") or user.get("email") or user.get("dds_id")
        details = [f"{what} {user[key]}" for key, what in (("username", "username"), ("email", "email"),
                                                           ("dds_id", "DukeDS user"))
                   if user.get(key) and user[key] != label]
        lines.append(f"- {label}" + (f" ({', '.join(details)})" if details else ""))
    return lines
