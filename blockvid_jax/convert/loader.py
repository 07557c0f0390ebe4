"""`load_pytorch_dit`: a PyTorch Wan-family DiT checkpoint -> (`DiTSpec`, Flax params of `CausalDiT`).

Strict: every Flax parameter is filled, every tensor of the selected model is used, every shape is
checked against `abstract_params(spec)` — all before any tensor data is read, so a bad 50 GB
checkpoint fails in seconds. Params come back as host NumPy arrays (float32, or the spec's
param_dtype); per-layer tensors are stacked into the `[K, ...]` leaves of `nn.scan`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
from flax import traverse_util

from blockvid_jax.convert import keymaps, readers, spec_infer
from blockvid_jax.convert.keymaps import Canonical, Kind
from blockvid_jax.models.params import abstract_params
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.errors import ConvertError

_MAX_LISTED = 5


@dataclasses.dataclass
class Converted:
  """A converted checkpoint and where it came from (for summaries)."""
  spec: DiTSpec
  params: dict[str, Any]           # nested dict of np.ndarray, the `params` collection of CausalDiT
  format: str                      # wan | diffusers | self_forcing
  files: tuple[str, ...]           # weight files read
  config_path: Optional[str]       # config.json used, if any
  key_prefix: str                  # e.g. "generator_ema.model."


def _listing(names: list[str]) -> str:
  shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
  more = len(names) - _MAX_LISTED
  return shown + (f" and {more} more" if more > 0 else "")


def source_shape(kind: Kind, flax_shape: tuple[int, ...], spec: DiTSpec) -> tuple[int, ...]:
  """The PyTorch shape that fills a Flax leaf of (per-layer) shape `flax_shape`."""
  if kind == Kind.LINEAR:
    return (flax_shape[1], flax_shape[0])                     # [out, in]
  if kind == Kind.CONV:
    return (spec.dim, spec.in_channels, *spec.patch_size)     # [D, C, pt, ph, pw]
  if kind == Kind.TABLE:
    return (1, *flax_shape)                                   # [1, n, D]
  return tuple(flax_shape)


def to_flax(kind: Kind, a: np.ndarray, flax_shape: tuple[int, ...]) -> np.ndarray:
  """A PyTorch tensor in the layout of its Flax leaf."""
  if kind == Kind.LINEAR:
    return a.T                                                # [in, out]
  if kind == Kind.CONV:
    # [D, C, pt, ph, pw] -> [pt, ph, pw, C, D] -> [pt*ph*pw*C, D]: rows in (pt, ph, pw, c) order,
    # the channel order of `patchify`.
    return a.transpose(2, 3, 4, 1, 0).reshape(flax_shape)
  return a.reshape(flax_shape)                                # TABLE [1, n, D] -> [n, D]; VECTOR


def _plan(model: Canonical, spec: DiTSpec, source: str):
  """(rule, Wan key, layer or None, per-layer Flax shape) of every tensor; all checks happen here."""
  leaves = traverse_util.flatten_dict(abstract_params(spec))
  rule_paths = {r.path for r in keymaps.RULES}
  if set(leaves) != rule_paths:  # the model changed without the key map: a bug, not a user error
    diff = sorted("/".join(p) for p in set(leaves) ^ rule_paths)
    raise RuntimeError(f"convert.keymaps.RULES is out of date with CausalDiT params: {diff}")

  plan, missing, wrong = [], [], []
  for rule in keymaps.RULES:
    leaf = leaves[rule.path]
    per_layer = leaf.shape[1:] if rule.stacked else leaf.shape
    for layer in (range(spec.num_layers) if rule.stacked else [None]):
      wan_key = rule.key.format(i=layer) if rule.stacked else rule.key
      ref = model.tensors.get(wan_key)
      if ref is None:
        missing.append(model.source_key(wan_key))
        continue
      want = source_shape(rule.kind, per_layer, spec)
      if tuple(ref.shape) != want:
        wrong.append(f"wrong shape for {ref.key!r} in {ref.file}: {tuple(ref.shape)}, expected {want}")
      plan.append((rule, wan_key, layer, per_layer))
  if missing:
    raise ConvertError(f"missing {len(missing)} tensor(s) in {source} (format {model.format}): "
                       f"{_listing(missing)}")
  if wrong:
    more = f" (and {len(wrong) - 1} more wrong shapes)" if len(wrong) > 1 else ""
    raise ConvertError(wrong[0] + more)

  used = {wan_key for _, wan_key, _, _ in plan}
  unused = sorted([ref.key for k, ref in model.tensors.items() if k not in used] +
                  [ref.key for ref in model.unmapped])
  if unused:
    raise ConvertError(f"{len(unused)} unused tensor(s) in {source} (format {model.format}): "
                       f"{_listing(unused)}")
  return leaves, plan


def convert_checkpoint(ckpt: readers.Checkpoint, format: str = "auto",  # pylint: disable=redefined-builtin
                       use_ema: bool = False, num_heads: Optional[int] = None,
                       frames_per_chunk: int = 3) -> Converted:
  """Converts an opened checkpoint (see `readers.open_checkpoint`)."""
  source = ckpt.path
  model = keymaps.canonicalize(ckpt.tensors, format, use_ema, source)
  spec = spec_infer.infer_spec(model, source, ckpt.config, ckpt.config_path, num_heads,
                               frames_per_chunk)
  leaves, plan = _plan(model, spec, source)

  out: dict[tuple[str, ...], np.ndarray] = {}
  for rule, wan_key, layer, per_layer in plan:
    leaf = leaves[rule.path]
    if rule.path not in out:
      out[rule.path] = np.empty(leaf.shape, leaf.dtype)       # [K, ...] or the leaf shape
    a = to_flax(rule.kind, model.tensors[wan_key].load(), per_layer)
    if layer is None:
      out[rule.path][...] = a
    else:
      out[rule.path][layer] = a                               # layer slice of [K, ...]
  params = traverse_util.unflatten_dict(out)
  return Converted(spec=spec, params=params, format=model.format, files=ckpt.files,
                   config_path=ckpt.config_path, key_prefix=model.root + model.prefix)


def convert_pytorch_dit(path: str, format: str = "auto",  # pylint: disable=redefined-builtin
                        use_ema: bool = False, num_heads: Optional[int] = None,
                        frames_per_chunk: int = 3) -> Converted:
  """Opens and converts a checkpoint file or directory; see `load_pytorch_dit`."""
  ckpt = readers.open_checkpoint(path)
  try:
    return convert_checkpoint(ckpt, format, use_ema, num_heads, frames_per_chunk)
  finally:
    ckpt.close()


def load_pytorch_dit(path: str, format: str = "auto",  # pylint: disable=redefined-builtin
                     use_ema: bool = False, num_heads: Optional[int] = None,
                     frames_per_chunk: int = 3) -> tuple[DiTSpec, dict[str, Any]]:
  """A PyTorch Wan2.1 / Diffusers / Self Forcing DiT checkpoint -> (DiTSpec, params).

  path: a `.safetensors` file, a `*.safetensors.index.json` (sharded), a `.pt`/`.pth` file (needs
    torch), or a directory holding one of them and optionally a `config.json`.
  format: "auto" (detected from the keys), "wan", "diffusers" or "self_forcing".
  use_ema: Self Forcing only: convert `generator_ema` instead of `generator`.
  num_heads: needed when neither a config.json nor the width (1536 -> 12, 5120 -> 40) tells it.
  frames_per_chunk: latent frames per causal chunk of the returned spec (not stored in checkpoints).
  Returns the spec and the `params` collection (nested dict of host NumPy arrays) for
  `CausalDiT(spec).apply({"params": params}, ...)`. Raises `ConvertError` (one line) on any problem.
  """
  result = convert_pytorch_dit(path, format, use_ema, num_heads, frames_per_chunk)
  return result.spec, result.params
