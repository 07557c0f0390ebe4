"""Host side of the input pipeline: a grain batch -> the model batch -> global arrays.

  frames   float32 [B, F, H, W, 3] in [-1, 1]  --toy autoencoder-->  latents [B, F, X, Y, C]
  captions str     [B, Nc]                    --text encoder---->  context [B, Nc, T, E]
  ""                                          --text encoder---->  null_context [T, E]

(`LatentBatchPreparer` passes pre-encoded `latent_folder` batches through.) Caption embeddings are
cached per distinct caption (the toy grammar has a few hundred), each
encoded alone so the text encoder compiles once. Everything here is deterministic, so it is not part
of the checkpointed iterator state. `to_global` turns this process's slice into global `jax.Array`s
with the step's NamedShardings (`jax.make_array_from_process_local_data`, multi-host ready).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from blockvid_jax.models import toy_autoencoder


class ToyBatchPreparer:
  """Callable: grain batch (see `blockvid_jax.data.pipeline`) -> model batch of NumPy arrays."""

  def __init__(self, text_encoder: Any, factor: int, latent_channels: int):
    self.encoder = text_encoder
    self.factor = factor
    self.latent_channels = latent_channels
    self._cache: dict[str, np.ndarray] = {}
    self.null_context = self.embed("")                                        # [T, E]

  def embed(self, caption: str) -> np.ndarray:
    """One caption -> its embedding [T, E] (float32, zero at padding), cached."""
    emb = self._cache.get(caption)
    if emb is None:
      out, _, _ = self.encoder.encode([caption])                              # [1, T, E]
      emb = self._cache[caption] = np.asarray(out[0], np.float32)
    return emb

  def __call__(self, example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    frames = np.asarray(example["frames"], np.float32)                        # [B, F, H, W, 3]
    latents = np.asarray(toy_autoencoder.encode(frames, self.factor, self.latent_channels))
    captions = np.asarray(example["captions"])                                # [B, Nc]
    context = np.stack([np.stack([self.embed(str(c)) for c in row]) for row in captions])
    return {"latents": latents.astype(np.float32),                            # [B, F, X, Y, C]
            "context": context,                                               # [B, Nc, T, E]
            "null_context": self.null_context}                                # [T, E]


class LatentBatchPreparer:
  """Callable: a `latent_folder` batch (already latents + context) -> the model batch."""

  def __init__(self, null_context: np.ndarray):
    self.null_context = np.asarray(null_context, np.float32)                 # [T, E]

  def __call__(self, example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"latents": np.asarray(example["latents"], np.float32),            # [B, F, X, Y, C]
            "context": np.asarray(example["context"], np.float32),            # [B, Nc, T, E]
            "null_context": self.null_context}                                # [T, E]


def global_shapes(local: Mapping[str, np.ndarray], process_count: int) -> dict[str, tuple]:
  """Global shapes: the batch axis of every per-example array times the process count."""
  out = {}
  for k, v in local.items():
    out[k] = v.shape if k == "null_context" else (v.shape[0] * process_count,) + v.shape[1:]
  return out


def to_global(local: Mapping[str, np.ndarray], shardings: Mapping[str, Any]) -> dict[str, jax.Array]:
  """This process's slice of a batch -> global arrays with the given NamedShardings."""
  shapes = global_shapes(local, jax.process_count())
  return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v), shapes[k])
          for k, v in local.items()}
