"""Velocity Forcing: flow matching whose target is pulled towards semantically relevant context.

On a ground-truth data window x [B, F, H, W, C] of Nc caption chunks (DESIGN 6):

  L_VF = || v(x_t, t, ctx) - (eps - gamma * x_cond) ||^2,   x_t = (1 - t) x + t eps
  x_cond = (1 - cond_mix) * x + cond_mix * x_retrieved

x_retrieved is, per caption chunk c, the ground-truth latent of the earlier chunk j < c of the same
window whose pooled prompt is most similar to chunk c's (the cache's cosine, `sparse_kv.cosine`;
ties go to the earliest chunk); the first chunk has no earlier chunk and retrieves itself. This is our
reading of the paper's x_cond (DESIGN 10). gamma = 1, cond_mix = 0 is plain flow matching, exactly
(the target is then computed as eps - 1 * ((1 - 0) x + 0 * x_ret) = eps - x, bit for bit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from blockvid_jax.cache.sparse_kv import cosine
from blockvid_jax.training import losses
from blockvid_jax.typing import Array


def retrieve_earlier(pooled: Array) -> Array:
  """Per chunk, the most similar earlier chunk: pooled [B, Nc, E] -> indices [B, Nc] int32.

  Chunk 0 gets itself.
  """
  nc = pooled.shape[1]
  sim = jax.vmap(cosine, in_axes=(1, None), out_axes=1)(pooled.astype(jnp.float32),
                                                        pooled.astype(jnp.float32))  # [B, Nc, Nc]
  earlier = jnp.arange(nc)[None, :] < jnp.arange(nc)[:, None]                         # [Nc, Nc]
  sim = jnp.where(earlier[None], sim, -jnp.inf)
  best = jnp.argmax(sim, axis=-1).astype(jnp.int32)                                   # [B, Nc]
  return jnp.where(jnp.arange(nc)[None] == 0, 0, best)                                # [B, Nc]


def retrieved_latents(x: Array, index: Array) -> Array:
  """x [B, F, H, W, C] split into Nc caption chunks; chunk c replaced by chunk index[:, c]."""
  b, f = x.shape[:2]
  nc = index.shape[1]
  chunks = x.reshape(b, nc, f // nc, *x.shape[2:])                     # [B, Nc, Fd, H, W, C]
  idx = index.reshape(b, nc, *([1] * (chunks.ndim - 2)))
  return jnp.take_along_axis(chunks, idx, axis=1).reshape(x.shape)                    # [B, F, H, W, C]


def conditioning(x: Array, pooled: Array, cond_mix: float) -> Array:
  """x_cond = (1 - cond_mix) x + cond_mix x_retrieved: [B, F, H, W, C] (pooled [B, Nc, E])."""
  x_ret = retrieved_latents(x, retrieve_earlier(pooled))
  return (1.0 - cond_mix) * x + cond_mix * x_ret


def target(x: Array, eps: Array, pooled: Array, gamma: float, cond_mix: float) -> Array:
  """The Velocity Forcing regression target eps - gamma * x_cond: [B, F, H, W, C]."""
  return eps - gamma * conditioning(x, pooled, cond_mix)


def loss(v_pred: Array, x: Array, eps: Array, pooled: Array, gamma: float,
         cond_mix: float) -> Array:
  """L_VF, the mean squared error (float32 scalar) of v_pred [B, F, H, W, C] to `target`."""
  return losses.flow_matching_loss(v_pred, target(x.astype(jnp.float32), eps, pooled, gamma,
                                                  cond_mix))
