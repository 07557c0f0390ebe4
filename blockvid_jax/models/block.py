"""One Wan2.1 DiT block: modulated self-attention, affine-norm cross-attention, modulated GELU FFN.

The residual stream x stays float32. Modulation = table [6, D] + e0 [B, F, 6, D] gives
(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), applied per latent frame.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from blockvid_jax.models.attention import CrossAttention, SelfAttention, TextKV
from blockvid_jax.models.embeddings import AffineLayerNorm, dense, layer_norm
from blockvid_jax.typing import Array

BATCH_LEN_EMBED = ("activation_batch", "activation_length", "activation_embed")


def modulate(x: Array, shift: Array, scale: Array, tokens_per_frame: int) -> Array:
  """x [B, F*P, D] (float32), shift/scale [B, F, D] -> x * (1 + scale) + shift per frame."""
  b, l, d = x.shape
  xf = x.reshape(b, l // tokens_per_frame, tokens_per_frame, d)          # [B, F, P, D]
  xf = xf * (1.0 + scale[:, :, None, :]) + shift[:, :, None, :]
  return xf.reshape(b, l, d)                                             # [B, L, D]


def gate(y: Array, g: Array, tokens_per_frame: int) -> Array:
  """y [B, F*P, D] times gate g [B, F, D] per frame, in float32."""
  b, l, d = y.shape
  yf = y.astype(jnp.float32).reshape(b, l // tokens_per_frame, tokens_per_frame, d)
  return (yf * g[:, :, None, :]).reshape(b, l, d)                       # [B, L, D]


class Block(nn.Module):
  """A DiT block, written for `nn.scan`: (x, shared, layer_ctx) -> (x, per-layer outputs).

  shared: dict of layer-invariant arrays: e0 [B, F, 6, D], text [B, T, D], cos/sin [B|1, L, H/2],
    mask: a structural `GroupMask` over the block's own tokens ([B|1, L, L]; None: bidirectional).
  layer_ctx: None, or a dict with this layer's context: k, v [B, S, N, H], mask [B, S] (valid
    slots), cos/sin [B, S, H/2] (RoPE angles of the slots' positions; absent: k is rotated already);
    and/or text_k, text_v [B, T, N, H] (the text's cross-attention K/V; then shared["text"] is unused).
  Returns x [B, L, D] and, when `collect_kv`, {"k", "v"} [B, L, N, H] (+ "saliency" [B, L]).
  """
  dim: int
  ffn_dim: int
  num_heads: int
  tokens_per_frame: int
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  attention_impl: str = "xla"
  collect_kv: bool = False
  collect_saliency: bool = False

  @nn.compact
  def __call__(self, x: Array, shared: dict, layer_ctx):
    p, dt, pdt = self.tokens_per_frame, self.dtype, self.param_dtype
    x = nn.with_logical_constraint(x, BATCH_LEN_EMBED)
    table = self.param("modulation",
                       nn.with_logical_partitioning(nn.initializers.normal(self.dim ** -0.5),
                                                    ("mod_rows", "norm")),
                       (6, self.dim), pdt)
    mod = table.astype(jnp.float32) + shared["e0"]                     # [B, F, 6, D]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        mod[:, :, i] for i in range(6))                                # each [B, F, D]

    layer_ctx = layer_ctx or {}
    text_kv = (layer_ctx["text_k"], layer_ctx["text_v"]) if "text_k" in layer_ctx else None
    mask, ctx = shared["mask"], (layer_ctx if "k" in layer_ctx else None)
    if ctx is not None:  # the context slots (validity [B, S]) in front of the block's own tokens
      mask = mask.with_context(ctx["mask"])                            # [B, L, S+L] structural
    h = modulate(layer_norm(x, self.eps), shift_msa, scale_msa, p).astype(dt)
    y, k, v, saliency = SelfAttention(self.dim, self.num_heads, self.eps, dt, pdt,
                                      self.attention_impl, name="self_attn")(
        h, shared["cos"], shared["sin"], mask, ctx,
        return_saliency=self.collect_saliency)
    x = x + gate(y, gate_msa, p)                                       # [B, L, D]

    h = AffineLayerNorm(self.eps, pdt, name="norm3")(x).astype(dt)
    x = x + CrossAttention(self.dim, self.num_heads, self.eps, dt, pdt, self.attention_impl,
                           name="cross_attn")(h, None if text_kv else shared["text"].astype(dt),
                                              kv=text_kv).astype(jnp.float32)

    h = modulate(layer_norm(x, self.eps), shift_mlp, scale_mlp, p).astype(dt)
    h = dense(self.ffn_dim, ("embed", "mlp"), dt, pdt, "ffn_fc1")(h)      # [B, L, M]
    h = nn.gelu(h, approximate=True)
    h = dense(self.dim, ("mlp", "embed"), dt, pdt, "ffn_fc2")(h)          # [B, L, D]
    x = x + gate(h, gate_mlp, p)
    x = nn.with_logical_constraint(x, BATCH_LEN_EMBED)

    out = None
    if self.collect_kv:
      out = dict(k=k, v=v)
      if self.collect_saliency:
        out["saliency"] = saliency
    return x, out


class BlockTextKV(nn.Module):
  """A block's text cross-attention K/V only, written for `nn.scan` over the blocks' weights:
  (carry, text [B, T, D]) -> (carry, {"k", "v"} [B, T, N, H])."""
  dim: int
  num_heads: int
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, text: Array):
    k, v = TextKV(self.dim, self.num_heads, self.eps, self.dtype, self.param_dtype,
                  name="cross_attn")(text.astype(self.dtype))
    return carry, dict(k=k, v=v)
