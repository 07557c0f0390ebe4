"""Toy reproduction of BlockVid's ablations on the toy where memory matters (DESIGN 7, issue 12).

Trains the toy pipeline on the identity toy (`data.identities`: every scene of every video has
shades, texture, background pattern and start position its caption does not name; a scene returns
only after `data.min_return_gap` chunks of other scenes, so the local window no longer holds it),
with `configs/toy_cpu.py`'s model and 32x32 geometry, each stage from the previous one's exported
params, skipping stages already finished in --workdir (and resuming an interrupted one):

  teacher (bidirectional) -> causal x {cosine, linear, independent} ramp (teacher-forcing layout,
  context = what the sparse cache holds) -> block forcing (on cosine)

then samples long videos (--num_chunks, 10x the 4-chunk training window) whose prompts and scene
pattern are those of held-out identity-toy videos (scenes recur), --seeds videos per setting in one
batch (seed s: held-out video s, sampling noise of s), under one-factor-at-a-time settings:

  block forcing + semantic sparse cache + shuffling  vs  window / full cache, shuffling off
  causal (each ramp) with the sparse cache and with the window cache

Per setting: mean +- std over seeds of `toy_metrics.video_metrics` (identity error of returning
scenes against their first appearance, histogram return distance, VDE of sharpness, colour drift,
ground-truth distance over the first / last 10%, share of chunks drawn right), plus the ground-truth
videos' own. JSON `{"rows": [{"setting", "metrics": {name: {"mean", "std"}}, ...}], ...}` to
benchmarks/results/toy_ablation.json (--out), markdown table on stdout.

  python benchmarks/toy_ablation.py            # full: <= 60 min on 2 CPU cores; runs/toy_ablation
  python benchmarks/toy_ablation.py --quick    # a few steps per stage (smoke); runs/toy_ablation_quick

Every setting samples with the toy's x0-jump schedule (`sample.solver = "dmd"`, 8 steps), so rows
differ only in training, cache and shuffling; --causal_solver euler samples the causal-only models
with --causal_steps Euler steps instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

STEPS = {"full": {"teacher": 1500, "causal": 1000, "block_forcing": 150},
         "quick": {"teacher": 8, "causal": 8, "block_forcing": 2}}
RAMPS = ("cosine", "linear", "independent")
# name -> (model, cache mode, shuffle)
SETTINGS = {
    "blockvid (BF + sparse + shuffle)": ("block_forcing", "sparse", True),
    "BF + window cache": ("block_forcing", "window", True),
    "BF + full cache": ("block_forcing", "full", True),
    "BF + no shuffling": ("block_forcing", "sparse", False),
    **{f"causal {r} + {m}": (f"causal_{r}", m, True) for r in RAMPS for m in ("sparse", "window")},
}
# the paper's claims as paired comparisons (same held-out videos and noise per seed): (a, b)
CLAIMS = {
    "sparse cache beats window on returning scenes": [
        ("blockvid (BF + sparse + shuffle)", "BF + window cache")]
        + [(f"causal {r} + sparse", f"causal {r} + window") for r in RAMPS],
    "sparse cache vs full cache": [("blockvid (BF + sparse + shuffle)", "BF + full cache")],
    "Block Forcing reduces drift": [("blockvid (BF + sparse + shuffle)", "causal cosine + sparse")],
    "cosine ramp best": [("causal cosine + sparse", "causal linear + sparse"),
                         ("causal cosine + sparse", "causal independent + sparse")],
    "noise shuffling helps": [("blockvid (BF + sparse + shuffle)", "BF + no shuffling")],
}
METRICS = ("identity_return", "return_distance", "vde_sharpness", "colour_drift",
           "gt_distance_first", "gt_distance_last", "correct")


def load_config(name: str, arg: str = ""):
  spec = importlib.util.spec_from_file_location(f"_toy_ablation_{name}",
                                                os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def stage_configs(workdir: str, steps: dict) -> dict:
  """name -> (config, work dir) of every training stage, in training order."""
  data_dir = os.path.join(workdir, "data")
  out = {}

  def common(c, n):
    c.data.identities = True              # the toy where memory matters (DESIGN 7)
    c.data.sprite_start = "random"        # identities draw the start position
    c.data.min_return_gap = c.cache.local_chunks  # a returning scene has left the local window
    c.data.num_videos = 128               # identities vary per video: more videos than toy_cpu
    c.data.data_dir = data_dir
    c.train.total_steps = n
    c.train.warmup_steps = min(c.train.warmup_steps, n // 4)
    c.train.ema_start_step = min(c.train.ema_start_step, n // 4)
    c.train.sample_every = 0
    c.train.checkpoint_every = max(n // 4, 1)
    c.train.log_every = max(min(c.train.log_every, n // 4), 1)
    return c
  teacher = common(load_config("toy_teacher"), steps["teacher"])
  out["teacher"] = (teacher, os.path.join(workdir, "teacher"))
  for ramp in RAMPS:
    c = common(load_config("toy_causal", ramp), steps["causal"])
    c.train.init_from = out["teacher"][1]
    out[f"causal_{ramp}"] = (c, os.path.join(workdir, f"causal_{ramp}"))
  c = common(load_config("toy_block_forcing"), steps["block_forcing"])
  c.train.block_forcing.generator_init = out["causal_cosine"][1]
  c.train.block_forcing.teacher_init = out["teacher"][1]
  out["block_forcing"] = (c, os.path.join(workdir, "block_forcing"))
  return out


def train_stages(stages: dict) -> dict:
  """Trains every stage not finished yet; returns {stage: seconds spent in this invocation}."""
  from blockvid_jax.training import block_forcing_loop, loop  # pylint: disable=import-outside-toplevel
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  times = {}
  for name, (config, wd) in stages.items():
    if checkpoints.is_params_checkpoint(os.path.join(wd, "params")):
      print(f"[train] {name}: done already ({wd})", flush=True)
      times[name] = 0.0
      continue
    print(f"[train] {name}: {config.train.total_steps} steps in {wd}", flush=True)
    t0 = time.monotonic()
    if config.train.stage == "block_forcing":
      metrics = block_forcing_loop.train_and_evaluate(config, wd)
    else:
      metrics = loop.train_and_evaluate(config, wd)
    times[name] = time.monotonic() - t0
    print(f"[train] {name}: {times[name]:.0f}s, final loss {metrics.get('loss', float('nan')):.4f}",
          flush=True)
  return times


def reference_videos(config, num_chunks: int, seeds) -> list[dict]:
  """Held-out procedural toy videos of `num_chunks` chunks (same geometry and scene grammar)."""
  # pylint: disable-next=import-outside-toplevel
  from blockvid_jax.data.toy_long_video import generate_video
  from blockvid_jax.training.inputs import toy_data_config  # pylint: disable=import-outside-toplevel
  toy = toy_data_config(config, num_chunks)
  return [generate_video(toy, "test", s) for s in seeds]


def sample_setting(config, spec, sampler, params, refs: list[dict], seeds) -> list:
  """One video per seed, all seeds in one batch (seed s: the captions of refs[s], noise of key
  seeds[0]): uint8 [T, H, W, 3] each."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  encoder = generate.make_text_encoder(config, spec)
  null_text = generate.encode_chunks(encoder, [""])[0][0]                  # [1, T, E] (broadcast)
  encoded = [generate.encode_chunks(encoder, [str(c) for c in r["captions"]]) for r in refs]
  texts = np.concatenate([t for t, _ in encoded], axis=1)                  # [C, S, T, E]
  pooled = np.concatenate([p for _, p in encoded], axis=1)                 # [C, S, E]
  chunks = [np.asarray(x) for _, x in sampler.stream(params, texts, pooled, jax.random.key(seeds[0]),
                                                     null_text=null_text)]
  latents = np.concatenate(chunks, axis=1)                                 # [S, F, H, W, C]
  return [generate.decode_pixels(config, latents[i:i + 1]) for i in range(len(refs))]


