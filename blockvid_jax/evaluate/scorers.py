"""The per-chunk metrics of LV-Bench VDE behind one interface, and their registry.

A scorer maps the frames of one chunk, uint8 [T, H, W, 3], to a float (`score`). Registered:

| name       | metric                                                   | paper's?               |
|------------|----------------------------------------------------------|------------------------|
| subject    | DINO ViT-B/16 frame consistency                          | yes                    |
| background | CLIP ViT-B/32 frame consistency                          | yes                    |
| aesthetic  | CLIP ViT-L/14 + LAION linear head / 10, mean over frames | yes                    |
| clarity    | MUSIQ-SPAQ (`convert_musiq`) when its weights are given, | yes                    |
|            | else variance of the Laplacian (`laplacian_variance`)    | NO (stand-in)          |
| motion     | smoothness, AMT-S midpoints (`convert_amt`) when given,  | yes                    |
|            | else linear-blend interpolation (`linear_blend`)         | NO (stand-in)          |

A scorer with `frame_scores(frames) -> [T]` is a mean over frames (aesthetic, clarity): the
evaluation then scores every frame once and averages per chunk and over the whole video.

Consistency (VBench's subject/background formula) on L2-normalised features f_1..f_T of a chunk:
  mean over j = 2..T of 0.5 * [max(0, cos(f_{j-1}, f_j)) + max(0, cos(f_1, f_j))].
Motion smoothness (VBench's formula): the even frames (0, 2, 4, ...) are kept, a frame is
interpolated between each consecutive pair, and compared with the odd frame it replaces:
  score = (255 - mean |I_odd - I_interp|) / 255.

Clarity and motion switch to the paper's models when `musiq_spaq_ckpt-358bb6af.pth` / `amt-s.pth`
(or .safetensors / .npz) are in `--weights_dir`; without them the stand-ins run and say so.

Plug-in point (other metrics): a module passed with `--plugins my.module` is imported
before the run and may call `register("clarity", factory, weight_files=(...), replace=True)`; a
factory receives `ScorerOptions` and returns any object with `score`, `description`,
`paper_metric` and `min_frames_per_chunk`. `ClarityScorer(quality_fn)` and
`MotionScorer(interpolate_fn)` wrap a per-frame quality model or a frame interpolator.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from blockvid_jax.evaluate import (convert_amt, convert_musiq, convert_vit, features, preprocess,
                                   weights)
from blockvid_jax.errors import ConvertError, WeightsError


class Scorer(Protocol):
  description: str            # what is measured, said plainly (goes into summary.json)
  paper_metric: bool          # True only for the exact metric of the BlockVid paper
  min_frames_per_chunk: int   # chunks shorter than this cannot be scored

  def score(self, frames: np.ndarray) -> float:  # uint8 [T, H, W, 3] -> float
    ...


@dataclasses.dataclass(frozen=True)
class ScorerOptions:
  """What a scorer factory may use."""
  weights_dir: Optional[Path] = None
  head_dim: int = convert_vit.HEAD_DIM   # public DINO / CLIP ViTs: 64
  batch_size: int = 8                    # frames per ViT call
  dino_short_side: int = 224             # DINO input: shorter side (no crop)

  def weight_path(self, filename: str) -> Path:
    path = weights.find(self.weights_dir, filename)
    if path is None:
      where = self.weights_dir if self.weights_dir is not None else "(no --weights_dir given)"
      raise WeightsError(f"needs {weights.describe(filename)} in {where}")
    return path


@dataclasses.dataclass(frozen=True)
class Entry:
  factory: Callable[[ScorerOptions], Scorer]
  weight_files: tuple[str, ...]


REGISTRY: dict[str, Entry] = {}


def register(name: str, factory: Callable[[ScorerOptions], Scorer],
             weight_files: tuple[str, ...] = (), replace: bool = False) -> None:
  """Adds (or, with replace=True, swaps) the scorer called `name`."""
  if name in REGISTRY and not replace:
    raise ValueError(f"scorer {name!r} is already registered (pass replace=True to swap it)")
  REGISTRY[name] = Entry(factory, tuple(weight_files))


def load_plugin(module: str) -> None:
  """Imports a plug-in module (it registers its scorers when imported)."""
  importlib.import_module(module)


def missing_weights(name: str, weights_dir: Optional[Path]) -> list[str]:
  """Weight files of scorer `name` not found in `weights_dir`."""
  return [f for f in REGISTRY[name].weight_files if weights.find(weights_dir, f) is None]


def build(name: str, options: ScorerOptions) -> Scorer:
  if name not in REGISTRY:
    raise KeyError(f"unknown metric {name!r} (registered: {', '.join(REGISTRY)})")
  return REGISTRY[name].factory(options)


# ----------------------------------------------------------------------------- formulas


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """[T, D] -> rows of unit norm (PyTorch F.normalize semantics)."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def consistency(feats: np.ndarray) -> float:
  """VBench frame consistency of features [T, D] (T >= 2)."""
  if feats.shape[0] < 2:
    raise ValueError(f"consistency needs >= 2 frames, got {feats.shape[0]}")
  f = l2_normalize(feats.astype(np.float64))                  # [T, D]
  prev = np.sum(f[1:] * f[:-1], axis=-1)                      # [T-1] cos(f_{j-1}, f_j)
  first = f[1:] @ f[0]                                        # [T-1] cos(f_1, f_j)
  return float(np.mean(0.5 * (np.maximum(prev, 0.0) + np.maximum(first, 0.0))))


