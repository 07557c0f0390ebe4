"""A float64 NumPy forward of the Wan2.1 DiT, written from DESIGN 3 on PyTorch-layout weights.

Independent of blockvid_jax's model code (it imports nothing from the package): the converter's
parity tests run converted weights through `CausalDiT` and compare with `wan_forward` here.
Weights are a dict of original Wan2.1 key names -> NumPy arrays (Linear [out, in], Conv3d
[O, C, pt, ph, pw], modulation [1, 6, D]); the video works internally in PyTorch layout [B, C, F, H, W].
"""

from __future__ import annotations

import numpy as np


def wan_shapes(*, dim: int, ffn_dim: int, num_layers: int, text_dim: int, freq_dim: int,
               in_dim: int = 16, out_dim: int = 16, patch=(1, 2, 2)) -> dict[str, tuple[int, ...]]:
  """Original Wan2.1 key names -> PyTorch shapes of a text-to-video DiT."""
  s: dict[str, tuple[int, ...]] = {}

  def linear(name, n_in, n_out):
    s[name + ".weight"] = (n_out, n_in)
    s[name + ".bias"] = (n_out,)

  s["patch_embedding.weight"] = (dim, in_dim, *patch)
  s["patch_embedding.bias"] = (dim,)
  linear("text_embedding.0", text_dim, dim)
  linear("text_embedding.2", dim, dim)
  linear("time_embedding.0", freq_dim, dim)
  linear("time_embedding.2", dim, dim)
  linear("time_projection.1", dim, 6 * dim)
  for i in range(num_layers):
    b = f"blocks.{i}."
    for attn in ("self_attn", "cross_attn"):
      for p in "qkvo":
        linear(b + f"{attn}.{p}", dim, dim)
      s[b + f"{attn}.norm_q.weight"] = (dim,)
      s[b + f"{attn}.norm_k.weight"] = (dim,)
    s[b + "norm3.weight"] = (dim,)
    s[b + "norm3.bias"] = (dim,)
    linear(b + "ffn.0", dim, ffn_dim)
    linear(b + "ffn.2", ffn_dim, dim)
    s[b + "modulation"] = (1, 6, dim)
  linear("head.head", dim, out_dim * patch[0] * patch[1] * patch[2])
  s["head.modulation"] = (1, 2, dim)
  return s


def random_wan_weights(seed: int, **sizes) -> dict[str, np.ndarray]:
  """Random float32 weights under the original Wan2.1 names and shapes (`wan_shapes` sizes)."""
  rng = np.random.default_rng(seed)
  w = {}
  for name, shape in wan_shapes(**sizes).items():
    if "modulation" in name:
      a = rng.normal(0, shape[-1] ** -0.5, shape)
    elif "norm" in name and name.endswith(".weight"):
      a = 1.0 + rng.normal(0, 0.1, shape)                        # RMSNorm / LayerNorm weights
    elif name.endswith(".bias"):
      a = rng.normal(0, 0.1, shape)
    else:
      a = rng.normal(0, float(np.prod(shape[1:])) ** -0.5, shape)  # fan-in scaled
    w[name] = a.astype(np.float32)
  return w


# ------------------------------------------------------------------ pieces
def _linear(x, w, prefix):
  return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x, eps, weight=None, bias=None):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(var + eps)
  if weight is not None:
    y = y * weight + bias
  return y


def _rms_norm(x, weight, eps):
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * weight


def _sinusoid(dim, position):
  """[cos | sin] embedding, base 10000: position [N] -> [N, dim]."""
  half = dim // 2
  args = np.outer(position.astype(np.float64), np.power(10000.0, -np.arange(half) / half))
  return np.concatenate([np.cos(args), np.sin(args)], axis=1)


def _rope_freqs(max_len, d, theta=10000.0):
  """Complex rotations exp(i * pos / theta^(2j/d)): [max_len, d/2]."""
  angles = np.outer(np.arange(max_len), 1.0 / theta ** (np.arange(0, d, 2) / d))
  return np.exp(1j * angles)


