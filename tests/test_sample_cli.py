"""`python -m blockvid_jax.sample`: writes a readable video; one-line errors, exit 2, no partial file."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from blockvid_jax import generate
from blockvid_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "toy_cpu.py")


def run_cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one device, like a user's laptop
  return subprocess.run([sys.executable, "-m", "blockvid_jax.sample", "--config", CONFIG, *args],
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture()
def prompts(tmp_path):
  p = tmp_path / "prompts.txt"
  p.write_text("a red circle moves left on a blue background\n"
               "a green square moves up on a black background\n")
  return str(p)


def test_writes_video_with_right_frame_count(tmp_path, prompts):
  from blockvid_jax.video_io import read_video
  out = tmp_path / "v.mp4"
  r = run_cli("--prompts", prompts, "--num_chunks", "5", "--out", str(out), "--seed", "1")
  assert r.returncode == 0, r.stderr
  assert "RANDOMLY INITIALISED" in r.stderr
  frames = read_video(str(out))
  assert frames.shape == (5 * 3, 32, 32, 3)
  assert sorted(os.listdir(tmp_path)) == ["prompts.txt", "v.mp4"]


def _assert_one_line_error(r, needle, out_dir):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
  assert len(err) == 1 and needle in err[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert not [f for f in os.listdir(out_dir) if f.startswith("v")]


def test_bad_inputs(tmp_path, prompts):
  out = str(tmp_path / "v.mp4")
  _assert_one_line_error(run_cli("--prompts", prompts, "--num_chunks", "0", "--out", out),
                         "num_chunks must be >= 1", tmp_path)
  _assert_one_line_error(run_cli("--prompts", str(tmp_path / "nope.txt"), "--out", out),
                         "does not exist", tmp_path)
  bad = tmp_path / "bad.json"
  bad.write_text('[{"prompt": "a red circle", "chunks": 0}]')
  _assert_one_line_error(run_cli("--prompts", str(bad), "--out", out), "chunks=0", tmp_path)
  _assert_one_line_error(run_cli("--prompts", prompts, "--out", str(tmp_path / "v.avi")),
                         "--out must end in", tmp_path)


def test_checkpoint_that_does_not_match_config(tmp_path, prompts):
  from blockvid_jax import checkpoints
  from blockvid_jax.models import DiTSpec, init_params
  spec = DiTSpec.preset("tiny")
  ckpt = str(tmp_path / "ckpt")
  checkpoints.save_params(ckpt, spec, init_params(spec, jax.random.key(0)))
  out = str(tmp_path / "v.mp4")
  _assert_one_line_error(run_cli("--prompts", prompts, "--checkpoint", ckpt, "--out", out),
                         "different model", tmp_path)


def test_prompt_files(tmp_path):
  p = tmp_path / "p.json"
  p.write_text(json.dumps([{"prompt": "a red circle", "chunks": 2}, {"prompt": "a blue cross"}]))
  assert generate.read_prompts(str(p)) == ["a red circle"] * 2 + ["a blue cross"]
  t = tmp_path / "p.txt"
  t.write_text("one\n\ntwo\n")
  assert generate.read_prompts(str(t), chunks_per_prompt=2) == ["one", "one", "two", "two"]
  assert generate.chunk_prompts(["a", "b"], 5) == ["a", "b", "a", "b", "a"]
  t.write_text("\n\n")
  with pytest.raises(ConfigError, match="no prompts"):
    generate.read_prompts(str(t))
  p.write_text("{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    generate.read_prompts(str(p))


def test_npy_latents_output(tmp_path):
  lat = np.zeros((1, 6, 16, 16, 16), np.float32)
  path = generate.save_output(str(tmp_path / "x.npy"), lat, None, 8)
  np.testing.assert_array_equal(np.load(path), lat)
  assert os.listdir(tmp_path) == ["x.npy"]


def test_second_generate_compiles_nothing():
  """A Colab user sampling a second video in the same process pays no compilation: the jitted
  segment is cached per sampler, prompts are encoded in power-of-two batches; a different chunk
  count reuses the segment too (no retrace)."""
  from jax import monitoring  # pylint: disable=import-outside-toplevel
  from blockvid_jax.config_overrides import load_config_file  # pylint: disable=import-outside-toplevel
  from blockvid_jax.diffusion import engine  # pylint: disable=import-outside-toplevel
  config = load_config_file(CONFIG)
  compiles = []
  monitoring.register_event_duration_secs_listener(
      lambda name, secs, **kw: compiles.append(name) if "backend_compile" in name else None)
  quiet = dict(progress=False, warn=lambda m: None)
  first, _ = generate.generate(config, ["a red circle", "a red cross", "a cyan square"], 4, 0, **quiet)
  assert compiles                                                     # the listener sees compiles
  before, traced = len(compiles), engine.TRACE_COUNTS["step"]
  second, _ = generate.generate(config, ["a green square", "a blue cross", "a red circle",
                                         "a cyan cross"], 4, 1, **quiet)       # 3 and 4 prompts: batch 4
  assert len(compiles) == before, compiles[before:]
  assert float(np.abs(first - second).max()) > 1e-3                   # a different video
  generate.generate(config, ["a red circle"], 6, 0, **quiet)
  assert engine.TRACE_COUNTS["step"] == traced                        # the segment is not retraced


def test_one_video_on_8_devices_equals_the_1_device_cli(tmp_path, prompts, monkeypatch):
  """In this process (8 fake devices) generate() spreads one video over the auto mesh (toy_cpu:
  context 2 x tensor 4), restores the params straight into their shardings, and gives the latents
  of the single-device CLI."""
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from blockvid_jax.config_overrides import load_config_file  # pylint: disable=import-outside-toplevel
  from blockvid_jax.diffusion.sampler import build_sampler  # pylint: disable=import-outside-toplevel
  config = load_config_file(CONFIG)
  spec, sampler = build_sampler(config)
  mesh = generate.sampling_mesh(config, sampler)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "context": 2, "tensor": 4}
  params = generate.load_or_init(config, spec, None, warn=lambda m: None)
  ckpt = checkpoints.save_params(str(tmp_path / "ck"), spec, jax.device_get(params))
  seen = []
  real = checkpoints.load_params
  monkeypatch.setattr(checkpoints, "load_params",
                      lambda *a, **kw: seen.append(kw.get("shardings")) or real(*a, **kw))
  lines = open(prompts, encoding="utf-8").read().splitlines()
  latents, _ = generate.generate(config, lines, 3, 1, checkpoint=ckpt, progress=False)
  q = params["blocks"]["self_attn"]["q"]["kernel"]                        # [K, embed, heads]
  q_sh = seen[0]["blocks"]["self_attn"]["q"]["kernel"]
  assert q_sh.mesh.size == 8 and q_sh.shard_shape(q.shape) == (*q.shape[:2], q.shape[2] // 4)
  out = tmp_path / "one.npy"
  r = run_cli("--checkpoint", ckpt, "--prompts", prompts, "--num_chunks", "3", "--seed", "1",
              "--out", str(out))
  assert r.returncode == 0, r.stderr
  np.testing.assert_allclose(latents, np.load(out), atol=1e-4, rtol=0)
