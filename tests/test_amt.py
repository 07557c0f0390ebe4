"""AMT-S (Motion): Flax port + converter against VBench's PyTorch AMT-S with random weights.

The reference is vbench 0.1.5's own `third_party/amt` network and padding/tensor helpers (test
extra; see `torch_reference`), run as VBench's `MotionSmoothness.motion_score` does (even frames
in, odd frames interpolated at embt 0.5, one iteration, replicate padding to a multiple of 16,
uint8 by truncation). Sizes: 128x160 (padded from 120x150), the smallest where the 4-level
correlation pyramid keeps >= 2 pixels per side. Without torch: sampling / warping literals, padding
and converter errors.
"""

import numpy as np
import pytest

from blockvid_jax.evaluate import amt, convert_amt, convert_vit, scorers

import torch_reference

from blockvid_jax.errors import ConvertError

ARCH = torch_reference.amt_s_arch()
needs_ref = pytest.mark.skipif(ARCH is None, reason="needs torch + vbench (test extra)")


def torch_model(seed=0):
  import torch
  torch.manual_seed(seed)
  m = ARCH.Model(corr_radius=3, corr_lvls=4, num_flows=3).eval()
  with torch.no_grad():
    for name, p in m.named_parameters():
      if p.ndim == 1:
        p.add_(torch.randn_like(p) * 0.05)     # PReLU slopes and biases away from their init
  return m


def state_dict(model, prefix="state_dict."):
  return {prefix + k: v.detach().numpy() for k, v in model.state_dict().items()}


def rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - b) / np.maximum(np.abs(b), 1e-6)))


# ----------------------------------------------------------------------------- without torch


def test_bilinear_sample_zeros_and_border():
  img = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)           # rows 0..2, cols 0..3
  x = np.array([[0.5, -1.0, 3.0, 4.0]], np.float32)
  y = np.array([[1.0, 0.0, 2.5, 0.0]], np.float32)
  zeros = np.asarray(amt.bilinear_sample(img, x, y, border=False))[0, :, 0]
  border = np.asarray(amt.bilinear_sample(img, x, y, border=True))[0, :, 0]
  np.testing.assert_allclose(zeros, [4.5, 0.0, 11 * 0.5, 0.0])
  np.testing.assert_allclose(border, [4.5, 0.0, 11.0, 3.0])


def test_warp_integer_flow_is_a_shift_with_edge_padding():
  img = np.random.default_rng(0).normal(size=(1, 5, 6, 2)).astype(np.float32)
  flow = np.zeros((1, 5, 6, 2), np.float32)
  flow[..., 0] = 1.0                                                   # sample one column right
  got = np.asarray(amt.warp(img, flow))
  np.testing.assert_allclose(got[:, :, :-1], img[:, :, 1:], atol=1e-6)
  np.testing.assert_allclose(got[:, :, -1], img[:, :, -1], atol=1e-6)


def test_input_padder_rule():
  assert convert_amt.pads(120) == (4, 4) and convert_amt.pads(150) == (5, 5)
  assert convert_amt.pads(128) == (0, 0) and convert_amt.pads(17) == (7, 8)


def test_converter_errors_are_one_line():
  with pytest.raises(ConvertError, match="feat_encoder.conv1.weight"):
    convert_amt.convert_amt({"state_dict.x.weight": np.zeros((2, 2, 1, 1), np.float32)})
  with pytest.raises(ConvertError, match="unexpected parameter"):
    convert_amt.convert_amt({"a.weight": np.zeros((2, 2), np.float32),
                             "a.bias": np.zeros((2,), np.float32)})


# ----------------------------------------------------------------------------- parity


