"""Pre-encoding captioned videos into a `latent_folder`: Wan VAE latents + umT5 caption embeddings.

The library behind `python -m blockvid_jax.encode` (see that module for the command line).

Each video (any file `video_io.read_video` reads, captions in the `data.video_folder` style) is
centre-cropped and resized to the config's pixel size, cut to the longest 1 + 4 (n Fc - 1) frames
(n chunks, at most `max_chunks`), VAE-encoded to n Fc latent frames, and each chunk gets the
embedding of the caption segment at its middle time. Writes OUT/videos/<name>.npz (latents float16
[n Fc, h, w, 16], context float16 [n, T, E]) and OUT/null_context.npy (the encoded
`text.negative_prompt`), each atomically (a hidden temporary that the folder reader ignores, then a
rename). Resumable: a video whose .npz exists is not encoded again. Videos with no captions, an
unreadable file or too few frames are skipped and listed in OUT/encode_report.json:
{"written": [names], "done": [already encoded], "skipped": {name: reason}}.

Parallelism:
- Devices: a mesh over this process's local devices ('data' = all devices left after the config's
  `mesh.fsdp` x `mesh.tensor`, which shard the umT5 params). Videos are encoded in batches of
  `videos_per_device` x (data x fsdp), the batch axis sharded by the logical name
  'activation_batch'. Videos of different lengths share a batch: each is padded in time to the
  longest (repeating its last frame) and its latents are cut back to its own length. The encoder
  is causal in time (latent frame f sees frames <= 4 f only), so this is exact. A short last batch
  is filled with zero videos whose latents are dropped. A batch's distinct captions are encoded
  once, also data-parallel.
- Hosts: process i of n takes the videos (sorted by name) with index % n == i; the hosts write
  disjoint files into one shared OUT. Each writes its part of the report; the process that finds
  all n parts (process 0 after a barrier when the n processes are a real `jax.distributed` run)
  merges them into the one encode_report.json and removes the parts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from tqdm import tqdm

from blockvid_jax import generate, parallel
from blockvid_jax.config_lib import validate
from blockvid_jax.data.chunk_timing import ChunkTiming
from blockvid_jax.data.video_folder import frame_rate, load_captions, resize_frames, segment_at
from blockvid_jax.video_io import VIDEO_SUFFIXES, read_video
from blockvid_jax.errors import ConfigError, VideoError

REPORT = "encode_report.json"


def save_atomic(path: Path, save: Callable[[object], None]) -> None:
  """save(binary file) into a hidden ".<name>.<pid>.tmp" next to `path`, then rename it over `path`."""
  tmp = str(path.parent / f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(tmp, "wb") as f:
      save(f)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def chunk_frame_range(chunk: int, frames_per_chunk: int, temporal: int = 4) -> tuple[int, int]:
  """First and last video frame that the latent frames of `chunk` cover (causal VAE)."""
  timing = ChunkTiming(frames=frames_per_chunk * temporal, first_short=temporal - 1, fps=1.0)
  lo, hi = timing.frame_range(chunk)
  return lo, hi - 1


def host_share(names: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """The names (in the given order) that process `process_index` of `process_count` encodes."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(f"process_index {process_index} is not in [0, process_count "
                      f"{process_count})")
  return [n for i, n in enumerate(names) if i % process_count == process_index]


def encode_mesh(config, devices=None):
  """A mesh over `devices` (default: this process's local devices): 'fsdp' and 'tensor' from the
  config (they shard the umT5 params), 'data' everything left, 'context' 1."""
  devices = jax.local_devices() if devices is None else list(devices)
  shape = dict(data=-1, fsdp=max(config.mesh.fsdp, 1), context=1, tensor=max(config.mesh.tensor, 1))
  return parallel.make_mesh(shape, devices)


def batch_size(mesh, videos_per_device: int = 1) -> int:
  """Videos per encode step: `videos_per_device` for each slot of the mesh's data axes."""
  if videos_per_device < 1:
    raise ConfigError(f"videos_per_device must be >= 1, got {videos_per_device}")
  return videos_per_device * mesh.shape["data"] * mesh.shape["fsdp"]


