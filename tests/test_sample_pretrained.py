"""End to end with "public" weights: tiny DiT + Wan VAE + umT5 + tokenizer written in their original
formats -> `python -m blockvid_jax.convert` (DiT) -> `python -m blockvid_jax.sample` streams an mp4;
I2V with --image; missing or mismatched weights give one line, exit 2 and no file.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tiny_pretrained_weights import CONFIG, FRAMES_PER_CHUNK, run_module, write_tiny_pretrained

pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """DIR with the VAE, umT5 and tokenizer files, and the converted DiT params directory."""
  pytest.importorskip("torch")
  pytest.importorskip("sentencepiece")
  return write_tiny_pretrained(tmp_path_factory.mktemp("weights"))


@pytest.fixture()
def prompts(tmp_path):
  p = tmp_path / "p.txt"
  p.write_text("a cat walks on the beach\nwaves crash on dark rocks\n")
  return str(p)


def _sample(weights, out, prompts, *extra):
  return run_module("blockvid_jax.sample", "--config", f"{CONFIG}:{weights}", "--checkpoint",
              str(weights / "dit_params"), "--prompts", prompts, "--num_chunks", "3",
              "--out", str(out), *extra)


def test_streams_an_mp4_with_the_exact_frame_count(weights, prompts, tmp_path):
  from blockvid_jax.video_io import read_video
  out = tmp_path / "v.mp4"
  r = _sample(weights, out, prompts)
  assert r.returncode == 0, r.stderr[-3000:]
  expected = 1 + 4 * (3 * FRAMES_PER_CHUNK - 1)
  assert read_video(str(out)).shape == (expected, 32, 32, 3)
  assert f"{expected} frames written" in r.stderr and "chunks/s" in r.stderr
  assert sorted(os.listdir(tmp_path)) == ["p.txt", "v.mp4"]


def test_image_to_video(weights, prompts, tmp_path):
  from PIL import Image
  from blockvid_jax.video_io import read_video
  image = tmp_path / "first.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(image)
  out = tmp_path / "v.mp4"
  r = _sample(weights, out, prompts, "--image", str(image))
  assert r.returncode == 0, r.stderr[-3000:]
  assert read_video(str(out)).shape[0] == 1 + 4 * (3 * FRAMES_PER_CHUNK - 1)


def _assert_one_line_error(r, needle, out_dir):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
  assert len(err) == 1 and needle in err[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert not [f for f in os.listdir(out_dir) if f.startswith(("v", ".v"))]


def test_missing_and_mismatched_weights_on_the_cli(weights, prompts, tmp_path):
  out = tmp_path / "v.mp4"
  r = _sample(weights, out, prompts, f"--config.autoencoder.checkpoint={tmp_path / 'none.pth'}")
  _assert_one_line_error(r, "autoencoder.checkpoint", tmp_path)
  r = _sample(weights, out, prompts,
              f"--config.text.checkpoint={weights / 'Wan2.1_VAE.pth'}")  # a VAE is no umT5
  _assert_one_line_error(r, "not a umT5", tmp_path)


def test_config_errors_in_process(weights, tmp_path):
  sys.path.insert(0, os.path.dirname(CONFIG))
  import tiny_pretrained_config  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import DiTSpec  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  config = tiny_pretrained_config.get_config(str(weights))
  spec = DiTSpec.from_config(config.model)
  with pytest.raises(ConfigError, match="text_dim 64"):
    generate.make_text_encoder(config, DiTSpec.preset("tiny", text_dim=64))
  config.text.tokenizer = str(tmp_path / "none.model")
  with pytest.raises(ConfigError, match="text.tokenizer .* does not exist"):
    generate.make_text_encoder(config, spec)
  config.text.tokenizer = ""
  with pytest.raises(ConfigError, match="needs text.tokenizer"):
    generate.make_text_encoder(config, spec)
  config.autoencoder.checkpoint = str(weights / "models_t5_umt5-xxl-enc-bf16.pth")
  with pytest.raises(ConfigError, match="not a Wan VAE"):
    generate.make_autoencoder(config, spec)
  config.autoencoder.kind = "toy"
  with pytest.raises(ConfigError, match="--image needs"):
    generate.encode_image(config, generate.make_autoencoder(config, spec), "x.png")


def test_encode_writes_a_latent_folder(weights, tmp_path):
  """Three tiny videos (one corrupt, one too short): one written, two reported; a rerun writes
  nothing; the causal stage trains 2 steps on the folder."""
  import json  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import tiny_pretrained_config  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data.latent_folder import LatentFolderSource  # pylint: disable=import-outside-toplevel
  from blockvid_jax.encode_videos import REPORT, chunk_frame_range, encode_folder  # pylint: disable=import-outside-toplevel
  from blockvid_jax.video_io import write_video  # pylint: disable=import-outside-toplevel
  videos = tmp_path / "videos"
  videos.mkdir()
  rng = np.random.default_rng(0)
  write_video(videos / "clip.mp4", rng.integers(0, 255, (22, 40, 48, 3), np.uint8), fps=8)
  write_video(videos / "short.mp4", rng.integers(0, 255, (4, 32, 32, 3), np.uint8), fps=8)
  (videos / "corrupt.mp4").write_bytes(rng.integers(0, 255, 4096, np.uint8).tobytes())
  (videos / "captions.json").write_text(json.dumps({
      "clip.mp4": [{"start": 0, "end": 1.5, "caption": "a cat walks on the beach"},
                   {"start": 1.5, "end": 9, "caption": "waves crash on dark rocks"}],
      "short.mp4": [{"start": 0, "end": 1, "caption": "a dog"}],
      "corrupt.mp4": [{"start": 0, "end": 1, "caption": "noise"}]}))
  messages = []
  config = tiny_pretrained_config.get_config(str(weights))
  latents = tmp_path / "latents"
  assert encode_folder(config, str(videos), "", str(latents), log=messages.append) == 1
  assert any("skipping short.mp4" in m for m in messages)
  assert any("skipping corrupt.mp4" in m for m in messages)
  report = json.loads((latents / REPORT).read_text())
  assert report["written"] == ["clip.mp4"] and report["done"] == []
  assert sorted(report["skipped"]) == ["corrupt.mp4", "short.mp4"]
  assert "unreadable" in report["skipped"]["corrupt.mp4"]
  assert "fewer than one chunk" in report["skipped"]["short.mp4"]
  assert sorted(os.listdir(latents / "videos")) == ["clip.npz"]  # no temporaries left

  files = [latents / "videos" / "clip.npz", latents / "null_context.npy"]
  before = [(f.stat().st_mtime_ns, f.read_bytes()) for f in files]
  assert encode_folder(config, str(videos), "", str(latents), log=messages.append) == 0  # resumes
  assert [(f.stat().st_mtime_ns, f.read_bytes()) for f in files] == before
  report = json.loads((latents / REPORT).read_text())
  assert report["written"] == [] and report["done"] == ["clip.mp4"]
  assert sorted(report["skipped"]) == ["corrupt.mp4", "short.mp4"]

  source = LatentFolderSource(str(latents))
  example = source[0]
  assert len(source) == 1
  assert example["latents"].shape == (2 * FRAMES_PER_CHUNK, 4, 4, 16)  # 21 of 22 frames used
  assert example["context"].shape == (2, 16, 32)
  assert not np.array_equal(example["context"][0], example["context"][1])  # two captions
  assert source.null_context().shape == (16, 32)
  assert chunk_frame_range(0, 3) == (0, 8) and chunk_frame_range(1, 3) == (9, 20)

  from blockvid_jax.training.config import add_train_defaults  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  train = add_train_defaults(tiny_pretrained_config.get_config(str(weights)))
  train.data.kind = "latents"
  train.data.data_dir = str(latents)
  train.data.window_chunks = 2
  train.data.frames_per_chunk = FRAMES_PER_CHUNK
  train.data.chunks_per_video = 2
  train.data.num_threads = 1
  train.data.prefetch = 1
  train.train.total_steps = 2
  train.train.batch_size = 1
  train.train.warmup_steps = 0
  train.train.log_every = 1
  train.train.checkpoint_every = 2
  train.train.async_checkpoint = False
  train.train.sample_every = 0
  train.mesh.data = 1
  metrics = train_and_evaluate(train, str(tmp_path / "work"), devices=jax.devices()[:1])
  assert np.isfinite(metrics["loss"]) and not metrics["interrupted"]
  assert os.path.isdir(tmp_path / "work" / "params")
