"""The `lando-ssh` command. A contract: scripts and other tools drive it (see DESIGN.md).

Exit codes: 0 success; 1 the job failed or was canceled; 2 bad usage or bad input; 3
infrastructure unavailable. Errors go to stderr as one readable sentence.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import getpass
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from lando_ssh.commands import pool as pool_commands
from lando_ssh.commands import queue as queue_commands
from lando_ssh.commands import status as status_commands
from lando_ssh.commands import vm as vm_commands
from lando_ssh.commands import web as web_commands
from lando_ssh.commands.common import EXIT_BAD_INPUT, EXIT_JOB_FAILED, EXIT_OK, journal_of
from lando_ssh.config import Config, load_config
from lando_ssh.errors import BadInput, BrokerUnavailable, JobConflict, LandoError
from lando_ssh.model import Job, JobState, JobStep, VmSpec, now

if TYPE_CHECKING:
    from lando_ssh.runner_args import RunnerArgs

log = logging.getLogger("lando_ssh")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's usage errors exit 2, as ours do, in one sentence
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CONFIG_HELP = "YAML config file (default: $LANDO_CONFIG, /etc/lando_config.yml, built-in)"
LOG_LEVEL_HELP = "override the config's log_level: DEBUG, INFO, WARNING or ERROR"


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"a log level is one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return text.upper()


class _Unused:
    """Stands for a subcommand's parser that this command line does not need (it takes and ignores the
    definition): building all fourteen costs every command ~8 ms."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `only`, just that subcommand is defined (the rest are not needed to parse)."""
    from lando_ssh import __version__

    p = _Parser(prog="lando-ssh", description="Run CWL workflows on per-job VMs, driven over SSH.")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--log-level", type=_log_level, help=LOG_LEVEL_HELP)
    p.add_argument("--version", action="version", version=f"lando-ssh {__version__}",
                   help="print lando-ssh's version and exit")
    subparsers = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                  help="what to do; `lando-ssh COMMAND --help` tells more")

    def command(name: str, **kwargs: Any) -> Any:
        if only not in (None, name):
            return _Unused()
        s = subparsers.add_parser(name, description=kwargs.get("help"), **kwargs)
        if name != "cwl-runner":  # (its words after the workflow are the workflow's inputs, as cwltool reads them)
            # after the subcommand too; SUPPRESS: absent unless given there, so the one before it stays
            s.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
            s.add_argument("--log-level", type=_log_level, default=argparse.SUPPRESS, help=LOG_LEVEL_HELP)
        return s

    s = command("submit", help="validate a workflow and job order, store the job, print its id")
    _job_options(s)
    s.add_argument("--start", action="store_true", help="also send start_job to the daemon")
    s.add_argument("--cwltool-option", action="append", default=[], metavar="OPT",
                   help="one of cwltool's run options for the VM's cwltool, e.g. --relax-path-checks or "
                        "--on-error=continue (repeatable)")

    s = command("job", help="run job N in the foreground, without the broker")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id (from submit)")

    s = command("cwl-runner", help="submit and run in one go; print the CWL output object like cwltool",
                usage="lando-ssh cwl-runner [options] WORKFLOW [JOB_ORDER | -] [WORKFLOW INPUTS AS --NAME VALUE]")
    s.add_argument("--outdir", help="where the outputs go (default: the current directory)")
    s.add_argument("--output-url", metavar="URL", help="send the outputs from the VM to an object store instead: "
                                                        "swift://CONTAINER/PREFIX/ or s3://BUCKET/PREFIX/")
    s.add_argument("--project", help="the project the job is for: its object-store credentials when "
                                      "object_store.projects names it (docs/object-storage.md), and its usage")
    s.add_argument("--write-summary", "-w", metavar="FILE", help="write the output object to FILE instead of stdout")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr, only warnings and errors")
    s.add_argument("--debug", action="store_true", help="also given to the VM's cwltool")
    s.add_argument("--name", help="a name for the job (default: the workflow's file name)")
    s.add_argument("--flavor", help="VM flavor (default: vm.flavor in the config)")
    s.add_argument("--image", help="VM image (default: vm.image in the config)")
    s.add_argument("--volume-size", type=_gigabytes, metavar="GB", help="data volume in GB (default: vm.volume_size)")
    _source_options(s)
    s.add_argument("workflow", nargs="?", help="a CWL workflow or tool (path or URL); after it the job order "
                                               "and/or the workflow's inputs as --NAME VALUE")

    s = command("status", help="one job or all")
    s.add_argument("job_id", nargs="?", type=int, metavar="N", help="one job's details (default: a table of all)")
    s.add_argument("--json", action="store_true", help="JSON: one object, or a list of all jobs")
    s.add_argument("--state", action="append", choices=[state.value for state in JobState],
                   help="only jobs in this state code (repeatable)")

    s = command("logs", help="cwltool's log and the job's history")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id")
    s.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new history entries and log lines until the job ends")
    s.add_argument("--tail", type=_count, metavar="LINES", help="only the last LINES lines of cwltool's log")

    s = command("ssh", help="a shell (or one command) on job N's VM, with its key and pinned host key")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="a command line for the VM's shell instead of a shell (the words joined, as ssh does)")

    s = command("run", help="the daemon: serve start_job/cancel_job/restart_job from RabbitMQ until SIGTERM")

    s = command("send", help="publish one command to the daemon's queue")
    s.add_argument("message", metavar="MESSAGE", choices=["start_job", "cancel_job", "restart_job"],
                   help="start_job, cancel_job or restart_job")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id")

    s = command("dead-letters", help="the messages the daemon could not serve, and why; --requeue sends one again")
    s.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    s.add_argument("--requeue", metavar="ID", help="move dead letter ID back to the work queue (once its cause is "
                                                    "fixed)")

    s = command("cloud-check", help="boot the smallest allowed flavor, run uname and cwltool on it, delete it")
    s.add_argument("--image", help="the image to boot (default: vm.image)")
    s.add_argument("--flavor", help="the flavor to boot (default: the smallest allowed)")
    s.add_argument("--json", action="store_true", help="what was checked and found, as one JSON object")

    s = command("delete-vm", help="delete the VM an ended job kept for debugging (keep_vm_on_error)")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id")

    s = command("set-output-dir", help="give a failed or canceled job another output directory (new or empty); "
                                       "resuming it (`job N`, `send restart_job N`) stores its results there")
    s.add_argument("job_id", type=int, metavar="N", help="the job's id")
    s.add_argument("dir", metavar="DIR", help="the new output directory: new, or empty (for a cwl-runner job's, any)")

    s = command("vms", help="every VM this installation owns, with the pool's state and use of each")
    s.add_argument("--json", action="store_true", help="a JSON list instead of a table")

    s = command("drain", help="place no new job on a pool VM; the pool deletes it once its jobs are done")
    s.add_argument("vm", metavar="VM", help="the VM's name, pool id or cloud id (as `vms` lists them)")

    s = command("sweep", help="delete resources tagged as ours that no live job owns")
    s.add_argument("--dry-run", action="store_true",
                   help="only list what would be deleted (VMs, volumes, floating IPs, ports, keys) and what is spared")
    s.add_argument("--grace", type=float, metavar="SECONDS",
                   help="spare younger orphans, listing them with their age (default: sweep.grace)")
    s.add_argument("--json", action="store_true", help="print the list as JSON (one object per resource)")

    s = command("usage", help="VM-hours and core-hours per user, project, workflow, flavor or day, or per job")
    s.add_argument("--since", help="a date (2025-01-31[T08:00]) or an age (30d, 12h); default: the start")
    s.add_argument("--until", help="a date or an age; default: now")
    s.add_argument("--by", choices=["user", "project", "workflow", "flavor", "day"], default="user",
                   help="what a row sums (day: UTC days; default: user)")
    s.add_argument("--jobs", action="store_true", help="one line per job, like Slurm's sacct, instead of sums")
    s.add_argument("--pool", action="store_true",
                   help="the pool VMs' hours by user or project: jobs' shares and idle time apart (vm-pool.md)")
    s.add_argument("--csv", action="store_true", help="CSV: a header, then one row per group or job (no total)")
    s.add_argument("--json", action="store_true", help="JSON: a list of groups or jobs (no total)")

    s = command("web", help="serve the status page from the store alone (no daemon needed) until SIGTERM")
    s.add_argument("--listen", metavar="HOST:PORT", help="default: web.listen, else 127.0.0.1:8080")
    return p


