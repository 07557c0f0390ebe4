"""3D rotary position embedding of Wan2.1 (frame / row / col), rotating adjacent pairs.

The head dim H is split into t/h/w parts of H - 4*(H//6), 2*(H//6), 2*(H//6) channels (44/42/42 for
H = 128). Each axis has its own table 1/theta^(2i/d_axis); pair (x[2i], x[2i+1]) of an axis part is
rotated by position * freq_i of that axis.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from blockvid_jax.typing import Array


def axis_dims(head_dim: int) -> tuple[int, int, int]:
  """Channels of the (frame, row, col) parts of a head."""
  s = head_dim // 6
  return head_dim - 4 * s, 2 * s, 2 * s


def inv_freqs(head_dim: int, theta: float = 10000.0) -> np.ndarray:
  """Per-pair inverse frequencies and their axis, as a [H/2, 3] one-hot-weighted table.

  Returns `w` of shape [H/2, 3]: pair i rotates by sum_a pos[a] * w[i, a] (only one a is non-zero).
  """
  rows = []
  for axis, d in enumerate(axis_dims(head_dim)):
    freqs = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    block = np.zeros((d // 2, 3), np.float64)
    block[:, axis] = freqs
    rows.append(block)
  return np.concatenate(rows, axis=0)  # [H/2, 3]


def angles(positions: Array, head_dim: int, theta: float = 10000.0) -> tuple[Array, Array]:
  """cos/sin of the rotation angles for int positions [..., 3] -> two arrays [..., H/2] float32."""
  w = jnp.asarray(inv_freqs(head_dim, theta), jnp.float32)       # [H/2, 3]
  ang = jnp.einsum("...a,ia->...i", positions.astype(jnp.float32), w)  # [..., H/2]
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates adjacent pairs of x [B, L, N, H] with cos/sin [B, L, H/2] (computed in float32)."""
  dtype = x.dtype
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # [B, L, N, H/2, 2]
  x0, x1 = xf[..., 0], xf[..., 1]                                       # [B, L, N, H/2]
  c, s = cos[:, :, None, :], sin[:, :, None, :]                         # [B, L, 1, H/2]
  out = jnp.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)          # [B, L, N, H/2, 2]
  return out.reshape(x.shape).astype(dtype)                             # [B, L, N, H]


def grid_positions(num_frames: int, rows: int, cols: int, frame_offset=0) -> Array:
  """Positions of a frame-major token grid: [F*X*Y, 3] int32 (frame + frame_offset, row, col)."""
  f, r, c = jnp.meshgrid(jnp.arange(num_frames), jnp.arange(rows), jnp.arange(cols), indexing="ij")
  pos = jnp.stack([f + frame_offset, r, c], axis=-1)  # [F, X, Y, 3]
  return pos.reshape(-1, 3).astype(jnp.int32)         # [F*X*Y, 3]
