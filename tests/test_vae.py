"""Wan VAE: parity with Diffusers' `AutoencoderKLWan` (same random weights), streaming decode,
frame arithmetic, both key layouts and one-line errors.

A tiny VAE (base dim 8) is built with Diffusers, its random state dict is written under the ORIGINAL
Wan2.1 key names (.pth) and under the Diffusers names (safetensors), both are read with
`load_wan_vae`, and our encode/decode are compared with the PyTorch modules (float32).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from blockvid_jax.convert.wan_vae import expected_entries, load_wan_vae
from blockvid_jax.models import vae as vae_module
from blockvid_jax.models.vae import LATENT_MEAN, LATENT_STD, VAESpec, WanVAE, output_frames
from blockvid_jax.errors import ConfigError, ConvertError

TINY = VAESpec(dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
               temporal_downsample=(False, True, True))
TOL = 1e-4  # relative L2, float32 vs float32


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _wan_key_map(spec: VAESpec) -> dict[str, str]:
  """Diffusers name -> original Wan name (the two layouts list the same tensors in one order)."""
  return {d.key: w.key for d, w in zip(expected_entries(spec, "diffusers"),
                                       expected_entries(spec, "wan"))}


@pytest.fixture(scope="module")
def reference():
  """(diffusers model, state dict as NumPy under Diffusers names)."""
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(0)
  model = diffusers.AutoencoderKLWan(
      base_dim=TINY.dim, z_dim=TINY.z_dim, dim_mult=list(TINY.dim_mult),
      num_res_blocks=TINY.num_res_blocks, attn_scales=[],
      temperal_downsample=list(TINY.temporal_downsample)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():  # non-trivial norms and biases
      if name.endswith("gamma"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.05 * torch.randn_like(p))
  state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  return model, state


@pytest.fixture(scope="module")
def wan_pth(reference, tmp_path_factory):
  torch = pytest.importorskip("torch")
  _, state = reference
  names = _wan_key_map(TINY)
  path = tmp_path_factory.mktemp("vae") / "Wan2.1_VAE.pth"
  torch.save({names[k]: torch.from_numpy(v) for k, v in state.items()}, str(path))
  return path


@pytest.fixture(scope="module")
def vae(wan_pth):
  spec, params = load_wan_vae(wan_pth)
  return WanVAE(spec, params)


@pytest.fixture(scope="module")
def video():
  rng = np.random.default_rng(0)
  return rng.uniform(-1, 1, size=(1, 9, 16, 16, 3)).astype(np.float32)  # [B, T, H, W, 3]


def _torch_decode(model, z):
  """Diffusers' frame-by-frame decode without the final clamp: [B, C, F, h, w] -> [B, 3, T, H, W]."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    model.clear_cache()
    x = model.post_quant_conv(z)
    outs = []
    for i in range(x.shape[2]):
      model._conv_idx = [0]  # pylint: disable=protected-access
      outs.append(model.decoder(x[:, :, i:i + 1], feat_cache=model._feat_map,  # pylint: disable=protected-access
                                feat_idx=model._conv_idx, first_chunk=i == 0))  # pylint: disable=protected-access
    model.clear_cache()
    return torch.cat(outs, 2).numpy()


# ------------------------------------------------------------------ parity
@pytest.mark.torch
def test_spec_inferred_from_original_layout(vae):
  assert vae.spec == TINY


@pytest.mark.torch
def test_encode_matches_diffusers(reference, vae, video):
  import torch  # pylint: disable=import-outside-toplevel
  model, _ = reference
  with torch.no_grad():
    mu = model.encode(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).latent_dist.mean
  expected = (mu.permute(0, 2, 3, 4, 1).numpy() - np.array(LATENT_MEAN)) / np.array(LATENT_STD)
  latents = vae.encode(video)
  assert latents.shape == (1, 3, 2, 2, 16)
  assert _rel_err(latents, expected) < TOL


@pytest.mark.torch
def test_decode_matches_diffusers(reference, vae):
  import torch  # pylint: disable=import-outside-toplevel
  model, _ = reference
  z = np.random.default_rng(1).normal(size=(1, 3, 2, 2, 16)).astype(np.float32)  # [B, F, h, w, C]
  raw = z * np.array(LATENT_STD, np.float32) + np.array(LATENT_MEAN, np.float32)
  expected = _torch_decode(model, torch.from_numpy(raw).permute(0, 4, 1, 2, 3))
  frames = vae.decode(z)
  assert frames.shape == (1, 9, 16, 16, 3)
  assert _rel_err(frames, np.transpose(expected, (0, 2, 3, 4, 1))) < TOL


@pytest.mark.torch
def test_diffusers_safetensors_layout(reference, vae, tmp_path, video):
  _, state = reference
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  save_file(state, str(path))
  spec, params = load_wan_vae(tmp_path)  # the folder works too
  assert spec == TINY
  other = WanVAE(spec, params)
  np.testing.assert_array_equal(np.asarray(other.encode(video)), np.asarray(vae.encode(video)))


