"""umT5 encoder weights -> (`UMT5Spec`, Flax params): `load_umt5(path)`.

Two key layouts, told apart by the embedding's name:
  * "wan": `models_t5_umt5-xxl-enc-bf16.pth` (`token_embedding`, `blocks.N.{norm1, attn.{q,k,v,o},
    norm2, ffn.{gate.0, fc1, fc2}, pos_embedding.embedding}`, `norm`), or safetensors with its keys;
  * "hf": HuggingFace `UMT5EncoderModel` (`shared` / `encoder.embed_tokens`,
    `encoder.block.N.layer.0.{layer_norm, SelfAttention.{q,k,v,o,relative_attention_bias}}`,
    `encoder.block.N.layer.1.{layer_norm, DenseReluDense.{wi_0, wi_1, wo}}`,
    `encoder.final_layer_norm`), single or sharded safetensors (`model.safetensors.index.json`).
Sizes come from the shapes; the head count from the relative-bias table [buckets, heads]. Every
expected tensor must be there with its shape and nothing may be left over (a tied
`encoder.embed_tokens` copy of `shared` is accepted).
"""

from __future__ import annotations

import os
import re

import numpy as np
from flax import traverse_util

from blockvid_jax.convert.readers import Checkpoint, open_checkpoint
from blockvid_jax.models.spec import DTYPES
from blockvid_jax.models.umt5 import UMT5Spec
from blockvid_jax.errors import ConfigError, ConvertError

# our path inside a block -> (wan key, hf key) after the block prefix; "linear" entries are [out, in]
_BLOCK = {
    ("norm1", "scale"): ("norm1.weight", "layer.0.layer_norm.weight"),
    ("attn", "q", "kernel"): ("attn.q.weight", "layer.0.SelfAttention.q.weight"),
    ("attn", "k", "kernel"): ("attn.k.weight", "layer.0.SelfAttention.k.weight"),
    ("attn", "v", "kernel"): ("attn.v.weight", "layer.0.SelfAttention.v.weight"),
    ("attn", "o", "kernel"): ("attn.o.weight", "layer.0.SelfAttention.o.weight"),
    ("pos_bias",): ("pos_embedding.embedding.weight",
                    "layer.0.SelfAttention.relative_attention_bias.weight"),
    ("norm2", "scale"): ("norm2.weight", "layer.1.layer_norm.weight"),
    ("ffn", "gate", "kernel"): ("ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"),
    ("ffn", "fc1", "kernel"): ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"),
    ("ffn", "fc2", "kernel"): ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"),
}
_PREFIX = {"wan": "blocks.{i}.", "hf": "encoder.block.{i}."}
_TOP = {"embed": ("token_embedding.weight", "shared.weight"),
        "norm": ("norm.weight", "encoder.final_layer_norm.weight")}
_TIED = "encoder.embed_tokens.weight"


def detect_layout(keys) -> str:
  keys = set(keys)
  if "token_embedding.weight" in keys:
    return "wan"
  if "shared.weight" in keys or _TIED in keys:
    return "hf"
  raise ConvertError("not a umT5 encoder checkpoint: neither token_embedding.weight (Wan) nor "
                     "shared.weight (HuggingFace UMT5EncoderModel) is in it")


def _shape(ckpt: Checkpoint, key: str) -> tuple[int, ...]:
  if key not in ckpt.tensors:
    raise ConvertError(f"{ckpt.path}: missing tensor {key!r}")
  return tuple(ckpt.tensors[key].shape)


