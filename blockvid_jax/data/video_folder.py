"""`video_folder`: a tfds builder turning a folder of videos + `captions.json` into fixed windows.

The folder holds video files (.mp4, or anything `blockvid_jax.video_io.read_video` reads) and a
captions file in the LV-Bench style, keyed by file name (or by name without suffix):

  {"clip_001.mp4": [{"start": 0.0, "end": 4.5, "caption": "a man walks ..."},
                    {"start": 4.5, "end": 9.0, "caption": "..."}], ...}

(a list of {"video": name, "captions": [...]} records is accepted too). Each video is subsampled by
`frame_stride`, resized (centre crop to the target aspect, then bilinear) to height x width and cut
into windows of `chunks_per_window` chunks of `frames_per_chunk` frames (a new window every
`window_stride_chunks` chunks). A chunk's caption is the segment containing the time of its middle
frame (the nearest segment if none does); its scene id is that segment's index, so the grain
pipeline treats these windows like toy videos. Videos that cannot be read, have no captions, no
frame rate or are shorter than one window are skipped with a logged reason.

Features: frames uint8 [N * Fc, H, W, 3], captions str [N], scene_ids int32 [N], video_index int32
(position in the sorted file list), video str, start_frame int32 (first frame, original numbering).

The config name carries a fingerprint of the folder (file names, sizes, mtimes, captions file), so
a changed folder builds into a new directory instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from blockvid_jax.video_io import VIDEO_SUFFIXES, read_video
from blockvid_jax.errors import VideoError

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """Where the videos are and how windows are cut. Use `video_folder_config(...)`."""
  video_dir: str = ""
  captions_file: str = ""          # "" -> <video_dir>/captions.json
  height: int = 32
  width: int = 32
  frames_per_chunk: int = 3        # Fc (after the stride)
  chunks_per_window: int = 4       # N
  frame_stride: int = 1            # keep every k-th frame
  window_stride_chunks: int = 0    # 0 -> chunks_per_window (windows do not overlap)
  fps: float = 0.0                 # 0 -> read each file's frame rate

  @property
  def frames_per_window(self) -> int:
    return self.frames_per_chunk * self.chunks_per_window

  @property
  def captions_path(self) -> Path:
    return Path(self.captions_file or os.path.join(self.video_dir, "captions.json"))


def _fingerprint(video_dir: Path, captions: Path) -> str:
  digest = hashlib.sha1()
  for p in sorted(video_dir.iterdir()):
    if p.suffix.lower() in VIDEO_SUFFIXES:
      st = p.stat()
      digest.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
  if captions.is_file():
    digest.update(captions.read_bytes())
  return digest.hexdigest()[:12]


def video_folder_config(video_dir: str, *, captions_file: str = "", height: int = 32,
                        width: int = 32, frames_per_chunk: int = 3, chunks_per_window: int = 4,
                        frame_stride: int = 1, window_stride_chunks: int = 0,
                        fps: float = 0.0) -> VideoFolderConfig:
  """A config named after its geometry and a fingerprint of the folder's contents."""
  if min(height, width, frames_per_chunk, chunks_per_window, frame_stride) < 1:
    raise ValueError("height, width, frames_per_chunk, chunks_per_window and frame_stride must "
                     "be >= 1")
  if window_stride_chunks < 0 or fps < 0:
    raise ValueError("window_stride_chunks and fps must be >= 0")
  video_dir = os.path.abspath(video_dir)
  if not os.path.isdir(video_dir):
    raise ValueError(f"{video_dir}: not a directory")
  config = VideoFolderConfig(
      name="", description=f"windows of {video_dir}", video_dir=video_dir,
      captions_file=os.path.abspath(captions_file) if captions_file else "", height=height,
      width=width, frames_per_chunk=frames_per_chunk, chunks_per_window=chunks_per_window,
      frame_stride=frame_stride, window_stride_chunks=window_stride_chunks, fps=fps)
  settings = (f"{height}x{width}_f{frames_per_chunk}_n{chunks_per_window}_s{frame_stride}"
              f"_w{window_stride_chunks}_fps{fps:g}")
  folder = _fingerprint(Path(video_dir), config.captions_path)
  config.name = f"{settings}_{folder}".replace(".", "p")
  return config


def load_captions(path: Path) -> dict[str, list[dict[str, Any]]]:
  """captions.json -> {video name: segments sorted by start}. Raises ValueError if malformed."""
  try:
    raw = json.loads(Path(path).read_text())
  except (OSError, json.JSONDecodeError) as err:
    raise ValueError(f"{path}: cannot read captions ({err})") from None
  if isinstance(raw, list):
    raw = {r["video"]: r["captions"] for r in raw}
  out = {}
  for name, segments in raw.items():
    segs = []
    for s in segments:
      start, end = float(s["start"]), float(s["end"])
      if end < start:
        raise ValueError(f"{path}: segment of {name} ends before it starts: {s}")
      segs.append({"start": start, "end": end, "caption": str(s["caption"])})
    out[name] = sorted(segs, key=lambda s: s["start"])
  return out


