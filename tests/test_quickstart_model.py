"""The quickstart's model draws its prompt's sprite (issue 15): a short run of the embedded default.

README command 1 once produced videos with no sprite at all (coloured specks, or full-frame noise on
gray backgrounds) while every other test passed. This test runs the same two CLIs on
`configs/toy_cpu.py` - its model, objective, noise schedule and sampler - on a smaller build of the
same toy data (`OVERRIDES`: fewer videos and shorter windows, so a thousand steps suffice), then
samples the first chunk of four scenes of that build and scores it with the toy renderer's recogniser
(`data.toy_fidelity`): every background must be the caption's, at least half of the sprite colours,
and in 3 of the 4 chunks one sprite of the caption's object must explain most of the difference to
a flat background (`sprite_gain` > 0.3; specks and noise score <= 0.1, the renderer's own frames 1).
Measured here at d31c7a2 (2-core CPU, about 150 s in all), training seeds 0-3 (`--config.seed`) at
1000 steps: backgrounds 16 of 16, colours 2 / 4 / 3 / 4 of 4, sprite gains > 0.3 in 3 of 4 chunks in
every run; at 600-800 steps runs of other seeds missed a background or two sprites, so the bar is set
at 1000. (The bc3690c model - attention layout, remat - passes with seed 0; seeds 1-3 not rerun.)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from blockvid_jax.data import toy_fidelity, toy_grammar
from blockvid_jax.data.toy_long_video import generate_video, toy_config
from blockvid_jax.video_io import read_video

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 1000
NUM_VIDEOS = 8
WINDOW = 2
OVERRIDES = [f"--config.train.total_steps={STEPS}", f"--config.train.checkpoint_every={STEPS}",
             "--config.train.sample_every=0", "--config.train.log_every=100",
             "--config.train.warmup_steps=30", f"--config.data.num_videos={NUM_VIDEOS}",
             f"--config.data.window_chunks={WINDOW}"]
MIN_SPRITE_GAIN = 0.3
NUM_CAPTIONS = 4


def _run(args, cwd):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}   # one CPU device, as a user
  r = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                     text=True, timeout=900, check=False)
  assert r.returncode == 0, r.stderr[-3000:]


def _first_captions(count: int) -> list[str]:
  """Opening captions of the first videos of the build the run trains on (centred sprites)."""
  build = toy_config(num_videos=NUM_VIDEOS, use_digits=False, sprite_size=16,
                     sprite_start="centre")
  return [str(generate_video(build, "train", i)["captions"][0]) for i in range(count)]


@pytest.mark.slow
def test_short_quickstart_run_draws_the_caption_sprite(tmp_path):
  config = str(ROOT / "configs" / "toy_cpu.py")
  work = tmp_path / "run"
  _run(["blockvid_jax.train", "--config", config, "--workdir", str(work), *OVERRIDES], ROOT)
  captions = _first_captions(NUM_CAPTIONS)
  prompts = tmp_path / "prompts.json"
  prompts.write_text(json.dumps([{"prompt": p, "chunks": 1} for p in captions]))
  out = tmp_path / "toy.mp4"
  _run(["blockvid_jax.sample", "--config", config, "--checkpoint", str(work / "params_ema"),
        "--prompts", str(prompts), "--num_chunks", str(len(captions)), "--out", str(out)], ROOT)
  frames = read_video(str(out))                                         # [C*3, 32, 32, 3]
  scores = toy_fidelity.video_scores(frames, captions, 3, 16, toy_grammar.objects(False))
  print(json.dumps({"captions": captions, "chunks": scores["chunks"]}, indent=1))
  for chunk in scores["chunks"]:
    assert chunk["background"], scores["chunks"]
  assert sum(c["colour"] for c in scores["chunks"]) >= NUM_CAPTIONS // 2, scores["chunks"]
  # Thin shapes (a triangle) come out fainter after 1000 steps: 3 of the 4 sprites must be clear.
  gains = sorted(c["sprite_gain"] for c in scores["chunks"])
  assert gains[1] > MIN_SPRITE_GAIN, gains
