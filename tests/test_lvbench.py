"""`python -m blockvid_jax.lvbench`: meta checks, caption -> chunk mapping, sharding, and a tiny end
to end run (generate -> resume -> report) with `configs/toy_cpu.py` shrunk by overrides, a random
init (no checkpoint) and the tiny random scorer weights of `test_evaluate_cli`.
"""

import json
import os

import numpy as np
import pytest

from blockvid_jax import video_io
from blockvid_jax.lvbench import cli, meta
from test_evaluate_cli import write_tiny_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "toy_cpu.py")
SMALL = ["--config.model.num_layers=1", "--config.model.dim=64", "--config.model.ffn_dim=128",
         "--config.sample.num_steps=2", "--config.sample.guidance=1.0", "--quiet"]
META = {   # toy_cpu: 3 frames per chunk at 8 fps = 0.375 s per chunk
    "vid_b": [{"start": 0, "end": 1.0, "caption": "a green square moves up"}],
    "vid_a": [{"start": 0, "end": 0.75, "caption": "a red circle moves left"},
              {"start": 0.75, "end": 1.5, "caption": "a blue square moves right"}],
}


def write_meta(tmp_path, obj, name="meta.json"):
  p = tmp_path / name
  p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
  return str(p)


def one_line_error(capsys, needle):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


# ----------------------------------------------------------------------------- library


def test_chunk_captions_cover_spans_gaps_and_ties():
  caps = meta.parse_meta({"v": [{"start": 0, "end": 1.0, "caption": "A"},
                                {"start": 1.0, "end": 1.5, "caption": "B"},
                                {"start": 2.5, "end": 3.0, "caption": "C"}]})["v"]
  # chunks of 0.5 s: [0,.5) A, [.5,1) A, [1,1.5) B, [1.5,2) gap -> B, [2,2.5) gap -> B, [2.5,3) C
  assert meta.chunk_captions(caps, meta.ChunkTiming(1, 0, 2.0)) == ["A", "A", "B", "B", "B", "C"]
  # chunks of 0.75 s: [0,.75) A, [.75,1.5) .25/.5 -> B, [1.5,2.25) gap -> B, [2.25,3) C
  assert meta.chunk_captions(caps, meta.ChunkTiming(3, 0, 4.0)) == ["A", "B", "B", "C"]
  # a tie (.25 each in [.75, 1.5) of B' = [1.25, 3)) goes to the earlier caption
  tie = meta.parse_meta({"v": [{"start": 0, "end": 1.0, "caption": "A"},
                               {"start": 1.25, "end": 3.0, "caption": "B"}]})["v"]
  assert meta.chunk_captions(tie, meta.ChunkTiming(3, 0, 4.0)) == ["A", "A", "B", "B"]


@pytest.mark.parametrize("name,fpc,fps", [("self_forcing_1_3b", 3, 16), ("wan_1_3b_causal", 3, 16),
                                           ("skyreels_v2_df_1_3b", 5, 24)])
def test_wan_chunk_timing_has_a_short_first_chunk(name, fpc, fps):
  from blockvid_jax.encode_videos import chunk_frame_range  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.vae import VAESpec  # pylint: disable=import-outside-toplevel
  config = cli.load_config(os.path.join(ROOT, "configs", f"{name}.py"))
  assert config.autoencoder.kind == "wan"
  timing = meta.chunk_timing(config)
  assert timing == meta.ChunkTiming(frames=4 * fpc, first_short=3, fps=fps)
  for c in range(4):
    lo, hi = timing.frame_range(c)
    assert hi - lo == 4 * fpc - (3 if c == 0 else 0)
    assert (lo, hi - 1) == chunk_frame_range(c, fpc)        # the frames encode.py gives chunk c
    assert timing.num_frames(c + 1) == 1 + 4 * ((c + 1) * fpc - 1)
    assert timing.num_frames(c + 1) == VAESpec().num_video_frames((c + 1) * fpc)
  n = timing.num_chunks(60.0)                                # a minute: the fewest chunks >= 60 s
  assert timing.num_frames(n) / fps >= 60.0 > timing.num_frames(n - 1) / fps


def test_wan_captions_follow_the_short_first_chunk():
  config = cli.load_config(os.path.join(ROOT, "configs", "self_forcing_1_3b.py"))
  caps = meta.parse_meta({"v": [{"start": 0, "end": 1.0, "caption": "A"},
                                {"start": 1.0, "end": 2.1, "caption": "B"}]})["v"]
  # 16 fps, 12 frames per chunk but 9 in the first: [0, .5625) A, [.5625, 1.3125) .4375 A / .3125
  # B -> A, [1.3125, 2.0625) B, [2.0625, 2.8125) B; 3 chunks (33 frames) would end at 2.0625 s
  assert meta.chunk_captions(caps, meta.chunk_timing(config)) == ["A", "A", "B", "B"]
  # equal 0.75 s chunks (no short first chunk) would give 3 chunks A, B, B
  assert meta.chunk_captions(caps, meta.ChunkTiming(12, 0, 16.0)) == ["A", "B", "B"]


def test_select_partitions_sorted_ids():
  ids = [f"v{i}" for i in (3, 1, 4, 0, 2)]
  shards = [meta.select(ids, s, 2) for s in (0, 2, 4)]
  assert shards == [["v0", "v1"], ["v2", "v3"], ["v4"]]
  assert meta.select(ids, 1, None, only=["v4", "v2"]) == ["v4"]