def encode_video_batch(vae, clips: Sequence[np.ndarray], mesh, rules=parallel.LOGICAL_RULES,
                       batch: Optional[int] = None) -> list[np.ndarray]:
  """Pixel clips [T_i, H, W, 3] in [-1, 1] (valid VAE lengths) -> latents [F_i, h, w, C] float32.

  One data-parallel VAE call: the clips are padded in time to the longest (exact, the encoder is
  causal) and the batch to `batch` (default the smallest multiple of the data axes) with zeros.
  """
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  b = batch or -(-len(clips) // dp) * dp
  if b % dp or b < len(clips):
    raise ConfigError(f"batch {b} must be a multiple of {dp} and hold {len(clips)} clips")
  t = max(c.shape[0] for c in clips)
  video = np.zeros((b, t) + clips[0].shape[1:], np.float32)  # [B, T, H, W, 3]
  for i, c in enumerate(clips):
    video[i, :c.shape[0]] = c
    video[i, c.shape[0]:] = c[-1]  # repeat the last frame: never seen by the kept latents
  video = jax.device_put(video, parallel.named(mesh, "activation_batch", None, None, None, None,
                                               rules=rules))
  latents = np.asarray(vae.encode(video))  # [B, F, h, w, C]
  return [latents[i, :vae.spec.num_latent_frames(c.shape[0])] for i, c in enumerate(clips)]


def encode_captions(encoder, captions: Sequence[str], mesh,
                    rules=parallel.LOGICAL_RULES) -> np.ndarray:
  """Captions -> embeddings [len, T, E] float32; each distinct caption encoded once, the batch of
  distinct captions (padded with "" to the data axes) sharded over the mesh."""
  unique = sorted(set(captions))
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  padded = unique + [""] * (-len(unique) % dp)
  emb = np.asarray(encoder.encode(padded, parallel.named(mesh, "activation_batch", None,
                                                         rules=rules))[0])  # [U, T, E]
  row = {c: i for i, c in enumerate(unique)}
  return emb[np.asarray([row[c] for c in captions])]  # [len, T, E]


def write_report(out: Path, report: dict, process_index: int, process_count: int) -> bool:
  """Writes this process's report; on several processes merges the parts once all exist.

  Returns whether OUT/encode_report.json now holds the whole run.
  """
  def dump(path: Path, rep: dict) -> None:
    text = json.dumps(rep, indent=1, sort_keys=True) + "\n"
    save_atomic(path, lambda f: f.write(text.encode()))

  if process_count == 1:
    dump(out / REPORT, report)
    return True
  parts = [out / f"encode_report.part-{i:05d}-of-{process_count:05d}.json"
           for i in range(process_count)]
  dump(parts[process_index], report)
  synced = process_count == jax.process_count()
  if synced:  # a real multi-host run: wait for every host, then host 0 merges
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("blockvid_jax.encode report")
    if process_index != 0:
      return False
  if not all(p.is_file() for p in parts):
    return False
  merged = {"written": [], "done": [], "skipped": {}}
  for p in parts:
    rep = json.loads(p.read_text())
    merged["written"] += rep["written"]
    merged["done"] += rep["done"]
    merged["skipped"].update(rep["skipped"])
  merged["written"].sort()
  merged["done"].sort()
  dump(out / REPORT, merged)
  for p in parts:
    p.unlink()
  return True


def encode_folder(config, videos: str, captions: str, out: str, max_chunks: int = 0,
                  log: Optional[Callable[[str], None]] = None, *, devices=None,
                  videos_per_device: int = 1, process_index: Optional[int] = None,
                  process_count: Optional[int] = None, progress: bool = True) -> int:
  """Encodes this process's share of the usable videos of `videos` not encoded yet.

  `devices`: the local devices to encode on (default all); `process_index` / `process_count`
  default to jax's. Returns how many videos this process wrote. Progress (videos done / total of
  this share, videos/s, ETA) goes to stderr; `log` gets one line per written or skipped video.
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  log = log or (lambda m: tqdm.write(m, file=sys.stderr))
  spec = validate(config)
  if config.text.encoder != "umt5" or config.autoencoder.kind not in ("wan", "wan_vae"):
    raise ConfigError("encoding needs text.encoder='umt5' and autoencoder.kind='wan'")
  folder = Path(videos)
  if not folder.is_dir():
    raise ConfigError(f"--videos {videos!r} is not a directory")
  captions_path = Path(captions) if captions else folder / "captions.json"
  if not captions_path.is_file():
    raise ConfigError(f"captions file {str(captions_path)!r} does not exist")
  segments_of = load_captions(captions_path)
  names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
  share = host_share(names, pi, pc)
  mesh = encode_mesh(config, devices)
  rules = parallel.rules_from_config(config.mesh.get("rules"))
  per_step = batch_size(mesh, videos_per_device)
  vae = generate.make_autoencoder(config, spec)
  if vae is None:
    raise ConfigError("encoding needs autoencoder.checkpoint (the Wan VAE)")
  vae.params = jax.device_put(vae.params, parallel.replicated(mesh))  # once, not per batch
  encoder = generate.make_text_encoder(config, spec, mesh)
  fc, s, tf = spec.frames_per_chunk, vae.spec.spatial_factor, vae.spec.temporal_factor
  height, width = config.video.latent_height * s, config.video.latent_width * s
  root = Path(out)
  (root / "videos").mkdir(parents=True, exist_ok=True)
  null_path = root / "null_context.npy"
  if pi == 0 and not null_path.is_file():
    null = encode_captions(encoder, [config.text.get("negative_prompt", "")], mesh, rules)[0]
    save_atomic(null_path, lambda f: np.save(f, null.astype(np.float16)))  # [T, E]

  report = {"written": [], "done": [], "skipped": {}}
  desc = "encode" if pc == 1 else f"encode (host {pi}/{pc})"
  bar = tqdm(total=len(share), unit="video", desc=desc, file=sys.stderr, disable=not progress,
             dynamic_ncols=True)

  def skip(name: str, reason: str) -> None:
    report["skipped"][name] = reason
    log(f"skipping {name}: {reason}")
    bar.update(1)

  def prepare(path: Path):
    """-> (pixels [t, H, W, 3] in [-1, 1], one caption per chunk), or None (skipped)."""
    segments = segments_of.get(path.name, segments_of.get(path.stem))
    if not segments:
      return skip(path.name, "no captions")
    try:
      frames, fps = read_video(path), frame_rate(path)  # [T, h, w, 3]
    except (VideoError, OSError, StopIteration, RuntimeError) as e:
      return skip(path.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
    n = (1 + (frames.shape[0] - 1) // tf) // fc
    n = min(n, max_chunks) if max_chunks else n
    if n < 1 or fps <= 0:
      return skip(path.name, f"{frames.shape[0]} frames, fewer than one chunk of {fc} latents")
    t = vae.spec.num_video_frames(n * fc)
    pixels = resize_frames(frames[:t], height, width).astype(np.float32) / 127.5 - 1.0
    ids = [segment_at(segments, 0.5 * sum(chunk_frame_range(c, fc, tf)) / fps) for c in range(n)]
    return pixels, [segments[i]["caption"] for i in ids]

  def flush(pending: list) -> None:
    if not pending:
      return
    latents = encode_video_batch(vae, [p[1] for p in pending], mesh, rules, batch=per_step)
    flat = [c for p in pending for c in p[2]]
    emb = encode_captions(encoder, flat, mesh, rules)  # [sum n, T, E]
    start = 0
    for (path, pixels, caps), lat in zip(pending, latents):
      e, start = emb[start:start + len(caps)], start + len(caps)  # [n, T, E]
      target = root / "videos" / f"{path.stem}.npz"
      save_atomic(target, lambda f, l=lat, e=e: np.savez(
          f, latents=l.astype(np.float16), context=e.astype(np.float16)))
      report["written"].append(path.name)
      log(f"{path.name}: {len(caps)} chunks, {pixels.shape[0]} frames -> {target}")
      bar.update(1)
    pending.clear()

  pending = []  # (path, pixels, captions) waiting for a full batch
  for name in share:
    path = folder / name
    if (root / "videos" / f"{path.stem}.npz").is_file():
      report["done"].append(name)
      bar.update(1)
      continue
    item = prepare(path)
    if item is not None:
      pending.append((path, *item))
    if len(pending) == per_step:
      flush(pending)
  flush(pending)
  bar.close()
  write_report(root, report, pi, pc)
  return len(report["written"])
