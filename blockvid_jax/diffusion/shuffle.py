"""Inference noise shuffling (FreeNoise-style) across chunk boundaries. Pure functions.

The next chunk's initial noise reuses the previous chunk's noise frames, permuted inside local windows
of `window` latent frames, mixed with fresh noise: noise = sqrt(mix) * shuffled + sqrt(1 - mix) * fresh
(unit variance is kept for any mix in [0, 1]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.typing import Array


def window_permutation(rng: Array, num_frames: int, window: int) -> Array:
  """A random permutation of frame indices [F] that only moves frames inside windows of `window`."""
  starts = np.arange(0, num_frames, window)
  parts = []
  keys = jax.random.split(rng, len(starts))
  for key, s in zip(keys, starts):
    n = min(window, num_frames - s)
    parts.append(s + jax.random.permutation(key, n))
  return jnp.concatenate(parts).astype(jnp.int32)  # [F]


def shuffle_noise(rng: Array, prev_noise: Array, fresh: Array, window: int, mix: float) -> Array:
  """prev_noise, fresh [B, F, H, W, C] -> the next chunk's initial noise [B, F, H, W, C]."""
  perm = window_permutation(rng, prev_noise.shape[1], window)   # [F]
  shuffled = jnp.take(prev_noise, perm, axis=1)                 # [B, F, H, W, C]
  return np.sqrt(mix) * shuffled + np.sqrt(1.0 - mix) * fresh
