"""Attention of the Wan2.1 DiT: the kernel (`attend`), block-causal masks, self- and cross-attention.

Self-attention keys are normalised (RMSNorm over the full width D, before the head split) and
returned **before RoPE** so a cache can store them with their positions and rotate them at read
time (DESIGN 4.4).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.models import rope
from blockvid_jax.models.embeddings import RMSNorm, dense
from blockvid_jax.models.spec import AttentionImpl
from blockvid_jax.typing import Array

_NEG = -1e30  # logits of masked keys (finite so fully-masked padding rows stay NaN-free)


def attend(q: Array, k: Array, v: Array, mask: Optional[Array], impl: str = "xla",
           return_probs_mean: bool = False) -> tuple[Array, Optional[Array]]:
  """Softmax attention. q [B, L, N, H]; k, v [B, S, N, H]; mask [B|1, L, S] bool (True = attend).

  Returns (out [B, L, N, H], mean attention mass per key [B, S] or None). The mean is over heads and
  queries (the saliency of DESIGN 4.1); asking for it always uses the XLA path.
  """
  scale = 1.0 / np.sqrt(q.shape[-1])
  if impl == AttentionImpl.FUSED.value and not return_probs_mean:
    m = None if mask is None else jnp.broadcast_to(mask[:, None], (q.shape[0], 1) + mask.shape[1:])
    out = jax.nn.dot_product_attention(q, k, v, mask=m, scale=scale)  # [B, L, N, H]
    return out, None
  logits = jnp.einsum("BLNH,BSNH->BNLS", q, k, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask[:, None, :, :], logits, _NEG)               # [B, N, L, S]
  probs = jax.nn.softmax(logits, axis=-1)                               # [B, N, L, S]
  out = jnp.einsum("BNLS,BSNH->BLNH", probs.astype(v.dtype), v)         # [B, L, N, H]
  mass = jnp.mean(probs, axis=(1, 2)) if return_probs_mean else None    # [B, S]
  return out, mass


def block_causal_mask(q_chunk: Array, k_chunk: Array) -> Array:
  """[Lq], [Lk] chunk ids -> [Lq, Lk] bool: a query sees keys of its own and earlier chunks."""
  return k_chunk[None, :] <= q_chunk[:, None]


def teacher_forcing_mask(chunk: Array) -> Array:
  """Mask of the [clean | noisy] doubled layout, chunk [L] ids of one half -> [2L, 2L] bool.

  clean chunk j sees clean chunks <= j; noisy chunk j sees clean chunks < j and noisy chunk j.
  """
  qc, kc = chunk[:, None], chunk[None, :]
  clean_clean = kc <= qc
  noisy_clean = kc < qc
  noisy_noisy = kc == qc
  none = jnp.zeros_like(clean_clean)
  top = jnp.concatenate([clean_clean, none], axis=1)            # clean queries  [L, 2L]
  bottom = jnp.concatenate([noisy_clean, noisy_noisy], axis=1)  # noisy queries  [L, 2L]
  return jnp.concatenate([top, bottom], axis=0)                 # [2L, 2L]


def _split_heads(x: Array, num_heads: int) -> Array:
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)  # [B, L, N, H]


def _project_qkv(mod: nn.Module, x: Array, kv_src: Array) -> tuple[Array, Array, Array]:
  """q from x [B, L, D], k/v from kv_src [B, S, D]: Linear, RMSNorm over D on q and k, head split.

  Called inside `mod`'s compact method, so the projections are `mod`'s submodules q/k/v/norm_q/norm_k.
  """
  d, dt, pdt = mod.dim, mod.dtype, mod.param_dtype
  q = dense(d, ("embed", "heads"), dt, pdt, "q")(x)                          # [B, L, D]
  k = dense(d, ("embed", "heads"), dt, pdt, "k")(kv_src)                     # [B, S, D]
  v = dense(d, ("embed", "heads"), dt, pdt, "v")(kv_src)                     # [B, S, D]
  q = RMSNorm(mod.eps, pdt, name="norm_q")(q)
  k = RMSNorm(mod.eps, pdt, name="norm_k")(k)
  return tuple(_split_heads(a, mod.num_heads) for a in (q, k, v))          # [B, *, N, H]


class SelfAttention(nn.Module):
  """Self-attention with q/k RMSNorm and 3D RoPE, attending to [context | own tokens].

  Inputs: x [B, L, D]; cos/sin [B, L, H/2] of the tokens; mask [B|1, L, S + L];
  optional context k, v [B, S, N, H] (pre-RoPE) with ctx_cos/ctx_sin [B, S, H/2].
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
      ck = rope.apply_rope(ctx["k"].astype(k.dtype), ctx["cos"], ctx["sin"])  # [B, S, N, H]
      k_all = jnp.concatenate([ck, k_r], axis=1)                            # [B, S+L, N, H]
      v_all = jnp.concatenate([ctx["v"].astype(v.dtype), v], axis=1)        # [B, S+L, N, H]
    else:
      k_all, v_all = k_r, v
    out, mass = attend(q_r, k_all, v_all, mask, self.impl, return_probs_mean=return_saliency)
    saliency = None if mass is None else mass[:, k_all.shape[1] - k.shape[1]:]  # [B, L]
    out = out.reshape(*out.shape[:2], d)                                    # [B, L, D]
    out = dense(d, ("heads", "embed"), self.dtype, self.param_dtype, "o")(out)
    return out, k, v, saliency


class CrossAttention(nn.Module):
  """Cross-attention to the embedded text [B, T, D] (no RoPE, no mask), q/k RMSNorm."""
  dim: int
  num_heads: int
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: Array, text: Array) -> Array:
    d = self.dim
    q, k, v = _project_qkv(self, x, text)                          # [B, L|T, N, H]
    out, _ = attend(q, k, v, None, self.impl)                                   # [B, L, N, H]
    out = out.reshape(*out.shape[:2], d)                                        # [B, L, D]
    return dense(d, ("heads", "embed"), self.dtype, self.param_dtype, "o")(out)