def _count(text: str) -> int:
    """A number of lines: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a number of lines is a whole number, 0 or more, not {text!r}")
    return int(text)


def _gigabytes(text: str) -> int:
    """A volume size: a whole number of GB, 0 for none."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a volume size is a whole number of GB, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a volume size cannot be negative ({value})")
    return value


def _command_word(argv: list[str]) -> str | None:
    """The subcommand argv names, when it is one (else None: the whole parser, for help and errors)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("--config", "--log-level"):
            i += 2
            continue
        if word.startswith("-"):
            if word.startswith(("--config=", "--log-level=")):
                i += 1
                continue
            return None  # -h, or an unknown option: let argparse say it
        return word if word in COMMANDS else None
    return None


def _source_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--git", metavar="REPO", help="take the workflow from this git repository (URL or path); "
                                                  "then the only positional argument is the job order")
    s.add_argument("--ref", help="with --git: the branch, tag or commit (default: the repository's HEAD)")
    s.add_argument("--path", help="with --git or a zip archive URL: the workflow's path inside it (e.g. dir/wf.cwl)")


def _source_options_first(args: list[str]) -> list[str]:
    """--git/--ref/--path moved before the positionals: argparse cannot give `WF --path P JOB` its two
    optional positionals once an option splits them."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        key = args[i].split("=", 1)[0]
        if args[i] == "--":
            rest.extend(args[i:])
            break
        if key in ("--git", "--ref", "--path"):
            take = 1 if "=" in args[i] else 2
            moved.extend(args[i:i + take])
            i += take
            continue
        rest.append(args[i])
        i += 1
    return moved + rest


