"""Sampler scaling: per-chunk wall time at chunks 10 / 50 / 200, peak RSS and compile time per cache mode.

`small` model (D 512, 8 layers), 16x16 latents (64 tokens per frame, 192 per chunk), few-step DMD
(4 steps + the commit pass per chunk), batch 1, CPU. Each mode runs in its own subprocess so that
peak RSS is per mode. Per-chunk time at chunk c = median over chunks c-2..c+2 (one chunk per jitted
call, `block_until_ready`). The static-shape `full` mode attends over all `max_chunks` slots
(masked) from the first chunk on: its cost is that of the longest video it supports.

  python benchmarks/sampler_scaling.py [--chunks 200] [--modes sparse,window,full] [--full_chunks 12]
Writes benchmarks/results/sampler_scaling.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS = (10, 50, 200)


def run_mode(mode: str, num_chunks: int, max_chunks: int) -> dict:
  import jax
  import jax.numpy as jnp
  sys.path.insert(0, os.path.join(HERE, "..", "configs"))
  import dit  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate
  from blockvid_jax.models import init_params

  c = dit.get_config("small")
  c.cache.mode = mode
  c.cache.max_chunks = max_chunks
  c.cache.k_salient = 64
  c.sample.chunks_per_segment = 1
  spec, sampler = generate.build_sampler(c)
  params = init_params(spec, jax.random.key(0))
  texts = jax.random.normal(jax.random.key(1), (num_chunks, 1, 8, spec.text_dim))
  pooled = jax.random.normal(jax.random.key(2), (num_chunks, 1, spec.text_dim))
  null = jnp.zeros_like(texts[0])
  fn = sampler.make_segment_fn()
  state = sampler.init_state(1, jax.random.key(3))
  t0 = time.perf_counter()
  compiled = fn.lower(params, state, texts[:1], pooled[:1], null, None).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(num_chunks):
    t0 = time.perf_counter()
    state, out = compiled(params, state, texts[i:i + 1], pooled[i:i + 1], null, None)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  at = {}
  for cp in CHECKPOINTS:
    if cp <= num_chunks:
      lo, hi = max(0, cp - 3), min(num_chunks, cp + 2)
      at[str(cp)] = statistics.median(times[lo:hi])
  at["last"] = statistics.median(times[-5:])
  marks = [int(k) for k in at if k != "last"]
  ratio = at[str(max(marks))] / at["10"] if "10" in at and len(marks) > 1 else None
  return dict(mode=mode, chunks=num_chunks, max_chunks=max_chunks if mode == "full" else None,
              context_slots=sampler.cache.context_slots, per_chunk_s=at, ratio_last_over_10=ratio,
              compile_s=compile_s, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _subprocess(mode: str, n: int, max_chunks: int) -> dict:
  out = subprocess.run([sys.executable, __file__, "--one", f"{mode}:{n}:{max_chunks}"], check=True,
                       capture_output=True, text=True)
  print(f"done {mode} ({n} chunks, max_chunks {max_chunks})", file=sys.stderr)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _last(row: dict) -> float:
  return row["per_chunk_s"]["last"]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--chunks", type=int, default=200)
  ap.add_argument("--full_chunks", type=int, default=12,
                  help="chunks rolled out per `full` buffer size (10 / 50 / 200 chunks)")
  ap.add_argument("--modes", default="sparse,window,full")
  ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one mode
  args = ap.parse_args()
  if args.one:
    mode, n, m = args.one.split(":")
    print(json.dumps(run_mode(mode, int(n), int(m))))
    return
  rows = []
  for mode in args.modes.split(","):
    if mode != "full":
      rows.append(_subprocess(mode, args.chunks, args.chunks))
      continue
    # `full` at chunk c costs what a static buffer of c chunks costs (every slot is attended,
    # masked or not), whichever chunk of the rollout it is: measure a short rollout per size.
    parts = [_subprocess("full", min(cp, args.full_chunks), cp)
             for cp in CHECKPOINTS if cp <= args.chunks]
    at = {str(cp): p["per_chunk_s"][str(min(cp, args.full_chunks))] if str(
        min(cp, args.full_chunks)) in p["per_chunk_s"] else _last(p) for cp, p in
          zip(CHECKPOINTS, parts)}
    rows.append(dict(mode="full", chunks=args.chunks, max_chunks=[p["max_chunks"] for p in parts],
                     context_slots=parts[-1]["context_slots"], per_chunk_s=at,
                     ratio_last_over_10=at[str(CHECKPOINTS[len(parts) - 1])] / at["10"],
                     compile_s=parts[-1]["compile_s"],
                     peak_rss_mb=max(p["peak_rss_mb"] for p in parts)))
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "sampler_scaling.json")
  with open(path, "w") as f:
    json.dump(dict(config="small, 16x16 latents, dmd 4 steps, batch 1, CPU", rows=rows), f, indent=2)
  print("| mode | context slots | s/chunk @10 | @50 | @200 | ratio last/10 | compile s | peak RSS MB |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    g = lambda k: f"{r['per_chunk_s'][k]:.3f}" if k in r["per_chunk_s"] else "-"
    ratio = f"{r['ratio_last_over_10']:.3f}" if r["ratio_last_over_10"] else "-"
    print(f"| {r['mode']} | {r['context_slots']} | {g('10')} | {g('50')} | {g('200')} | {ratio} | "
          f"{r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
