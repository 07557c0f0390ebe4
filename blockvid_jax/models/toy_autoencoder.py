"""The toy "VAE": space-to-depth patching, no learned weights (DESIGN 7).

  encode: pixels  [B, F, H, W, 3] in [-1, 1] -> latents [B, F, H/s, W/s, C]
  decode: latents [B, F, H/s, W/s, C]         -> pixels  [B, F, H, W, 3]

Each latent pixel holds the s x s pixel patch above it, channels ordered (row in patch, column in
patch, RGB), zero padded from 3*s*s up to C (default s = 2, C = 16: 12 data channels + 4 zeros, the
Wan latent width). Temporal factor 1: latent frame f is pixel frame f. `decode(encode(x)) == x`
exactly, and `encode(decode(z)) == z` for every z whose padding channels are zero (the encoder's
range); decode ignores the padding channels.
"""

from __future__ import annotations

import dataclasses

import einops
import jax.numpy as jnp

from blockvid_jax.typing import Array

PIXEL_CHANNELS = 3


def data_channels(factor: int) -> int:
  """Channels that carry pixels: 3 * s * s."""
  return PIXEL_CHANNELS * factor * factor


def _check(factor: int, latent_channels: int) -> None:
  if factor < 1:
    raise ValueError(f"factor must be >= 1, got {factor}")
  if data_channels(factor) > latent_channels:
    raise ValueError(f"3 * factor^2 = {data_channels(factor)} does not fit in "
                     f"{latent_channels} latent channels")


def encode(pixels: Array, factor: int = 2, latent_channels: int = 16) -> Array:
  """Space-to-depth: [B, F, H, W, 3] -> [B, F, H/s, W/s, latent_channels] (same dtype)."""
  _check(factor, latent_channels)
  b, f, h, w, c = pixels.shape
  if c != PIXEL_CHANNELS or h % factor or w % factor:
    raise ValueError(f"pixels {pixels.shape} need 3 channels and H, W divisible by {factor}")
  z = einops.rearrange(pixels, "b f (x s1) (y s2) c -> b f x y (s1 s2 c)",
                       s1=factor, s2=factor)  # [B, F, X, Y, 3*s*s]
  pad = latent_channels - data_channels(factor)
  return jnp.pad(z, ((0, 0),) * 4 + ((0, pad),))  # [B, F, X, Y, C]


def decode(latents: Array, factor: int = 2) -> Array:
  """Depth-to-space: [B, F, X, Y, C] -> [B, F, X*s, Y*s, 3]; padding channels are dropped."""
  _check(factor, latents.shape[-1])
  z = latents[..., :data_channels(factor)]  # [B, F, X, Y, 3*s*s]
  return einops.rearrange(z, "b f x y (s1 s2 c) -> b f (x s1) (y s2) c",
                          s1=factor, s2=factor, c=PIXEL_CHANNELS)  # [B, F, H, W, 3]


@dataclasses.dataclass(frozen=True)
class ToyAutoencoder:
  """The same two functions bound to a geometry, with the shape bookkeeping a sampler needs."""
  factor: int = 2
  latent_channels: int = 16
  temporal_factor: int = 1  # fixed: one latent frame per pixel frame

  def __post_init__(self):
    _check(self.factor, self.latent_channels)
    if self.temporal_factor != 1:
      raise ValueError("the toy autoencoder has temporal factor 1")

  def encode(self, pixels: Array) -> Array:
    return encode(pixels, self.factor, self.latent_channels)

  def decode(self, latents: Array) -> Array:
    return decode(latents, self.factor)

  def latent_shape(self, pixel_shape: tuple[int, ...]) -> tuple[int, ...]:
    """[B, F, H, W, 3] -> [B, F, H/s, W/s, C]."""
    *lead, h, w, _ = pixel_shape
    return (*lead, h // self.factor, w // self.factor, self.latent_channels)

  def pixel_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
    """[B, F, X, Y, C] -> [B, F, X*s, Y*s, 3]."""
    *lead, x, y, _ = latent_shape
    return (*lead, x * self.factor, y * self.factor, PIXEL_CHANNELS)
