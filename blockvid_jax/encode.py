"""CLI: pre-encode captioned videos into a `latent_folder` (Wan VAE latents + umT5 caption embeddings).

  python -m blockvid_jax.encode --config configs/self_forcing_1_3b.py:WAN --videos DIR \
      [--captions DIR/captions.json] --out LATENT_DIR [--max_chunks N]

The config gives the weights (`autoencoder.checkpoint`, `text.checkpoint`, `text.tokenizer`), the
pixel size (`video.latent_height/width` x 8) and `model.frames_per_chunk` (Fc). Each video (any file
`video_io.read_video` reads, captions in the `data.video_folder` style) is centre-cropped and resized,
cut to the longest 1 + 4 (n Fc - 1) frames (n chunks, at most --max_chunks), VAE-encoded to
n Fc latent frames, and each chunk gets the embedding of the caption segment at its middle time.
Writes LATENT_DIR/videos/<name>.npz (latents float16 [n Fc, h, w, 16], context float16 [n, T, E])
and LATENT_DIR/null_context.npy (the encoded `text.negative_prompt`), each atomically (a temporary
".<name>.tmp" that the folder reader ignores, then a rename). Resumable: a video whose .npz exists is
not encoded again. Videos with no captions, an unreadable (corrupt) file or too few frames are
skipped with a message, and LATENT_DIR/encode_report.json lists this run's outcome:
{"written": [names], "done": [already encoded], "skipped": {name: reason}}. User errors print one
line and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with the pretrained paths.",
                                          lock_config=True)
_VIDEOS = flags.DEFINE_string("videos", None, "Folder of videos.")
_CAPTIONS = flags.DEFINE_string("captions", "", "captions.json (default: VIDEOS/captions.json).")
_OUT = flags.DEFINE_string("out", None, "Output latent_folder directory.")
_MAX_CHUNKS = flags.DEFINE_integer("max_chunks", 0, "At most this many chunks per video (0: all).")


REPORT = "encode_report.json"


def _save_atomic(path: Path, save: Callable[[object], None]) -> None:
  """save(binary file) into ".<name>.tmp" next to `path`, then rename it over `path`."""
  tmp = str(path.parent / f".{path.name}.tmp")
  try:
    with open(tmp, "wb") as f:
      save(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def chunk_frame_range(chunk: int, frames_per_chunk: int, temporal: int = 4) -> tuple[int, int]:
  """First and last video frame that the latent frames of `chunk` cover."""
  first_latent, last_latent = chunk * frames_per_chunk, (chunk + 1) * frames_per_chunk - 1
  lo = 0 if first_latent == 0 else 1 + temporal * (first_latent - 1)
  return lo, temporal * last_latent


def encode_folder(config, videos: str, captions: str, out: str, max_chunks: int = 0,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> int:
  """Encodes every usable video of `videos` not encoded yet; returns how many were written."""
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.config_lib import validate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data.video_folder import (frame_rate, load_captions,  # pylint: disable=import-outside-toplevel
                                              resize_frames, segment_at)
  from blockvid_jax.models import ConfigError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.video_io import VIDEO_SUFFIXES, VideoError, read_video  # pylint: disable=import-outside-toplevel

  spec = validate(config)
  if config.text.encoder != "umt5" or config.autoencoder.kind not in ("wan", "wan_vae"):
    raise ConfigError("encoding needs text.encoder='umt5' and autoencoder.kind='wan'")
  vae = generate.make_autoencoder(config, spec)
  if vae is None:
    raise ConfigError("encoding needs autoencoder.checkpoint (the Wan VAE)")
  encoder = generate.make_text_encoder(config, spec)
  folder = Path(videos)
  if not folder.is_dir():
    raise ConfigError(f"--videos {videos!r} is not a directory")
  captions_path = Path(captions) if captions else folder / "captions.json"
  if not captions_path.is_file():
    raise ConfigError(f"captions file {str(captions_path)!r} does not exist")
  segments_of = load_captions(captions_path)
  fc, s = spec.frames_per_chunk, vae.spec.spatial_factor
  height, width = config.video.latent_height * s, config.video.latent_width * s
  (Path(out) / "videos").mkdir(parents=True, exist_ok=True)
  null_path = Path(out) / "null_context.npy"
  if not null_path.is_file():
    null = np.asarray(encoder.encode([config.text.get("negative_prompt", "")])[0][0], np.float16)
    _save_atomic(null_path, lambda f: np.save(f, null))  # [T, E]

  report = {"written": [], "done": [], "skipped": {}}

  def skip(name: str, reason: str) -> None:
    report["skipped"][name] = reason
    log(f"skipping {name}: {reason}")

  for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
    target = Path(out) / "videos" / f"{path.stem}.npz"
    if target.is_file():
      report["done"].append(path.name)
      continue
    segments = segments_of.get(path.name, segments_of.get(path.stem))
    if not segments:
      skip(path.name, "no captions")
      continue
    try:
      frames, fps = read_video(path), frame_rate(path)  # [T, h, w, 3]
    except (VideoError, OSError, StopIteration, RuntimeError) as e:
      skip(path.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
      continue
    n = (1 + (frames.shape[0] - 1) // vae.spec.temporal_factor) // fc
    n = min(n, max_chunks) if max_chunks else n
    if n < 1 or fps <= 0:
      skip(path.name, f"{frames.shape[0]} frames, fewer than one chunk of {fc} latents")
      continue
    t = vae.spec.num_video_frames(n * fc)
    pixels = resize_frames(frames[:t], height, width).astype(np.float32) / 127.5 - 1.0
    latents = np.asarray(vae.encode(pixels[None]))[0]  # [n Fc, h, w, C]
    ids = [segment_at(segments, 0.5 * sum(chunk_frame_range(c, fc, vae.spec.temporal_factor)) / fps)
           for c in range(n)]
    emb = np.asarray(encoder.encode([segments[i]["caption"] for i in ids])[0])  # [n, T, E]
    _save_atomic(target, lambda f, l=latents, e=emb: np.savez(
        f, latents=l.astype(np.float16), context=e.astype(np.float16)))
    report["written"].append(path.name)
    log(f"{path.name}: {n} chunks, {t} frames -> {target}")
  text = json.dumps(report, indent=1, sort_keys=True) + "\n"
  _save_atomic(Path(out) / REPORT, lambda f: f.write(text.encode()))
  return len(report["written"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from blockvid_jax.models import ConfigError  # pylint: disable=import-outside-toplevel
  try:
    if _CONFIG.value is None or not _VIDEOS.value or not _OUT.value:
      raise ConfigError("--config, --videos and --out are required")
    count = encode_folder(_CONFIG.value, _VIDEOS.value, _CAPTIONS.value, _OUT.value,
                          _MAX_CHUNKS.value)
  except (ConfigError, ValueError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {count} videos to {_OUT.value} (skipped ones: {os.path.join(_OUT.value, REPORT)})")


if __name__ == "__main__":
  app.run(main)

