"""KV sources of the chunk engine (DESIGN 5.1): what a chunk reads its context from and commits to.

A source is a static, hashable object with pure methods on its state pytree:
  init(batch)               -> state
  read(state, pooled)       -> (KVContext, RoPE frame offset [B] int32, state)
  commit(state, kv, pooled[, latent]) -> state   kv: the chunk's `ChunkKV`, latent its clean latent
  recache(state, pooled, rerun) -> state      prompt switch: local K/V recomputed (`recaches`)
  needs_saliency            whether `commit` needs the chunk's per-token saliency
`SparseSource` is the fixed-size semantic sparse cache (sampling, Self Forcing rollouts). Causal
training needs no source: its block-causal full-sequence forward equals the engine run segment by
segment over a `full` cache (tests/test_engine.py) and runs as one forward.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from blockvid_jax.cache import sparse_kv
from blockvid_jax.cache.sparse_kv import SparseKVCache
from blockvid_jax.cache.spec import CacheSpec
from blockvid_jax.models.dit import ChunkKV, KVContext
from blockvid_jax.typing import Array


@dataclasses.dataclass(frozen=True)
class SparseSource:
  spec: CacheSpec
  dtype: jnp.dtype = jnp.float32
  latent_shape: tuple[int, ...] = ()    # (Fc, H, W, C): local latents kept for recache_on_switch

  @property
  def needs_saliency(self) -> bool:
    return self.spec.n_bank > 0

  def init(self, batch: int) -> SparseKVCache:
    return sparse_kv.init(self.spec, batch, self.dtype, self.latent_shape)

  def read(self, state: SparseKVCache, pooled: Array) -> tuple[KVContext, Array, SparseKVCache]:
    with jax.named_scope("sparse_kv_read"):   # a label for profiles (benchmarks/time_breakdown.py)
      return sparse_kv.read(self.spec, state, pooled)

  def commit(self, state: SparseKVCache, kv: ChunkKV, pooled: Array,
             latent: Optional[Array] = None) -> SparseKVCache:
    with jax.named_scope("sparse_kv_commit"):
      return sparse_kv.write(self.spec, state, kv, pooled, latent)

  @property
  def recaches(self) -> bool:
    return self.spec.recache_on_switch

  def recache(self, state: SparseKVCache, pooled: Array, rerun) -> SparseKVCache:
    return sparse_kv.recache_local(self.spec, state, pooled, rerun)

  def logical_axes(self, state: SparseKVCache) -> SparseKVCache:
    return sparse_kv.logical_axes(state)
