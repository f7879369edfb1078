"""The status page's HTTP server: routes, the JSON twins, static files, and the token that allows actions.

Served by the standard library's ThreadingHTTPServer: a status page for a few admins needs no framework,
and lando-ssh then adds no dependency. Everything is read from the job store. The jobs list (summaries: no
job order, workflow or outputs; 10,000 jobs take a second or more to read) is kept: a list older than
`LIST_TTL` seconds is served as it is while it is read again in the background, one older than
`LIST_MAX_AGE` is read again first; a job's own page and the JSON jobs read each job whole and fresh.
Read-only unless `web.token` is set: then a browser signs in with the token (an HttpOnly, SameSite=Strict
session cookie) and each action form carries a CSRF token derived from the session; a script may send
`Authorization: Bearer TOKEN` instead. A sign-in lasts 12 hours. An action publishes `cancel_job` /
`restart_job` to the daemon's queue, as `lando-ssh send` does.
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import mimetypes
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from lando_ssh.commands.common import journal_of
from lando_ssh.config import Config
from lando_ssh.cwllog import CwltoolLog
from lando_ssh.errors import ConfigError, LandoError, StoreUnavailable, UnknownJob
from lando_ssh.journal import Journal
from lando_ssh.model import Job
from lando_ssh.store import JobStore
from lando_ssh.web import pages, views

log = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(__file__), "static")
LIST_TTL = 5.0
LIST_MAX_AGE = 60.0
LOG_SSH_EVERY = 5.0  # a running job's log is read over SSH at most this often, however many watch it
COOKIE = "lando_session"
SESSION_SECONDS = 12 * 3600  # a sign-in lasts a working day
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
Sender = Callable[[str, int], None]


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class StatusApp:
    """What the handler asks: the jobs (cached briefly), one job, the log tails, and the token's checks."""

    def __init__(self, config: Config, store: JobStore | None = None, send: Sender | None = None):
        self.config = config
        self.store = store if store is not None else journal_of(config, reading=True).store  # (creates none)
        self.send = send or _broker_sender(config)
        self.token = config.web.token or None
        self.logs = CwltoolLog(config, Journal(self.store), ssh_every=LOG_SSH_EVERY)
        self._lock = threading.Lock()  # the cached list
        self._jobs: tuple[float, list[Job]] | None = None  # (monotonic time read, jobs)
        self._refreshing = False
        self._plots: dict[tuple[str, ...], tuple[list[Job], dict[str, Any]]] = {}

    def jobs(self) -> list[Job]:
        with self._lock:
            cached = self._jobs
            age = time.monotonic() - cached[0] if cached else LIST_MAX_AGE + 1
            if cached is not None and age <= LIST_MAX_AGE:
                if age > LIST_TTL and not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, name="web-list", daemon=True).start()
                return cached[1]
        return self._read_list()

    def _refresh(self) -> None:
        try:
            self._read_list()
        except LandoError as e:
            log.warning("web: cannot read the jobs: %s", e)
        finally:
            with self._lock:
                self._refreshing = False

    def _read_list(self) -> list[Job]:
        summaries = getattr(self.store, "list_summaries", None)  # (stores are thread-safe: the daemon's threads)
        if summaries is not None:
            jobs = summaries()
        else:
            jobs = self.store.list()
            for job in jobs:  # the same as a summary: what lists never show is not kept
                job.job_order, job.workflow_doc, job.output = {}, None, None
        with self._lock:
            self._jobs = (time.monotonic(), jobs)
        return jobs

    def plots(self, key: tuple[str, ...], since: datetime, until: datetime) -> dict[str, Any]:
        """The plots' series (views.plots), computed once per jobs list read and period asked."""
        jobs = self.jobs()
        with self._lock:
            hit = self._plots.get(key)
            if hit is not None and hit[0] is jobs:
                return hit[1]
        data = views.plots(jobs, since, until)
        with self._lock:
            self._plots = {k: v for k, v in self._plots.items() if v[0] is jobs}  # those of older lists go
            self._plots[key] = (jobs, data)
        return data

    def listed_age(self) -> float:
        """Seconds since the jobs list shown was read."""
        with self._lock:
            return time.monotonic() - self._jobs[0] if self._jobs else 0.0

    def job(self, job_id: int) -> Job:
        return self.store.get(job_id)

    # -- sessions and CSRF (only with a token) -------------------------------------------------
    def _sign(self, what: str) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), what.encode(), hashlib.sha256).hexdigest()

    def new_session(self, at: float | None = None) -> str:
        """A signed session: when it began and a random part (it ends after SESSION_SECONDS, or when the
        token changes)."""
        nonce = f"{int(time.time() if at is None else at)}-{secrets.token_hex(16)}"
        return f"{nonce}.{self._sign('session:' + nonce)}"

    def session_ok(self, cookie: str | None) -> bool:
        if not self.token or not cookie or "." not in cookie:
            return False
        nonce, sig = cookie.split(".", 1)
        began = nonce.split("-", 1)[0]
        return (hmac.compare_digest(sig, self._sign("session:" + nonce)) and began.isdigit()
                and 0 <= time.time() - int(began) < SESSION_SECONDS)

    def csrf_for(self, cookie: str | None) -> str:
        if cookie is None or not self.session_ok(cookie):
            return ""
        return self._sign("csrf:" + cookie.split(".", 1)[0])

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), (self.token or "").encode())

    def close(self) -> None:
        self.logs.close()
        self.store.close()


