"""A dense window KV buffer: every earlier segment of a training window, kept whole.

Causal training with per-chunk captions runs the window segment by segment (one segment per caption)
against the keys/values of all earlier segments, with gradients flowing through them. This buffer is
that context at a fixed size - `num_segments * tokens_per_segment` slots, the first `step` segments
valid - so the chunk engine can `lax.scan` over the segments like it scans the sparse cache over a
rollout. Keys are stored before RoPE with their absolute positions (no re-indexing: a training window
is short).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from blockvid_jax.models.dit import ChunkKV, KVContext
from blockvid_jax.typing import Array


@dataclasses.dataclass(frozen=True)
class DenseWindowSpec:
  """Static geometry of the buffer (hashable)."""
  num_layers: int
  num_heads: int
  head_dim: int
  num_segments: int
  tokens_per_segment: int
  frames_per_segment: int      # RoPE frames (after temporal patching) per segment

  @property
  def slots(self) -> int:
    return self.num_segments * self.tokens_per_segment


@struct.dataclass
class DenseWindowKV:
  step: Array        # [] int32, segments committed so far
  k: Array           # [K, B, S, N, H] pre-RoPE keys
  v: Array           # [K, B, S, N, H]
  positions: Array   # [B, S, 3] int32 (frame, row, col)


def init(spec: DenseWindowSpec, batch: int, dtype=jnp.float32) -> DenseWindowKV:
  """An empty buffer."""
  shape = (spec.num_layers, batch, spec.slots, spec.num_heads, spec.head_dim)
  return DenseWindowKV(step=jnp.zeros((), jnp.int32), k=jnp.zeros(shape, dtype),
                       v=jnp.zeros(shape, dtype),
                       positions=jnp.zeros((batch, spec.slots, 3), jnp.int32))


def read(spec: DenseWindowSpec, buf: DenseWindowKV) -> tuple[KVContext, Array]:
  """The context of the next segment: (KVContext over all slots, the first `step` segments valid;
  RoPE frame offset of the segment [B] int32)."""
  b = buf.positions.shape[0]
  valid = jnp.arange(spec.slots) < buf.step * spec.tokens_per_segment                   # [S]
  ctx = KVContext(k=buf.k, v=buf.v, positions=buf.positions,
                  mask=jnp.broadcast_to(valid[None], (b, spec.slots)))                # [B, S]
  offset = jnp.broadcast_to(buf.step * spec.frames_per_segment, (b,)).astype(jnp.int32)
  return ctx, offset


def write(spec: DenseWindowSpec, buf: DenseWindowKV, kv: ChunkKV) -> DenseWindowKV:
  """Appends one segment's pre-RoPE K/V [K, B, L, N, H] and positions [B, L, 3]."""
  start = buf.step * spec.tokens_per_segment
  put = lambda old, new, axis: jax.lax.dynamic_update_slice_in_dim(old, new.astype(old.dtype), start,
                                                                   axis=axis)
  return DenseWindowKV(step=buf.step + 1, k=put(buf.k, kv.k, 2), v=put(buf.v, kv.v, 2),
                       positions=put(buf.positions, kv.positions, 1))
