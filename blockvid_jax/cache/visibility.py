"""Which earlier chunks of a training window a chunk sees: the cache's view as a chunk mask (DESIGN 6).

The causal stage trains in the teacher-forcing [clean | noisy] layout; to train with the memory it
will sample with, noisy chunk c (and the clean copy of chunk c, the commit pass) attend only to the
clean chunks j < c that the cache would hold when chunk c is generated:

  full     the last `max_chunks` chunks
  window   the first `sink_chunks` chunks of the window (the sink) and the last `local_chunks`
  sparse   the window's, plus the `retrieve_top_l` earlier chunks outside it whose pooled prompts
           are the most cosine-similar to chunk c's (`sparse_kv.retrieve`'s score; ties keep the
           earlier chunk)

Approximations of `sparse` (stated, not hidden): a retrieved chunk is seen whole (the bank keeps its
`k_salient` most salient tokens), the bank is unbounded within a window (no eviction), and frame
positions are absolute (the sampler's `cache.positions = "compact"` renumbers context frames).
With `positions = "absolute"`, `full` and `window` are exact: tests/test_train_step.py.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from blockvid_jax.cache.sparse_kv import cosine
from blockvid_jax.cache.spec import CacheSpec
from blockvid_jax.typing import Array


def _window(spec: CacheSpec, n: int) -> tuple[Array, Array]:
  """(earlier [n, n], window [n, n]): j < c, and j in chunk c's sink or local window."""
  c, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]                         # [n, 1], [1, n]
  earlier = j < c
  return earlier, earlier & ((j < spec.n_sink) | (j >= c - spec.n_local))


def retrieved_chunks(spec: CacheSpec, num_chunks: int, pooled: Array) -> tuple[Array, Array]:
  """The chunks the bank would retrieve for each chunk of a window: (index [B, n, l] int32,
  valid [B, n, l] bool), l = min(retrieve_top_l, n); pooled [B, n, E] per-chunk prompts."""
  n = num_chunks
  if pooled is None or pooled.ndim != 3 or pooled.shape[1] != n:
    raise ValueError(f"sparse mode needs pooled prompts [B, {n}, E], got "
                     f"{None if pooled is None else pooled.shape}")
  earlier, window = _window(spec, n)
  p = pooled.astype(jnp.float32)
  scores = jax.vmap(lambda q: cosine(q, p), in_axes=1, out_axes=1)(p)             # [B, n(c), n(j)]
  scores = jnp.where((earlier & ~window)[None], scores, -jnp.inf)
  vals, idx = jax.lax.top_k(scores, min(spec.n_retrieve, n))                     # [B, n, l]
  return idx.astype(jnp.int32), jnp.isfinite(vals)


def chunk_visibility(spec: CacheSpec, num_chunks: int, pooled: Optional[Array] = None) -> Array:
  """visible [B, n, n] bool (B = 1 without `pooled`): visible[b, c, j] = chunk c sees clean chunk j.

  pooled [B, n, E]: each chunk's pooled prompt (needed in `sparse` mode only).
  """
  _, window = _window(spec, num_chunks)
  if spec.n_retrieve == 0:
    return window[None]                                                          # [1, n, n]
  idx, valid = retrieved_chunks(spec, num_chunks, pooled)                        # [B, n, l]
  hit = jax.nn.one_hot(idx, num_chunks, dtype=bool) & valid[..., None]           # [B, n, l, n]
  return window[None] | jnp.any(hit, axis=2)                                     # [B, n, n]
