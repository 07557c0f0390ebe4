"""`CacheSpec`: static sizes and policies of the fixed-size semantic sparse KV cache (DESIGN 4)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from blockvid_jax.errors import ConfigError


MODES = ("sparse", "window", "full")
EVICTIONS = ("fifo", "least_retrieved", "redundant")
POSITIONS = ("compact", "absolute")


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """Everything static about a cache: region sizes, policies and the geometry of a chunk."""
  num_layers: int             # K
  num_heads: int              # N
  head_dim: int               # H
  tokens_per_chunk: int       # Tc = frames_per_chunk * tokens per frame
  frames_per_chunk: int       # latent frames of a chunk (RoPE frame positions per chunk)
  embed_dim: int              # width of the pooled prompt embedding
  mode: str = "sparse"
  sink_chunks: int = 1
  local_chunks: int = 1
  bank_slots: int = 8
  k_salient: int = 32
  retrieve_top_l: int = 2
  tau: float = 1.0
  eviction: str = "least_retrieved"
  usage_decay: float = 0.9
  positions: str = "compact"
  max_chunks: int = 64
  recache_on_switch: bool = False   # re-run the local window under a new prompt (LongLive)

  def __post_init__(self):
    def need(cond, msg):
      if not cond:
        raise ConfigError(msg)
    need(self.mode in MODES, f"cache.mode must be one of {MODES}, got {self.mode!r}")
    need(self.eviction in EVICTIONS, f"cache.eviction must be one of {EVICTIONS}, got {self.eviction!r}")
    need(self.positions in POSITIONS,
         f"cache.positions must be one of {POSITIONS}, got {self.positions!r}")
    for name in ("sink_chunks", "local_chunks", "bank_slots", "retrieve_top_l"):
      need(getattr(self, name) >= 0, f"cache.{name} must be >= 0, got {getattr(self, name)}")
    need(self.max_chunks >= 1, f"cache.max_chunks must be >= 1, got {self.max_chunks}")
    if self.mode == "sparse":
      need(1 <= self.k_salient <= self.tokens_per_chunk,
           f"cache.k_salient must be in [1, tokens per chunk = {self.tokens_per_chunk}], "
           f"got {self.k_salient}")
      need(self.bank_slots >= 1, "cache.bank_slots must be >= 1 in sparse mode")
      need(1 <= self.retrieve_top_l <= self.bank_slots,
           f"cache.retrieve_top_l must be in [1, bank_slots={self.bank_slots}], "
           f"got {self.retrieve_top_l}")
      need(0.0 < self.tau <= 1.0, f"cache.tau must be in (0, 1], got {self.tau}")
      need(0.0 <= self.usage_decay <= 1.0, f"cache.usage_decay must be in [0, 1], got {self.usage_decay}")
    if self.mode != "full":
      need(self.local_chunks >= 1, f"cache.local_chunks must be >= 1 in {self.mode} mode")
    need(not (self.recache_on_switch and self.mode == "full"),
         "cache.recache_on_switch needs a local window (mode sparse or window, not full)")

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any], **geometry: int) -> "CacheSpec":
    """From `config.cache` plus the model geometry (num_layers, num_heads, head_dim, ...)."""
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    cfg.pop("context_t", None)  # a sampler setting that lives next to the cache fields
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
      raise ConfigError(f"unknown cache config key(s) {unknown}")
    return cls(**{**cfg, **geometry})

  # Region sizes in chunks / slots (static).
  @property
  def n_sink(self) -> int:
    return 0 if self.mode == "full" else self.sink_chunks

  @property
  def n_local(self) -> int:
    return self.max_chunks if self.mode == "full" else self.local_chunks

  @property
  def n_bank(self) -> int:
    return self.bank_slots if self.mode == "sparse" else 0

  @property
  def n_retrieve(self) -> int:
    return min(self.retrieve_top_l, self.bank_slots) if self.mode == "sparse" else 0

  @property
  def context_slots(self) -> int:
    """S: key slots a chunk attends to (constant per chunk)."""
    tc = self.tokens_per_chunk
    return (self.n_sink + self.n_local) * tc + self.n_retrieve * self.k_salient

  @property
  def context_chunks(self) -> int:
    """Chunk-sized groups in the attended context (sink + retrieved + local)."""
    return self.n_sink + self.n_retrieve + self.n_local

  @property
  def max_position_frame(self) -> int:
    """Largest RoPE frame position under `compact` positions (context chunks + the current one)."""
    return (self.context_chunks + 1) * self.frames_per_chunk - 1