@needs_ref
def test_midpoints_match_vbench_amt_s():
  import torch
  model = torch_model()
  interp = convert_amt.AmtInterpolator(convert_amt.convert_amt(state_dict(model)))
  rng = np.random.default_rng(1)
  a = rng.uniform(0, 1, (2, 128, 160, 3)).astype(np.float32)
  b = np.clip(np.roll(a, 2, axis=2) + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
  with torch.no_grad():
    ta, tb = (torch.from_numpy(x.transpose(0, 3, 1, 2)) for x in (a, b))
    want = model(ta, tb, torch.full((2, 1, 1, 1), 0.5), scale_factor=1.0, eval=True)["imgt_pred"]
  want = want.numpy().transpose(0, 2, 3, 1)
  got = interp.midpoints(a, b)
  assert np.abs(got - want).max() < 1e-4


def vbench_motion_score(model, frames):
  """VBench's MotionSmoothness.motion_score on uint8 frames [T, H, W, 3] (its helpers, CPU)."""
  import torch
  from vbench.third_party.amt.utils.utils import InputPadder, img2tensor, tensor2img
  inputs = [img2tensor(f) for f in frames[0::2]]
  padder = InputPadder(inputs[0].shape, 16)
  inputs = padder.pad(*inputs)
  outputs = [inputs[0]]
  embt = torch.tensor(1 / 2).float().view(1, 1, 1, 1)
  for in_0, in_1 in zip(inputs[:-1], inputs[1:]):
    with torch.no_grad():
      outputs += [model(in_0, in_1, embt, scale_factor=1.0, eval=True)["imgt_pred"], in_1]
  outputs = [tensor2img(o) for o in padder.unpad(*outputs)]
  diffs = [np.mean(np.abs(o.astype(np.int16) - i.astype(np.int16)))
           for o, i in zip(frames[1::2], outputs[1::2])]
  return (255.0 - np.mean(diffs)) / 255.0


@needs_ref
def test_motion_score_matches_vbench_procedure(tmp_path):
  from blockvid_jax.evaluate import weights
  model = torch_model(seed=2)
  base = np.random.default_rng(2).integers(0, 256, (1, 120, 150, 3)).astype(np.float32)
  frames = np.stack([np.roll(base[0], 3 * t, axis=1) for t in range(5)]).astype(np.uint8)
  want = vbench_motion_score(model, frames)
  standin = scorers.build("motion", scorers.ScorerOptions(tmp_path))
  assert standin.paper_metric is False and "NOT the paper" in standin.description
  sd = dict(state_dict(model), **{"optimizer.state.0.exp_avg": np.zeros(3, np.float32)})
  weights.save_state_dict(tmp_path / "amt-s.npz", sd)             # VBench's {"state_dict": ...}
  scorer = scorers.build("motion", scorers.ScorerOptions(tmp_path, batch_size=2))
  assert scorer.paper_metric is True and "AMT-S" in scorer.description
  got = scorer.score(frames)
  assert rel_err(got, want) < 1e-3, (got, want)


@needs_ref
def test_evaluate_cli_reports_amt_as_paper_metric(tmp_path):
  import json
  from blockvid_jax import video_io
  from blockvid_jax.evaluate import cli, weights
  wdir, vdir, out = tmp_path / "w", tmp_path / "v", tmp_path / "out"
  wdir.mkdir()
  weights.save_state_dict(wdir / "amt-s.npz", state_dict(torch_model(seed=3)))
  base = np.random.default_rng(3).integers(0, 256, (120, 150, 3)).astype(np.uint8)  # compiled above
  video_io.write_video(vdir / "a.mp4", np.stack([np.roll(base, 2 * t, axis=1) for t in range(6)]))
  assert cli.main(["--videos", str(vdir), "--out", str(out), "--weights_dir", str(wdir),
                   "--metrics", "motion", "--n_chunks", "2", "--batch_size", "2", "--quiet"]) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["metrics"]["motion"]["paper_metric"] is True
  ms = summary["vbench"]["motion_smoothness"]
  assert ms["paper_metric"] is True and 0.0 < ms["per_video"]["a.mp4"] <= 1.0
