"""How fast the daemon records start_job messages, against RabbitMQ's own consume-and-ack rate.

    .venv/bin/python bench/intake.py [--jobs 1000]

Publishes N start_job messages for stored jobs to a daemon whose `limits.max_concurrent_jobs`
is 0 (no VM boots: every job is recorded in S with its waiting reason) and reports jobs
recorded per second. The baseline, measured in the same run on the same broker: a bare pika
consumer that acks the same number of messages without doing anything. Goal: >= 500 jobs/s.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORKFLOWS, delete_queues, rabbit, store_jobs, write_config  # noqa: E402


def bare_consume_rate(queue: str, count: int) -> float:
    connection = rabbit()
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    body = json.dumps({"command": "start_job", "payload": {"job_id": 1}, "version": "1"}).encode()
    for _ in range(count):
        channel.basic_publish("", queue, body)
    channel.basic_qos(prefetch_count=20)
    seen = 0
    started = time.perf_counter()
    for method, _, _ in channel.consume(queue):
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen == count:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    from lando_ssh.config import load_config
    from lando_ssh.messages import Command, encode_message
    from lando_ssh.model import JobState
    from lando_ssh.server import Server
    from lando_ssh.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(str(write_config(Path(tmp), limits={"max_concurrent_jobs": 0})), env={})
        baseline = bare_consume_rate(config.work_queue.listen_queue + "-baseline", args.jobs)
        ids = store_jobs(config, WORKFLOWS / "no_inputs.cwl", {}, args.jobs)
        server = Server(config)
        server.broker.declare()
        connection = rabbit()
        channel = connection.channel()
        for job_id in ids:
            channel.basic_publish("", config.work_queue.listen_queue, encode_message(Command.START_JOB, job_id))
        connection.close()
        store = open_store(config.store_url)
        db = sqlite3.connect(config.store_url[len("sqlite:///"):])
        thread = threading.Thread(target=server.serve, daemon=True)
        started = time.perf_counter()
        thread.start()
        while db.execute("SELECT count(*) FROM jobs WHERE state = ?", (JobState.STARTING.value,)).fetchone()[0] \
                < len(ids):
            time.sleep(0.02)
        db.close()
        elapsed = time.perf_counter() - started
        waiting = store.get(ids[-1]).reason
        server.stop()
        thread.join(15)
        store.close()
        delete_queues(config)
    rate = len(ids) / elapsed
    print(f"bare pika consume+ack: {baseline:7.0f} messages/s")
    print(f"lando-ssh daemon:      {rate:7.0f} jobs recorded/s ({len(ids)} start_job in {elapsed:.2f}s, "
          f"{rate / baseline:.0%} of the bare rate; goal >= 500/s)")
    print(f"the last job waits with: {waiting!r}")


if __name__ == "__main__":
    main()
