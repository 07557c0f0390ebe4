"""Multi-host start-up: `jax.distributed.initialize()` when the launch scripts ask for it.

`launch/tpu_vm.sh` and `launch/gpu_multinode.sh` set BLOCKVID_DISTRIBUTED=1; on GPU hosts they also
set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. On TPU pods and under SLURM JAX
finds the other processes by itself.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize() -> bool:
  """Initialises the distributed runtime if BLOCKVID_DISTRIBUTED=1; returns whether it did."""
  if os.environ.get("BLOCKVID_DISTRIBUTED", "0") != "1":
    return False
  kwargs = {}
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  return True


def sync_processes(name: str) -> None:
  """A barrier across all processes named `name` (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)
