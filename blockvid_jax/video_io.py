"""Reading and writing videos as uint8 arrays `[T, H, W, 3]` (RGB, frames first).

Reading uses the ffmpeg binary bundled in the `imageio-ffmpeg` wheel (no system ffmpeg needed) for
every container ffmpeg understands (.mp4, .avi, .mov, .mkv, .webm, ...) and pillow for `.gif`.
Any failure (missing file, corrupt data, no frames) raises `VideoError` with a one-line message.

Writing supports:
  * `.mp4`: H.264 (libx264), yuv420p, constant quality (CRF 18 by default). yuv420p needs an even
    height and width, so an odd size is **padded** by repeating the last row / column (never
    resampled: the frames keep their pixels, a reader gets at most one extra row / column).
  * `.gif`: pillow, looping forever, frame duration round(1000 / fps) ms (GIF stores 10 ms units).
    Pillow merges identical consecutive frames into one longer frame: playback timing is kept, the
    frame count read back is not. Use mp4 when frame counts matter.
Writes are atomic: the file is written under a temporary name in the destination directory and
renamed at the end; on any failure the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from blockvid_jax.errors import VideoError

PathLike = Union[str, os.PathLike]

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to shield it from Ctrl-C), which forces a
# real fork() of this multithreaded (JAX) process: JAX warns, and imageio-ffmpeg issue #58 reports
# hangs. This documented switch drops the preexec_fn; Ctrl-C then also stops ffmpeg, and our writes
# still clean up their temporary file.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def _one_line(err: BaseException) -> str:
  """One informative line of an exception text.

  imageio-ffmpeg errors are a headline, a "=== stderr ===" marker and ffmpeg's log, whose last line
  holds the reason: we keep "headline: reason". Other errors keep their first line.
  """
  text = str(err)
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if not lines:
    return type(err).__name__
  line = lines[0]
  if "=== stderr ===" in text:
    log = text.split("=== stderr ===", 1)[1].splitlines()
    log = [ln.strip() for ln in log if ln.strip() and not ln.strip().startswith(
        ("ffmpeg version", "built with", "configuration:", "lib", "==="))]
    if log:
      line = f"{line}: {log[-1]}"
  return line if len(line) <= 240 else line[:237] + "..."


def _read_gif(path: Path) -> np.ndarray:
  from PIL import Image, ImageSequence
  with Image.open(path) as im:
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]  # [H, W, 3] each
  return np.stack(frames)                                                        # [T, H, W, 3]


def _read_ffmpeg(path: Path) -> np.ndarray:
  import imageio_ffmpeg
  gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
  try:
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in gen]  # [H, W, 3] each
  finally:
    gen.close()
  if not frames:
    raise VideoError(f"{path}: no frames decoded")
  return np.stack(frames)                                                    # [T, H, W, 3]


def read_video(path: PathLike) -> np.ndarray:
  """All frames of a video file -> uint8 [T, H, W, 3]. Raises `VideoError` (one line) on failure."""
  p = Path(path)
  if not p.is_file():
    raise VideoError(f"{p}: no such file")
  try:
    frames = _read_gif(p) if p.suffix.lower() == ".gif" else _read_ffmpeg(p)
  except VideoError:
    raise
  except Exception as err:  # ffmpeg / pillow errors come in many types; all mean "unreadable"
    raise VideoError(f"{p}: unreadable video ({_one_line(err)})") from None
  if frames.shape[0] == 0:
    raise VideoError(f"{p}: no frames decoded")
  return frames


def _check_frames(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
  if frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 (0..255), got {frames.dtype}")
  return frames


def pad_to_even(frames: np.ndarray) -> np.ndarray:
  """[T, H, W, 3] -> [T, H + H % 2, W + W % 2, 3], repeating the last row / column."""
  _, h, w, _ = frames.shape
  return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _mp4_writer(tmp: str, width: int, height: int, fps: float, crf: int):
  """A started imageio-ffmpeg generator: send() one contiguous rgb24 frame at a time."""
  import imageio_ffmpeg
  writer = imageio_ffmpeg.write_frames(
      tmp, (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
      quality=None, macro_block_size=1, ffmpeg_log_level="error",
      output_params=["-crf", str(crf), "-f", "mp4"])
  writer.send(None)  # start ffmpeg
  return writer


def _write_mp4(tmp: str, frames: np.ndarray, fps: float, crf: int) -> None:
  frames = pad_to_even(frames)                                         # [T, H', W', 3]
  _, h, w, _ = frames.shape
  writer = _mp4_writer(tmp, w, h, fps, crf)
  try:
    for frame in frames:
      writer.send(np.ascontiguousarray(frame).tobytes())
  finally:
    writer.close()


def _write_gif(tmp: str, frames: np.ndarray, fps: float) -> None:
  from PIL import Image
  images = [Image.fromarray(f) for f in frames]
  duration = max(1, int(round(1000.0 / fps)))
  images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration,
                 loop=0, optimize=False)


def _publish(tmp: str, path: Path) -> None:
  """Gives the temporary file the user's usual mode (mkstemp makes 0600) and renames it into place."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, path)


