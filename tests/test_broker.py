"""The broker against the real RabbitMQ at 127.0.0.1:5672: these fail (never skip) when it is down."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pika
import pika.exceptions
import pytest
from conftest import made_on_the_broker

from lando_ssh.broker import ERROR_HEADER, ERROR_MESSAGE_HEADER, Backoff, Broker
from lando_ssh.config import WorkQueueConfig
from lando_ssh.errors import BrokerUnavailable, UnknownJob
from lando_ssh.messages import Command, Message
from lando_ssh.model import JobState, JobStep


class SimulatedCrash(BaseException):
    """Stands for the process dying inside the handler (not an Exception: nothing may catch it)."""


@pytest.fixture
def config() -> Iterator[WorkQueueConfig]:
    """A work queue and a status exchange of this test's own; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    cfg = WorkQueueConfig(listen_queue=f"test-lando-{tag}", status_exchange=f"test-status-{tag}",
                          heartbeat=10, max_message_bytes=4096)
    made_on_the_broker(cfg.listen_queue, cfg.status_exchange)
    yield cfg
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    channel = connection.channel()
    for queue in (cfg.listen_queue, f"{cfg.listen_queue}.dead", f"{cfg.status_exchange}.listener"):
        channel.queue_delete(queue)
    for exchange in (f"{cfg.listen_queue}.dead", cfg.status_exchange):
        channel.exchange_delete(exchange)
    connection.close()


@pytest.fixture
def admin() -> Iterator[Callable[[], pika.adapters.blocking_connection.BlockingChannel]]:
    """A channel of the test's own, to look at queues from outside; reopened after a broker restart."""
    held: list[pika.BlockingConnection] = []

    def channel() -> pika.adapters.blocking_connection.BlockingChannel:
        if held and held[-1].is_open:
            return held[-1].channel()
        held.append(pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672)))
        return held[-1].channel()

    yield channel
    for connection in held:
        with contextlib.suppress(Exception):
            connection.close()


def make_broker(cfg: WorkQueueConfig, **kwargs) -> Broker:
    kwargs.setdefault("reconnect", Backoff(0.2, 1.0))
    kwargs.setdefault("retry_delay", 0.2)
    return Broker(cfg, **kwargs)


