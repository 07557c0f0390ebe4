"""Video Drift Error (VDE) of LV-Bench (BlockVid, DESIGN section 1): the formula and its reports.

A video of T frames is trimmed to T - T % N frames and split into N equal chunks (N = 10 in the
paper). A metric scores each chunk (m_1..m_N) and

  VDE = sum_{i=2..N} w_i * |m_i - m_1| / m_1,   w_i = N - i + 1 (`linear`) or ln(N - i + 1) (`log`).

No normalisation by sum(w). Edge cases, in this order: N < 2 gives 0; m_1 = 0 gives +inf. m_1 is
used as is (not |m_1|), exactly as the formula reads. Lower is better.

Reports (written atomically into the output directory):
  * `vde_<metric>.json`: {video name: VDE} for the videos scored on that metric;
  * `summary.json`: settings, per-metric mean / count / scorer description, per-chunk scores, the
    skipped videos with their reasons, and under "vbench" the raw VBench metrics of the same
    scorers over each whole video (VBench's own numbers, higher is better) and their means.
+inf is written as the string "inf" (JSON has no infinity); `read_metric_json` turns it back.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

WEIGHTINGS = ("linear", "log")
VBENCH_NAMES = {"subject": "subject_consistency", "background": "background_consistency",
                "motion": "motion_smoothness", "aesthetic": "aesthetic_quality",
                "clarity": "imaging_quality"}   # our metric -> VBench dimension
INF_JSON = "inf"


def trimmed_length(num_frames: int, n_chunks: int) -> int:
  """Largest multiple of `n_chunks` that is <= num_frames."""
  if n_chunks < 1:
    raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
  return num_frames - num_frames % n_chunks


def split_chunks(frames: np.ndarray, n_chunks: int) -> list[np.ndarray]:
  """[T, ...] -> n_chunks arrays [T' / n_chunks, ...]; the last T % n_chunks frames are trimmed."""
  t = trimmed_length(frames.shape[0], n_chunks)
  if t == 0:
    raise ValueError(f"{frames.shape[0]} frames cannot be split into {n_chunks} chunks")
  size = t // n_chunks
  return [frames[i * size:(i + 1) * size] for i in range(n_chunks)]  # each [T'/N, ...]


def chunk_weights(n_chunks: int, weighting: str = "linear") -> np.ndarray:
  """Weights w_2..w_N, shape [N - 1] (float64)."""
  i = np.arange(2, n_chunks + 1, dtype=np.float64)
  if weighting == "linear":
    return n_chunks - i + 1
  if weighting == "log":
    return np.log(n_chunks - i + 1)
  raise ValueError(f"unknown weighting {weighting!r} (one of {WEIGHTINGS})")


def vde(chunk_scores: Sequence[float], weighting: str = "linear") -> float:
  """VDE of the per-chunk metric values m_1..m_N."""
  m = np.asarray(chunk_scores, np.float64)
  n = m.shape[0]
  if n < 2:
    return 0.0
  w = chunk_weights(n, weighting)                  # validates `weighting` first
  if m[0] == 0:
    return math.inf
  return float(np.sum(w * np.abs(m[1:] - m[0]) / m[0]))


def video_vde(frames: np.ndarray, score_fn: Callable[[np.ndarray], float], n_chunks: int = 10,
              weighting: str = "linear") -> tuple[float, list[float]]:
  """Splits frames [T, H, W, 3] into chunks, scores each, returns (VDE, [m_1..m_N])."""
  scores = [float(score_fn(c)) for c in split_chunks(frames, n_chunks)]
  return vde(scores, weighting), scores


def mean_vde(values: Sequence[float]) -> float:
  """Mean over videos (inf if any video is inf; nan for no videos)."""
  if len(values) == 0:
    return math.nan
  return float(np.mean(np.asarray(values, np.float64)))


def to_json(x: float) -> Union[float, str, None]:
  """float -> JSON value: inf -> "inf", nan -> null."""
  if math.isinf(x):
    return INF_JSON if x > 0 else "-" + INF_JSON
  if math.isnan(x):
    return None
  return float(x)


def from_json(v) -> float:
  if v is None:
    return math.nan
  return float(v)  # float("inf") / float("-inf") parse the strings


def write_text_atomic(path: Path, text: str) -> Path:
  """Writes `text` to `path` through a temporary file and a rename (never a partial file)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_json_atomic(path: Path, obj) -> Path:
  return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_metric_json(out_dir: os.PathLike, metric: str, per_video: Mapping[str, float]) -> Path:
  """Writes `vde_<metric>.json` = {video: VDE}. Returns its path."""
  obj = {name: to_json(v) for name, v in per_video.items()}
  return write_json_atomic(Path(out_dir) / f"vde_{metric}.json", obj)


def read_metric_json(path: os.PathLike) -> dict[str, float]:
  with open(path) as f:
    return {k: from_json(v) for k, v in json.load(f).items()}


def write_summary(out_dir: os.PathLike, *, n_chunks: int, weighting: str,
                  per_metric: Mapping[str, Mapping[str, float]],
                  chunk_scores: Mapping[str, Mapping[str, Sequence[float]]],
                  descriptions: Mapping[str, str], paper_metric: Mapping[str, bool],
                  skipped: Sequence[Mapping[str, str]],
                  vbench: Optional[Mapping[str, Mapping[str, float]]] = None) -> Path:
  """Writes `summary.json` (see the module docstring). Returns its path.

  `vbench` = {metric: {video: raw VBench value over the whole video}}; written under "vbench"
  by VBench's dimension name (`VBENCH_NAMES`) with its mean over videos.
  """
  metrics = {}
  for name, vals in per_metric.items():
    values = list(vals.values())
    finite = [v for v in values if math.isfinite(v)]
    metrics[name] = {
        "mean": to_json(mean_vde(values)),
        "mean_finite": to_json(mean_vde(finite)),
        "num_videos": len(values),
        "num_infinite": sum(1 for v in values if math.isinf(v)),
        "scorer": descriptions.get(name, ""),
        "paper_metric": bool(paper_metric.get(name, False)),
        "chunk_scores": {v: [to_json(s) for s in cs]
                         for v, cs in chunk_scores.get(name, {}).items()},
    }
  obj = {"n_chunks": n_chunks, "weighting": weighting, "metrics": metrics, "skipped": list(skipped)}
  if vbench is not None:
    obj["vbench"] = {
        VBENCH_NAMES.get(name, name): {
            "metric": name,
            "mean": to_json(mean_vde(list(vals.values()))),
            "num_videos": len(vals),
            "paper_metric": bool(paper_metric.get(name, False)),
            "per_video": {v: to_json(x) for v, x in vals.items()},
        } for name, vals in vbench.items()}
  return write_json_atomic(Path(out_dir) / "summary.json", obj)
