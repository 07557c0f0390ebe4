"""`infer_spec`: the `DiTSpec` of a checkpoint, from its tensor shapes plus its optional config.json.

Shapes give dim, ffn_dim, num_layers, text_dim, in/out channels, patch size and freq_dim. A
config.json (Wan `WanModel` keys: dim, ffn_dim, num_heads, num_layers, in_dim, out_dim, text_dim,
freq_dim, patch_size, eps; Diffusers `WanTransformer3DModel` keys: num_attention_heads,
attention_head_dim, in_channels, out_channels, ...) must agree with the shapes. num_heads cannot come
from shapes: config.json, else the caller's `num_heads`, else the Wan2.1 sizes by width, else error.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from blockvid_jax.convert.keymaps import Canonical
from blockvid_jax.errors import ConfigError, ConvertError
from blockvid_jax.models.spec import DiTSpec

# Wan2.1 widths whose head count is known (head dim 128): T2V-1.3B and T2V-14B.
KNOWN_NUM_HEADS = {1536: 12, 5120: 40}

# config.json key -> DiTSpec field.
_WAN_KEYS = {"dim": "dim", "ffn_dim": "ffn_dim", "num_heads": "num_heads", "num_layers": "num_layers",
             "in_dim": "in_channels", "out_dim": "out_channels", "text_dim": "text_dim",
             "freq_dim": "freq_dim", "patch_size": "patch_size", "eps": "eps"}
_DIFFUSERS_KEYS = {"num_attention_heads": "num_heads", "in_channels": "in_channels",
                   "out_channels": "out_channels"}
_LAYER = re.compile(r"blocks\.(\d+)\.")
# Wan model types with image-conditioning weights (img_emb, k_img/v_img) that CausalDiT lacks.
IMAGE_MODEL_TYPES = ("i2v", "flf2v")


def _int(value: Any, key: str, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConvertError(f"{where}: {key} must be a positive integer, got {value!r}")
  return value


def config_fields(cfg: Optional[dict], where: str) -> dict[str, tuple[Any, str]]:
  """DiTSpec fields found in a config.json: {field: (value, config key)}; rejects unsupported models."""
  if not cfg:
    return {}
  unsupported = [
      (str(cfg.get("model_type")) in IMAGE_MODEL_TYPES, f"model_type={cfg.get('model_type')!r} "
       f"is image-conditioned; only text-to-video models (e.g. 't2v') are supported"),
      (cfg.get("image_dim") is not None or cfg.get("added_kv_proj_dim") is not None,
       "image conditioning (image_dim / added_kv_proj_dim) is not supported"),
      (cfg.get("cross_attn_norm") is False, "cross_attn_norm=false is not supported"),
      (cfg.get("qk_norm", True) not in (True, "rms_norm_across_heads"),
       f"qk_norm={cfg.get('qk_norm')!r} is not supported (Wan's RMSNorm over the full width only)"),
      (cfg.get("window_size") not in (None, [-1, -1], (-1, -1)),
       f"window_size={cfg.get('window_size')!r} (local attention) is not supported"),
  ]
  for bad, msg in unsupported:
    if bad:
      raise ConvertError(f"{where}: {msg}")

  out: dict[str, tuple[Any, str]] = {}
  for key, field in {**_WAN_KEYS, **_DIFFUSERS_KEYS}.items():
    if key not in cfg or cfg[key] is None:
      continue
    value = cfg[key]
    if field == "patch_size":
      if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConvertError(f"{where}: patch_size must be three integers, got {value!r}")
      value = tuple(_int(v, key, where) for v in value)
    elif field == "eps":
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConvertError(f"{where}: eps must be a positive number, got {value!r}")
      value = float(value)
    else:
      value = _int(value, key, where)
    if field in out and out[field][0] != value:
      raise ConvertError(f"{where}: {out[field][1]}={out[field][0]!r} and {key}={value!r} disagree")
    out[field] = (value, key)
  if cfg.get("attention_head_dim") is not None and "num_heads" in out:
    dim = _int(cfg["attention_head_dim"], "attention_head_dim", where) * out["num_heads"][0]
    out["dim"] = (dim, "num_attention_heads*attention_head_dim")
  return out


def infer_spec(model: Canonical, source: str, config: Optional[dict], config_path: Optional[str],
               num_heads: Optional[int] = None, frames_per_chunk: int = 3) -> DiTSpec:
  """The spec of the model in `model` (Wan-named tensors); one-line `ConvertError`s."""
  def shape(wan_key: str, ndim: int) -> tuple[int, ...]:
    ref = model.tensors.get(wan_key)
    if ref is None:
      raise ConvertError(f"missing {model.source_key(wan_key)!r} in {source} (format {model.format})")
    if len(ref.shape) != ndim:
      raise ConvertError(f"{ref.key!r} in {ref.file} has shape {ref.shape}, expected {ndim} dims")
    return ref.shape

  pe = shape("patch_embedding.weight", 5)                       # [D, C, pt, ph, pw]
  patch = tuple(pe[2:])
  layers = {int(m.group(1)) for k in model.tensors if (m := _LAYER.match(k))}
  if not layers:
    raise ConvertError(f"missing {model.source_key('blocks.0.self_attn.q.weight')!r} in {source} "
                       f"(format {model.format}): no transformer blocks")
  head_out = shape("head.head.weight", 2)[0]                    # [pt*ph*pw*C_out, D]
  if head_out % math.prod(patch):
    raise ConvertError(f"{model.source_key('head.head.weight')!r} has {head_out} outputs, not a "
                       f"multiple of the patch volume {math.prod(patch)}")
  inferred = {
      "dim": (pe[0], "patch_embedding.weight"),
      "in_channels": (pe[1], "patch_embedding.weight"),
      "patch_size": (patch, "patch_embedding.weight"),
      "freq_dim": (shape("time_embedding.0.weight", 2)[1], "time_embedding.0.weight"),
      "text_dim": (shape("text_embedding.0.weight", 2)[1], "text_embedding.0.weight"),
      "ffn_dim": (shape("blocks.0.ffn.0.weight", 2)[0], "blocks.0.ffn.0.weight"),
      "num_layers": (max(layers) + 1, "blocks.N"),
      "out_channels": (head_out // math.prod(patch), "head.head.weight"),
  }

  where = config_path or "config.json"
  cfg = config_fields(config, where)
  for field, (value, key) in cfg.items():
    if field in inferred and inferred[field][0] != value:
      got, wan_key = inferred[field]
      raise ConvertError(f"{where}: {key}={value!r} does not match the weights ({field}={got!r} from "
                         f"{model.source_key(wan_key) if '.' in wan_key else wan_key})")

  heads = cfg["num_heads"][0] if "num_heads" in cfg else None
  if num_heads is not None:
    if heads is not None and heads != num_heads:
      raise ConvertError(f"--num_heads {num_heads} disagrees with {where} ({cfg['num_heads'][1]}="
                         f"{heads})")
    heads = num_heads
  dim = inferred["dim"][0]
  if heads is None:
    heads = KNOWN_NUM_HEADS.get(dim)
  if heads is None:
    raise ConvertError(f"cannot tell num_heads from the weights (dim={dim}) and there is no "
                       f"config.json with it; pass --num_heads")

  fields = {k: v for k, (v, _) in inferred.items()}
  try:
    return DiTSpec(**fields, num_heads=heads, eps=cfg.get("eps", (1e-6, ""))[0],
                   frames_per_chunk=frames_per_chunk)
  except ConfigError as e:
    raise ConvertError(f"{source}: {e}") from e
