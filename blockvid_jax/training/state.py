"""`TrainState` (a pytree) and its creation directly into sharded arrays.

Shapes first: `jax.eval_shape` of the boxed init gives every leaf its logical axis names (the AdamW
moments inherit the params' boxes); `nn.get_partition_spec` -> NamedShardings on the mesh ->
`jax.jit(init, out_shardings=...)`, so no full-size array ever sits on one device. The same
shardings (`abstract_train_state`) are the restore target of a checkpoint.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from blockvid_jax.models.params import init_boxed
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel import LOGICAL_RULES, activation_rules, logical_to_sharding
from blockvid_jax.typing import Array, PyTree


@struct.dataclass
class TrainState:
  """Everything a training run carries from step to step (and checkpoints)."""
  step: Array                     # int32 [], optimizer steps taken
  params: PyTree                  # the model params (float32)
  opt_state: PyTree               # optax state (AdamW moments mirror `params`)
  ema_params: Optional[PyTree]    # EMA of `params`, or None when EMA is off


def _init_boxed_state(spec: DiTSpec, tx: optax.GradientTransformation, use_ema: bool, rng) -> TrainState:
  params = init_boxed(spec, rng)                            # boxed: leaves carry logical names
  ema = jax.tree_util.tree_map(jnp.copy, params) if use_ema else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=ema)


def state_shardings(spec: DiTSpec, tx: optax.GradientTransformation, mesh,
                    rules=LOGICAL_RULES, use_ema: bool = True) -> TrainState:
  """NamedShardings of every leaf of the train state (a `TrainState` of shardings)."""
  init = functools.partial(_init_boxed_state, spec, tx, use_ema)
  abstract = jax.eval_shape(init, jax.random.key(0))
  return logical_to_sharding(nn.get_partition_spec(abstract), mesh, rules)


def abstract_train_state(spec: DiTSpec, tx: optax.GradientTransformation, mesh,
                         rules=LOGICAL_RULES, use_ema: bool = True) -> TrainState:
  """ShapeDtypeStructs with shardings: the target to restore a checkpoint into."""
  init = functools.partial(_init_boxed_state, spec, tx, use_ema)
  abstract = nn.unbox(jax.eval_shape(init, jax.random.key(0)))
  shardings = state_shardings(spec, tx, mesh, rules, use_ema)
  return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract, shardings)


def create_train_state(spec: DiTSpec, tx: optax.GradientTransformation, rng, mesh,
                       rules=LOGICAL_RULES, use_ema: bool = True) -> tuple[TrainState, TrainState]:
  """A fresh, sharded train state and its shardings. `rng` is a key (params init)."""
  init = functools.partial(_init_boxed_state, spec, tx, use_ema)
  shardings = state_shardings(spec, tx, mesh, rules, use_ema)
  with activation_rules(mesh, rules):
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def ema_update(ema: PyTree, params: PyTree, step: Array, decay: float,
               start_step: int = 0) -> PyTree:
  """The EMA after the optimizer update that took `step` ([] int32, the steps taken before it) to
  `params`: ema <- decay * ema + (1 - decay) * params from `start_step` on; before it the EMA is the
  params themselves (Self Forcing's `ema_start_step`: the average starts from the generator then)."""
  d = jnp.where(step >= start_step, decay, 0.0)                        # [] float32
  return jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def apply_update(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                 grads: PyTree, ema: Optional[PyTree], step: Array, ema_decay: float,
                 ema_start_step: int = 0) -> tuple[PyTree, PyTree, Optional[PyTree]]:
  """One optimizer update and the EMA after it (`ema_update`; None stays None): -> (params,
  opt_state, ema). The one update of every stage's step."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  if ema is not None:
    ema = ema_update(ema, params, step, ema_decay, ema_start_step)
  return params, opt_state, ema


def tree_norm(tree: Any) -> Array:
  """Global L2 norm of a pytree, in float32."""
  return optax.tree.norm(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree))
