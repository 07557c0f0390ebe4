"""Wan VAE weights -> (`VAESpec`, Flax params): `load_wan_vae(path)`.

Two key layouts, told apart by the first conv's name:
  * "wan": the original `Wan2.1_VAE.pth` state dict (`encoder.conv1`, `encoder.downsamples.N`,
    `residual.{0,2,3,6}`, `middle.{0,1,2}`, `head.{0,2}`, top-level `conv1` / `conv2`), as .pth
    (torch, imported lazily) or safetensors with the same keys;
  * "diffusers": `AutoencoderKLWan` (`encoder.conv_in`, `down_blocks.N`, `norm1/conv1/...`,
    `mid_block.{resnets,attentions}`, `decoder.up_blocks.I.{resnets.J,upsamplers.0}`,
    `quant_conv` / `post_quant_conv`), usually `diffusion_pytorch_model.safetensors`.
The spec (base dim, dim_mult, num_res_blocks, temporal downsampling, z_dim) is read from the shapes;
then every expected tensor must be present with its exact shape and nothing else may be left over.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import numpy as np
from flax import traverse_util

from blockvid_jax.convert.readers import Checkpoint, TensorRef, open_checkpoint
from blockvid_jax.models.vae import VAESpec
from blockvid_jax.errors import ConfigError, ConvertError

LAYOUTS = ("wan", "diffusers")
PIXELS = 3  # RGB
_RES_NAMES = {  # our name -> (wan, diffusers) inside a residual block
    "norm1": ("residual.0", "norm1"), "conv1": ("residual.2", "conv1"),
    "norm2": ("residual.3", "norm2"), "conv2": ("residual.6", "conv2"),
    "shortcut": ("shortcut", "conv_shortcut")}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One source tensor: where it goes, its PyTorch shape and how it is laid out."""
  path: tuple[str, ...]      # our param path
  key: str                   # name in the checkpoint
  shape: tuple[int, ...]     # PyTorch shape
  kind: str                  # conv3d | conv2d | proj | gamma | bias


def _layer(entries, path, key, kind, out, inp, k=3):
  shape = {"conv3d": (out, inp, k, k, k), "conv2d": (out, inp, k, k), "proj": (out, inp, 1, 1)}[kind]
  entries.append(Entry(path + ("kernel",), f"{key}.weight", shape, kind))
  entries.append(Entry(path + ("bias",), f"{key}.bias", (out,), "bias"))


def _gamma(entries, path, key, dim, image=False):
  entries.append(Entry(path + ("scale",), f"{key}.gamma", (dim, 1, 1) if image else (dim, 1, 1, 1),
                       "gamma"))


def _res(entries, path, key, inp, out, layout):
  i = LAYOUTS.index(layout)
  _gamma(entries, path + ("norm1",), f"{key}.{_RES_NAMES['norm1'][i]}", inp)
  _layer(entries, path + ("conv1",), f"{key}.{_RES_NAMES['conv1'][i]}", "conv3d", out, inp)
  _gamma(entries, path + ("norm2",), f"{key}.{_RES_NAMES['norm2'][i]}", out)
  _layer(entries, path + ("conv2",), f"{key}.{_RES_NAMES['conv2'][i]}", "conv3d", out, out)
  if inp != out:
    _layer(entries, path + ("shortcut",), f"{key}.{_RES_NAMES['shortcut'][i]}", "conv3d", out, inp, 1)


def _middle(entries, path, key, dim, layout):
  wan = layout == "wan"
  _res(entries, path + ("res_0",), f"{key}.middle.0" if wan else f"{key}.mid_block.resnets.0",
       dim, dim, layout)
  attn = f"{key}.middle.1" if wan else f"{key}.mid_block.attentions.0"
  _gamma(entries, path + ("attn", "norm"), f"{attn}.norm", dim, image=True)
  _layer(entries, path + ("attn", "qkv"), f"{attn}.to_qkv", "proj", 3 * dim, dim)
  _layer(entries, path + ("attn", "proj"), f"{attn}.proj", "proj", dim, dim)
  _res(entries, path + ("res_1",), f"{key}.middle.2" if wan else f"{key}.mid_block.resnets.1",
       dim, dim, layout)


def _resample(entries, path, key, dim, out, temporal, time_out):
  _layer(entries, path + ("conv",), f"{key}.resample.1", "conv2d", out, dim)
  if temporal:
    entries.append(Entry(path + ("time_conv", "kernel"), f"{key}.time_conv.weight",
                         (time_out, dim, 3, 1, 1), "conv3d"))
    entries.append(Entry(path + ("time_conv", "bias"), f"{key}.time_conv.bias", (time_out,), "bias"))


