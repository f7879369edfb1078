"""Shared by the benchmarks: a throwaway lando-ssh installation with N stored jobs."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pika
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "tests" / "workflows"


def write_config(root: Path, **settings: Any) -> Path:
    queue = f"lando-bench-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {"data_dir": str(root / "data"), "log_level": "WARNING",
              "cloud": {"driver": "local", "installation_id": queue},
              "work_queue": {"listen_queue": queue, "status_exchange": queue + "-status"}}
    for key, value in settings.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = root / "lando.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def store_jobs(config: Any, workflow: Path, job_order: dict[str, Any], count: int) -> list[int]:
    """`count` copies of one validated job, stored directly (validation is not what is measured)."""
    from lando_ssh.model import Job
    from lando_ssh.store import open_store
    from lando_ssh.workflow import prepare

    prepared = prepare(str(workflow), None, job_order)
    store = open_store(config.store_url)
    ids = []
    for i in range(count):
        job = store.create(Job(id=0, name=f"bench-{i}", workflow=str(workflow), job_order=prepared.job_order,
                               workflow_doc=prepared.packed))
        store.update(job.id, lambda j: setattr(j, "output_dir", os.path.join(config.outputs_base, f"job-{j.id}")))
        ids.append(job.id)
    store.close()
    return ids


def rabbit() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/",
                                                             pika.PlainCredentials("guest", "guest")))


def delete_queues(config: Any) -> None:
    connection = rabbit()
    channel = connection.channel()
    queue = config.work_queue.listen_queue
    for q in (queue, queue + ".dead"):
        channel.queue_delete(q)
    for x in (queue + ".dead", config.work_queue.status_exchange):
        channel.exchange_delete(x)
    connection.close()