@pytest.mark.parametrize("obj,needle", [
    ({"v": [{"start": 0, "caption": "x"}]}, "missing end"),
    ({"v": [{"start": -1, "end": 1, "caption": "x"}]}, "0 <= start < end"),
    ({"v": [{"start": 2, "end": 1, "caption": "x"}]}, "0 <= start < end"),
    ({"v": [{"start": 0, "end": 2, "caption": "x"}, {"start": 1, "end": 3, "caption": "y"}]},
     "overlaps"),
    ({"v": [{"start": 0, "end": 1, "caption": " "}]}, "caption must be"),
    ({"v": [{"start": "0", "end": 1, "caption": "x"}]}, "numbers of seconds"),
    ({"../v": [{"start": 0, "end": 1, "caption": "x"}]}, "file name"),
    ({"v": []}, "non-empty list"),
    ([], "non-empty JSON object"),
    ("{not json", "not valid JSON"),
])
def test_malformed_meta_exit_2_nothing_written(tmp_path, capsys, obj, needle):
  out = tmp_path / "out"
  rc = cli.main(["generate", "--meta", write_meta(tmp_path, obj), "--config", CONFIG,
                 "--out", str(out)] + SMALL)
  assert rc == 2 and not out.exists()
  one_line_error(capsys, needle)


def test_unknown_ids_and_bad_override(tmp_path, capsys):
  out = tmp_path / "out"
  m = write_meta(tmp_path, META)
  assert cli.main(["generate", "--meta", m, "--config", CONFIG, "--out", str(out),
                   "--ids", "vid_a,nope"] + SMALL) == 2
  one_line_error(capsys, "unknown video id(s) nope")
  assert cli.main(["generate", "--meta", m, "--config", CONFIG, "--out", str(out),
                   "--config.model.no_such_field=3"]) == 2
  one_line_error(capsys, "unknown config key 'model.no_such_field'")
  assert cli.main(["generate", "--meta", m, "--config", CONFIG, "--out", str(out),
                   "--config.autoencoder.kind=wan"] + SMALL) == 2       # latents only: no .mp4
  one_line_error(capsys, "needs autoencoder.checkpoint")
  assert not out.exists()


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
  return write_tiny_weights(tmp_path_factory.mktemp("weights"))


def test_generate_shards_resume_then_report(tmp_path, capsys, weights_dir):
  m, videos = write_meta(tmp_path, META), tmp_path / "videos"
  gen = ["generate", "--meta", m, "--config", CONFIG, "--out", str(videos)] + SMALL
  assert cli.main(gen + ["--start", "0", "--count", "1"]) == 0           # host 0 of 2
  assert sorted(os.listdir(videos)) == ["vid_a.mp4"]
  assert cli.main(gen + ["--start", "1", "--count", "1"]) == 0           # host 1 of 2
  assert sorted(os.listdir(videos)) == ["vid_a.mp4", "vid_b.mp4"]
  mtimes = {p: os.path.getmtime(videos / p) for p in os.listdir(videos)}
  capsys.readouterr()
  assert cli.main(gen) == 0                                              # resume: nothing to do
  assert "generated 0, skipped 2" in capsys.readouterr().out
  assert {p: os.path.getmtime(videos / p) for p in os.listdir(videos)} == mtimes
  # vid_a: 1.5 s / 0.375 s = 4 chunks of 3 frames; vid_b: ceil(1.0 / 0.375) = 3 chunks
  assert video_io.read_video(videos / "vid_a.mp4").shape == (12, 32, 32, 3)
  assert video_io.read_video(videos / "vid_b.mp4").shape == (9, 32, 32, 3)

  out = tmp_path / "report"
  rc = cli.main(["report", "--videos", str(videos), "--out", str(out), "--weights_dir",
                 str(weights_dir), "--meta", m, "--n_chunks", "3", "--head_dim", "16", "--quiet"])
  assert rc == 0
  table = json.loads((out / "lvbench_table.json").read_text())
  ours, *paper = table["rows"]
  assert [r["name"] for r in paper] == ["SkyReels-V2-DF-1.3B (paper)", "BlockVid (paper)",
                                        "Self Forcing (paper)"]
  assert paper[1]["vde"]["subject"] == 0.0844 and paper[1]["vde"]["clarity"] == 0.7551
  dims = table["dimensions"]
  assert set(ours["vde"]) == set(dims) and len(dims) == 5
  assert all(isinstance(ours["vde"][d], float) and ours["vde"][d] >= 0 for d in dims)
  assert all(isinstance(v, float) for v in ours["vbench"].values()) and len(ours["vbench"]) == 5
  assert ours["num_videos"]["subject"] == 2
  assert ours["paper_metric"]["subject"] and not ours["paper_metric"]["clarity"]   # stand-in
  summary = json.loads((out / "evaluate" / "summary.json").read_text())
  per = json.loads((out / "evaluate" / "vde_subject.json").read_text())
  assert ours["vde"]["subject"] == pytest.approx(np.mean(list(per.values())))
  assert ours["vbench"]["imaging_quality"] == summary["vbench"]["imaging_quality"]["mean"]
  md = (out / "lvbench_table.md").read_text()
  assert md.startswith("| model |") and md.count("\n| ") == 4            # header + 4 rows
  assert "VDE Clarity †" in md and "BlockVid (paper)" in md
  assert "| ours |" in capsys.readouterr().out

  # a video the meta file does not know: one line, exit 2, nothing written
  video_io.write_video(videos / "stray.mp4", np.zeros((9, 32, 32, 3), np.uint8))
  out2 = tmp_path / "report2"
  assert cli.main(["report", "--videos", str(videos), "--out", str(out2), "--meta", m]) == 2
  one_line_error(capsys, "not in the meta file: stray")
  assert not out2.exists()