def _workflow_source(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(the workflow: a path, URL or WorkflowSource; the job order path) from the command's arguments."""
    from lando_ssh.workflow import WorkflowSource

    if args.git:
        if args.job_order is not None:
            raise BadInput("with --git the workflow comes from the repository: give only the job order")
        if not args.path:
            raise BadInput("--git needs --path, the workflow's path inside the repository")
        return WorkflowSource(args.git, "git", path=args.path, ref=args.ref), args.workflow
    if not args.workflow:
        raise BadInput("name a workflow (a path or URL), or --git REPO --path PATH")
    if args.ref:
        raise BadInput("--ref is only for --git")
    if args.path:
        return WorkflowSource(args.workflow, path=args.path), args.job_order
    return args.workflow, args.job_order


def _job_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("workflow", nargs="?", help="a CWL workflow or tool: a local path, or an http(s) URL to a CWL "
                                               "document or packed JSON (#main), or a zip archive URL with --path")
    s.add_argument("job_order", nargs="?", help="the job order (YAML/JSON); optional without required inputs")
    _source_options(s)
    s.add_argument("--name", help="a name for the job (default: the workflow's file name)")
    s.add_argument("--flavor", help="VM flavor (default: vm.flavor in the config)")
    s.add_argument("--image", help="VM image (default: vm.image in the config)")
    s.add_argument("--volume-size", type=_gigabytes, help="data volume in GB (default: vm.volume_size)")
    s.add_argument("--output-dir", help="where the results go (default: <output_dir>/job-N)")
    s.add_argument("--output-url", metavar="URL", help="send the results and docs from the VM to an object store "
                                                        "instead: swift://CONTAINER/PREFIX/ or s3://BUCKET/PREFIX/")
    s.add_argument("--project", help="the project the job is for: its object-store credentials when "
                                      "object_store.projects names it (docs/object-storage.md), and its usage")
    s.add_argument("--priority", type=int, default=0, help="higher starts first (default 0)")


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and _command_word(sys.argv[1:]) in ("job", "cwl-runner"):
        _end_process(code)
    return code


def _end_process(code: int) -> NoReturn:
    """End the process without tearing the interpreter down (~5 ms a job): what must run at exit does (the
    atexit functions: logging's flush, bespin-api's last changes), then the kernel frees the rest."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    word = _command_word(argv)  # the rewriting of cwl-runner's and submit's arguments below keeps it
    at = next((i for i, a in enumerate(argv) if a in ("submit", "cwl-runner") and (i == 0 or argv[i - 1] not in
                                                                                ("--config", "--log-level"))), None)
    runner = None
    if at is not None and argv[at] == "cwl-runner":  # also after --config FILE
        runner = _runner_args(argv[at + 1:])
        argv = [*argv[:at + 1], *runner.lando]
    elif at is not None:
        argv = [*argv[:at + 1], *_source_options_first(argv[at + 1:])]
    if from_command_line and word in ("job", "cwl-runner"):  # cwl-runner: cwltool's load too (~60 ms)
        _hold_gc()
    args = build_parser(word).parse_args(argv)
    if runner is not None:
        args.cwltool_args, args.inputs, args.job_order = runner.cwltool, runner.inputs, None
    try:
        config = load_config(args.config)
        if args.log_level:
            config.log_level = args.log_level
        _setup_logging(config, quiet=getattr(args, "quiet", False), foreground=args.command in ("job", "cwl-runner"))
        handler = COMMANDS[args.command]
        return handler(config, args)
    except LandoError as e:
        print(f"lando-ssh: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lando-ssh: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lando-ssh status | head`: the reader has all it wants; end as a SIGPIPE'd tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if from_command_line:  # the process ends next: spare its final garbage collection (~30-150 ms)
            gc.freeze()
        # a command that ends at once (an unknown job) must not exit while paramiko is still being imported in
        # the background: a daemon thread stopped inside a native module's import aborts the process (exit 134)
        for thread in threading.enumerate():
            if thread.name == "import-paramiko":
                thread.join(10)


def cwl_runner_main() -> int:
    """`lando-ssh-cwl-runner ARGS` is `lando-ssh cwl-runner ARGS`: one executable, for harnesses that take a
    runner's path (`cwltest --tool lando-ssh-cwl-runner`). Its config comes from $LANDO_CONFIG (or the
    usual places)."""
    sys.argv[1:1] = ["cwl-runner"]
    return main()


def _setup_logging(config: Config, quiet: bool = False, foreground: bool = False) -> None:
    level = logging.WARNING if quiet else getattr(logging, config.log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if foreground:  # the job's end is said once, by the command itself, with the whole error
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: not getattr(record, "job_outcome", False))
    for noisy in ("paramiko", "urllib3", "keystoneauth", "openstack", "cwltool", "salad"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # pika logs every failed connection as ERROR with a traceback; ours says it in one sentence
    logging.getLogger("pika").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def _runner_args(args: list[str]) -> RunnerArgs:
    """cwl-runner's words sorted the way cwltool reads them (see runner_args). A question for cwltool
    (`--validate`, `--pack`, `--version`...) is answered by the local cwltool, and this process ends."""
    from lando_ssh import runner_args

    try:
        split = runner_args.split(args)
    except runner_args.UsageError as e:
        print(f"lando-ssh: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    if split.question is not None:
        if any(w.split("=", 1)[0] in runner_args.SOURCE_OPTIONS for w in split.lando):
            print(f"lando-ssh: cwltool's {split.question} is answered by the local cwltool, which cannot read a "
                  "workflow from a git repository or an archive; fetch it and ask cwltool itself", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        sys.stdout.flush()
        beside = os.path.join(os.path.dirname(sys.executable), "cwltool")  # the one installed with lando-ssh
        cwltool = [beside] if os.access(beside, os.X_OK) else [sys.executable, "-m", "cwltool"]
        sys.exit(subprocess.run([*cwltool, *split.for_cwltool]).returncode)
    for key in split.ignored:
        print(f"lando-ssh: note: cwltool option {key} is not used by lando-ssh (the workflow runs on a VM)",
              file=sys.stderr)
    return split


# -- the stores and clouds a command needs -----------------------------------------------------
_journal = journal_of


# -- submit ------------------------------------------------------------------------------------
def submit_job(config: Config, workflow: Any, job_order: str | None, *, name: str | None = None,
               flavor: str | None = None, image: str | None = None, volume_size: int | None = None,
               output_dir: str | None = None, priority: int = 0, input_args: list[str] | None = None,
               cwltool_args: Sequence[str] = (), outputs_only: bool = False, output_url: str | None = None,
               project: str | None = None) -> Job:
    """Validate with cwltool, then store the job (state N). Nothing is stored when validation fails.

    `workflow` is a path, a URL, or a `workflow.WorkflowSource` (zip archive, git repository). The job
    order is the file `job_order` (`-`: standard input), and/or the workflow's inputs as options
    (`input_args`). `cwltool_args`: cwltool's run options, for the VM's cwltool (and the validation).
    `outputs_only`: the job writes its outputs alone into `output_dir`, which may hold anything (cwl-runner's);
    otherwise `output_dir` must be new or empty (lando-ssh never overwrites what it did not write).
    `output_url`: the outputs go from the VM to this swift:// or s3:// prefix instead (see objectstore).
    `project`: the job's project (a fact): its object-store credentials when object_store.projects names it."""
    from lando_ssh import outputs, schemacache
    from lando_ssh.workflow import LoadOptions, import_cwltool, prepare

    if output_url:
        from lando_ssh.objectstore.checks import check_output_url

        output_url = check_output_url(config, output_url, may_hold_objects=outputs_only, project=project)
    if output_dir and not outputs_only and not output_url:
        outputs.check_output_dir(os.path.abspath(output_dir))
    import_cwltool()
    schemacache.install(schemacache.schemas_dir(schemacache.root_in(config.data_dir)))  # ~0.5 s less, and the VM's
    prepared = prepare(workflow, job_order, input_args=input_args,
                       options=LoadOptions.from_cwltool_args(cwltool_args))
    from lando_ssh.objectstore.checks import check_inputs

    check_inputs(config, prepared.job_order, project)  # a swift:// or s3:// input needs its store configured here
    if prepared.odd_names and "--relax-path-checks" not in cwltool_args:  # names CWL allows, cwltool refuses
        cwltool_args = [*cwltool_args, "--relax-path-checks"]
    journal = _journal(config)
    if isinstance(workflow, str):
        source = workflow if "://" in workflow else os.path.abspath(workflow)
        default_name = os.path.splitext(os.path.basename(workflow.split("#", 1)[0]))[0]
    else:
        source = prepared.source
        default_name = os.path.splitext(os.path.basename((workflow.path or "").split("#", 1)[0]))[0]
    job = Job(id=0, name=name or default_name, workflow=source,
              facts={"workflow_source": prepared.source_record,
                     **({"cwltool_args": list(cwltool_args)} if cwltool_args else {}),
                     **({outputs.OUTPUTS_ONLY: True} if outputs_only else {}),
                     **({"output_url": output_url} if output_url else {}),
                     **({"project": project} if project else {})},
              job_order=prepared.job_order, workflow_doc=prepared.packed,
              vm_spec=VmSpec(flavor=flavor, image=image, volume_size=volume_size), priority=priority,
              user=_user(), output_dir=os.path.abspath(output_dir) if output_dir else "")
    from lando_ssh.vmspec import check_at_submit

    unchecked = check_at_submit(config, job)  # BadInput when the cloud says the job cannot have its VM
    if unchecked:
        print(f"lando-ssh: {unchecked}", file=sys.stderr)
    job.set_state(JobState.NEW, JobStep.NONE)
    job.history.clear()
    job = journal.store.create(job)

    def first_entry(j: Job) -> None:
        j.output_dir = j.output_dir or os.path.join(os.path.abspath(config.outputs_base), f"job-{j.id}")
        from lando_ssh.model import HistoryEntry

        j.history.append(HistoryEntry(now(), JobState.NEW, JobStep.NONE, "submitted"))

    return journal.update(job.id, first_entry)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def cmd_submit(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.runner_args import UsageError, run_options

    workflow, job_order = _workflow_source(args)
    try:
        options = run_options(args.cwltool_option)
    except UsageError as e:
        raise BadInput(str(e)) from None
    job = submit_job(config, workflow, job_order, name=args.name, flavor=args.flavor, image=args.image,
                     volume_size=args.volume_size, output_dir=args.output_dir, priority=args.priority,
                     cwltool_args=options, output_url=args.output_url, project=args.project)
    if args.start:
        from lando_ssh.broker import Broker
        from lando_ssh.messages import Command

        try:
            with Broker(config.work_queue) as broker:
                broker.send(Command.START_JOB, job.id)
                idle = queue_commands.no_consumer(broker)
        except BrokerUnavailable as e:
            print(job.id)  # the job is stored: scripts still learn its id
            raise BrokerUnavailable(f"job {job.id} is stored (state N) but was not started: {e}; start it later "
                                    f"with `lando-ssh send start_job {job.id}`") from None
        if idle:  # said on the job too, until a daemon takes the start_job
            why = f"start_job sent, but {idle}"
            _journal(config).update(job.id, lambda j: setattr(j, "reason", why))
            print(f"lando-ssh: warning: job {job.id}: {why}", file=sys.stderr)
    print(job.id)
    return EXIT_OK


# -- job: one job in the foreground ------------------------------------------------------------
class _Progress:
    """Progress on stderr: every state/step change and what the steps report (bytes staged...)."""

    def __init__(self, quiet: bool = False):
        self.started = time.monotonic()
        self.quiet = quiet

    def on_change(self, job: Job) -> None:
        from lando_ssh.model import STEP_NAMES

        what = STEP_NAMES.get(job.step, "")
        reason = f": {job.reason}" if job.reason else ""
        self._say(job.id, f"state {job.state.value} ({job.state.name.lower()})"
                          f"{f', step {job.step.value} ({what})' if job.step.value else ''}{reason}")

    def note(self, job_id: int, text: str) -> None:
        self._say(job_id, text)

    def _say(self, job_id: int, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:7.2f}s] job {job_id}: {text}", file=sys.stderr, flush=True)


def _hold_gc() -> None:
    """No garbage collections until the VM is up (`_release_gc`): the imports and the boot build much and
    leave little garbage, and collecting through them cost every job ~10 ms."""
    gc.disable()


def _release_gc(job: Job) -> None:
    """Collections again once the job is past its VM's boot, or waits (for quota: that may take hours)."""
    if not gc.isenabled() and (job.step not in (JobStep.NONE, JobStep.CREATE_VM) or job.reason):
        gc.freeze()  # what the start built lives as long as the process: never scanned again
        gc.enable()


def run_job_foreground(config: Config, job_id: int, *, quiet: bool = False) -> Job:
    """Run job `job_id` here and now; Ctrl-C cancels it cleanly (remote processes killed, VM deleted)."""
    from lando_ssh.admission import wait_for_room
    from lando_ssh.cloud import open_cloud
    from lando_ssh.engine import Engine
    from lando_ssh.engine.lease import Lease
    from lando_ssh.engine.restart import restart_due

    progress = _Progress(quiet)
    journal = _journal(config, [progress.on_change, _release_gc])
    job = journal.load(job_id)
    if job.state == JobState.FINISHED:
        progress.note(job_id, "already finished")
        return job
    if job.state == JobState.DELETED:
        raise JobConflict(f"job {job_id} was deleted")
    cloud = open_cloud(config)
    engine = Engine(config, journal, cloud, progress=progress.note)
    engine.hold(job_id)  # before anything changes: a daemon or another `lando-ssh job` here may be driving it
    lease = Lease(journal.store, f"cli:{socket.gethostname()}:{os.getpid()}", config.store.lease_ttl)
    if not lease.claim(job_id):  # a daemon sharing this store runs it
        engine.let_go(job_id)
        raise JobConflict(f"job {job_id} is being run by a lando-ssh server sharing this job store; "
                          f"see `lando-ssh status {job_id}`")
    if restart_due(job):
        progress.note(job_id, f"was {job.state.name.lower()}; restarting it")
    result: dict[str, Any] = {}

    def admit(j: int) -> None:  # limits.*, as the daemon keeps them (with the pool: its round, in step V)
        if engine.pool is None:
            wait_for_room(config, journal, cloud, j, engine.cancel_event)

    def drive() -> None:
        try:
            result.update(job=engine.drive(job_id, admit))
        except BaseException as e:  # said by the command, as a restart refused before the walk
            result.update(error=e)

    worker = threading.Thread(target=drive, name=f"job-{job_id}", daemon=True)
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        if engine.cancel_event.is_set():
            print("lando-ssh: still canceling: killing the workflow and deleting the VM", file=sys.stderr)
            return
        print(f"lando-ssh: canceling job {job_id} (the VM will be deleted)...", file=sys.stderr)
        engine.request_cancel()

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    renewed = time.monotonic()
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            if time.monotonic() - renewed > lease.ttl / 3:  # keep our claim while it runs
                lease.renew()
                renewed = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, previous)
        cloud.close()
        lease.release(job_id)
    if "error" in result:
        raise result["error"]
    return result.get("job") or journal.get(job_id)


