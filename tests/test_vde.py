"""VDE on hand-computed cases, edge cases, trimming and JSON reports; scorer formulas vs loops."""

import json
import math

import numpy as np
import pytest

from blockvid_jax.evaluate import scorers, vde


def test_linear_hand_computed():
  # N=3: w_2 = 2, w_3 = 1 -> 2*|2-1|/1 + 1*|0.5-1|/1 = 2.5
  assert vde.vde([1.0, 2.0, 0.5]) == pytest.approx(2.5)
  # N=4: w = 3, 2, 1 -> 3*0.5 + 2*0.5 + 1*0.5 = 3.0 (no normalisation by sum(w))
  assert vde.vde([2.0, 1.0, 1.0, 3.0], "linear") == pytest.approx(3.0)


def test_log_hand_computed():
  # w_i = ln(N - i + 1): N=3 -> ln 2, ln 1 = 0
  assert vde.vde([1.0, 2.0, 0.5], "log") == pytest.approx(math.log(2.0))
  # N=4 -> ln 3, ln 2, ln 1: 0.5 ln 3 + 0.5 ln 2 + 0
  assert vde.vde([2.0, 1.0, 1.0, 3.0], "log") == pytest.approx(0.5 * math.log(6.0))


def test_weights():
  np.testing.assert_allclose(vde.chunk_weights(10, "linear"), np.arange(9, 0, -1))
  np.testing.assert_allclose(vde.chunk_weights(10, "log"), np.log(np.arange(9, 0, -1)))
  with pytest.raises(ValueError, match="weighting"):
    vde.chunk_weights(10, "cosine")
  with pytest.raises(ValueError, match="weighting"):
    vde.vde([1.0, 2.0], "cosine")


def test_constant_metric_is_zero():
  assert vde.vde([0.7] * 10) == 0.0
  assert vde.vde([0.7] * 10, "log") == 0.0


def test_zero_first_chunk_is_inf():
  assert vde.vde([0.0, 0.1, 0.2]) == math.inf
  assert vde.vde([0.0, 0.0, 0.0]) == math.inf  # literal rule: m_1 = 0 gives +inf


def test_fewer_than_two_chunks_is_zero():
  assert vde.vde([]) == 0.0
  assert vde.vde([0.3]) == 0.0
  assert vde.vde([0.0]) == 0.0  # N < 2 is checked before m_1 = 0


def test_ten_chunks_matches_loop():
  rng = np.random.default_rng(0)
  m = rng.uniform(0.2, 1.0, size=10)
  want = sum((10 - i + 1) * abs(m[i - 1] - m[0]) / m[0] for i in range(2, 11))
  assert vde.vde(m) == pytest.approx(want)


def test_trimming_and_chunks():
  frames = np.arange(23)[:, None, None, None] * np.ones((1, 2, 2, 3))  # frame t has value t
  chunks = vde.split_chunks(frames, 10)
  assert len(chunks) == 10 and all(c.shape == (2, 2, 2, 3) for c in chunks)
  assert chunks[0][:, 0, 0, 0].tolist() == [0, 1]
  assert chunks[-1][:, 0, 0, 0].tolist() == [18, 19]   # frames 20, 21, 22 are trimmed
  assert vde.trimmed_length(23, 10) == 20
  score, per_chunk = vde.video_vde(frames, lambda c: c.mean() + 1.0, 10)
  assert per_chunk == pytest.approx([2 * i + 1.5 for i in range(10)])
  m = np.array(per_chunk)
  assert score == pytest.approx(np.sum(np.arange(9, 0, -1) * np.abs(m[1:] - m[0]) / m[0]))


def test_too_few_frames_raise():
  with pytest.raises(ValueError, match="cannot be split"):
    vde.split_chunks(np.zeros((9, 2, 2, 3)), 10)


def test_metric_json_and_summary(tmp_path):
  per_video = {"a.mp4": 0.25, "b.mp4": math.inf}
  path = vde.write_metric_json(tmp_path, "subject", per_video)
  assert path.name == "vde_subject.json"
  raw = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
  assert raw == {"a.mp4": 0.25, "b.mp4": "inf"}
  assert vde.read_metric_json(path) == per_video
  vde.write_summary(tmp_path, n_chunks=10, weighting="log", per_metric={"subject": per_video},
                    chunk_scores={"subject": {"a.mp4": [1.0, 2.0]}},
                    descriptions={"subject": "dino"}, paper_metric={"subject": True},
                    skipped=[{"video": "c.mp4", "metric": "*", "reason": "unreadable"}])
  summary = json.loads((tmp_path / "summary.json").read_text())
  s = summary["metrics"]["subject"]
  assert s["mean"] == "inf" and s["mean_finite"] == 0.25 and s["num_infinite"] == 1
  assert s["num_videos"] == 2 and s["paper_metric"] is True
  assert summary["skipped"][0]["video"] == "c.mp4" and summary["weighting"] == "log"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "vde_subject.json"]


def _consistency_loop(feats):
  """VBench's per-frame loop, written plainly."""
  total, first, former = 0.0, None, None
  for i, f in enumerate(feats):
    f = f / np.linalg.norm(f)
    if i == 0:
      first = f
    else:
      sim_pre = max(0.0, float(np.dot(former, f)))
      sim_fir = max(0.0, float(np.dot(first, f)))
      total += (sim_pre + sim_fir) / 2
    former = f
  return total / (len(feats) - 1)


@pytest.mark.parametrize("t", [2, 3, 9])
def test_consistency_matches_loop(t):
  feats = np.random.default_rng(t).normal(size=(t, 16))  # random: some cosines are negative
  assert scorers.consistency(feats) == pytest.approx(_consistency_loop(feats), rel=1e-12)


def test_consistency_identical_frames_is_one():
  assert scorers.consistency(np.ones((5, 8))) == pytest.approx(1.0)
  with pytest.raises(ValueError):
    scorers.consistency(np.ones((1, 8)))


def test_motion_smoothness_matches_loop():
  frames = np.random.default_rng(1).integers(0, 256, size=(8, 6, 5, 3), dtype=np.uint8)
  diffs = []
  for k in range(3):  # evens 0,2,4,6 -> 3 midpoints compared with frames 1,3,5
    mid = np.round((frames[2 * k].astype(float) + frames[2 * k + 2]) / 2)
    diffs.append(np.abs(frames[2 * k + 1] - mid).mean())
  want = (255 - np.mean(diffs)) / 255
  assert scorers.motion_smoothness(frames, scorers.linear_blend) == pytest.approx(want)
  ramp = (np.arange(7)[:, None, None, None] * 10 * np.ones((1, 4, 4, 3))).astype(np.uint8)
  assert scorers.motion_smoothness(ramp, scorers.linear_blend) == pytest.approx(1.0)


def test_laplacian_variance():
  flat = np.full((2, 8, 8, 3), 100, np.uint8)
  assert scorers.laplacian_variance(flat).tolist() == [0.0, 0.0]
  dot = flat.copy()
  dot[:, 4, 4] = 200                            # luma step 100 at one pixel
  lap = np.zeros((6, 6))
  lap[3, 3] = -400.0
  lap[2, 3] = lap[4, 3] = lap[3, 2] = lap[3, 4] = 100.0
  np.testing.assert_allclose(scorers.laplacian_variance(dot), [lap.var()] * 2, rtol=1e-9)
