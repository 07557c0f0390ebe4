"""Velocity Forcing: flow matching whose target is pulled towards what the semantic cache retrieves.

On a ground-truth data window x [B, F, H, W, C] of n model chunks (DESIGN 6, our reading of the
paper's x_cond, DESIGN 10):

  L_VF = || v(x_t, t, ctx) - (eps - gamma * x_cond) ||^2,   x_t = (1 - t) x + t eps
  x_cond = (1 - cond_mix) * x + cond_mix * x_retrieved

Both halves go through the generator's semantic sparse cache as it would be when chunk c is
generated (`cache.visibility`):
  * ctx: the prediction v runs in the teacher-forcing layout with the cache's chunk visibility (the
    clean sink, local window and retrieved chunks of the same window), not a dense noisy history;
  * x_retrieved of chunk c: the mean ground-truth latent of the chunks the bank retrieves for it
    (`cache.retrieved_chunks`: the `retrieve_top_l` earlier chunks outside the sink and local
    window with the most similar pooled prompts); a chunk that retrieves nothing (the first
    chunks of a window, or a `window` / `full` cache) keeps x_retrieved = x.
gamma = 1, cond_mix = 0 is plain flow matching, exactly (the target is then eps - 1 * ((1 - 0) x +
0 * x_ret) = eps - x, bit for bit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from blockvid_jax.cache import CacheSpec, retrieved_chunks
from blockvid_jax.training import losses
from blockvid_jax.training.steps import chunk_pooled, teacher_forcing_inputs
from blockvid_jax.typing import Array


def through_cache(rng: Array, x: Array, batch: dict, cache: CacheSpec, frames_per_chunk: int,
                  context_t: float = 0.0) -> tuple[dict, Array, Array]:
  """What Velocity Forcing takes from the generator's cache for the data window x [B, F, ...]:
  (the teacher-forcing keyword arguments of `steps.predict_velocity` with the cache's chunk
  visibility, retrieved index [B, n, l], valid [B, n, l])."""
  b, n = x.shape[0], x.shape[1] // frames_per_chunk
  tf = teacher_forcing_inputs(rng, x, batch, n, frames_per_chunk, context_t=context_t, cache=cache)
  if cache.n_retrieve:
    index, valid = retrieved_chunks(cache, n, chunk_pooled(batch, n))              # [B, n, l]
  else:
    index, valid = jnp.zeros((b, n, 1), jnp.int32), jnp.zeros((b, n, 1), bool)
  return tf, index, valid


def retrieved_latents(x: Array, index: Array, valid: Array) -> Array:
  """x [B, F, H, W, C] as n chunks; chunk c -> the mean of chunks index[:, c, :] where valid
  (index, valid [B, n, l]), or chunk c itself where none is: [B, F, H, W, C]."""
  b, f = x.shape[:2]
  n = index.shape[1]
  chunks = x.reshape(b, n, f // n, -1)                                  # [B, n, Fc, HWC]
  gathered = jnp.take_along_axis(chunks[:, :, None], index[..., None, None], axis=1)  # [B, n, l, Fc, HWC]
  w = valid.astype(x.dtype)                                             # [B, n, l]
  count = jnp.sum(w, axis=2)[..., None, None]                           # [B, n, 1, 1]
  mean = jnp.einsum("bnl,bnlfd->bnfd", w, gathered) / jnp.maximum(count, 1.0)
  return jnp.where(count > 0, mean, chunks).reshape(x.shape)            # [B, F, H, W, C]


def conditioning(x: Array, index: Array, valid: Array, cond_mix: float) -> Array:
  """x_cond = (1 - cond_mix) x + cond_mix x_retrieved: [B, F, H, W, C]."""
  return (1.0 - cond_mix) * x + cond_mix * retrieved_latents(x, index, valid)


def target(x: Array, eps: Array, index: Array, valid: Array, gamma: float,
           cond_mix: float) -> Array:
  """The Velocity Forcing regression target eps - gamma * x_cond: [B, F, H, W, C]."""
  return eps - gamma * conditioning(x, index, valid, cond_mix)


def loss(v_pred: Array, x: Array, eps: Array, index: Array, valid: Array, gamma: float,
         cond_mix: float) -> Array:
  """L_VF, the mean squared error (float32 scalar) of v_pred [B, F, H, W, C] to `target`."""
  return losses.flow_matching_loss(v_pred, target(x.astype(jnp.float32), eps, index, valid, gamma,
                                                  cond_mix))
