"""The toy where memory matters: per-video scene identities that captions do not name, returns after
the local window, deterministic bytes, and the identity metric."""

import numpy as np
import pytest

from blockvid_jax.data import toy_fidelity, toy_grammar, toy_identity, toy_long_video

CONFIG = toy_long_video.toy_config(num_videos=4, identities=True, min_return_gap=2, seed=3)


def test_identity_builds_are_deterministic_and_plain_builds_keep_their_bytes():
  a = toy_long_video.generate_video(CONFIG, "train", 1)
  b = toy_long_video.generate_video(CONFIG, "train", 1)
  assert a["frames"].tobytes() == b["frames"].tobytes()
  assert list(a["captions"]) == list(b["captions"])
  c = toy_long_video.generate_video(CONFIG, "train", 2)
  assert a["frames"].tobytes() != c["frames"].tobytes()
  # Without identities a scene is exactly its caption: the palette background, nothing else.
  plain = toy_long_video.generate_video(toy_long_video.toy_config(num_videos=2), "train", 0)
  bg = toy_grammar.BACKGROUND_COLOURS[toy_grammar.parse_caption(plain["captions"][0]).background]
  assert tuple(int(v) for v in np.median(plain["frames"][0].reshape(-1, 3), 0)) == bg


def test_two_videos_with_the_same_caption_get_different_identities():
  """Search the train split for two videos sharing a scene caption; their first chunks of that scene
  differ in identity (exact shades, texture, pattern), far more than a scene differs from itself."""
  seen = {}
  pair = None
  for index in range(400):
    v = toy_long_video.generate_video(CONFIG, "train", index)
    for c, cap in enumerate(v["captions"]):
      if cap in seen and seen[cap][0] != index:
        pair = (seen[cap][1], v["frames"][c * 3:(c + 1) * 3], cap)
        break
      seen.setdefault(cap, (index, v["frames"][c * 3:(c + 1) * 3]))
    if pair:
      break
  assert pair is not None, "no caption repeats across 400 videos"
  first, second, cap = pair
  err = toy_identity.identity_error(first, second)
  assert err > 0.01, (cap, err)
  # Both are still exactly what the caption says (the fidelity checks pass on either).
  for chunk in (first, second):
    s = toy_fidelity.video_scores(chunk, [cap], 3)["summary"]
    assert s["correct"] == 1.0, s


def test_scenes_return_after_the_gap_and_keep_their_identity():
  returns = 0
  for index in range(4):
    v = toy_long_video.generate_video(CONFIG, "train", index)
    ids = v["scene_ids"].tolist()
    for c in range(1, len(ids)):
      if ids[c] != ids[c - 1] and ids[c] in ids[:c]:          # a return
        last = max(i for i in range(c) if ids[i] == ids[c])
        assert c - 1 - last >= 2, ids                          # >= 2 chunks of other scenes
        returns += 1
    err = toy_identity.returning_identity_error(v["frames"], v["scene_ids"], 3)
    assert err["per_chunk"] and err["mean"] < 2e-3, err         # the ground truth restores it
    s = toy_fidelity.video_scores(v["frames"], list(v["captions"]), 3)["summary"]
    assert s["correct"] == 1.0, s
  assert returns >= 4


def test_identity_error_sees_shade_texture_and_pattern_not_position():
  scene = toy_grammar.SceneSpec("red", "square", "still", "navy")
  base = toy_identity.Identity(sprite=(220, 40, 40), texture="solid", background=(15, 20, 80),
                               pattern="flat", period=4, phase=0)

  def render(identity, y=4, x=4):
    mask = toy_grammar.sprite_mask(scene.obj, 8)
    frame = toy_long_video.render_frame(scene, y, x, mask, 32, identity)
    return np.stack([frame] * 3)
  ref = render(base)
  assert toy_identity.identity_error(ref, render(base, 20, 12)) < 1e-9        # moved: same
  for changed in (dict(sprite=(200, 60, 50)), dict(texture="rows"), dict(pattern="grid"),
                  dict(background=(25, 20, 70))):
    other = toy_identity.Identity(**{**base.__dict__, **changed})
    assert toy_identity.identity_error(ref, render(other)) > 0.005, changed


def test_bad_identity_configs_fail_in_one_line():
  with pytest.raises(ValueError, match="min_return_gap"):
    toy_long_video.toy_config(min_return_gap=-1)
  with pytest.raises(ValueError, match="sprite_start must be 'random'"):
    toy_long_video.toy_config(identities=True, sprite_start="centre")


def test_identity_data_config_is_checked_in_one_line():
  import tiny_train_config  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.config import validate_train  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.inputs import toy_data_config  # pylint: disable=import-outside-toplevel
  c = tiny_train_config.get_config()
  c.data.identities, c.data.min_return_gap = True, 2
  validate_train(c)
  built = toy_data_config(c)
  assert built.identities and built.min_return_gap == 2 and "_id_g2" in built.name
  c.data.sprite_start = "centre"
  with pytest.raises(ConfigError, match="data.sprite_start must be 'random'") as e:
    validate_train(c)
  assert "\n" not in str(e.value)
