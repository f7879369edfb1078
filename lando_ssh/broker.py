"""RabbitMQ: consume job commands, publish commands and job_status events. The only module that imports pika.

What it declares (all idempotent, on every (re)connect):
  - `work_queue.listen_queue`, durable, without arguments (as lando declared it, so an existing
    lando queue is reused as it is);
  - `<listen_queue>.dead`: a durable fanout exchange and a durable queue bound to it. A message that
    can never be served is re-published there, with the reason in the `x-lando-error` header and a
    sentence in `x-lando-error-message`, and then acked from the work queue;
  - `work_queue.status_exchange` (`job_status`), a fanout exchange, not durable: that is how lando
    and bespin-job-watcher declare it, and RabbitMQ refuses a second declaration that differs.
If an existing queue or exchange was declared with other settings, it is used as it is (with a
warning) rather than refused.

Three connections, because pika's BlockingConnection belongs to one thread:
  - `consume()` owns one in the calling thread; the handler runs in a helper thread so that a
    slow handler never starves the heartbeats;
  - `send()` shares one behind a lock;
  - `publish_status()` only appends to a bounded buffer; a background thread with its own
    connection publishes (with publisher confirms), reconnecting with back-off, so an engine
    thread never waits for RabbitMQ.
The password is never logged: logs and errors name `amqp://user@host:port/vhost`.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import quote

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from lando_ssh.backoff import Backoff
from lando_ssh.config import WorkQueueConfig
from lando_ssh.errors import BadInput, BrokerUnavailable
from lando_ssh.messages import BadMessage, Command, Message, encode_message, parse_message

log = logging.getLogger(__name__)
if logging.getLogger("pika").level == logging.NOTSET:
    # our own log says every connection event in one line; pika's repeats it in many, with tracebacks
    logging.getLogger("pika").setLevel(logging.CRITICAL)

#: Called once per command, one at a time; returns after the job record reflects the command.
Handler = Callable[[Message], None]

ERROR_HEADER = "x-lando-error"
ERROR_MESSAGE_HEADER = "x-lando-error-message"
#: What the consumer treats as "RabbitMQ is gone for now": reconnect and carry on.
_BROKER_ERRORS = (pika.exceptions.AMQPError, OSError, BrokerUnavailable)


class Broker:
    """The work queue and the job_status exchange named by a `WorkQueueConfig`."""

    def __init__(self, config: WorkQueueConfig, *, prefetch: int = 20, status_buffer: int = 10000,
                 reconnect: Backoff | None = None, retry_delay: float = 1.0, connect_timeout: float = 3.0):
        self.config = config
        self.queue = config.listen_queue
        self.dead_letter_exchange = self.dead_letter_queue = f"{config.listen_queue}.dead"
        self.status_exchange = config.status_exchange
        self.prefetch = prefetch  # unacked messages in flight; the handler only records, so a few suffice
        self.reconnect = reconnect or Backoff()
        self.retry_delay = retry_delay  # first wait before a failed message goes back on the queue
        self.connect_timeout = connect_timeout  # also bounds how long `stop` may wait on a connection attempt
        # how often a connection busy elsewhere still answers heartbeats (pika sends one every heartbeat/2)
        self.pump_interval = min(0.5, config.heartbeat / 4) if config.heartbeat > 0 else 0.5
        self._send_lock = threading.Lock()
        self._send_connection: pika.BlockingConnection | None = None
        self._send_channel: BlockingChannel | None = None
        self._status = _StatusPublisher(self, status_buffer)

    @property
    def url(self) -> str:
        """Where RabbitMQ is, fit for logs: no password."""
        c = self.config
        return f"amqp://{quote(c.username, safe='')}@{c.host}:{c.port}/{quote(c.virtual_host, safe='')}"

    # ---- publishing ------------------------------------------------------------------------

    def declare(self) -> None:
        """Declare the work queue, the dead-letter exchange and queue, and the status exchange."""
        connection = self._connect("declare")
        try:
            self._declare_all(connection)
        except _BROKER_ERRORS as e:
            raise BrokerUnavailable(f"could not declare queues on RabbitMQ at {self.url}: {self._describe(e)}")
        finally:
            _close_quietly(connection)

    def send(self, command: Command | str, job_id: int) -> None:
        """Publish one persistent command to the work queue; raises BrokerUnavailable when RabbitMQ is down."""
        body = encode_message(command, job_id)
        name = Command(command).value
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          message_id=str(uuid.uuid4()), timestamp=int(time.time()),
                                          app_id="lando-ssh")
        with self._send_lock:
            while True:
                reused = self._send_channel is not None
                try:
                    channel = self._sending_channel()
                    channel.basic_publish("", self.queue, body, properties, mandatory=True)
                    return
                except _BROKER_ERRORS as e:
                    self._close_send()
                    if not reused:  # a fresh connection failed: RabbitMQ really is unavailable
                        where = "cannot connect to" if isinstance(e, _CannotConnect) else "failed at"
                        raise BrokerUnavailable(f"could not send {name} for job {job_id}: {where} RabbitMQ "
                                                f"at {self.url}: {self._describe(e)}")
                    # a kept connection may have gone stale (broker restart, missed heartbeats): retry once

    def consumers(self) -> int:
        """How many consumers the work queue has now (0: no daemon serves it)."""
        with self._send_lock:
            try:
                channel = self._sending_channel()
                return int(channel.queue_declare(self.queue, passive=True).method.consumer_count)
            except _BROKER_ERRORS as e:
                self._close_send()
                raise BrokerUnavailable(f"cannot ask RabbitMQ at {self.url} about queue {self.queue}: "
                                        f"{self._describe(e)}") from None

    # ---- dead letters ----------------------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        """The messages in the dead-letter queue, oldest first; they stay there."""
        letters: list[DeadLetter] = []
        with self._dead_letter_channel() as channel:
            while True:
                method, properties, body = channel.basic_get(self.dead_letter_queue, auto_ack=False)
                if method is None:
                    return letters  # (closing the channel without acks puts every one back)
                letters.append(DeadLetter.of(properties, body, self.config.max_message_bytes))

    def requeue_dead_letter(self, letter_id: str) -> DeadLetter:
        """Move dead letter `letter_id` back to the work queue, without its error headers. The copy is
        confirmed by RabbitMQ before the dead letter is acked: a failure in between leaves it in both
        queues, never in neither."""
        with self._dead_letter_channel() as channel:
            channel.confirm_delivery()
            while True:
                method, properties, body = channel.basic_get(self.dead_letter_queue, auto_ack=False)
                if method is None:
                    raise BadInput(f"there is no dead letter {letter_id} in queue {self.dead_letter_queue} (see "
                                   "`lando-ssh dead-letters`)")
                letter = DeadLetter.of(properties, body, self.config.max_message_bytes)
                if letter.id != letter_id:
                    continue
                headers = {k: v for k, v in (properties.headers or {}).items() if not k.startswith("x-lando-")}
                copy = pika.BasicProperties(content_type=properties.content_type,
                                            content_encoding=properties.content_encoding, headers=headers or None,
                                            delivery_mode=2, message_id=properties.message_id,
                                            correlation_id=properties.correlation_id, timestamp=properties.timestamp,
                                            app_id=properties.app_id, type=properties.type)
                channel.basic_publish("", self.queue, body, copy, mandatory=True)
                channel.basic_ack(method.delivery_tag)
                return letter

    @contextlib.contextmanager
    def _dead_letter_channel(self) -> Iterator[BlockingChannel]:
        connection = None
        try:
            connection = self._connect("dead-letters")
            self._declare_all(connection)
            yield connection.channel()
        except _BROKER_ERRORS as e:
            raise BrokerUnavailable(f"cannot read queue {self.dead_letter_queue} at {self.url}: "
                                    f"{self._describe(e)}") from None
        finally:
            if connection is not None:
                _close_quietly(connection)

    def publish_status(self, job_id: int, state: str | Enum, step: str | Enum) -> None:
        """Queue a job_status event {"job", "state", "step"}; returns at once, from any thread."""
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise TypeError(f"job_id must be an int, not {type(job_id).__name__}")
        body = json.dumps({"job": job_id, "state": _code(state), "step": _code(step)}).encode()
        self._status.put(body)

    def flush_status(self, timeout: float = 5.0) -> bool:
        """Wait until every queued job_status event is confirmed by RabbitMQ; False on timeout."""
        return self._status.flush(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Publish what status events we can within `timeout`, then close every connection."""
        self._status.close(timeout)
        with self._send_lock:
            self._close_send()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- consuming -------------------------------------------------------------------------

    def consume(self, handler: Handler, stop: threading.Event) -> None:
        """Serve the work queue until `stop` is set, reconnecting whenever RabbitMQ goes away.

        A message is acked only after `handler` returned. BadInput from parsing or from the
        handler sends it to the dead-letter queue with the reason; any other exception puts it
        back on the queue after a delay that grows while failures repeat.
        """
        attempts = 0
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lando-handler")
        state = _ServeState()
        try:
            while not stop.is_set():
                connection = None
                try:
                    connection = self._connect("consumer")
                    self._declare_all(connection)
                    channel = connection.channel()
                    channel.confirm_delivery()  # a dead-lettered copy must be stored before the original is acked
                    channel.basic_qos(prefetch_count=self.prefetch)
                    if attempts:
                        log.info("reconnected to RabbitMQ at %s after %d attempt(s)", self.url, attempts)
                    log.info("consuming commands from queue %s at %s", self.queue, self.url)
                    attempts = 0
                    self.reconnect.reset()
                    self._serve(connection, channel, handler, stop, executor, state)
                    if stop.is_set():
                        channel.cancel()  # hands back prefetched, unserved messages
                        return
                    raise BrokerUnavailable(f"RabbitMQ cancelled our consumer on queue {self.queue}")
                except (*_BROKER_ERRORS, _ConnectionLost) as e:
                    attempts += 1
                    delay = self.reconnect.next()
                    what = "cannot connect to" if isinstance(e, _CannotConnect) else "lost the connection to"
                    log.warning("%s RabbitMQ at %s: %s; retrying in %.1f s", what, self.url, self._describe(e), delay)
                    stop.wait(delay)
                finally:
                    if connection is not None:
                        _close_quietly(connection)
        finally:
            executor.shutdown(wait=False)
            log.info("stopped consuming from queue %s", self.queue)

    def _serve(self, connection: pika.BlockingConnection, channel: BlockingChannel, handler: Handler,
               stop: threading.Event, executor: concurrent.futures.Executor, state: _ServeState) -> None:
        # the short inactivity timeout is what makes `stop` take effect within a fraction of a second
        for method, properties, body in channel.consume(self.queue, inactivity_timeout=0.2):
            if stop.is_set():
                return
            if method is None:
                continue
            self._deliver(connection, channel, method, properties, body, handler, stop, executor, state)

    def _deliver(self, connection: pika.BlockingConnection, channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                 properties: pika.BasicProperties, body: bytes, handler: Handler, stop: threading.Event,
                 executor: concurrent.futures.Executor, state: _ServeState) -> None:
        tag = method.delivery_tag
        message: Message | None = None
        try:
            message = parse_message(body, properties.content_type, self.config.max_message_bytes)
            self._run_handler(connection, executor, handler, message)
        except _ConnectionLost:
            raise
        except BadInput as e:
            reason = e.reason if isinstance(e, BadMessage) else _reason_of(e)
            text = " ".join(str(e).split())  # one line in the log and the header, even for cwltool's output
            self._dead_letter(channel, properties, body, reason, text)
            channel.basic_ack(tag)
            state.failures = 0
            log.warning("moved %s from queue %s to %s: %s [%s]", message or "a message", self.queue,
                        self.dead_letter_queue, text, reason)
            return
        except Exception as e:
            state.failures += 1
            delay = min(self.retry_delay * 2 ** (state.failures - 1), 30.0)
            log.error("could not serve %s (%s: %s); it goes back on queue %s in %.1f s", message,
                      type(e).__name__, e, self.queue, delay, exc_info=True)
            self._pause(connection, delay, stop)
            channel.basic_nack(tag, requeue=True)
            return
        channel.basic_ack(tag)
        state.failures = 0
        log.debug("served and acked %s", message)

    def _run_handler(self, connection: pika.BlockingConnection, executor: concurrent.futures.Executor,
                     handler: Handler, message: Message) -> None:
        future = executor.submit(handler, message)
        # the fast path returns as soon as the handler does; a slow one gets heartbeats answered meanwhile
        while not concurrent.futures.wait([future], timeout=self.pump_interval).done:
            try:
                connection.process_data_events(time_limit=0)
            except _BROKER_ERRORS as e:
                concurrent.futures.wait([future])  # one handler at a time, even across a reconnect
                raise _ConnectionLost(e) from e
        future.result()

    def _pause(self, connection: pika.BlockingConnection, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            connection.sleep(min(self.pump_interval, max(0.0, deadline - time.monotonic())))  # heartbeats flow

    def _dead_letter(self, channel: BlockingChannel, properties: pika.BasicProperties, body: bytes,
                     reason: str, text: str) -> None:
        headers = dict(properties.headers or {})
        headers.update({ERROR_HEADER: reason, ERROR_MESSAGE_HEADER: text[:1000], "x-lando-queue": self.queue,
                        "x-lando-failed-at": datetime.now(UTC).isoformat(timespec="seconds")})
        copy = pika.BasicProperties(content_type=properties.content_type,
                                    content_encoding=properties.content_encoding, headers=headers, delivery_mode=2,
                                    message_id=properties.message_id, correlation_id=properties.correlation_id,
                                    timestamp=properties.timestamp, app_id=properties.app_id, type=properties.type)
        channel.basic_publish(self.dead_letter_exchange, self.dead_letter_queue, body, copy, mandatory=True)

    # ---- connections -----------------------------------------------------------------------

    def _parameters(self, role: str) -> pika.ConnectionParameters:
        c = self.config
        return pika.ConnectionParameters(
            host=c.host, port=c.port, virtual_host=c.virtual_host,
            credentials=pika.PlainCredentials(c.username, c.password),
            heartbeat=c.heartbeat,
            blocked_connection_timeout=60,  # a broker in a resource alarm blocks publishers; fail instead of hanging
            connection_attempts=1, socket_timeout=self.connect_timeout, stack_timeout=self.connect_timeout * 1.5,
            client_properties={"connection_name": f"lando-ssh {role} {socket.gethostname()}:{os.getpid()}"})

    def _connect(self, role: str) -> pika.BlockingConnection:
        try:
            return pika.BlockingConnection(self._parameters(role))
        except _BROKER_ERRORS as e:
            raise _CannotConnect(self.url, self._describe(e))

    def _declare_all(self, connection: pika.BlockingConnection, status_only: bool = False) -> None:
        declarations: list[tuple[str, str, Callable[[BlockingChannel, bool], object]]] = [
            ("exchange", self.status_exchange, lambda ch, passive: ch.exchange_declare(
                self.status_exchange, "fanout", passive=passive, durable=False)),
        ]
        if not status_only:
            declarations += [
                ("queue", self.queue, lambda ch, passive: ch.queue_declare(self.queue, passive=passive, durable=True)),
                ("exchange", self.dead_letter_exchange, lambda ch, passive: ch.exchange_declare(
                    self.dead_letter_exchange, "fanout", passive=passive, durable=True)),
                ("queue", self.dead_letter_queue, lambda ch, passive: ch.queue_declare(
                    self.dead_letter_queue, passive=passive, durable=True)),
            ]
        channel = connection.channel()
        for kind, name, declare in declarations:
            try:
                declare(channel, False)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 406:  # PRECONDITION_FAILED: it exists with other settings
                    raise
                log.warning("RabbitMQ already has %s %s with other settings (%s); using it as it is",
                            kind, name, e.reply_text)
                channel = connection.channel()
                declare(channel, True)
        if not status_only:
            channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange)
        channel.close()

    def _sending_channel(self) -> BlockingChannel:
        if self._send_channel is None or not self._send_channel.is_open:
            self._close_send()
            self._send_connection = self._connect("sender")
            self._declare_all(self._send_connection)  # so a command sent before any consumer ran is kept
            channel = self._send_connection.channel()
            channel.confirm_delivery()
            self._send_channel = channel
        return self._send_channel

    def _close_send(self) -> None:
        if self._send_connection is not None:
            _close_quietly(self._send_connection)
        self._send_connection = self._send_channel = None

    def _describe(self, e: BaseException) -> str:
        """One readable phrase for a pika or socket failure, never containing the password."""
        text = _describe(e, self.config)
        password = self.config.password
        if password and len(password) >= 3 and password != self.config.username:  # the URL shows the user anyway
            text = text.replace(password, "***")
        return text