def laplacian_variance(frames: np.ndarray) -> np.ndarray:
  """uint8 [T, H, W, 3] -> [T] variance of the 4-neighbour Laplacian of the luma (sharpness)."""
  y = frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])   # [T, H, W]
  lap = (y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:]
         - 4.0 * y[:, 1:-1, 1:-1])                                  # [T, H-2, W-2]
  return lap.reshape(lap.shape[0], -1).var(axis=-1)


def linear_blend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Midpoint frames by averaging: uint8 [K, H, W, 3] x 2 -> uint8 [K, H, W, 3]."""
  mid = (a.astype(np.float32) + b.astype(np.float32)) / 2.0
  return np.clip(np.round(mid), 0, 255).astype(np.uint8)


def motion_smoothness(frames: np.ndarray,
                      interpolate: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
  """(255 - mean |odd - interpolate(even_k, even_k+1)|) / 255 for uint8 frames [T >= 3, H, W, 3]."""
  if frames.shape[0] < 3:
    raise ValueError(f"motion smoothness needs >= 3 frames, got {frames.shape[0]}")
  even = frames[0::2]                                         # [E, H, W, 3]
  odd = frames[1::2]                                          # [>= E-1, H, W, 3]
  mid = interpolate(even[:-1], even[1:])                      # [E-1, H, W, 3]
  diff = np.abs(odd[:mid.shape[0]].astype(np.float64) - mid.astype(np.float64))
  return float((255.0 - diff.mean()) / 255.0)


# ----------------------------------------------------------------------------- scorers


class ConsistencyScorer:
  """Frame consistency of ViT class-token features (subject: DINO, background: CLIP)."""
  min_frames_per_chunk = 2

  def __init__(self, extractor: features.ViTFeatures, prep: Callable[[np.ndarray], np.ndarray],
               description: str, paper_metric: bool = True):
    self.extractor, self.prep = extractor, prep
    self.description, self.paper_metric = description, paper_metric

  def score(self, frames: np.ndarray) -> float:
    return consistency(self.extractor(self.prep(frames)))     # features [T, O]


class AestheticScorer:
  """Mean over frames of LAION-head(L2-normalised CLIP features) / 10."""
  min_frames_per_chunk = 1
  paper_metric = True
  description = "aesthetic: CLIP ViT-L/14 + LAION aesthetic linear head / 10, mean over frames"

  def __init__(self, extractor: features.ViTFeatures, kernel: np.ndarray, bias: float):
    if kernel.shape[0] != extractor.spec.features:
      raise ConvertError(
          f"aesthetic head expects {kernel.shape[0]} features, "
          f"CLIP gives {extractor.spec.features}")
    self.extractor, self.kernel, self.bias = extractor, kernel.astype(np.float64), float(bias)

  def frame_scores(self, frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T] LAION-head scores / 10."""
    size = self.extractor.spec.image_size
    f = l2_normalize(self.extractor(preprocess.clip_preprocess(frames, size)).astype(np.float64))
    return (f @ self.kernel + self.bias) / 10.0

  def score(self, frames: np.ndarray) -> float:
    return float(np.mean(self.frame_scores(frames)))


