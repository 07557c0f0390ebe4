"""`python -m blockvid_jax.evaluate` on a folder of generated mp4s with tiny random scorer weights.

The folder holds two good videos, one corrupt file, one video shorter than the number of chunks and
one with a single frame per chunk (too short for the consistency and motion metrics only). The
weights are tiny ViTs (width 32, 2 layers, 2 heads of dim 16, patch 16) in the original PyTorch key
layouts, written under the public file names, so the real loading path runs.
"""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from blockvid_jax import video_io
from blockvid_jax.evaluate import cli, scorers

D, LAYERS, PATCH = 32, 2, 16
ARGS = ["--head_dim", "16", "--quiet"]


def _blocks(r, prefix, names):
  sd = {}
  for i in range(LAYERS):
    for name, shape in names.items():
      sd[f"{prefix}{i}.{name}"] = (r.normal(size=shape) * 0.1 + (name.endswith("norm1.weight")
                                                                 or name.endswith("ln_1.weight"))
                                   ).astype(np.float32)
  return sd


def tiny_dino(r):
  sd = {"cls_token": r.normal(size=(1, 1, D)), "pos_embed": r.normal(size=(1, 5, D)),
        "patch_embed.proj.weight": r.normal(size=(D, 3, PATCH, PATCH)) * 0.05,
        "patch_embed.proj.bias": np.zeros(D), "norm.weight": np.ones(D), "norm.bias": np.zeros(D)}
  sd.update(_blocks(r, "blocks.", {
      "norm1.weight": (D,), "norm1.bias": (D,), "attn.qkv.weight": (3 * D, D),
      "attn.qkv.bias": (3 * D,), "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
      "norm2.weight": (D,), "norm2.bias": (D,), "mlp.fc1.weight": (4 * D, D),
      "mlp.fc1.bias": (4 * D,), "mlp.fc2.weight": (D, 4 * D), "mlp.fc2.bias": (D,)}))
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def tiny_clip(r, out_dim):
  sd = {"visual.conv1.weight": r.normal(size=(D, 3, PATCH, PATCH)) * 0.05,
        "visual.class_embedding": r.normal(size=D),
        "visual.positional_embedding": r.normal(size=(17, D)),
        "visual.ln_pre.weight": np.ones(D), "visual.ln_pre.bias": np.zeros(D),
        "visual.ln_post.weight": np.ones(D), "visual.ln_post.bias": np.zeros(D),
        "visual.proj": r.normal(size=(D, out_dim))}
  sd.update(_blocks(r, "visual.transformer.resblocks.", {
      "ln_1.weight": (D,), "ln_1.bias": (D,), "attn.in_proj_weight": (3 * D, D),
      "attn.in_proj_bias": (3 * D,), "attn.out_proj.weight": (D, D), "attn.out_proj.bias": (D,),
      "ln_2.weight": (D,), "ln_2.bias": (D,), "mlp.c_fc.weight": (4 * D, D),
      "mlp.c_fc.bias": (4 * D,), "mlp.c_proj.weight": (D, 4 * D), "mlp.c_proj.bias": (D,)}))
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def write_tiny_weights(d):
  """Tiny random DINO / CLIP B-32 / CLIP L-14 / LAION-head files in the public key layouts."""
  r = np.random.default_rng(0)
  save_file(tiny_dino(r), str(d / "dino_vitbase16_pretrain.safetensors"))
  np.savez(d / "ViT-B-32.npz", **tiny_clip(r, 16))
  save_file(tiny_clip(r, 24), str(d / "ViT-L-14.safetensors"))
  save_file({"weight": r.normal(size=(1, 24)).astype(np.float32),
             "bias": np.full((1,), 5.0, np.float32)}, str(d / "sa_0_4_vit_l_14_linear.safetensors"))
  return d


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
  return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def moving_square(t, h=32, w=48, seed=0):
  r = np.random.default_rng(seed)
  frames = np.zeros((t, h, w, 3), np.uint8)
  frames[:] = r.integers(40, 90, size=3, dtype=np.uint8)
  for i in range(t):
    x = (2 * i) % (w - 12)
    frames[i, 8:20, x:x + 12] = (220, 200, 60)
  return frames


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("videos")
  video_io.write_video(d / "a.mp4", moving_square(30, seed=1))
  video_io.write_video(d / "b.mp4", moving_square(33, seed=2))      # 3 frames trimmed
  video_io.write_video(d / "short.mp4", moving_square(6, seed=3))      # < 10 chunks
  video_io.write_video(d / "one_per_chunk.mp4", moving_square(12, seed=4))  # 1 frame per chunk
  (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but then garbage" * 40)
  (d / "notes.txt").write_text("not a video")
  return d


def test_cli_writes_per_metric_json(weights_dir, videos_dir, tmp_path, capsys):
  out = tmp_path / "out"
  rc = cli.main(["--videos", str(videos_dir), "--out", str(out), "--weights_dir", str(weights_dir),
                 "--n_chunks", "10"] + ARGS)
  assert rc == 0
  names = ["subject", "background", "aesthetic", "clarity", "motion"]
  assert sorted(p.name for p in out.iterdir()) == sorted(
      [f"vde_{m}.json" for m in names] + ["summary.json"])
  for m in names:
    per_video = json.loads((out / f"vde_{m}.json").read_text())
    want = {"a.mp4", "b.mp4"} | ({"one_per_chunk.mp4"} if m in ("aesthetic", "clarity") else set())
    assert set(per_video) == want, m
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in per_video.values())
  summary = json.loads((out / "summary.json").read_text())
  reasons = {(s["video"], s["metric"]): s["reason"] for s in summary["skipped"]}
  assert "unreadable" in reasons[("corrupt.mp4", "*")]
  assert reasons[("short.mp4", "*")] == "too short: 6 frames < 10 chunks"
  for m in ("subject", "background", "motion"):
    assert "too short for " + m in reasons[("one_per_chunk.mp4", m)]
  assert len(reasons) == 5
  sub = summary["metrics"]["subject"]
  assert sub["paper_metric"] and not summary["metrics"]["clarity"]["paper_metric"]
  assert "NOT the paper" in summary["metrics"]["clarity"]["scorer"]
  assert "NOT the paper" in summary["metrics"]["motion"]["scorer"]
  chunks = sub["chunk_scores"]["a.mp4"]
  assert len(chunks) == 10 and all(0.0 <= c <= 1.0 for c in chunks)
  m = np.array(chunks)
  assert json.loads((out / "vde_subject.json").read_text())["a.mp4"] == pytest.approx(
      np.sum(np.arange(9, 0, -1) * np.abs(m[1:] - m[0]) / m[0]))
  stdout = capsys.readouterr().out
  assert "VDE subject" in stdout and "VDE motion" in stdout


