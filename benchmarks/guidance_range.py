"""Sampled latent range and toy fidelity per guidance scale, for a trained toy checkpoint.

  python benchmarks/guidance_range.py --config configs/toy_cpu.py --checkpoint runs/toy_cpu/params_ema \
      [--prompts configs/toy_prompts.json] [--num_chunks 10] [--guidance 1,1.5,2,3]

The toy autoencoder's latents of real frames lie in [-1, 1] (pixels scaled to [-1, 1]); classifier-
free guidance extrapolates cond - uncond and can push latents out of that range, which decodes to
saturated noise. For each scale: min / max / 0.1% and 99.9% quantiles of the sampled latents (data
channels only), the share of latents outside [-1.05, 1.05], and the `toy_fidelity` summary of the
decoded video. Prints a table, writes `benchmarks/results/guidance_range.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from blockvid_jax import config_lib, generate
from blockvid_jax.data import toy_fidelity
from blockvid_jax.models import toy_autoencoder

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--checkpoint", required=True)
  ap.add_argument("--prompts", default="configs/toy_prompts.json")
  ap.add_argument("--num_chunks", type=int, default=10)
  ap.add_argument("--guidance", default="1,1.5,2,3")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default=os.path.join(RESULTS, "guidance_range.json"))
  args = ap.parse_args(argv)
  name = os.path.splitext(os.path.basename(args.config))[0]
  config = config_lib.sibling_config(args.config, name)
  if config.autoencoder.kind != "toy":
    print("error: this benchmark reads toy checkpoints (autoencoder.kind='toy')", file=sys.stderr)
    return 2
  prompts = generate.read_prompts(args.prompts)
  captions = generate.chunk_prompts(prompts, args.num_chunks)
  fpc = config.model.frames_per_chunk
  channels = toy_autoencoder.data_channels(config.autoencoder.factor)
  rows = []
  print(f"{'guidance':>8} {'min':>7} {'max':>7} {'q0.1%':>7} {'q99.9%':>7} {'outside':>8} "
        f"{'correct':>7} {'bg':>5} {'colour':>6} {'shape':>5}")
  for g in (float(s) for s in args.guidance.split(",")):
    config.sample.guidance = g
    latents, pixels = generate.generate(config, prompts, args.num_chunks, args.seed,
                                        checkpoint=args.checkpoint, progress=False)
    z = np.asarray(latents)[..., :channels]                               # [1, F, X, Y, 3 s^2]
    s = toy_fidelity.video_scores(pixels, captions, fpc, config.data.sprite_size)["summary"]
    row = dict(guidance=g, min=float(z.min()), max=float(z.max()),
               q001=float(np.quantile(z, 0.001)), q999=float(np.quantile(z, 0.999)),
               outside=float(np.mean(np.abs(z) > 1.05)), **{k: s[k] for k in
                                                          ("correct", "background", "colour",
                                                           "shape")})
    rows.append(row)
    print(f"{g:>8.2f} {row['min']:>7.3f} {row['max']:>7.3f} {row['q001']:>7.3f} "
          f"{row['q999']:>7.3f} {row['outside']:>8.4f} {row['correct']:>7.3f} "
          f"{row['background']:>5.2f} {row['colour']:>6.2f} {row['shape']:>5.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(dict(config=args.config, checkpoint=args.checkpoint, prompts=args.prompts,
                   num_chunks=args.num_chunks, seed=args.seed, data_range=[-1.0, 1.0],
                   rows=rows), f, indent=1)
  os.replace(tmp, args.out)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
