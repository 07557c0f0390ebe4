"""Tiny DINO- and CLIP-shaped ViTs: PyTorch key layout -> converter -> Flax == NumPy reference.

The references below are written from the public model definitions (DINO `vision_transformer.py`,
OpenAI CLIP `model.py`), independently of the Flax code: per-patch einsum convolution, scalar-loop
bicubic interpolation of the position grid, torch's qkv / in_proj head layouts. Also: preprocessing
shapes and value ranges on non-square frames, and (with torch) the resize kernels against
`F.interpolate`.
"""

import math
import sys

import jax
import numpy as np
import pytest

from blockvid_jax.evaluate import convert_vit, features, preprocess, weights
from blockvid_jax.evaluate.resize import resize_matrix
from blockvid_jax.evaluate.vit import ViT
from blockvid_jax.errors import ConvertError, WeightsError

WIDTH, DEPTH, HEADS, PATCH, GRID = 32, 2, 2, 16, 2
HEAD_DIM = WIDTH // HEADS


def _rand(rng, *shape, scale=0.2):
  return (rng.normal(size=shape) * scale).astype(np.float32)


def dino_state(seed=0):
  r = np.random.default_rng(seed)
  d, m = WIDTH, 2 * WIDTH
  sd = {"cls_token": _rand(r, 1, 1, d), "pos_embed": _rand(r, 1, GRID * GRID + 1, d),
        "patch_embed.proj.weight": _rand(r, d, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": _rand(r, d), "norm.weight": 1 + _rand(r, d),
        "norm.bias": _rand(r, d), "head.weight": _rand(r, 5, d)}
  for i in range(DEPTH):
    p = f"blocks.{i}."
    sd.update({p + "norm1.weight": 1 + _rand(r, d), p + "norm1.bias": _rand(r, d),
               p + "attn.qkv.weight": _rand(r, 3 * d, d), p + "attn.qkv.bias": _rand(r, 3 * d),
               p + "attn.proj.weight": _rand(r, d, d), p + "attn.proj.bias": _rand(r, d),
               p + "norm2.weight": 1 + _rand(r, d), p + "norm2.bias": _rand(r, d),
               p + "mlp.fc1.weight": _rand(r, m, d), p + "mlp.fc1.bias": _rand(r, m),
               p + "mlp.fc2.weight": _rand(r, d, m), p + "mlp.fc2.bias": _rand(r, d)})
  return sd


def clip_state(seed=1, out_dim=24):
  r = np.random.default_rng(seed)
  d = WIDTH
  sd = {"visual.conv1.weight": _rand(r, d, 3, PATCH, PATCH, scale=0.05),
        "visual.class_embedding": _rand(r, d), "visual.positional_embedding": _rand(r, 17, d),
        "visual.ln_pre.weight": 1 + _rand(r, d), "visual.ln_pre.bias": _rand(r, d),
        "visual.ln_post.weight": 1 + _rand(r, d), "visual.ln_post.bias": _rand(r, d),
        "visual.proj": _rand(r, d, out_dim), "logit_scale": np.array(4.6, np.float32),
        "token_embedding.weight": _rand(r, 10, d)}
  for i in range(DEPTH):
    p = f"visual.transformer.resblocks.{i}."
    sd.update({p + "ln_1.weight": 1 + _rand(r, d), p + "ln_1.bias": _rand(r, d),
               p + "attn.in_proj_weight": _rand(r, 3 * d, d),
               p + "attn.in_proj_bias": _rand(r, 3 * d),
               p + "attn.out_proj.weight": _rand(r, d, d), p + "attn.out_proj.bias": _rand(r, d),
               p + "ln_2.weight": 1 + _rand(r, d), p + "ln_2.bias": _rand(r, d),
               p + "mlp.c_fc.weight": _rand(r, 4 * d, d), p + "mlp.c_fc.bias": _rand(r, 4 * d),
               p + "mlp.c_proj.weight": _rand(r, d, 4 * d), p + "mlp.c_proj.bias": _rand(r, d)})
  return sd


# ------------------------------------------------------------------ NumPy references (float64)

def ln(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def patchify_conv(img, w, b):
  """img [H, W, 3], torch conv weight [D, 3, p, p] -> tokens [rows*cols, D] in row-major order."""
  p = w.shape[-1]
  rows, cols = img.shape[0] // p, img.shape[1] // p
  chw = img.transpose(2, 0, 1)[:, :rows * p, :cols * p]
  patches = chw.reshape(3, rows, p, cols, p)
  tok = np.einsum("cxiyj,dcij->xyd", patches, w)
  tok = tok if b is None else tok + b
  return tok.reshape(rows * cols, -1)


def torch_bicubic_2d(grid, out_h, out_w, scale_h, scale_w):
  """F.interpolate(mode='bicubic', scale_factor=...) of grid [h, w, D], one output at a time."""
  a = -0.75

  def cubic(x):
    x = abs(x)
    if x <= 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
      return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0

  h, w, _ = grid.shape
  out = np.zeros((out_h, out_w, grid.shape[-1]))
  for oy in range(out_h):
    sy = (oy + 0.5) / scale_h - 0.5
    iy = math.floor(sy)
    for ox in range(out_w):
      sx = (ox + 0.5) / scale_w - 0.5
      ix = math.floor(sx)
      acc = 0.0
      for ky in range(iy - 1, iy + 3):
        for kx in range(ix - 1, ix + 3):
          wgt = cubic(sy - ky) * cubic(sx - kx)
          acc = acc + wgt * grid[min(max(ky, 0), h - 1), min(max(kx, 0), w - 1)]
      out[oy, ox] = acc
  return out


def attention(x, wqkv, bqkv, wo, bo, heads):
  l, d = x.shape
  hd = d // heads
  qkv = x @ wqkv.T + bqkv                                  # [L, 3D]: (q|k|v, head, dim)
  q, k, v = [qkv[:, j * d:(j + 1) * d].reshape(l, heads, hd) for j in range(3)]
  att = softmax(np.einsum("lnh,snh->nls", q, k) / math.sqrt(hd))
  return np.einsum("nls,snh->lnh", att, v).reshape(l, d) @ wo.T + bo


def dino_reference(sd, img):
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  d = sd["cls_token"].shape[-1]
  eps = 1e-6
  gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
  tok = patchify_conv(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
  rows, cols = img.shape[0] // PATCH, img.shape[1] // PATCH
  pos = sd["pos_embed"][0]
  if not (rows * cols == GRID * GRID and img.shape[0] == img.shape[1]):
    g = torch_bicubic_2d(pos[1:].reshape(GRID, GRID, d), rows, cols,
                         (rows + 0.1) / GRID, (cols + 0.1) / GRID)
    pos = np.concatenate([pos[:1], g.reshape(rows * cols, d)])
  x = np.concatenate([sd["cls_token"][0], tok]) + pos
  for i in range(DEPTH):
    p = f"blocks.{i}."
    y = ln(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
    x = x + attention(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"],
                      sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"], HEADS)
    y = ln(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
    y = gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
    x = x + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
  return ln(x, sd["norm.weight"], sd["norm.bias"], eps)[0]


def clip_reference(sd, img):
  sd = {k[len("visual."):]: v.astype(np.float64) for k, v in sd.items() if k.startswith("visual.")}
  eps = 1e-5
  x = patchify_conv(img, sd["conv1.weight"], None)
  x = np.concatenate([sd["class_embedding"][None], x]) + sd["positional_embedding"]
  x = ln(x, sd["ln_pre.weight"], sd["ln_pre.bias"], eps)
  for i in range(DEPTH):
    p = f"transformer.resblocks.{i}."
    y = ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
    x = x + attention(y, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"],
                      sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"], HEADS)
    y = ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps)
    y = y @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
    y = y * (1 / (1 + np.exp(-1.702 * y)))
    x = x + y @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
  return ln(x[0], sd["ln_post.weight"], sd["ln_post.bias"], eps) @ sd["proj"]


def rel_err(got, want):
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("hw", [(32, 48), (48, 32), (32, 32), (64, 64), (40, 56)])
def test_dino_matches_reference(hw):
  sd = dino_state()
  spec, params = convert_vit.convert_dino(sd, head_dim=HEAD_DIM)
  assert (spec.width, spec.depth, spec.num_heads, spec.patch, spec.grid) == (32, 2, 2, 16, 2)
  assert spec.ln_eps == 1e-6 and not spec.quick_gelu and spec.out_dim is None
  imgs = np.random.default_rng(2).normal(size=(3,) + hw + (3,)).astype(np.float32)
  got = np.asarray(jax.jit(ViT(spec).apply)({"params": params}, imgs))  # [3, 32]
  want = np.stack([dino_reference(sd, im) for im in imgs])
  assert got.shape == (3, WIDTH)
  assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("as_visual_only", [False, True])
def test_clip_matches_reference(as_visual_only):
  sd = clip_state()
  src = convert_vit.clip_visual(sd) if as_visual_only else sd
  spec, params = convert_vit.convert_clip(src, head_dim=HEAD_DIM)
  assert (spec.width, spec.num_heads, spec.image_size, spec.out_dim) == (32, 2, 64, 24)
  assert spec.ln_eps == 1e-5 and spec.quick_gelu and spec.ln_pre and not spec.patch_bias
  imgs = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
  got = np.asarray(features.ViTFeatures(spec, params, batch_size=4)(imgs))  # padded batch
  want = np.stack([clip_reference(sd, im) for im in imgs])
  assert got.shape == (2, 24)
  assert rel_err(got, want) < 1e-4
  with pytest.raises(ValueError, match="only accepts 64x64"):
    ViT(spec).apply({"params": params}, imgs[:, :48])


def test_files_round_trip_through_loader(tmp_path):
  """safetensors / npz files in the original key layout load to the same features."""
  from safetensors.numpy import save_file
  sd = dino_state()
  save_file(sd, str(tmp_path / "dino.safetensors"))
  np.savez(tmp_path / "dino.npz", **sd)
  img = np.random.default_rng(4).normal(size=(1, 32, 48, 3)).astype(np.float32)
  want = dino_reference(sd, img[0])
  for name in ("dino.safetensors", "dino.npz"):
    ext = features.load_dino(tmp_path / name, head_dim=HEAD_DIM)
    assert rel_err(ext(img)[0], want) < 1e-4


def test_converter_errors():
  sd = dino_state()
  del sd["blocks.1.mlp.fc2.bias"]
  with pytest.raises(ConvertError, match="blocks.1.mlp.fc2.bias"):
    convert_vit.convert_dino(sd, head_dim=HEAD_DIM)
  with pytest.raises(ConvertError, match="conv1.weight"):
    convert_vit.convert_clip(dino_state(), head_dim=HEAD_DIM)
  with pytest.raises(ConvertError, match="head_dim"):
    convert_vit.convert_dino(dino_state(), head_dim=64)   # width 32 is not a multiple of 64
  k, b = convert_vit.convert_linear_head({"weight": np.ones((1, 24), np.float32),
                                          "bias": np.full((1,), 0.5, np.float32)})
  assert k.shape == (24,) and b == 0.5


def test_dino_full_checkpoint_prefixes():
  sd = {"teacher.backbone." + k: v for k, v in dino_state().items()}
  sd.update({"student.module.backbone.cls_token": np.zeros((1, 1, WIDTH), np.float32)})
  spec, params = convert_vit.convert_dino(sd, head_dim=HEAD_DIM)
  np.testing.assert_array_equal(params["cls_token"], dino_state()["cls_token"].reshape(-1))


def test_preprocess_non_square_shapes_and_ranges():
  frames = np.random.default_rng(5).integers(0, 256, size=(3, 48, 80, 3), dtype=np.uint8)
  frames[0] = 0
  frames[1] = 255
  x = preprocess.dino_preprocess(frames)                    # landscape: shorter side 224
  assert x.shape == (3, 224, 373, 3) and x.dtype == np.float32   # int(224 * 80 / 48) = 373
  lo = (0 - np.array(preprocess.IMAGENET_MEAN)) / np.array(preprocess.IMAGENET_STD)
  hi = (1 - np.array(preprocess.IMAGENET_MEAN)) / np.array(preprocess.IMAGENET_STD)
  assert np.all(x >= lo - 1e-5) and np.all(x <= hi + 1e-5)
  np.testing.assert_allclose(x[0], np.broadcast_to(lo, x[0].shape), atol=1e-5)
  np.testing.assert_allclose(x[1], np.broadcast_to(hi, x[1].shape), atol=1e-5)
  portrait = frames.transpose(0, 2, 1, 3)                     # [3, 80, 48, 3]
  assert preprocess.dino_preprocess(portrait).shape == (3, 373, 224, 3)
  c = preprocess.clip_preprocess(portrait)
  assert c.shape == (3, 224, 224, 3) and c.dtype == np.float32
  lo = (0 - np.array(preprocess.CLIP_MEAN)) / np.array(preprocess.CLIP_STD)
  hi = (1 - np.array(preprocess.CLIP_MEAN)) / np.array(preprocess.CLIP_STD)
  assert np.all(c >= lo - 1e-5) and np.all(c <= hi + 1e-5)    # bicubic overshoot is clamped
  r = preprocess.resize_uint8(frames, (30, 50), "bicubic")
  assert r.min() >= 0 and r.max() <= 255 and np.all(r == np.round(r))
  same = preprocess.dino_preprocess(np.zeros((1, 224, 300, 3), np.uint8))
  assert same.shape == (1, 224, 300, 3)                       # already 224: no resize


def test_center_crop_offsets():
  x = np.arange(7 * 5).reshape(1, 7, 5, 1)
  np.testing.assert_array_equal(preprocess.center_crop(x, 3)[0, :, :, 0], x[0, 2:5, 1:4, 0])


@pytest.mark.torch
def test_resize_and_pos_interpolation_match_torch(tmp_path):
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(6)
  for method in ("bilinear", "bicubic"):
    for n_in, n_out in [(48, 224), (80, 373), (480, 224), (7, 3)]:
      x = rng.normal(size=(1, 1, n_in, 2)).astype(np.float32)
      want = F.interpolate(torch.from_numpy(x), size=(n_out, 2), mode=method,
                           align_corners=False).numpy()[0, 0]
      np.testing.assert_allclose(resize_matrix(n_in, n_out, method) @ x[0, 0], want, atol=1e-4)
  g = rng.normal(size=(GRID, GRID, 4))
  want = F.interpolate(torch.from_numpy(g.transpose(2, 0, 1)[None]),
                       scale_factor=(2.1 / GRID, 3.1 / GRID), mode="bicubic").numpy()[0]
  ours = torch_bicubic_2d(g, 2, 3, 2.1 / GRID, 3.1 / GRID).transpose(2, 0, 1)
  np.testing.assert_allclose(ours, want, atol=1e-6)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pth_and_torchscript_files(tmp_path):
  """.pth via torch.load(weights_only=True); OpenAI-style TorchScript .pt via torch.jit.load."""
  torch = pytest.importorskip("torch")
  sd = dino_state()
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "d.pth")
  loaded = weights.load_state_dict(tmp_path / "d.pth")
  assert set(loaded) == set(sd) and np.array_equal(loaded["pos_embed"], sd["pos_embed"])

  csd = clip_state()
  root = torch.nn.Module()
  for key, v in csd.items():
    *path, leaf = key.split(".")
    mod = root
    for part in path:
      if not hasattr(mod, part):
        mod.add_module(part, torch.nn.Module())
      mod = getattr(mod, part)
    mod.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(v).half()))  # fp16 like OpenAI
  torch.jit.save(torch.jit.script(root), str(tmp_path / "ViT-B-32.pt"))
  ext = features.load_clip(tmp_path / "ViT-B-32.pt", head_dim=HEAD_DIM)
  img = np.random.default_rng(7).normal(size=(1, 64, 64, 3)).astype(np.float32)
  half = {k: v.astype(np.float16).astype(np.float32) for k, v in csd.items()}
  assert rel_err(ext(img)[0], clip_reference(half, img[0])) < 1e-4


def test_params_check_rejects_wrong_shapes():
  spec, params = convert_vit.convert_clip(clip_state(), head_dim=HEAD_DIM)
  params = jax.tree_util.tree_map(lambda a: a, params)
  params["proj"] = params["proj"][:, :10]
  with pytest.raises(ConvertError, match="proj"):
    features.check_params(spec, params)


def test_pth_without_torch_is_one_line_error(tmp_path, monkeypatch):
  (tmp_path / "x.pth").write_bytes(b"whatever")
  monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` now fails
  with pytest.raises(WeightsError, match="needs torch") as e:
    weights.load_state_dict(tmp_path / "x.pth")
  assert "\n" not in str(e.value)
  assert weights.find(tmp_path, "x.safetensors") == tmp_path / "x.pth"   # same stem is accepted
  assert weights.find(tmp_path, "y.pth") is None
