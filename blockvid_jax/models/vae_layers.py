"""Layers of the Wan2.1 VAE (DESIGN 8.1) as pure functions, channels last.

Every function takes its params (a dict of arrays in Flax layout: conv kernels [kt, kh, kw, I, O] or
[kh, kw, I, O], 1x1 projections [I, O], norm scales [C]) and activations `[B, F, X, Y, C]`.

Causal 3D convolutions with time kernel 3 see the previous `CACHE_T` = 2 input frames of the same
layer. Those frames live in a `FeatureCache` (a dict name -> `[B, 2, X, Y, C]`): a zero cache is the
causal zero padding of the first chunk, and after each call the cache holds the last 2 frames of
cat(old cache, input), so a video processed in time chunks equals the video processed at once.
A missing entry is read as zeros of the right shape, which is how the first call discovers the
cache structure (see `vae.py`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from blockvid_jax.typing import Array

CACHE_T = 2  # frames of context kept per causal conv
_NORM_EPS = 1e-12  # F.normalize's floor on the channel norm
_DIMS_3D = ("NDHWC", "DHWIO", "NDHWC")
_DIMS_2D = ("NHWC", "HWIO", "NHWC")


class FeatureCache:
  """Reads the incoming cache dict and collects the outgoing one (pure at trace time)."""

  def __init__(self, cache: Optional[dict[str, Array]] = None):
    self.old = dict(cache or {})
    self.new: dict[str, Array] = {}

  def get(self, name: str, like: Array, frames: int = CACHE_T) -> Array:
    if name in self.old:
      return self.old[name]
    b, _, x, y, c = like.shape
    return jnp.zeros((b, frames, x, y, c), like.dtype)  # [B, frames, X, Y, C]

  def put(self, name: str, value: Array) -> None:
    self.new[name] = value


def conv3d(p: dict, x: Array, stride_t: int = 1) -> Array:
  """Valid 3D conv in time, 'same' zero padding in space: [B, F, X, Y, I] -> [B, F', X, Y, O]."""
  kernel = p["kernel"].astype(x.dtype)  # [kt, kh, kw, I, O]
  _, kh, kw, _, _ = kernel.shape
  y = jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride_t, 1, 1),
      padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)),
      dimension_numbers=_DIMS_3D, precision=jax.lax.Precision.HIGHEST)
  return y + p["bias"].astype(x.dtype)  # [B, F', X, Y, O]


def causal_conv3d(p: dict, x: Array, cache: FeatureCache, name: str) -> Array:
  """Causal conv with time kernel 3 (or 1): the cached 2 frames are its front padding."""
  if p["kernel"].shape[0] == 1:
    return conv3d(p, x)
  context = cache.get(name, x)  # [B, 2, X, Y, I]
  full = jnp.concatenate([context.astype(x.dtype), x], axis=1)  # [B, 2 + F, X, Y, I]
  cache.put(name, full[:, -CACHE_T:])  # [B, 2, X, Y, I]
  return conv3d(p, full)  # [B, F, X, Y, O]


def conv2d(p: dict, x: Array, stride: int = 1, padding=((1, 1), (1, 1))) -> Array:
  """Per-frame 2D conv: [B, F, X, Y, I] -> [B, F, X', Y', O]."""
  b, f = x.shape[:2]
  flat = x.reshape((b * f,) + x.shape[2:])  # [B*F, X, Y, I]
  y = jax.lax.conv_general_dilated(
      flat, p["kernel"].astype(x.dtype), window_strides=(stride, stride), padding=padding,
      dimension_numbers=_DIMS_2D, precision=jax.lax.Precision.HIGHEST)
  y = y + p["bias"].astype(x.dtype)  # [B*F, X', Y', O]
  return y.reshape((b, f) + y.shape[1:])  # [B, F, X', Y', O]


def rms_norm(p: dict, x: Array) -> Array:
  """x / max(||x||_2 over channels, 1e-12) * sqrt(C) * scale, computed in float32."""
  xf = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=-1, keepdims=True))  # [..., 1]
  y = xf / jnp.maximum(norm, _NORM_EPS) * (x.shape[-1] ** 0.5) * p["scale"].astype(jnp.float32)
  return y.astype(x.dtype)


