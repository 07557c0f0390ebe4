"""The compiled memory plan at Wan scale (issue 10 item 4, DESIGN 9.2): nothing is allocated.

Each row lowers and compiles one step with abstract inputs (`jax.ShapeDtypeStruct` carrying the
config's shardings) on 8 fake CPU devices and reads the per-device `memory_analysis()` of the
compiled program (arguments, outputs, temporaries, aliased, total = arguments + outputs + temps -
aliased):

  wan_1_3b causal train step    configs/wan_1_3b_causal.py, its mesh (fsdp 4 x tensor 2), one
                                21-frame 480x832 window per data shard (batch 4)
  wan_1_3b Block Forcing step   configs/wan_1_3b_block_forcing.py, same mesh and batch
  wan_1_3b sampling segment     configs/self_forcing_1_3b.py on 1 device, batch 1
  wan_14b sampling segment      configs/dit.py:wan_14b (Self Forcing sampling settings) on 8
                                devices (the sampling preset context 2 x tensor 4), batch 1

  python benchmarks/memory_plan.py [--rows causal,block_forcing,sample_1_3b,sample_14b]

Targets (DESIGN 9.2): train steps <= 80 GB per device, wan_1_3b sampling <= 24 GB. CPU XLA plans
buffers differently from GPU/TPU XLA (fusion and rematerialisation choices differ), so these are
the plan of this compiler, a proxy for an accelerator's. JSON: benchmarks/results/memory_plan.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from blockvid_jax import parallel  # pylint: disable=wrong-import-position
from blockvid_jax.config_overrides import load_config_file  # pylint: disable=wrong-import-position
from blockvid_jax.diffusion.sampler import build_sampler  # pylint: disable=wrong-import-position
from blockvid_jax.generate import segment_shardings  # pylint: disable=wrong-import-position
from blockvid_jax.models.attention_kernels import resolve  # pylint: disable=wrong-import-position
from blockvid_jax.models.params import init_boxed  # pylint: disable=wrong-import-position
from blockvid_jax.training import block_forcing as bf  # pylint: disable=wrong-import-position
from blockvid_jax.training import block_forcing_config as bfc  # pylint: disable=wrong-import-position
from blockvid_jax.training import loop, state as state_lib, steps, trainer  # pylint: disable=wrong-import-position
from blockvid_jax.training.config import validate_train  # pylint: disable=wrong-import-position
from blockvid_jax.training.self_forcing import SelfForcingRollout  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GB = 1e9
TARGETS_GB = {"causal": 80, "block_forcing": 80, "sample_1_3b": 24, "sample_14b": None}


OVERRIDES: list[str] = []   # --set a.b=value, applied to every row's config


def _config(name):
  c = load_config_file(os.path.join(ROOT, "configs", name))
  for item in OVERRIDES:
    key, _, raw = item.partition("=")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf in node:
      node[leaf] = value
  return c


def _train_batch(c, mesh, rules, batch):
  bs = steps.batch_shardings(mesh, 4, rules)
  d, v = c.data, c.video
  lat = (batch, d.window_chunks * d.frames_per_chunk, v.latent_height, v.latent_width, 16)
  ctx = (batch, d.window_chunks, c.text.max_len, 4096)
  sds = jax.ShapeDtypeStruct
  return bs, {"latents": sds(lat, jnp.float32, sharding=bs["latents"]),
              "context": sds(ctx, jnp.float32, sharding=bs["context"]),
              "null_context": sds(ctx[2:], jnp.float32, sharding=bs["null_context"])}


def _attention(spec, c, tokens):
  return resolve(spec.attention_impl, (1, tokens, spec.num_heads, spec.head_dim),
                 (1, tokens, spec.num_heads, spec.head_dim), jnp.dtype(spec.dtype), "cpu")


def causal_row():
  c = _config("wan_1_3b_causal.py")
  mesh = trainer.make_mesh(c, jax.devices())
  rules = parallel.rules_from_config(c.mesh.rules.to_dict() if c.mesh.rules else None)
  spec = validate_train(c)
  tx, schedule = loop.optimizer(c)
  use_ema = c.train.ema_decay > 0
  state = state_lib.abstract_train_state(spec, tx, mesh, rules, use_ema)
  shardings = state_lib.state_shardings(spec, tx, mesh, rules, use_ema)
  batch = mesh.shape["data"] * mesh.shape["fsdp"]
  bs, abstract_batch = _train_batch(c, mesh, rules, batch)
  fn = steps.jit_train_step(steps.make_train_step(spec, tx, schedule, loop.step_settings(c)),
                            mesh, shardings, bs, rules)
  with parallel.activation_rules(mesh, rules):
    lowered = fn.jitted.lower(state, abstract_batch, jax.random.key(0))
  tokens = 21 * 30 * 52 * (2 if c.train.layout == "teacher_forcing" else 1)
  return lowered, dict(devices=8, mesh=dict(mesh.shape), batch=batch, layout=c.train.layout,
                       attention_impl=_attention(spec, c, tokens), remat=spec.remat_policy)


def block_forcing_row():
  c = _config("wan_1_3b_block_forcing.py")
  mesh = trainer.make_mesh(c, jax.devices())
  rules = parallel.rules_from_config(c.mesh.rules.to_dict() if c.mesh.rules else None)
  spec = bfc.validate_block_forcing(c)
  (gen_tx, gen_sched), (critic_tx, critic_sched) = bfc.optimizers(c)
  use_ema = c.train.ema_decay > 0
  state = bf.abstract_state(spec, spec, gen_tx, critic_tx, mesh, rules, use_ema)
  shardings = bf.state_shardings(spec, spec, gen_tx, critic_tx, mesh, rules, use_ema)
  _, sampler = build_sampler(c)
  rollout = SelfForcingRollout(sampler, **bfc.rollout_options(c))
  step_fn = bf.make_train_step(spec, spec, rollout, gen_tx, critic_tx, gen_sched, critic_sched,
                               bfc.settings(c))
  batch = mesh.shape["data"] * mesh.shape["fsdp"]
  bs, abstract_batch = _train_batch(c, mesh, rules, batch)
  fn = steps.jit_train_step(step_fn, mesh, shardings, bs, rules)
  with parallel.activation_rules(mesh, rules):
    lowered = fn.jitted.lower(state, abstract_batch, jax.random.key(0))
  return lowered, dict(devices=8, mesh=dict(mesh.shape), batch=batch,
                       attention_impl=_attention(spec, c, 21 * 30 * 52 * 2),
                       remat=f"{spec.remat_policy} + rollout {c.train.block_forcing.remat_policy}",
                       critic_steps=c.train.block_forcing.critic_steps)


def _sample_row(config_name, devices):
  c = _config(config_name)
  if config_name.startswith("dit.py"):       # the 14B preset with Self Forcing's sampling settings
    sf = _config("self_forcing_1_3b.py")
    for section in ("sample", "cache", "video"):
      c[section] = sf[section]
    c.text.max_len = sf.text.max_len
  c.text.checkpoint = c.text.tokenizer = c.autoencoder.checkpoint = ""   # DiT only: no weights read
  spec, sampler = build_sampler(c)
  sds = jax.ShapeDtypeStruct
  seg = sampler.sampler.chunks_per_segment
  t, e = c.text.max_len, spec.text_dim
  params = jax.eval_shape(lambda: nn.unbox(init_boxed(spec, jax.random.key(0))))
  state = jax.eval_shape(lambda: sampler.init_state(1, jax.random.key(0)))
  if devices == 1:
    fn = sampler.make_segment_fn()
    args = (params, state)
    mesh_shape = {}
  else:
    mesh = parallel.make_mesh(parallel.sampling_mesh_shape(
        devices, spec.num_heads, (sampler.cache.tokens_per_chunk, sampler.cache.k_salient)))
    p_sh, s_sh, out_sh, rules = segment_shardings(sampler, spec, mesh, 1)
    fn = sampler.make_segment_fn(s_sh, p_sh, out_sh)
    attach = lambda a, sh: sds(a.shape, a.dtype, sharding=sh)
    args = (jax.tree_util.tree_map(attach, params, p_sh), jax.tree_util.tree_map(attach, state, s_sh))
    mesh_shape = dict(mesh.shape)
  texts = sds((seg, 1, t, e), jnp.float32)
  pooled = sds((seg, 1, e), jnp.float32)
  null = sds((t, e), jnp.float32)
  if devices == 1:
    lowered = fn.lower(*args, texts, pooled, null, None)
  else:
    with parallel.activation_rules(mesh, rules):
      lowered = fn.lower(*args, texts, pooled, null, None, None, None)
  tokens = sampler.cache.tokens_per_chunk + sampler.cache.context_slots
  return lowered, dict(devices=devices, mesh=mesh_shape, batch=1, chunks_per_segment=seg,
                       attention_impl=_attention(spec, c, tokens), cache_mode=sampler.cache.mode,
                       dtype=spec.dtype)


ROWS = {
    "causal": ("wan_1_3b causal train step", causal_row),
    "block_forcing": ("wan_1_3b Block Forcing step", block_forcing_row),
    "sample_1_3b": ("wan_1_3b sampling segment", lambda: _sample_row("self_forcing_1_3b.py", 1)),
    "sample_14b": ("wan_14b sampling segment", lambda: _sample_row("dit.py:wan_14b", 8)),
}


def measure(key):
  name, build = ROWS[key]
  t0 = time.perf_counter()
  lowered, info = build()
  t1 = time.perf_counter()
  mem = lowered.compile().memory_analysis()
  t2 = time.perf_counter()
  b = {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
       "temporaries": mem.temp_size_in_bytes, "aliased": mem.alias_size_in_bytes}
  b["total"] = b["arguments"] + b["outputs"] + b["temporaries"] - b["aliased"]
  target = TARGETS_GB[key]
  return dict(name=name, key=key, per_device_bytes=b, target_gb=target,
              meets_target=None if target is None else b["total"] <= target * GB,
              lower_s=round(t1 - t0, 1), compile_s=round(t2 - t1, 1), **info)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rows", default=",".join(ROWS))
  ap.add_argument("--out", default=os.path.join(HERE, "results", "memory_plan.json"))
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="config override for every row, e.g. train.layout=noisy_history")
  args = ap.parse_args(argv)
  OVERRIDES.extend(args.set)
  keys = [k for k in args.rows.split(",") if k]
  bad = [k for k in keys if k not in ROWS]
  if bad:
    ap.error(f"unknown rows {bad}; choose from {list(ROWS)}")
  rows = []
  for key in keys:
    print(f"compiling {ROWS[key][0]} ...", flush=True)
    rows.append(measure(key))
    r = rows[-1]
    print(f"  total {r['per_device_bytes']['total'] / GB:.2f} GB per device "
          f"(lower {r['lower_s']} s, compile {r['compile_s']} s)", flush=True)
  print("\n| row | devices | attention | arguments GB | outputs GB | temporaries GB | total GB | "
        "target GB |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    b = {k: v / GB for k, v in r["per_device_bytes"].items()}
    target = "-" if r["target_gb"] is None else (f"<= {r['target_gb']} "
                                                   f"({'met' if r['meets_target'] else 'NOT met'})")
    print(f"| {r['name']} | {r['devices']} | {r['attention_impl']} | {b['arguments']:.2f} | "
          f"{b['outputs']:.2f} | {b['temporaries']:.2f} | {b['total']:.2f} | {target} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"rows": rows, "jax": jax.__version__, "backend": "cpu (8 fake devices)"}, f,
              indent=1)
  os.replace(tmp, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