def summarise(per_seed: list[dict]) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  out = {}
  for key in per_seed[0]:
    vals = np.asarray([m[key] for m in per_seed], np.float64)
    vals = vals[np.isfinite(vals)]
    out[key] = {"mean": float(vals.mean()) if vals.size else None,
                "std": float(vals.std()) if vals.size else None}
  return out


def _finite(obj):
  """JSON has no NaN / inf: nan -> None, inf -> "inf" (as `evaluate.vde.to_json`)."""
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
  return obj


def paired(rows: list) -> list:
  """Per claim and pair (a, b): mean over seeds of a - b per metric and the seeds where a is better
  (lower; higher for `correct`)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  by = {r["setting"]: r for r in rows}
  out = []
  for claim, pairs in CLAIMS.items():
    for a, b in pairs:
      diff = {}
      for m in METRICS:
        val = lambda p: np.nan if p[m] is None else p[m]                   # JSON null = nan
        x = np.asarray([val(p) for p in by[a]["per_seed"]], np.float64)
        y = np.asarray([val(p) for p in by[b]["per_seed"]], np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        d = x[ok] - y[ok]
        better = d > 0 if m == "correct" else d < 0
        diff[m] = {"mean": float(d.mean()) if d.size else None, "a_better": int(better.sum()),
                   "seeds": int(d.size)}
      out.append({"claim": claim, "a": a, "b": b, "diff": diff})
  return out


def paired_table(comparisons: list) -> str:
  lines = ["| claim | a - b | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
  for c in comparisons:
    cells = [f"{c['diff'][m]['mean']:+.4f} ({c['diff'][m]['a_better']}/{c['diff'][m]['seeds']})"
             if c["diff"][m]["mean"] is not None else "n/a" for m in METRICS]
    lines.append(f"| {c['claim']} | {c['a']} - {c['b']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def table(rows: list) -> str:
  lines = ["| setting | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
  for r in rows:
    cells = []
    for c in METRICS:
      m = r["metrics"].get(c)
      cells.append("n/a" if m is None or m["mean"] is None else f"{m['mean']:.3f} +- {m['std']:.3f}")
    lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None,
                      help="stage cache (default runs/toy_ablation, or runs/toy_ablation_quick)")
  parser.add_argument("--quick", action="store_true", help="a few training steps per stage")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--num_chunks", type=int, default=40, help="chunks per generated video")
  parser.add_argument("--causal_solver", default="dmd", choices=("euler", "dmd"))
  parser.add_argument("--causal_steps", type=int, default=20, help="euler steps (causal models)")
  parser.add_argument("--report", action="store_true",
                      help="only recompute the tables and paired comparisons of an existing --out")
  parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/"
                      "toy_ablation.json, or toy_ablation_quick.json)")
  args = parser.parse_args(argv)
  suffix = "_quick" if args.quick else ""
  args.workdir = args.workdir or os.path.join(ROOT, "runs", f"toy_ablation{suffix}")
  args.out = args.out or os.path.join(HERE, "results", f"toy_ablation{suffix}.json")
  if args.report:
    with open(args.out, encoding="utf-8") as f:
      report = json.load(f)
    report["paired"] = paired(report["rows"])
    write_report(report, args.out)
    return
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_threefry_partitionable", True)
  import toy_metrics  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data import toy_grammar  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import init_from  # pylint: disable=import-outside-toplevel

  t_start = time.monotonic()
  mode = "quick" if args.quick else "full"
  stages = stage_configs(os.path.abspath(args.workdir), STEPS[mode])
  train_times = train_stages(stages)
  seeds = list(range(args.seeds))
  base = stages["causal_cosine"][0]
  window = base.data.window_chunks
  if args.num_chunks < 10 * window:
    print(f"warning: {args.num_chunks} chunks is < 10x the {window}-chunk training window")
  refs = reference_videos(base, args.num_chunks, seeds)
  fpc, size = base.data.frames_per_chunk, base.data.sprite_size
  objects = toy_grammar.objects(base.data.use_digits)
  metrics = lambda video, ref: toy_metrics.video_metrics(video, ref["scene_ids"], fpc, ref["frames"],
                                                         ref["captions"], size, objects)
  rows = [{"setting": "ground truth (toy renderer)", "sampler": "-",
           "metrics": summarise([metrics(r["frames"], r) for r in refs])}]
  sample_times = {}
  for name, (model, cache_mode, shuffle) in SETTINGS.items():
    config, wd = stages[model]
    config = config.copy_and_resolve_references()
    config.cache.mode = cache_mode
    config.sample.shuffle = shuffle
    config.sample.chunks_per_segment = 8
    if model != "block_forcing":
      config.sample.solver = args.causal_solver
      config.sample.num_steps = args.causal_steps
    sampler_name = (f"dmd {len(config.sample.timesteps)} steps" if config.sample.solver == "dmd"
                    else f"euler {config.sample.num_steps} steps")
    spec, sampler = generate.build_sampler(config)
    _, params = init_from.load(wd, spec)
    t0 = time.monotonic()
    videos = sample_setting(config, spec, sampler, params, refs, seeds)
    sample_times[name] = time.monotonic() - t0
    per_seed = [metrics(v, r) for v, r in zip(videos, refs)]
    rows.append({"setting": name, "sampler": sampler_name, "model": model, "cache": cache_mode,
                 "shuffle": shuffle, "metrics": summarise(per_seed), "per_seed": per_seed})
    print(f"[sample] {name}: {sample_times[name]:.0f}s, correct "
          f"{rows[-1]['metrics']['correct']['mean']:.3f}, identity_return "
          f"{rows[-1]['metrics']['identity_return']['mean']:.4f}", flush=True)
  report = {
      "mode": mode, "train_steps": STEPS[mode], "seeds": seeds, "num_chunks": args.num_chunks,
      "frames_per_video": args.num_chunks * fpc, "training_window_chunks": window,
      "train_seconds": train_times, "sample_seconds": sample_times,
      "wall_seconds": time.monotonic() - t_start, "jax": jax.__version__,
      "devices": f"{jax.device_count()} x {jax.devices()[0].platform}", "rows": rows,
      "paired": paired(rows)}
  write_report(report, args.out)


def write_report(report: dict, out: str) -> None:
  """Writes the JSON atomically and prints the tables."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(_finite(report), f, indent=1, allow_nan=False)
    f.write("\n")
  os.replace(tmp, out)                                                     # atomic
  print(table(report["rows"]))
  print("\npaired over seeds: mean of a - b (seeds where a is better)")
  print(paired_table(report["paired"]))
  print(f"\nwall time {report['wall_seconds'] / 60:.1f} min; wrote {out}")


if __name__ == "__main__":
  main()
