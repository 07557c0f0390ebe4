"""The training input of every stage: `make_input(config, spec, workdir, local_batch)`.

  data.kind "toy":     the procedural tfds build (made in DIR/data if missing) -> grain windows
                       -> `ToyBatchPreparer` (toy autoencoder + toy text encoder), plus one held-out
                       reference video for the sample previews;
  data.kind "latents": a folder of `python -m blockvid_jax.encode` -> grain windows
                       -> `LatentBatchPreparer` (no reference video: previews are off).
"""

from __future__ import annotations

import os
import time

from absl import logging
import jax

from blockvid_jax.errors import ConfigError
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel.distributed import sync_processes
from blockvid_jax.training import batches


def toy_data_config(config, num_chunks: int = 0):
  """The toy builder config of `config.data` (its resolution follows the latent size); `num_chunks`
  overrides `data.chunks_per_video` (held-out reference videos of another length)."""
  from blockvid_jax.data.toy_long_video import toy_config  # pylint: disable=import-outside-toplevel
  d = config.data
  return toy_config(resolution=config.video.latent_height * config.autoencoder.factor,
                    frames_per_chunk=d.frames_per_chunk,
                    chunks_per_video=num_chunks or d.chunks_per_video,
                    num_videos=d.num_videos, num_test_videos=d.num_test_videos,
                    use_digits=d.use_digits, sprite_size=d.sprite_size,
                    sprite_start=d.sprite_start, identities=d.identities,
                    min_return_gap=d.min_return_gap, seed=d.toy_seed)


def _build_once(pipeline, data_dir: str, toy):
  """Builds the toy data on process 0 first (the others wait, then open the finished build)."""
  if jax.process_count() == 1:
    return pipeline.build_toy_dataset(data_dir, toy)
  if jax.process_index() == 0:
    pipeline.build_toy_dataset(data_dir, toy)
  sync_processes("toy data built")
  return pipeline.build_toy_dataset(data_dir, toy)


def make_input(config, spec: DiTSpec, workdir: str, local_batch: int):
  """-> (grain iterator, batch preparer, reference test video dict for samples or None)."""
  from blockvid_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  d = config.data
  if d.kind == "latents":
    from blockvid_jax.data import latent_folder  # pylint: disable=import-outside-toplevel
    try:
      source = latent_folder.LatentFolderSource(d.data_dir)
      null = source.null_context()
    except ValueError as e:
      raise ConfigError(f"data.data_dir: {e}") from None
    dataset = latent_folder.make_dataset(source, batch_size=local_batch,
                                         window_chunks=d.window_chunks,
                                         frames_per_chunk=d.frames_per_chunk, seed=config.seed)
    it = pipeline.make_iterator(dataset, num_threads=d.num_threads,
                                prefetch_buffer_size=d.prefetch)
    return it, batches.LatentBatchPreparer(null), None
  from blockvid_jax.data.toy_long_video import generate_video  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.text import ToyTextEncoder  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data import toy_grammar  # pylint: disable=import-outside-toplevel
  data_dir = os.path.abspath(d.data_dir or os.path.join(workdir, "data"))
  toy = toy_data_config(config)
  t0 = time.monotonic()
  builder = _build_once(pipeline, data_dir, toy)
  logging.info("toy data %s ready in %s (%.1fs)", toy.name, data_dir, time.monotonic() - t0)
  dataset = pipeline.make_dataset(builder.as_data_source("train"), batch_size=local_batch,
                                  window_chunks=d.window_chunks, frames_per_chunk=d.frames_per_chunk,
                                  seed=config.seed)
  it = pipeline.make_iterator(dataset, num_threads=d.num_threads, prefetch_buffer_size=d.prefetch)
  # The sampler (blockvid_jax.generate) builds the same frozen encoder: its weights come from the
  # encoder's own fixed seed, never `config.seed` (a run trained with --config.seed=1 and sampled
  # with the default config would see other prompt embeddings).
  encoder = ToyTextEncoder(text_dim=spec.text_dim, max_len=config.text.max_len,
                           words=toy_grammar.vocabulary())
  preparer = batches.ToyBatchPreparer(encoder, config.autoencoder.factor, spec.in_channels)
  split = "test" if toy.num_test_videos else "train"
  return it, preparer, generate_video(toy, split, 0)
