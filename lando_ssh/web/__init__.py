"""The status page: jobs, a job's timeline and live log, VMs and the queue, plots; JSON twins under /api/.

`lando-ssh web` serves it from the store alone; `lando-ssh run` serves it too when `web.listen` is set.
views.py computes what is shown (pure), pages.py renders it, routes.py maps requests, app.py serves.
"""
from __future__ import annotations

from lando_ssh.web.app import start_web_server

__all__ = ["start_web_server"]