def cmd_job(config: Config, args: argparse.Namespace) -> int:
    job = run_job_foreground(config, args.job_id)
    return _report_end(job)


def _report_end(job: Job, quiet: bool = False) -> int:
    if job.state == JobState.FINISHED:
        if not quiet:
            where = job.facts.get("output_url") or job.output_dir
            print(f"lando-ssh: job {job.id} finished; outputs are in {where}", file=sys.stderr)
        return EXIT_OK
    if job.state == JobState.CANCELED:
        print(f"lando-ssh: job {job.id} was canceled", file=sys.stderr)
        return EXIT_JOB_FAILED
    print(f"lando-ssh: job {job.id} failed: {job.error or job.reason}", file=sys.stderr)
    return EXIT_JOB_FAILED


# -- cwl-runner --------------------------------------------------------------------------------
def cmd_cwl_runner(config: Config, args: argparse.Namespace) -> int:
    outdir = os.path.abspath(args.outdir or os.getcwd())
    workflow, job_order = _workflow_source(args)
    input_args = None
    if args.inputs[:1] == ["-"]:  # cwltool's job order on standard input (inputs given after it override it)
        job_order, input_args = "-", args.inputs[1:] or None
    elif len(args.inputs) == 1 and not args.inputs[0].startswith("-"):  # (with --git too: see runner_args)
        job_order = args.inputs[0]
    elif args.inputs:
        input_args = args.inputs
    try:  # before a VM boots, not when its outputs have nowhere to go
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise BadInput(f"the output directory {outdir} cannot be created: {e.strerror}") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise BadInput(f"the output directory {outdir} is not writable")
    from lando_ssh.earlyvm import EarlyVm

    # the VM boots while cwltool validates; a refused workflow deletes it and is refused as ever (see earlyvm)
    early = EarlyVm.begin(config, VmSpec(flavor=args.flavor, image=args.image, volume_size=args.volume_size))
    try:
        job = submit_job(config, workflow, job_order, name=args.name, flavor=args.flavor, image=args.image,
                         volume_size=args.volume_size, output_dir=outdir, input_args=input_args,
                         cwltool_args=args.cwltool_args, outputs_only=True, output_url=args.output_url,
                         project=args.project)
    except BaseException:
        early.discard()
        raise
    early.hand_to(_journal(config), job)
    _hold_gc()  # cwltool's validation is behind us
    job = run_job_foreground(config, job.id, quiet=args.quiet)
    if job.state == JobState.FINISHED:
        _print_output(job.output or {}, args.write_summary)
        return EXIT_OK
    if job.run.partial_output and job.run.output_printed:
        _print_output(job.output or {}, args.write_summary)  # as cwltool does: what a failed run collected
    _report_end(job)
    code = job.run.exit_code
    return code if isinstance(code, int) and code not in (0,) and job.state == JobState.ERROR else EXIT_JOB_FAILED


