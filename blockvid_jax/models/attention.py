"""Attention of the Wan2.1 DiT: the kernel (`attend`), block-causal masks, self- and cross-attention.

Self-attention keys are normalised (RMSNorm over the full width D, before the head split) and
returned **before RoPE** so a cache can store them with their positions and rotate them at read
time (DESIGN 4.4).
"""

from __future__ import annotations

from typing import Optional

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from blockvid_jax.models import attention_kernels, rope
from blockvid_jax.models.embeddings import RMSNorm, dense
from blockvid_jax.typing import Array



def attend(q: Array, k: Array, v: Array, mask: Optional[Array], impl: str = "xla",
           saliency_start: Optional[int] = None) -> tuple[Array, Optional[Array]]:
  """Softmax attention. q [B, L, N, H]; k, v [B, S, N, H]; mask [B|1, L, S] bool (True = attend);
  `impl` one of `attention_kernels.IMPLEMENTATIONS`.

  Returns (out [B, L, N, H], saliency [B, S - saliency_start] or None): with `saliency_start`, the
  mean over heads and queries of the probability mass each key from that index on receives (DESIGN
  4.1), from the log-sum-exp of the attention (`attention_kernels.lse_saliency`): every
  implementation gives it.
  """
  out, lse = attention_kernels.attention(q, k, v, mask, impl)
  if saliency_start is None:
    return out, None
  if mask is None:
    sub_mask = None
  elif isinstance(mask, attention_kernels.GroupMask):
    sub_mask = mask.keys(saliency_start)
  else:
    sub_mask = mask[..., saliency_start:]
  return out, attention_kernels.lse_saliency(q, k[:, saliency_start:], lse, sub_mask)  # [B, S']


def block_causal_mask(q_chunk: Array, k_chunk: Array) -> Array:
  """[Lq], [Lk] chunk ids -> [Lq, Lk] bool: a query sees keys of its own and earlier chunks."""
  return k_chunk[None, :] <= q_chunk[:, None]


def block_causal_groups(chunk: Array, n: int) -> attention_kernels.GroupMask:
  """`block_causal_mask(chunk, chunk)[None]` as a structural mask (chunk ids [L] in [0, n), a
  [1, n, n] table)."""
  table = jnp.tril(jnp.ones((n, n), bool))[None]                         # [1, n, n]
  return attention_kernels.GroupMask(q_group=chunk, k_group=chunk, table=table)


def teacher_forcing_groups(chunk: Array, n: int, visible: Optional[Array] = None
                           ) -> attention_kernels.GroupMask:
  """`teacher_forcing_mask(chunk, visible)` as a structural mask: 2n groups (clean chunks 0..n-1,
  noisy chunks n..2n-1; chunk [L] ids of one half, n chunks), a [B|1, 2n, 2n] table."""
  c, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
  seen = (j < c)[None] if visible is None else visible & (j < c)[None]   # [B|1, n, n]
  own = jnp.broadcast_to((j == c)[None], seen.shape)
  none = jnp.zeros_like(seen)
  table = jnp.concatenate([jnp.concatenate([seen | own, none], axis=2),
                           jnp.concatenate([seen, own], axis=2)], axis=1)  # [B|1, 2n, 2n]
  groups = jnp.concatenate([chunk, chunk + n]).astype(jnp.int32)         # [2L]
  return attention_kernels.GroupMask(q_group=groups, k_group=groups, table=table)


def teacher_forcing_mask(chunk: Array, visible: Optional[Array] = None) -> Array:
  """Mask of the [clean | noisy] doubled layout, chunk [L] ids of one half -> [B|1, 2L, 2L] bool.

  visible [B|1, n, n] bool: which earlier clean chunks j < c chunk c sees (default: all of them).
  Clean chunk c (the cache's commit pass) and noisy chunk c both see the visible clean chunks and
  their own chunk of their own half.
  """
  qc, kc = chunk[:, None], chunk[None, :]                       # [L, 1], [1, L]
  if visible is None:
    seen = (kc < qc)[None]                                      # [1, L, L]
  else:
    seen = visible[:, qc, kc] & (kc < qc)[None]                 # [B, L, L]
  own = jnp.broadcast_to((kc == qc)[None], seen.shape)
  none = jnp.zeros_like(seen)
  top = jnp.concatenate([seen | own, none], axis=2)             # clean queries  [B, L, 2L]
  bottom = jnp.concatenate([seen, own], axis=2)                 # noisy queries  [B, L, 2L]
  return jnp.concatenate([top, bottom], axis=1)                 # [B, 2L, 2L]


def _split_heads(x: Array, num_heads: int) -> Array:
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)  # [B, L, N, H]


def _project_q(mod: nn.Module, x: Array) -> Array:
  """q from x [B, L, D]: Linear, RMSNorm over D, head split -> [B, L, N, H] (`mod`'s q/norm_q)."""
  q = dense(mod.dim, ("embed", "heads"), mod.dtype, mod.param_dtype, "q")(x)           # [B, L, D]
  return _split_heads(RMSNorm(mod.eps, mod.param_dtype, name="norm_q")(q), mod.num_heads)