@contextlib.contextmanager
def consuming(broker: Broker, handler: Callable[[Message], None]) -> Iterator[threading.Event]:
    """Run broker.consume in a thread; on exit stop it and check it ended promptly."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            broker.consume(handler, stop)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive(), "consume() did not return after stop was set"
    assert errors == []


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def ready_count(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def drain(channel, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    got = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((properties, body))


def publish_raw(channel, queue: str, body: bytes, content_type: str | None = None) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(content_type=content_type, delivery_mode=2))


# ---- serving commands ---------------------------------------------------------------------------

def test_a_sent_command_reaches_the_handler_and_is_acked(config, admin):
    broker = make_broker(config)
    got: list[Message] = []
    broker.send(Command.START_JOB, 7)
    broker.send("cancel_job", 8)
    with consuming(broker, got.append):
        wait_for(lambda: len(got) == 2, what="two commands")
    broker.close()
    assert [(m.command, m.job_id, m.version) for m in got] == [
        (Command.START_JOB, 7, "1"), (Command.CANCEL_JOB, 8, "1")]
    channel = admin()
    # the consumer is gone, so an unacked message would be back in the queue by now
    assert ready_count(channel, config.listen_queue) == 0
    assert ready_count(channel, f"{config.listen_queue}.dead") == 0


#: What lando_client (Python 2) published for start_job 12: a protocol-0 pickled WorkRequest, no content type.
LANDO_START_JOB_12 = (b"ccopy_reg\n_reconstructor\np0\n(clando_messaging.workqueue\nWorkRequest\np1\n"
                      b"c__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\nS'command'\np6\nS'start_job'\np7\n"
                      b"sS'payload'\np8\ng0\n(clando_messaging.messaging\nStartJobPayload\np9\ng2\nNtp10\n"
                      b"Rp11\n(dp12\nS'job_id'\np13\nI12\nsbsb.")


def test_a_start_job_published_the_way_lando_did_is_served(config, admin):
    broker = make_broker(config)
    broker.declare()
    publish_raw(admin(), config.listen_queue, LANDO_START_JOB_12)
    got: list[Message] = []
    with consuming(broker, got.append):
        wait_for(lambda: got, what="lando's message")
    broker.close()
    assert got == [Message(Command.START_JOB, 12, None, "lando-pickle")]
    assert ready_count(admin(), config.listen_queue) == 0


def test_a_message_whose_handler_never_returned_is_delivered_again(config, admin):
    broker = make_broker(config)
    broker.send("start_job", 11)
    seen: list[Message] = []

    def crash_once(message: Message) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise SimulatedCrash()

    stop = threading.Event()
    with pytest.raises(SimulatedCrash):
        broker.consume(crash_once, stop)
    # a new server process: the message the crashed one was serving is still there
    with consuming(make_broker(config), crash_once):
        wait_for(lambda: len(seen) == 2, what="redelivery")
    broker.close()
    assert [m.job_id for m in seen] == [11, 11]
    assert ready_count(admin(), config.listen_queue) == 0


def test_bad_messages_go_to_the_dead_letter_queue_with_their_reason_and_service_goes_on(config, admin, tmp_path):
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    channel = admin()
    broker = make_broker(config)
    broker.declare()
    bad = [
        (b"{", None, "bad_json"),
        (b'{"command": "format_disk", "payload": {"job_id": 1}}', "application/json", "unknown_command"),
        (b'{"command": "start_job", "payload": {"job_id": -4}}', None, "job_id_out_of_range"),
        (b'{"command": "start_job", "payload": [4]}', None, "bad_payload"),
        (pickle.dumps(RunsCode()), None, "pickle_refused"),
        (pickle.dumps({"command": "start_job"}), None, "not_work_request"),
        (json.dumps({"command": "start_job", "payload": {"job_id": 1, "pad": "x" * 5000}}).encode(), None,
         "too_large"),
    ]
    for body, content_type, _ in bad:
        publish_raw(channel, config.listen_queue, body, content_type)
    broker.send("restart_job", 5)
    got: list[Message] = []
    with consuming(broker, got.append):
        wait_for(lambda: len(got) == 1, what="the good message after the bad ones")
    broker.close()
    assert got[0].command == Command.RESTART_JOB and got[0].job_id == 5
    dead = drain(admin(), f"{config.listen_queue}.dead")
    assert [p.headers[ERROR_HEADER] for p, _ in dead] == [reason for _, _, reason in bad]
    assert [body for _, body in dead] == [body for body, _, _ in bad]  # kept intact for inspection
    assert all(p.headers[ERROR_MESSAGE_HEADER] and p.delivery_mode == 2 for p, _ in dead)
    assert ready_count(admin(), config.listen_queue) == 0
    assert not marker.exists(), "a pickle from the queue ran code"


def test_a_handler_refusing_the_input_dead_letters_it(config, admin, caplog):
    broker = make_broker(config)
    served: list[int] = []

    def handler(message: Message) -> None:
        if message.job_id == 404:
            raise UnknownJob(404)
        served.append(message.job_id)

    broker.send("start_job", 404)
    broker.send("start_job", 5)
    with caplog.at_level(logging.WARNING, logger="lando_ssh.broker"), consuming(broker, handler):
        wait_for(lambda: served == [5], what="the next job")
    broker.close()
    dead = drain(admin(), f"{config.listen_queue}.dead")
    assert len(dead) == 1
    properties, body = dead[0]
    assert properties.headers[ERROR_HEADER] == "unknown_job"
    assert properties.headers[ERROR_MESSAGE_HEADER] == "there is no job 404"
    assert json.loads(body)["payload"] == {"job_id": 404}
    assert "there is no job 404 [unknown_job]" in caplog.text


def test_a_failing_handler_gets_the_message_again_after_a_pause(config, admin):
    broker = make_broker(config, retry_delay=0.4)
    calls: list[float] = []

    def flaky(message: Message) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the job store is locked")

    broker.send("start_job", 3)
    with consuming(broker, flaky):
        wait_for(lambda: len(calls) == 2, what="the retry")
        time.sleep(0.3)  # a third call would mean the retried message was not acked
    broker.close()
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.4
    assert ready_count(admin(), config.listen_queue) == 0
    assert ready_count(admin(), f"{config.listen_queue}.dead") == 0


def test_setting_stop_ends_consume_within_a_second(config):
    broker = make_broker(config)
    got: list[Message] = []
    stop = threading.Event()
    thread = threading.Thread(target=broker.consume, args=(got.append, stop), daemon=True)
    thread.start()
    broker.send("start_job", 1)
    wait_for(lambda: got, what="the consumer to run")
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    broker.close()


def test_setting_stop_ends_consume_promptly_while_rabbitmq_is_unreachable(config, caplog):
    broker = make_broker(replace(config, port=_free_port()), reconnect=Backoff(5.0, 5.0))
    stop = threading.Event()
    thread = threading.Thread(target=broker.consume, args=(lambda m: None, stop), daemon=True)
    with caplog.at_level(logging.WARNING, logger="lando_ssh.broker"):
        thread.start()
        wait_for(lambda: "cannot connect to RabbitMQ" in caplog.text, what="a failed attempt")
        started = time.monotonic()
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0  # not the 5 s back-off


def test_a_slow_handler_and_an_idle_wait_keep_the_connection_alive(config, admin, caplog):
    # heartbeat 1 s: RabbitMQ drops a connection that stays silent for a few seconds
    config = replace(config, heartbeat=1)
    broker = make_broker(config)
    calls: list[int] = []

    def slow(message: Message) -> None:
        calls.append(message.job_id)
        if message.job_id == 1:
            time.sleep(4)

    with caplog.at_level(logging.WARNING, logger="lando_ssh.broker"), consuming(broker, slow):
        broker.send("start_job", 1)
        wait_for(lambda: len(calls) == 1, what="the slow job")
        time.sleep(4)  # the handler is busy for 4 s
        broker.send("start_job", 2)  # after the sender's connection sat idle for 4 s too
        wait_for(lambda: len(calls) == 2, what="the next job")
    broker.close()
    assert calls == [1, 2], "a message was delivered twice: the connection was lost while the handler ran"
    assert "RabbitMQ" not in caplog.text
    assert ready_count(admin(), config.listen_queue) == 0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_the_consumer_survives_a_broker_restart_and_loses_nothing(config, admin, caplog):
    broker = make_broker(config)
    got: list[Message] = []
    broker_stopped = threading.Event()

    def handler(message: Message) -> None:
        got.append(message)
        if message.job_id == 1 and len(got) == 1:
            broker_stopped.wait(60)  # still serving when RabbitMQ goes away: the ack cannot be sent

    broker.send("start_job", 1)
    try:
        with caplog.at_level(logging.INFO, logger="lando_ssh.broker"), consuming(broker, handler):
            wait_for(lambda: len(got) == 1, what="the first job")
            rabbitmqctl("stop_app")
            broker_stopped.set()
            rabbitmqctl("start_app")
            wait_for(lambda: len(got) == 2, timeout=30, what="the unacked job to come back")
            broker.send("start_job", 2)  # on a sender connection the restart broke: it reconnects
            wait_for(lambda: len(got) == 3, timeout=30, what="a job sent after the restart")
    finally:
        broker_stopped.set()
        rabbitmqctl("start_app")  # never leave the broker down, whatever happened above
    broker.close()
    assert [m.job_id for m in got] == [1, 1, 2]
    assert "lost the connection to RabbitMQ" in caplog.text
    assert "reconnected to RabbitMQ" in caplog.text
    assert ready_count(admin(), config.listen_queue) == 0


# ---- job_status events --------------------------------------------------------------------------

def bind_listener(channel, cfg: WorkQueueConfig) -> str:
    queue = f"{cfg.status_exchange}.listener"
    channel.queue_declare(queue, durable=False)
    channel.queue_bind(queue, cfg.status_exchange)
    return queue


def test_status_events_from_many_threads_all_arrive_in_order_per_job(config, admin):
    broker = make_broker(config)
    broker.declare()
    listener = bind_listener(admin(), config)
    steps = [(JobState.STARTING, JobStep.CREATE_VM), (JobState.RUNNING, JobStep.STAGING),
             (JobState.RUNNING, JobStep.RUNNING), (JobState.RUNNING, JobStep.STORE_OUTPUT),
             (JobState.FINISHED, JobStep.NONE)]
    jobs = range(1, 41)
    start = threading.Barrier(8)

    def pipeline(job_ids: list[int]) -> None:
        start.wait()
        for state, step in steps:
            for job_id in job_ids:
                broker.publish_status(job_id, state, step)

    threads = [threading.Thread(target=pipeline, args=([j for j in jobs if j % 8 == n],)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert broker.flush_status(10)
    broker.close()
    events = [json.loads(body) for _, body in drain(admin(), listener)]
    assert len(events) == len(jobs) * len(steps)
    assert all(set(e) == {"job", "state", "step"} for e in events)
    for job_id in jobs:
        assert [(e["state"], e["step"]) for e in events if e["job"] == job_id] == \
               [(s.value, t.value) for s, t in steps]


def test_status_events_published_while_rabbitmq_is_unreachable_are_kept_until_it_answers(config, admin):
    # the publisher points at a port nobody listens on, then at the real broker
    port = _free_port()
    broker = make_broker(replace(config, port=port))
    started = time.monotonic()
    broker.publish_status(9, "R", "R")  # returns at once, whatever the broker's state
    assert time.monotonic() - started < 0.1
    assert not broker.flush_status(0.5)
    broker.config = config  # the broker "comes back"
    admin().exchange_declare(config.status_exchange, "fanout")
    listener = bind_listener(admin(), config)
    assert broker.flush_status(10)
    broker.close()
    assert [json.loads(body) for _, body in drain(admin(), listener)] == [{"job": 9, "state": "R", "step": "R"}]


# ---- declarations and failures ------------------------------------------------------------------

def test_declare_makes_a_durable_work_queue_a_dead_letter_queue_and_a_fanout_status_exchange(config, admin):
    make_broker(config).declare()
    for queue in (config.listen_queue, f"{config.listen_queue}.dead"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            admin().queue_declare(queue, durable=False)  # RabbitMQ refuses: it exists, durable
        assert refused.value.reply_code == 406
    # lando and bespin-job-watcher declare job_status as a non-durable fanout: that must still be accepted
    admin().exchange_declare(config.status_exchange, "fanout", durable=False)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        admin().exchange_declare(config.status_exchange, "direct", durable=False)


def test_queues_declared_differently_by_someone_else_are_used_as_they_are(config, admin, caplog):
    channel = admin()
    channel.queue_declare(config.listen_queue, durable=True, arguments={"x-max-priority": 5})
    channel.exchange_declare(config.status_exchange, "fanout", durable=True)
    listener = bind_listener(channel, config)
    broker = make_broker(config)
    with caplog.at_level(logging.WARNING, logger="lando_ssh.broker"):
        broker.declare()
    assert "using it as it is" in caplog.text
    got: list[Message] = []
    broker.send("start_job", 21)
    broker.publish_status(21, "S", "V")
    with consuming(broker, got.append):
        wait_for(lambda: got, what="the command")
    assert broker.flush_status(10)
    broker.close()
    assert got[0].job_id == 21
    assert [json.loads(b) for _, b in drain(admin(), listener)] == [{"job": 21, "state": "S", "step": "V"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_when_rabbitmq_is_down_raises_broker_unavailable_with_a_sentence(config, caplog):
    secret = "pw-" + uuid.uuid4().hex
    broker = make_broker(replace(config, port=_free_port(), password=secret))
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pika")
    with pytest.raises(BrokerUnavailable) as caught:
        broker.send("start_job", 1)
    assert str(caught.value) == (f"could not send start_job for job 1: cannot connect to RabbitMQ at "
                                 f"amqp://guest@127.0.0.1:{broker.config.port}/%2F: connection refused")
    assert caught.value.exit_code == 3
    assert secret not in caplog.text


def test_a_wrong_password_is_reported_and_never_logged(config, caplog):
    secret = "pw-" + uuid.uuid4().hex
    broker = make_broker(replace(config, password=secret))
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pika")
    with pytest.raises(BrokerUnavailable) as caught:
        broker.declare()
    assert "login refused for user 'guest'" in str(caught.value)
    assert secret not in str(caught.value)
    assert caplog.text and secret not in caplog.text
