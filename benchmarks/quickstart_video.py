"""Scores the quickstart video: does every chunk show its prompt's sprite on its background?

  python benchmarks/quickstart_video.py --video outputs/toy.mp4 --prompts configs/toy_prompts.json \
      [--config configs/toy_cpu.py] [--grid benchmarks/results/quickstart_grid.png]

The config that trained the model gives the build's geometry: frames per chunk, sprite side and
objects (`data.use_digits`), so the scorer's candidates are the objects that build can draw.

Per chunk (`blockvid_jax.data.toy_fidelity`): background colour, sprite colour and sprite shape
recognised against the toy renderer's palette and objects (best placement of every candidate
rendering), the RMS pixel error of the caption's rendering at its best placement, and the share of a
flat background's error the caption's sprite removes (`sprite_gain`: 1 for the renderer's frames,
<= 0 when no sprite is visible; tests/test_toy_fidelity.py checks the renderer's own frames score
1). Prints a table, writes `benchmarks/results/quickstart_video.json` and a
frame-grid PNG (one column per chunk, its frames top to bottom, 4x nearest-neighbour).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from blockvid_jax import config_overrides, generate
from blockvid_jax.data import toy_fidelity, toy_grammar
from blockvid_jax.video_io import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def frame_grid(frames: np.ndarray, frames_per_chunk: int, chunks: int, scale: int = 4) -> np.ndarray:
  """uint8 [C*Fc, H, W, 3] -> one column per chunk (first `chunks`), frames stacked: [Fc*H, C*W, 3]."""
  cols = [np.concatenate(list(frames[c * frames_per_chunk:(c + 1) * frames_per_chunk]), axis=0)
          for c in range(chunks)]
  grid = np.concatenate(cols, axis=1)
  return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--video", required=True)
  ap.add_argument("--prompts", required=True)
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", "toy_cpu.py"),
                  help="the training config (its data section: geometry, sprite size, objects)")
  ap.add_argument("--grid", default=os.path.join(RESULTS, "quickstart_grid.png"))
  ap.add_argument("--grid_chunks", type=int, default=20)
  ap.add_argument("--out", default=os.path.join(RESULTS, "quickstart_video.json"))
  args = ap.parse_args(argv)
  d = config_overrides.load_config_file(args.config).data
  frames = read_video(args.video)                                          # [T, H, W, 3]
  fpc = d.frames_per_chunk
  num = frames.shape[0] // fpc
  captions = generate.chunk_prompts(generate.read_prompts(args.prompts), num)
  scores = toy_fidelity.video_scores(frames[:num * fpc], captions, fpc, d.sprite_size,
                                     toy_grammar.objects(d.use_digits))
  print(f"{'chunk':>5} {'ok':>3} {'bg':>3} {'col':>3} {'shape':>5} {'render_err':>10} "
        f"{'sprite_gain':>11}  caption")
  for i, (ch, cap) in enumerate(zip(scores["chunks"], captions)):
    mark = lambda b: "y" if b else "-"
    print(f"{i:>5} {mark(ch['correct']):>3} {mark(ch['background']):>3} {mark(ch['colour']):>3} "
          f"{mark(ch['shape']):>5} {ch['render_error']:>10.3f} {ch['sprite_gain']:>11.3f}  {cap}")
  s = scores["summary"]
  print(f"all chunks: correct {s['correct']:.3f} (background {s['background']:.3f}, colour "
        f"{s['colour']:.3f}, shape {s['shape']:.3f}); render error {s['render_error']:.3f}, "
        f"sprite gain {s['sprite_gain']:.3f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"video": os.path.abspath(args.video), "config": os.path.relpath(args.config, ROOT),
               "objects": list(toy_grammar.objects(d.use_digits)), "captions": captions, **scores}, f, indent=1)
  os.replace(tmp, args.out)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  grid = frame_grid(frames, fpc, min(args.grid_chunks, num))
  Image.fromarray(grid).save(args.grid)
  print(f"wrote {args.out} and {args.grid}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
