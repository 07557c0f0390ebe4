"""The training loop end to end: learning, exact resume after SIGKILL, SIGTERM, NaN, bad config.

Subprocess runs use one CPU device, most XLA optimisations off and a shared persistent compilation
cache (the uninterrupted, killed and restarted runs compile the same programs once).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from blockvid_jax.training import batches, inputs, loop
from blockvid_jax.training.config import validate_train
from blockvid_jax.errors import ConfigError, NonFiniteLossError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import tiny_train_config  # noqa: E402  pylint: disable=wrong-import-position

CONFIG = os.path.join(ROOT, "tests", "tiny_train_config.py")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """A toy data dir built once, and a compilation cache dir, for every run of this module."""
  base = tmp_path_factory.mktemp("train_shared")
  data_dir = str(base / "data")
  from blockvid_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  pipeline.build_toy_dataset(data_dir, inputs.toy_data_config(tiny_train_config.get_config()))
  return {"data_dir": data_dir, "cache": str(base / "jax_cache")}


def _config(shared, **train):
  c = tiny_train_config.get_config()
  c.data.data_dir = shared["data_dir"]
  for k, v in train.items():
    c.train[k] = v
  return c


def _env(shared):
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
              JAX_COMPILATION_CACHE_DIR=shared["cache"],
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _start(shared, workdir, *overrides):
  cmd = [sys.executable, "-m", "blockvid_jax.train", "--config", CONFIG, "--workdir", str(workdir),
         f"--config.data.data_dir={shared['data_dir']}", *overrides]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(shared), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _rows(workdir):
  """metrics.jsonl rows that carry a loss, in file order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if "loss" in r]


def _wait_for_step(proc, workdir, step, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    rows = _rows(workdir)
    if rows and rows[-1]["step"] >= step:
      return rows[-1]["step"]
    if proc.poll() is not None:
      raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"step {step} not reached in {timeout}s")


def _finish(proc, timeout=240):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def test_exact_resume_after_sigkill(shared, tmp_path):
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
  code, out = _finish(_start(shared, ref_dir))
  assert code == 0, out[-3000:]
  ref = {r["step"]: r for r in _rows(ref_dir)}
  assert sorted(ref) == list(range(1, 21))

  proc = _start(shared, run_dir)
  _wait_for_step(proc, run_dir, 12)
  deadline = time.monotonic() + 60          # async save: wait until checkpoint 10 is committed
  while not os.path.isdir(run_dir / "checkpoints" / "10") and time.monotonic() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first = _rows(run_dir)
  killed_at = first[-1]["step"]
  code, out = _finish(_start(shared, run_dir))
  assert code == 0, out[-3000:]
  resumed = [line for line in out.splitlines() if "resumed from checkpoint step" in line]
  assert len(resumed) == 1, out[-3000:]
  start = int(resumed[0].split()[-1])
  if killed_at < 15:
    assert start == 10
  second = _rows(run_dir)[len(first):]
  assert [r["step"] for r in second] == list(range(start + 1, 21))
  for r in first + second:                       # 1..killed_at, then start+1..20 after the restart
    for k in ("loss", "grad_norm", "param_norm", "lr", "t_mean"):
      assert abs(r[k] - ref[r["step"]][k]) <= 1e-6, (r["step"], k, r[k], ref[r["step"]][k])


def test_sigterm_saves_and_exits_zero(shared, tmp_path):
  proc = _start(shared, tmp_path, "--config.train.total_steps=1000",
                "--config.train.checkpoint_every=1000")
  _wait_for_step(proc, tmp_path, 3)
  proc.send_signal(signal.SIGTERM)
  code, out = _finish(proc, timeout=120)
  assert code == 0, out[-3000:]
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  last = _rows(tmp_path)[-1]["step"]
  assert saved == [last] and 3 <= last < 1000, (saved, last)
  with open(tmp_path / "checkpoints" / str(last) / "data" / "process_0-of-1.json") as f:
    assert json.load(f)["next_index"] == last                 # the iterator position is saved too
  assert "SIGTERM: saved checkpoint at step" in out


def test_bad_config_is_one_line_exit_2(shared, tmp_path):
  for override, needle in (("--config.train.no_such_key=1", "no_such_key"),
                           ("--config.train.learning_rate=-0.1", "train.learning_rate must be > 0"),
                           ("--config.data.frames_per_chunk=4", "not a multiple of")):
    code, out = _finish(_start(shared, tmp_path / "bad", override), timeout=120)
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), out[-2000:]
    assert needle in lines[0], lines[0]
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")
  c = tiny_train_config.get_config()
  c.data.frames_per_chunk = 6                              # a caption over 2 model chunks is fine
  validate_train(c)
  c.model.frames_per_chunk = 5
  with pytest.raises(ConfigError, match="window of 12 latent frames"):
    validate_train(c)


