"""MUSIQ (Clarity): Flax port + converter against pyiqa's PyTorch `MUSIQ` with random weights.

The reference is pyiqa 0.1.16's own architecture file (test extra; see `torch_reference`), run in
float64 at tiny sizes (width 32, 2 layers, longer sides 40 / 64, 30x70 images: resized scales are
padded, the original resolution is not). Also without torch: token layout, hashing, converter
errors, and the `clarity` registry entry switching to MUSIQ when its weights file is present.
"""

import numpy as np
import pytest

from blockvid_jax.evaluate import convert_musiq, convert_vit, scorers
from blockvid_jax.evaluate.musiq import (MusiqSpec, hashed_positions, multiscale_tokens,
                                         vbench_frames)

import torch_reference

from blockvid_jax.errors import ConvertError

ARCH = torch_reference.musiq_arch()
needs_ref = pytest.mark.skipif(ARCH is None, reason="needs torch + pyiqa (test extra)")
TINY = dict(hidden_size=32, mlp_dim=48, num_heads=2, num_layers=2, num_scales=3,
            spatial_pos_grid_size=4, longer_side_lengths=[64, 40])


def torch_model(seed=0, **overrides):
  import torch
  torch.manual_seed(seed)
  kw = dict(TINY, **overrides)
  m = ARCH.MUSIQ(pretrained=False, pretrained_model_path=None, **kw).double().eval()
  with torch.no_grad():
    for name, p in m.named_parameters():
      if p.ndim == 1 or "emb" in name or name.endswith("cls"):
        p.add_(torch.randn_like(p) * 0.2)   # norms, embeddings and class token away from init
  return m


def state_dict(model):
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def ours(model):
  spec, params = convert_musiq.convert_musiq(state_dict(model), 16, (40, 64))
  return convert_musiq.MusiqQuality(spec, params, batch_size=2)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6)))


# ----------------------------------------------------------------------------- without torch