@dataclass
class DeadLetter:
    """A message the daemon could not serve, as the dead-letter queue holds it."""

    id: str  # its message_id, else a digest of the message: what `dead-letters --requeue` takes
    reason: str  # the short code (unknown_job, job_conflict, bad_json...)
    message: str  # the sentence
    failed_at: str | None
    command: str | None  # what it asked, when it can be read
    job_id: int | None
    body: str  # the body as text, cut at 500 characters

    @classmethod
    def of(cls, properties: pika.BasicProperties, body: bytes, max_bytes: int) -> DeadLetter:
        headers = properties.headers or {}
        failed_at = headers.get("x-lando-failed-at")
        digest = hashlib.sha256(bytes(body) + str(failed_at).encode()).hexdigest()[:12]
        try:
            message: Message | None = parse_message(body, properties.content_type, max_bytes)
        except BadInput:
            message = None
        return cls(id=str(properties.message_id or digest), reason=str(headers.get(ERROR_HEADER, "")),
                   message=str(headers.get(ERROR_MESSAGE_HEADER, "")), failed_at=str(failed_at) if failed_at else None,
                   command=message.command.value if message else None, job_id=message.job_id if message else None,
                   body=bytes(body[:500]).decode(errors="replace"))


class _CannotConnect(BrokerUnavailable):
    def __init__(self, url: str, detail: str):
        super().__init__(f"cannot connect to RabbitMQ at {url}: {detail}")
        self.detail = detail


