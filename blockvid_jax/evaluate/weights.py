"""Scorer weight files: where they are looked for, how they are read. Nothing is ever downloaded.

Each scorer names the public file it needs (e.g. `dino_vitbase16_pretrain.pth`). In `--weights_dir`
we accept that exact file or the same stem with another supported suffix, tried in this order:
`.safetensors`, `.npz` (both read without torch), then `.pth`, `.pt`. All hold the *original
PyTorch key layout*; the converters in `convert_vit` map them to Flax.

`.pth` / `.pt` are read with torch, imported lazily, with `torch.load(weights_only=True)` (no
arbitrary code). The OpenAI CLIP files (`ViT-B-32.pt`, `ViT-L-14.pt`) are TorchScript archives,
which `weights_only` refuses; they are recognised and read with `torch.jit.load(...).state_dict()`.
To evaluate on a machine without torch, convert once elsewhere:

  python -m blockvid_jax.evaluate.weights ViT-B-32.pt ViT-B-32.safetensors

(keeps the keys, casts to float32, writes safetensors or .npz by the destination suffix).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from blockvid_jax.errors import WeightsError

SUFFIXES = (".safetensors", ".npz", ".pth", ".pt")


def candidates(weights_dir: Path, filename: str) -> list[Path]:
  """The paths tried for `filename`, in order: the exact name, then its stem with each suffix."""
  stem = Path(filename).stem
  out = [weights_dir / filename]
  out += [weights_dir / (stem + s) for s in SUFFIXES if stem + s != filename]
  return out


def find(weights_dir: Optional[os.PathLike], filename: str) -> Optional[Path]:
  """First existing candidate for `filename` in `weights_dir`, or None."""
  if weights_dir is None:
    return None
  for p in candidates(Path(weights_dir), filename):
    if p.is_file():
      return p
  return None


def describe(filename: str) -> str:
  """`name.pth (or name.safetensors / name.npz)` for error messages and docs."""
  stem = Path(filename).stem
  return f"{filename} (or {stem}.safetensors / {stem}.npz)"


def _flatten(tree, prefix: str = "") -> dict:
  """Nested dicts of tensors / arrays -> flat {dotted key: value}; other leaves are dropped."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    elif hasattr(v, "shape"):
      out[key] = v
  return out


def _is_torchscript(path: Path) -> bool:
  try:
    with zipfile.ZipFile(path) as z:
      return any(n.endswith("/constants.pkl") for n in z.namelist())
  except zipfile.BadZipFile:
    return False


def _load_torch(path: Path) -> dict:
  try:
    import torch
  except ImportError:
    raise WeightsError(f"{path}: reading .pth/.pt needs torch (pip install torch), or convert "
                       f"it to .safetensors elsewhere: python -m blockvid_jax.evaluate.weights "
                       f"SRC DST") from None
  if _is_torchscript(path):
    with warnings.catch_warnings():  # recent torch marks TorchScript deprecated; reading is fine
      warnings.simplefilter("ignore", DeprecationWarning)
      tree = torch.jit.load(str(path), map_location="cpu").state_dict()
  else:
    tree = torch.load(str(path), map_location="cpu", weights_only=True)
  if not isinstance(tree, dict):
    raise WeightsError(f"{path}: expected a state dict, got {type(tree).__name__}")
  flat = _flatten(dict(tree))
  return {k: v.detach().to(torch.float32).numpy() for k, v in flat.items()
          if v.dtype.is_floating_point}


def load_state_dict(path: os.PathLike) -> dict[str, np.ndarray]:
  """Reads a weights file into {key: float32 array} in its original (PyTorch) key layout."""
  path = Path(path)
  suffix = path.suffix.lower()
  try:
    if suffix == ".safetensors":
      from safetensors.numpy import load_file
      sd = load_file(str(path))
    elif suffix == ".npz":
      with np.load(path, allow_pickle=False) as z:
        sd = {k: z[k] for k in z.files}
    elif suffix in (".pth", ".pt"):
      sd = _load_torch(path)
    else:
      raise WeightsError(f"{path}: unsupported weights suffix (use one of {', '.join(SUFFIXES)})")
  except WeightsError:
    raise
  except Exception as err:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise WeightsError(f"{path}: cannot read weights ({msg})") from None
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def save_state_dict(path: os.PathLike, sd: dict[str, np.ndarray]) -> None:
  """Writes {key: array} as .safetensors or .npz (by suffix), keys unchanged."""
  path = Path(path)
  arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}
  if path.suffix.lower() == ".safetensors":
    from safetensors.numpy import save_file
    save_file(arrays, str(path))
  elif path.suffix.lower() == ".npz":
    np.savez(path, **arrays)
  else:
    raise WeightsError(f"{path}: destination must end in .safetensors or .npz")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m blockvid_jax.evaluate.weights",
                               description="Re-save a scorer checkpoint as float32 "
                               "safetensors / npz (same keys).")
  ap.add_argument("src", help="a .pth / .pt / .safetensors / .npz weights file")
  ap.add_argument("dst", help="destination .safetensors or .npz (same key layout)")
  args = ap.parse_args(argv)
  try:
    sd = load_state_dict(args.src)
    save_state_dict(args.dst, sd)
  except WeightsError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}: {len(sd)} tensors")
  return 0


if __name__ == "__main__":
  sys.exit(main())
