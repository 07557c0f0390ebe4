"""Noise levels per chunk: the chunk-wise TRAINING schedules (and, below, inference noise shuffling).

Training (DESIGN 6, issue 4). A training window holds n chunks; every chunk c gets one flow time t_c,
shared by its latent frames, then the timestep shift is applied (`diffusion.flow.shift_t`):
  * `linear` / `cosine`: the progressive ramp t_c = t_min + f(c / (n - 1)) (t_max - t_min) with
    f(u) = u (linear) or f(u) = 1 - cos(pi u / 2) (cosine, the paper's best) and t_min ~ U(0, t_min_max)
    drawn per sample. Noise rises across the window; with one chunk it reduces to t = t_min.
  * `independent`: Diffusion Forcing, t_c ~ U(0, t_max) i.i.d. per chunk and sample (ablation).
  * `constant`: plain video diffusion, one t ~ U(0, t_max) per sample for every chunk.
With `t_max_range` > 0 the top t_max is itself drawn per sample from U(t_max - t_max_range, t_max).
All functions are pure and jittable; `kind` and the sizes are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from blockvid_jax.diffusion import flow
from blockvid_jax.typing import Array

SCHEDULES = ("linear", "cosine", "independent", "constant")


def ramp(u: Array, kind: str) -> Array:
  """The ramp shape f on [0, 1]: `linear` f(u) = u, `cosine` f(u) = 1 - cos(pi u / 2)."""
  if kind == "linear":
    return u
  if kind == "cosine":
    return 1.0 - jnp.cos(0.5 * jnp.pi * u)
  raise ValueError(f"ramp kind must be 'linear' or 'cosine', got {kind!r}")


def chunk_times(rng: Array, batch: int, num_chunks: int, kind: str, t_min_max: float,
                t_max: float = 1.0, t_max_range: float = 0.0) -> Array:
  """Unshifted flow time per chunk: [B, n] float32 in [0, t_max] (see the module docstring).

  t_max_range > 0: the top of the range is drawn per sample, U(t_max - t_max_range, t_max), so no
  chunk is always pure noise (DESIGN 6)."""
  if kind not in SCHEDULES:
    raise ValueError(f"noise schedule must be one of {SCHEDULES}, got {kind!r}")
  if not 0.0 <= t_min_max <= t_max <= 1.0:
    raise ValueError(f"need 0 <= t_min_max <= t_max <= 1, got {t_min_max}, {t_max}")
  if not 0.0 <= t_max_range <= t_max - t_min_max:
    raise ValueError(f"need 0 <= t_max_range <= t_max - t_min_max = {t_max - t_min_max}, got "
                     f"{t_max_range}")
  if t_max_range > 0.0:
    rng, k_top = jax.random.split(rng)
    t_max = t_max - jax.random.uniform(k_top, (batch, 1), jnp.float32, 0.0, t_max_range)  # [B, 1]
  if kind == "independent":
    return jax.random.uniform(rng, (batch, num_chunks), jnp.float32, 0.0, t_max)     # [B, n]
  if kind == "constant":
    t = jax.random.uniform(rng, (batch, 1), jnp.float32, 0.0, t_max)                # [B, 1]
    return jnp.broadcast_to(t, (batch, num_chunks))                                   # [B, n]
  t_min = jax.random.uniform(rng, (batch, 1), jnp.float32, 0.0, t_min_max)          # [B, 1]
  u = jnp.arange(num_chunks, dtype=jnp.float32) / max(num_chunks - 1, 1)             # [n]
  return t_min + ramp(u, kind)[None, :] * (t_max - t_min)                             # [B, n]


def frame_times(t_chunks: Array, frames_per_chunk: int) -> Array:
  """Per-chunk times [B, n] -> per-latent-frame times [B, n * frames_per_chunk]."""
  return jnp.repeat(t_chunks, frames_per_chunk, axis=1)                              # [B, F]


def training_times(rng: Array, batch: int, num_chunks: int, frames_per_chunk: int, *, kind: str,
                   t_min_max: float, t_max: float = 1.0, shift: float = 1.0,
                   t_max_range: float = 0.0) -> Array:
  """Shifted per-frame flow times of a training window: [B, num_chunks * frames_per_chunk]."""
  t = chunk_times(rng, batch, num_chunks, kind, t_min_max, t_max, t_max_range)       # [B, n]
  return flow.shift_t(frame_times(t, frames_per_chunk), shift)                       # [B, F]


# ------------------------------------------------------------------------------------------------
# Inference: noise shuffling across chunk boundaries (FreeNoise style, DESIGN 5). Owned by the
# sampler; it goes below this line.
