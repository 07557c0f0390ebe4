"""The accelerator check (issue 10 item 5): kernel parity and Wan-scale sampling time on the device.

  python benchmarks/gpu_check.py            # on a GPU (or TPU) machine, well under 10 minutes
  python benchmarks/gpu_check.py --smoke    # the same code path at toy sizes, any backend

1. Parity: every attention implementation available on this backend (`chunked`, and `cudnn` on a
   GPU) against the `xla` reference computed in float32 from the same inputs, on the block-causal
   mask and a cached-context mask with invalid slots: max |error| of the output and of the q/k/v
   gradients, fp32 and bf16 (cuDNN: bf16 only).
2. Sampling time: `configs/self_forcing_1_3b.py` (Wan2.1-1.3B, 480x832, sparse cache, 4 DMD steps
   + the commit pass) with random weights, batch 1: median seconds per chunk over three segments
   after the compile, with `model.attention_impl` = auto (what it resolved to is printed). The VAE
   decode is not included (it needs the Wan VAE weights).
   Published anchor: the official Self Forcing pipeline, ~570 ms per 3-latent-frame block on one
   H100 (432 ms DiT, 109 ms commit, 30 ms VAE); target <= 400 ms.

Prints tables; JSON to benchmarks/results/gpu_check.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from blockvid_jax.config_overrides import load_config_file  # pylint: disable=wrong-import-position
from blockvid_jax.diffusion.sampler import build_sampler  # pylint: disable=wrong-import-position
from blockvid_jax.models import attention_kernels as ak  # pylint: disable=wrong-import-position
from blockvid_jax.models import init_params  # pylint: disable=wrong-import-position
from blockvid_jax.models.attention import attend, block_causal_mask  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _masks(l, ctx):
  chunk = jnp.repeat(jnp.arange(3), l // 3)
  valid = jnp.arange(ctx)[None] < jnp.asarray([[ctx - ctx // 3]])
  own = jnp.ones((1, l, l), bool)
  return {"block_causal": (l, block_causal_mask(chunk, chunk)[None]),
          "context_invalid_slots": (ctx + l, jnp.concatenate(
              [jnp.broadcast_to(valid[:, None], (1, l, ctx)), own], axis=2))}


def parity(smoke: bool) -> list[dict]:
  l, ctx, n, h = (48, 24, 2, 16) if smoke else (1536, 1024, 12, 128)
  rows = []
  impls = [i for i in ("chunked", "cudnn") if i in ak.available()]
  for mask_name, (s, mask) in _masks(l, ctx).items():
    ks = jax.random.split(jax.random.key(0), 4)
    q32 = jax.random.normal(ks[0], (1, l, n, h))
    k32, v32 = (jax.random.normal(kk, (1, s, n, h)) for kk in ks[1:3])
    w = jax.random.normal(ks[3], (1, l, n, h))
    for dtype in (jnp.float32, jnp.bfloat16):
      q, k, v = (a.astype(dtype) for a in (q32, k32, v32))

      def run(impl, q, k, v):
        f = lambda q, k, v: jnp.sum(w * attend(q, k, v, mask, impl)[0].astype(jnp.float32))
        out = jax.jit(lambda q, k, v: attend(q, k, v, mask, impl)[0])(q, k, v)
        return out, jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v)
      ref_out, ref_g = run("xla", *(a.astype(jnp.float32) for a in (q, k, v)))
      for impl in impls:
        if impl == "cudnn" and dtype == jnp.float32:
          continue
        out, g = run(impl, q, k, v)
        err = lambda a, b: float(jnp.abs(a.astype(jnp.float32) - b).max())
        rows.append(dict(mask=mask_name, dtype=jnp.dtype(dtype).name, impl=impl,
                         out_err=err(out, ref_out), dq_err=err(g[0], ref_g[0]),
                         dk_err=err(g[1], ref_g[1]), dv_err=err(g[2], ref_g[2])))
  return rows


def sampling(smoke: bool) -> dict:
  if smoke:
    c = load_config_file(os.path.join(ROOT, "configs", "toy_cpu.py"))
  else:
    c = load_config_file(os.path.join(ROOT, "configs", "self_forcing_1_3b.py"))
    c.text.checkpoint = c.text.tokenizer = c.autoencoder.checkpoint = ""
    c.model.attention_impl = "auto"
  spec, sampler = build_sampler(c)
  params = jax.jit(lambda k: init_params(spec, k))(jax.random.key(0))
  seg = sampler.sampler.chunks_per_segment
  t = c.text.max_len
  texts = jax.random.normal(jax.random.key(1), (seg, 1, t, spec.text_dim)) * 0.1
  pooled = jnp.mean(texts, axis=2)
  null = jnp.zeros((t, spec.text_dim))
  fn = sampler.make_segment_fn()
  state = sampler.init_state(1, jax.random.key(2))
  t0 = time.perf_counter()
  state, out = fn(params, state, texts, pooled, null, None)
  out.block_until_ready()
  compile_s = time.perf_counter() - t0
  per_chunk = []
  for _ in range(3):
    t0 = time.perf_counter()
    state, out = fn(params, state, texts, pooled, null, None)
    out.block_until_ready()
    per_chunk.append((time.perf_counter() - t0) / seg)
  tokens = sampler.cache.tokens_per_chunk
  impl = ak.resolve(spec.attention_impl, (1, tokens, spec.num_heads, spec.head_dim),
                    (1, tokens + sampler.cache.context_slots, spec.num_heads, spec.head_dim),
                    jnp.dtype(spec.dtype))
  return dict(model=c.model.preset, latent_hw=[c.video.latent_height, c.video.latent_width],
              tokens_per_chunk=tokens, steps=len(sampler.sampler.timesteps) + 1,
              chunks_per_segment=seg, attention_impl=impl, compile_s=round(compile_s, 2),
              s_per_chunk=[round(x, 4) for x in per_chunk],
              median_s_per_chunk=round(statistics.median(per_chunk), 4))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="toy sizes (any backend)")
  ap.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check.json"))
  args = ap.parse_args(argv)
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  rows = parity(args.smoke)
  print("\n| mask | dtype | impl | out err | dq err | dk err | dv err |\n|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['mask']} | {r['dtype']} | {r['impl']} | {r['out_err']:.2e} | {r['dq_err']:.2e} | "
          f"{r['dk_err']:.2e} | {r['dv_err']:.2e} |")
  samp = sampling(args.smoke)
  print(f"\n| model | latents | attention | compile s | s per chunk (3 segments) | median |\n"
        f"|---|---|---|---|---|---|\n| {samp['model']} | {samp['latent_hw']} | "
        f"{samp['attention_impl']} | {samp['compile_s']} | {samp['s_per_chunk']} | "
        f"{samp['median_s_per_chunk']} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"device": dev.device_kind, "backend": jax.default_backend(), "smoke": args.smoke,
               "parity": rows, "sampling": samp}, f, indent=1)
  os.replace(tmp, args.out)
  print(f"wrote {args.out}")
  np.testing.assert_array_less([r["out_err"] for r in rows], 0.1)   # a broken kernel fails loudly


if __name__ == "__main__":
  main()
