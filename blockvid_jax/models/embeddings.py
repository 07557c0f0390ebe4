"""Embeddings of the Wan2.1 DiT: patchify/unpatchify, sinusoidal time, time and text MLPs.

Also the small shared layers (`dense`, norms) so that every parameter gets its logical axis names
(see `blockvid_jax.parallel.axes`) in one place.
"""

from __future__ import annotations

from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from blockvid_jax.typing import Array


def dense(features: int, axes: tuple[str, str], dtype, param_dtype, name: str,
          use_bias: bool = True) -> nn.Dense:
  """nn.Dense whose kernel [in, out] and bias [out] carry logical axis names."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


def layer_norm(x: Array, eps: float) -> Array:
  """LayerNorm without affine parameters, in float32."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


class AffineLayerNorm(nn.Module):
  """LayerNorm with weight and bias (Wan's norm3 before cross-attention)."""
  eps: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                       (d,), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                      (d,), self.param_dtype)
    return layer_norm(x, self.eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


class RMSNorm(nn.Module):
  """RMSNorm with weight only, over the last axis (the full width D for Wan's q/k norms)."""
  eps: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                       (d,), self.param_dtype)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    return (xf * scale.astype(jnp.float32)).astype(x.dtype)


def sinusoidal_embedding(t: Array, dim: int) -> Array:
  """Wan's [cos | sin] embedding of timesteps t [...] (already scaled to 0..1000) -> [..., dim] f32."""
  half = dim // 2
  freqs = jnp.power(10000.0, -jnp.arange(half, dtype=jnp.float32) / half)  # [dim/2]
  args = t.astype(jnp.float32)[..., None] * freqs                          # [..., dim/2]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)          # [..., dim]


def patchify(z: Array, patch: Sequence[int]) -> Array:
  """[B, F, H, W, C] -> [B, F/pt, H/ph, W/pw, pt*ph*pw*C] (channel order pt, ph, pw, c)."""
  pt, ph, pw = patch
  return einops.rearrange(z, "b (f pt) (h ph) (w pw) c -> b f h w (pt ph pw c)",
                          pt=pt, ph=ph, pw=pw)


def unpatchify(x: Array, patch: Sequence[int]) -> Array:
  """[B, F', X, Y, pt*ph*pw*C] -> [B, F'*pt, X*ph, Y*pw, C] (inverse of `patchify`)."""
  pt, ph, pw = patch
  return einops.rearrange(x, "b f h w (pt ph pw c) -> b (f pt) (h ph) (w pw) c",
                          pt=pt, ph=ph, pw=pw)


class TimeEmbedding(nn.Module):
  """t [B, F] in [0, 1] -> e [B, F, D] (time_embedding) and e0 [B, F, 6, D] (time_projection)."""
  dim: int
  freq_dim: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, t: Array) -> tuple[Array, Array]:
    s = sinusoidal_embedding(1000.0 * t, self.freq_dim)                  # [B, F, 256]
    e = dense(self.dim, ("freq", "embed"), jnp.float32, self.param_dtype, "fc1")(s)
    e = dense(self.dim, ("embed", "embed_out"), jnp.float32, self.param_dtype,
              "fc2")(nn.silu(e))                                    # [B, F, D]
    e0 = dense(6 * self.dim, ("embed", "mod"), jnp.float32, self.param_dtype,
               "projection")(nn.silu(e))                            # [B, F, 6D]
    e0 = e0.reshape(*e0.shape[:-1], 6, self.dim)                         # [B, F, 6, D]
    return e, e0


class TextEmbedding(nn.Module):
  """context [B, T, E] -> [B, T, D]: Linear, GELU(tanh), Linear."""
  dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, context: Array) -> Array:
    x = dense(self.dim, ("text_embed", "embed"), self.dtype, self.param_dtype, "fc1")(context)
    x = nn.gelu(x, approximate=True)
    x = dense(self.dim, ("embed", "embed_out"), self.dtype, self.param_dtype, "fc2")(x)
    return x.astype(jnp.float32)                                          # [B, T, D]
