"""`lando-ssh web`: the status page from the job store alone, until SIGTERM (lando_ssh/web/)."""
from __future__ import annotations

import argparse

from lando_ssh.config import Config


def cmd_web(config: Config, args: argparse.Namespace) -> int:
    from lando_ssh.web.app import serve_until_stopped

    return serve_until_stopped(config, args.listen)
