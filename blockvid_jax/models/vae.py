"""The Wan2.1 causal video VAE (DESIGN 8.1), channels last, with streaming decode.

  encode: video   [B, T, H, W, 3] in [-1, 1] -> latents [B, F, H/8, W/8, 16] (normalised)
  decode: latents [B, F, h, w, 16]           -> video   [B, T, 8h, 8w, 3]   (not clamped)
  T = 1 + 4 (F - 1) for the Wan2.1 geometry (temporal factor 4, first frame alone).

`WanVAE` is a small class holding a `VAESpec`, the params (from `convert.wan_vae.load_wan_vae`) and a
compute dtype; its methods call module-level jitted functions (spec static), so every VAE of one
geometry shares their compilations. The encoder runs in time chunks of 1, 4, 4, ... frames and the
decoder one latent frame at a time (a `lax.scan`), each with the feature caches of
`vae_layers.FeatureCache`, exactly like the PyTorch code. `decode_chunk(cache, latents)` continues a
decode from a `DecodeCache`, so latents generated chunk by chunk are decoded as they arrive with
memory that does not grow with the video: `cat(decode_chunk(...) over chunks) == decode(all)`.
The first latent frame skips the temporal upsampling (1 video frame instead of 4); that is the static
field `DecodeCache.started`, so only the very first call compiles a separate program and every later
chunk of the same length reuses one compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import flax.struct
import jax
import jax.numpy as jnp

from blockvid_jax.models import vae_layers as L
from blockvid_jax.models.spec import DTYPES
from blockvid_jax.typing import Array
from blockvid_jax.errors import ConfigError

# Per-channel latent statistics of Wan2.1_VAE.pth (latents = (mu - mean) / std).
LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
               0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
              2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
PIXEL_CHANNELS = 3


@dataclasses.dataclass(frozen=True)
class VAESpec:
  """Sizes of a Wan2.1-family VAE (defaults: Wan2.1_VAE.pth)."""
  dim: int = 96                                                     # base width
  z_dim: int = 16                                                   # latent channels
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)                          # width per stage / dim
  num_res_blocks: int = 2                                           # encoder; decoder has one more
  temporal_downsample: tuple[bool, ...] = (False, True, True)       # per downsampling stage

  def __post_init__(self):
    if len(self.temporal_downsample) != len(self.dim_mult) - 1:
      raise ConfigError(f"temporal_downsample needs {len(self.dim_mult) - 1} entries, got "
                        f"{len(self.temporal_downsample)}")
    if self.z_dim != len(LATENT_MEAN):
      raise ConfigError(f"z_dim {self.z_dim} has no latent statistics (only {len(LATENT_MEAN)})")

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.dim_mult) - 1)

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(self.temporal_downsample)

  def encoder_dims(self) -> list[int]:
    return [self.dim * m for m in (1,) + tuple(self.dim_mult)]

  def decoder_dims(self) -> list[int]:
    return [self.dim * m for m in (self.dim_mult[-1],) + tuple(self.dim_mult[::-1])]

  def num_video_frames(self, latent_frames: int) -> int:
    """T = 1 + 4 (F - 1) for F >= 1 latent frames."""
    if latent_frames < 1:
      raise ConfigError(f"need at least one latent frame, got {latent_frames}")
    return 1 + self.temporal_factor * (latent_frames - 1)

  def num_latent_frames(self, video_frames: int) -> int:
    """F = 1 + (T - 1) / 4; T must be 1 + 4k."""
    if video_frames < 1 or (video_frames - 1) % self.temporal_factor:
      raise ConfigError(f"a video of {video_frames} frames cannot be encoded: the Wan VAE needs "
                        f"1 + {self.temporal_factor}k frames")
    return 1 + (video_frames - 1) // self.temporal_factor


@flax.struct.dataclass
class DecodeCache:
  """Decoder state between chunks: the last 2 input frames of every causal conv (by layer name)."""
  convs: dict[str, Array]                                   # name -> [B, 2, X, Y, C]
  started: bool = flax.struct.field(pytree_node=False, default=False)  # first latent frame done


# ------------------------------------------------------------------ encoder and decoder
def _encode_chunk(spec: VAESpec, p: dict, x: Array, cache: dict, first: bool):
  """One time chunk (1 frame first, then 4): [B, t, H, W, 3] -> ([B, 1, h, w, 2z], cache)."""
  fc = L.FeatureCache(cache)
  x = L.causal_conv3d(p["conv_in"], x, fc, "conv_in")  # [B, t, H, W, dim]
  for i in range(len(spec.dim_mult)):
    stage = p[f"stage_{i}"]
    for r in range(spec.num_res_blocks):
      x = L.residual_block(stage[f"res_{r}"], x, fc, f"stage_{i}/res_{r}")
    if "resample" in stage:
      x = L.downsample(stage["resample"], x, fc, f"stage_{i}/resample", first)
  x = _middle(p["mid"], x, fc)  # [B, 1, h, w, D]
  x = jax.nn.silu(L.rms_norm(p["head_norm"], x))
  x = L.causal_conv3d(p["head_conv"], x, fc, "head_conv")  # [B, 1, h, w, 2z]
  return x, fc.new


def _decode_frame(spec: VAESpec, p: dict, z: Array, cache: dict, first: bool):
  """One latent frame (after post_quant_conv): [B, 1, h, w, z] -> ([B, 1 or 4, H, W, 3], cache)."""
  fc = L.FeatureCache(cache)
  x = L.causal_conv3d(p["conv_in"], z, fc, "conv_in")  # [B, 1, h, w, D]
  x = _middle(p["mid"], x, fc)
  for i in range(len(spec.dim_mult)):
    stage = p[f"stage_{i}"]
    for r in range(spec.num_res_blocks + 1):
      x = L.residual_block(stage[f"res_{r}"], x, fc, f"stage_{i}/res_{r}")
    if "resample" in stage:
      x = L.upsample(stage["resample"], x, fc, f"stage_{i}/resample", first)
  x = jax.nn.silu(L.rms_norm(p["head_norm"], x))
  x = L.causal_conv3d(p["head_conv"], x, fc, "head_conv")  # [B, t, H, W, 3]
  return x, fc.new


def _middle(p: dict, x: Array, fc: L.FeatureCache) -> Array:
  x = L.residual_block(p["res_0"], x, fc, "mid/res_0")
  x = L.attention_block(p["attn"], x)
  return L.residual_block(p["res_1"], x, fc, "mid/res_1")


def _stats(dtype) -> tuple[Array, Array]:
  return jnp.asarray(LATENT_MEAN, dtype), jnp.asarray(LATENT_STD, dtype)  # [C], [C]


def _cast(tree, dtype):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


# Jitted with the (hashable) spec static, so VAEs of one geometry share their compilations.
@functools.partial(jax.jit, static_argnums=0)
def _encode_video(spec: VAESpec, params: dict, video: Array) -> Array:
  """[B, T, H, W, 3] -> normalised latent means [B, F, h, w, z]."""
  enc = params["encoder"]
  b, t, h, w, c = video.shape
  out0, cache = _encode_chunk(spec, enc, video[:, :1], {}, first=True)  # [B, 1, h, w, 2z]
  outs = [out0]
  k = (t - 1) // spec.temporal_factor
  if k:
    chunks = video[:, 1:].reshape(b, k, spec.temporal_factor, h, w, c)  # [B, k, 4, H, W, 3]
    chunks = jnp.moveaxis(chunks, 1, 0)  # [k, B, 4, H, W, 3]

    def step(carry, chunk):
      out, carry = _encode_chunk(spec, enc, chunk, carry, first=False)
      return carry, out[:, 0]  # [B, h, w, 2z]

    _, rest = jax.lax.scan(step, cache, chunks)  # [k, B, h, w, 2z]
    outs.append(jnp.moveaxis(rest, 0, 1))
  out = jnp.concatenate(outs, axis=1)  # [B, F, h, w, 2z]
  mu = L.conv3d(params["quant_conv"], out)[..., :spec.z_dim]  # [B, F, h, w, z]
  mean, std = _stats(jnp.float32)
  return (mu - mean) / std


def _post_quant(p: dict, z: Array, dtype) -> Array:
  mean, std = _stats(jnp.float32)
  z = (z * std + mean).astype(dtype)  # [B, n, h, w, z]
  return L.conv3d(p["post_quant_conv"], z)


@functools.partial(jax.jit, static_argnums=0)
def _decode_first(spec: VAESpec, p: dict, convs: dict, z: Array):
  """The very first latent frame [B, 1, h, w, z] -> (caches, 1 video frame [B, 1, H, W, 3])."""
  dtype = p["post_quant_conv"]["kernel"].dtype
  x, new = _decode_frame(spec, p, _post_quant(p, z, dtype), convs, first=True)
  return new, x.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _decode_later(spec: VAESpec, p: dict, convs: dict, z: Array):
  """Later latent frames [B, n, h, w, z] one at a time (lax.scan) -> (caches, [B, 4n, H, W, 3])."""
  dtype = p["post_quant_conv"]["kernel"].dtype
  x = jnp.moveaxis(_post_quant(p, z, dtype), 1, 0)[:, :, None]  # [n, B, 1, h, w, z]

  def step(carry, frame):
    out, carry = _decode_frame(spec, p, frame, carry, first=False)
    return carry, out.astype(jnp.float32)  # [B, 4, H, W, 3]

  convs, frames = jax.lax.scan(step, convs, x)  # [n, B, 4, H, W, 3]
  frames = jnp.moveaxis(frames, 0, 1)  # [B, n, 4, H, W, 3]
  return convs, frames.reshape((frames.shape[0], -1) + frames.shape[3:])  # [B, 4n, H, W, 3]


class WanVAE:
  """The Wan VAE bound to its params: `encode`, `decode`, `init_decode_cache`, `decode_chunk`.

  `dtype` is the compute dtype of the decoder ("float32" or "bfloat16"; norms and the attention
  softmax stay float32, outputs are float32). The encoder always computes in float32.
  """

  def __init__(self, spec: VAESpec, params: dict, dtype: str = "float32"):
    if dtype not in DTYPES:
      raise ConfigError(f"unknown VAE dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    self.spec = spec
    self.dtype = DTYPES[dtype]
    self.params = _cast(params, jnp.float32)
    self._decoder_params = _cast({"post_quant_conv": params["post_quant_conv"],
                                  **params["decoder"]}, self.dtype)

  # ---------------------------------------------------------------- checks
  def _check_pixels(self, video: Array) -> None:
    s = self.spec.spatial_factor
    if video.ndim != 5 or video.shape[-1] != PIXEL_CHANNELS:
      raise ConfigError(f"video must be [B, T, H, W, 3], got {tuple(video.shape)}")
    if video.shape[2] % s or video.shape[3] % s:
      raise ConfigError(f"video size {video.shape[2]}x{video.shape[3]} is not a multiple of {s}")
    self.spec.num_latent_frames(video.shape[1])

  def _check_latents(self, latents: Array) -> None:
    if latents.ndim != 5 or latents.shape[-1] != self.spec.z_dim or latents.shape[1] < 1:
      raise ConfigError(f"latents must be [B, F >= 1, h, w, {self.spec.z_dim}], "
                        f"got {tuple(latents.shape)}")

  # ---------------------------------------------------------------- encode / decode
  def encode(self, video: Array) -> Array:
    """[B, T, H, W, 3] in [-1, 1] -> normalised latent means [B, F, H/8, W/8, z] (float32)."""
    self._check_pixels(video)
    return _encode_video(self.spec, self.params, jnp.asarray(video, jnp.float32))

  def decode(self, latents: Array) -> Array:
    """[B, F, h, w, z] normalised latents -> [B, 1 + 4 (F - 1), 8h, 8w, 3] float32, not clamped."""
    self._check_latents(latents)
    cache = self.init_decode_cache(latents.shape[0], latents.shape[2], latents.shape[3])
    return self.decode_chunk(cache, latents)[1]

  def init_decode_cache(self, batch: int, latent_h: int, latent_w: int) -> DecodeCache:
    """Zero caches for a decode of `batch` videos at latent size latent_h x latent_w."""
    z = jax.ShapeDtypeStruct((batch, 1, latent_h, latent_w, self.spec.z_dim), self.dtype)
    shapes = jax.eval_shape(lambda p, x: _decode_frame(self.spec, p, x, {}, first=False)[1],
                            self._decoder_params, z)
    return DecodeCache(convs={k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()},
                       started=False)

  def decode_chunk(self, cache: DecodeCache, latents: Array) -> tuple[DecodeCache, Array]:
    """Decodes the next latent frames [B, n, h, w, z] -> (cache, frames [B, 4n (- 3 first), ...])."""
    self._check_latents(latents)
    z = jnp.asarray(latents, jnp.float32)
    convs, outs = cache.convs, []
    if not cache.started:
      convs, frame0 = _decode_first(self.spec, self._decoder_params, convs, z[:, :1])
      outs.append(frame0)  # [B, 1, H, W, 3]
      z = z[:, 1:]
    if z.shape[1]:
      convs, frames = _decode_later(self.spec, self._decoder_params, convs, z)
      outs.append(frames)  # [B, 4n, H, W, 3]
    video = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
    return DecodeCache(convs=convs, started=True), video


def output_frames(spec: VAESpec, latent_frames: int, started: bool) -> int:
  """Video frames that `decode_chunk` returns for `latent_frames` (1 for the very first frame)."""
  return spec.temporal_factor * latent_frames - (0 if started else spec.temporal_factor - 1)


