"""MUSIQ, the multi-scale image quality transformer, in Flax (Clarity; VBench imaging quality).

The architecture of pyiqa's `MUSIQ` (facts read from its public code; written anew here):

  image [H, W, 3] in [0, 1] -> x = (image - 0.5) * 2 -> a multi-scale patch sequence:
    * for each longer-side length s in sorted(`longer_side_lengths`) (public: 224, 384): bicubic
      resize (align_corners=False, no antialias, no clamp) to (round(H r), round(W r)),
      r = s / max(H, W) (Python's round); its 32x32 patches (TF 'SAME' zero padding, stride 32,
      row-major), padded with all-zero tokens (mask 0, positions 0) or cut to ceil(s / 32)^2;
    * then every patch of the image at its own resolution (no padding, no cut);
    * each token carries a hashed spatial position: a (rows, cols) patch grid maps to the G x G grid
      (G = 10) by PyTorch 'nearest' indexing, index = gh * G + gw; and its scale id (0, 1, 2).
  per patch (a 32x32x3 image): StdConv 7x7/2 (weight standardisation: w - mean, / (std + 1e-5),
  std unbiased, over (in, kh, kw)) -> GroupNorm(32, eps 1e-6) -> ReLU -> 3x3/2 max pool (SAME zero
  padding) -> Bottleneck(64 -> 256: StdConv 1x1, 3x3, 1x1 each + GroupNorm(32, eps 1e-4), ReLU
  between; projection StdConv 1x1 + GroupNorm; ReLU after the sum) -> [8, 8, 256] flattened in
  (h, w, c) order -> Linear(16384, D).
  tokens + position_emb[spatial] + scale_emb[scale]; a class token in front (mask 1); L pre-LN
  blocks (LayerNorm eps 1e-6; separate q/k/v/out Linear with bias; logits * head_dim^-0.5 set to
  -1000 wherever the query or the key is a padding token; exact GELU MLP); final LayerNorm; head
  Linear(D, C) on the class token. C = 1 (SPAQ, KonIQ): the score is that value; C = 10 (AVA):
  softmax then the mean opinion score sum_i p_i * i.

Public SPAQ model (`musiq_spaq_ckpt-358bb6af.pth`): D 384, MLP 1152, 6 heads, 14 layers, 3 scales,
G 10, C 1. VBench's imaging quality feeds uint8 frames resized (bilinear, no antialias, rounded back
to uint8) so that the longer side is 512 when it is larger, then / 255 (see `vbench_frames`).

Shape letters: B images, L tokens, P patch size, D width, N heads, H head dim, M MLP width.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate.resize import bilinear_f32, resize_hw
from blockvid_jax.typing import Array

ROOT_DIM = 64       # channels of the ResNet root (fixed in the public architecture)
MASK_LOGIT = -1e3   # attention logit of padding tokens (not -inf, as in the reference)
VBENCH_MAX_SIDE = 512


@dataclasses.dataclass(frozen=True)
class MusiqSpec:
  """Sizes of a MUSIQ model and of its multi-scale input (public SPAQ values by default)."""
  hidden: int = 384                                 # D
  mlp_dim: int = 1152                               # M
  num_heads: int = 6                                # N
  num_layers: int = 14
  num_scales: int = 3                               # resized scales + the original resolution
  grid: int = 10                                    # G of the hashed spatial positions
  num_class: int = 1                                # C
  patch: int = 32                                   # P
  longer_side_lengths: tuple[int, ...] = (224, 384)
  original_resolution: bool = True                  # append all patches of the unresized image


# ----------------------------------------------------------------------------- input pipeline


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow 'SAME' padding (before, after) of one axis."""
  out = math.ceil(size / stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def hashed_positions(grid: int, rows: int, cols: int) -> np.ndarray:
  """[rows * cols] int32: the (rows, cols) patch grid hashed to a grid x grid table.

  PyTorch 'nearest' (float32 arithmetic): index = min(floor(i * (grid / n)), grid - 1).
  """
  def nearest(n):
    if n == grid:
      return np.arange(n)
    scale = np.float32(grid) / np.float32(n)
    idx = np.floor(np.arange(n, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, grid - 1)
  gh, gw = nearest(rows), nearest(cols)
  return (gh[:, None] * grid + gw[None, :]).reshape(-1).astype(np.int32)   # [rows * cols]


def _patches(x: np.ndarray, patch: int) -> np.ndarray:
  """[B, H, W, 3] -> [B, rows * cols, P, P, 3], SAME zero padding, row-major patches."""
  b, h, w, c = x.shape
  ph, pw = same_pads(h, patch, patch), same_pads(w, patch, patch)
  x = np.pad(x, ((0, 0), ph, pw, (0, 0)))                      # [B, rows*P, cols*P, 3]
  rows, cols = x.shape[1] // patch, x.shape[2] // patch
  x = x.reshape(b, rows, patch, cols, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, rows * cols, patch, patch, c)            # [B, rows*cols, P, P, 3]


def _scale_tokens(x: np.ndarray, spec: MusiqSpec, scale_id: int, max_len: int):
  """Tokens of one scale: patches, positions, scale ids, mask (padded / cut to max_len >= 0)."""
  b, h, w, _ = x.shape
  p = _patches(x, spec.patch)                                  # [B, n, P, P, 3]
  n = p.shape[1]
  pos = hashed_positions(spec.grid, math.ceil(h / spec.patch), math.ceil(w / spec.patch))
  scale = np.full((n,), scale_id, np.int32)
  mask = np.ones((n,), bool)
  if max_len >= 0:
    keep = min(n, max_len)
    pad = max_len - keep
    p = np.concatenate([p[:, :keep], np.zeros((b, pad) + p.shape[2:], p.dtype)], axis=1)
    pos = np.concatenate([pos[:keep], np.zeros((pad,), np.int32)])
    scale = np.concatenate([scale[:keep], np.zeros((pad,), np.int32)])
    mask = np.concatenate([mask[:keep], np.zeros((pad,), bool)])
  return p, pos, scale, mask


def multiscale_tokens(images: np.ndarray, spec: MusiqSpec):
  """float32 [B, H, W, 3] in [0, 1] -> (patches [B, L, P, P, 3], positions, scales, mask [L]).

  The token layout depends only on (H, W), so positions / scales / mask are shared by the batch.
  """
  x = ((images.astype(np.float32) - np.float32(0.5)) * np.float32(2.0))   # [B, H, W, 3]
  _, h, w, _ = x.shape
  parts = []
  for scale_id, side in enumerate(sorted(spec.longer_side_lengths)):
    ratio = side / max(h, w)
    out_hw = (round(h * ratio), round(w * ratio))
    resized = resize_hw(x, out_hw, "bicubic")                 # [B, h', w', 3]
    parts.append(_scale_tokens(resized, spec, scale_id, math.ceil(side / spec.patch) ** 2))
  if spec.original_resolution:
    parts.append(_scale_tokens(x, spec, len(spec.longer_side_lengths), -1))
  patches = np.concatenate([p[0] for p in parts], axis=1)     # [B, L, P, P, 3]
  pos, scale, mask = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))   # [L] each
  return patches.astype(np.float32), pos, scale, mask


