"""Latent pre-encoding in parallel: 8 fake CPU devices write what one device writes; the hosts of a
multi-host run (simulated by process_index / process_count) split the videos disjointly, resume,
and leave one merged report. Tiny random Wan VAE + umT5 (safetensors, no torch) + a sentencepiece
tokenizer trained here.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import tiny_pretrained_config  # tests/ is on sys.path
from blockvid_jax.convert.umt5 import expected_shapes
from blockvid_jax.convert.wan_vae import random_state_dict
from blockvid_jax.encode_videos import (REPORT, encode_folder, encode_mesh,
                                             encode_video_batch, host_share)
from blockvid_jax.models.umt5 import UMT5Spec
from blockvid_jax.models.vae import VAESpec
from blockvid_jax.video_io import write_video
from blockvid_jax.errors import ConfigError

T5 = UMT5Spec(vocab_size=300, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2)
VAE = VAESpec(dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1)
# name -> frames (3 latent frames per chunk: 34 -> 3 chunks, 22 -> 2, 13 and 9 -> 1), 4 is too short
CLIPS = {"a.mp4": 22, "b.mp4": 13, "c.mp4": 34, "d.mp4": 9, "short.mp4": 4}
CAPTIONS = ["a cat walks on the beach", "the dog runs in a green park",
            "waves crash on dark rocks at night"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(config, videos dir) with the tiny weights written as safetensors."""
  spm = pytest.importorskip("sentencepiece")
  root = tmp_path_factory.mktemp("encode")
  rng = np.random.default_rng(0)
  save_file(random_state_dict(VAE), str(root / "vae.safetensors"))
  save_file({key: (rng.normal(size=shape) * (0.2 if len(shape) > 1 else 1.0)).astype(np.float32)
             for key, shape in expected_shapes(T5, "wan").values()}, str(root / "umt5.safetensors"))
  (root / "corpus.txt").write_text("\n".join(CAPTIONS * 5))
  spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "spiece"),
                                 vocab_size=50, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False)
  config = tiny_pretrained_config.get_config(str(root))
  config.autoencoder.checkpoint = str(root / "vae.safetensors")
  config.text.checkpoint = str(root / "umt5.safetensors")
  videos = root / "videos"
  videos.mkdir()
  for name, frames in CLIPS.items():
    write_video(videos / name, rng.integers(0, 255, (frames, 40, 48, 3), np.uint8), fps=8)
  (videos / "captions.json").write_text(json.dumps({
      name: [{"start": 0, "end": 1.5, "caption": CAPTIONS[k % 3]},
             {"start": 1.5, "end": 9, "caption": CAPTIONS[(k + 1) % 3]}]
      for k, name in enumerate(CLIPS)}))
  return config, videos


@pytest.fixture(scope="module")
def one_device(setup, tmp_path_factory):
  """The folder that one device and one host write."""
  config, videos = setup
  out = tmp_path_factory.mktemp("one_device")
  assert encode_folder(config, str(videos), "", str(out), devices=jax.devices()[:1],
                       progress=False, log=lambda m: None) == 4
  return out


def _arrays(folder) -> dict[str, np.ndarray]:
  out = {"null": np.load(folder / "null_context.npy").astype(np.float32)}
  for f in sorted(os.listdir(folder / "videos")):
    with np.load(folder / "videos" / f) as z:
      out.update({f"{f}/{k}": z[k].astype(np.float32) for k in z.files})
  return out


def test_host_share_is_a_disjoint_cover():
  names = [f"v{i}" for i in range(11)]
  shares = [host_share(names, i, 3) for i in range(3)]
  assert shares[0] == ["v0", "v3", "v6", "v9"] and shares[2] == ["v2", "v5", "v8"]
  assert sorted(sum(shares, [])) == sorted(names)
  with pytest.raises(ConfigError, match="process_index 3 is not in"):
    host_share(names, 3, 3)


def test_batch_of_different_lengths_equals_one_clip_at_a_time(setup):
  """Time padding is exact (causal encoder); batch sharded over 8 devices vs each clip alone."""
  config, _ = setup
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.config_lib import validate  # pylint: disable=import-outside-toplevel
  vae = generate.make_autoencoder(config, validate(config))
  rng = np.random.default_rng(1)
  clips = [rng.uniform(-1, 1, (t, 32, 32, 3)).astype(np.float32) for t in (9, 1, 5)]
  mesh = encode_mesh(config)
  assert mesh.shape["data"] == 8
  batched = encode_video_batch(vae, clips, mesh)
  assert [b.shape for b in batched] == [(3, 4, 4, 16), (1, 4, 4, 16), (2, 4, 4, 16)]
  for clip, got in zip(clips, batched):
    want = np.asarray(vae.encode(clip[None]))[0]  # one clip, one device, no padding
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_eight_devices_write_what_one_device_writes(setup, one_device, tmp_path):
  config, videos = setup
  assert len(jax.devices()) == 8
  out = tmp_path / "eight"
  assert encode_folder(config, str(videos), "", str(out), progress=False,
                       log=lambda m: None) == 4  # all 4 usable videos in one batch of 8
  want, got = _arrays(one_device), _arrays(out)
  assert sorted(got) == sorted(want) and len(want) == 1 + 2 * 4
  for key, value in want.items():  # float16 files: equal up to at most one float16 rounding step
    np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=2.0**-10, err_msg=key)
  report = json.loads((out / REPORT).read_text())
  assert report == {"written": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "done": [],
                    "skipped": {"short.mp4": report["skipped"]["short.mp4"]}}


def test_hosts_split_the_videos_and_merge_one_report(setup, one_device, tmp_path):
  config, videos = setup
  out, device = tmp_path / "hosts", jax.devices()[:1]
  kw = dict(devices=device, progress=False, log=lambda m: None, process_count=2)
  names = sorted(CLIPS)  # a, b, c, d, short
  assert encode_folder(config, str(videos), "", str(out), process_index=1, **kw) == 2  # b, d
  assert sorted(os.listdir(out / "videos")) == ["b.npz", "d.npz"]
  assert not (out / REPORT).exists() and not (out / "null_context.npy").exists()  # host 0's jobs
  assert encode_folder(config, str(videos), "", str(out), process_index=0, **kw) == 2  # a, c
  assert sorted(os.listdir(out / "videos")) == ["a.npz", "b.npz", "c.npz", "d.npz"]
  assert sorted(os.listdir(out)) == [REPORT, "null_context.npy", "videos"]  # parts merged
  report = json.loads((out / REPORT).read_text())
  assert report["written"] == names[:4] and report["done"] == []
  assert list(report["skipped"]) == ["short.mp4"]
  want, got = _arrays(one_device), _arrays(out)
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)  # same device count: identical

  # Rerun as 2 hosts: everything is done, nothing rewritten, the merged report says so.
  before = {f: (out / "videos" / f).stat().st_mtime_ns for f in os.listdir(out / "videos")}
  for i in (0, 1):
    assert encode_folder(config, str(videos), "", str(out), process_index=i, **kw) == 0
  assert {f: (out / "videos" / f).stat().st_mtime_ns for f in os.listdir(out / "videos")} == before
  report = json.loads((out / REPORT).read_text())
  assert report["written"] == [] and report["done"] == names[:4]
