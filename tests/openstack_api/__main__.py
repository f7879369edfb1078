"""Run the local OpenStack API service stand-alone.

    python -m tests.openstack_api --port 8774 [--local-vms] [--set boot_delay=2 --set max_instances=3]

Then point lando-ssh at it (cloud.driver: openstack; cloud_settings.auth_url:
http://127.0.0.1:8774/identity/v3, username lando, password secret, project_name lando; the user
may work in project lando-lab too, `--set other_projects=[...]` to change that).
With --local-vms each server is a real sshd on 127.0.0.1 (the local cloud driver's VMs,
kept under --data-dir); its port is in the server metadata key `lando_ssh_port`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading

from .backends import LocalBackend, MemoryBackend, ServerBackend
from .service import OpenStackApiService, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.openstack_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8774, help="0 picks a free port (printed on start)")
    parser.add_argument("--local-vms", action="store_true", help="back each server by a local-cloud VM (real sshd)")
    parser.add_argument("--config", default=None, help="a lando-ssh config for the local VMs (cloud.local.*)")
    parser.add_argument("--data-dir", default=None, help="where local-cloud VMs live (with --local-vms)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a setting, e.g. max_instances=2 or server_error_rate=0.5")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    settings = Settings()
    fields = {f.name for f in dataclasses.fields(settings)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields:
            parser.error(f"unknown setting {key!r}; settings: {', '.join(sorted(fields))}")
        try:
            setattr(settings, key, json.loads(value))
        except ValueError:
            setattr(settings, key, value)  # a bare string
    backend: ServerBackend = MemoryBackend()
    if args.local_vms:
        from lando_ssh.config import Config, load_config

        config = load_config(args.config, env={}) if args.config else Config()
        if args.data_dir:
            config.data_dir = args.data_dir
        backend = LocalBackend(config)
    service = OpenStackApiService(settings, backend, host=args.host, port=args.port, verbose=args.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    print(f"OpenStack API on {service.url}; auth_url {service.auth_url}", flush=True)
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