def write_video(path: PathLike, frames, fps: float = 8, crf: int = 18) -> Path:
  """Writes uint8 [T, H, W, 3] frames to `.mp4` (H.264, yuv420p) or `.gif`, atomically.

  `crf` is the x264 constant-rate factor for mp4 (0 = lossless luma, 18 = visually lossless).
  Returns the path written. Raises `ValueError` for bad frames or suffix, `VideoError` if the
  encoder fails.
  """
  frames = _check_frames(frames)
  p = Path(path)
  suffix = p.suffix.lower()
  if suffix not in (".mp4", ".gif"):
    raise ValueError(f"{p}: can only write .mp4 or .gif, not {suffix or 'no suffix'!r}")
  if fps <= 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  p.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".tmp" + suffix, dir=p.parent)
  os.close(fd)
  try:
    if suffix == ".mp4":
      _write_mp4(tmp, frames, fps, crf)
    else:
      _write_gif(tmp, frames, fps)
    _publish(tmp, p)
  except BaseException as err:  # also Ctrl-C: never leave the temporary file behind
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(err, (ValueError, VideoError)) or not isinstance(err, Exception):
      raise
    raise VideoError(f"{p}: writing failed ({_one_line(err)})") from None
  return p


class VideoWriter:
  """Streams uint8 frames into an `.mp4` as they are produced (memory does not grow with length).

    with VideoWriter("out.mp4", fps=16) as w:
      w.append(frames)          # [t, H, W, 3] uint8, any number of times, same H and W

  Atomic like `write_video`: frames go to a temporary file in the destination directory, renamed on
  a clean exit; an exception (or `abort()`) removes it and leaves the destination untouched.
  """

  def __init__(self, path: PathLike, fps: float = 8, crf: int = 18):
    self.path = Path(path)
    if self.path.suffix.lower() != ".mp4":
      raise ValueError(f"{self.path}: VideoWriter writes .mp4 only")
    if fps <= 0:
      raise ValueError(f"fps must be > 0, got {fps}")
    self.fps, self.crf, self.frames = fps, crf, 0
    self._writer, self._size, self._tmp = None, None, None

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()

  def append(self, frames) -> None:
    frames = pad_to_even(_check_frames(frames))                        # [t, H', W', 3]
    if self._writer is None:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4",
                                       dir=self.path.parent)
      os.close(fd)
      self._size = frames.shape[1:3]
      self._writer = _mp4_writer(self._tmp, self._size[1], self._size[0], self.fps, self.crf)
    elif frames.shape[1:3] != self._size:
      raise ValueError(f"frame size {frames.shape[1:3]} differs from the first {self._size}")
    for frame in frames:
      self._writer.send(np.ascontiguousarray(frame).tobytes())
    self.frames += frames.shape[0]

  def close(self) -> Path:
    """Finishes the file and renames it into place; returns the path."""
    if self._writer is None:
      raise ValueError(f"{self.path}: no frames were written")
    try:
      self._writer.close()
      _publish(self._tmp, self.path)
    except Exception as err:  # noqa: BLE001
      self.abort()
      raise VideoError(f"{self.path}: writing failed ({_one_line(err)})") from None
    self._writer = None
    return self.path

  def abort(self) -> None:
    """Stops ffmpeg and removes the temporary file."""
    if self._writer is not None:
      try:
        self._writer.close()
      except Exception:  # noqa: BLE001 - we are discarding the file anyway
        pass
      self._writer = None
    if self._tmp and os.path.exists(self._tmp):
      os.remove(self._tmp)
