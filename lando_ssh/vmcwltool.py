"""cwltool as a job runs it on the VM (this file is sent with the job as `bin/lando_vmcwltool.py`, and
`lando-cwltool` runs it with the Python of the VM's cwltool; standard library only, cwltool imported when run):

    python3 lando_vmcwltool.py JOBDIR SCHEMAS CWLTOOL [ARG...]

is cwltool's own main (CWLTOOL is its console script) with two things added:

- the CWL schemas the server's cwltool loaded (SCHEMAS/<versions>/, see `schemacache`), when they are of this
  cwltool's versions: one load of the schemas serves the server and every VM (~0.45 s a run). Then the
  document is not validated again either (cwltool's `--disable-validate`: no schema check, static check or
  jshint run): the server validated it at submit with a cwltool of these very versions (~0.25 s a run for a
  tool with JavaScript);
- the CWL spec's rule on output links, which cwltool applies only inside a container: "It is an error if a
  symlink in the output directory (or any symlink in a chain of links) refers to any file or directory that is
  not under an input or output directory." A workflow output that is, or holds, a link leading out of JOBDIR
  (the job's staged inputs, scratch and outputs) fails the run, with cwltool's exit code for a failed workflow.
"""
from __future__ import annotations

import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    job_dir, schemas, cwltool_path, args = argv[0], argv[1], argv[2], argv[3:]
    import cwltool.main
    import lando_schemacache  # type: ignore[import-not-found]  # beside this file on the VM

    directory = os.path.join(schemas, lando_schemacache.versions_tag())
    if os.path.isdir(directory):
        lando_schemacache.install(directory)
        args = ["--disable-validate", *args]  # validated on the server by this cwltool's twin
    refuse_links_out_of(job_dir)
    sys.argv = [cwltool_path, *args]
    return cwltool.main.run()


def refuse_links_out_of(job_dir: str) -> None:
    """Make cwltool fail a workflow whose final outputs hold a symbolic link that leads out of `job_dir`."""
    import cwltool.executors
    from cwltool.errors import WorkflowException

    relocate = cwltool.executors.relocateOutputs
    top = os.path.realpath(job_dir)

    def checked(output: Any, *args: Any, **kwargs: Any) -> Any:
        for path in _local_paths(output):
            link = _link_out_of(path, top)
            if link is not None:
                raise WorkflowException(f"the output {os.path.basename(path)} is a symbolic link to {link}, outside "
                                        "the workflow's inputs and outputs, which the CWL spec makes an error")
        return relocate(output, *args, **kwargs)

    cwltool.executors.relocateOutputs = checked  # type: ignore[assignment]


def _local_paths(value: Any) -> list[str]:
    """The local paths of every File and Directory in an output object (listings and secondaryFiles included)."""
    from urllib.parse import unquote, urlsplit

    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            location = item.get("location")
            if item.get("class") in ("File", "Directory") and isinstance(location, str) \
                    and location.startswith("file://"):
                found.append(unquote(urlsplit(location).path))
            stack.extend(item.values())
    return found


def _link_out_of(path: str, top: str) -> str | None:
    """Where `path` leads when it is a symbolic link (or a chain of them) to something that exists outside `top`."""
    if not os.path.islink(path):
        return None
    real = os.path.realpath(path)
    if not os.path.exists(real) or real == top or real.startswith(top + os.sep):
        return None
    return real


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
