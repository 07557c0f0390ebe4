"""Prompt-switch cost of `cache.recache_on_switch`: per-chunk time with and without the recache.

`small` model (D 512, 8 layers), 16x16 latents (192 tokens per chunk), few-step DMD (4 steps + the
commit pass), batch 1, CPU, the `configs/dit.py` cache (sink 1 + local `--local` chunks). One chunk
per jitted call; after a warm-up of `--local` + 1 chunks (a full local window), chunks alternate between
a switch (recache = True: the local window is re-run under the new prompt first) and no switch, and
the per-switch cost is the median switch chunk minus the median plain chunk (the recache runs
`local` commit-pass forwards).

  python benchmarks/recache_cost.py [--modes window,sparse] [--local 2] [--chunks 16]
Writes benchmarks/results/recache_cost.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import trees  # benchmarks/trees.py

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_LEN = 8


def run_mode(mode: str, local: int, chunks: int) -> dict:
  trees.use_tree(trees.ROOT)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import dit  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import init_params  # pylint: disable=import-outside-toplevel

  c = dit.get_config("small")
  c.cache.mode = mode
  c.cache.local_chunks = local
  c.cache.k_salient = 64
  c.cache.recache_on_switch = True
  c.sample.chunks_per_segment = 1
  spec, sampler = generate.build_sampler(c)
  params = init_params(spec, jax.random.key(0))
  texts = jax.random.normal(jax.random.key(1), (2, 1, TEXT_LEN, spec.text_dim))
  pooled = jax.random.normal(jax.random.key(2), (2, 1, spec.text_dim))
  null = jnp.zeros_like(texts[0])
  fn = sampler.make_segment_fn()
  state = sampler.init_state(1, jax.random.key(3))
  compiled = fn.lower(params, state, texts[:1], pooled[:1], null, None, None,
                      jnp.zeros((1,), bool)).compile()
  times = {True: [], False: []}
  warm, cur = local + 1, 0
  for i in range(warm + chunks):
    switch = i >= warm and i % 2 == 0        # every other chunk switches to the other prompt
    cur = 1 - cur if switch else cur
    t0 = time.perf_counter()
    state, out = compiled(params, state, texts[cur][None], pooled[cur][None], null, None, None,
                          jnp.array([switch]))
    jax.block_until_ready(out)
    if i >= warm:
      times[switch].append(time.perf_counter() - t0)
  plain, switched = statistics.median(times[False]), statistics.median(times[True])
  return dict(mode=mode, local_chunks=local, plain_s=plain, switch_s=switched,
              per_switch_s=switched - plain, switch_over_plain=switched / plain,
              chunks_each=len(times[True]))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--modes", default="window,sparse")
  ap.add_argument("--local", type=int, default=2)
  ap.add_argument("--chunks", type=int, default=16)
  ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    print(json.dumps(run_mode(args.one, args.local, args.chunks)))
    return
  rows = []
  for mode in args.modes.split(","):
    out = subprocess.run([sys.executable, __file__, "--one", mode, "--local", str(args.local),
                          "--chunks", str(args.chunks)], check=True, capture_output=True, text=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  head = trees.short_hash()
  meta = (f"small, 16x16 latents, dmd 4 steps + commit, batch 1, sink 1 + local {args.local}, CPU "
          f"({os.cpu_count()} cores), tree {head}")
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "recache_cost.json")
  with open(path + ".tmp", "w") as f:
    json.dump(dict(config=meta, rows=rows), f, indent=2)
  os.replace(path + ".tmp", path)
  print(f"{meta}\n\n| mode | local chunks | s/chunk | s/chunk at a switch | per-switch cost s | "
        "switch / plain |\n|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['mode']} | {r['local_chunks']} | {r['plain_s']:.3f} | {r['switch_s']:.3f} | "
          f"{r['per_switch_s']:.3f} | {r['switch_over_plain']:.2f} |")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