def residual_block(p: dict, x: Array, cache: FeatureCache, name: str) -> Array:
  """norm -> SiLU -> conv3 -> norm -> SiLU -> conv3, plus the (1x1x1 conv) shortcut."""
  h = conv3d(p["shortcut"], x) if "shortcut" in p else x  # [B, F, X, Y, O]
  x = jax.nn.silu(rms_norm(p["norm1"], x))
  x = causal_conv3d(p["conv1"], x, cache, f"{name}/conv1")  # [B, F, X, Y, O]
  x = jax.nn.silu(rms_norm(p["norm2"], x))
  x = causal_conv3d(p["conv2"], x, cache, f"{name}/conv2")  # [B, F, X, Y, O]
  return x + h


def attention_block(p: dict, x: Array) -> Array:
  """Single-head self-attention over the X*Y positions of each frame, scale 1/sqrt(C); residual."""
  b, f, nx, ny, c = x.shape
  h = rms_norm(p["norm"], x).reshape(b * f, nx * ny, c)  # [B*F, P, C]
  qkv = h @ p["qkv"]["kernel"].astype(x.dtype) + p["qkv"]["bias"].astype(x.dtype)  # [B*F, P, 3C]
  q, k, v = jnp.split(qkv, 3, axis=-1)  # 3 x [B*F, P, C]
  logits = jnp.einsum("BQC,BKC->BQK", q, k, precision=jax.lax.Precision.HIGHEST,
                      preferred_element_type=jnp.float32) / (c ** 0.5)  # [B*F, P, P]
  weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
  out = jnp.einsum("BQK,BKC->BQC", weights, v, precision=jax.lax.Precision.HIGHEST)  # [B*F, P, C]
  out = out @ p["proj"]["kernel"].astype(x.dtype) + p["proj"]["bias"].astype(x.dtype)
  return x + out.reshape(b, f, nx, ny, c)  # [B, F, X, Y, C]


def downsample(p: dict, x: Array, cache: FeatureCache, name: str, first: bool) -> Array:
  """Zero pad right/bottom + stride-2 3x3 conv; with `time_conv`, halve time from the 2nd chunk.

  The first chunk (1 frame) only stores its last frame; later chunks run the (3, 1, 1) stride-2
  time conv over cat(that frame, chunk) and store their own last frame.
  """
  x = conv2d(p["conv"], x, stride=2, padding=((0, 1), (0, 1)))  # [B, F, X/2, Y/2, C]
  if "time_conv" not in p:
    return x
  key = f"{name}/time_conv"
  if not first:
    previous = cache.get(key, x, frames=1).astype(x.dtype)  # [B, 1, X/2, Y/2, C]
    cache.put(key, x[:, -1:])
    return conv3d(p["time_conv"], jnp.concatenate([previous, x], axis=1), stride_t=2)
  cache.put(key, x[:, -1:])  # [B, 1, X/2, Y/2, C]
  return x


def upsample(p: dict, x: Array, cache: FeatureCache, name: str, first: bool) -> Array:
  """With `time_conv` (not for the first latent frame): causal conv to 2C, split, interleave
  in time (2x frames); then nearest 2x in space + 3x3 conv (C -> C/2)."""
  if "time_conv" in p:
    key = f"{name}/time_conv"
    if first:
      cache.put(key, cache.get(key, x))  # stays zero: the 2nd frame sees zero padding
    else:
      b, f, nx, ny, c = x.shape
      y = causal_conv3d(p["time_conv"], x, cache, key)  # [B, F, X, Y, 2C]
      y = y.reshape(b, f, nx, ny, 2, c).transpose(0, 1, 4, 2, 3, 5)  # [B, F, 2, X, Y, C]
      x = y.reshape(b, 2 * f, nx, ny, c)  # [B, 2F, X, Y, C]
  x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # [B, F, 2X, 2Y, C]
  return conv2d(p["conv"], x)  # [B, F, 2X, 2Y, C/2]