def _rope(x, grid):
  """3D RoPE of x [B, L, N, H] on a (frames, rows, cols) grid; adjacent pairs as complex numbers."""
  f, h, w = grid
  hd = x.shape[-1]
  dims = (hd - 4 * (hd // 6), 2 * (hd // 6), 2 * (hd // 6))
  tf, th, tw = (_rope_freqs(1024, d) for d in dims)
  freqs = np.concatenate([
      np.broadcast_to(tf[:f, None, None], (f, h, w, dims[0] // 2)),
      np.broadcast_to(th[None, :h, None], (f, h, w, dims[1] // 2)),
      np.broadcast_to(tw[None, None, :w], (f, h, w, dims[2] // 2)),
  ], axis=-1).reshape(f * h * w, 1, hd // 2)                    # [L, 1, H/2]
  xc = x[..., 0::2] + 1j * x[..., 1::2]                          # [B, L, N, H/2]
  yc = xc * freqs[None]
  return np.stack([yc.real, yc.imag], axis=-1).reshape(x.shape)


def _attention(q, k, v, mask):
  """q [B, L, N, H], k/v [B, S, N, H], mask [L, S] bool or None -> [B, L, N, H]."""
  logits = np.einsum("blnh,bsnh->bnls", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask[None, None], logits, -np.inf)
  logits = logits - logits.max(-1, keepdims=True)
  p = np.exp(logits)
  p = p / p.sum(-1, keepdims=True)
  return np.einsum("bnls,bsnh->blnh", p, v)


def _per_frame(x, frames):
  """[B, F*P, D] -> [B, F, P, D]."""
  b, l, d = x.shape
  return x.reshape(b, frames, l // frames, d)


# ------------------------------------------------------------------ the model
def wan_forward(w, latents, t, context, *, num_heads, frames_per_chunk=None, eps=1e-6,
                patch=(1, 2, 2)):
  """latents [B, F, H, W, C] (channels last), t [B, F] in [0, 1], context [B, T, E] -> [B, F, H, W, C].

  frames_per_chunk=None: bidirectional; else block-causal over chunks of that many latent frames.
  """
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  x = np.asarray(latents, np.float64).transpose(0, 4, 1, 2, 3)       # [B, C, F, H, W] (torch)
  b, c, f, hh, ww = x.shape
  pt, ph, pw = patch
  fp, gx, gy = f // pt, hh // ph, ww // pw
  dim = w["patch_embedding.weight"].shape[0]
  hd = dim // num_heads

  # Conv3d, kernel = stride = patch: a sum over the kernel offsets (a, p, q) of every patch.
  xr = x.reshape(b, c, fp, pt, gx, ph, gy, pw)
  tok = np.einsum("dcapq,bcfaxpyq->bfxyd", w["patch_embedding.weight"], xr)
  tok = tok + w["patch_embedding.bias"]                              # [B, F', X, Y, D]
  x = tok.reshape(b, fp * gx * gy, dim)                              # [B, L, D]

  # Per-frame time embedding (the network sees 1000 * t).
  tf = np.asarray(t, np.float64)[:, ::pt].reshape(-1)
  freq_dim = w["time_embedding.0.weight"].shape[1]
  e = _linear(_silu(_linear(_sinusoid(freq_dim, 1000.0 * tf), w, "time_embedding.0")), w,
              "time_embedding.2")                                    # [B*F', D]
  e0 = _linear(_silu(e), w, "time_projection.1").reshape(b, fp, 6, dim)
  e = e.reshape(b, fp, dim)
  ctx = _linear(_gelu_tanh(_linear(np.asarray(context, np.float64), w, "text_embedding.0")), w,
                "text_embedding.2")                                  # [B, T, D]

  mask = None
  if frames_per_chunk is not None:
    chunk = np.repeat(np.arange(fp) // (frames_per_chunk // pt), gx * gy)
    mask = chunk[None, :] <= chunk[:, None]                          # [L, L]

  def heads(a):
    return a.reshape(a.shape[0], a.shape[1], num_heads, hd)

  num_layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
  for i in range(num_layers):
    p = f"blocks.{i}."
    mod = w[p + "modulation"][0][None, None] + e0                    # [B, F', 6, D]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        mod[:, :, j, None, :] for j in range(6))                     # each [B, F', 1, D]

    h = (_per_frame(_layer_norm(x, eps), fp) * (1 + scale_msa) + shift_msa).reshape(x.shape)
    q = _rms_norm(_linear(h, w, p + "self_attn.q"), w[p + "self_attn.norm_q.weight"], eps)
    k = _rms_norm(_linear(h, w, p + "self_attn.k"), w[p + "self_attn.norm_k.weight"], eps)
    v = _linear(h, w, p + "self_attn.v")
    y = _attention(_rope(heads(q), (fp, gx, gy)), _rope(heads(k), (fp, gx, gy)), heads(v), mask)
    y = _linear(y.reshape(x.shape), w, p + "self_attn.o")
    x = x + (_per_frame(y, fp) * gate_msa).reshape(x.shape)

    h = _layer_norm(x, eps, w[p + "norm3.weight"], w[p + "norm3.bias"])
    q = _rms_norm(_linear(h, w, p + "cross_attn.q"), w[p + "cross_attn.norm_q.weight"], eps)
    k = _rms_norm(_linear(ctx, w, p + "cross_attn.k"), w[p + "cross_attn.norm_k.weight"], eps)
    v = _linear(ctx, w, p + "cross_attn.v")
    y = _attention(heads(q), heads(k), heads(v), None)
    x = x + _linear(y.reshape(x.shape), w, p + "cross_attn.o")

    h = (_per_frame(_layer_norm(x, eps), fp) * (1 + scale_mlp) + shift_mlp).reshape(x.shape)
    y = _linear(_gelu_tanh(_linear(h, w, p + "ffn.0")), w, p + "ffn.2")
    x = x + (_per_frame(y, fp) * gate_mlp).reshape(x.shape)

  mod = w["head.modulation"][0][None, None] + e[:, :, None, :]      # [B, F', 2, D]
  shift, scale = mod[:, :, 0, None, :], mod[:, :, 1, None, :]
  h = (_per_frame(_layer_norm(x, eps), fp) * (1 + scale) + shift).reshape(x.shape)
  out = _linear(h, w, "head.head")                                   # [B, L, pt*ph*pw*C]
  # Unpatchify: channels in (pt, ph, pw, c) order, as Wan's einsum 'fhwpqrc->cfphqwr'.
  u = out.reshape(b, fp, gx, gy, pt, ph, pw, -1)
  video = np.einsum("bfxyapqc->bcfaxpyq", u).reshape(b, -1, f, hh, ww)  # [B, C, F, H, W]
  return video.transpose(0, 2, 3, 4, 1)                              # [B, F, H, W, C]
