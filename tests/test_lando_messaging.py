"""The daemon serves what lando-messaging's own LandoClient sends (2.1.0, on Python 2.7 and 3.11, the id an int or
a string of digits as bespin-api sends it), beside `lando-ssh send`, through the real RabbitMQ, sshd VMs and cwltool."""
from __future__ import annotations

import yaml
from conftest import WORKFLOWS, Daemon, Lando, finished, send, wait_job
from lando_client import landoclient


def test_landos_own_client_on_python_2_and_3_starts_and_cancels_jobs_beside_lando_ssh_send(
        lando: Lando, daemon: Daemon, broker_names: dict[str, str]):
    queue = broker_names["listen_queue"]
    greet = lando.root / "greet.yml"
    greet.write_text(yaml.safe_dump({"message": "hello"}))
    started = {how: lando.submit(WORKFLOWS / "no_inputs.cwl", greet) for how in ("py2.7", "py3.11", "send")}
    long_sleep = lando.root / "sleep.yml"
    long_sleep.write_text(yaml.safe_dump({"seconds": 300}))
    sleeper = lando.submit(WORKFLOWS / "sleep.cwl", long_sleep)
    daemon.start()

    landoclient("2.7", "start_job", started["py2.7"], queue)  # a Python 2 pickle, the id an int
    landoclient("3.11", "start_job", str(started["py3.11"]), queue)  # a Python 3 pickle, the id a string
    send(lando, "start_job", started["send"])
    landoclient("2.7", "start_job", str(sleeper), queue)
    wait_job(lando, sleeper, lambda j: j.state.value == "R", daemon=daemon)
    landoclient("3.11", "cancel_job", sleeper, queue)

    jobs = {how: wait_job(lando, job_id, finished, timeout=180, daemon=daemon) for how, job_id in started.items()}
    assert {how: job.state.value for how, job in jobs.items()} == {"py2.7": "F", "py3.11": "F", "send": "F"}
    assert wait_job(lando, sleeper, finished, daemon=daemon).state.value == "C"
    assert lando.vm_dirs() == []
