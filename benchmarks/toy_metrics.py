"""Pixel statistics of the toy ablation (`toy_ablation.py`): drift and return consistency. NumPy only.

  * sharpness of a clip = mean over frames of the variance of the luma Laplacian
    (`evaluate.scorers.laplacian_variance`); `vde_sharpness` = VDE (DESIGN 1, `evaluate.vde`, N = 10
    equal chunks of the video, linear weights) of it;
  * colour histogram of a clip = per-channel 16-bin histograms (normalised); the distance of two
    histograms is the total variation 0.5 * L1, averaged over channels (in [0, 1]).
    `colour_drift` = sum_{i=2..N} w_i * d(h_i, h_1) with the VDE weights w_i = N - i + 1: the VDE
    form for a statistic whose chunk-1 value is a distribution (|m_i - m_1| / m_1 has no meaning there);
  * `return_distance`: for every generated chunk whose scene returns after a cut to another scene, the
    histogram distance of its frames to those of the scene's first chunk; averaged (lower = the
    returning scene looks like its first appearance);
  * `gt_distance_first` / `gt_distance_last`: the histogram distance of each generated chunk to the
    ground-truth chunk of the same caption (the toy renderer's), averaged over the first / last 10%
    of the video: prompt fidelity at the start and at the end (its growth is drift);
  * `identity_return`: `toy_identity.returning_identity_error` (a returning scene's position-free
    identity descriptor against its first chunk in the same video: memory, on the identity toy);
  * `correct`: share of chunks whose background, sprite colour and shape match the caption
    (`toy_fidelity`, the quickstart's check): sample quality.
"""

from __future__ import annotations

import numpy as np

from blockvid_jax.data import toy_fidelity, toy_grammar, toy_identity
from blockvid_jax.evaluate import vde
from blockvid_jax.evaluate.scorers import laplacian_variance

BINS = 16
N_CHUNKS = 10


def sharpness(frames: np.ndarray) -> float:
  """uint8 [T, H, W, 3] -> mean Laplacian variance."""
  return float(np.mean(laplacian_variance(frames)))


def colour_histogram(frames: np.ndarray) -> np.ndarray:
  """uint8 [T, H, W, 3] -> [3, BINS] per-channel normalised histograms."""
  flat = frames.reshape(-1, 3).astype(np.int64)                            # [T*H*W, 3]
  hist = np.stack([np.bincount(flat[:, c] * BINS // 256, minlength=BINS) for c in range(3)])
  return hist / max(flat.shape[0], 1)                                       # [3, BINS]


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Total variation between per-channel histograms [3, BINS], averaged over channels."""
  return float(np.mean(0.5 * np.abs(a - b).sum(axis=-1)))


def colour_drift(frames: np.ndarray, n_chunks: int = N_CHUNKS) -> float:
  chunks = vde.split_chunks(frames, n_chunks)
  hists = [colour_histogram(c) for c in chunks]
  d = np.asarray([histogram_distance(h, hists[0]) for h in hists[1:]])     # [N-1]
  return float(np.sum(vde.chunk_weights(n_chunks) * d))


def return_distance(frames: np.ndarray, scene_ids: np.ndarray, frames_per_chunk: int) -> float:
  """Mean histogram distance of returning chunks to their scene's first chunk (nan if none)."""
  first: dict[int, int] = {}
  left: set[int] = set()           # scenes the video has cut away from at least once
  dists = []
  for c, s in enumerate(int(x) for x in scene_ids):
    if c and int(scene_ids[c - 1]) != s:
      left.add(int(scene_ids[c - 1]))
    clip = frames[c * frames_per_chunk:(c + 1) * frames_per_chunk]
    if s not in first:
      first[s] = c
    elif s in left:
      f = first[s]
      ref = frames[f * frames_per_chunk:(f + 1) * frames_per_chunk]
      dists.append(histogram_distance(colour_histogram(clip), colour_histogram(ref)))
  return float(np.mean(dists)) if dists else float("nan")


def gt_distances(frames: np.ndarray, reference: np.ndarray, frames_per_chunk: int) -> np.ndarray:
  """Per generated chunk, the histogram distance to the reference chunk: [C]."""
  c = frames.shape[0] // frames_per_chunk
  sl = lambda x, i: x[i * frames_per_chunk:(i + 1) * frames_per_chunk]
  return np.asarray([histogram_distance(colour_histogram(sl(frames, i)),
                                        colour_histogram(sl(reference, i))) for i in range(c)])


def video_metrics(frames: np.ndarray, scene_ids: np.ndarray, frames_per_chunk: int,
                  reference: np.ndarray, captions=None, sprite_size: int = 0,
                  objects=None) -> dict:
  """All statistics of one video uint8 [T, H, W, 3] with scene ids per generated chunk and the
  ground-truth video `reference` (same shape); with the chunk `captions`, also `correct` (share of
  chunks whose background, sprite colour and shape `toy_fidelity` recognises; the build's
  `sprite_size` and `objects`)."""
  v, per_chunk = vde.video_vde(frames, sharpness, N_CHUNKS)
  gt = gt_distances(frames, reference, frames_per_chunk)                   # [C]
  k = max(len(gt) // N_CHUNKS, 1)
  out = {"vde_sharpness": v, "colour_drift": colour_drift(frames),
         "return_distance": return_distance(frames, scene_ids, frames_per_chunk),
         "identity_return": toy_identity.returning_identity_error(
             frames, scene_ids, frames_per_chunk)["mean"],
         "gt_distance_first": float(gt[:k].mean()), "gt_distance_last": float(gt[-k:].mean()),
         "sharpness_chunk1": per_chunk[0], "sharpness_last": per_chunk[-1]}
  if captions is not None:
    scores = toy_fidelity.video_scores(frames, [str(c) for c in captions], frames_per_chunk,
                                       sprite_size, objects or toy_grammar.objects())
    out["correct"] = scores["summary"]["correct"]
  return out
