"""grain input pipelines over the random-access tfds sources of `toy_long_video` and `video_folder`.

  source (builder.as_data_source(split)) -> seed -> shuffle -> repeat -> random window of n chunks
  -> shard (process_index::process_count) -> frames to float [-1, 1], captions to str -> batch
  -> to_iter_dataset (threads, no processes)

Every step is index-based (`grain.MapDataset`), so the iterator's whole state is the next
index: `it.get_state()` / `it.set_state(state)` round-trip exactly, and grain's orbax handler
stores it next to the train state:

  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           data=grain.checkpoint.CheckpointSave(it)))
  mngr.restore(step, args=ocp.args.Composite(..., data=grain.checkpoint.CheckpointRestore(it)))

The window is drawn from an RNG keyed by (seed, global index) before sharding, so which video and
which window a global position holds does not depend on the number of processes.

A batch (per process; the global batch is batch_size * process_count):
  frames      float32 [B, N * Fc, H, W, 3] in [-1, 1]   (N = window_chunks, Fc = frames_per_chunk)
  captions    str     [B, N]
  scene_ids   int32   [B, N]
  video_index int32   [B]
  start_chunk int32   [B]    first chunk of the window within its video
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import jax
import numpy as np

from blockvid_jax.data.toy_long_video import ToyLongVideo, ToyLongVideoConfig
from blockvid_jax.data.video_folder import VideoFolder, VideoFolderConfig

Example = dict[str, Any]


def build_toy_dataset(data_dir: str, config: ToyLongVideoConfig | None = None) -> ToyLongVideo:
  """The toy builder for `config` (default: the "default" preset), generated under `data_dir` if
  it is not there yet (a no-op otherwise)."""
  builder = ToyLongVideo(config=config or "default", data_dir=data_dir,
                         file_format="array_record")
  builder.download_and_prepare()
  return builder


def build_video_folder_dataset(data_dir: str, config: VideoFolderConfig) -> VideoFolder:
  """The `video_folder` builder for `config` (see `video_folder_config`), built if missing."""
  builder = VideoFolder(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder


def select_window(example: Example, start_chunk: int, window_chunks: int,
                  frames_per_chunk: int) -> Example:
  """Cuts chunks [start_chunk, start_chunk + window_chunks) out of a stored example; frames become
  float32 in [-1, 1] and captions `str`."""
  num_chunks = len(example["captions"])
  if not 0 <= start_chunk <= num_chunks - window_chunks:
    raise ValueError(f"window of {window_chunks} chunks at {start_chunk} does not fit in "
                     f"{num_chunks} chunks")
  f0, f1 = start_chunk * frames_per_chunk, (start_chunk + window_chunks) * frames_per_chunk
  frames = np.asarray(example["frames"][f0:f1], dtype=np.float32)  # [N * Fc, H, W, 3]
  frames = frames * np.float32(2.0 / 255.0) - np.float32(1.0)
  captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c)
              for c in example["captions"][start_chunk:start_chunk + window_chunks]]
  return {
      "frames": frames,
      "captions": np.asarray(captions, dtype=np.str_),  # [N]
      "scene_ids": np.asarray(example["scene_ids"][start_chunk:start_chunk + window_chunks],
                              dtype=np.int32),  # [N]
      "video_index": np.int32(example["video_index"]),
      "start_chunk": np.int32(start_chunk),
  }


def make_dataset(source: Sequence[Example], *, batch_size: int, window_chunks: int,
                 frames_per_chunk: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, random_window: bool = True,
                 shard_index: int | None = None, shard_count: int | None = None,
                 drop_remainder: bool = True) -> grain.MapDataset:
  """The index-based pipeline (see the module docstring) over a random-access `source`.

  Args:
    source: e.g. `builder.as_data_source("train")` (len + __getitem__ -> a stored example).
    batch_size: examples per batch on this process.
    window_chunks: N, chunks per training window (<= chunks stored per example).
    frames_per_chunk: Fc, pixel frames per chunk of the stored examples.
    seed: drives the shuffle (reseeded each epoch) and the window positions.
    num_epochs: None repeats forever.
    random_window: False always takes the first N chunks (evaluation).
    shard_index, shard_count: this process's shard; default jax.process_index()/process_count().
  """
  if batch_size < 1 or window_chunks < 1 or frames_per_chunk < 1:
    raise ValueError("batch_size, window_chunks and frames_per_chunk must be >= 1")
  if len(source) == 0:
    raise ValueError("the data source is empty")
  if len(source[0]["captions"]) < window_chunks:
    raise ValueError(f"examples hold {len(source[0]['captions'])} chunks, fewer than "
                     f"window_chunks={window_chunks}")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")

  def window(example: Example, rng: np.random.Generator) -> Example:
    num_chunks = len(example["captions"])
    start = int(rng.integers(0, num_chunks - window_chunks + 1)) if random_window else 0
    return select_window(example, start, window_chunks, frames_per_chunk)

  ds = grain.MapDataset.source(source).seed(seed)
  if shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(num_epochs)
  ds = ds.random_map(window)  # keyed by the global index: independent of the sharding
  ds = ds[shard_index::shard_count]
  return ds.batch(batch_size, drop_remainder=drop_remainder)


def make_iterator(dataset: grain.MapDataset, *, num_threads: int = 2,
                  prefetch_buffer_size: int = 8) -> grain.DatasetIterator:
  """A checkpointable iterator (`get_state`/`set_state`) reading with threads, not processes."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
  return iter(dataset.to_iter_dataset(options))


def toy_iterator(data_dir: str, config: ToyLongVideoConfig | None = None, *, split: str = "train",
                 batch_size: int, window_chunks: int, seed: int, num_threads: int = 2,
                 **dataset_kwargs) -> grain.DatasetIterator:
  """Builds the toy data if missing and returns an iterator over `split` (kwargs: make_dataset)."""
  builder = build_toy_dataset(data_dir, config)
  dataset = make_dataset(builder.as_data_source(split), batch_size=batch_size,
                         window_chunks=window_chunks,
                         frames_per_chunk=builder.builder_config.frames_per_chunk, seed=seed,
                         **dataset_kwargs)
  return make_iterator(dataset, num_threads=num_threads)
