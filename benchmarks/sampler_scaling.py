"""Sampler scaling: per-chunk wall time at chunks 10 / 50 / 200, peak RSS and compile time per cache mode.

`small` model (D 512, 8 layers), 16x16 latents (64 tokens per frame, 192 per chunk), few-step DMD
(4 steps + the commit pass per chunk), batch 1, CPU. Each mode runs in its own subprocess so that
peak RSS is per mode. Per-chunk time at chunk c = median over chunks c-2..c+2 (one chunk per jitted
call, `block_until_ready`). The static-shape `full` mode attends over all `max_chunks` slots
(masked) from the first chunk on: its cost is that of the longest video it supports.

`--baseline COMMIT` (default 43d102b, the main of issue 13) also runs `sparse` and `window` from that
commit's tree (`git archive` into a temporary folder, first on `sys.path`) in the same run, so the
before/after ratio is measured on one machine at one time. Achieved GFLOP/s = an analytic count of
the useful work of one chunk (`chunk_flops`: every denoising step and the commit pass, cross-attention
K/V and the text MLP once per chunk) / the per-chunk time at chunk 10, against a jitted `jnp.dot` peak
of the model's own matmul sizes measured in the same run (`dot_peak`).

  python benchmarks/sampler_scaling.py [--chunks 200] [--modes sparse,window,full] [--full_chunks 12]
      [--baseline 43d102b | --baseline ""] [--tag NAME]
Writes benchmarks/results/sampler_scaling.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import trees  # benchmarks/trees.py

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS = (10, 50, 200, 1000)
TEXT_LEN = 8


def chunk_flops(spec, tokens: int, context: int, text_len: int, forwards: int) -> float:
  """Multiply-adds x 2 of one chunk: `forwards` DiT passes over `tokens` query tokens against
  `context` cached keys (+ the chunk's own), plus the text MLP and cross-attention K/V once."""
  d, m, k = spec.dim, spec.ffn_dim, spec.num_layers
  patch = spec.out_channels * spec.patch_size[0] * spec.patch_size[1] * spec.patch_size[2]
  keys = context + tokens
  per_layer = (2 * tokens * d * 3 * d + 2 * tokens * d * d      # self-attn q, k, v, o
               + 2 * 2 * tokens * keys * d                      # scores + weighted values
               + 2 * 2 * tokens * d * d                         # cross-attn q, o
               + 2 * 2 * tokens * text_len * d                  # cross-attn scores + values
               + 2 * 2 * tokens * d * m)                        # MLP
  per_forward = k * per_layer + 2 * tokens * d * patch
  once = (2 * text_len * spec.text_dim * d + 2 * text_len * d * d  # text MLP
          + k * 2 * 2 * text_len * d * d)                          # cross-attn K, V per layer
  return forwards * per_forward + once


def dot_peak(spec, tokens: int, reps: int = 30) -> dict:
  """Median GFLOP/s of a jitted `jnp.dot` at the model's matmul sizes ([tokens, D] x [D, n])."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out = {}
  for n in (3 * spec.dim, spec.ffn_dim):
    a = jax.random.normal(jax.random.key(0), (tokens, spec.dim))
    b = jax.random.normal(jax.random.key(1), (spec.dim, n))
    f = jax.jit(jnp.dot)
    jax.block_until_ready(f(a, b))
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(f(a, b))
      ts.append(time.perf_counter() - t0)
    out[f"{tokens}x{spec.dim}x{n}"] = 2 * tokens * spec.dim * n / statistics.median(ts) / 1e9
  return out


def run_mode(mode: str, num_chunks: int, max_chunks: int, root: str = trees.ROOT) -> dict:
  trees.use_tree(root)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import dit  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import init_params  # pylint: disable=import-outside-toplevel

  c = dit.get_config("small")
  c.cache.mode = mode
  c.cache.max_chunks = max_chunks
  c.cache.k_salient = 64
  c.sample.chunks_per_segment = 1
  spec, sampler = generate.build_sampler(c)
  params = init_params(spec, jax.random.key(0))
  texts = jax.random.normal(jax.random.key(1), (num_chunks, 1, TEXT_LEN, spec.text_dim))
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
  tokens = sampler.chunk_shape[0] * sampler.chunk_shape[1] * sampler.chunk_shape[2] // (
      spec.patch_size[1] * spec.patch_size[2])
  forwards = len(c.sample.timesteps) + 1 if c.sample.solver == "dmd" else None  # + the commit
  row = dict(mode=mode, chunks=num_chunks, max_chunks=max_chunks if mode == "full" else None,
             context_slots=sampler.cache.context_slots, per_chunk_s=at, ratio_last_over_10=ratio,
             compile_s=compile_s, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
  if forwards and "10" in at:
    row["gflops_per_chunk"] = chunk_flops(spec, tokens, sampler.cache.context_slots, TEXT_LEN,
                                          forwards) / 1e9
    row["gflop_s"] = row["gflops_per_chunk"] / at["10"]
    row["dot_peak_gflop_s"] = dot_peak(spec, tokens)
  return row


def _subprocess(mode: str, n: int, max_chunks: int, root: str = trees.ROOT) -> dict:
  out = subprocess.run([sys.executable, __file__, "--one", f"{mode}:{n}:{max_chunks}:{root}"],
                       check=True, capture_output=True, text=True)
  print(f"done {mode} ({n} chunks, max_chunks {max_chunks}, tree {root})", file=sys.stderr)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _last(row: dict) -> float:
  return row["per_chunk_s"]["last"]


def _full_row(args) -> dict:
  """`full` at chunk c costs what a static buffer of c chunks costs (every slot is attended, masked
  or not), whichever chunk of the rollout it is: a short rollout per buffer size."""
  sizes = [cp for cp in CHECKPOINTS if cp <= args.chunks]
  parts = [_subprocess("full", min(cp, args.full_chunks), cp) for cp in sizes]
  at = {}
  for cp, p in zip(sizes, parts):
    k = str(min(cp, args.full_chunks))
    at[str(cp)] = p["per_chunk_s"][k] if k in p["per_chunk_s"] else _last(p)
  return dict(mode="full", chunks=args.chunks, max_chunks=[p["max_chunks"] for p in parts],
              context_slots=parts[-1]["context_slots"], per_chunk_s=at,
              ratio_last_over_10=at[str(sizes[-1])] / at["10"], compile_s=parts[-1]["compile_s"],
              peak_rss_mb=max(p["peak_rss_mb"] for p in parts))


def _table(rows: list[dict], tag: str) -> None:
  cps = [str(cp) for cp in CHECKPOINTS if any(str(cp) in r["per_chunk_s"] for r in rows)]
  print(f"| tree | mode | context slots | " + " | ".join(f"s/chunk @{c}" for c in cps)
        + " | ratio last/10 | compile s | peak RSS MB | GFLOP/s | / dot peak |")
  print("|---" * (len(cps) + 8) + "|")
  for r in rows:
    g = lambda k: f"{r['per_chunk_s'][k]:.3f}" if k in r["per_chunk_s"] else "-"
    ratio = f"{r['ratio_last_over_10']:.3f}" if r["ratio_last_over_10"] else "-"
    fl = f"{r['gflop_s']:.1f}" if "gflop_s" in r else "-"
    pk = f"{r['gflop_s'] / max(r['dot_peak_gflop_s'].values()):.2f}" if "gflop_s" in r else "-"
    print(f"| {r.get('tree', tag)} | {r['mode']} | {r['context_slots']} | "
          + " | ".join(g(c) for c in cps)
          + f" | {ratio} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} | {fl} | {pk} |")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--chunks", type=int, default=200)
  ap.add_argument("--full_chunks", type=int, default=12,
                  help="chunks rolled out per `full` buffer size (10 / 50 / 200 chunks)")
  ap.add_argument("--modes", default="sparse,window,full")
  ap.add_argument("--baseline", default="43d102b",
                  help="commit whose sparse/window modes run in the same run ('' to skip)")
  ap.add_argument("--tag", default="", help="results/sampler_scaling_<tag>.json instead of .json")
  ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one mode
  args = ap.parse_args()
  if args.one:
    mode, n, m, root = args.one.split(":", 3)
    print(json.dumps(run_mode(mode, int(n), int(m), root)))
    return
  head = trees.short_hash()
  modes = args.modes.split(",")
  rows, before = [], []
  with tempfile.TemporaryDirectory() as tmp:
    if args.baseline:
      base = trees.unpack(args.baseline, tmp)
      for mode in (m for m in modes if m != "full"):
        before.append(dict(_subprocess(mode, args.chunks, args.chunks, tmp), tree=base))
    for mode in modes:
      row = _full_row(args) if mode == "full" else _subprocess(mode, args.chunks, args.chunks)
      rows.append(dict(row, tree=head))
  speedup = {}
  for b in before:
    a = next(r for r in rows if r["mode"] == b["mode"])
    speedup[b["mode"]] = {k: a["per_chunk_s"][k] / v for k, v in b["per_chunk_s"].items()
                          if k in a["per_chunk_s"]}
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", f"sampler_scaling{'_' + args.tag if args.tag else ''}.json")
  tmp_path = path + ".tmp"
  with open(tmp_path, "w") as f:
    json.dump(dict(config="small, 16x16 latents, dmd 4 steps, batch 1, CPU", head=head,
                   baseline=before[0]["tree"] if before else None, rows=rows, baseline_rows=before,
                   after_over_before=speedup), f, indent=2)
  os.replace(tmp_path, path)
  _table(before + rows, head)
  if speedup:
    print("\n| mode | after / before per chunk (" + ", ".join(
        f"@{k}" for k in next(iter(speedup.values()))) + ") |\n|---|---|")
    for mode, v in speedup.items():
      print(f"| {mode} | " + ", ".join(f"{x:.3f}" for x in v.values()) + " |")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
