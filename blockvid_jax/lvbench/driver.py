"""Generate the videos of an LV-Bench meta file: one `<video id>.mp4` per entry; resumable, sharded.

For each selected id (sorted ids, then `[start, start + count)`, so hosts can split the list with
disjoint `--start/--count`), the captions are mapped to chunks (`meta.chunk_captions`, at the
config's `meta.chunk_timing`) and the video is sampled by `blockvid_jax.generate.generate` with
seed `seed + position of the id in the sorted list` (the same video whatever the sharding). With the
toy autoencoder the frames are decoded at the end; with the Wan VAE (`autoencoder.kind='wan'` and
`autoencoder.checkpoint`) each chunk is decoded as it is generated and streamed into the `.mp4`, so
memory does not grow with the video's length. Either way the video must have exactly
`ChunkTiming.num_frames(chunks)` frames (Wan: 1 + 4 (C Fc - 1)), the frames the captions were
mapped to. Videos already in the output folder are skipped, and each is written atomically, so an
interrupted run resumes where it stopped. The model is loaded (or randomly initialised, with a
warning) once per run.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from blockvid_jax import generate
from blockvid_jax.lvbench.meta import Caption, chunk_captions, chunk_timing, select
from blockvid_jax.errors import MetaError

VIDEO_SUFFIX = ".mp4"


def check_decodable(config) -> None:
  """LV-Bench writes `.mp4`: the autoencoder must decode latents to pixels here."""
  ae = config.autoencoder
  if ae.kind != "toy" and not ae.get("checkpoint", ""):
    raise MetaError(f"autoencoder.kind={ae.kind!r} needs autoencoder.checkpoint (the Wan VAE "
                    "weights) to decode the .mp4 videos")


def plan(config, meta: Mapping[str, Sequence[Caption]], start: int = 0,
         count: Optional[int] = None, only: Optional[Sequence[str]] = None) -> dict[str, list[str]]:
  """{id: per-chunk captions} of the selected shard (validates everything, writes nothing)."""
  check_decodable(config)
  timing = chunk_timing(config)
  return {vid: chunk_captions(meta[vid], timing) for vid in select(list(meta), start, count, only)}


def video_path(out_dir, vid: str) -> Path:
  return Path(out_dir) / f"{vid}{VIDEO_SUFFIX}"


def _check_frames(vid: str, got: int, expected: int) -> None:
  if got != expected:  # a bug, not a user mistake: the captions were mapped to other frames
    raise RuntimeError(f"{vid}: decoded {got} frames, the chunk plan expects {expected}")


def _sample_video(config, prompts: Sequence[str], seed: int, params, path: Path, expected: int,
                  progress: bool) -> int:
  """Samples one video into `path` (atomically); returns its number of frames."""
  n = len(prompts)
  if config.autoencoder.kind == "toy":
    latents, pixels = generate.generate(config, prompts, n, seed, params=params, progress=progress)
    _check_frames(path.stem, pixels.shape[0], expected)
    generate.save_output(str(path), latents, pixels, config.video.fps)
    return pixels.shape[0]
  from blockvid_jax.video_io import VideoWriter  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():  # ffmpeg runs as a subprocess; JAX warns on any fork
    warnings.filterwarnings("ignore", message="os.fork()")
    with VideoWriter(path, fps=config.video.fps) as writer:   # removed again on any error
      generate.generate(config, prompts, n, seed, params=params, progress=progress,
                        frame_sink=writer.append)
      _check_frames(path.stem, writer.frames, expected)
  return writer.frames


def generate_videos(config, meta: Mapping[str, Sequence[Caption]], out_dir, *, start: int = 0,
                    count: Optional[int] = None, only: Optional[Sequence[str]] = None,
                    seed: int = 0, checkpoint: Optional[str] = None, params=None,
                    progress: bool = True,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
  """Generates the missing videos of the shard; returns {"generated": [...], "skipped": [...]}."""
  plans = plan(config, meta, start, count, only)
  timing = chunk_timing(config)
  order = {vid: i for i, vid in enumerate(sorted(meta))}
  todo = [v for v in plans if not video_path(out_dir, v).exists()]
  done = [v for v in plans if v not in todo]
  for v in done:
    log(f"skip {v}: {video_path(out_dir, v)} exists")
  if todo and params is None:
    spec, _ = generate.build_sampler(config)
    params = generate.load_or_init(config, spec, checkpoint, lambda m: log(f"warning: {m}"))
  for k, vid in enumerate(todo, 1):
    prompts = plans[vid]
    t0 = time.perf_counter()
    path = video_path(out_dir, vid)
    frames = _sample_video(config, prompts, seed + order[vid], params, path,
                           timing.num_frames(len(prompts)), progress)
    log(f"[{k}/{len(todo)}] wrote {path}: {len(prompts)} chunks, {frames} frames "
        f"({frames / timing.fps:.2f} s), {len(set(prompts))} captions "
        f"({time.perf_counter() - t0:.1f}s)")
  return {"generated": todo, "skipped": done}
