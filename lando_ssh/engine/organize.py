"""Step o: organize the output. The post-process command (if any) runs in the results dir; lando-organize
lays out the run's logs and docs; the output object, the run's figures and the results' sizes come back
in the same round trip."""
from __future__ import annotations

import json
import os
import posixpath
from typing import Any

from lando_ssh import outputs, report
from lando_ssh.errors import WorkflowFailed
from lando_ssh.journal import recording

from .run import ANSI, STDERR_TAIL_LINES
from .runtime import Runtime


def organize_output(rt: Runtime, job_id: int, *, post_process: bool = True) -> None:
    job = rt.journal.get(job_id)
    paths = rt.paths(job)
    remote = rt.remote(job)
    post = rt.command(job, "cwl_post_process_command") if post_process else []
    if post:  # a broken output object stops the job before the post-process command runs
        _output_object(remote.run(["cat", posixpath.join(paths.run, "stdout")],
                                  what="reading the output object").stdout)
        remote.run(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", paths.results, *post],
                   what="the post-process command")
    # organize, then read back the output object, the run's facts, cwltool's stderr tail and the results'
    # sizes (for the store step that follows): one round trip
    token = os.urandom(16).hex()
    organize = ["sh", "-c", _ORGANIZE_AND_REPORT, "sh", posixpath.join(paths.bin, "lando-organize"),
                paths.job_dir, token, str(STDERR_TAIL_LINES), posixpath.join(paths.bin, "lando-sizes"),
                paths.docs if outputs.docs_apart(job) else ""]
    parts = _report_parts(remote.run(organize, what="organizing output").stdout, token)
    output = _output_object(parts.get("stdout", ""))
    docs_dir = parts.get("docs_dir", "").strip() or "docs"  # lando-docs when the workflow has a docs output
    usage = report.usage_from({f: parts.get(f, "").strip()
                               for f in ("started", "finished", "maxrss_kb", "exit_code")})
    version = report.cwltool_version(ANSI.sub("", parts.get("stderr-tail", "")))
    printed = bool(parts.get("stdout", "").strip())  # (cwltool prints none when it fails before any output)
    rt.journal.update(job_id, recording(vm_output=output, docs_dir=docs_dir, usage=usage, cwltool_version=version,
                                        output_printed=printed))
    rt.result_sizes[job_id] = parts.get("sizes", "")


# sh -c: lando-organize JOBDIR [DOCSDIR], then each of the run's files after a line "TOKEN NAME"
_ORGANIZE_AND_REPORT = (
    'sh "$1" "$2" ${6:+"$6"} || exit; printf "\\n%s stdout\\n" "$3"; cat "$2/run/stdout" 2>/dev/null; '
    # the one-line files by the shell's own read: a process less each
    'for f in started finished maxrss_kb exit_code docs_dir; do printf "\\n%s %s\\n" "$3" "$f"; v=; '
    '[ -r "$2/run/$f" ] && { IFS= read -r v < "$2/run/$f" || :; }; printf "%s\\n" "$v"; done; '
    'printf "\\n%s stderr-tail\\n" "$3"; tail -n "$4" "$2/run/stderr" 2>/dev/null; '
    'printf "\\n%s sizes\\n" "$3"; exec sh "$5" "$2/results"')


def _report_parts(text: str, token: str) -> dict[str, str]:
    parts = {}
    for chunk in text.split(f"\n{token} ")[1:]:
        name, _, body = chunk.partition("\n")
        parts[name] = body
    return parts


def _output_object(raw: str) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        raise WorkflowFailed("cwltool's output object is not valid JSON: " + raw[:500]) from None
