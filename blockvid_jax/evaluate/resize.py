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


def _linear_taps(in_size: int, out_size: int):
  """PyTorch's float32 bilinear taps of one axis: (i0, i1, lambda0, lambda1), each [out]."""
  if in_size == out_size:
    idx = np.arange(out_size)
    return idx, idx, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
  scale = np.float32(in_size) / np.float32(out_size)
  src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  lam1 = (src - i0.astype(np.float32)).astype(np.float32)
  return i0, i1, (np.float32(1.0) - lam1).astype(np.float32), lam1


def bilinear_f32(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """float32 [T, H, W, C] -> [T, h, w, C] bilinear with PyTorch's float32 CPU evaluation order.

  out = (x[h0, w0] l0w + x[h0, w1] l1w) l0h + (x[h1, w0] l0w + x[h1, w1] l1w) l1h, every product
  and sum rounded to float32. This matters when the result is rounded back to uint8: bilinear
  weights of 8-bit images land exactly on .5 often (about 1% of pixels), and a float64 evaluation
  rounds many of those ties the other way; in this order only a handful differ (PyTorch's
  vectorised kernels sum in their own order), by one level.
  """
  x = np.asarray(x, np.float32)
  h0, h1, l0h, l1h = _linear_taps(x.shape[1], out_hw[0])
  w0, w1, l0w, l1w = _linear_taps(x.shape[2], out_hw[1])
  lw0, lw1 = l0w[None, None, :, None], l1w[None, None, :, None]

  def row(hi):  # [T, h, w, C]
    r = x[:, hi]
    return r[:, :, w0] * lw0 + r[:, :, w1] * lw1
  return row(h0) * l0h[None, :, None, None] + row(h1) * l1h[None, :, None, None]
