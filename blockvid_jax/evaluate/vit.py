"""One Flax Vision Transformer for the VDE scorers: DINO ViT-B/16 and the CLIP image towers.

Both are pre-LN ViTs with a class token; they differ only in switches held by `ViTSpec`:

| switch          | DINO ViT-B/16 (`subject`)        | CLIP B/32, L/14 (`background`, `aesthetic`) |
|-----------------|----------------------------------|---------------------------------------------|
| patch conv bias | yes                              | no                                          |
| ln_pre          | no                               | yes (after adding position embeddings)      |
| MLP activation  | exact (erf) GELU                 | QuickGELU x * sigmoid(1.702 x)              |
| LayerNorm eps   | 1e-6                             | 1e-5                                        |
| output          | final norm, class token (768)    | ln_post(class token) @ proj (512 / 768)     |
| other sizes     | position embeddings interpolated | fixed 224x224 input                         |
|                 | (bicubic, DINO's +0.1 rule)      |                                             |

Block (both): x += attn(LN1(x)); x += MLP(LN2(x)); attention has one fused qkv projection (with
bias) whose output channels are ordered (q|k|v, head, head_dim), softmax scale 1/sqrt(head_dim).
Public models use head_dim 64 (12 heads at width 768, 16 at 1024).

Shape letters (see `blockvid_jax.typing`): B images, X/Y patch rows/cols, L tokens (1 + X*Y),
N heads, H head dim, D width, M MLP width, O output features.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate.resize import resize_matrix
from blockvid_jax.typing import Array


@dataclasses.dataclass(frozen=True)
class ViTSpec:
  """Explicit sizes and switches of a ViT (see the module docstring for the public values)."""
  width: int                 # D
  depth: int                 # number of blocks
  num_heads: int             # N (H = D / N)
  mlp_dim: int               # M
  patch: int                 # patch size in pixels (square, stride = patch)
  grid: int                  # position-embedding grid of the checkpoint (grid * grid + 1 positions)
  ln_eps: float              # LayerNorm epsilon
  quick_gelu: bool           # QuickGELU (CLIP) instead of exact GELU (DINO)
  patch_bias: bool           # the patch convolution has a bias (DINO)
  ln_pre: bool               # LayerNorm after the embeddings (CLIP)
  out_dim: Optional[int]     # O: projection of the class token (CLIP), None = no projection
  interpolate_pos: bool      # accept other input sizes by interpolating position embeddings (DINO)

  @property
  def image_size(self) -> int:
    """The input size the position embeddings were trained for (224 for the public models)."""
    return self.grid * self.patch

  @property
  def features(self) -> int:
    return self.out_dim or self.width


def dino_spec(width=768, depth=12, num_heads=12, mlp_dim=3072, patch=16, grid=14) -> ViTSpec:
  """DINO ViT (`vit_base(patch_size=16)` by default)."""
  return ViTSpec(width, depth, num_heads, mlp_dim, patch, grid, ln_eps=1e-6, quick_gelu=False,
                 patch_bias=True, ln_pre=False, out_dim=None, interpolate_pos=True)


def clip_spec(width=768, depth=12, num_heads=12, patch=32, grid=7, out_dim=512) -> ViTSpec:
  """OpenAI CLIP image tower: ViT-B/32 by default; ViT-L/14 is (1024, 24, 16, 14, 16, 768)."""
  return ViTSpec(width, depth, num_heads, 4 * width, patch, grid, ln_eps=1e-5, quick_gelu=True,
                 patch_bias=False, ln_pre=True, out_dim=out_dim, interpolate_pos=False)


def dino_pos_resize_matrices(grid: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
  """DINO's bicubic resize of the [grid, grid] position grid to [rows, cols] as two matrices.

  DINO calls interpolate(scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode='bicubic'):
  the output size is rows x cols but the sampling step is grid / (rows + 0.1), not grid / rows.
  Returns ([rows, grid], [cols, grid]).
  """
  mr = resize_matrix(grid, rows, "bicubic", scale=(rows + 0.1) / grid)
  mc = resize_matrix(grid, cols, "bicubic", scale=(cols + 0.1) / grid)
  return mr, mc


class Block(nn.Module):
  """Pre-LN transformer block: x += attn(LN(x)); x += MLP(LN(x))."""
  width: int
  num_heads: int
  mlp_dim: int
  ln_eps: float
  quick_gelu: bool

  @nn.compact
  def __call__(self, x: Array) -> Array:                   # x [B, L, D]
    b, l, d = x.shape
    n = self.num_heads
    h = d // n
    y = nn.LayerNorm(epsilon=self.ln_eps, name="ln_1")(x)
    qkv = nn.Dense(3 * d, name="qkv")(y)                   # [B, L, 3D]
    qkv = qkv.reshape(b, l, 3, n, h)                       # [B, L, 3, N, H]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]     # [B, L, N, H] each
    logits = jnp.einsum("BLNH,BSNH->BNLS", q, k) / np.sqrt(h)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)    # [B, N, L, S]
    att = jnp.einsum("BNLS,BSNH->BLNH", probs, v)          # [B, L, N, H]
    att = att.reshape(b, l, d)                             # [B, L, D]
    x = x + nn.Dense(d, name="out")(att)
    y = nn.LayerNorm(epsilon=self.ln_eps, name="ln_2")(x)
    y = nn.Dense(self.mlp_dim, name="fc1")(y)              # [B, L, M]
    y = y * jax.nn.sigmoid(1.702 * y) if self.quick_gelu else nn.gelu(y, approximate=False)
    return x + nn.Dense(d, name="fc2")(y)                  # [B, L, D]


class ViT(nn.Module):
  """images [B, H, W, 3] (normalised) -> class-token features [B, O]."""
  spec: ViTSpec

  def _positions(self, pos: Array, rows: int, cols: int, square: bool) -> Array:
    """pos [1 + G*G, D] -> [1 + rows*cols, D] (DINO interpolation where allowed)."""
    s = self.spec
    if (rows, cols) == (s.grid, s.grid) and (square or not s.interpolate_pos):
      return pos                          # DINO skips interpolation only for square inputs
    if not s.interpolate_pos:
      raise ValueError(f"input gives a {rows}x{cols} patch grid but this ViT only accepts "
                       f"{s.image_size}x{s.image_size} images ({s.grid}x{s.grid} patches)")
    mr, mc = dino_pos_resize_matrices(s.grid, rows, cols)
    grid = pos[1:].reshape(s.grid, s.grid, -1)                        # [G, G, D]
    grid = jnp.einsum("rg,ghd->rhd", jnp.asarray(mr, pos.dtype), grid)  # [X, G, D]
    grid = jnp.einsum("ch,rhd->rcd", jnp.asarray(mc, pos.dtype), grid)  # [X, Y, D]
    return jnp.concatenate([pos[:1], grid.reshape(rows * cols, -1)], axis=0)  # [1 + X*Y, D]

  @nn.compact
  def __call__(self, images: Array) -> Array:
    s = self.spec
    b, height, width, _ = images.shape
    x = nn.Conv(s.width, (s.patch, s.patch), strides=(s.patch, s.patch), padding="VALID",
                use_bias=s.patch_bias, name="patch_embed")(images)    # [B, X, Y, D]
    _, rows, cols, d = x.shape
    x = x.reshape(b, rows * cols, d)                                  # [B, X*Y, D]
    cls = self.param("cls_token", nn.initializers.normal(0.02), (d,))
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (s.grid * s.grid + 1, d))
    cls = jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d))           # [B, 1, D]
    x = jnp.concatenate([cls, x], axis=1)                             # [B, L, D]
    x = x + self._positions(pos, rows, cols, height == width)[None]  # [B, L, D]
    if s.ln_pre:
      x = nn.LayerNorm(epsilon=s.ln_eps, name="ln_pre")(x)
    for i in range(s.depth):
      x = Block(s.width, s.num_heads, s.mlp_dim, s.ln_eps, s.quick_gelu, name=f"block_{i}")(x)
    x = nn.LayerNorm(epsilon=s.ln_eps, name="ln_post")(x[:, 0])       # [B, D] class token
    if s.out_dim:
      proj = self.param("proj", nn.initializers.normal(d ** -0.5), (d, s.out_dim))
      x = x @ proj                                                    # [B, O]
    return x