def segment_at(segments: list[dict[str, Any]], t: float) -> int:
  """Index of the segment containing time t (seconds), else of the nearest one."""
  for i, s in enumerate(segments):
    if s["start"] <= t < s["end"]:
      return i
  return int(np.argmin([max(s["start"] - t, t - s["end"]) for s in segments]))


def frame_rate(path: Path) -> float:
  """The container's frame rate, from the header that imageio-ffmpeg reads."""
  import imageio_ffmpeg
  gen = imageio_ffmpeg.read_frames(str(path))
  try:
    return float(next(gen).get("fps") or 0.0)
  finally:
    gen.close()


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """[T, h, w, 3] -> [T, height, width, 3]: centre crop to the target aspect, bilinear resize."""
  _, h, w, _ = frames.shape
  if (h, w) == (height, width):
    return frames
  crop_h, crop_w = min(h, round(w * height / width)), min(w, round(h * width / height))
  y0, x0 = (h - crop_h) // 2, (w - crop_w) // 2
  cropped = frames[:, y0:y0 + crop_h, x0:x0 + crop_w]  # [T, crop_h, crop_w, 3]
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                   for f in cropped])  # [T, height, width, 3]


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Fixed-length windows with per-chunk captions from a folder of captioned videos."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # See ToyLongVideo.code_path: tfds 4.9.10 would need `importlib_resources` here.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    c: VideoFolderConfig = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(c.frames_per_window, c.height, c.width, 3),
                                           dtype=np.uint8),
            "captions": tfds.features.Tensor(shape=(c.chunks_per_window,), dtype=np.str_),
            "scene_ids": tfds.features.Tensor(shape=(c.chunks_per_window,), dtype=np.int32),
            "video_index": tfds.features.Scalar(dtype=np.int32),
            "video": tfds.features.Text(),
            "start_frame": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the videos are local
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    c: VideoFolderConfig = self.builder_config
    captions = load_captions(c.captions_path)
    videos = sorted(p for p in Path(c.video_dir).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    produced = 0
    for index, path in enumerate(videos):
      for key, example in self._windows(index, path, captions):
        produced += 1
        yield key, example
    if not produced:
      raise ValueError(f"{c.video_dir}: no usable video (see the logged reasons)")

  def _windows(self, index: int, path: Path, captions: dict[str, list[dict[str, Any]]]):
    c: VideoFolderConfig = self.builder_config
    segments = captions.get(path.name, captions.get(path.stem))
    if not segments:
      log.warning("skipping %s: no captions for it in %s", path, c.captions_path)
      return
    try:
      frames = read_video(path)  # [T, h, w, 3]
      fps = c.fps or frame_rate(path)
    except VideoError as err:
      log.warning("skipping %s: %s", path, err)
      return
    except Exception as err:  # the frame-rate probe of a file read_video accepted
      log.warning("skipping %s: cannot read its frame rate (%s)", path, err)
      return
    if fps <= 0:
      log.warning("skipping %s: unknown frame rate (set fps in the config)", path)
      return
    kept = np.arange(0, frames.shape[0], c.frame_stride)  # [T'] original frame numbers
    if len(kept) < c.frames_per_window:
      log.warning("skipping %s: %d frames after stride %d, fewer than one window of %d", path,
                  len(kept), c.frame_stride, c.frames_per_window)
      return
    frames = resize_frames(frames[kept], c.height, c.width)  # [T', H, W, 3]
    step = (c.window_stride_chunks or c.chunks_per_window) * c.frames_per_chunk
    for first in range(0, len(kept) - c.frames_per_window + 1, step):
      ids = []
      for n in range(c.chunks_per_window):
        lo = first + n * c.frames_per_chunk
        mid = 0.5 * (kept[lo] + kept[lo + c.frames_per_chunk - 1]) / fps  # seconds
        ids.append(segment_at(segments, mid))
      yield f"{index:06d}_{first:08d}", {
          "frames": frames[first:first + c.frames_per_window],  # [N * Fc, H, W, 3]
          "captions": np.asarray([segments[i]["caption"] for i in ids], dtype=object),  # [N]
          "scene_ids": np.asarray(ids, dtype=np.int32),  # [N]
          "video_index": np.int32(index),
          "video": path.name,
          "start_frame": np.int32(kept[first]),
      }
