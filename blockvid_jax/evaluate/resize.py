"""Interpolation matrices reproducing PyTorch's `F.interpolate` (align_corners=False, no antialias).

The scorers' reference pipelines resize with PyTorch: torchvision `Resize(..., antialias=False)` on
uint8 video tensors (bilinear for DINO, bicubic for CLIP) and DINO's bicubic interpolation of the
position embeddings. Both are separable, so each axis is one dense matrix `[out, in]` and a resize
is two small matmuls, identical on CPU and accelerators.

Conventions copied from PyTorch's kernels (read from the public kernel code, written anew here):
  * half-pixel source coordinate: src = (dst + 0.5) * s - 0.5, where s = in / out, or 1 / scale when
    an explicit `scale` factor is given (DINO passes one);
  * bilinear: src clamped at 0, taps floor(src) and floor(src) + 1 (clamped to in - 1);
  * bicubic: Keys kernel with a = -0.75, taps floor(src) - 1 .. + 2, indices clamped to [0, in - 1].
"""

from __future__ import annotations

from typing import Optional

import numpy as np

CUBIC_A = -0.75  # PyTorch's bicubic coefficient (PIL and jax.image use other values)


def _source(in_size: int, out_size: int, scale: Optional[float]) -> np.ndarray:
  step = in_size / out_size if scale is None else 1.0 / scale
  return (np.arange(out_size, dtype=np.float64) + 0.5) * step - 0.5  # [out]


def _cubic_weights(t: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
  """t [out] in [0, 1) -> [out, 4] weights of taps at offsets -1, 0, 1, 2."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1
  def far(x):   # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_matrix(in_size: int, out_size: int, method: str,
                  scale: Optional[float] = None) -> np.ndarray:
  """[out, in] float64 matrix M so that M @ x resizes axis x of length `in_size` to `out_size`."""
  src = _source(in_size, out_size, scale)
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  if method == "bilinear":
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = src - i0
    i1 = np.minimum(i0 + 1, in_size - 1)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
  elif method == "bicubic":
    i0 = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - i0)                                  # [out, 4]
    for k in range(4):
      idx = np.clip(i0 - 1 + k, 0, in_size - 1)
      np.add.at(m, (rows, idx), w[:, k])
  else:
    raise ValueError(f"unknown resize method {method!r} (bilinear | bicubic)")
  return m


def resize_hw(x: np.ndarray, out_hw: tuple[int, int], method: str) -> np.ndarray:
  """Resizes float [T, H, W, C] to [T, h, w, C] (float32)."""
  _, h, w, _ = x.shape
  mh = resize_matrix(h, out_hw[0], method).astype(np.float32)    # [h', H]
  mw = resize_matrix(w, out_hw[1], method).astype(np.float32)    # [w', W]
  x = np.einsum("oh,thwc->towc", mh, x.astype(np.float32), optimize=True)  # [T, h', W, C]
  return np.einsum("pw,towc->topc", mw, x, optimize=True)  # [T, h', w', C]
