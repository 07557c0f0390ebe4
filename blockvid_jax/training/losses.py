"""Training losses as pure functions on arrays.

Flow matching (DESIGN 6): the network's velocity v(x_t, t, ctx) regresses v* = eps - x with a mean
squared error over every latent element; `per_chunk_mse` reports it per chunk of the window.
Optional per-frame weights: `x0` weights frame f by max(t_f, X0_T_FLOOR)^2, which turns the velocity
error (x0_hat - x0) / t into the clean-latent error: every noise level counts alike in x0 terms,
where the plain velocity loss weights low-noise frames by 1 / t^2 (400x at t = 0.05).
"""

from __future__ import annotations

import jax.numpy as jnp

from blockvid_jax.models.spec import X0_T_FLOOR
from blockvid_jax.typing import Array

LOSS_WEIGHTS = ("v", "x0")


def frame_weights(t: Array, kind: str) -> Array | None:
  """Per-frame loss weights [B, F] for flow times t [B, F]; None for the plain velocity loss."""
  if kind == "v":
    return None
  if kind == "x0":
    return jnp.square(jnp.maximum(t.astype(jnp.float32), X0_T_FLOOR))       # [B, F]
  raise ValueError(f"loss weight must be one of {LOSS_WEIGHTS}, got {kind!r}")


def flow_matching_loss(v_pred: Array, v_target: Array, weight: Array | None = None) -> Array:
  """Mean squared error in float32: v_pred, v_target [B, F, H, W, C], weight [B, F] -> scalar."""
  err = jnp.square(v_pred.astype(jnp.float32) - v_target.astype(jnp.float32))  # [B, F, H, W, C]
  if weight is not None:
    err = err * weight[:, :, None, None, None]
  return jnp.mean(err)


def per_chunk_mse(v_pred: Array, v_target: Array, num_chunks: int) -> Array:
  """MSE of each chunk of the window, averaged over the batch: [B, F, H, W, C] x2 -> [n]."""
  err = jnp.square(v_pred.astype(jnp.float32) - v_target.astype(jnp.float32))  # [B, F, H, W, C]
  b, f = err.shape[:2]
  err = err.reshape(b, num_chunks, f // num_chunks, -1)                         # [B, n, Fc, HWC]
  return jnp.mean(err, axis=(0, 2, 3))                                          # [n]
