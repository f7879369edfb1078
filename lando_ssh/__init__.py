"""lando-ssh runs CWL workflows for a facility on per-job VMs, driven over SSH.

The parts:
  broker    consumes start_job / cancel_job / restart_job from RabbitMQ, publishes job_status
  server    the daemon: wiring, worker threads, recovery at start, graceful stop
  scheduler decides which waiting jobs start now (limits, quota, flavor choice)
  engine/   drives one job through its steps: V create VM, S stage, R run, o organize, O store, T terminate
  staging   what moves where: inputs to the VM, outputs back, the output object rewritten
  remote    one SSH connection to one VM: run, start detached, wait, put, get, kill
  cloud/    VM drivers (local sshd, openstack) behind the `Cloud` protocol; cloudinit renders user data
  store/    job sources (sqlite, postgres, bespin-api) behind the `JobStore` protocol
  model     Job, JobState, JobStep and the allowed transitions; errors: the exception hierarchy

The loop: a message names a job -> the server loads it from the store -> the scheduler says
when it may start -> the engine runs its steps, each an idempotent function that records
what it did on the job before returning -> every change is stored and published.
"""

__version__ = "0.1.0"
