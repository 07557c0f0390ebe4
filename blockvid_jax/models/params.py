"""Parameter initialisation and counting for `CausalDiT` (by shape first: nothing big is allocated)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.models.dit import CausalDiT
from blockvid_jax.models.spec import DiTSpec


def dummy_inputs(spec: DiTSpec, batch: int = 1, text_len: int = 1):
  """Smallest inputs that create every parameter: one chunk of one patch."""
  pt, ph, pw = spec.patch_size
  lat = jnp.zeros((batch, spec.frames_per_chunk, ph, pw, spec.in_channels), jnp.float32)
  t = jnp.zeros((batch, spec.frames_per_chunk), jnp.float32)
  ctx = jnp.zeros((batch, text_len, spec.text_dim), jnp.float32)
  return lat, t, ctx


def init_boxed(spec: DiTSpec, rng):
  """Fresh params with their `nn.Partitioned` logical-axis boxes (for sharded init under jit)."""
  return CausalDiT(spec).init(rng, *dummy_inputs(spec))["params"]


def abstract_params(spec: DiTSpec, boxed: bool = False):
  """ShapeDtypeStructs of the params (with logical `nn.Partitioned` boxes when `boxed`)."""
  tree = jax.eval_shape(functools.partial(init_boxed, spec), jax.random.key(0))
  return tree if boxed else nn.unbox(tree)


def init_params(spec: DiTSpec, rng):
  """Random params (unboxed) on the default device; for sharded init see `blockvid_jax.parallel`."""
  return nn.unbox(jax.jit(init_boxed, static_argnums=0)(spec, rng))


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
