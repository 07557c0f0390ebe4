"""LV-Bench meta files and the caption -> chunk mapping (DESIGN 11).

A meta file is JSON `{video id: [{"start": s, "end": e, "caption": str}, ...]}` with times in
seconds. Checked before anything is written (one-line `MetaError` otherwise): a non-empty object;
ids usable as file names; per video a non-empty list of entries with numeric 0 <= start < end and
a non-empty caption, in time order and not overlapping (touching is fine).

Chunks (`ChunkTiming`): a model chunk of Fc latent frames decodes to Fc x temporal factor pixel
frames (toy autoencoder: x 1; Wan VAE: x 4), except the first chunk of a causal VAE, whose first
latent frame decodes to one pixel frame: with the Wan VAE a video of C chunks has
1 + 4 (C Fc - 1) pixel frames, chunk 0 covers frames [0, 4 Fc - 3) and chunk c > 0 covers
[4 c Fc - 3, 4 (c + 1) Fc - 3). At the config's fps, chunk c spans those frames' seconds
[lo / fps, hi / fps). A video of duration D = the last caption's end gets the fewest chunks whose
frames last >= D; each chunk is conditioned by the caption whose span covers most of it (ties: the
earlier caption); a chunk in a gap between captions keeps the previous caption.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Optional, Sequence

from blockvid_jax.data.chunk_timing import ChunkTiming
from blockvid_jax.errors import MetaError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# per autoencoder kind (config_lib.AUTOENCODERS; "wan_vae" is an alias of "wan"): pixel frames per
# latent frame, and pixel frames the first chunk lacks (the causal VAE's lone first frame)
AUTOENCODER_FRAMES = {"toy": (1, 0), "wan": (4, 3), "wan_vae": (4, 3)}


@dataclasses.dataclass(frozen=True)
class Caption:
  start: float   # seconds
  end: float     # seconds
  caption: str


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_meta(obj, where: str = "meta") -> dict[str, list[Caption]]:
  """Validates a decoded meta object; returns {id: [Caption, ...]} in file order."""
  if not isinstance(obj, dict) or not obj:
    raise MetaError(f"{where}: expected a non-empty JSON object {{video id: [captions]}}")
  out = {}
  for vid, entries in obj.items():
    if not ID_PATTERN.match(vid):
      raise MetaError(f"{where}: video id {vid!r} is not usable as a file name "
                      "(letters, digits, '.', '_', '-')")
    if not isinstance(entries, list) or not entries:
      raise MetaError(f"{where}: video {vid!r} needs a non-empty list of captions")
    caps = []
    for i, e in enumerate(entries):
      if not isinstance(e, dict):
        raise MetaError(f"{where}: video {vid!r} entry {i} is not an object")
      missing = [k for k in ("start", "end", "caption") if k not in e]
      if missing:
        raise MetaError(f"{where}: video {vid!r} entry {i} is missing {', '.join(missing)}")
      s, t, c = e["start"], e["end"], e["caption"]
      if not (_number(s) and _number(t)):
        raise MetaError(f"{where}: video {vid!r} entry {i}: start/end must be numbers of seconds")
      if s < 0 or t <= s:
        raise MetaError(f"{where}: video {vid!r} entry {i}: need 0 <= start < end, got "
                        f"start={s}, end={t}")
      if not isinstance(c, str) or not c.strip():
        raise MetaError(f"{where}: video {vid!r} entry {i}: caption must be a non-empty string")
      if caps and s < caps[-1].end:
        raise MetaError(f"{where}: video {vid!r} entry {i} (start {s}) overlaps or precedes "
                        f"entry {i - 1} (end {caps[-1].end})")
      caps.append(Caption(float(s), float(t), " ".join(c.split())))
    out[vid] = caps
  return out


def load_meta(path: str) -> dict[str, list[Caption]]:
  if not os.path.isfile(path):
    raise MetaError(f"meta file {path!r} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f)
  except json.JSONDecodeError as e:
    raise MetaError(f"meta file {path!r} is not valid JSON: {e.msg} (line {e.lineno})") from None
  return parse_meta(obj, where=f"meta file {path!r}")


def select(ids: Sequence[str], start: int = 0, count: Optional[int] = None,
           only: Optional[Sequence[str]] = None) -> list[str]:
  """The shard [start, start + count) of the ids in sorted order (optionally only `only`)."""
  ids = sorted(ids)
  if only:
    unknown = [v for v in only if v not in ids]
    if unknown:
      raise MetaError(f"unknown video id(s) {', '.join(unknown)} (not in the meta file)")
    ids = [v for v in ids if v in set(only)]
  if start < 0 or (count is not None and count < 1):
    raise MetaError(f"--start must be >= 0 and --count >= 1, got {start}, {count}")
  return ids[start:] if count is None else ids[start:start + count]


def chunk_timing(config) -> ChunkTiming:
  """The chunk timing of a config: model.frames_per_chunk, autoencoder.kind, video.fps."""
  kind = config.autoencoder.kind
  if kind not in AUTOENCODER_FRAMES:
    raise MetaError(f"autoencoder.kind={kind!r}: unknown temporal factor (one of "
                    f"{', '.join(AUTOENCODER_FRAMES)})")
  factor, short = AUTOENCODER_FRAMES[kind]
  fpc, fps = config.model.frames_per_chunk, config.video.fps
  if fpc < 1 or fps <= 0:
    raise MetaError(f"need model.frames_per_chunk >= 1 and video.fps > 0, got {fpc}, {fps}")
  return ChunkTiming(frames=fpc * factor, first_short=short, fps=float(fps))


def chunk_captions(captions: Sequence[Caption], timing: ChunkTiming) -> list[str]:
  """The caption conditioning each chunk (see the module docstring)."""
  out = []
  for c in range(timing.num_chunks(captions[-1].end)):
    lo, hi = timing.span(c)
    overlap = [round(max(0.0, min(hi, cap.end) - max(lo, cap.start)), 9) for cap in captions]
    best = max(range(len(captions)), key=lambda i: (overlap[i], -i))
    if overlap[best] <= 0:       # a gap: the last caption that started before this chunk
      before = [i for i, cap in enumerate(captions) if cap.start <= lo]
      best = before[-1] if before else 0
    out.append(captions[best].caption)
  return out
