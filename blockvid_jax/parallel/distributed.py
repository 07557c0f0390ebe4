"""Multi-host start-up: `jax.distributed.initialize()` when the launch scripts ask for it.

`launch/tpu_vm.sh` and `launch/gpu_multinode.sh` set BLOCKVID_DISTRIBUTED=1; on GPU hosts they also
set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. On TPU pods and under SLURM JAX
finds the other processes by itself.

Several CPU processes (gloo collectives; the multi-process tests) run without the persistent
compilation cache: there only process 0 writes the cache, so process 0 runs a deserialized executable
while the others compile their own, and with jax 0.10.2 that pair deadlocked in the first train step
of the causal stage (an all-to-all in the scanned backward pass). Accelerator backends keep the cache.
"""

from __future__ import annotations

import os

from absl import logging
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
  if (jax.process_count() > 1 and jax.default_backend() == "cpu"
      and jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir):
    logging.warning("persistent compilation cache %s disabled: several CPU processes",
                    jax.config.jax_compilation_cache_dir)
    jax.config.update("jax_enable_compilation_cache", False)
  return True


def sync_processes(name: str) -> None:
  """A barrier across all processes named `name` (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)