def _broker_sender(config: Config) -> Sender:
    def send(command: str, job_id: int) -> None:
        from lando_ssh.broker import Broker
        from lando_ssh.messages import Command

        with Broker(config.work_queue) as broker:
            broker.send(Command(command), job_id)

    return send


class Handler(http.server.BaseHTTPRequestHandler):
    app: StatusApp
    server_version = "lando-ssh"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query)
        api = url.path.startswith("/api/")
        try:
            from lando_ssh.web import routes

            routes.route(self, method, url.path, params)
        except HttpError as e:
            self.reply_error(e.status, str(e), api)
        except ValueError as e:
            self.reply_error(HTTPStatus.BAD_REQUEST, str(e), api)
        except UnknownJob as e:
            self.reply_error(HTTPStatus.NOT_FOUND, str(e), api)
        except (StoreUnavailable, LandoError) as e:
            log.warning("web: %s %s: %s", method, url.path, e)
            self.reply_error(HTTPStatus.SERVICE_UNAVAILABLE, str(e), api)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- replies --------------------------------------------------------------------------------
    def cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return None

    def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def html(self, text: str, status: int = 200, headers: dict[str, str] | None = None) -> None:
        if self.app.token:
            cookie = self.cookie()
            text = text.replace(pages.WHO, pages.who(self.app.session_ok(cookie), self.app.csrf_for(cookie)), 1)
        self.reply(status, text.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store", **(headers or {})})

    def json(self, data: Any, status: int = 200) -> None:
        self.reply(status, json.dumps(data, default=_jsonable).encode(), "application/json",
                   {"Cache-Control": "no-store"})

    def redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
        self.reply(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, **(headers or {})})

    def reply_error(self, status: int, message: str, api: bool) -> None:
        if api:
            self.json({"error": message}, status)
        else:
            self.html(pages.error_page(status, message), status)

    def static(self, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no file {name!r}")
        path = os.path.join(STATIC, name)
        try:
            with open(path, "rb") as f:
                body = f.read()
        except (FileNotFoundError, IsADirectoryError):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no file {name!r}") from None
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self.reply(200, body, kind + ("; charset=utf-8" if kind.startswith("text/") or kind.endswith("script")
                                      else ""), {"Cache-Control": "max-age=3600"})

    def form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 * 1024:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the form is too large")
        data = self.rfile.read(length).decode(errors="replace") if length else ""
        return {k: v[0] for k, v in urllib.parse.parse_qs(data).items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    raise TypeError(f"{type(value).__name__} is not JSON")


def start_web_server(config: Config, listen: str | None = None, *, store: JobStore | None = None,
                     send: Sender | None = None) -> http.server.ThreadingHTTPServer:
    """Serve the status page at `listen` (default `web.listen`) in a daemon thread; returns the server
    (`server_address` says where; `shutdown()` and `server_close()` stop it)."""
    from lando_ssh.metrics import parse_listen

    where = listen or config.web.listen
    if not where:
        raise ConfigError("web.listen is not set: give HOST:PORT, e.g. 127.0.0.1:8080")
    host, port = parse_listen(where, "web.listen")
    app = StatusApp(config, store, send)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        app.close()
        raise ConfigError(f"web.listen {where}: cannot listen there: {e.strerror or e}") from None
    server.daemon_threads = True
    close = server.server_close

    def server_close() -> None:
        close()
        app.close()

    server.server_close = server_close  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    log.info("status page at http://%s:%d/ (%s)", *server.server_address[:2],
             "actions allowed to who signs in with web.token" if app.token else "read-only")
    return server


def serve_until_stopped(config: Config, listen: str | None) -> int:
    """`lando-ssh web`: the status page in the foreground until SIGTERM or SIGINT."""
    import signal

    stop = threading.Event()
    server = start_web_server(config, listen or config.web.listen or "127.0.0.1:8080")
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"lando-ssh: status page at http://{host}:{port}/", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0
