"""The VM pool: VMs as records of their own, reused, shared and packed, kept warm for the next job.

The pool comprises VM records in the job store's database, a pure placement, a driver that applies it to the
cloud, and the figures an admin reads. Each round (`PoolManager.round`):
1. reconcile the records with the cloud: boots that answered become ready, dead or silent VMs go, deletions
   finish, pool VMs no record owns are deleted (the same step adopts everything after a crash);
2. plan: waiting jobs onto VMs with room, else boots (cheapest flavor, or one packed larger flavor), within
   the scheduler's limits; empty VMs past their keep-alive, drained or silent, deleted;
3. apply: reservations as compare-and-set transactions on the VM's row, boots recorded before the cloud is
   asked, deletions only of VMs still empty.

- `model.py`: `PoolVm`, `PoolState`, `Resources`; `reserve`/`release`, the only ways jobs come and go.
- `store.py`, `sqlite.py`, `postgres.py`: `VmStore` (table `vms` / `lando_vms` beside the jobs).
- `policy.py`: `pool.share`, `pool.pack`, `vm.keepalive`; which jobs may share a VM.
- `packing.py`, `placement.py`: the plan (pure; limits and reasons from `lando_ssh.scheduler`).
- `launch.py`: the cloud request for a VM (its own keypair, cloud-init) and the SSH probe, as interfaces.
- `lifecycle.py`, `manager.py`: reconcile and retire; the round.
- `accounting.py`, `figures.py`: who a shared VM's hours go to; the Prometheus figures.
docs/vm-pool.md is the admin's account of it.
"""