@pytest.fixture()
def fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_tiny_config_learns_and_writes_outputs(shared, tmp_path, fast_compile):
  config = _config(shared, total_steps=200, warmup_steps=20, log_every=20, checkpoint_every=200,
                   sample_every=200, sample_chunks=2)
  t0 = time.monotonic()
  last = loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  assert time.monotonic() - t0 < 120
  rows = _rows(tmp_path)
  first, final = rows[0]["loss_avg"], rows[-1]["loss_avg"]       # means over steps 1-20, 181-200
  assert rows[-1]["step"] == 200 == last["step"]
  assert final <= 0.7 * first, (first, final)
  assert [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
  assert os.listdir(tmp_path / "samples") and os.listdir(tmp_path / "checkpoints") == ["200"]
  assert os.path.isfile(tmp_path / "params" / "spec.json")
  assert os.path.isfile(tmp_path / "params_ema" / "spec.json")


def test_nan_stops_naming_the_step(shared, tmp_path, fast_compile, monkeypatch):
  config = _config(shared, total_steps=20, checkpoint_every=5, log_every=1)
  original = batches.ToyBatchPreparer.__call__
  calls = {"n": 0}

  def poisoned(self, example):
    out = original(self, example)
    calls["n"] += 1
    if calls["n"] == 7:
      out["latents"] = out["latents"].copy()
      out["latents"][0, 0, 0, 0, 0] = np.nan
    return out

  monkeypatch.setattr(batches.ToyBatchPreparer, "__call__", poisoned)
  with pytest.raises(NonFiniteLossError, match=r"at step 7; .*last good checkpoint: step 5"):
    loop.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]
  assert [r["step"] for r in _rows(tmp_path)] == list(range(1, 7))


def _load_config(name):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}", os.path.join(ROOT, "configs",
                                                                             f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_shipped_configs_validate():
  specs = {n: validate_train(_load_config(n)) for n in ("toy_cpu", "toy_teacher", "wan_1_3b_causal")}
  assert specs["wan_1_3b_causal"].dim == 1536 and specs["wan_1_3b_causal"].dtype == "bfloat16"
  assert _load_config("toy_teacher").train.stage == "teacher"
  wan = _load_config("wan_1_3b_causal")
  assert wan.mesh.fsdp == -1 and wan.mesh.tensor == 2 and wan.model.remat_policy != "none"


def test_latent_folder_batches(tmp_path):
  from blockvid_jax.data import latent_folder, pipeline  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  os.makedirs(tmp_path / "videos")
  for i in range(3):
    np.savez(tmp_path / "videos" / f"v{i}.npz",
             latents=rng.normal(size=(12, 4, 4, 16)).astype(np.float16),    # 4 chunks of 3 frames
             context=rng.normal(size=(4, 5, 32)).astype(np.float16))
  np.save(tmp_path / "null_context.npy", np.zeros((5, 32), np.float32))
  source = latent_folder.LatentFolderSource(str(tmp_path))
  ds = latent_folder.make_dataset(source, batch_size=2, window_chunks=2, frames_per_chunk=3, seed=0)
  it = pipeline.make_iterator(ds, num_threads=1)
  prep = batches.LatentBatchPreparer(source.null_context())
  first = prep(next(it))
  assert first["latents"].shape == (2, 6, 4, 4, 16) and first["latents"].dtype == np.float32
  assert first["context"].shape == (2, 2, 5, 32) and first["null_context"].shape == (5, 32)
  state = it.get_state()
  a = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["latents"], a["latents"])
  with pytest.raises(ValueError, match="no videos"):
    latent_folder.LatentFolderSource(str(tmp_path / "videos"))


def test_teacher_preview_writes_video(shared, tmp_path, fast_compile):
  from blockvid_jax.models import init_params  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.preview import SamplePreview  # pylint: disable=import-outside-toplevel
  config = _config(shared)
  config.train.stage = "teacher"
  config.sample.num_steps = 2
  config.sample.guidance = 2.0
  spec = validate_train(config)
  _, preparer, reference = inputs.make_input(config, spec, str(tmp_path), 1)
  preview = SamplePreview(config, spec, preparer, reference, str(tmp_path / "samples"),
                          num_chunks=2, seed=0)
  path = preview(7, init_params(spec, jax.random.key(0)))
  from blockvid_jax.video_io import read_video  # pylint: disable=import-outside-toplevel
  assert path.endswith("step_000007.mp4") and read_video(path).shape == (6, 16, 48, 3)


def test_block_forcing_stage_runs_in_the_shared_trainer(shared, tmp_path, fast_compile):
  """The Block Forcing stage through `trainer.run`: checkpoint + preview at step 2 (toy data carries
  a reference video, the preview guard), exact resume to step 3, export of params/params_ema."""
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import init_params  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import block_forcing_loop  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.block_forcing_config import (  # pylint: disable=import-outside-toplevel
      add_block_forcing_defaults, validate_block_forcing)

  def config(total_steps):
    c = add_block_forcing_defaults(_config(shared, total_steps=total_steps, checkpoint_every=2,
                                           sample_every=2, sample_chunks=2, log_every=1))
    c.sample.solver, c.sample.guidance = "dmd", 1.0
    b = c.train.block_forcing
    b.generator_init = b.teacher_init = str(tmp_path / "init")
    b.critic_steps, b.fresh_critic_rollouts = 1, False
    return c

  spec = validate_block_forcing(config(2))
  checkpoints.save_params(str(tmp_path / "init" / "params"), spec, init_params(spec, jax.random.key(0)))
  work = tmp_path / "bf"
  first = block_forcing_loop.train_and_evaluate(config(2), str(work), devices=jax.devices()[:1])
  assert not first["interrupted"] and np.isfinite(first["loss"])
  assert os.path.isdir(work / "checkpoints" / "2")
  assert os.path.isfile(work / "samples" / "step_000002.mp4")
  block_forcing_loop.train_and_evaluate(config(3), str(work), devices=jax.devices()[:1])
  assert [r["step"] for r in _rows(work)] == [1, 2, 3]        # step 3 continued from checkpoint 2
  for name in ("params", "params_ema"):
    _, p = checkpoints.load_params(str(work / name))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(p))
