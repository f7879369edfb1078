"""Run the local bespin-api stand-alone, for trying lando-ssh against it.

    python -m tests.bespin_api --port 8000 --token secret [--queue lando] [--rabbit-host 127.0.0.1]

Point lando-ssh at it (`bespin_api: {url: http://127.0.0.1:8000/api/v2, token: secret}`), then
create and start a job through the test-only routes (share group 1 exists; more with POST /_test/share-groups
`{"name": ..., "email": ..., "users": [["Ann Lee", "<dds id>"]]}`, named by a job's "share_group"):

    curl -H 'Authorization: Token secret' -H 'Content-Type: application/json' \\
         -d '{"workflow_url": "https://.../packed.cwl", "job_order": {...}}' http://127.0.0.1:8000/_test/jobs
    curl -H 'Authorization: Token secret' -X POST http://127.0.0.1:8000/_test/jobs/1/start
    curl -H 'Authorization: Token secret' http://127.0.0.1:8000/_test/jobs/1     # job, PUTs, errors
"""
from __future__ import annotations

import argparse
import signal
import threading

from .service import BespinApiService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bespin_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    parser.add_argument("--token", default="test-token", help="the admin token lando-ssh must send")
    parser.add_argument("--queue", default="lando", help="the RabbitMQ queue lando-ssh listens on")
    parser.add_argument("--rabbit-host", default="127.0.0.1")
    parser.add_argument("--rabbit-port", type=int, default=5672)
    parser.add_argument("--rabbit-user", default="guest")
    parser.add_argument("--rabbit-password", default="guest")
    args = parser.parse_args(argv)
    service = BespinApiService(args.token, args.host, args.port, queue=args.queue, rabbit={
        "host": args.rabbit_host, "port": args.rabbit_port, "username": args.rabbit_user,
        "password": args.rabbit_password})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    print(f"bespin-api on {service.url} (token from --token); lando queue {args.queue}", flush=True)
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
