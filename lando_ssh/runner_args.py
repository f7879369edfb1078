"""`lando-ssh cwl-runner`'s command line, read the way cwltool reads its own.

cwltool's options come before the workflow; after it come the job order (a file, or `-` for
standard input) and the workflow's inputs as options (`--threads 4 --reads r.fq`). Each of
cwltool's options is one of:

- lando-ssh's own (`--outdir`, `--quiet`, `--write-summary`, ...): lando-ssh does what cwltool would;
- a run option (`--relax-path-checks`, `--enable-ext`, `--parallel`, ...): it changes how the
  workflow runs, so it goes to the cwltool on the VM (and shapes the validation on the server);
- a local question (`--validate`, `--pack`, `--print-deps`, `--version`, ...): nothing runs,
  so the local cwltool answers it, as it would;
- meaningless here (a path on the server for cwltool's scratch or cache, provenance, ...):
  ignored with a note, since the run happens on a VM and lando-ssh keeps its own records;
- a partial run (`--target`, `--single-step`, `--single-process`): refused.

Pure logic: `split` only sorts the words; nothing is read or run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: lando-ssh's own options, with a value (cwltool's and those that only lando-ssh has)
LANDO_WITH_VALUE = frozenset({"--outdir", "--write-summary", "-w", "--name", "--flavor", "--image", "--volume-size",
                              "--git", "--ref", "--path", "--output-url", "--project"})
#: lando-ssh's own flags; --debug also goes to the VM's cwltool
LANDO_FLAGS = frozenset({"--quiet", "--debug"})
#: where the workflow comes from: after the workflow they are still lando-ssh's for an archive or repository
SOURCE_OPTIONS = ("--git", "--ref", "--path")

#: cwltool's options that change a run: given to the cwltool on the VM, after cwl_base_command
RUN_FLAGS = frozenset({
    "--parallel", "--skip-schemas", "--enable-dev", "--enable-ext", "--disable-validate", "--fast-parser",
    "--relax-path-checks", "--verbose", "--no-warnings", "--debug", "--timestamps", "--preserve-entire-environment",
    "--rm-tmpdir", "--leave-tmpdir", "--strict", "--non-strict", "--no-doc-cache", "--doc-cache", "--udocker",
    "--singularity", "--podman", "--no-container", "--enable-pull", "--disable-pull", "--force-docker-pull",
    "--no-read-only", "--no-match-user", "--strict-memory-limit", "--strict-cpu-limit", "--rm-container",
    "--leave-container", "--beta-use-biocontainers", "--beta-conda-dependencies", "--compute-checksum",
    "--no-compute-checksum", "--js-console", "--disable-js-validation"})
RUN_WITH_VALUE = frozenset({"--parallel-max", "--on-error", "--preserve-environment", "--user-space-docker-cmd",
                            "--singularity-sandbox-path", "--default-container", "--custom-net", "--eval-timeout"})

#: cwltool's options that ask a question of the workflow instead of running it: the local cwltool answers
LOCAL_QUESTIONS = frozenset({"--validate", "--pack", "--print-deps", "--print-input-deps", "--print-dot",
                             "--print-rdf", "--print-pre", "--print-targets", "--print-subgraph",
                             "--print-supported-versions", "--make-template", "--tool-help", "--version",
                             "--generate-help-preview"})
#: options that only go with such a question, and take a value
LOCAL_WITH_VALUE = frozenset({"--relative-deps", "--rdf-serializer"})
#: runs of part of a workflow: lando-ssh runs whole workflows
PARTIAL_RUNS = frozenset({"--target", "-t", "--single-step", "--single-process"})

#: cwltool's options that mean nothing for a run on a VM, with a value
IGNORED_WITH_VALUE = frozenset({
    "--basedir", "--tmpdir-prefix", "--tmp-outdir-prefix", "--cachedir", "--overrides", "--mpi-config-file",
    "--log-dir", "--provenance", "--orcid", "--full-name", "--cidfile-dir", "--cidfile-prefix",
    "--beta-dependency-resolvers-configuration", "--beta-dependencies-directory", "--add-ga4gh-tool-registry",
    "--js-hint-options-file"})
#: ... and without one
IGNORED_FLAGS = frozenset({
    "--move-outputs", "--leave-outputs", "--copy-outputs", "--enable-user-provenance", "--disable-user-provenance",
    "--enable-host-provenance", "--disable-host-provenance", "--record-container-id", "--enable-color",
    "--disable-color", "--enable-ga4gh-tool-registry", "--disable-ga4gh-tool-registry"})

_WITH_VALUE = LANDO_WITH_VALUE | RUN_WITH_VALUE | LOCAL_WITH_VALUE | IGNORED_WITH_VALUE | PARTIAL_RUNS
_KNOWN = (LANDO_WITH_VALUE | LANDO_FLAGS | RUN_FLAGS | RUN_WITH_VALUE | LOCAL_QUESTIONS | LOCAL_WITH_VALUE
          | IGNORED_WITH_VALUE | IGNORED_FLAGS)
#: lando-ssh's options that cwltool does not have
LANDO_ONLY = frozenset({"--name", "--flavor", "--image", "--volume-size", "--git", "--ref", "--path", "--output-url",
                        "--project"})


class UsageError(ValueError):
    """A word the command line cannot take; the message says which and why."""


@dataclass
class RunnerArgs:
    #: for lando-ssh's own parser: its options, then the first positional (the workflow; with --git, none)
    lando: list[str] = field(default_factory=list)
    #: run options for the VM's cwltool, in the order given
    cwltool: list[str] = field(default_factory=list)
    #: what follows the workflow: a job order file, `-`, or the workflow's inputs as options (with --git:
    #: everything after the options)
    inputs: list[str] = field(default_factory=list)
    #: the question a local cwltool answers instead of a run (its option, e.g. `--validate`), if any
    question: str | None = None
    #: the words for the local cwltool when there is a question: all but lando-ssh's own options
    for_cwltool: list[str] = field(default_factory=list)
    #: cwltool options ignored here, for a note each
    ignored: list[str] = field(default_factory=list)


def split(args: list[str]) -> RunnerArgs:
    """Sort cwl-runner's words (after `cwl-runner`). Raises `UsageError` for a partial run or an
    option without its value."""
    out = RunnerArgs()
    options: list[str] = []  # lando-ssh's, in its parser's terms
    given: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        key = a.split("=", 1)[0]
        if not a.startswith("-") or a == "-" or a == "--":
            break
        if key.startswith("--") and key not in _KNOWN and key not in PARTIAL_RUNS:
            key = _unabbreviated(key)  # `--relax` for --relax-path-checks, as cwltool's argparser takes it
            a = key + a[len(a.split("=", 1)[0]):]
        if key in PARTIAL_RUNS:
            raise UsageError(f"cwl-runner runs whole workflows; cwltool's {key} runs only part of one (use cwltool "
                             "itself for that)")
        words = [a]
        if key in _WITH_VALUE and "=" not in a:
            if i + 1 >= len(args):
                raise UsageError(f"{key} needs a value")
            words.append(args[i + 1])
        i += len(words)
        given.add(key)
        if key in LOCAL_QUESTIONS:
            out.question = out.question or key
        if key in RUN_FLAGS or key in RUN_WITH_VALUE:
            out.cwltool.extend(words)
        if key in IGNORED_WITH_VALUE or key in IGNORED_FLAGS:
            out.ignored.append(key)
        if key not in LANDO_ONLY:
            out.for_cwltool.extend(words)
        if key in LANDO_WITH_VALUE or key in LANDO_FLAGS or key not in _KNOWN:
            options.extend(words)  # an unknown one (-h, a typo): lando-ssh's parser says what it makes of it
    rest = args[i:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    out.for_cwltool.extend(rest)
    workflow: list[str] = []
    archive = "--git" in given
    if rest and not archive:  # the first word is the workflow
        workflow, rest = rest[:1], rest[1:]
        archive = "://" in workflow[0]
    if archive:  # `URL.zip --path dir/wf.cwl job.yml`: an archive's source options may follow it
        rest = _source_options_out(rest, given, options)
    out.lando = options + workflow
    out.inputs = rest
    return out


def _unabbreviated(key: str) -> str:
    """The one option that `key` begins, as argparse takes an unambiguous prefix (else `key`, for the parser)."""
    matches = sorted(k for k in _KNOWN | PARTIAL_RUNS if k.startswith(key) and k.startswith("--"))
    if len(matches) > 1 and len(theirs := [m for m in matches if m not in LANDO_ONLY]) == 1:
        return theirs[0]  # what it means to cwltool (`--out`: --outdir, not lando-ssh's --output-url)
    if len(matches) > 1:
        raise UsageError(f"ambiguous option: {key} could match {', '.join(matches)}")
    return matches[0] if matches else key


def _source_options_out(rest: list[str], given: set[str], options: list[str]) -> list[str]:
    """`rest` without the source options not given before it (moved to `options`)."""
    kept: list[str] = []
    i = 0
    while i < len(rest):
        key = rest[i].split("=", 1)[0]
        take = 1 if "=" in rest[i] else 2
        if key in SOURCE_OPTIONS and key not in given and i + take <= len(rest):
            given.add(key)
            options.extend(rest[i:i + take])
            i += take
            continue
        kept.append(rest[i])
        i += 1
    return kept


def run_options(values: list[str]) -> list[str]:
    """`submit --cwltool-option OPT`'s values, checked: each one of cwltool's run options (one that takes a
    value as `--opt=VALUE`). Raises `UsageError` naming any other."""
    for value in values:
        key = value.split("=", 1)[0]
        if key in RUN_WITH_VALUE and "=" not in value:
            raise UsageError(f"--cwltool-option {key} needs its value in the same word: {key}=VALUE")
        if key in RUN_FLAGS and "=" in value:
            raise UsageError(f"--cwltool-option {key} takes no value")
        if key not in RUN_FLAGS and key not in RUN_WITH_VALUE:
            raise UsageError(f"--cwltool-option {value}: not one of cwltool's options that change a run (those "
                             f"are: {', '.join(sorted(RUN_FLAGS | RUN_WITH_VALUE))})")
    return list(values)
