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


def chunk_visibility(spec: CacheSpec, num_chunks: int, pooled: Optional[Array] = None) -> Array:
  """visible [B, n, n] bool (B = 1 without `pooled`): visible[b, c, j] = chunk c sees clean chunk j.

  pooled [B, n, E]: each chunk's pooled prompt (needed in `sparse` mode only).
  """
  n = num_chunks
  c, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]                         # [n, 1], [1, n]
  earlier = j < c
  window = earlier & ((j < spec.n_sink) | (j >= c - spec.n_local))               # [n, n]
  if spec.n_retrieve == 0:
    return window[None]                                                          # [1, n, n]
  if pooled is None or pooled.ndim != 3 or pooled.shape[1] != n:
    raise ValueError(f"sparse mode needs pooled prompts [B, {n}, E], got "
                     f"{None if pooled is None else pooled.shape}")
  b = pooled.shape[0]
  p = pooled.astype(jnp.float32)
  scores = jax.vmap(lambda q: cosine(q, p), in_axes=1, out_axes=1)(p)             # [B, n(c), n(j)]
  eligible = earlier & ~window                                                   # [n, n]
  scores = jnp.where(eligible[None], scores, -jnp.inf)
  l = min(spec.n_retrieve, n)
  vals, idx = jax.lax.top_k(scores, l)                                           # [B, n, l]
  hit = jax.nn.one_hot(idx, n, dtype=bool) & jnp.isfinite(vals)[..., None]       # [B, n, l, n]
  return window[None] | jnp.any(hit, axis=2)                                     # [B, n, n]
