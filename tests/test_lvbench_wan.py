"""LV-Bench generation on the real path: the tiny random Wan VAE + umT5 + tokenizer + converted DiT
of `tiny_pretrained_weights`, `python -m blockvid_jax.lvbench generate` on a 2-video meta file.
With the Wan VAE the first chunk has 3 fewer pixel frames (the causal first latent frame), so a
video of C chunks of Fc latent frames has 1 + 4 (C Fc - 1) frames, and the captions are mapped to
those frames.
"""

import json

import pytest

from blockvid_jax import video_io
from blockvid_jax.lvbench import cli, driver, meta
from tiny_pretrained_weights import CONFIG, FRAMES_PER_CHUNK, run_module, write_tiny_pretrained

pytestmark = [pytest.mark.torch, pytest.mark.slow]

META = {   # tiny config: 16 fps, 3 latent frames per chunk -> 9 pixel frames in chunk 0, then 12
    "vid_a": [{"start": 0, "end": 1.0, "caption": "a cat walks on the beach"},
              {"start": 1.0, "end": 2.0, "caption": "waves crash on dark rocks"}],
    "vid_b": [{"start": 0, "end": 0.5, "caption": "the dog runs in a green park"}],
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  pytest.importorskip("torch")
  pytest.importorskip("sentencepiece")
  return write_tiny_pretrained(tmp_path_factory.mktemp("weights"))


def test_plan_and_video_frames_on_the_wan_vae(weights, tmp_path):
  config = cli.load_config(f"{CONFIG}:{weights}")
  timing = meta.chunk_timing(config)
  assert timing == meta.ChunkTiming(frames=4 * FRAMES_PER_CHUNK, first_short=3, fps=16.0)
  # vid_a: chunks [0, .5625) s, [.5625, 1.3125) (.4375 s of the cat, .3125 of the waves),
  # [1.3125, 2.0625); equal 0.75 s chunks would have given the second chunk to the waves.
  # vid_b: 0.5 s fits in the 9 frames (.5625 s) of the first chunk.
  plans = driver.plan(config, meta.parse_meta(META))
  assert plans == {"vid_a": ["a cat walks on the beach"] * 2 + ["waves crash on dark rocks"],
                   "vid_b": ["the dog runs in a green park"]}

  m, videos = tmp_path / "meta.json", tmp_path / "videos"
  m.write_text(json.dumps(META))
  r = run_module("blockvid_jax.lvbench", "generate", "--meta", str(m), "--config",
                 f"{CONFIG}:{weights}", "--checkpoint", str(weights / "dit_params"),
                 "--out", str(videos), "--quiet")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "generated 2, skipped 0" in r.stdout
  assert sorted(p.name for p in videos.iterdir()) == ["vid_a.mp4", "vid_b.mp4"]  # no temporaries
  for vid, chunks in (("vid_a", 3), ("vid_b", 1)):
    frames = 1 + 4 * (chunks * FRAMES_PER_CHUNK - 1)                       # 33, 9
    assert video_io.read_video(videos / f"{vid}.mp4").shape == (frames, 32, 32, 3)
    assert f"{vid}.mp4: {chunks} chunks, {frames} frames" in r.stderr
