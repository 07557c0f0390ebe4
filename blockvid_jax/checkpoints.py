"""The params checkpoint format shared by the whole project: `spec.json` + an orbax checkpoint.

A params directory holds
  DIR/spec.json   `DiTSpec.to_dict()` of the model
  DIR/params/     an orbax `StandardCheckpointer` checkpoint of the (unboxed) Flax `params` tree
It is written by `python -m blockvid_jax.convert` and read by training and sampling to start from
pretrained weights. `save_params` is atomic: it writes into a temporary directory next to DIR and
renames it at the end, so a failure leaves nothing at DIR. It is meant for one process (a converter
or an export); multi-host training checkpoints go through the training loop's CheckpointManager.
`load_params` restores onto given `NamedSharding`s (initialise-by-shape, then shard).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Optional

import jax
from flax import traverse_util

from blockvid_jax.errors import CheckpointError, ConfigError, describe
from blockvid_jax.models.params import abstract_params
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel.distributed import sync_processes

SPEC_FILE = "spec.json"
PARAMS_DIR = "params"
# Spec fields that choose how the model runs, not what it is: they may differ from the stored spec.
RUNTIME_FIELDS = ("dtype", "param_dtype", "remat_policy", "attention_impl", "frames_per_chunk")


def is_params_checkpoint(directory: str) -> bool:
  directory = os.fspath(directory)
  return (os.path.isfile(os.path.join(directory, SPEC_FILE)) and
          os.path.isdir(os.path.join(directory, PARAMS_DIR)))


def check_output_dir(directory: str) -> str:
  """Absolute path of a directory to write; error if it is a file or a non-empty directory."""
  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  if os.path.exists(directory):
    if not os.path.isdir(directory):
      raise CheckpointError(f"{directory} exists and is not a directory")
    if os.listdir(directory):
      raise CheckpointError(f"{directory} is not empty; refusing to overwrite it")
  return directory


def _check_tree(spec: DiTSpec, params: Any) -> None:
  want = traverse_util.flatten_dict(abstract_params(spec))
  try:
    got = traverse_util.flatten_dict(params)
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"params must be a nested dict (the Flax params tree): {describe(e)}")
  if set(got) != set(want):
    diff = sorted("/".join(p) for p in set(got) ^ set(want))
    raise CheckpointError(f"params do not match the spec's parameter tree: {diff[:5]}")
  for path, leaf in want.items():
    if tuple(got[path].shape) != tuple(leaf.shape):
      raise CheckpointError(f"param {'/'.join(path)} has shape {tuple(got[path].shape)}, the spec "
                            f"needs {tuple(leaf.shape)}")


def save_params(directory: str, spec: DiTSpec, params: Any) -> str:
  """Writes `spec` and `params` (NumPy or jax arrays) to a new params directory; returns its path.

  Multi-process runs call it on every process with the same (global, sharded) jax arrays: each
  process writes its own shards through orbax; process 0 writes spec.json and publishes the
  directory (an atomic rename), and every process returns once it is in place.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  multi = jax.process_count() > 1
  primary = jax.process_index() == 0
  directory = check_output_dir(directory)
  _check_tree(spec, params)
  parent, name = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  # Every process must name the same staging directory; one process is never raced by itself.
  tmp = os.path.join(parent, f".{name}.tmp-" + ("multiprocess" if multi else uuid.uuid4().hex[:8]))
  try:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
    sync_processes(f"save_params staged {directory}")
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, PARAMS_DIR), params)
      checkpointer.wait_until_finished()
    if primary:
      with open(os.path.join(tmp, SPEC_FILE), "w", encoding="utf-8") as f:
        json.dump(spec.to_dict(), f, indent=2, sort_keys=True)
        f.write("\n")
      if os.path.isdir(directory):
        os.rmdir(directory)  # empty (checked above)
      os.rename(tmp, directory)
    sync_processes(f"save_params published {directory}")
  except BaseException:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def load_spec(directory: str) -> DiTSpec:
  """The `DiTSpec` stored in a params directory."""
  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  if not is_params_checkpoint(directory):
    raise CheckpointError(f"{directory} is not a params checkpoint (expected {SPEC_FILE} and "
                          f"{PARAMS_DIR}/ in it; write one with python -m blockvid_jax.convert)")
  path = os.path.join(directory, SPEC_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return DiTSpec.from_config(json.load(f))
  except (OSError, ValueError, TypeError) as e:  # ConfigError is a ValueError
    raise CheckpointError(f"bad {path}: {describe(e)}") from e


def _spec_mismatch(stored: DiTSpec, given: DiTSpec) -> list[str]:
  a, b = stored.to_dict(), given.to_dict()
  return [f"{k}={a[k]!r} (given {b[k]!r})" for k in a if k not in RUNTIME_FIELDS and a[k] != b[k]]


def load_params(directory: str, spec: Optional[DiTSpec] = None,
                shardings: Any = None) -> tuple[DiTSpec, Any]:
  """Reads a params directory -> (spec, params of jax Arrays).

  spec: if given, it must describe the stored model (fields other than `RUNTIME_FIELDS` equal); it
    is returned, and params are cast to its param_dtype.
  shardings: a pytree of `jax.sharding.Sharding` matching the params (e.g. NamedShardings from the
    logical rules), or one Sharding for all; default: the first device.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  stored = load_spec(directory)
  if spec is not None:
    diff = _spec_mismatch(stored, spec)
    if diff:
      raise CheckpointError(f"{directory} holds a different model: {', '.join(diff)}")
  else:
    spec = stored
  abstract = abstract_params(spec)
  if shardings is None:
    shardings = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree_util.tree_map(lambda _: shardings, abstract)
  try:
    target = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  except ValueError as e:
    raise CheckpointError(f"shardings do not match the params tree of {directory}: "
                          f"{describe(e)}") from e
  path = os.path.join(directory, PARAMS_DIR)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      _check_stored(checkpointer, path, abstract)  # before restoring: a clear error, no half-reads
      params = checkpointer.restore(path, target)
  except CheckpointError:
    raise
  except (ValueError, KeyError, OSError, TypeError, AttributeError) as e:
    raise CheckpointError(f"cannot restore {path}: {describe(e)}") from e
  return spec, params


def _check_stored(checkpointer, path: str, abstract: Any) -> None:
  """The arrays stored under params/ have the tree and shapes that spec.json implies."""
  meta = checkpointer.metadata(path).item_metadata
  stored = traverse_util.flatten_dict(getattr(meta, "tree", meta))
  want = traverse_util.flatten_dict(abstract)
  if set(stored) != set(want):
    diff = sorted("/".join(p) for p in set(stored) ^ set(want))
    raise CheckpointError(f"cannot restore {path}: its parameter tree differs from spec.json's "
                          f"({', '.join(diff[:5])})")
  for key, leaf in want.items():
    if tuple(stored[key].shape) != tuple(leaf.shape):
      raise CheckpointError(f"cannot restore {path}: {'/'.join(key)} is stored with shape "
                            f"{tuple(stored[key].shape)} but spec.json needs {tuple(leaf.shape)}")


__all__ = ["CheckpointError", "check_output_dir", "is_params_checkpoint", "load_params",
           "load_spec", "save_params"]