def expected_entries(spec: VAESpec, layout: str) -> list[Entry]:
  """Every tensor of a VAE with this spec in this key layout."""
  wan, e = layout == "wan", []
  n_stages, z = len(spec.dim_mult), spec.z_dim
  # encoder
  dims = spec.encoder_dims()
  _layer(e, ("encoder", "conv_in"), "encoder.conv1" if wan else "encoder.conv_in", "conv3d",
         dims[0], PIXELS)
  j = 0
  down = "encoder.downsamples" if wan else "encoder.down_blocks"
  for i in range(n_stages):
    inp = dims[i]
    for r in range(spec.num_res_blocks):
      _res(e, ("encoder", f"stage_{i}", f"res_{r}"), f"{down}.{j}", inp, dims[i + 1], layout)
      inp, j = dims[i + 1], j + 1
    if i != n_stages - 1:
      _resample(e, ("encoder", f"stage_{i}", "resample"), f"{down}.{j}", inp, inp,
                spec.temporal_downsample[i], inp)
      j += 1
  _middle(e, ("encoder", "mid"), "encoder", dims[-1], layout)
  _gamma(e, ("encoder", "head_norm"), "encoder.head.0" if wan else "encoder.norm_out", dims[-1])
  _layer(e, ("encoder", "head_conv"), "encoder.head.2" if wan else "encoder.conv_out", "conv3d",
         2 * z, dims[-1])
  _layer(e, ("quant_conv",), "conv1" if wan else "quant_conv", "conv3d", 2 * z, 2 * z, 1)
  _layer(e, ("post_quant_conv",), "conv2" if wan else "post_quant_conv", "conv3d", z, z, 1)
  # decoder
  dims, temporal_up = spec.decoder_dims(), spec.temporal_downsample[::-1]
  _layer(e, ("decoder", "conv_in"), "decoder.conv1" if wan else "decoder.conv_in", "conv3d",
         dims[0], z)
  _middle(e, ("decoder", "mid"), "decoder", dims[0], layout)
  j = 0
  for i in range(n_stages):
    inp, out = (dims[i] // 2 if i > 0 else dims[i]), dims[i + 1]
    for r in range(spec.num_res_blocks + 1):
      key = f"decoder.upsamples.{j}" if wan else f"decoder.up_blocks.{i}.resnets.{r}"
      _res(e, ("decoder", f"stage_{i}", f"res_{r}"), key, inp, out, layout)
      inp, j = out, j + 1
    if i != n_stages - 1:
      key = f"decoder.upsamples.{j}" if wan else f"decoder.up_blocks.{i}.upsamplers.0"
      _resample(e, ("decoder", f"stage_{i}", "resample"), key, out, out // 2, temporal_up[i],
                2 * out)
      j += 1
  _gamma(e, ("decoder", "head_norm"), "decoder.head.0" if wan else "decoder.norm_out", dims[-1])
  _layer(e, ("decoder", "head_conv"), "decoder.head.2" if wan else "decoder.conv_out", "conv3d",
         PIXELS, dims[-1])
  return e


# ------------------------------------------------------------------ spec from shapes
def detect_layout(keys) -> str:
  keys = set(keys)
  if "encoder.conv1.weight" in keys:
    return "wan"
  if "encoder.conv_in.weight" in keys:
    return "diffusers"
  raise ConvertError("not a Wan VAE checkpoint: neither encoder.conv1.weight (Wan) nor "
                     "encoder.conv_in.weight (Diffusers AutoencoderKLWan) is in it")


def infer_spec(ckpt: Checkpoint, layout: str) -> VAESpec:
  """Base dim, z_dim, stages, res blocks per stage and temporal downsampling from the encoder."""
  t = ckpt.tensors
  first = "encoder.conv1.weight" if layout == "wan" else "encoder.conv_in.weight"
  post = "conv2.weight" if layout == "wan" else "post_quant_conv.weight"
  if post not in t:
    raise ConvertError(f"{ckpt.path}: missing {post!r} (expected a full Wan VAE)")
  dim, z_dim = t[first].shape[0], t[post].shape[0]
  down = "encoder.downsamples" if layout == "wan" else "encoder.down_blocks"
  conv = "residual.2" if layout == "wan" else "conv1"
  pattern = re.compile(rf"^{re.escape(down)}\.(\d+)\.")
  count = 1 + max((int(m.group(1)) for k in t if (m := pattern.match(k))), default=-1)
  stage_out, temporal, res_in_stage, res_counts = [], [], 0, []
  for j in range(count):
    if f"{down}.{j}.{conv}.weight" in t:
      res_in_stage += 1
      width = t[f"{down}.{j}.{conv}.weight"].shape[0]
    elif f"{down}.{j}.resample.1.weight" in t:
      stage_out.append(width)
      res_counts.append(res_in_stage)
      temporal.append(f"{down}.{j}.time_conv.weight" in t)
      res_in_stage = 0
    else:
      raise ConvertError(f"{ckpt.path}: {down}.{j} is neither a residual block nor a resample "
                         f"(attention inside the encoder stages is not supported)")
  if not res_in_stage:
    raise ConvertError(f"{ckpt.path}: the encoder has no residual blocks after its last resample")
  stage_out.append(width)
  res_counts.append(res_in_stage)
  if len(set(res_counts)) != 1 or any(w % dim for w in stage_out):
    raise ConvertError(f"{ckpt.path}: irregular encoder stages (blocks {res_counts}, widths "
                       f"{stage_out}, base {dim})")
  try:
    return VAESpec(dim=dim, z_dim=z_dim, dim_mult=tuple(w // dim for w in stage_out),
                   num_res_blocks=res_counts[0], temporal_downsample=tuple(temporal))
  except ConfigError as e:
    raise ConvertError(f"{ckpt.path}: {e}") from e


# ------------------------------------------------------------------ conversion
def _to_flax(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv3d":
    return np.transpose(value, (2, 3, 4, 1, 0))  # [O, I, t, h, w] -> [t, h, w, I, O]
  if kind == "conv2d":
    return np.transpose(value, (2, 3, 1, 0))     # [O, I, h, w] -> [h, w, I, O]
  if kind == "proj":
    return np.transpose(value[:, :, 0, 0])       # [O, I, 1, 1] -> [I, O]
  if kind == "gamma":
    return value.reshape(-1)                     # [C, 1, 1(, 1)] -> [C]
  return value


def convert(ckpt: Checkpoint) -> tuple[VAESpec, dict]:
  """The strict conversion of an opened checkpoint (see the module docstring)."""
  layout = detect_layout(ckpt.tensors)
  spec = infer_spec(ckpt, layout)
  flat, used = {}, set()
  for entry in expected_entries(spec, layout):
    ref = ckpt.tensors.get(entry.key)
    if ref is None:
      raise ConvertError(f"{ckpt.path}: missing tensor {entry.key!r} for a VAE of {spec}")
    if tuple(ref.shape) != entry.shape:
      raise ConvertError(f"{ckpt.path}: tensor {entry.key!r} has shape {tuple(ref.shape)}, "
                         f"expected {entry.shape}")
    flat[entry.path] = _to_flax(np.asarray(ref.load(), np.float32), entry.kind)
    used.add(entry.key)
  extra = sorted(set(ckpt.tensors) - used)
  if extra:
    raise ConvertError(f"{ckpt.path}: {len(extra)} unexpected tensor(s), first {extra[0]!r}")
  return spec, traverse_util.unflatten_dict(flat)


def convert_state_dict(state: dict[str, np.ndarray], name: str = "<state dict>"
                       ) -> tuple[VAESpec, dict]:
  """The same conversion for an in-memory {key: array} state dict in either layout."""
  refs = {k: TensorRef(k, tuple(v.shape), str(v.dtype), name, functools.partial(np.asarray, v))
          for k, v in state.items()}
  return convert(Checkpoint(path=name, files=(), tensors=refs))


def random_state_dict(spec: VAESpec, layout: str = "wan", seed: int = 0) -> dict[str, np.ndarray]:
  """Random float32 weights in PyTorch shapes (fan-in scaled kernels, norms near 1, small biases)
  for tests and benchmarks."""
  rng = np.random.default_rng(seed)
  state = {}
  for entry in expected_entries(spec, layout):
    if entry.kind == "gamma":
      value = 1.0 + 0.1 * rng.standard_normal(entry.shape)
    elif entry.kind == "bias":
      value = 0.02 * rng.standard_normal(entry.shape)
    else:
      value = rng.standard_normal(entry.shape) / np.sqrt(np.prod(entry.shape[1:]))
    state[entry.key] = value.astype(np.float32)
  return state


def load_wan_vae(path: str | os.PathLike) -> tuple[VAESpec, dict]:
  """(spec, params) from Wan2.1_VAE.pth, a safetensors file with its keys, or a Diffusers VAE."""
  ckpt = open_checkpoint(os.fspath(path))
  try:
    return convert(ckpt)
  finally:
    ckpt.close()
