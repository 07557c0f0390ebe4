"""The fixed-size semantic sparse KV cache (DESIGN 4): `CacheSpec` + pure ops on `SparseKVCache`."""

from blockvid_jax.cache.spec import CacheSpec
from blockvid_jax.cache.visibility import chunk_visibility, retrieved_chunks
from blockvid_jax.cache.sparse_kv import (SparseKVCache, choose_victim, cosine, init, logical_axes,
                                          read, retrieve, select_salient, write)

__all__ = ["CacheSpec", "SparseKVCache", "chunk_visibility", "choose_victim", "cosine", "init",
           "logical_axes", "read", "retrieve", "retrieved_chunks", "select_salient", "write"]
