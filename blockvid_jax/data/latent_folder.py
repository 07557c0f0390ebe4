"""`latent_folder`: pre-encoded training data (Wan VAE latents + umT5 caption embeddings) for grain.

Real-scale training reads latents, never pixels (DESIGN 7). The folder layout:

  DIR/null_context.npy      float [T, E]          embedding of the empty prompt (CFG dropout)
  DIR/videos/*.npz          one file per video:
      latents   float16/32 [F, H, W, C]    normalised VAE latents, F = num_chunks * frames_per_chunk
      context   float16/32 [Nc, T, E]      one caption embedding per data chunk (zero padded, T fixed)

Windows of `window_chunks` consecutive data chunks are drawn at a random start (keyed by the global
index, like `blockvid_jax.data.pipeline`), so the iterator state is one index and round-trips
exactly. A batch: latents float32 [B, n * Fc, H, W, C], context float32 [B, n, T, E].
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np


class LatentFolderSource:
  """Random access over DIR/videos/*.npz (sorted by name): `len`, `[i]` -> dict of arrays."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(os.path.expanduser(directory))
    videos = os.path.join(self.directory, "videos")
    if not os.path.isdir(videos):
      raise ValueError(f"{self.directory}: no videos/ folder of .npz latents (see "
                       f"blockvid_jax.data.latent_folder)")
    self.files = sorted(os.path.join(videos, f) for f in os.listdir(videos) if f.endswith(".npz"))
    if not self.files:
      raise ValueError(f"{videos}: no .npz files")

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    with np.load(self.files[index]) as z:
      return {"latents": z["latents"], "context": z["context"]}

  def null_context(self) -> np.ndarray:
    """[T, E] float32."""
    path = os.path.join(self.directory, "null_context.npy")
    if not os.path.isfile(path):
      raise ValueError(f"{path} is missing (the empty-prompt embedding)")
    return np.asarray(np.load(path), np.float32)


def make_dataset(source: Any, *, batch_size: int, window_chunks: int, frames_per_chunk: int,
                 seed: int, shuffle: bool = True) -> grain.MapDataset:
  """seed -> shuffle -> repeat -> random window -> shard per process -> batch (index-based)."""

  def window(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    num_chunks = example["context"].shape[0]
    if example["latents"].shape[0] != num_chunks * frames_per_chunk:
      raise ValueError(f"latents of {example['latents'].shape[0]} frames do not hold {num_chunks} "
                       f"chunks of {frames_per_chunk} frames")
    if num_chunks < window_chunks:
      raise ValueError(f"a video of {num_chunks} chunks is shorter than window_chunks="
                       f"{window_chunks}")
    start = int(rng.integers(0, num_chunks - window_chunks + 1))
    f0, f1 = start * frames_per_chunk, (start + window_chunks) * frames_per_chunk
    return {"latents": np.asarray(example["latents"][f0:f1], np.float32),          # [n*Fc, H, W, C]
            "context": np.asarray(example["context"][start:start + window_chunks],
                                  np.float32)}                                       # [n, T, E]

  ds = grain.MapDataset.source(source).seed(seed)
  if shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(None).random_map(window)
  ds = ds[jax.process_index()::jax.process_count()]
  return ds.batch(batch_size, drop_remainder=True)
