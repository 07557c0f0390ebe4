"""Feature extractors of the VDE scorers: a converted `ViT` applied in fixed-size jitted batches.

Frames are fed in batches of `batch_size` (the last batch zero-padded), so a video compiles once
per preprocessed image size and the device memory is bounded whatever the chunk length. Weights and
activations are float32.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate import convert_vit, weights
from blockvid_jax.evaluate.vit import ViT, ViTSpec
from blockvid_jax.errors import ConvertError


def check_tree(want, params) -> None:
  """Raises ConvertError unless `params` has exactly the tree and shapes of `want`."""
  leaves = jax.tree_util.tree_leaves_with_path
  want = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in leaves(want)}
  got = {jax.tree_util.keystr(p): tuple(np.shape(a)) for p, a in leaves(params)}
  for key in sorted(want.keys() | got.keys()):
    if want.get(key) != got.get(key):
      raise ConvertError(
          f"converted parameter {key}: want shape {want.get(key)}, got {got.get(key)}")


def check_params(spec: ViTSpec, params) -> None:
  """Raises ConvertError unless `params` has exactly the tree and shapes `ViT(spec)` creates."""
  x = jnp.zeros((1, spec.image_size, spec.image_size, 3), jnp.float32)
  check_tree(jax.eval_shape(ViT(spec).init, jax.random.key(0), x)["params"], params)


def in_batches(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over fixed-size batches of x [T, ...] (the last zero-padded): one compilation per shape."""
  t = x.shape[0]
  pad = (-t) % batch_size
  x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])   # [T+pad, ...]
  out = [np.asarray(fn(x[i:i + batch_size])) for i in range(0, t + pad, batch_size)]
  return np.concatenate(out)[:t]


def jit_apply(model):
  """jax.jit of `model.apply({"params": p}, *inputs)` with matmuls in full float32 ("highest").

  On GPUs the default precision may use TF32, whose ~1e-3 relative error is the size of the drifts
  VDE measures.
  """
  def apply(params, *inputs):
    with jax.default_matmul_precision("highest"):
      return model.apply({"params": params}, *inputs)

  return jax.jit(apply)


@functools.lru_cache(maxsize=None)
def _jitted_apply(spec: ViTSpec):
  """One jitted forward per spec (shared by extractors of the same architecture)."""
  return jit_apply(ViT(spec))


class ViTFeatures:
  """images float32 [T, H, W, 3] (already normalised) -> features float32 [T, O] (NumPy)."""

  def __init__(self, spec: ViTSpec, params, batch_size: int = 8):
    check_params(spec, params)
    self.spec = spec
    self.batch_size = batch_size
    self.params = jax.device_put(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                        params))
    self._apply = _jitted_apply(spec)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return in_batches(lambda x: self._apply(self.params, x), images, self.batch_size)  # [T, O]


def load_dino(path: os.PathLike, head_dim: int = convert_vit.HEAD_DIM,
              batch_size: int = 8) -> ViTFeatures:
  """DINO ViT from a weights file in the original key layout."""
  spec, params = convert_vit.convert_dino(weights.load_state_dict(path), head_dim)
  return ViTFeatures(spec, params, batch_size)


def load_clip(path: os.PathLike, head_dim: int = convert_vit.HEAD_DIM,
              batch_size: int = 8) -> ViTFeatures:
  """OpenAI CLIP image tower from a weights file in the original key layout."""
  spec, params = convert_vit.convert_clip(weights.load_state_dict(path), head_dim)
  return ViTFeatures(spec, params, batch_size)
