"""The job engine: walks one job through its steps V S R o O T on a VM, resumable at any step.

  driver        the one path that drives a job (daemon and `lando-ssh job N`): lock, restart rule,
                admission, the walk through the steps, step bookkeeping
  runtime       what the steps share: config, journal, cloud, the job's SSH connection, keys, lock,
                cancel and stop signals, transfer deadlines and progress
  create_vm     V: ask for the VM (or find the one the job has), wait for boot, pin host keys, wait for SSH
  stage         S: scripts, workflow, job order and inputs to the VM, sizes checked
  run           R: start cwltool detached, wait on it, re-attach after a restart, health and time limits
  organize      o: the post-process command, lando-organize, the output object and the run's figures
  store_output  O: the results back into the output dir, the output object rewritten, lando's docs
  terminate     T: delete the VM (or keep it when the job source asks); the deletes the others use
  policy        failure, cancel and keep-VM policy; deleting a kept VM
  restart       the restart rule, and what a restart resets
  paths         where a job's files live on its VM
  cwl_inline    a CWL rewrite made as the workflow is staged

Each step is a function `step(runtime, job_id)` that reads the job record, does its work idempotently,
and records what it did before it returns. The engine talks to the outside world only through the cloud
driver and `remote.Remote`; it never imports pika or openstacksdk.
"""
from lando_ssh.model import STEP_NAMES

from .driver import Engine
from .paths import JobPaths, remote_scripts_dir
from .runtime import ONE_STREAM_BYTES, Runtime, ServerStopping

__all__ = ["ONE_STREAM_BYTES", "STEP_NAMES", "Engine", "JobPaths", "Runtime", "ServerStopping",
           "remote_scripts_dir"]