def expected_shapes(spec: UMT5Spec, layout: str) -> dict[tuple[str, ...], tuple[str, tuple]]:
  """our path -> (checkpoint key, PyTorch shape) for every tensor of the encoder."""
  col = 0 if layout == "wan" else 1
  d, a, f, n = spec.dim, spec.dim_attn, spec.dim_ffn, spec.num_heads
  shapes = {("norm1", "scale"): (d,), ("norm2", "scale"): (d,), ("pos_bias",): (spec.num_buckets, n),
            ("attn", "q", "kernel"): (a, d), ("attn", "k", "kernel"): (a, d),
            ("attn", "v", "kernel"): (a, d), ("attn", "o", "kernel"): (d, a),
            ("ffn", "gate", "kernel"): (f, d), ("ffn", "fc1", "kernel"): (f, d),
            ("ffn", "fc2", "kernel"): (d, f)}
  out = {("token_embedding",): (_TOP["embed"][col], (spec.vocab_size, d)),
         ("norm", "scale"): (_TOP["norm"][col], (d,))}
  for i in range(spec.num_layers):
    prefix = _PREFIX[layout].format(i=i)
    for path, names in _BLOCK.items():
      out[(f"block_{i}",) + path] = (prefix + names[col], shapes[path])
  return out


def infer_spec(ckpt: Checkpoint, layout: str) -> UMT5Spec:
  col = 0 if layout == "wan" else 1
  embed = _TOP["embed"][col] if _TOP["embed"][col] in ckpt.tensors else _TIED
  vocab, dim = _shape(ckpt, embed)
  prefix = _PREFIX[layout].format(i=0)
  pattern = re.compile("^" + re.escape(_PREFIX[layout]).replace(r"\{i\}", r"(\d+)"))
  layers = 1 + max((int(m.group(1)) for k in ckpt.tensors if (m := pattern.match(k))), default=-1)
  buckets, heads = _shape(ckpt, prefix + _BLOCK[("pos_bias",)][col])
  dim_attn = _shape(ckpt, prefix + _BLOCK[("attn", "q", "kernel")][col])[0]
  dim_ffn = _shape(ckpt, prefix + _BLOCK[("ffn", "fc1", "kernel")][col])[0]
  max_distance = 128
  if ckpt.config and "relative_attention_max_distance" in ckpt.config:
    max_distance = int(ckpt.config["relative_attention_max_distance"])
  try:
    return UMT5Spec(vocab_size=vocab, dim=dim, dim_attn=dim_attn, dim_ffn=dim_ffn, num_heads=heads,
                    num_layers=layers, num_buckets=buckets, max_distance=max_distance)
  except ConfigError as e:
    raise ConvertError(f"{ckpt.path}: {e}") from e


def convert(ckpt: Checkpoint, dtype: str = "float32") -> tuple[UMT5Spec, dict]:
  """The strict conversion of an opened checkpoint; arrays are returned in `dtype`."""
  if dtype not in DTYPES:
    raise ConvertError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
  layout = detect_layout(ckpt.tensors)
  spec = infer_spec(ckpt, layout)
  np_dtype = np.dtype(DTYPES[dtype])
  flat, used = {}, set()
  tied = layout == "hf" and "shared.weight" not in ckpt.tensors
  for path, (key, shape) in expected_shapes(spec, layout).items():
    key = _TIED if tied and key == "shared.weight" else key
    ref = ckpt.tensors.get(key)
    if ref is None:
      raise ConvertError(f"{ckpt.path}: missing tensor {key!r} for a umT5 encoder of {spec}")
    if tuple(ref.shape) != shape:
      raise ConvertError(f"{ckpt.path}: tensor {key!r} has shape {tuple(ref.shape)}, "
                         f"expected {shape}")
    value = np.asarray(ref.load(), np.float32)
    flat[path] = (value.T if path[-1] == "kernel" else value).astype(np_dtype)
    used.add(key)
  if layout == "hf":
    used.add(_TIED)  # the tied copy of `shared`, when the file holds both
  extra = sorted(set(ckpt.tensors) - used)
  if extra:
    raise ConvertError(f"{ckpt.path}: {len(extra)} unexpected tensor(s), first {extra[0]!r}")
  return spec, traverse_util.unflatten_dict(flat)


def load_umt5(path: str | os.PathLike, dtype: str = "float32") -> tuple[UMT5Spec, dict]:
  """(spec, params) from the Wan .pth, safetensors with its keys, or a HuggingFace encoder."""
  ckpt = open_checkpoint(os.fspath(path))
  try:
    return convert(ckpt, dtype)
  finally:
    ckpt.close()
