"""Generate the videos of an LV-Bench meta file: one `<video id>.mp4` per entry; resumable, sharded.

For each selected id (sorted ids, then `[start, start + count)`, so hosts can split the list with
disjoint `--start/--count`), the captions are mapped to chunks (`meta.chunk_captions`) and the video
is sampled by `blockvid_jax.generate.generate` with seed `seed + position of the id in the sorted
list` (the same video whatever the sharding). Videos already in the output folder are skipped, and
each is written atomically, so an interrupted run resumes where it stopped. The model is loaded (or
randomly initialised, with a warning) once per run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from blockvid_jax import generate
from blockvid_jax.lvbench.meta import Caption, MetaError, chunk_captions, chunk_seconds, select

VIDEO_SUFFIX = ".mp4"


def plan(config, meta: Mapping[str, Sequence[Caption]], start: int = 0,
         count: Optional[int] = None, only: Optional[Sequence[str]] = None) -> dict[str, list[str]]:
  """{id: per-chunk captions} of the selected shard (validates everything, writes nothing)."""
  if config.autoencoder.kind != "toy":
    raise MetaError(f"autoencoder.kind={config.autoencoder.kind!r} cannot decode videos here; "
                    "LV-Bench generation writes .mp4 (use a decodable autoencoder)")
  seconds = chunk_seconds(config)
  return {vid: chunk_captions(meta[vid], seconds) for vid in select(list(meta), start, count, only)}


def video_path(out_dir, vid: str) -> Path:
  return Path(out_dir) / f"{vid}{VIDEO_SUFFIX}"


def generate_videos(config, meta: Mapping[str, Sequence[Caption]], out_dir, *, start: int = 0,
                    count: Optional[int] = None, only: Optional[Sequence[str]] = None,
                    seed: int = 0, checkpoint: Optional[str] = None, params=None,
                    progress: bool = True,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
  """Generates the missing videos of the shard; returns {"generated": [...], "skipped": [...]}."""
  plans = plan(config, meta, start, count, only)
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
    latents, pixels = generate.generate(config, prompts, len(prompts), seed + order[vid],
                                        params=params, progress=progress)
    path = generate.save_output(str(video_path(out_dir, vid)), latents, pixels, config.video.fps)
    log(f"[{k}/{len(todo)}] wrote {path}: {len(prompts)} chunks, "
        f"{len(set(prompts))} captions ({time.perf_counter() - t0:.1f}s)")
  return {"generated": todo, "skipped": done}