@pytest.mark.torch
def test_wan_safetensors_layout(wan_pth, vae, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  state = {k: v.numpy() for k, v in torch.load(str(wan_pth), weights_only=True).items()}
  save_file(state, str(tmp_path / "vae.safetensors"))
  spec, params = load_wan_vae(tmp_path / "vae.safetensors")
  z = np.zeros((1, 1, 2, 2, 16), np.float32)
  np.testing.assert_array_equal(np.asarray(WanVAE(spec, params).decode(z)),
                                np.asarray(vae.decode(z)))


# ------------------------------------------------------------------ streaming
@pytest.mark.torch
def test_streaming_decode_equals_full_decode(vae):
  z = np.random.default_rng(2).normal(size=(1, 5, 2, 2, 16)).astype(np.float32)
  full = np.asarray(vae.decode(z))
  cache = vae.init_decode_cache(1, 2, 2)
  cache, first = vae.decode_chunk(cache, z[:, :2])  # 2 latent frames, then 1, 1, 1
  pieces, compiled = [np.asarray(first)], vae_module._decode_later._cache_size()  # pylint: disable=protected-access
  for i in (2, 3, 4):
    cache, frames = vae.decode_chunk(cache, z[:, i:i + 1])
    pieces.append(np.asarray(frames))
  assert [p.shape[1] for p in pieces] == [5, 4, 4, 4]
  streamed = np.concatenate(pieces, axis=1)
  assert streamed.shape == full.shape == (1, 17, 16, 16, 3)
  assert np.abs(streamed - full).max() < 1e-5
  # frame 0 + 1 later frame, then chunks of 1 frame: every later chunk reuses one compilation
  assert vae_module._decode_later._cache_size() == compiled  # pylint: disable=protected-access


@pytest.mark.torch
def test_bfloat16_decode_is_close(wan_pth, vae):
  spec, params = load_wan_vae(wan_pth)
  z = np.random.default_rng(3).normal(size=(1, 2, 2, 2, 16)).astype(np.float32)
  fast = WanVAE(spec, params, dtype="bfloat16").decode(z)
  assert fast.dtype == jnp.float32
  assert _rel_err(fast, vae.decode(z)) < 5e-2


# ------------------------------------------------------------------ arithmetic and errors
def test_frame_arithmetic():
  spec = VAESpec()
  assert (spec.spatial_factor, spec.temporal_factor) == (8, 4)
  assert [spec.num_video_frames(f) for f in (1, 2, 21)] == [1, 5, 81]
  assert [spec.num_latent_frames(t) for t in (1, 5, 81)] == [1, 2, 21]
  assert output_frames(spec, 3, started=False) == 9 and output_frames(spec, 3, started=True) == 12
  with pytest.raises(ConfigError, match="1 \\+ 4k"):
    spec.num_latent_frames(8)


@pytest.mark.torch
def test_pixel_size_not_multiple_of_8(vae):
  with pytest.raises(ConfigError) as e:
    vae.encode(np.zeros((1, 1, 20, 16, 3), np.float32))
  assert "not a multiple of 8" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.torch
def test_wrong_shaped_checkpoint(reference, tmp_path):
  _, state = reference
  bad = dict(state)
  key = "decoder.up_blocks.1.resnets.0.conv1.weight"
  bad[key] = np.zeros((3,) + bad[key].shape[1:], np.float32)
  save_file(bad, str(tmp_path / "bad.safetensors"))
  with pytest.raises(ConvertError) as e:
    load_wan_vae(tmp_path / "bad.safetensors")
  assert key in str(e.value) and "\n" not in str(e.value)


def test_not_a_vae(tmp_path):
  save_file({"foo.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "x.safetensors"))
  with pytest.raises(ConvertError, match="not a Wan VAE"):
    load_wan_vae(tmp_path / "x.safetensors")


def test_safetensors_weights_need_no_torch(tmp_path):
  """Loading the VAE and umT5 from safetensors and decoding never imports torch."""
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from blockvid_jax.convert.umt5 import expected_shapes  # pylint: disable=import-outside-toplevel
  from blockvid_jax.convert.wan_vae import random_state_dict  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.umt5 import UMT5Spec  # pylint: disable=import-outside-toplevel
  save_file(random_state_dict(TINY), str(tmp_path / "vae.safetensors"))
  t5 = UMT5Spec(vocab_size=50, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=1)
  save_file({k: np.zeros(s, np.float32) for k, s in expected_shapes(t5, "wan").values()},
            str(tmp_path / "t5.safetensors"))
  script = (
      "import sys, numpy as np\n"
      "from blockvid_jax.convert import load_umt5, load_wan_vae\n"
      "from blockvid_jax.models.vae import WanVAE\n"
      f"spec, p = load_wan_vae({str(tmp_path / 'vae.safetensors')!r})\n"
      "WanVAE(spec, p).decode(np.zeros((1, 2, 2, 2, 16), np.float32))\n"
      f"load_umt5({str(tmp_path / 't5.safetensors')!r})\n"
      "assert 'torch' not in sys.modules, 'torch was imported'\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=root)
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                     cwd=str(tmp_path), timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
