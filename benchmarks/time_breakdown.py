"""Where the time goes: XLA op time of one sampler chunk and of one causal train step, by category.

  python benchmarks/time_breakdown.py [--models small,toy_cpu] [--reps 5]

Traces the compiled call with `jax.profiler` (CPU), reads the trace back with
`jax.profiler.ProfileData`, maps every executed HLO instruction to the JAX op it came from (the
`op_name` metadata of the compiled HLO) and sums the op time per category: projections (q/k/v/o,
patch embedding, head), FFN, attention (scores, softmax, weighted values), norms + modulation, RoPE,
cache ops (the cache read / commit / retrieval of `blockvid_jax.cache`), scan bookkeeping (the
buffers of `lax.scan`/`nn.scan`: zero-fills, copies, dynamic slices and updates), other; and "host"
= wall time - op time (dispatch, Python, waits). Sampler: the `small` model (D 512, 8 layers, 192
tokens per chunk), sparse cache, 4 DMD steps + commit, batch 1 (as `sampler_scaling.py`); train
step: `small` batch 4 x 2 chunks (`train_throughput.py`'s default), `toy_cpu` batch 8 x 4 chunks (the
quickstart's), chunks of 3 latent frames of 16x16, per-chunk captions. Writes benchmarks/results/time_breakdown.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "configs"))

# (category, regex on the op_name of the HLO instruction), first match wins.
CATEGORIES = (
    ("cache ops", r"sparse_kv_read|sparse_kv_commit"),   # named scopes of cache.sources
    ("attention", r"(?i)bnlh,bnsh->bnls|bnls,bnsh->bnlh|blnh,bsnh->bnls|bnls,bsnh->blnh|softmax|"
                  r"(self|cross)_attn/(reduce_max|reduce_sum|exp|div|sub|select_n)"),
    ("RoPE", r"rope"),
    ("FFN", r"ffn_fc|gelu"),
    ("projections", r"/(q|k|v|o)/|patch_embedding|/head/|text_embedding|time_embedding|dot_general"),
    ("norms + modulation", r"norm|modulat|gate"),
)
SCAN_OPS = re.compile(r"^(wrapped_broadcast|copy|bitcast_dynamic-update-slice|dynamic-slice|"
                      r"dynamic-update-slice|while)")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = ")
_OP_NAME = re.compile(r"op_name=\"([^\"]*)\"")


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the op_name of its metadata (the JAX name stack; "" without)."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if m:
      name = _OP_NAME.search(line)
      out[m.group(1)] = name.group(1) if name else ""
  return out


def category(instr: str, op_name: str) -> str:
  for name, pattern in CATEGORIES:
    if re.search(pattern, op_name):
      return name
  if SCAN_OPS.match(instr):
    return "scan bookkeeping"
  return "other"


def profile(fn, args, reps: int) -> dict:
  """Median wall seconds per call and op seconds per category (per call) of a jitted `fn`."""
  import jax  # pylint: disable=import-outside-toplevel
  compiled = fn.lower(*args).compile()
  names = op_names(compiled.as_text())
  jax.block_until_ready(compiled(*args))
  walls = []
  for _ in range(reps):   # wall time without the profiler
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    walls.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    for _ in range(reps):
      jax.block_until_ready(compiled(*args))
    jax.profiler.stop_trace()
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
  per, instrs = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if "Eigen" not in line.name and "XLA" not in line.name:
        continue
      for ev in line.events:
        if ev.name in names:
          cat = category(ev.name, names[ev.name])
          per[cat] += ev.duration_ns / 1e9 / reps
          instrs[(cat, ev.name, names[ev.name][-90:])] += ev.duration_ns / 1e9 / reps
  wall = statistics.median(walls)
  ops = sum(per.values())
  top = [dict(category=c, instruction=i, op_name=o, s=v) for (c, i, o), v in instrs.most_common(12)]
  # Shares are of the summed op time (under the profiler ops run slower and may overlap on the
  # two cores); host = wall time without the profiler - op time, when positive.
  return dict(wall_s=wall, op_total_s=ops, op_s=dict(per), host_s=max(wall - ops, 0.0), top=top)


def sampler_case(model: str):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import dit  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import init_params  # pylint: disable=import-outside-toplevel
  c = dit.get_config(model)
  c.cache.k_salient = 64
  c.sample.chunks_per_segment = 1
  spec, sampler = generate.build_sampler(c)
  params = init_params(spec, jax.random.key(0))
  texts = jax.random.normal(jax.random.key(1), (1, 1, 8, spec.text_dim))
  pooled = jax.random.normal(jax.random.key(2), (1, 1, spec.text_dim))
  state = sampler.init_state(1, jax.random.key(3))
  for _ in range(4):   # a cache with sink, local and bank entries
    state, _ = sampler.make_segment_fn()(params, state, texts, pooled, jnp.zeros_like(texts[0]), None)
  # The whole output (state and latents): returning only the latents would let XLA drop the commit.
  fn = jax.jit(lambda p, s, t, q: sampler.segment(p, s, t, q, jnp.zeros_like(t[0])))
  return fn, (params, state, texts, pooled)


def train_case(model: str):
  import jax  # pylint: disable=import-outside-toplevel
  import train_throughput  # pylint: disable=import-outside-toplevel
  big = model != "toy_cpu"   # small: train_throughput's default shape; toy_cpu: the quickstart's
  case = train_throughput.step_case(model, batch=4 if big else 8, chunks=2 if big else 4)
  return jax.jit(case["step_fn"]), (case["state"], case["batch"], jax.random.key(2))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="small,toy_cpu")
  ap.add_argument("--reps", type=int, default=5)
  args = ap.parse_args(argv)
  rows = []
  for model in args.models.split(","):
    cases = [("train step", train_case)] + ([("sampler chunk", sampler_case)]
                                             if model != "toy_cpu" else [])
    for what, make in cases:
      fn, fargs = make(model)
      r = profile(fn, fargs, args.reps)
      rows.append(dict(model=model, what=what, **r))
      print(f"done {model} {what}: {r['wall_s']:.3f} s", file=sys.stderr)
  cats = [c for c, _ in CATEGORIES] + ["scan bookkeeping", "other"]
  print("| model | what | wall s | op s (profiled) | " + " | ".join(cats) + " | host s |")
  print("|---" * (len(cats) + 5) + "|")
  for r in rows:
    share = lambda s: f"{100 * s / r['op_total_s']:.0f}%"
    print(f"| {r['model']} | {r['what']} | {r['wall_s']:.3f} | {r['op_total_s']:.3f} | "
          + " | ".join(share(r["op_s"].get(c, 0.0)) for c in cats) + f" | {r['host_s']:.3f} |")
  for r in rows:
    print(f"\n{r['model']} {r['what']}: the 12 most expensive instructions")
    for t in r["top"]:
      print(f"  {t['s'] * 1e3:7.2f} ms  {t['category']:<18} {t['instruction']:<40} {t['op_name']}")
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "time_breakdown.json")
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "categories": cats}, f, indent=1)
  os.replace(path + ".tmp", path)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
