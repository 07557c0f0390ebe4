"""Two local processes (`jax.distributed.initialize` on localhost, 4 fake CPU devices each, gloo
collectives) train the tiny config with params sharded across both: the uninterrupted run writes a
preview (params gathered by every process) and exports params from both processes through orbax; a
run killed (SIGKILL, both processes) after its first checkpoint resumes and matches the
uninterrupted one step for step; a second stage starts from that multi-process work directory."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "tests" / "tiny_train_config.py")
STEPS = 12
KEYS = ("loss", "grad_norm", "param_norm", "lr", "t_mean")


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir, data_dir, cache, *overrides):
  port = _port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", BLOCKVID_DISTRIBUTED="1",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(pid), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cmd = [sys.executable, "-m", "blockvid_jax.train", "--config", CONFIG, "--workdir",
           str(workdir), f"--config.data.data_dir={data_dir}", "--config.mesh.data=2",
           "--config.mesh.fsdp=4", "--config.train.batch_size=8",
           f"--config.train.total_steps={STEPS}", "--config.train.checkpoint_every=4",
           "--config.train.log_every=1", *overrides]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  return procs


def _finish(procs, timeout=600):
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def _rows(workdir):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_train_resume_export_and_chain(tmp_path):
  data_dir, cache = tmp_path / "data", str(tmp_path / "jax_cache")
  ref, run = tmp_path / "ref", tmp_path / "run"
  outs = _finish(_start(ref, data_dir, cache, f"--config.train.sample_every={STEPS}",
                        "--config.train.sample_chunks=2"))
  # The persistent cache (set above) is turned off for several CPU processes (parallel/distributed.py).
  assert all("persistent compilation cache" in out for out in outs), outs[0][-3000:]
  ref_rows = {r["step"]: r for r in _rows(ref)}
  assert sorted(ref_rows) == list(range(1, STEPS + 1)), outs[0][-3000:]
  assert (ref / "samples" / f"step_{STEPS:06d}.mp4").is_file()
  assert (ref / "params" / "spec.json").is_file() and (ref / "params_ema" / "spec.json").is_file()

  procs = _start(run, data_dir, cache)
  deadline = time.monotonic() + 300
  while not (run / "checkpoints" / "4").is_dir() and time.monotonic() < deadline:
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.01)
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
    p.wait()
  first = _rows(run)
  if (run / "params").exists():
    pytest.fail(f"the run finished before it could be killed (at step {first[-1]['step']})")
  outs = _finish(_start(run, data_dir, cache))
  resumed = [ln for ln in outs[0].splitlines() if "resumed from checkpoint step" in ln]
  assert len(resumed) == 1, outs[0][-3000:]
  start = int(resumed[0].split()[-1])
  second = _rows(run)[len(first):]
  assert start >= 4 and [r["step"] for r in second] == list(range(start + 1, STEPS + 1))
  for r in first + second:
    for k in KEYS:
      assert abs(r[k] - ref_rows[r["step"]][k]) <= 1e-6, (r["step"], k, r[k], ref_rows[r["step"]][k])

  # The exported params of both runs are the same model; the next stage starts from the work dir.
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  _, a = checkpoints.load_params(str(ref / "params_ema"))
  _, b = checkpoints.load_params(str(run / "params_ema"))
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  nxt = tmp_path / "next"
  outs = _finish(_start(nxt, data_dir, cache, f"--config.train.init_from={run}",
                        "--config.train.total_steps=2", "--config.train.warmup_steps=0"))
  assert any("from " + str(run) in ln for ln in outs[0].splitlines()), outs[0][-3000:]
  assert (nxt / "params" / "spec.json").is_file()
