"""Data: the toy tfds builder, the video-folder builder and the grain pipeline (tiny datasets)."""

import json
import logging
from pathlib import Path

import grain
import numpy as np
import pytest

from blockvid_jax.data import pipeline, toy_grammar
from blockvid_jax.data.toy_long_video import generate_video, toy_config
from blockvid_jax.data.video_folder import segment_at, video_folder_config
from blockvid_jax.video_io import write_video

TINY = dict(resolution=16, frames_per_chunk=2, chunks_per_video=6, num_videos=6,
            num_test_videos=2)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  return pipeline.build_toy_dataset(str(tmp_path_factory.mktemp("tfds")), toy_config(**TINY))


def _record_bytes(builder) -> dict[str, bytes]:
  files = sorted(Path(builder.data_dir).glob("*.array_record-*"))
  assert files, f"no array_record files in {builder.data_dir}"
  return {f.name: f.read_bytes() for f in files}


def _batches_equal(a, b) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_builder_is_deterministic(toy, tmp_path):
  again = pipeline.build_toy_dataset(str(tmp_path / "again"), toy_config(**TINY))
  assert _record_bytes(toy) == _record_bytes(again)
  other = pipeline.build_toy_dataset(str(tmp_path / "other"), toy_config(**TINY, seed=1))
  assert _record_bytes(toy) != _record_bytes(other)
  # Building into an existing directory is a no-op.
  assert _record_bytes(pipeline.build_toy_dataset(str(tmp_path / "again"),
                                                  toy_config(**TINY))) == _record_bytes(toy)


def test_stored_examples_match_the_generator(toy):
  source = toy.as_data_source("train")
  assert len(source) == TINY["num_videos"] and len(toy.as_data_source("test")) == 2
  config = toy.builder_config
  for i in range(len(source)):
    stored = source[i]
    fresh = generate_video(config, "train", int(stored["video_index"]))
    assert stored["frames"].shape == (12, 16, 16, 3) and stored["frames"].dtype == np.uint8
    np.testing.assert_array_equal(stored["frames"], fresh["frames"])
    np.testing.assert_array_equal(stored["scene_ids"], fresh["scene_ids"])
    assert [c.decode() for c in stored["captions"]] == list(fresh["captions"])


def test_captions_follow_the_grammar_and_scenes_recur():
  config = toy_config(**{**TINY, "chunks_per_video": 12})
  fpc = config.frames_per_chunk
  for index in range(20):
    video = generate_video(config, "train", index)
    ids, captions, frames = video["scene_ids"], list(video["captions"]), video["frames"]
    specs = [toy_grammar.parse_caption(c) for c in captions]  # raises outside the grammar
    assert 2 <= len(set(ids.tolist())) <= 3
    for c, d in [(c, d) for c in range(len(ids)) for d in range(len(ids))]:
      assert (specs[c] == specs[d]) == (ids[c] == ids[d])  # one caption per scene
    # Some scene returns after a cut to another scene ...
    returns = [e for e in range(2, len(ids)) if ids[e] != ids[e - 1] and ids[e] in ids[:e - 1]]
    assert returns, ids
    # ... with the same look: the same background and sprite colours as before.
    for e in returns:
      earlier = int(np.flatnonzero(ids[:e] == ids[e])[-1])
      colours = lambda c: set(map(tuple, frames[c * fpc:(c + 1) * fpc].reshape(-1, 3).tolist()))
      assert colours(e) == colours(earlier)
  assert toy_grammar.parse_caption("a red digit seven bounces around on a navy background") == (
      toy_grammar.SceneSpec("red", "seven", "bounce", "navy"))
  assert toy_grammar.caption(toy_grammar.SceneSpec("orange", "cross", "up", "olive")) == (
      "an orange cross moves up on an olive background")
  for bad in ("a red elephant moves left on a navy background",
              "a orange cross moves up on an olive background"):
    with pytest.raises(ValueError):
      toy_grammar.parse_caption(bad)


def test_returning_scene_resumes_its_motion():
  # A straight-moving sprite wraps around a uniform background, so each frame of its scene is the
  # previous one rolled by the velocity: across a cut away and back too (the scene resumes).
  config = toy_config(**{**TINY, "chunks_per_video": 12})
  fpc, checked = config.frames_per_chunk, 0
  for index in range(30):
    video = generate_video(config, "train", index)
    ids = video["scene_ids"]
    for scene in set(ids.tolist()):
      motion = toy_grammar.parse_caption(video["captions"][int(np.argmax(ids == scene))]).motion
      chunks = np.flatnonzero(ids == scene)
      if motion in ("still", "bounce") or np.all(np.diff(chunks) == 1):
        continue  # not a straight motion, or the scene never returns
      own = np.concatenate([video["frames"][c * fpc:(c + 1) * fpc] for c in chunks])  # [F, H, W, 3]
      shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if np.array_equal(np.roll(own[0], (dy, dx), axis=(0, 1)), own[1])]
      assert len(shifts) == 1 and shifts[0] != (0, 0)
      for prev, nxt in zip(own[:-1], own[1:]):
        np.testing.assert_array_equal(np.roll(prev, shifts[0], axis=(0, 1)), nxt)
      checked += 1
  assert checked >= 3


