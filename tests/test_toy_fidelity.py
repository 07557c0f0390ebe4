"""The toy fidelity metric: the renderer's own frames are recognised, flat or wrong frames are not."""

import numpy as np
import pytest

from blockvid_jax.data import toy_fidelity, toy_grammar, toy_long_video


def _video():
  return toy_long_video.generate_video(toy_long_video.toy_config(num_videos=2), "train", 0)


def test_renderer_frames_score_perfectly():
  v = _video()
  s = toy_fidelity.video_scores(v["frames"], list(v["captions"]), 3)["summary"]
  assert s["correct"] == 1.0 and s["render_error"] == 0.0 and s["sprite_gain"] == 1.0


def test_flat_background_and_wrong_captions_fail():
  v = _video()
  caps = list(v["captions"])
  flat = np.stack([np.broadcast_to(np.median(f.reshape(-1, 3), 0).astype(np.uint8), f.shape)
                   for f in v["frames"]])
  s = toy_fidelity.video_scores(flat, caps, 3)["summary"]
  assert s["background"] == 1.0 and s["shape"] == 0.0 and s["colour"] == 0.0 and s["correct"] == 0.0
  scene = toy_grammar.parse_caption(caps[0])
  other = next(c for c in toy_grammar.SPRITE_COLOURS if c != scene.colour)
  wrong = toy_grammar.caption(toy_grammar.SceneSpec(other, scene.obj, scene.motion, scene.background))
  r = toy_fidelity.frame_scores(v["frames"][0], wrong)
  assert r["background"] and not r["colour"]


def test_noisy_frames_are_still_recognised():
  v = _video()
  rng = np.random.default_rng(0)
  noisy = np.clip(v["frames"].astype(int) + rng.integers(-40, 40, v["frames"].shape), 0, 255)
  s = toy_fidelity.video_scores(noisy.astype(np.uint8), list(v["captions"]), 3)["summary"]
  assert s["correct"] == 1.0 and 0.3 < s["sprite_gain"] < 1.0


def test_sprite_size_is_a_build_field_and_the_metric_follows_it():
  config = toy_long_video.toy_config(num_videos=2, sprite_size=16)
  assert config.name.endswith("_z16_seed0") and config.sprite_side == 16
  assert toy_long_video.toy_config(num_videos=2).sprite_side == 8           # the default: res // 4
  v = toy_long_video.generate_video(config, "train", 0)
  caps = list(v["captions"])
  assert toy_fidelity.video_scores(v["frames"], caps, 3, 16)["summary"]["correct"] == 1.0
  # Scored with the 8-pixel template the same frames are not the caption's rendering.
  assert toy_fidelity.video_scores(v["frames"], caps, 3)["summary"]["shape"] < 1.0
  with pytest.raises(ValueError, match=r"^sprite_size must be 0 \(default\) or in \[4, "
                     r"resolution=32\], got 40$"):
    toy_long_video.toy_config(sprite_size=40)