def vbench_frames(frames: np.ndarray, max_side: int = VBENCH_MAX_SIDE) -> np.ndarray:
  """VBench imaging-quality input: uint8 [T, H, W, 3] -> float32 [T, h, w, 3] in [0, 1].

  When max(H, W) > max_side: bilinear resize (no antialias, rounded to uint8) to
  (int(H s), int(W s)), s = max_side / max(H, W). Then / 255.
  """
  _, h, w, _ = frames.shape
  x = frames.astype(np.float32)
  if max(h, w) > max_side:
    s = max_side / max(h, w)
    x = np.round(bilinear_f32(x, (int(s * h), int(s * w))))   # torchvision on uint8: float32, round
  return (x / np.float32(255.0)).astype(np.float32)


# ----------------------------------------------------------------------------- model


class StdConv(nn.Module):
  """Weight-standardised convolution without bias, TF 'SAME' padding."""
  features: int
  kernel: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:                      # x [B, H, W, I]
    k = self.kernel
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
    w = w - jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    w = w / (jnp.std(w, axis=(0, 1, 2), ddof=1, keepdims=True) + 1e-5)
    pads = [same_pads(x.shape[1], k, self.stride), same_pads(x.shape[2], k, self.stride)]
    return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (self.stride, self.stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class GroupNorm(nn.Module):
  """GroupNorm with a two-pass variance (PyTorch's numerics)."""
  groups: int
  eps: float

  @nn.compact
  def __call__(self, x: Array) -> Array:                      # x [B, H, W, C]
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, self.groups, c // self.groups)
    mu = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(g - mu), axis=(1, 2, 4), keepdims=True)
    y = ((g - mu) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return y * scale + bias


class Bottleneck(nn.Module):
  """MUSIQ's root bottleneck (width = in channels, stride 1, projection when in != out)."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:                      # x [B, h, w, I]
    width = x.shape[-1]
    identity = x
    if width != self.features:
      identity = GroupNorm(32, 1e-4, name="gn_proj")(StdConv(self.features, 1, name="conv_proj")(x))
    y = nn.relu(GroupNorm(32, 1e-4, name="gn1")(StdConv(width, 1, name="conv1")(x)))
    y = nn.relu(GroupNorm(32, 1e-4, name="gn2")(StdConv(width, 3, name="conv2")(y)))
    y = GroupNorm(32, 1e-4, name="gn3")(StdConv(self.features, 1, name="conv3")(y))
    return nn.relu(y + identity)                               # [B, h, w, features]


class EncoderBlock(nn.Module):
  """Pre-LN block with a padding mask: x += attn(LN(x)); x += MLP(LN(x))."""
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:        # x [B, L, D], mask [L] bool
    b, l, d = x.shape
    n = self.num_heads
    h = d // n
    y = nn.LayerNorm(epsilon=1e-6, name="norm1")(x)
    q, k, v = (nn.Dense(d, name=s)(y).reshape(b, l, n, h) for s in ("query", "key", "value"))
    logits = jnp.einsum("BLNH,BSNH->BNLS", q, k) * (h ** -0.5)   # [B, N, L, S]
    keep = mask[:, None] & mask[None, :]                          # [L, S]
    logits = jnp.where(keep[None, None], logits, MASK_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1)
    att = jnp.einsum("BNLS,BSNH->BLNH", probs, v).reshape(b, l, d)  # [B, L, D]
    x = x + nn.Dense(d, name="out")(att)
    y = nn.LayerNorm(epsilon=1e-6, name="norm2")(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, name="fc1")(y), approximate=False)   # [B, L, M]
    return x + nn.Dense(d, name="fc2")(y)


class Musiq(nn.Module):
  """(patches [B, L, P, P, 3], positions [L], scales [L], mask [L]) -> quality score [B]."""
  spec: MusiqSpec

  @nn.compact
  def __call__(self, patches: Array, positions: Array, scales: Array, mask: Array) -> Array:
    s = self.spec
    b, l = patches.shape[:2]
    x = patches.reshape((b * l,) + patches.shape[2:])          # [B*L, P, P, 3]
    x = StdConv(ROOT_DIM, 7, 2, name="conv_root")(x)           # [B*L, P/2, P/2, 64]
    x = nn.relu(GroupNorm(32, 1e-6, name="gn_root")(x))
    pads = [(0, 0), same_pads(x.shape[1], 3, 2), same_pads(x.shape[2], 3, 2), (0, 0)]
    x = jax.lax.reduce_window(jnp.pad(x, pads), -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                              "VALID")                         # [B*L, P/4, P/4, 64] (x >= 0)
    x = Bottleneck(4 * ROOT_DIM, name="block1")(x)             # [B*L, P/4, P/4, 256]
    x = x.reshape(b, l, -1)                                    # [B, L, (P/4)^2 * 256]
    x = nn.Dense(s.hidden, name="embedding")(x)                # [B, L, D]
    pos = self.param("position_emb", nn.initializers.normal(0.02), (s.grid * s.grid, s.hidden))
    sce = self.param("scale_emb", nn.initializers.normal(0.02), (s.num_scales, s.hidden))
    x = x + pos[positions][None] + sce[scales][None]
    cls = self.param("cls", nn.initializers.zeros, (s.hidden,))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, s.hidden)), x], axis=1)   # [B, 1+L, D]
    mask = jnp.concatenate([jnp.ones((1,), bool), mask])        # [1+L]
    for i in range(s.num_layers):
      x = EncoderBlock(s.num_heads, s.mlp_dim, name=f"encoderblock_{i}")(x, mask)
    x = nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)
    q = nn.Dense(s.num_class, name="head")(x[:, 0])            # [B, C]
    if s.num_class == 1:
      return q[:, 0]
    p = jax.nn.softmax(q, axis=-1)
    return jnp.sum(p * jnp.arange(1, s.num_class + 1, dtype=p.dtype), axis=-1)   # [B] MOS
