"""CPU forward time of a model preset (full block-causal forward, jitted, fp32).

  python benchmarks/forward_time.py [--preset small] [--frames 6] [--latent 16] [--repeats 5]
Prints a table and writes benchmarks/results/forward_time.json (median of --repeats after compile).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from blockvid_jax.models import CausalDiT, DiTSpec, count_params, init_params

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="small")
  ap.add_argument("--frames", type=int, default=6)
  ap.add_argument("--latent", type=int, default=16)
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  spec = DiTSpec.preset(args.preset)
  params = init_params(spec, jax.random.key(0))
  lat = jax.random.normal(jax.random.key(1), (args.batch, args.frames, args.latent, args.latent, 16))
  t = jnp.full((args.batch, args.frames), 0.5)
  ctx = jax.random.normal(jax.random.key(2), (args.batch, 16, spec.text_dim))
  fwd = jax.jit(lambda p, x: CausalDiT(spec).apply({"params": p}, x, t, ctx))
  t0 = time.perf_counter()
  jax.block_until_ready(fwd(params, lat))
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(params, lat))
    times.append(time.perf_counter() - t0)
  tokens = args.batch * args.frames * (args.latent // 2) ** 2
  row = dict(preset=args.preset, params=count_params(params), batch=args.batch, frames=args.frames,
             latent=args.latent, tokens=tokens, compile_and_first_s=first,
             forward_median_s=statistics.median(times), device=str(jax.devices()[0]))
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  with open(os.path.join(HERE, "results", "forward_time.json"), "w") as f:
    json.dump(row, f, indent=2)
  print("| preset | params | tokens | forward s (median) | compile + first s |")
  print("|---|---|---|---|---|")
  print(f"| {row['preset']} | {row['params']:,} | {tokens} | {row['forward_median_s']:.3f} | "
        f"{first:.1f} |")


if __name__ == "__main__":
  main()