class ClarityScorer:
  """Mean over frames of a per-frame quality model `quality_fn(uint8 [T,H,W,3]) -> [T]`.

  `vbench_scale` turns the whole-video mean into VBench's raw metric (imaging quality = MUSIQ /
  100).
  """
  min_frames_per_chunk = 1

  def __init__(self, quality_fn: Callable[[np.ndarray], np.ndarray], description: str,
               paper_metric: bool = False, vbench_scale: float = 1.0):
    self.quality_fn, self.description, self.paper_metric = quality_fn, description, paper_metric
    self.vbench_scale = vbench_scale

  def frame_scores(self, frames: np.ndarray) -> np.ndarray:
    return np.asarray(self.quality_fn(frames), np.float64)     # [T]

  def score(self, frames: np.ndarray) -> float:
    return float(np.mean(self.frame_scores(frames)))


class MotionScorer:
  """Motion smoothness with a frame interpolator `interpolate(a, b) -> midpoints` (uint8)."""
  min_frames_per_chunk = 3

  def __init__(self, interpolate: Callable[[np.ndarray, np.ndarray], np.ndarray],
               description: str, paper_metric: bool = False):
    self.interpolate, self.description, self.paper_metric = interpolate, description, paper_metric

  def score(self, frames: np.ndarray) -> float:
    return motion_smoothness(frames, self.interpolate)


# ----------------------------------------------------------------------------- registry

DINO_FILE = "dino_vitbase16_pretrain.pth"
CLIP_B32_FILE = "ViT-B-32.pt"
CLIP_L14_FILE = "ViT-L-14.pt"
AESTHETIC_FILE = "sa_0_4_vit_l_14_linear.pth"


def _subject(o: ScorerOptions) -> Scorer:
  ext = features.load_dino(o.weight_path(DINO_FILE), o.head_dim, o.batch_size)
  return ConsistencyScorer(
      ext, lambda fr: preprocess.dino_preprocess(fr, o.dino_short_side),
      "subject: DINO ViT-B/16 class-token frame consistency (shorter side 224, no crop)")


def _background(o: ScorerOptions) -> Scorer:
  ext = features.load_clip(o.weight_path(CLIP_B32_FILE), o.head_dim, o.batch_size)
  size = ext.spec.image_size
  return ConsistencyScorer(
      ext, lambda fr: preprocess.clip_preprocess(fr, size),
      "background: CLIP ViT-B/32 image-embedding frame consistency (224 centre crop)")


def _aesthetic(o: ScorerOptions) -> Scorer:
  ext = features.load_clip(o.weight_path(CLIP_L14_FILE), o.head_dim, o.batch_size)
  kernel, bias = convert_vit.convert_linear_head(weights.load_state_dict(
      o.weight_path(AESTHETIC_FILE)))
  return AestheticScorer(ext, kernel, bias)


def _clarity(o: ScorerOptions) -> Scorer:
  path = weights.find(o.weights_dir, convert_musiq.FILENAME)
  if path is not None:
    return ClarityScorer(convert_musiq.load_musiq(path, o.head_dim, o.batch_size),
                         "clarity: MUSIQ-SPAQ score, mean over frames (VBench imaging-quality "
                         "input: longer side 512 when larger, bilinear, no antialias)",
                         paper_metric=True, vbench_scale=0.01)
  return ClarityScorer(laplacian_variance, "clarity: variance of the Laplacian of the luma, mean "
                       "over frames -- NOT the paper's MUSIQ-SPAQ (give "
                       f"{weights.describe(convert_musiq.FILENAME)} in --weights_dir)")


def _motion(o: ScorerOptions) -> Scorer:
  path = weights.find(o.weights_dir, convert_amt.FILENAME)
  if path is not None:
    return MotionScorer(convert_amt.load_amt(path, max(1, min(o.batch_size, 4))),
                        "motion: smoothness with AMT-S midpoints of the even frames (embt 0.5, "
                        "1 iteration, padded to a multiple of 16)", paper_metric=True)
  return MotionScorer(linear_blend, "motion: smoothness with linear-blend interpolation -- NOT the "
                      f"paper's AMT-S interpolator (give {weights.describe(convert_amt.FILENAME)} "
                      "in --weights_dir)")


register("subject", _subject, (DINO_FILE,))
register("background", _background, (CLIP_B32_FILE,))
register("aesthetic", _aesthetic, (CLIP_L14_FILE, AESTHETIC_FILE))
register("clarity", _clarity)
register("motion", _motion)
