"""AMT-S checkpoint (`amt-s.pth`) -> Flax params of `amt.AmtS`, and VBench's midpoint interpolator.

`amt-s.pth` holds `{"state_dict": {...}}` (VBench loads `ckpt["state_dict"]`); the reader flattens
it to `state_dict.<key>`, and a `module.` prefix is stripped too. Every module of `AmtS` is named by
its PyTorch key prefix, so the map is per key:
  Conv2d `P.weight` [O, I, kh, kw] -> `P/kernel` [kh, kw, I, O]; `P.bias` -> `P/bias`;
  ConvTranspose2d (`decoderN.convblock.2`) `P.weight` [I, O, kh, kw] -> `P/kernel` spatially flipped
  [kh, kw, I, O] (a transposed convolution is the flipped kernel over the 2x-dilated input);
  PReLU `P.weight` [C] (no bias) -> the parameter `P`.

VBench's interpolation (`motion_smoothness.py`): frames / 255 in float32, replicate-padded to a
multiple of 16 (InputPadder: pad = (16 - n % 16) % 16, half (rounded down) before), AMT-S at
embt 0.5 with scale 1, unpadded, then uint8 by `(x * 255).clip(0, 255).astype(uint8)` (truncation).
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate import features, weights
from blockvid_jax.evaluate.amt import CONV_TRANSPOSE, AmtS, AmtSpec
from blockvid_jax.errors import ConvertError

FILENAME = "amt-s.pth"
PAD_MULTIPLE = 16


def strip_prefixes(sd: Mapping[str, np.ndarray]) -> dict:
  """The model's entries: under `state_dict.` when present (other entries, e.g. optimizer state,
  are dropped), without `state_dict.` / `module.` prefixes."""
  if any(k.startswith("state_dict.") for k in sd):
    sd = {k: v for k, v in sd.items() if k.startswith("state_dict.")}
  out = {}
  for k, v in sd.items():
    for prefix in ("state_dict.", "module."):
      if k.startswith(prefix):
        k = k[len(prefix):]
    out[k] = np.asarray(v, np.float32)
  return out


def convert_amt(sd: Mapping[str, np.ndarray]) -> dict:
  """AMT-S state dict -> Flax params (the tree is checked against `AmtS` by `AmtInterpolator`)."""
  sd = strip_prefixes(sd)
  params = {}
  for key, w in sd.items():
    prefix, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    if leaf == "bias":
      params.setdefault(prefix, {})["bias"] = w
    elif leaf != "weight":
      continue
    elif prefix in CONV_TRANSPOSE:
      params.setdefault(prefix, {})["kernel"] = np.transpose(w, (2, 3, 0, 1))[::-1, ::-1].copy()
    elif w.ndim == 4:
      params.setdefault(prefix, {})["kernel"] = np.transpose(w, (2, 3, 1, 0))
    elif w.ndim == 1 and prefix + ".bias" not in sd:
      params[prefix] = w                                               # PReLU slopes [C]
    else:
      raise ConvertError(f"AMT-S: unexpected parameter {key} of shape {w.shape}")
  if "feat_encoder.conv1" not in params:
    raise ConvertError("not an AMT-S checkpoint: key 'feat_encoder.conv1.weight' is missing")
  return params


def pads(size: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
  """InputPadder's (before, after) padding of one axis."""
  total = (multiple - size % multiple) % multiple
  return total // 2, total - total // 2


class AmtInterpolator:
  """VBench's midpoints of frame pairs: uint8 [K, H, W, 3] x 2 -> uint8 [K, H, W, 3]."""

  def __init__(self, params, spec: AmtSpec = AmtSpec(), batch_size: int = 2):
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    features.check_tree(jax.eval_shape(AmtS(spec).init, jax.random.key(0), x, x)["params"], params)
    self.spec, self.batch_size = spec, batch_size
    self.params = jax.device_put(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                        params))
    self._apply = _jitted(spec)

  def midpoints(self, img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    """float32 [K, H, W, 3] in [0, 1] (H, W multiples of 16) -> model output [K, H, W, 3]."""
    pair = np.concatenate([img0, img1], axis=-1)                       # [K, H, W, 6]
    return features.in_batches(lambda p: self._apply(self.params, p[..., :3], p[..., 3:]), pair,
                               self.batch_size)

  def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, h, w, _ = a.shape
    ph, pw = pads(h), pads(w)
    x0, x1 = ((np.pad(f, ((0, 0), ph, pw, (0, 0)), mode="edge").astype(np.float32)
               / np.float32(255.0)) for f in (a, b))                  # [K, H', W', 3]
    mid = self.midpoints(x0, x1)[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w]  # [K, H, W, 3]
    return np.clip(mid * np.float32(255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _jitted(spec: AmtSpec):
  return features.jit_apply(AmtS(spec))


def load_amt(path: os.PathLike, batch_size: int = 2) -> AmtInterpolator:
  """AMT-S from a weights file in the original key layout."""
  return AmtInterpolator(convert_amt(weights.load_state_dict(path)), batch_size=batch_size)
