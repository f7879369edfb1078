"""`send` and `dead-letters`: the daemon's work queue from an admin's side."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lando_ssh.commands.common import EXIT_OK
from lando_ssh.config import Config
from lando_ssh.errors import BrokerUnavailable, JobConflict


def check_command(config: Config, command: str, job_id: int) -> None:
    """Refuse, before publishing, what the daemon would dead-letter (an unknown job, a state the command does
    not apply to), as far as the job store can tell without writing; a command that changes nothing is said."""
    from lando_ssh.model import Verdict, command_verdict
    from lando_ssh.store.peek import peek_job

    job = peek_job(config, job_id)  # (UnknownJob: exit 2, "there is no job N")
    if job is None:
        return
    verdict, why = command_verdict(command, job)
    if verdict == Verdict.REFUSE:
        raise JobConflict(f"{why}; not sent")
    if verdict == Verdict.IGNORE:
        print(f"lando-ssh: note: {why}", file=sys.stderr)


def no_consumer(broker: Any) -> str | None:
    """A sentence when no daemon consumes the work queue now (the command waits there), else None."""
    try:
        if broker.consumers() > 0:
            return None
    except BrokerUnavailable:
        return None  # the command is sent; whether anyone reads it cannot be told now
    return f"no daemon consumes queue {broker.queue} at {broker.url}; it waits there until one starts (lando-ssh run)"


def cmd_send(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.broker import Broker
    from lando_ssh.messages import Command

    check_command(config, args.message, args.job_id)
    with Broker(config.work_queue) as broker:
        broker.send(Command(args.message), args.job_id)
        idle = no_consumer(broker)
    if idle:
        print(f"lando-ssh: warning: {args.message} for job {args.job_id} sent, but {idle}", file=sys.stderr)
    return EXIT_OK


def cmd_dead_letters(config: Config, args: argparse.Namespace) -> int:
    import dataclasses

    from lando_ssh.broker import Broker

    with Broker(config.work_queue) as broker:
        if args.requeue:
            letter = broker.requeue_dead_letter(args.requeue)
            what = f"{letter.command} for job {letter.job_id}" if letter.command else "the message"
            print(f"lando-ssh: moved dead letter {letter.id} ({what}) back to queue {broker.queue}", file=sys.stderr)
            return EXIT_OK
        letters = broker.dead_letters()
        queue = broker.dead_letter_queue
    if args.json:
        print(json.dumps([dataclasses.asdict(letter) for letter in letters], indent=2))
        return EXIT_OK
    print(f"lando-ssh: {len(letters)} dead letter(s) in queue {queue}", file=sys.stderr)
    if letters:
        print(f"{'ID':<36}  {'FAILED AT':<25} {'COMMAND':<11} {'JOB':>5}  {'REASON':<16} MESSAGE")
    for letter in letters:
        job = str(letter.job_id) if letter.job_id is not None else "-"
        print(f"{letter.id:<36}  {letter.failed_at or '-':<25} {letter.command or '-':<11} {job:>5}  "
              f"{letter.reason or '-':<16} {letter.message}")
    return EXIT_OK
