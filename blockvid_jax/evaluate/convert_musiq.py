"""pyiqa MUSIQ state dict (as NumPy) -> `MusiqSpec` + Flax params, and the per-frame quality model.

Keys of `musiq_spaq_ckpt-358bb6af.pth` (a plain state dict of pyiqa's `MUSIQ`; a `module.` prefix
is stripped):
  conv_root.weight [64, 3, 7, 7]; gn_root.{weight, bias};
  block1.{conv1, conv2, conv3, conv_proj}.weight; block1.{gn1, gn2, gn3, gn_proj}.{weight, bias};
  embedding.{weight [D, 16384], bias}; transformer_encoder.posembed_input.position_emb [1, G*G, D];
  transformer_encoder.scaleembed_input.scale_emb [S, D]; transformer_encoder.cls [1, 1, D];
  transformer_encoder.transformer.encoderblock_i.{norm1, norm2}.{weight, bias};
  ...encoderblock_i.attention.{query, key, value, out}.{weight, bias};
  ...encoderblock_i.mlp.{fc1, fc2}.{weight, bias}; transformer_encoder.encoder_norm.{weight, bias};
  head.{weight [C, D], bias} (C = 1), or head.0.* (C > 1, followed by a softmax).
Sizes come from the shapes; the head count is width / head_dim (64 for the public models) and the
longer-side lengths of the multi-scale input are not stored (public: 224, 384).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate import features, weights
from blockvid_jax.evaluate.convert_vit import (HEAD_DIM, StateDict, conv_kernel, count_blocks,
                                               get_array, linear_params, norm_params,
                                               num_heads_of)
from blockvid_jax.evaluate.musiq import Musiq, MusiqSpec, multiscale_tokens, vbench_frames
from blockvid_jax.errors import ConvertError

WHAT = "pyiqa MUSIQ"
FILENAME = "musiq_spaq_ckpt-358bb6af.pth"


def convert_musiq(sd: StateDict, head_dim: int = HEAD_DIM,
                  longer_side_lengths: Sequence[int] = (224, 384)) -> tuple[MusiqSpec, dict]:
  """MUSIQ state dict -> (spec, Flax params)."""
  sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
  emb = get_array(sd, "embedding.weight", WHAT)                           # [D, (P/4)^2 * 256]
  hidden = emb.shape[0]
  patch = 4 * int(round(np.sqrt(emb.shape[1] / 256)))
  if 256 * (patch // 4) ** 2 != emb.shape[1]:
    raise ConvertError(f"{WHAT}: embedding input {emb.shape[1]} is not 256 * (patch / 4)^2")
  enc = "transformer_encoder."
  layers = count_blocks(sd, r"transformer_encoder\.transformer\.encoderblock_(\d+)\.")
  if layers == 0:
    raise ConvertError(f"not a {WHAT} checkpoint: no encoderblock_N.* keys")
  pos = get_array(sd, enc + "posembed_input.position_emb", WHAT).reshape(-1, hidden)   # [G*G, D]
  grid = int(round(np.sqrt(pos.shape[0])))
  sce = get_array(sd, enc + "scaleembed_input.scale_emb", WHAT)           # [S, D]
  head = "head" if "head.weight" in sd else "head.0"
  num_class = get_array(sd, head + ".weight", WHAT).shape[0]
  longer = tuple(sorted(longer_side_lengths))
  if sce.shape[0] not in (len(longer), len(longer) + 1):
    raise ConvertError(f"{WHAT}: {sce.shape[0]} scale embeddings for longer sides {longer}")
  mlp_dim = get_array(sd, enc + "transformer.encoderblock_0.mlp.fc1.weight", WHAT).shape[0]
  spec = MusiqSpec(hidden=hidden, mlp_dim=mlp_dim,
                   num_heads=num_heads_of(hidden, head_dim), num_layers=layers, num_scales=sce.shape[0],
                   grid=grid, num_class=num_class, patch=patch, longer_side_lengths=longer,
                   original_resolution=sce.shape[0] == len(longer) + 1)

  def conv(key):
    return {"kernel": conv_kernel(get_array(sd, key + ".weight", WHAT))}

  params = {
      "conv_root": conv("conv_root"), "gn_root": norm_params(sd, "gn_root", WHAT),
      "block1": {**{n: conv("block1." + n) for n in ("conv1", "conv2", "conv3", "conv_proj")},
                 **{n: norm_params(sd, "block1." + n, WHAT) for n in ("gn1", "gn2", "gn3", "gn_proj")}},
      "embedding": linear_params(sd, "embedding", WHAT),
      "position_emb": pos, "scale_emb": sce,
      "cls": get_array(sd, enc + "cls", WHAT).reshape(hidden),
      "encoder_norm": norm_params(sd, enc + "encoder_norm", WHAT),
      "head": linear_params(sd, head, WHAT),
  }
  for i in range(layers):
    p = f"{enc}transformer.encoderblock_{i}."
    params[f"encoderblock_{i}"] = {
        "norm1": norm_params(sd, p + "norm1", WHAT), "norm2": norm_params(sd, p + "norm2", WHAT),
        **{n: linear_params(sd, p + "attention." + n, WHAT) for n in ("query", "key", "value", "out")},
        "fc1": linear_params(sd, p + "mlp.fc1", WHAT), "fc2": linear_params(sd, p + "mlp.fc2", WHAT),
    }
  return spec, params


class MusiqQuality:
  """Per-frame MUSIQ scores with VBench's imaging-quality input: uint8 [T, H, W, 3] -> [T]."""

  def __init__(self, spec: MusiqSpec, params, batch_size: int = 8,
               max_side: int = 512):
    tokens = multiscale_tokens(np.zeros((1, 2 * spec.patch, 2 * spec.patch, 3), np.float32), spec)
    want = jax.eval_shape(Musiq(spec).init, jax.random.key(0), *tokens)["params"]
    features.check_tree(want, params)
    self.spec, self.batch_size, self.max_side = spec, batch_size, max_side
    self.params = jax.device_put(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                        params))
    self._apply = _jitted(spec)

  def scores(self, images: np.ndarray) -> np.ndarray:
    """float32 [T, H, W, 3] in [0, 1] -> [T] MUSIQ scores (pyiqa's forward in eval mode)."""
    _, pos, scale, mask = multiscale_tokens(images[:1], self.spec)

    def run(x):  # x [B, H, W, 3]
      return self._apply(self.params, multiscale_tokens(x, self.spec)[0], pos, scale, mask)

    return features.in_batches(run, images, self.batch_size).astype(np.float64)

  def __call__(self, frames: np.ndarray) -> np.ndarray:
    return self.scores(vbench_frames(frames, self.max_side))         # [T]


@functools.lru_cache(maxsize=None)
def _jitted(spec: MusiqSpec):
  return features.jit_apply(Musiq(spec))


def load_musiq(path: os.PathLike, head_dim: int = HEAD_DIM, batch_size: int = 8) -> MusiqQuality:
  """MUSIQ from a weights file in pyiqa's key layout."""
  spec, params = convert_musiq(weights.load_state_dict(path), head_dim)
  return MusiqQuality(spec, params, batch_size)
