"""Readers of PyTorch checkpoints: every tensor becomes a `TensorRef` whose data is read on demand.

Sources (`open_checkpoint(path)`):
  * `.safetensors`: read with `safetensors.safe_open(framework="numpy")` (memory-mapped, no torch).
  * sharded safetensors: a `*.safetensors.index.json` whose "weight_map" maps tensor -> shard file.
  * `.pt` / `.pth` / `.bin` / `.ckpt`: `torch.load(map_location="cpu", weights_only=True)`; torch is
    optional (`pip install -e .[torch]`) and imported only here. Nested dicts are flattened with "."
    (a Self Forcing file gives `generator.model.blocks.0...` and `generator_ema.model...`); non-tensor
    entries (step counters, ...) are skipped.
  * a directory: the weights in it (or in its `transformer/` folder, the Diffusers pipeline layout)
    and its optional `config.json`.
A `config.json` next to a weights file is used when it looks like a Wan / Diffusers model config.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import re
from typing import Any, Callable, Optional

import numpy as np

from blockvid_jax.errors import ConvertError, describe


SAFETENSORS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CONFIG_NAME = "config.json"
# Keys that mark a config.json as a DiT config (Wan `WanModel` or Diffusers `WanTransformer3DModel`).
CONFIG_MARKERS = ("dim", "num_heads", "num_attention_heads", "attention_head_dim")
_SHARD = re.compile(r"-\d+-of-\d+\.safetensors$")


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """One tensor of a checkpoint: its name, shape and file; `load()` reads the data (NumPy)."""
  key: str                 # name in the file (after flattening nested dicts)
  shape: tuple[int, ...]
  dtype: str
  file: str
  loader: Callable[[], np.ndarray] = dataclasses.field(repr=False, compare=False)

  def load(self) -> np.ndarray:
    try:
      return np.asarray(self.loader())
    except ConvertError:
      raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a one-line user error
      raise ConvertError(f"cannot read tensor {self.key!r} from {self.file}: {describe(e)}") from e


@dataclasses.dataclass
class Checkpoint:
  """The tensors of a checkpoint (by name), the files they came from and its optional config."""
  path: str                          # what was opened (absolute)
  files: tuple[str, ...]             # the weight files read
  tensors: dict[str, TensorRef]
  config: Optional[dict[str, Any]] = None
  config_path: Optional[str] = None
  _handles: list = dataclasses.field(default_factory=list, repr=False)

  def close(self) -> None:
    self._handles.clear()  # safetensors handles unmap when garbage collected


# ------------------------------------------------------------------ helpers


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConvertError(f"cannot read {path}: {describe(e)}") from e


def read_config(path: str) -> dict[str, Any]:
  """A config.json as a dict (one-line error if unreadable or not a JSON object)."""
  cfg = _read_json(path)
  if not isinstance(cfg, dict):
    raise ConvertError(f"{path} is not a JSON object")
  return cfg


# ------------------------------------------------------------------ safetensors
def _read_safetensors(path: str, handles: list) -> dict[str, TensorRef]:
  from safetensors import safe_open  # a core dependency; imported here to keep import time low
  try:
    handle = safe_open(path, framework="numpy")
    refs = {}
    for key in handle.keys():
      sl = handle.get_slice(key)
      refs[key] = TensorRef(key, tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()), path,
                            functools.partial(handle.get_tensor, key))
  except Exception as e:  # noqa: BLE001 - SafetensorError is not exported in a stable place
    raise ConvertError(f"cannot read safetensors file {path}: {describe(e)}") from e
  handles.append(handle)
  return refs


def _merge(into: dict[str, TensorRef], refs: dict[str, TensorRef]) -> None:
  for key, ref in refs.items():
    if key in into:
      raise ConvertError(f"tensor {key!r} is in both {into[key].file} and {ref.file}")
    into[key] = ref


def _read_index(path: str, handles: list) -> tuple[dict[str, TensorRef], tuple[str, ...]]:
  """Sharded safetensors: {"weight_map": {tensor: shard file}} next to the shards."""
  index = _read_json(path)
  weight_map = index.get("weight_map") if isinstance(index, dict) else None
  if not isinstance(weight_map, dict) or not weight_map:
    raise ConvertError(f"{path} has no \"weight_map\" (expected a sharded safetensors index)")
  base = os.path.dirname(path)
  shards: dict[str, dict[str, TensorRef]] = {}
  for key, name in weight_map.items():
    shard = os.path.join(base, str(name))
    if shard not in shards:
      if not os.path.isfile(shard):
        raise ConvertError(f"shard {name} listed in {path} does not exist")
      shards[shard] = _read_safetensors(shard, handles)
    if key not in shards[shard]:
      raise ConvertError(f"{path} maps {key!r} to {name}, but that file does not hold it")
  tensors: dict[str, TensorRef] = {}
  for refs in shards.values():  # shard tensors missing from the map are kept: they show as unused
    _merge(tensors, refs)
  return tensors, tuple(shards)


# ------------------------------------------------------------------ torch
def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConvertError("reading .pt/.pth checkpoints needs torch: pip install -e .[torch]") from e
  return torch


def _torch_to_numpy(tensor) -> np.ndarray:
  torch = _import_torch()
  t = tensor.detach().cpu()
  if t.is_floating_point() and t.dtype != torch.float32:
    t = t.to(torch.float32)  # bfloat16 / float16 have no NumPy dtype; the converter writes float32
  return t.numpy()


def _read_torch(path: str) -> dict[str, TensorRef]:
  torch = _import_torch()
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be memory-mapped: read them whole
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
      raise ConvertError(f"cannot read {path} with torch.load: {describe(e)}") from e
  refs: dict[str, TensorRef] = {}

  def walk(node, prefix: str):
    if isinstance(node, torch.Tensor):
      refs[prefix] = TensorRef(prefix, tuple(int(d) for d in node.shape),
                               str(node.dtype).replace("torch.", ""), path,
                               functools.partial(_torch_to_numpy, node))
    elif isinstance(node, dict):
      for k, v in node.items():
        walk(v, f"{prefix}.{k}" if prefix else str(k))

  walk(obj, "")
  if not refs:
    raise ConvertError(f"{path} holds no tensors (expected a state dict)")
  return refs


# ------------------------------------------------------------------ files and directories
def _kind(path: str) -> Optional[str]:
  if path.endswith(INDEX_SUFFIX):
    return "index"
  if path.endswith(SAFETENSORS_SUFFIX):
    return "safetensors"
  if path.endswith(TORCH_SUFFIXES):
    return "torch"
  return None


def _pick(directory: str) -> list[str]:
  """The weight file(s) of a directory: an index, one safetensors file or its shards, or one .pt."""
  def ls(pattern):
    return sorted(glob.glob(os.path.join(glob.escape(directory), pattern)))

  def prefer_diffusion(paths):
    preferred = [p for p in paths if os.path.basename(p).startswith("diffusion_pytorch_model")]
    return preferred or paths

  def several(paths):
    names = ", ".join(os.path.basename(p) for p in paths[:5])
    return ConvertError(f"several weight files in {directory} ({names}); pass one of them as --src")

  indexes = prefer_diffusion(ls("*" + INDEX_SUFFIX))
  if len(indexes) == 1:
    return indexes
  if indexes:
    raise several(indexes)
  singles = prefer_diffusion(ls("*" + SAFETENSORS_SUFFIX))
  if len(singles) == 1 or (singles and all(_SHARD.search(p) for p in singles)):
    return singles  # one file, or shards without an index
  if singles:
    raise several(singles)
  torch_files = sorted(p for s in TORCH_SUFFIXES for p in ls("*" + s))
  if len(torch_files) == 1:
    return torch_files
  if torch_files:
    raise several(torch_files)
  return []


def _read_optional(path: str) -> dict:
  """A config.json that merely sits next to a weights file: ignored if unreadable."""
  try:
    return read_config(path)
  except ConvertError:
    return {}


def _looks_like_model_config(cfg: dict) -> bool:
  return any(k in cfg for k in CONFIG_MARKERS)


def open_checkpoint(path: str) -> Checkpoint:
  """Opens a checkpoint file or directory (see the module docstring); tensors are read lazily."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.exists(path):
    raise ConvertError(f"{path} does not exist")
  config_path = None
  if os.path.isdir(path):
    directory = path
    files = _pick(directory)
    sub = os.path.join(directory, "transformer")
    if not files and os.path.isdir(sub):  # a Diffusers pipeline folder
      directory, files = sub, _pick(sub)
    if not files:
      raise ConvertError(f"no weights (*.safetensors, *{INDEX_SUFFIX}, *.pt, *.pth) in {path}")
    candidate = os.path.join(directory, CONFIG_NAME)
    config_path = candidate if os.path.isfile(candidate) else None
  else:
    if _kind(path) is None:
      raise ConvertError(f"unsupported checkpoint file {path} (expected .safetensors, {INDEX_SUFFIX}, "
                         f".pt, .pth or a directory)")
    files = [path]
    candidate = os.path.join(os.path.dirname(path), CONFIG_NAME)
    if os.path.isfile(candidate) and _looks_like_model_config(_read_optional(candidate)):
      config_path = candidate

  handles: list = []
  tensors: dict[str, TensorRef] = {}
  read: list[str] = []
  for f in files:
    kind = _kind(f)
    if kind == "index":
      refs, shards = _read_index(f, handles)
      read.extend(shards)
    elif kind == "safetensors":
      refs = _read_safetensors(f, handles)
      read.append(f)
    else:
      refs = _read_torch(f)
      read.append(f)
    _merge(tensors, refs)
  config = read_config(config_path) if config_path else None
  return Checkpoint(path=path, files=tuple(read), tensors=tensors, config=config,
                    config_path=config_path, _handles=handles)