def test_token_layout_pads_resized_scales_only():
  spec = MusiqSpec(hidden=8, grid=4, longer_side_lengths=(40, 64))
  patches, pos, scale, mask = multiscale_tokens(np.zeros((1, 30, 70, 3), np.float32), spec)
  # 40: 17x40 -> 1x2 patches, padded to 4; 64: 27x64 -> 1x2, padded to 4; original 30x70 -> 1x3
  assert patches.shape == (1, 11, 32, 32, 3)
  np.testing.assert_array_equal(scale, [0, 0, 0, 0, 1, 1, 0, 0, 2, 2, 2])   # padding: all zero
  np.testing.assert_array_equal(mask, [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(pos, [0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 2])
  # SAME padding is zero in the [-1, 1] domain (17x40 in 32x64: rows 7..23, cols 12..51 are image)
  assert np.all(patches[0, 2:4] == 0) and np.all(patches[0, 0, :7] == 0)
  assert np.allclose(patches[0, 0, 7:24, 12:], -1.0, atol=1e-5)
  assert np.all(patches[0, 0, 7:24, :12] == 0)


def test_hashed_positions_literal():
  np.testing.assert_array_equal(hashed_positions(4, 2, 3), [0, 1, 2, 8, 9, 10])
  np.testing.assert_array_equal(hashed_positions(3, 3, 3), np.arange(9))


def test_vbench_frames_resizes_longer_side_only_when_larger():
  f = np.random.default_rng(0).integers(0, 256, (2, 30, 70, 3), dtype=np.uint8)
  assert vbench_frames(f, max_side=70).shape == (2, 30, 70, 3)
  out = vbench_frames(f, max_side=50)
  assert out.shape == (2, 21, 50, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(np.round(out * 255), np.round(out * 255).astype(np.uint8))


def test_converter_names_missing_key():
  with pytest.raises(ConvertError, match="embedding.weight"):
    convert_musiq.convert_musiq({"conv_root.weight": np.zeros((64, 3, 7, 7), np.float32)})


# ----------------------------------------------------------------------------- parity


@needs_ref
def test_patches_match_pyiqa():
  import torch
  from pyiqa.data.multiscale_trans_util import (get_hashed_spatial_pos_emb_index,
                                                get_multiscale_patches)
  for rows, cols in [(1, 3), (3, 7), (5, 2), (4, 4), (12, 9)]:
    want = get_hashed_spatial_pos_emb_index(4, rows, cols).numpy().reshape(-1)
    np.testing.assert_array_equal(hashed_positions(4, rows, cols), want)
  img = np.random.default_rng(1).uniform(-1, 1, (2, 30, 70, 3))
  ref = get_multiscale_patches(torch.from_numpy(img.transpose(0, 3, 1, 2)), 32, 32, 4, [64, 40],
                               -1).numpy()                                        # [B, L, 3P^2+3]
  spec = MusiqSpec(hidden=8, grid=4, longer_side_lengths=(40, 64))
  patches, pos, scale, mask = multiscale_tokens((img / 2 + 0.5).astype(np.float32), spec)
  got = patches.transpose(0, 1, 4, 2, 3).reshape(2, 11, -1)                       # (c, kh, kw)
  np.testing.assert_allclose(got, ref[..., :-3], atol=2e-5)
  np.testing.assert_array_equal(pos, ref[0, :, -3])
  np.testing.assert_array_equal(scale, ref[0, :, -2])
  np.testing.assert_array_equal(mask, ref[0, :, -1])


@needs_ref
@pytest.mark.parametrize("num_class", [1, 10])
def test_scores_match_pyiqa(num_class):
  import torch
  model = torch_model(num_class=num_class)
  img = np.random.default_rng(2).uniform(0, 1, (3, 30, 70, 3))
  with torch.no_grad():
    want = model(torch.from_numpy(img.transpose(0, 3, 1, 2))).numpy().reshape(-1)  # [3]
  got = ours(model).scores(img.astype(np.float32))
  assert got.shape == (3,)
  assert rel_err(got, want) < 1e-3, (got, want)


@needs_ref
def test_vbench_resize_matches_torchvision_rule():
  """torchvision Resize(antialias=False) on uint8: float32 bilinear, rounded. Bit-exact except a
  few exact .5 ties that PyTorch's float32 order rounds the other way (<= 1 level, < 0.1%)."""
  import torch
  import torch.nn.functional as F
  for shape, side in [((2, 40, 90, 3), 70), ((1, 480, 832, 3), 512), ((2, 33, 17, 3), 20)]:
    frames = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    got = np.round(vbench_frames(frames, side) * 255.0)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    want = torch.round(F.interpolate(x, got.shape[1:3], mode="bilinear", align_corners=False))
    diff = np.abs(got - want.permute(0, 2, 3, 1).numpy())
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


@needs_ref
def test_quality_fn_matches_reference_on_vbench_input():
  """The scorer's uint8 path = the reference MUSIQ on the VBench-resized frames."""
  import torch
  model = torch_model(seed=3)
  frames = np.random.default_rng(3).integers(0, 256, (3, 40, 90, 3), dtype=np.uint8)
  x = vbench_frames(frames, max_side=70)                                 # [3, 31, 70, 3]
  assert x.shape == (3, 31, 70, 3)
  with torch.no_grad():
    want = model(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()).numpy().reshape(-1)
  quality = ours(model)
  quality.max_side = 70
  got = quality(frames)
  assert rel_err(got, want) < 1e-3, (got, want)


@needs_ref
def test_clarity_registry_uses_musiq_when_weights_present(tmp_path):
  from blockvid_jax.evaluate import weights
  standin = scorers.build("clarity", scorers.ScorerOptions(tmp_path))
  assert standin.paper_metric is False and "NOT the paper" in standin.description
  model = torch_model(seed=4, longer_side_lengths=[224, 384])
  weights.save_state_dict(tmp_path / "musiq_spaq_ckpt-358bb6af.npz", state_dict(model))
  scorer = scorers.build("clarity", scorers.ScorerOptions(tmp_path, head_dim=16, batch_size=2))
  assert scorer.paper_metric is True and "MUSIQ" in scorer.description
  frames = np.random.default_rng(4).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
  import torch
  with torch.no_grad():
    want = model(torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255.0).numpy().mean()
  assert rel_err(scorer.score(frames), want) < 1e-3


@needs_ref
def test_evaluate_cli_reports_musiq_as_paper_metric(tmp_path):
  import json
  from blockvid_jax import video_io
  from blockvid_jax.evaluate import cli, weights
  model = torch_model(seed=5, longer_side_lengths=[224, 384])
  wdir, vdir = tmp_path / "w", tmp_path / "v"
  wdir.mkdir()
  weights.save_state_dict(wdir / "musiq_spaq_ckpt-358bb6af.npz", state_dict(model))
  frames = np.random.default_rng(5).integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
  video_io.write_video(vdir / "a.mp4", frames)
  out = tmp_path / "out"
  assert cli.main(["--videos", str(vdir), "--out", str(out), "--weights_dir", str(wdir),
                   "--metrics", "clarity", "--n_chunks", "2", "--head_dim", "16", "--quiet"]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["metrics"]["clarity"]["paper_metric"] is True
  iq = summary["vbench"]["imaging_quality"]
  chunks = summary["metrics"]["clarity"]["chunk_scores"]["a.mp4"]
  assert iq["paper_metric"] is True
  assert iq["per_video"]["a.mp4"] == pytest.approx(np.mean(chunks) / 100)
