"""PyTorch state dicts (as NumPy) -> `ViTSpec` + Flax params of `blockvid_jax.evaluate.vit.ViT`.

Sizes are inferred from the weight shapes, so the same code converts the public checkpoints and the
tiny random ones of the tests. Only the number of heads is not visible in the shapes: it is
width / head_dim, with head_dim = 64 for every public DINO and CLIP ViT.

DINO (`dino_vitbase16_pretrain.pth`, a plain state dict of `vision_transformer.VisionTransformer`):
  cls_token [1, 1, D]; pos_embed [1, 1 + G*G, D]; patch_embed.proj.{weight [D, 3, p, p], bias [D]};
  blocks.i.norm1.{weight, bias}; blocks.i.attn.qkv.{weight [3D, D], bias [3D]};
  blocks.i.attn.proj.{weight [D, D], bias}; blocks.i.norm2.*;
  blocks.i.mlp.fc1.{weight [M, D], bias};
  blocks.i.mlp.fc2.{weight [D, M], bias}; norm.{weight, bias}. (A `head.*` is ignored; the
  prefixes `module.`, `backbone.` and a `teacher.` sub-dict of the full training checkpoint are
  stripped.)
OpenAI CLIP (`ViT-B-32.pt`, `ViT-L-14.pt`; the image tower lives under `visual.`):
  visual.conv1.weight [D, 3, p, p] (no bias); visual.class_embedding [D];
  visual.positional_embedding [1 + G*G, D]; visual.ln_pre.{weight, bias};
  visual.transformer.resblocks.i.ln_1.*; ...attn.in_proj_weight [3D, D], attn.in_proj_bias [3D];
  ...attn.out_proj.{weight, bias}; ...ln_2.*; ...mlp.c_fc.{weight [4D, D], bias};
  ...mlp.c_proj.{weight [D, 4D], bias}; visual.ln_post.*; visual.proj [D, O] (used as x @ proj).
LAION aesthetic head (`sa_0_4_vit_l_14_linear.pth`, an `nn.Linear(768, 1)`):
  weight [1, 768], bias [1].

PyTorch Linear weights are [out, in] (Flax kernels [in, out]); Conv2d weights [O, I, kh, kw]
(Flax [kh, kw, I, O]); LayerNorm weight -> scale.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from blockvid_jax.evaluate.vit import ViTSpec, clip_spec, dino_spec
from blockvid_jax.errors import ConvertError

StateDict = Mapping[str, np.ndarray]
HEAD_DIM = 64  # every public DINO / CLIP ViT


def get_array(sd: StateDict, key: str, what: str) -> np.ndarray:
  if key not in sd:
    raise ConvertError(f"not a {what} checkpoint: key {key!r} is missing")
  return np.asarray(sd[key], np.float32)


def linear_params(sd: StateDict, prefix: str, what: str, bias: bool = True) -> dict:
  out = {"kernel": get_array(sd, prefix + ".weight", what).T}             # [in, out]
  if bias:
    out["bias"] = get_array(sd, prefix + ".bias", what)
  return out


def norm_params(sd: StateDict, prefix: str, what: str) -> dict:
  return {"scale": get_array(sd, prefix + ".weight", what), "bias": get_array(sd, prefix + ".bias", what)}


def conv_kernel(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))                              # [O,I,kh,kw] -> [kh,kw,I,O]


def count_blocks(sd: StateDict, pattern: str) -> int:
  ids = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
  if not ids:
    return 0
  if ids != set(range(max(ids) + 1)):
    raise ConvertError(f"block indices are not contiguous: {sorted(ids)}")
  return max(ids) + 1


def num_heads_of(width: int, head_dim: int) -> int:
  if width % head_dim:
    raise ConvertError(f"width {width} is not a multiple of head_dim {head_dim}")
  return width // head_dim


def _grid(num_pos: int) -> int:
  g = int(round(np.sqrt(num_pos - 1)))
  if g * g + 1 != num_pos:
    raise ConvertError(f"{num_pos} position embeddings are not 1 + a square grid")
  return g


def strip_dino_prefixes(sd: StateDict) -> dict:
  """Keeps the teacher of a full DINO training checkpoint; strips module./backbone. prefixes."""
  if any(k.startswith("teacher.") for k in sd):
    sd = {k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}
  out = {}
  for k, v in sd.items():
    for prefix in ("module.", "backbone."):
      if k.startswith(prefix):
        k = k[len(prefix):]
    out[k] = v
  return out


def convert_dino(sd: StateDict, head_dim: int = HEAD_DIM) -> tuple[ViTSpec, dict]:
  """DINO ViT state dict -> (spec, Flax params)."""
  what = "DINO ViT"
  sd = strip_dino_prefixes(sd)
  w = get_array(sd, "patch_embed.proj.weight", what)                     # [D, 3, p, p]
  width, patch = w.shape[0], w.shape[-1]
  depth = count_blocks(sd, r"blocks\.(\d+)\.")
  if depth == 0:
    raise ConvertError(f"not a {what} checkpoint: no blocks.N.* keys")
  pos = get_array(sd, "pos_embed", what).reshape(-1, width)              # [1 + G*G, D]
  mlp_dim = get_array(sd, "blocks.0.mlp.fc1.weight", what).shape[0]
  spec = dino_spec(width, depth, num_heads_of(width, head_dim), mlp_dim, patch, _grid(pos.shape[0]))
  params = {
      "patch_embed": {"kernel": conv_kernel(w), "bias": get_array(sd, "patch_embed.proj.bias", what)},
      "cls_token": get_array(sd, "cls_token", what).reshape(width),
      "pos_embed": pos,
      "ln_post": norm_params(sd, "norm", what),
  }
  for i in range(depth):
    p = f"blocks.{i}."
    params[f"block_{i}"] = {
        "ln_1": norm_params(sd, p + "norm1", what),
        "qkv": linear_params(sd, p + "attn.qkv", what),
        "out": linear_params(sd, p + "attn.proj", what),
        "ln_2": norm_params(sd, p + "norm2", what),
        "fc1": linear_params(sd, p + "mlp.fc1", what),
        "fc2": linear_params(sd, p + "mlp.fc2", what),
    }
  return spec, params


def clip_visual(sd: StateDict) -> dict:
  """The image-tower entries of a CLIP state dict, without the `visual.` prefix."""
  if any(k.startswith("visual.") for k in sd):
    return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
  return dict(sd)  # already only the image tower


def convert_clip(sd: StateDict, head_dim: int = HEAD_DIM) -> tuple[ViTSpec, dict]:
  """OpenAI CLIP state dict (full model or image tower) -> (spec, Flax params of the tower)."""
  what = "OpenAI CLIP ViT"
  sd = clip_visual(sd)
  w = get_array(sd, "conv1.weight", what)                                 # [D, 3, p, p]
  width, patch = w.shape[0], w.shape[-1]
  depth = count_blocks(sd, r"transformer\.resblocks\.(\d+)\.")
  if depth == 0:
    raise ConvertError(f"not a {what} checkpoint: no visual.transformer.resblocks.N.* keys")
  pos = get_array(sd, "positional_embedding", what)                      # [1 + G*G, D]
  proj = get_array(sd, "proj", what)                                      # [D, O]
  spec = clip_spec(width, depth, num_heads_of(width, head_dim), patch, _grid(pos.shape[0]), proj.shape[1])
  mlp_dim = get_array(sd, "transformer.resblocks.0.mlp.c_fc.weight", what).shape[0]
  if mlp_dim != spec.mlp_dim:
    raise ConvertError(f"CLIP MLP width {mlp_dim} != 4 * width {spec.mlp_dim}")
  params = {
      "patch_embed": {"kernel": conv_kernel(w)},
      "cls_token": get_array(sd, "class_embedding", what),
      "pos_embed": pos,
      "ln_pre": norm_params(sd, "ln_pre", what),
      "ln_post": norm_params(sd, "ln_post", what),
      "proj": proj,
  }
  for i in range(depth):
    p = f"transformer.resblocks.{i}."
    params[f"block_{i}"] = {
        "ln_1": norm_params(sd, p + "ln_1", what),
        "qkv": {"kernel": get_array(sd, p + "attn.in_proj_weight", what).T,
                "bias": get_array(sd, p + "attn.in_proj_bias", what)},
        "out": linear_params(sd, p + "attn.out_proj", what),
        "ln_2": norm_params(sd, p + "ln_2", what),
        "fc1": linear_params(sd, p + "mlp.c_fc", what),
        "fc2": linear_params(sd, p + "mlp.c_proj", what),
    }
  return spec, params


def convert_linear_head(sd: StateDict) -> tuple[np.ndarray, np.ndarray]:
  """LAION aesthetic head nn.Linear(F, 1) -> (kernel [F], bias scalar)."""
  what = "LAION aesthetic linear head"
  w = get_array(sd, "weight", what)                                       # [1, F]
  b = get_array(sd, "bias", what)                                         # [1]
  if w.ndim != 2 or w.shape[0] != 1 or b.shape != (1,):
    raise ConvertError(f"{what}: expected weight [1, F] and bias [1], got {w.shape}, {b.shape}")
  return w[0], b[0]
