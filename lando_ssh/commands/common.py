"""What the commands share: exit codes and the job store a command reads."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lando_ssh.config import Config

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT, EXIT_INFRA = 0, 1, 2, 3


def journal_of(config: Config, listeners: Sequence[Any] = ()) -> Any:
    """The journal over the job store (or job source: bespin-api) the config names."""
    from lando_ssh.journal import Journal
    from lando_ssh.store import open_job_source

    return Journal(open_job_source(config), listeners)