def _project_kv(mod: nn.Module, src: Array) -> tuple[Array, Array]:
  """k, v from src [B, S, D]: Linear, RMSNorm over D on k, head split -> [B, S, N, H] each.

  Called inside `mod`'s compact method, so the projections are `mod`'s submodules k/v/norm_k.
  """
  d, dt, pdt = mod.dim, mod.dtype, mod.param_dtype
  k = dense(d, ("embed", "heads"), dt, pdt, "k")(src)                        # [B, S, D]
  v = dense(d, ("embed", "heads"), dt, pdt, "v")(src)                        # [B, S, D]
  k = RMSNorm(mod.eps, pdt, name="norm_k")(k)
  return _split_heads(k, mod.num_heads), _split_heads(v, mod.num_heads)


def _project_qkv(mod: nn.Module, x: Array, kv_src: Array) -> tuple[Array, Array, Array]:
  """q from x [B, L, D], k/v from kv_src [B, S, D] (see `_project_q`, `_project_kv`)."""
  q = _project_q(mod, x)
  return (q, *_project_kv(mod, kv_src))                                      # [B, *, N, H]


class SelfAttention(nn.Module):
  """Self-attention with q/k RMSNorm and 3D RoPE, attending to [context | own tokens].

  Inputs: x [B, L, D]; cos/sin [B, L, H/2] of the tokens; mask [B|1, L, S + L];
  optional context k, v [B, S, N, H]: pre-RoPE with cos/sin [B, S, H/2], or already rotated.
  Returns (out [B, L, D], k [B, L, N, H] pre-RoPE, v [B, L, N, H], saliency [B, L] or None).
  """
  dim: int
  num_heads: int
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  impl: str = "xla"

  @nn.compact
  def __call__(self, x, cos, sin, mask, ctx=None, return_saliency: bool = False):
    d = self.dim
    q, k, v = _project_qkv(self, x, x)                                      # [B, L, N, H]
    q_r = rope.apply_rope(q, cos, sin)
    k_r = rope.apply_rope(k, cos, sin)
    if ctx is not None:
      ck = ctx["k"].astype(k.dtype)                                         # [B, S, N, H]
      if "cos" in ctx:  # else rotated once per chunk (`rotate_context`)
        ck = rope.apply_rope(ck, ctx["cos"], ctx["sin"])
      k_all = jnp.concatenate([ck, k_r], axis=1)                            # [B, S+L, N, H]
      v_all = jnp.concatenate([ctx["v"].astype(v.dtype), v], axis=1)        # [B, S+L, N, H]
    else:
      k_all, v_all = k_r, v
    own = k_all.shape[1] - k.shape[1]                                       # first own key
    out, saliency = attend(q_r, k_all, v_all, mask, self.impl,
                           saliency_start=own if return_saliency else None)  # saliency [B, L]
    out = out.reshape(*out.shape[:2], d)                                    # [B, L, D]
    out = dense(d, ("heads", "embed"), self.dtype, self.param_dtype, "o")(out)
    return out, k, v, saliency


class CrossAttention(nn.Module):
  """Cross-attention to the embedded text [B, T, D] (no RoPE, no mask), q/k RMSNorm.

  Grouped (per-chunk captions): with text [B, G, T, D] the L queries split into G equal contiguous
  groups and group g attends only to caption g (the groups fold into the batch: one attention
  call). With `kv` (the text's keys/values [B, T, N, H] from `TextKV`, computed once per chunk) the
  text projections are skipped.
  """
  dim: int
  num_heads: int
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: Array, text: Optional[Array], kv: Optional[tuple[Array, Array]] = None
               ) -> Array:
    d = self.dim
    q = _project_q(self, x)                                                     # [B, L, N, H]
    k, v = _project_kv(self, text) if kv is None else (a.astype(q.dtype) for a in kv)  # [B, (G,) T, N, H]
    if k.ndim == 5:  # one caption per group of queries
      g = k.shape[1]
      q = einops.rearrange(q, "b (g l) n h -> (b g) l n h", g=g)                 # [B*G, L/G, N, H]
      k, v = (einops.rearrange(a, "b g t n h -> (b g) t n h") for a in (k, v))  # [B*G, T, N, H]
      out, _ = attend(q, k, v, None, self.impl)                                 # [B*G, L/G, N, H]
      out = einops.rearrange(out, "(b g) l n h -> b (g l) n h", g=g)           # [B, L, N, H]
    else:
      out, _ = attend(q, k, v, None, self.impl)                                 # [B, L, N, H]
    out = out.reshape(*out.shape[:2], d)                                        # [B, L, D]
    return dense(d, ("heads", "embed"), self.dtype, self.param_dtype, "o")(out)


class TextKV(nn.Module):
  """The text's cross-attention keys/values of one layer, text [B, T, D] -> ([B, T, N, H]) * 2.

  Its submodules carry CrossAttention's names (k, v, norm_k), so it runs on a block's weights.
  """
  dim: int
  num_heads: int
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, text: Array) -> tuple[Array, Array]:
    return _project_kv(self, text)