class _ConnectionLost(Exception):
    """RabbitMQ went away while a handler ran: the message will be redelivered on the next connection."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the connection was lost"


@dataclass
class _ServeState:
    failures: int = 0  # consecutive handler failures, for the growing retry delay


class _StatusPublisher:
    """A bounded buffer of job_status events and the one thread that publishes them, in order."""

    def __init__(self, broker: Broker, capacity: int):
        self.broker = broker
        self.events: collections.deque[bytes] = collections.deque(maxlen=capacity)
        self.cond = threading.Condition()
        self.busy = False  # the thread holds an event that is not confirmed yet
        self.closing = False
        self.dropped = 0
        self.thread: threading.Thread | None = None

    def put(self, body: bytes) -> None:
        with self.cond:
            if len(self.events) == self.events.maxlen:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("job_status buffer full (%d events): dropped %d oldest event(s) so far",
                                self.events.maxlen, self.dropped)
            self.events.append(body)
            if self.thread is None or not self.thread.is_alive():
                self.closing = False
                self.thread = threading.Thread(target=self._run, name="lando-status-publisher", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.events or self.busy:
                left = deadline - time.monotonic()
                if left <= 0 or self.thread is None or not self.thread.is_alive():
                    return False
                self.cond.wait(left)
            return True

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self.cond:
            self.closing = True
            left = len(self.events)
            self.cond.notify_all()
        if left:
            log.warning("%d job_status event(s) were not published: RabbitMQ at %s did not take them in time",
                        left, self.broker.url)
        if self.thread is not None:
            self.thread.join(timeout=max(1.0, self.broker.connect_timeout))

    def _run(self) -> None:
        connection: pika.BlockingConnection | None = None
        channel: BlockingChannel | None = None
        backoff = Backoff(self.broker.reconnect.first, self.broker.reconnect.longest)
        try:
            while True:
                with self.cond:
                    if not self.events and not self.closing:
                        self.cond.wait(timeout=self.broker.pump_interval)
                    if self.closing:
                        self.events.clear()
                        return
                    body = self.events[0] if self.events else None
                    self.busy = body is not None
                try:
                    if body is None:
                        if connection is not None:
                            connection.process_data_events(time_limit=0)  # answer heartbeats while idle
                        continue
                    if channel is None:
                        connection = self.broker._connect("status")
                        self.broker._declare_all(connection, status_only=True)
                        channel = connection.channel()
                        channel.confirm_delivery()
                        backoff.reset()
                    channel.basic_publish(self.broker.status_exchange, "", body, pika.BasicProperties(
                        content_type="application/json", delivery_mode=2))
                    with self.cond:
                        if self.events and self.events[0] is body:  # unless the full buffer dropped it meanwhile
                            self.events.popleft()
                        self.busy = False
                        self.cond.notify_all()
                except _BROKER_ERRORS as e:
                    if connection is not None:
                        _close_quietly(connection)
                    connection = channel = None
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
                    if body is None:
                        continue  # an idle connection died: reconnect when there is something to publish
                    delay = backoff.next()
                    log.warning("could not publish job_status to RabbitMQ at %s: %s; retrying in %.1f s",
                                self.broker.url, self.broker._describe(e), delay)
                    with self.cond:
                        if not self.closing:
                            self.cond.wait(timeout=delay)
        finally:
            if connection is not None:
                _close_quietly(connection)


def _code(value: str | Enum) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _reason_of(error: BadInput) -> str:
    """UnknownJob -> unknown_job: a short code for the dead-letter header."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def _describe(e: BaseException, config: WorkQueueConfig) -> str:
    if isinstance(e, _CannotConnect):
        return e.detail
    if isinstance(e, BrokerUnavailable):
        return str(e)
    if isinstance(e, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError):
        return f"login refused for user {config.username!r} (check work_queue.username and password)"
    if isinstance(e, pika.exceptions.ProbableAccessDeniedError):
        return f"user {config.username!r} may not use virtual host {config.virtual_host!r}"
    if isinstance(e, pika.exceptions.ConnectionClosedByBroker):
        return f"the broker closed the connection ({e.reply_code} {e.reply_text})"
    if isinstance(e, pika.exceptions.ChannelClosedByBroker):
        return f"the broker closed the channel ({e.reply_code} {e.reply_text})"
    if isinstance(e, pika.exceptions.ConnectionBlockedTimeout):
        return "the broker blocked publishing for too long (a memory or disk alarm?)"
    if isinstance(e, pika.exceptions.UnroutableError):
        return "did not route the message to any queue"
    if isinstance(e, pika.exceptions.StreamLostError):
        return "the socket closed (a broker restart or a network fault)"
    if isinstance(e, pika.exceptions.AMQPHeartbeatTimeout):
        return "heartbeats stopped arriving"
    if isinstance(e, _ConnectionLost) and isinstance(e.__cause__, BaseException):
        return _describe(e.__cause__, config)
    cause = _socket_error(e)
    if cause is not None:
        return (cause.strerror or str(cause) or type(cause).__name__).lower()
    text = str(e) or type(e).__name__
    return text if len(text) < 200 else text[:199] + "…"


def _socket_error(e: BaseException) -> OSError | None:
    """pika wraps the socket's error (refused, timed out, unknown host) a few layers deep."""
    seen: list[BaseException] = [e]
    while seen:
        err = seen.pop()
        if isinstance(err, OSError):
            return err
        seen.extend(a for a in err.args if isinstance(a, BaseException))
        for inner in (getattr(err, "exception", None), err.__cause__):  # pika's connector errors keep `.exception`
            if isinstance(inner, BaseException):
                seen.append(inner)
    return None


def _close_quietly(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as e:  # noqa: BLE001 - closing a broken connection can fail in any way; it is gone either way
        log.debug("closing a RabbitMQ connection failed: %s", e)