def test_summary_holds_vbench_metrics_over_whole_videos(weights_dir, videos_dir, tmp_path):
  out = tmp_path / "out"
  rc = cli.main(["--videos", str(videos_dir), "--out", str(out), "--weights_dir", str(weights_dir),
                 "--n_chunks", "3", "--metrics", "subject,aesthetic,clarity,motion"] + ARGS)
  assert rc == 0
  summary = json.loads((out / "summary.json").read_text())
  vb = summary["vbench"]
  assert set(vb) == {"subject_consistency", "aesthetic_quality", "imaging_quality",
                     "motion_smoothness"}
  assert vb["subject_consistency"]["paper_metric"] and not vb["imaging_quality"]["paper_metric"]
  frames = video_io.read_video(videos_dir / "b.mp4")            # 33 frames: VBench uses all
  per = vb["imaging_quality"]["per_video"]
  assert per["b.mp4"] == pytest.approx(float(np.mean(scorers.laplacian_variance(frames))))
  assert vb["motion_smoothness"]["per_video"]["b.mp4"] == pytest.approx(
      scorers.motion_smoothness(frames, scorers.linear_blend))
  assert vb["imaging_quality"]["mean"] == pytest.approx(np.mean(list(per.values())))
  # a.mp4 has 30 frames = 3 full chunks: a mean over frames equals the mean of its chunk scores
  chunks = summary["metrics"]["aesthetic"]["chunk_scores"]["a.mp4"]
  assert vb["aesthetic_quality"]["per_video"]["a.mp4"] == pytest.approx(np.mean(chunks))
  assert 0.0 <= vb["subject_consistency"]["per_video"]["a.mp4"] <= 1.0