def test_pipeline_batches(toy):
  ds = pipeline.make_dataset(toy.as_data_source("train"), batch_size=3, window_chunks=4,
                             frames_per_chunk=2, seed=0)
  batch = next(pipeline.make_iterator(ds))
  assert batch["frames"].shape == (3, 8, 16, 16, 3) and batch["frames"].dtype == np.float32
  assert batch["frames"].min() >= -1.0 and batch["frames"].max() <= 1.0
  assert batch["captions"].shape == (3, 4) and batch["scene_ids"].shape == (3, 4)
  for b in range(3):
    video = generate_video(toy.builder_config, "train", int(batch["video_index"][b]))
    s = int(batch["start_chunk"][b])
    assert 0 <= s <= 2
    np.testing.assert_array_equal(batch["frames"][b],
                                  video["frames"][2 * s:2 * s + 8] * np.float32(2 / 255) - 1)
    assert list(batch["captions"][b]) == list(video["captions"][s:s + 4])
  with pytest.raises(ValueError, match="window"):
    pipeline.select_window(generate_video(toy.builder_config, "train", 0), 3, 4, 2)
  with pytest.raises(ValueError, match="window_chunks=7"):
    pipeline.make_dataset(toy.as_data_source("train"), batch_size=3, window_chunks=7,
                          frames_per_chunk=2, seed=0)


def test_iterator_state_round_trips(toy):
  make = lambda: pipeline.make_iterator(pipeline.make_dataset(
      toy.as_data_source("train"), batch_size=2, window_chunks=3, frames_per_chunk=2, seed=7))
  it = make()
  for _ in range(4):  # k = 4 batches: past the first epoch of 3 batches
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]  # m = 5
  fresh = make()
  fresh.set_state(state)
  assert all(_batches_equal(a, b) for a, b in zip(expected, [next(fresh) for _ in range(5)]))
  # Same seed, same stream; another seed, another order.
  first = next(make())
  assert _batches_equal(first, next(make()))
  other = next(pipeline.make_iterator(pipeline.make_dataset(
      toy.as_data_source("train"), batch_size=2, window_chunks=3, frames_per_chunk=2, seed=8)))
  assert not _batches_equal(first, other)


def test_iterator_state_through_orbax(toy, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  make = lambda: pipeline.make_iterator(pipeline.make_dataset(
      toy.as_data_source("train"), batch_size=2, window_chunks=3, frames_per_chunk=2, seed=3))
  it = make()
  next(it), next(it)
  with ocp.CheckpointManager(tmp_path.absolute() / "ckpt") as mngr:
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    restored = mngr.restore(2, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(make())))["data"]
  assert all(_batches_equal(a, b) for a, b in zip(expected, [next(restored) for _ in range(3)]))


def test_process_sharding_is_disjoint(toy):
  source = toy.as_data_source("train")
  kw = dict(batch_size=1, window_chunks=2, frames_per_chunk=2, seed=5, num_epochs=2,
            drop_remainder=False)
  stream = [b for b in pipeline.make_iterator(pipeline.make_dataset(source, **kw, shard_index=0,
                                                                    shard_count=1))]
  assert len(stream) == 12 and sorted(int(b["video_index"][0]) for b in stream[:6]) == list(
      range(6))
  shards = [list(pipeline.make_iterator(pipeline.make_dataset(source, **kw, shard_index=i,
                                                              shard_count=3)))
            for i in range(3)]
  assert [len(s) for s in shards] == [4, 4, 4]
  for i, shard in enumerate(shards):  # shard i holds global positions i, i + 3, ...
    assert all(_batches_equal(b, stream[i + 3 * j]) for j, b in enumerate(shard))
  first_epoch = [int(b["video_index"][0]) for s in shards for b in s[:2]]
  assert sorted(first_epoch) == list(range(6))  # disjoint, and together the whole epoch
  with pytest.raises(ValueError):
    pipeline.make_dataset(source, **kw, shard_index=3, shard_count=3)


# -------------------------------------------------------------------------------- video folder


def test_segment_at():
  segs = [{"start": 0.0, "end": 1.5, "caption": "a"}, {"start": 1.5, "end": 3.0, "caption": "b"}]
  assert [segment_at(segs, t) for t in (0.0, 1.49, 1.5, 2.9, 7.0)] == [0, 0, 1, 1, 1]


