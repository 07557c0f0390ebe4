"""clu-compatible metric writers that need no TensorFlow (TensorBoard files via tensorboardX).

`clu.metric_writers` imports TensorFlow at package import, which this project does not install
(~1.5 GB). These classes have clu's `MetricWriter` interface (`write_scalars(step, scalars)`,
`write_images`, `write_videos`, `write_texts`, `write_hparams`, `flush`, `close`) so code written for
clu reads the same; swap in `clu.metric_writers.create_default_writer` where TF is installed.

  writer = create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_scalars(step, {"loss": 0.1})

writes TensorBoard event files (tensorboardX) to `workdir`, one line per write to the console (absl
logging), and one JSON object per scalar write to `workdir/metrics.jsonl` (for scripts and tests).
"""

from __future__ import annotations

import abc
import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from absl import logging

Scalar = Any


class MetricWriter(abc.ABC):
  """The interface of `clu.metric_writers.MetricWriter`."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None: ...

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> uint8 [N, H, W, C] (or [H, W, C])."""

  def write_videos(self, step: int, videos: Mapping[str, np.ndarray]) -> None:
    """videos: name -> uint8 [N, T, H, W, C]."""

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None:
    self.flush()


class LoggingWriter(MetricWriter):
  """One console line per write: `[step] loss = 0.123, lr = 0.001`."""

  def __init__(self, collection: Optional[str] = None):
    self._prefix = f"[{collection}] " if collection else ""

  def write_scalars(self, step, scalars):
    values = ", ".join(f"{k} = {_fmt(v)}" for k, v in sorted(scalars.items()))
    logging.info("%s[%d] %s", self._prefix, step, values)

  def write_texts(self, step, texts):
    for k, v in texts.items():
      logging.info("%s[%d] %s: %s", self._prefix, step, k, v)

  def write_hparams(self, hparams):
    logging.info("%s[hparams] %s", self._prefix,
                 ", ".join(f"{k} = {v}" for k, v in sorted(hparams.items())))


def _fmt(v) -> str:
  v = float(v)
  return f"{v:.6g}"


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files through tensorboardX (no TensorFlow)."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

  def write_scalars(self, step, scalars):
    for k, v in scalars.items():
      self._writer.add_scalar(k, float(v), global_step=step)

  def write_images(self, step, images):
    for k, v in images.items():
      v = np.asarray(v)
      self._writer.add_images(k, v if v.ndim == 4 else v[None], global_step=step, dataformats="NHWC")

  def write_videos(self, step, videos):
    # tensorboardX encodes GIFs with moviepy when present; fall back to a strip of frames.
    for k, v in videos.items():
      v = np.asarray(v)                                                    # [N, T, H, W, C]
      strip = np.concatenate(list(v[0]), axis=1)                           # [H, T*W, C]
      self._writer.add_image(k, strip, global_step=step, dataformats="HWC")

  def write_texts(self, step, texts):
    for k, v in texts.items():
      self._writer.add_text(k, v, global_step=step)

  def write_hparams(self, hparams):
    self._writer.add_text("hparams", json.dumps(dict(hparams), indent=1, default=str))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class JsonlWriter(MetricWriter):
  """Appends `{"step": s, name: value, ...}` lines to a file (flushed at every write)."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._f = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write_scalars(self, step, scalars):
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()

  def close(self):
    self._f.close()


class MultiWriter(MetricWriter):
  """Forwards every call to several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    for w in self._writers:
      w.write_images(step, images)

  def write_videos(self, step, videos):
    for w in self._writers:
      w.write_videos(step, videos)

  def write_texts(self, step, texts):
    for w in self._writers:
      w.write_texts(step, texts)

  def write_hparams(self, hparams):
    for w in self._writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()


def create_default_writer(logdir: str, *, just_logging: bool = False,
                          collection: Optional[str] = None) -> MetricWriter:
  """Console + TensorBoard + `metrics.jsonl` in `logdir` (console only when `just_logging`)."""
  if just_logging:
    return LoggingWriter(collection)
  name = f"metrics_{collection}.jsonl" if collection else "metrics.jsonl"
  return MultiWriter([LoggingWriter(collection), TensorBoardWriter(logdir),
                      JsonlWriter(os.path.join(logdir, name))])
