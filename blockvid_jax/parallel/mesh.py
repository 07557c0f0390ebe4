"""Device mesh from config, and the logical -> NamedSharding plumbing (sharded init, constraints)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from blockvid_jax.parallel.axes import LOGICAL_RULES, MESH_AXES
from blockvid_jax.errors import MeshError


def mesh_shape(shape: Mapping[str, int], num_devices: Optional[int] = None) -> tuple[int, ...]:
  """Resolves {'data': -1, 'fsdp': 2, ...} (at most one -1) to a tuple over MESH_AXES."""
  n = jax.device_count() if num_devices is None else num_devices
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise MeshError(f"unknown mesh axis name(s) {unknown}; axes are {MESH_AXES}")
  dims = [int(shape.get(a, 1)) for a in MESH_AXES]
  free = [i for i, d in enumerate(dims) if d == -1]
  if len(free) > 1:
    raise MeshError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, dims))}")
  if any(d == 0 or d < -1 for d in dims):
    raise MeshError(f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, dims))}")
  known = int(np.prod([d for d in dims if d != -1]))
  if free:
    if n % known:
      raise MeshError(f"{n} devices cannot be split as {dict(zip(MESH_AXES, dims))}")
    dims[free[0]] = n // known
  if int(np.prod(dims)) != n:
    raise MeshError(f"mesh {dict(zip(MESH_AXES, dims))} needs {int(np.prod(dims))} devices, "
                    f"{n} are available")
  return tuple(dims)


# One video (batch 1) on n devices: heads and MLP over `tensor`; the chunk's tokens and the KV cache
# slots over `context` (sequence parallel). n not listed, or a model these do not divide: the
# largest valid split of the devices (`sampling_mesh_shape`).
SAMPLING_PRESETS = {1: {}, 2: {"tensor": 2}, 4: {"context": 2, "tensor": 2},
                    8: {"context": 2, "tensor": 4}}


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def sampling_mesh_shape(num_devices: int, num_heads: int, token_counts: Sequence[int]) -> dict:
  """{'data', 'context', 'tensor'} for sampling one video on `num_devices`.

  token_counts: every length that `context` splits (tokens per chunk, cache slots per buffer).
  The preset for the device count if the model divides it, else the split (context x tensor) that
  uses the most devices, tensor as large as divides the heads; devices left over go to `data`
  (replicated work for batch 1).
  """
  def valid(c, t):
    return num_heads % t == 0 and all(x % c == 0 for x in token_counts)

  preset = SAMPLING_PRESETS.get(num_devices)
  if preset is not None and valid(preset.get("context", 1), preset.get("tensor", 1)):
    c, t = preset.get("context", 1), preset.get("tensor", 1)
  else:
    c, t = max(((c, t) for c in _divisors(num_devices) for t in _divisors(num_devices // c)
                if valid(c, t)), key=lambda ct: (ct[0] * ct[1], ct[1]))
  return {"data": num_devices // (c * t), "context": c, "tensor": t}


def make_mesh(shape: Mapping[str, int], devices=None) -> Mesh:
  """A mesh over ('data', 'fsdp', 'context', 'tensor') with Auto axis types (linen partitioning)."""
  devices = jax.devices() if devices is None else list(devices)
  dims = mesh_shape(shape, len(devices))
  return jax.make_mesh(dims, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_to_sharding(spec_tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(spec_tree, mesh, rules)


def named(mesh: Mesh, *logical: Optional[str], rules=LOGICAL_RULES) -> NamedSharding:
  """NamedSharding for one array given its logical axis names."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(logical, rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=LOGICAL_RULES):
  """Context in which `nn.with_logical_constraint` inside the model resolves against `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, *args, rules=LOGICAL_RULES):
  """Runs `init_fn(*args)` (returning boxed linen params) directly into sharded arrays.

  Shapes first (`jax.eval_shape`), then logical specs -> NamedShardings -> `jax.jit(out_shardings)`:
  no full-size array ever sits on one device. Returns (unboxed params, their shardings).
  """
  abstract = jax.eval_shape(init_fn, *args)
  specs = nn.get_partition_spec(abstract)
  shardings = logical_to_sharding(specs, mesh, rules)
  with activation_rules(mesh, rules):
    params = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return params, shardings