# imageio-ffmpeg starts ffmpeg with fork + exec, which JAX's fork hook warns about needlessly.
@pytest.mark.filterwarnings("ignore:os.fork")
def test_video_folder_windows_and_skips(tmp_path, caplog):
  videos = tmp_path / "videos"
  videos.mkdir()
  clip = generate_video(toy_config(resolution=32, frames_per_chunk=4, chunks_per_video=6,
                                   num_videos=2), "train", 0)["frames"]  # [24, 32, 32, 3]
  write_video(videos / "good_a.mp4", clip, fps=8)
  write_video(videos / "good_b.mp4", clip[:14], fps=8)  # two windows of 6 frames
  write_video(videos / "uncaptioned.mp4", clip, fps=8)
  (videos / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
  segments = [{"start": 0.0, "end": 1.5, "caption": "first shot"},
              {"start": 1.5, "end": 3.0, "caption": "second shot"}]
  (videos / "captions.json").write_text(json.dumps(
      {"good_a.mp4": segments, "good_b": segments, "corrupt.mp4": segments}))
  config = video_folder_config(str(videos), frames_per_chunk=2, chunks_per_window=3)
  with caplog.at_level(logging.WARNING, logger="blockvid_jax.data.video_folder"):
    builder = pipeline.build_video_folder_dataset(str(tmp_path / "tfds"), config)
  reasons = "\n".join(r.getMessage() for r in caplog.records)
  assert "skipping" in reasons and "corrupt.mp4" in reasons and "unreadable" in reasons
  assert "uncaptioned.mp4: no captions" in reasons
  source = builder.as_data_source("train")
  examples = sorted((source[i] for i in range(len(source))),
                    key=lambda e: (int(e["video_index"]), int(e["start_frame"])))
  assert [(e["video"].decode(), int(e["start_frame"])) for e in examples] == (
      [("good_a.mp4", s) for s in (0, 6, 12, 18)] + [("good_b.mp4", s) for s in (0, 6)])
  # 8 fps: chunks whose middle frame lies before 1.5 s get the first caption.
  third = examples[2]  # frames 12..17, chunk middles 1.56 s, 1.81 s, 2.06 s
  assert [c.decode() for c in examples[1]["captions"]] == ["first shot"] * 3
  assert [c.decode() for c in third["captions"]] == ["second shot"] * 3
  assert third["scene_ids"].tolist() == [1, 1, 1] and third["frames"].shape == (6, 32, 32, 3)
  assert np.abs(third["frames"].astype(int) - clip[12:18]).mean() < 8  # lossy mp4, same frames
  batch = next(pipeline.make_iterator(pipeline.make_dataset(
      source, batch_size=2, window_chunks=2, frames_per_chunk=2, seed=0)))
  assert batch["frames"].shape == (2, 4, 32, 32, 3) and batch["captions"].shape == (2, 2)


def test_video_folder_resizes_and_rejects_bad_config(tmp_path):
  from blockvid_jax.data.video_folder import resize_frames
  frames = np.zeros((2, 20, 40, 3), np.uint8)
  frames[:, :, 10:30] = 255  # the centre square survives the crop
  out = resize_frames(frames, 8, 8)
  assert out.shape == (2, 8, 8, 3) and out.min() == 255
  with pytest.raises(ValueError):
    video_folder_config(str(tmp_path / "missing"))
  with pytest.raises(ValueError):
    video_folder_config(str(tmp_path), chunks_per_window=0)


def test_centre_start_makes_a_scenes_first_chunk_a_function_of_its_caption():
  # The quickstart build (issue 15): with sprite_start="centre" the first chunk of a scene is the
  # same in every video that opens it with the same caption (position, speed and, for bounces,
  # direction fixed); with "random" starts the same caption opens differently.
  def first_chunks(start):
    build = toy_config(resolution=32, num_videos=64, use_digits=False, sprite_size=16,
                       sprite_start=start)
    seen = {}
    for i in range(64):
      ex = generate_video(build, "train", i)
      firsts = {}
      for c, s in enumerate(ex["scene_ids"].tolist()):
        firsts.setdefault(s, c)
      for s, c in firsts.items():
        seen.setdefault(str(ex["captions"][c]), []).append(ex["frames"][c * 3:(c + 1) * 3])
    return {cap: clips for cap, clips in seen.items() if len(clips) > 1}

  centred = first_chunks("centre")
  assert any("bounces" in cap for cap in centred), "the check needs a repeated bouncing scene"
  for cap, clips in centred.items():
    for clip in clips[1:]:
      np.testing.assert_array_equal(clip, clips[0], err_msg=cap)
  randomised = first_chunks("random")
  assert any(not np.array_equal(c, clips[0]) for clips in randomised.values() for c in clips[1:])
