"""Checkpoints: an orbax `CheckpointManager` holding the train state AND the grain iterator state.

Both items are written in the same step (`state`: sharded arrays via `StandardSave`; `data`: the
iterator position via grain's orbax handler), asynchronously, atomically (orbax writes a temporary
directory and renames it when complete, so a killed process never leaves a half checkpoint that
`latest_step` would pick up), keeping the newest `keep` steps. Restores go straight into the sharded
abstract target, so resuming never materialises a full array on one device.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import grain
import orbax.checkpoint as ocp

from blockvid_jax.training.state import TrainState


def make_manager(directory: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """A manager over `directory` (made absolute), items `state` and `data`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: TrainState, data_iter: Any,
         *, force: bool = True) -> bool:
  """Starts writing `state` and the iterator position as checkpoint `step` (async)."""
  args = {"state": ocp.args.StandardSave(state)}
  if data_iter is not None:
    args["data"] = grain.checkpoint.CheckpointSave(data_iter)
  return manager.save(step, args=ocp.args.Composite(**args), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: TrainState,
                   data_iter: Any) -> Optional[TrainState]:
  """Restores the newest checkpoint into `abstract_state`'s shardings (and `data_iter` in place).

  Returns None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  args = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None:
    args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return restored["state"]
