"""A chaos run: Arvados' stub-driver test, done with real sshd VMs (a benchmark, not a timed test).

    .venv/bin/python bench/chaos.py [--jobs 300] [--sleep 20] [--kill-every 60] [--restart-rabbitmq]

N light jobs (a shell that sleeps then prints `{}`) go through two `lando-ssh run` servers sharing one
PostgreSQL job store and one RabbitMQ queue, on the local cloud with its fault knobs on (docs/local-cloud.md):
10 % of creates and of deletes fail, 5 % of boots hang, 5 % of VMs die mid-run, every VM's SSH connections
are cut every 25 s. Every `--kill-every` seconds one server (in turn) is killed with SIGKILL and started
again. With `--restart-rabbitmq`, RabbitMQ is restarted once (`rabbitmqctl stop_app` / `start_app`) a third of
the way in -- off by default: it restarts the machine's shared broker, so only where no one else uses it.

A job that ends in E must name an injected fault; it is then sent restart_job, until it ends in F.
Prints, against the goal of 0 for each: jobs that did not end exactly once, jobs lost (not F at the end),
E reasons that name no injected fault, VMs created twice for one attempt, VMs left once the servers' sweep
has run, commands dead-lettered or left in the queue, status events the servers could not publish; and
how long it took.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORKFLOWS, delete_queues, rabbit, store_jobs, write_config  # noqa: E402

PG_SERVER = os.environ.get("LANDO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
FAULTS = {"fail_create_fraction": 0.1, "fail_delete_fraction": 0.1, "hang_boot_fraction": 0.05,
          "die_fraction": 0.05, "die_after": 10.0, "drop_ssh_every": 25.0}
# what an E reason says for each injected fault (a reason matching none is a bug)
NAMES_A_FAULT = {
    "create failed": re.compile(r"fail_create_fraction"),
    "delete failed": re.compile(r"fail_delete_fraction"),
    "boot hung": re.compile(r"boot|ACTIVE", re.I),
    "VM died or SSH dropped": re.compile(r"died|unreachable|status ERROR|connection|SSH|stopped without recording",
                                         re.I),
}


class Server:
    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDO_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=env)

    def kill9_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fault_of(reason: str) -> str | None:
    return next((name for name, pattern in NAMES_A_FAULT.items() if pattern.search(reason)), None)


def queue_depth(name: str) -> int:
    connection = rabbit()
    try:
        return int(connection.channel().queue_declare(name, passive=True).method.message_count)
    except Exception:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--sleep", type=int, default=20, help="seconds each job's workflow sleeps")
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--restart-rabbitmq", action="store_true",
                        help="restart RabbitMQ once (the machine's broker: only where no one else uses it)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--grace", type=float, default=60.0,
                        help="health.grace: seconds a job's VM may stay unreachable (the default is 300; a short one "
                             "finds dead VMs sooner, but on an overloaded host counts slow reconnects as dead VMs)")
    args = parser.parse_args()
    import psycopg

    from lando_ssh.broker import Broker
    from lando_ssh.config import load_config
    from lando_ssh.messages import Command
    from lando_ssh.store import open_store

    database = f"lando_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = f"{PG_SERVER}/{database}"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_config(
            root, store={"url": url, "lease_ttl": 10}, limits={"max_concurrent_jobs": args.jobs},
            cwl_base_command=["sh", "-c", 'sleep "$0"; echo "{}"', str(args.sleep)], poll_interval=10,
            cloud={"local": dict(FAULTS)}, vm={"boot_timeout": 15, "boot_retries": 2, "ssh_timeout": 30},
            health={"interval": 3, "grace": args.grace}, sweep={"interval": 15, "grace": 20}, log_level="INFO")
        config = load_config(str(path), env={})
        ids = store_jobs(config, WORKFLOWS / "sleep.cwl", {"seconds": args.sleep}, args.jobs)
        lando = [sys.executable, "-m", "lando_ssh", "--config", str(path)]
        servers = [Server(n, [*lando, "run"], root / f"{n}.log") for n in ("first", "second")]
        store = open_store(url)
        started = time.monotonic()
        errors: collections.Counter[str] = collections.Counter()
        unexplained: list[str] = []
        restarts_sent: dict[int, int] = collections.Counter()
        rabbit_restarted = False
        try:
            for s in servers:
                s.start()
            time.sleep(2)
            with Broker(config.work_queue) as broker:
                for job_id in ids:
                    broker.send(Command.START_JOB, job_id)
            next_kill, turn = started + args.kill_every, 0
            while True:
                now = time.monotonic()
                if now - started > args.timeout:
                    break
                if now >= next_kill:
                    servers[turn % 2].kill9_and_restart()
                    turn, next_kill = turn + 1, now + args.kill_every
                if args.restart_rabbitmq and not rabbit_restarted and now - started > args.kill_every / 3:
                    restart_rabbitmq()
                    rabbit_restarted = True
                jobs = {i: store.get(i) for i in ids}
                for job_id, job in jobs.items():
                    e_count = [h.state.value for h in job.history].count("E")
                    if job.state.value == "E" and e_count > restarts_sent[job_id]:
                        fault = fault_of(job.reason or "")
                        if fault is None:
                            unexplained.append(f"job {job_id}: {job.reason}")
                        errors[fault or "unexplained"] += 1
                        with Broker(config.work_queue) as broker:
                            broker.send(Command.RESTART_JOB, job_id)
                        restarts_sent[job_id] = e_count
                if all(j.state.value == "F" for j in jobs.values()):
                    break
                time.sleep(2)
            took = time.monotonic() - started
            sweep_deadline = time.monotonic() + 120  # the servers' sweep deletes what failed deletes left
            while _vm_dirs(config) and time.monotonic() < sweep_deadline:
                time.sleep(2)
            jobs = {i: store.get(i) for i in ids}
            results = {
                "took": took,
                "not_once": [i for i, j in jobs.items() if [h.state.value for h in j.history].count("F") != 1],
                "lost": [i for i, j in jobs.items() if j.state.value != "F"],
                "created_twice": [n for n, c in collections.Counter(_created(config)).items() if c > 1],
                "vms_left": _vm_dirs(config),
                "dead_lettered": queue_depth(config.work_queue.listen_queue + ".dead"),
                "queued": queue_depth(config.work_queue.listen_queue),
                "kills": sum(s.kills for s in servers),
                "errors": dict(errors), "unexplained": unexplained,
                "unpublished": sum(_unpublished(s.log) for s in servers),
                "internal": sum(s.log.read_text(errors="replace").count("internal error") for s in servers),
            }
        finally:
            for s in servers:
                s.stop()
            store.close()
            _delete_left(config)
            delete_queues(config)
            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            if os.environ.get("CHAOS_KEEP_LOGS"):
                for s in servers:
                    os.makedirs(os.environ["CHAOS_KEEP_LOGS"], exist_ok=True)
                    Path(os.environ["CHAOS_KEEP_LOGS"], s.log.name).write_bytes(s.log.read_bytes())
    _report(args, results)


def _vm_dirs(config: Any) -> list[str]:
    root = config.local_cloud_root
    try:
        return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []


def _created(config: Any) -> list[str]:
    try:
        with open(os.path.join(config.local_cloud_root, "created.log")) as f:
            return [line.split()[1] for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _unpublished(log: Path) -> int:
    return sum(int(m) for m in re.findall(r"(\d+) job_status event\(s\) were not published", log.read_text(
        errors="replace")))


def _delete_left(config: Any) -> None:
    """What the run left, deleted with the fault knobs off."""
    from lando_ssh.cloud.local import LocalCloud

    config.cloud.local.fail_delete_fraction = 0.0
    cloud = LocalCloud(config)
    for name in _vm_dirs(config):
        try:
            cloud.delete_vm(name)
        except Exception as e:  # noqa: BLE001 (a benchmark's cleanup: say it and go on)
            print(f"could not delete VM {name}: {e}", file=sys.stderr)


def _report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    if not r:
        print("the run did not complete")
        return
    print(f"chaos run: {args.jobs} jobs, 2 servers on one PostgreSQL store, {r['kills']} kill -9s "
          f"(one every {args.kill_every:.0f}s), RabbitMQ restarted: {'yes' if args.restart_rabbitmq else 'no'}; "
          f"faults {FAULTS}")
    print(f"took {r['took']:.0f}s")
    print(f"jobs not ended exactly once:        {len(r['not_once'])} {r['not_once'][:10]}")
    print(f"jobs lost (not F at the end):       {len(r['lost'])} {r['lost'][:10]}")
    print(f"E reasons naming an injected fault: {r['errors']}")
    print(f"E reasons naming none (bugs):       {len(r['unexplained'])}")
    for line in r["unexplained"][:10]:
        print(f"  {line[:300]}")
    print(f"VMs created twice for one attempt:  {len(r['created_twice'])} {r['created_twice'][:5]}")
    print(f"VMs left after the sweep:           {len(r['vms_left'])} {r['vms_left'][:5]}")
    print(f"commands dead-lettered / left:      {r['dead_lettered']} / {r['queued']}")
    print(f"status events not published:        {r['unpublished']}")
    print(f"internal errors in the servers' logs: {r['internal']}")


if __name__ == "__main__":
    main()
