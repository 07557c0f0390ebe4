"""video_io: mp4 / gif round trips, odd sizes, one-line errors, atomic writes."""

import os

import numpy as np
import pytest

from blockvid_jax import video_io
from blockvid_jax.errors import VideoError


def smooth_frames(t=12, h=32, w=48, seed=0):
  """Smooth gradients that move over time (H.264 keeps these within a few levels)."""
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx * 2, yy * 2, xx + yy], axis=-1).astype(np.float64)          # [H, W, 3]
  frames = [base + 3 * i + 20 for i in range(t)]
  return np.stack(frames).astype(np.uint8)                                        # [T, H, W, 3]


def test_mp4_round_trip(tmp_path):
  frames = smooth_frames()
  path = video_io.write_video(tmp_path / "a.mp4", frames, fps=8)
  assert path == tmp_path / "a.mp4"
  back = video_io.read_video(path)
  assert back.shape == frames.shape and back.dtype == np.uint8
  err = np.abs(back.astype(float) - frames.astype(float))
  assert err.mean() < 3.0, err.mean()
  assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]   # no temporary file left


def test_mp4_odd_size_is_padded(tmp_path):
  frames = smooth_frames(t=5, h=33, w=47)
  back = video_io.read_video(video_io.write_video(tmp_path / "odd.mp4", frames))
  assert back.shape == (5, 34, 48, 3)
  assert np.abs(back[:, :33, :47].astype(float) - frames).mean() < 3.0


def test_gif_round_trip(tmp_path):
  frames = np.zeros((4, 16, 20, 3), np.uint8)
  colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 10)]
  for i, c in enumerate(colors):
    frames[i, :, : 5 * (i + 1)] = c                         # few colours: the palette is exact
  back = video_io.read_video(video_io.write_video(tmp_path / "a.gif", frames, fps=10))
  assert back.shape == frames.shape
  np.testing.assert_array_equal(back, frames)


def test_read_errors_are_one_line(tmp_path):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"this is not a video" * 50)
  with pytest.raises(VideoError) as e:
    video_io.read_video(bad)
  assert "\n" not in str(e.value) and "bad.mp4" in str(e.value)
  with pytest.raises(VideoError, match="no such file"):
    video_io.read_video(tmp_path / "missing.mp4")
  (tmp_path / "bad.gif").write_bytes(b"GIF89a broken")
  with pytest.raises(VideoError) as e:
    video_io.read_video(tmp_path / "bad.gif")
  assert "\n" not in str(e.value)


def test_write_rejects_bad_input(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    video_io.write_video(tmp_path / "f.mp4", np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    video_io.write_video(tmp_path / "f.mp4", np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=".mp4 or .gif"):
    video_io.write_video(tmp_path / "f.avi", np.zeros((2, 8, 8, 3), np.uint8))
  assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
  dest = tmp_path / "keep.mp4"
  dest.write_bytes(b"old content")

  def broken(*args, **kwargs):
    raise RuntimeError("encoder exploded\nsecond line")

  import imageio_ffmpeg
  monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
  with pytest.raises(VideoError, match="encoder exploded") as e:
    video_io.write_video(dest, smooth_frames(t=2))
  assert "\n" not in str(e.value)
  assert dest.read_bytes() == b"old content"
  assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


def test_streaming_writer_appends_and_is_atomic(tmp_path):
  from blockvid_jax.video_io import VideoWriter
  rng = np.random.default_rng(0)
  out = tmp_path / "s.mp4"
  with VideoWriter(out, fps=8) as w:
    w.append(rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8))
    w.append(rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8))
  assert w.frames == 5 and video_io.read_video(out).shape == (5, 16, 16, 3)
  with pytest.raises(RuntimeError):
    with VideoWriter(tmp_path / "t.mp4") as w:
      w.append(np.zeros((2, 16, 16, 3), np.uint8))
      raise RuntimeError("generation failed")
  assert sorted(os.listdir(tmp_path)) == ["s.mp4"]
