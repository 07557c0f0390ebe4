"""Toy reproduction of BlockVid's ablations: cache, Block Forcing, noise ramp, noise shuffling.

Trains the toy pipeline (the configs/toy_*.py stages on 16x16-pixel toy videos = 16 tokens per
frame, batch 8, to fit the time budget) in --workdir, each stage from the previous one's exported
params, skipping stages already finished there (and resuming an interrupted one):

  teacher (bidirectional) -> causal x {cosine, linear, independent} ramp -> block forcing (on cosine)

then samples long toy videos (--num_chunks, >= 10x the 4-chunk training window) whose prompts and scene
pattern are those of held-out procedural toy videos of that length (scenes recur), one video per
seed, under one-factor-at-a-time settings around two bases:

  block forcing + semantic sparse cache + shuffling   vs  window cache / shuffling off
  causal (cosine) + sparse cache + shuffling          vs  causal linear / independent ramp, window cache

Per setting: mean +- std over seeds of VDE of sharpness, colour drift, the return distance and the
distance to the ground truth at the start and the end (`toy_metrics.py`), plus the same statistics
of the ground-truth videos. JSON to
benchmarks/results/toy_ablation.json (--out), markdown table on stdout.

  python benchmarks/toy_ablation.py            # full: ~25-40 min on 2 CPU cores; runs/toy_ablation
  python benchmarks/toy_ablation.py --quick    # ~5 min smoke run; runs/toy_ablation_quick

Every setting samples with the same few-step schedule (4 steps: predict x0, re-noise), so the rows
differ only in training, cache and shuffling; --causal_solver euler samples the causal-only models
with --causal_steps Euler steps instead (their flow-matching sampler).
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

STEPS = {"full": {"teacher": 1500, "causal": 500, "block_forcing": 240},
         "quick": {"teacher": 12, "causal": 12, "block_forcing": 3}}
RAMPS = ("cosine", "linear", "independent")
# name -> (model, cache mode, shuffle)
SETTINGS = {
    "blockvid (BF + sparse + shuffle)": ("block_forcing", "sparse", True),
    "BF + window cache": ("block_forcing", "window", True),
    "BF + no shuffling": ("block_forcing", "sparse", False),
    "causal cosine + sparse + shuffle": ("causal_cosine", "sparse", True),
    "causal cosine + window cache": ("causal_cosine", "window", True),
    "causal linear ramp": ("causal_linear", "sparse", True),
    "causal independent (DF)": ("causal_independent", "sparse", True),
}


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
    c.video.latent_height = 8             # 16x16-pixel videos: 16 tokens per frame (toy_cpu: 32x32
    c.video.latent_width = 8              # pixels, 64 tokens), to fit the time budget
    c.cache.k_salient = 16                # of 48 tokens per chunk
    c.train.batch_size = 8
    c.data.data_dir = data_dir
    c.train.total_steps = n
    c.train.warmup_steps = min(c.train.warmup_steps, n // 4)
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


def sample_setting(config, params, refs: list[dict], seeds) -> list:
  """One video per seed: uint8 [T, H, W, 3] each."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  spec, sampler = generate.build_sampler(config)
  encoder = generate.make_text_encoder(config, spec)
  null_text = generate.encode_chunks(encoder, [""])[0][0]                  # [1, T, E]
  segment_fn = sampler.make_segment_fn()                                  # one compilation
  videos = []
  for seed, ref in zip(seeds, refs):
    texts, pooled = generate.encode_chunks(encoder, [str(c) for c in ref["captions"]])
    chunks = [np.asarray(x) for _, x in sampler.stream(params, texts, pooled, jax.random.key(seed),
                                                       null_text=null_text,
                                                       segment_fn=segment_fn)]
    videos.append(generate.decode_pixels(config, np.concatenate(chunks, axis=1)))
  return videos


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


def table(results: dict) -> str:
  cols = ("vde_sharpness", "colour_drift", "return_distance", "gt_distance_first",
          "gt_distance_last")
  lines = ["| setting | sampler | VDE sharpness | colour drift | return distance | GT distance, "
           "first 10% | GT distance, last 10% |", "|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    cells = []
    for c in cols:
      m = r["metrics"][c]
      cells.append("n/a" if m["mean"] is None else f"{m['mean']:.3f} +- {m['std']:.3f}")
    lines.append(f"| {name} | {r['sampler']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None,
                      help="stage cache (default runs/toy_ablation, or runs/toy_ablation_quick)")
  parser.add_argument("--quick", action="store_true", help="a few training steps per stage")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--num_chunks", type=int, default=48, help="chunks per generated video")
  parser.add_argument("--causal_solver", default="dmd", choices=("euler", "dmd"))
  parser.add_argument("--causal_steps", type=int, default=20, help="euler steps (causal models)")
  parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/"
                      "toy_ablation.json, or toy_ablation_quick.json)")
  args = parser.parse_args(argv)
  suffix = "_quick" if args.quick else ""
  args.workdir = args.workdir or os.path.join(ROOT, "runs", f"toy_ablation{suffix}")
  args.out = args.out or os.path.join(HERE, "results", f"toy_ablation{suffix}.json")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_threefry_partitionable", True)
  import toy_metrics  # pylint: disable=import-outside-toplevel
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
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
  fpc = base.data.frames_per_chunk
  results = {"ground truth (toy renderer)": {
      "sampler": "-", "metrics": summarise([
          toy_metrics.video_metrics(r["frames"], r["scene_ids"], fpc, r["frames"]) for r in refs])}}
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
    spec, _ = generate.build_sampler(config)
    _, params = init_from.load(wd, spec)
    t0 = time.monotonic()
    videos = sample_setting(config, params, refs, seeds)
    sample_times[name] = time.monotonic() - t0
    per_seed = [toy_metrics.video_metrics(v, r["scene_ids"], fpc, r["frames"])
                for v, r in zip(videos, refs)]
    results[name] = {"sampler": sampler_name, "model": model, "cache": cache_mode,
                     "shuffle": shuffle, "metrics": summarise(per_seed), "per_seed": per_seed}
    print(f"[sample] {name}: {sample_times[name]:.0f}s", flush=True)
  report = {
      "mode": mode, "train_steps": STEPS[mode], "seeds": seeds, "num_chunks": args.num_chunks,
      "frames_per_video": args.num_chunks * fpc, "training_window_chunks": window,
      "train_seconds": train_times, "sample_seconds": sample_times,
      "wall_seconds": time.monotonic() - t_start, "jax": jax.__version__,
      "devices": f"{jax.device_count()} x {jax.devices()[0].platform}", "results": results}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(_finite(report), f, indent=1, allow_nan=False)
    f.write("\n")
  print(table(results))
  print(f"\nwall time {report['wall_seconds'] / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
  main()