def test_log_weighting_and_metric_subset(weights_dir, videos_dir, tmp_path):
  out = tmp_path / "out"
  rc = cli.main(["--videos", str(videos_dir), "--out", str(out), "--weights_dir", str(weights_dir),
                 "--metrics", "clarity,motion", "--weighting", "log", "--n_chunks", "3"] + ARGS)
  assert rc == 0
  assert sorted(p.name for p in out.iterdir()) == ["summary.json", "vde_clarity.json",
                                                   "vde_motion.json"]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["weighting"] == "log" and summary["n_chunks"] == 3
  motion = json.loads((out / "vde_motion.json").read_text())
  clarity = json.loads((out / "vde_clarity.json").read_text())
  assert set(clarity) == {"a.mp4", "b.mp4", "one_per_chunk.mp4", "short.mp4"}
  assert set(motion) == {"a.mp4", "b.mp4", "one_per_chunk.mp4"}  # short: 2 frames per chunk < 3


def test_missing_weights_refused_up_front(videos_dir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  out = tmp_path / "out"
  rc = cli.main(["--videos", str(videos_dir), "--out", str(out), "--weights_dir", str(empty),
                 "--metrics", "subject,clarity,aesthetic"] + ARGS)
  assert rc == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  for name in ("dino_vitbase16_pretrain.pth", "ViT-L-14.pt", "sa_0_4_vit_l_14_linear.pth"):
    assert name in err
  assert not out.exists()                      # nothing was scored or written


def test_unknown_metric_and_missing_folder(weights_dir, tmp_path, capsys):
  rc = cli.main(["--videos", str(tmp_path), "--out", str(tmp_path / "o"), "--metrics", "beauty"])
  assert rc == 2 and "unknown metric(s) beauty" in capsys.readouterr().err
  rc = cli.main(["--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--metrics", "clarity"])
  assert rc == 2 and "is not a folder" in capsys.readouterr().err


def test_module_entry_point_refuses_missing_weights(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "blockvid_jax.evaluate", "--videos", str(tmp_path), "--out",
       str(tmp_path / "o"), "--metrics", "background"], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.count("\n") == 1 and "ViT-B-32.pt" in proc.stderr
  assert "--weights_dir (not given)" in proc.stderr


def test_plugin_replaces_clarity(videos_dir, tmp_path, monkeypatch):
  plugin = tmp_path / "fake_musiq_plugin.py"
  plugin.write_text(textwrap.dedent("""
      import numpy as np
      from blockvid_jax.evaluate import scorers

      def _factory(options):
        return scorers.ClarityScorer(lambda fr: fr.mean(axis=(1, 2, 3)) / 255.0,
                                     "clarity: fake MUSIQ for the test", paper_metric=True)

      scorers.register("clarity", _factory, replace=True)
  """))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(scorers, "REGISTRY", dict(scorers.REGISTRY))   # restored after the test
  out = tmp_path / "out"
  rc = cli.main(["--videos", str(videos_dir), "--out", str(out), "--metrics", "clarity",
                 "--plugins", "fake_musiq_plugin"] + ARGS)
  assert rc == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["metrics"]["clarity"]["scorer"] == "clarity: fake MUSIQ for the test"
  assert summary["metrics"]["clarity"]["paper_metric"] is True


def test_plugin_import_error(tmp_path, capsys):
  rc = cli.main(["--videos", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--plugins", "no_such_plugin_module_xyz", "--metrics", "clarity"])
  assert rc == 2 and "no_such_plugin_module_xyz" in capsys.readouterr().err
