"""KV sources of the chunk engine (DESIGN 5.1): what a chunk reads its context from and commits to.

A source is a static, hashable object with pure methods on its state pytree:
  init(batch)               -> state
  read(state, pooled)       -> (KVContext, RoPE frame offset [B] int32, state)
  commit(state, kv, pooled) -> state          kv: the chunk's `ChunkKV`
  needs_saliency            whether `commit` needs the chunk's per-token saliency
`SparseSource` is the fixed-size semantic sparse cache (sampling, Self Forcing rollouts);
`DenseSource` the dense window buffer of causal training.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp

from blockvid_jax.cache import dense_window, sparse_kv
from blockvid_jax.cache.dense_window import DenseWindowKV, DenseWindowSpec
from blockvid_jax.cache.sparse_kv import SparseKVCache
from blockvid_jax.cache.spec import CacheSpec
from blockvid_jax.models.dit import ChunkKV, KVContext
from blockvid_jax.typing import Array


@dataclasses.dataclass(frozen=True)
class SparseSource:
  spec: CacheSpec
  dtype: jnp.dtype = jnp.float32

  @property
  def needs_saliency(self) -> bool:
    return self.spec.n_bank > 0

  def init(self, batch: int) -> SparseKVCache:
    return sparse_kv.init(self.spec, batch, self.dtype)

  def read(self, state: SparseKVCache, pooled: Array) -> tuple[KVContext, Array, SparseKVCache]:
    return sparse_kv.read(self.spec, state, pooled)

  def commit(self, state: SparseKVCache, kv: ChunkKV, pooled: Array) -> SparseKVCache:
    return sparse_kv.write(self.spec, state, kv, pooled)

  def logical_axes(self, state: SparseKVCache) -> SparseKVCache:
    return sparse_kv.logical_axes(state)


@dataclasses.dataclass(frozen=True)
class DenseSource:
  spec: DenseWindowSpec
  dtype: jnp.dtype = jnp.float32
  needs_saliency: bool = False

  def init(self, batch: int) -> DenseWindowKV:
    return dense_window.init(self.spec, batch, self.dtype)

  def read(self, state: DenseWindowKV, pooled: Optional[Array] = None
           ) -> tuple[KVContext, Array, DenseWindowKV]:
    del pooled  # the whole window is the context
    ctx, offset = dense_window.read(self.spec, state)
    return ctx, offset, state

  def commit(self, state: DenseWindowKV, kv: ChunkKV, pooled: Optional[Array] = None
             ) -> DenseWindowKV:
    del pooled
    return dense_window.write(self.spec, state, kv)
