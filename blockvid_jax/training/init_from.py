"""Starting a training stage from the params of a previous one (teacher -> causal -> block forcing).

A stage points at its predecessor with a path that is either a params directory (`spec.json` +
`params/`, as written by `python -m blockvid_jax.convert` or exported by the training loop) or a
training work directory, from which the exported `params_ema` (preferred) or `params` is taken.
The params are restored straight onto the given shardings; the stored `DiTSpec` must match the run's
except for the runtime fields (`checkpoints.RUNTIME_FIELDS`: dtype, remat, attention backend, chunk
length).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from absl import logging

from blockvid_jax import checkpoints
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.errors import CheckpointError, ConfigError

EXPORTS = ("params_ema", "params")   # work-directory exports, in order of preference


def resolve(path: str, prefer_ema: bool = True) -> str:
  """The params directory named by `path` (a params directory or a stage's work directory)."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if checkpoints.is_params_checkpoint(path):
    return path
  names = EXPORTS if prefer_ema else EXPORTS[::-1]
  for name in names:
    if checkpoints.is_params_checkpoint(os.path.join(path, name)):
      return os.path.join(path, name)
  raise ConfigError(f"{path} is neither a params checkpoint nor a finished training work directory "
                    f"(no {' or '.join(names)} in it): train the previous stage first")


def runtime_spec(stored: DiTSpec, like: DiTSpec) -> DiTSpec:
  """`stored` with the runtime fields (dtype, remat, ...) of `like`."""
  return dataclasses.replace(stored, **{f: getattr(like, f) for f in checkpoints.RUNTIME_FIELDS})


def load(path: str, spec: Optional[DiTSpec] = None, shardings: Any = None,
         prefer_ema: bool = True) -> tuple[DiTSpec, Any]:
  """-> (spec, params) from `path` (see `resolve`); `spec` given: it must match the stored model."""
  directory = resolve(path, prefer_ema)
  try:
    spec, params = checkpoints.load_params(directory, spec, shardings)
  except CheckpointError as e:
    raise ConfigError(str(e)) from None
  logging.info("loaded params from %s", directory)
  return spec, params


def apply(config, spec: DiTSpec, state, shardings):
  """The training loop's hook: a fresh `state` (with `.params`, `.ema_params`) whose params come from
  `config.train.init_from` when that is set (no-op otherwise). Optimizer moments stay at their
  (params-independent) initial values."""
  path = config.train.get("init_from", "")
  if not path:
    return state
  _, params = load(path, spec, shardings.params)
  ema = None
  if state.ema_params is not None:
    _, ema = load(path, spec, shardings.ema_params)   # a separate copy: the state is donated
  return state.replace(params=params, ema_params=ema)
