"""Models: the Wan2.1-compatible causal DiT and its parts."""

from blockvid_jax.models.dit import CausalDiT, ChunkKV, KVContext
from blockvid_jax.models.spec import AttentionImpl, DiTSpec, PRESETS
from blockvid_jax.models.params import count_params, init_params, abstract_params

__all__ = ["CausalDiT", "ChunkKV", "KVContext", "DiTSpec", "AttentionImpl", "PRESETS",
           "count_params", "init_params", "abstract_params"]