def _print_output(output: dict[str, Any], summary: str | None) -> None:
    """The output object as cwltool prints it: on stdout, or with -w only into that file."""
    text = json.dumps(output, indent=4, ensure_ascii=False, default=str)
    if not summary:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(summary, "w") as f:
            f.write(text)
    except OSError as e:
        print(f"lando-ssh: the summary {summary} cannot be written: {e.strerror}", file=sys.stderr)


# -- the admin's tools -------------------------------------------------------------------------
def cmd_set_output_dir(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.outputs import set_output_dir

    job = set_output_dir(config, _journal(config), args.job_id, args.dir)
    kept = job.vm is not None and job.vm.id and not job.vm.deleted
    where = "from its kept VM" if kept and job.step.value in ("o", "O") else "when it has run again"
    print(f"lando-ssh: job {job.id}'s outputs go to {job.output_dir}; resume it with `lando-ssh job {job.id}` "
          f"(or `lando-ssh send restart_job {job.id}`): it stores its results there {where}", file=sys.stderr)
    return EXIT_OK


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.server import Server

    Server(config).serve()
    return EXIT_OK


def cmd_cloud_check(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.cloudcheck import cloud_check_command

    return cloud_check_command(config, args.image, args.flavor, args.json)


def cmd_sweep(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.sweep import sweep_command

    return sweep_command(config, args.dry_run, args.grace, args.json)


def cmd_usage(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.usage import usage_command

    if args.pool:
        return pool_commands.pool_usage_command(config, args.since, args.until, args.by,
                                                "csv" if args.csv else "json" if args.json else "")
    return usage_command(config, args.since, args.until, args.by, "csv" if args.csv else "json" if args.json else "",
                         jobs=args.jobs)


COMMANDS = {
    "cloud-check": cmd_cloud_check,
    "run": cmd_run,
    "send": queue_commands.cmd_send,
    "dead-letters": queue_commands.cmd_dead_letters,
    "submit": cmd_submit,
    "job": cmd_job,
    "cwl-runner": cmd_cwl_runner,
    "status": status_commands.cmd_status,
    "logs": status_commands.cmd_logs,
    "ssh": vm_commands.cmd_ssh,
    "delete-vm": vm_commands.cmd_delete_vm,
    "set-output-dir": cmd_set_output_dir,
    "vms": vm_commands.cmd_vms,
    "drain": pool_commands.cmd_drain,
    "sweep": cmd_sweep,
    "usage": cmd_usage,
    "web": web_commands.cmd_web,
}


if __name__ == "__main__":
    sys.exit(main())
