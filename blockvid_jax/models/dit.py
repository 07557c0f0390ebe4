"""`CausalDiT`: the Wan2.1-compatible block-causal diffusion transformer (Flax linen).

Entry points (all through `model.apply`):
  * `__call__(latents, t, context, mode=...)`: full-sequence forward, `mode` in
    {"causal", "bidirectional"}; with `clean_latents` the teacher-forcing [clean | noisy] layout.
  * `forward_chunk(latents, t, context, kv_context, frame_offset)`: ONE chunk against a given KV
    context (pre-RoPE keys + positions + validity, or keys rotated once by `rotate_context`),
    returning the chunk's output and its own per-layer pre-RoPE K/V (and optionally per-token
    saliency). With `prompt_kv` the prompt's cross-attention K/V are reused instead of recomputed.
    The chunk engine (`diffusion.engine`) builds on it.
  * `prompt_kv(context)`: those per-layer cross-attention K/V of a prompt [B, T, E] -> `PromptKV`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from blockvid_jax.models import rope
from blockvid_jax.models.attention import block_causal_groups, teacher_forcing_groups
from blockvid_jax.models.block import Block, BlockTextKV, modulate
from blockvid_jax.models.embeddings import (TextEmbedding, TimeEmbedding, dense, layer_norm,
                                            patchify, unpatchify)
from blockvid_jax.models.spec import X0_T_FLOOR, DiTSpec, checkpoint_policy
from blockvid_jax.typing import Array
from blockvid_jax.errors import ConfigError

MODES = ("causal", "bidirectional")


@struct.dataclass
class KVContext:
  """Keys/values of earlier tokens that a chunk attends to (per layer, stored before RoPE).

  `positions` and `mask` may be shared by all layers ([B, S, ...]) or per layer ([K, B, S, ...],
  e.g. a sparse bank whose salient tokens differ per layer).
  """
  k: Array          # [K, B, S, N, H]
  v: Array          # [K, B, S, N, H]
  positions: Array  # [B, S, 3] or [K, B, S, 3] int32 (frame, row, col)
  mask: Array       # [B, S] or [K, B, S] bool, True = valid
  rotated: bool = struct.field(pytree_node=False, default=False)  # k already RoPE-rotated

  def per_layer(self) -> "KVContext":
    """Positions [K, B, S, 3] and mask [K, B, S] (broadcast over layers if shared)."""
    k = self.k.shape[0]
    pos = self.positions if self.positions.ndim == 4 else jnp.broadcast_to(
        self.positions[None], (k,) + self.positions.shape)
    mask = self.mask if self.mask.ndim == 3 else jnp.broadcast_to(self.mask[None], (k,) + self.mask.shape)
    return self.replace(positions=pos, mask=mask)

  @classmethod
  def empty(cls, spec: DiTSpec, batch: int, dtype=jnp.float32) -> "KVContext":
    shape = (spec.num_layers, batch, 0, spec.num_heads, spec.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               positions=jnp.zeros((batch, 0, 3), jnp.int32), mask=jnp.zeros((batch, 0), bool))


def rotate_context(ctx: KVContext, head_dim: int, theta: float, dtype) -> KVContext:
  """The context with its keys RoPE-rotated at their positions (once per chunk instead of once per
  layer call): k [K, B, S, N, H] cast to the compute `dtype`, positions/mask per layer."""
  if ctx.rotated:
    return ctx
  ctx = ctx.per_layer()
  kk, b, s, n, h = ctx.k.shape
  cos, sin = rope.angles(ctx.positions, head_dim, theta)                   # [K, B, S, H/2]
  flat = lambda a: a.reshape(kk * b, *a.shape[2:])
  k = rope.apply_rope(flat(ctx.k.astype(dtype)), flat(cos), flat(sin))     # [K*B, S, N, H]
  return ctx.replace(k=k.reshape(kk, b, s, n, h), rotated=True)


@struct.dataclass
class PromptKV:
  """The cross-attention keys/values of a prompt in every layer (computed once per chunk)."""
  k: Array  # [K, B, T, N, H]
  v: Array  # [K, B, T, N, H]


@struct.dataclass
class ChunkKV:
  """What a chunk forward returns about its own tokens."""
  k: Array                   # [K, B, L, N, H] pre-RoPE keys
  v: Array                   # [K, B, L, N, H]
  positions: Array           # [B, L, 3] int32
  saliency: Optional[Array]  # [K, B, L] attention mass each key receives from the chunk's queries


def _chunk_ids(num_frames: int, frames_per_chunk: int, tokens_per_frame: int) -> Array:
  """Chunk id of every token of a frame-major sequence: [F*P] int32."""
  return jnp.repeat(jnp.arange(num_frames) // frames_per_chunk, tokens_per_frame).astype(jnp.int32)


class CausalDiT(nn.Module):
  """Wan2.1 DiT with block-causal attention over chunks of `spec.frames_per_chunk` latent frames."""
  spec: DiTSpec

  # ------------------------------------------------------------------ public entry points
  def __call__(self, latents: Array, t: Array, context: Array, *, mode: str = "causal",
               clean_latents: Optional[Array] = None, clean_t: Optional[Array] = None,
               clean_visible: Optional[Array] = None) -> Array:
    """latents [B, F, H, W, C], t [B, F] in [0, 1], context [B, T, E] or per-chunk captions
    [B, G, T, E] (frames F/G * g .. F/G * (g+1) - 1 cross-attend to caption g only; F/G a multiple of
    frames_per_chunk) -> flow prediction [B, F, H, W, C].

    With `clean_latents` (same shape as latents) the sequence is [clean | noisy], both halves at
    frame positions 0..F-1, clean tokens at timestep `clean_t` (default 0) — teacher forcing.
    `clean_visible` [B|1, n, n] bool (n chunks): the earlier clean chunks each chunk sees (default
    all; `cache.chunk_visibility` gives the cache's view).
    """
    s = self.spec
    if mode not in MODES:
      raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    self._check_inputs(latents, t, context)
    b, f = latents.shape[:2]
    fp, x, y = self._grid(latents.shape)
    fpc = s.frames_per_chunk // s.patch_size[0]
    pos = rope.grid_positions(fp, x, y)[None]                                # [1, L, 3]
    chunk = _chunk_ids(fp, fpc, x * y)                                       # [L]
    if clean_latents is None:
      mask = None if mode == "bidirectional" else block_causal_groups(chunk, fp // fpc)
      out, _ = self._forward(latents, t, context, pos, mask)
      return out
    if mode != "causal":
      raise ConfigError("teacher forcing (clean_latents) needs mode='causal'")
    if clean_latents.shape != latents.shape:
      raise ConfigError(f"clean_latents shape {clean_latents.shape} != latents shape {latents.shape}")
    if clean_t is None:
      clean_t = jnp.zeros_like(t)
    if context.ndim == 4:  # each half's frames to their captions
      context = jnp.concatenate([context, context], axis=1)                 # [B, 2G, T, E]
    both = jnp.concatenate([clean_latents, latents], axis=1)                # [B, 2F, H, W, C]
    t_both = jnp.concatenate([jnp.broadcast_to(clean_t, t.shape), t], axis=1)  # [B, 2F]
    pos2 = jnp.concatenate([pos, pos], axis=1)                              # [1, 2L, 3]
    n = fp // fpc
    if clean_visible is not None and (clean_visible.ndim != 3 or clean_visible.shape[1:] != (n, n)
                                      or clean_visible.shape[0] not in (1, b)):
      raise ConfigError(f"clean_visible must be [B|1, {n}, {n}] (chunks), got {clean_visible.shape}")
    mask = teacher_forcing_groups(chunk, n, clean_visible)                  # [B|1, 2L, 2L]
    out, _ = self._forward(both, t_both, context, pos2, mask)
    return out[:, f:]                                                        # [B, F, H, W, C]

  def forward_chunk(self, latents: Array, t: Array, context: Optional[Array],
                    kv_context: KVContext, frame_offset, *, collect_saliency: bool = False,
                    prompt_kv: Optional[PromptKV] = None) -> tuple[Array, ChunkKV]:
    """One chunk against a KV context (tokens of a chunk see the valid context slots).

    latents [B, Fc, H, W, C] (Fc a multiple of frames_per_chunk; chunks inside are block-causal),
    t [B, Fc], context [B, T, E] (None when `prompt_kv` is given), kv_context: `KVContext` with S
    slots, frame_offset: int or [B] int array, the RoPE frame position of the chunk's first latent
    frame. Returns (flow prediction [B, Fc, H, W, C], ChunkKV of the chunk's own tokens).
    """
    s = self.spec
    if prompt_kv is None:
      self._check_inputs(latents, t, context)
    else:
      self._check_latents(latents, t)
    b = latents.shape[0]
    fp, x, y = self._grid(latents.shape)
    fpc = s.frames_per_chunk // s.patch_size[0]
    off = jnp.broadcast_to(jnp.asarray(frame_offset, jnp.int32), (b,))       # [B]
    pos = rope.grid_positions(fp, x, y)[None] + (off[:, None, None] * jnp.array([1, 0, 0], jnp.int32))
    chunk = _chunk_ids(fp, fpc, x * y)                                       # [L]
    intra = block_causal_groups(chunk, -(-fp // fpc))                       # [1, L, L]
    out, ys = self._forward(latents, t, context, pos, intra, kv_context=kv_context.per_layer(),
                            collect_kv=True, collect_saliency=collect_saliency, prompt_kv=prompt_kv)
    kv = ChunkKV(k=ys["k"], v=ys["v"], positions=pos,
                 saliency=ys.get("saliency") if collect_saliency else None)
    return out, kv

  def prompt_kv(self, context: Array) -> PromptKV:
    """Every layer's cross-attention K/V of the prompt context [B, T, E] -> PromptKV [K, B, T, N, H]."""
    s = self.spec
    if context.ndim != 3 or context.shape[2] != s.text_dim:
      raise ConfigError(f"context must be [B, T, text_dim={s.text_dim}], got {context.shape}")
    return self._forward(None, None, context, None, None, prompt_only=True)

  # ------------------------------------------------------------------ internals
  def _grid(self, shape) -> tuple[int, int, int]:
    pt, ph, pw = self.spec.patch_size
    return shape[1] // pt, shape[2] // ph, shape[3] // pw

  def _check_inputs(self, latents, t, context):
    s = self.spec
    self._check_latents(latents, t)
    b, f = latents.shape[:2]
    if context.ndim not in (3, 4) or context.shape[0] != b or context.shape[-1] != s.text_dim:
      raise ConfigError(f"context must be [B={b}, T, text_dim={s.text_dim}] or per-chunk captions "
                        f"[B, G, T, text_dim], got {context.shape}")
    if context.ndim == 4 and (f % context.shape[1] or (f // context.shape[1]) % s.frames_per_chunk):
      raise ConfigError(f"{context.shape[1]} captions do not split {f} latent frames into whole "
                        f"chunks of {s.frames_per_chunk}")

  def _check_latents(self, latents, t):
    s = self.spec
    s.check_latents(latents.shape)
    b, f = latents.shape[:2]
    if t.shape != (b, f):
      raise ConfigError(f"t must be [B, F] = {(b, f)} (one flow time per latent frame), got {t.shape}")
    if f % s.frames_per_chunk:
      raise ConfigError(f"{f} latent frames is not a multiple of frames_per_chunk="
                        f"{s.frames_per_chunk}")

  @nn.compact
  def _forward(self, latents, t, context, positions, mask, kv_context: Optional[KVContext] = None,
               collect_kv: bool = False, collect_saliency: bool = False,
               prompt_kv: Optional[PromptKV] = None, prompt_only: bool = False):
    s = self.spec
    dt, pdt = s.compute_dtype, s.weight_dtype
    if prompt_only:  # the prompt's K/V through the blocks' cross-attention weights
      text = TextEmbedding(s.dim, dt, pdt, name="text_embedding")(context)  # [B, T, D]
      stack = nn.scan(BlockTextKV, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=s.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      _, kv = stack(dim=s.dim, num_heads=s.num_heads, eps=s.eps, dtype=dt, param_dtype=pdt,
                    name="blocks")(None, text)
      return PromptKV(k=kv["k"], v=kv["v"])                                  # [K, B, T, N, H]
    pt = s.patch_size[0]
    tokens = patchify(latents, s.patch_size)                                 # [B, F', X, Y, pC]
    b, fp, gx, gy, _ = tokens.shape
    p = gx * gy
    x = dense(s.dim, ("patch", "embed"), dt, pdt, "patch_embedding")(tokens.astype(dt))
    x = x.astype(jnp.float32).reshape(b, fp * p, s.dim)                      # [B, L, D]
    e, e0 = TimeEmbedding(s.dim, s.freq_dim, pdt, name="time_embedding")(t[:, ::pt])  # [B,F',D], [B,F',6,D]
    text = None
    if prompt_kv is None:
      text = TextEmbedding(s.dim, dt, pdt, name="text_embedding")(context)  # [B, T, D]

    cos, sin = rope.angles(positions, s.head_dim, s.rope_theta)             # [B|1, L, H/2]
    shared = dict(e0=e0, text=text, cos=cos, sin=sin, mask=mask)
    layer_ctx = {}  # per-layer inputs, scanned with the layers
    if kv_context is not None:
      layer_ctx.update(k=kv_context.k, v=kv_context.v, mask=kv_context.mask)  # [K, B, S, (N, H)]
      if not kv_context.rotated:
        cos_c, sin_c = rope.angles(kv_context.positions, s.head_dim, s.rope_theta)  # [K, B, S, H/2]
        layer_ctx.update(cos=cos_c, sin=sin_c)
    if prompt_kv is not None:
      layer_ctx.update(text_k=prompt_kv.k, text_v=prompt_kv.v)              # [K, B, T, N, H]

    block_cls = Block
    if s.remat_policy != "none":
      block_cls = nn.remat(Block, policy=checkpoint_policy(s.remat_policy), prevent_cse=False)
    stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, 0), length=s.num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, ys = stack(dim=s.dim, ffn_dim=s.ffn_dim, num_heads=s.num_heads, tokens_per_frame=p,
                  eps=s.eps, dtype=dt, param_dtype=pdt, attention_impl=s.attention_impl,
                  collect_kv=collect_kv, collect_saliency=collect_saliency,
                  name="blocks")(x, shared, layer_ctx or None)

    table = self.param("head_modulation",
                       nn.with_logical_partitioning(nn.initializers.normal(s.dim ** -0.5),
                                                    ("mod_rows", "norm")), (2, s.dim), pdt)
    mod = table.astype(jnp.float32) + e[:, :, None, :]                       # [B, F', 2, D]
    h = modulate(layer_norm(x, s.eps), mod[:, :, 0], mod[:, :, 1], p)        # [B, L, D]
    out = dense(s.patch_volume * s.out_channels, ("embed", "patch"), dt, pdt, "head")(h.astype(dt))
    out = out.astype(jnp.float32).reshape(b, fp, gx, gy, -1)                 # [B, F', X, Y, pC]
    out = unpatchify(out, s.patch_size)                                      # [B, F, H, W, C]
    if s.prediction == "x0":  # the head predicted clean latents: return the flow velocity
      t_floor = jnp.maximum(t, X0_T_FLOOR)[:, :, None, None, None]           # [B, F, 1, 1, 1]
      out = (latents.astype(jnp.float32) - out) / t_floor
    return out, ys
