"""Training throughput on CPU: tokens/s of the jitted causal train step and peak RSS, per model.

Models: the `tiny` and `small` presets (D 512, 8 layers) and the `toy_cpu` config's model. Each
runs in its own subprocess (so peak RSS is per model), one CPU device, synthetic batches of 16x16
latents (64 tokens per frame), a window of `--chunks` chunks of 3 frames with one caption embedding
per chunk (grouped cross-attention in the one block-causal forward of `training.steps`), AdamW +
clipping + EMA, the state donated. tokens/s = batch x frames x tokens per frame / median step time
(after 2 warm-up steps).

`--baseline COMMIT` (default 43d102b, the main of issue 13) runs the same measurement on that
commit's tree in the same run (`benchmarks/trees.py`), each model alternating baseline / this tree,
and prints the ratio this / baseline of the step times.

  python benchmarks/train_throughput.py [--models tiny,small,toy_cpu] [--batch 4] [--chunks 2]
      [--baseline 43d102b | --baseline ""]
Writes benchmarks/results/train_throughput.json and prints a markdown table.
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


def step_case(name: str, batch: int, chunks: int, root: str = trees.ROOT) -> dict:
  """The model's train step and its inputs: spec, step_fn (unjitted), jitted (with shardings, state
  donated), state, batch arrays, mesh, tokens, frames, text length."""
  trees.use_tree(root)
  import jax  # pylint: disable=import-outside-toplevel
  from blockvid_jax import parallel  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import DiTSpec  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import optim, state as state_lib, steps  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_threefry_partitionable", True)
  if name == "toy_cpu":
    import toy_cpu  # pylint: disable=import-outside-toplevel
    from blockvid_jax.training.config import validate_train  # pylint: disable=import-outside-toplevel
    spec = validate_train(toy_cpu.get_config())
  else:
    spec = DiTSpec.preset(name)
  hw, t_len, fpc = 16, 16, spec.frames_per_chunk
  frames = chunks * fpc
  tokens = batch * frames * (hw // spec.patch_size[1]) * (hw // spec.patch_size[2])
  mesh = parallel.make_mesh({"data": 1})
  tx, schedule = optim.make_optimizer(learning_rate=1e-4, total_steps=1000, warmup_steps=10,
                                      weight_decay=0.01, grad_clip=1.0)
  state, shardings = state_lib.create_train_state(spec, tx, jax.random.key(0), mesh)
  settings = steps.StepSettings(text_dropout=0.1, ema_decay=0.999)
  bsh = steps.batch_shardings(mesh, 4)
  k1, k2 = jax.random.split(jax.random.key(1))
  batch_arrays = {
      "latents": jax.random.normal(k1, (batch, frames, hw, hw, spec.in_channels)),
      "context": jax.random.normal(k2, (batch, chunks, t_len, spec.text_dim)),
      "null_context": jax.numpy.zeros((t_len, spec.text_dim))}
  step_fn = steps.make_train_step(spec, tx, schedule, settings)
  return dict(spec=spec, step_fn=step_fn, jitted=steps.jit_train_step(step_fn, mesh, shardings, bsh),
              state=state, batch=batch_arrays, mesh=mesh, tokens=tokens, frames=frames, t_len=t_len)


def run_model(name: str, batch: int, chunks: int, steps_n: int, root: str = trees.ROOT) -> dict:
  trees.use_tree(root)   # before the first blockvid_jax import
  import jax  # pylint: disable=import-outside-toplevel
  from blockvid_jax import parallel  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import count_params  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import steps  # pylint: disable=import-outside-toplevel
  case = step_case(name, batch, chunks, root)
  spec, run, state, batch_arrays, mesh = (case[k] for k in ("spec", "jitted", "state", "batch", "mesh"))
  tokens, frames, t_len = case["tokens"], case["frames"], case["t_len"]
  rng = jax.random.key(2)
  t0 = time.perf_counter()
  with parallel.activation_rules(mesh):
    compiled = run.jitted.lower(state, batch_arrays, rng).compile()
  compile_s = time.perf_counter() - t0
  box = [state]                                                   # the step donates its state

  def step():
    box[0], metrics = compiled(box[0], batch_arrays, rng)
    return metrics
  step_s = _median_time(step, steps_n)
  state = box[0]
  # Breakdown: the forward alone and forward + backward of the same loss, jitted on their own.
  x_t, t = batch_arrays["latents"], jax.numpy.full((batch, frames), 0.5)
  fwd = lambda p: steps.predict_velocity(spec, p, x_t, t, batch_arrays["context"], "causal")
  fwd_bwd = jax.grad(lambda p: jax.numpy.mean(fwd(p) ** 2))
  with parallel.activation_rules(mesh):
    fwd_c = jax.jit(fwd).lower(state.params).compile()
    fwd_bwd_c = jax.jit(fwd_bwd).lower(state.params).compile()
  fwd_s = _median_time(lambda: fwd_c(state.params), steps_n)
  fwd_bwd_s = _median_time(lambda: fwd_bwd_c(state.params), steps_n)
  flops = step_flops(spec, batch, tokens // (batch * frames), frames // spec.patch_size[0], t_len)
  return dict(model=name, params=count_params(state.params), batch=batch, frames=frames,
              tokens_per_step=tokens, step_s=step_s, tokens_per_s=tokens / step_s,
              forward_s=fwd_s, backward_s=fwd_bwd_s - fwd_s, update_s=step_s - fwd_bwd_s,
              step_gflop=flops / 1e9, gflops_per_s=flops / 1e9 / step_s, compile_s=compile_s,
              peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _median_time(fn, n: int) -> float:
  """Median wall time of fn() over n calls after 2 warm-up calls."""
  import jax  # pylint: disable=import-outside-toplevel
  times = []
  for _ in range(n + 2):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times[2:])


def step_flops(spec, batch: int, tokens_per_frame: int, frames: int, text_len: int) -> float:
  """Analytic multiply-adds x 2 of one train step = 3 x the forward (backward = 2 forwards): per
  layer q/k/v/o and cross-attention q/o projections, dense block-causal attention over the whole
  window (every key scored, masked or not), cross-attention over the text, the text K/V, the MLP;
  plus the output head. (XLA's CPU cost analysis counts far less than the matmuls' work.)"""
  d, m, k = spec.dim, spec.ffn_dim, spec.num_layers
  seq = tokens_per_frame * frames
  patch = spec.out_channels * spec.patch_size[0] * spec.patch_size[1] * spec.patch_size[2]
  per_layer = (2 * seq * d * 4 * d + 2 * 2 * seq * seq * d + 2 * seq * d * 2 * d
               + 2 * 2 * seq * text_len * d + 2 * text_len * d * 2 * d + 2 * 2 * seq * d * m)
  return 3.0 * batch * (k * per_layer + 2 * seq * d * patch)


def _subprocess(name: str, args, root: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run([sys.executable, __file__, "--one", name, "--root", root, "--batch",
                        str(args.batch), "--chunks", str(args.chunks), "--steps", str(args.steps)],
                       check=True, capture_output=True, text=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", default="tiny,small,toy_cpu")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--chunks", type=int, default=2)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--baseline", default="43d102b",
                  help="commit measured in the same run ('' to skip)")
  ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one model
  ap.add_argument("--root", default=trees.ROOT, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    print(json.dumps(run_model(args.one, args.batch, args.chunks, args.steps, args.root)))
    return
  head = trees.short_hash()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    base = trees.unpack(args.baseline, tmp) if args.baseline else None
    for name in args.models.split(","):
      row = dict(_subprocess(name, args, trees.ROOT), tree=head)
      if base:
        before = _subprocess(name, args, tmp)
        same = ((before["params"], before["tokens_per_step"])
                == (row["params"], row["tokens_per_step"]))
        row.update(baseline=base, baseline_step_s=before["step_s"],
                   ratio=row["step_s"] / before["step_s"] if same else None)
      rows.append(row)
      print(f"done {name}", file=sys.stderr)
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "train_throughput.json")
  meta = (f"causal train step, 16x16 latents (64 tokens/frame), batch {args.batch}, "
          f"{args.chunks} chunks x 3 frames, per-chunk captions, 1 CPU device, "
          f"{os.cpu_count()} cores; "
          f"tree {head}" + (f", baseline {base} in the same run" if base else ""))
  with open(path + ".tmp", "w") as f:
    json.dump(dict(config=meta, rows=rows), f, indent=2)
  os.replace(path + ".tmp", path)
  print(f"{meta}\n")
  print(f"| model | params | tokens/step | step s ({head}) | tokens/s | GFLOP/s | compile s | "
        f"peak RSS MB | step s ({base}) | ratio |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "- (other model at baseline)"
    extra = f"{r['baseline_step_s']:.3f} | {ratio}" if base else "- | -"
    print(f"| {r['model']} | {r['params']:,} | {r['tokens_per_step']} | {r['step_s']:.3f} | "
          f"{r['tokens_per_s']:.0f} | {r['gflops_per_s']:.0f} | {r['compile_s']:.1f} | "
          f"{r['peak_rss_mb']:.0f} | {extra} |")
  print(f"\nWhere the step's time goes ({head}; forward and forward + backward jitted alone):\n")
  print("| model | forward s | backward s | update + EMA + rest s | GFLOP per step (analytic) |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['model']} | {r['forward_s']:.3f} | {r['backward_s']:.3f} | {r['update_s']:.3f} | "
          f"{r['step_gflop']:.1f} |")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
