"""Training losses as pure functions on arrays.

Flow matching (DESIGN 6): the network's velocity v(x_t, t, ctx) regresses v* = eps - x with a mean
squared error over every latent element; `per_chunk_mse` reports it per chunk of the window.
"""

from __future__ import annotations

import jax.numpy as jnp

from blockvid_jax.typing import Array


def flow_matching_loss(v_pred: Array, v_target: Array) -> Array:
  """Mean squared error in float32: v_pred, v_target [B, F, H, W, C] -> scalar."""
  err = v_pred.astype(jnp.float32) - v_target.astype(jnp.float32)
  return jnp.mean(jnp.square(err))


def per_chunk_mse(v_pred: Array, v_target: Array, num_chunks: int) -> Array:
  """MSE of each chunk of the window, averaged over the batch: [B, F, H, W, C] x2 -> [n]."""
  err = jnp.square(v_pred.astype(jnp.float32) - v_target.astype(jnp.float32))  # [B, F, H, W, C]
  b, f = err.shape[:2]
  err = err.reshape(b, num_chunks, f // num_chunks, -1)                         # [B, n, Fc, HWC]
  return jnp.mean(err, axis=(0, 2, 3))                                          # [n]
