"""Rectified-flow (flow-matching) conventions shared by training and sampling. Pure functions.

Conventions (Wan2.1 / Self Forcing):
  * flow time t in [0, 1]: t = 0 is data, t = 1 is pure noise (the network sees 1000 * t);
  * x_t = (1 - t) x + t eps                       (`noisy`)
  * the network predicts the velocity v = dx_t/dt = eps - x   (`velocity_target`)
  * x0 = x_t - t v,   eps = x_t + (1 - t) v         (`x0_from_v`, `eps_from_v`)
  * timestep shift s (> 1 spends more steps at high noise): t' = s t / (1 + (s - 1) t)  (`shift_t`)

`t` broadcasts against `x` from the left: a per-frame t [B, F] is expanded to [B, F, 1, 1, 1] for a
latent video [B, F, H, W, C] (see `expand_t`). These names are used by the sampler: keep them stable.
"""

from __future__ import annotations

import jax.numpy as jnp

from blockvid_jax.typing import Array


def shift_t(t: Array, shift: float) -> Array:
  """Timestep shift t' = s t / (1 + (s - 1) t); s = 1 is the identity, monotone, fixes 0 and 1."""
  if shift == 1.0:
    return t
  return shift * t / (1.0 + (shift - 1.0) * t)


def expand_t(t: Array, x: Array) -> Array:
  """t [B, F] (or [B], or a scalar) -> broadcastable against x [B, F, H, W, C]: [B, F, 1, 1, 1]."""
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def noisy(x: Array, eps: Array, t: Array) -> Array:
  """x_t = (1 - t) x + t eps. x, eps [B, F, H, W, C]; t [B, F] (or broadcastable) -> [B, F, H, W, C]."""
  te = expand_t(t, x)
  return (1.0 - te) * x + te * eps


def velocity_target(x: Array, eps: Array) -> Array:
  """The flow-matching regression target v = eps - x (same shape as x)."""
  return eps - x


def x0_from_v(x_t: Array, v: Array, t: Array) -> Array:
  """Clean estimate from a velocity prediction: x0 = x_t - t v."""
  return x_t - expand_t(t, x_t) * v


def eps_from_v(x_t: Array, v: Array, t: Array) -> Array:
  """Noise estimate from a velocity prediction: eps = x_t + (1 - t) v."""
  return x_t + (1.0 - expand_t(t, x_t)) * v


def v_from_x0(x_t: Array, x0: Array, t: Array) -> Array:
  """Velocity from a clean estimate: v = (x_t - x0) / t (t is clamped away from 0)."""
  return (x_t - x0) / jnp.maximum(expand_t(t, x_t), 1e-6)
