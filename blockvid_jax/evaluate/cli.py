"""`python -m blockvid_jax.evaluate`: LV-Bench Video Drift Error of every video in a folder.

  python -m blockvid_jax.evaluate --videos DIR --out DIR [--metrics subject,background,...]
      [--weights_dir DIR] [--n_chunks 10] [--weighting linear|log] [--plugins my.module]

Writes `vde_<metric>.json` ({video: VDE}) per metric and `summary.json` into --out (rewritten after
every video, atomically), prints the mean per metric. `summary.json` also holds the raw VBench
metrics (subject / background consistency, motion smoothness, aesthetic / imaging quality) of the
same scorers over each whole video, under "vbench". Before any video is read, a metric whose
weights are missing, an unknown metric or an unloadable plug-in stops the run with one line on
stderr and exit status 2. An unreadable video, or one with fewer frames than chunks, is recorded in
`summary.json` under "skipped" with its reason and the run goes on; so is a video too short for one
metric (e.g. motion needs 3 frames per chunk) or a metric that fails on one video.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from blockvid_jax import video_io
from blockvid_jax.evaluate import convert_vit, scorers, vde, weights
from blockvid_jax.errors import ConvertError, UsageError, VideoError, WeightsError

DEFAULT_METRICS = ("subject", "background", "aesthetic", "clarity", "motion")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(prog="python -m blockvid_jax.evaluate",
                               description="LV-Bench Video Drift Error (VDE) of a video folder.")
  ap.add_argument("--videos", required=True,
                  help="folder of videos (.mp4 .avi .mov .mkv .webm .gif)")
  ap.add_argument("--out", required=True, help="output folder for vde_<metric>.json, summary.json")
  ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                  help="comma-separated metric names, or 'all' (default: %(default)s)")
  ap.add_argument("--weights_dir", default=None, help="folder holding the scorers' weight files")
  ap.add_argument("--n_chunks", type=int, default=10, help="chunks per video N (default 10)")
  ap.add_argument("--weighting", choices=vde.WEIGHTINGS, default="linear")
  ap.add_argument("--plugins", default="", help="comma-separated modules to import first (they may "
                  "register or replace scorers)")
  ap.add_argument("--head_dim", type=int, default=convert_vit.HEAD_DIM,
                  help="ViT head dim used to infer head counts (64 for all public models)")
  ap.add_argument("--batch_size", type=int, default=8, help="frames per ViT call")
  ap.add_argument("--quiet", action="store_true", help="no progress line")
  return ap.parse_args(argv)


class Progress:
  """A one-line progress bar on stderr (one line per video when stderr is not a terminal)."""

  def __init__(self, total: int, enabled: bool = True, stream=None):
    self.total, self.enabled = total, enabled
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.start = time.time()

  def update(self, done: int, name: str) -> None:
    if not self.enabled:
      return
    width = 24
    fill = int(width * done / max(self.total, 1))
    rate = (time.time() - self.start) / max(done, 1)
    eta = rate * (self.total - done)
    line = (f"[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} videos "
            f"eta {eta:5.0f}s  {name}")
    if self.tty:
      self.stream.write("\r" + line[:120].ljust(120))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def close(self) -> None:
    if self.enabled and self.tty:
      self.stream.write("\n")
      self.stream.flush()


def _metric_names(spec: str) -> list[str]:
  names = list(scorers.REGISTRY) if spec.strip() == "all" else [
      m.strip() for m in spec.split(",") if m.strip()]
  unknown = [m for m in names if m not in scorers.REGISTRY]
  if unknown or not names:
    raise UsageError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                     f"registered: {', '.join(scorers.REGISTRY)}")
  return list(dict.fromkeys(names))


def _check_weights(names: Sequence[str], weights_dir: Optional[Path]) -> None:
  if weights_dir is not None and not weights_dir.is_dir():
    raise UsageError(f"--weights_dir {weights_dir} is not a folder")
  where = weights_dir if weights_dir is not None else "--weights_dir (not given)"
  needs = [f"{m} needs {weights.describe(f)}" for m in names
           for f in scorers.missing_weights(m, weights_dir)]
  if needs:
    raise UsageError(f"missing weights in {where}: " + "; ".join(needs))


def list_videos(folder: Path) -> list[Path]:
  if not folder.is_dir():
    raise UsageError(f"--videos {folder} is not a folder")
  return sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in video_io.VIDEO_SUFFIXES)


def score_video(scorer: scorers.Scorer, frames: np.ndarray,
                chunks: Sequence[np.ndarray]) -> tuple[list[float], float]:
  """(per-chunk scores, score of the whole untrimmed video). Mean-over-frames scorers (with
  `frame_scores`) score each frame once; the others score the chunks and then the whole video."""
  if hasattr(scorer, "frame_scores"):
    per_frame = np.asarray(scorer.frame_scores(frames), np.float64)    # [T]
    size = chunks[0].shape[0]
    return ([float(per_frame[i * size:(i + 1) * size].mean()) for i in range(len(chunks))],
            float(per_frame.mean()))
  return [float(scorer.score(c)) for c in chunks], float(scorer.score(frames))


def evaluate(args: argparse.Namespace) -> dict:
  """Runs the evaluation; returns {metric: {video: VDE}}. Raises UsageError before any scoring."""
  for module in [m.strip() for m in args.plugins.split(",") if m.strip()]:
    try:
      scorers.load_plugin(module)
    except Exception as err:
      raise UsageError(f"cannot import plug-in {module}: {err}") from None
  names = _metric_names(args.metrics)
  if args.n_chunks < 1:
    raise UsageError(f"--n_chunks must be >= 1, got {args.n_chunks}")
  weights_dir = Path(args.weights_dir) if args.weights_dir else None
  _check_weights(names, weights_dir)
  videos = list_videos(Path(args.videos))
  options = scorers.ScorerOptions(weights_dir, args.head_dim, args.batch_size)
  built = {}
  for m in names:
    try:
      built[m] = scorers.build(m, options)
    except (WeightsError, ConvertError) as err:
      raise UsageError(f"metric {m}: {err}") from None

  out = Path(args.out)
  per_metric = {m: {} for m in names}
  chunk_scores = {m: {} for m in names}
  raw = {m: {} for m in names}             # VBench's metric over the whole video
  skipped = []

  def write():
    for m in names:
      vde.write_metric_json(out, m, per_metric[m])
    vde.write_summary(out, n_chunks=args.n_chunks, weighting=args.weighting,
                      per_metric=per_metric, chunk_scores=chunk_scores,
                      descriptions={m: s.description for m, s in built.items()},
                      paper_metric={m: s.paper_metric for m, s in built.items()}, skipped=skipped,
                      vbench=raw)

  progress = Progress(len(videos), enabled=not args.quiet)
  write()
  for done, path in enumerate(videos, 1):
    name = path.name
    try:
      frames = video_io.read_video(path)                       # [T, H, W, 3]
    except VideoError as err:
      skipped.append({"video": name, "metric": "*", "reason": str(err)})
      frames = None
    if frames is not None and frames.shape[0] < args.n_chunks:
      skipped.append({"video": name, "metric": "*", "reason":
                      f"too short: {frames.shape[0]} frames < {args.n_chunks} chunks"})
      frames = None
    if frames is not None:
      chunks = vde.split_chunks(frames, args.n_chunks)        # N x [T/N, H, W, 3]
      for m, scorer in built.items():
        per_chunk = chunks[0].shape[0]
        if per_chunk < scorer.min_frames_per_chunk:
          skipped.append({"video": name, "metric": m, "reason":
                          f"too short for {m}: {per_chunk} frames per chunk < "
                          f"{scorer.min_frames_per_chunk}"})
          continue
        try:
          scores, whole = score_video(scorer, frames, chunks)
        except Exception as err:  # one bad video must not end a long evaluation
          skipped.append({"video": name, "metric": m, "reason": f"{type(err).__name__}: {err}"})
          continue
        per_metric[m][name] = vde.vde(scores, args.weighting)
        chunk_scores[m][name] = scores
        raw[m][name] = whole * getattr(scorer, "vbench_scale", 1.0)
    write()
    progress.update(done, name)
  progress.close()
  return per_metric


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  try:
    per_metric = evaluate(args)
  except UsageError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  for m, vals in per_metric.items():
    mean = vde.mean_vde(list(vals.values()))
    shown = "n/a" if math.isnan(mean) else f"{mean:.4f}"
    print(f"VDE {m:<11s} {shown:>10s}  ({len(vals)} videos)  -> {Path(args.out) / f'vde_{m}.json'}")
  return 0
