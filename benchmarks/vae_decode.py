"""Streamed Wan VAE decode: time per latent frame and peak RSS do not grow with the video length.

  nice -n 5 python benchmarks/vae_decode.py [--lengths 8 64] [--pixels 64] [--widths 16 96] [--hd]

Each (width, length) runs in its own subprocess (so peak RSS is that run's own): random weights,
latents decoded one latent frame per `decode_chunk` call, frames pulled to host and dropped (what a
video writer does). The first two calls (first-frame and later-frame compilations) are excluded from
the time. `--hd` also times one real-width latent frame at 480x832 (compile excluded).
Prints a table and writes benchmarks/results/vae_decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 2  # decode_chunk calls excluded from the timing (the two compilations)


def _vae(width: int):
  from blockvid_jax.convert.wan_vae import convert_state_dict, random_state_dict
  from blockvid_jax.models.vae import VAESpec, WanVAE
  spec, params = convert_state_dict(random_state_dict(VAESpec(dim=width)))
  return WanVAE(spec, params)


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(width: int, length: int, pixels: int) -> dict:
  """Runs in the child: one streamed decode of `length` latent frames."""
  import jax
  import numpy as np
  vae = _vae(width)
  h = pixels // vae.spec.spatial_factor
  z = np.random.default_rng(0).standard_normal((1, length, h, h, vae.spec.z_dim), np.float32)
  cache = vae.init_decode_cache(1, h, h)
  written, t0 = 0, None
  for i in range(length):
    if i == WARMUP:
      t0 = time.perf_counter()
    cache, frames = vae.decode_chunk(cache, z[:, i:i + 1])
    written += np.asarray(jax.block_until_ready(frames)).shape[1]  # to host, then dropped
  seconds = time.perf_counter() - t0
  return dict(width=width, latent_frames=length, pixels=pixels, video_frames=written,
              s_per_latent_frame=seconds / (length - WARMUP), peak_rss_mb=_peak_rss_mb())


def run_hd(width: int) -> dict:
  """One steady-state latent frame (4 video frames) at 480x832, compile and frame 0 excluded."""
  import jax
  import numpy as np
  vae = _vae(width)
  z = np.random.default_rng(0).standard_normal((1, 3, 60, 104, vae.spec.z_dim), np.float32)
  cache = vae.init_decode_cache(1, 60, 104)
  t0 = time.perf_counter()
  cache, first = vae.decode_chunk(cache, z[:, :1])
  jax.block_until_ready(first)
  first_s = time.perf_counter() - t0
  cache, _ = vae.decode_chunk(cache, z[:, 1:2])  # compiles the later-frame program
  jax.block_until_ready(cache.convs)
  t0 = time.perf_counter()
  cache, frames = vae.decode_chunk(cache, z[:, 2:3])
  jax.block_until_ready(frames)
  return dict(width=width, size="480x832", first_frame_with_compile_s=first_s,
              s_per_latent_frame=time.perf_counter() - t0, peak_rss_mb=_peak_rss_mb())


def _child(args: list[str]) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--lengths", type=int, nargs="+", default=[8, 64])
  ap.add_argument("--widths", type=int, nargs="+", default=[16, 96])
  ap.add_argument("--pixels", type=int, default=64)
  ap.add_argument("--hd", action="store_true", help="also time one 480x832 latent frame")
  ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    kind, *rest = args.child
    row = run_hd(int(rest[0])) if kind == "hd" else run_one(*(int(r) for r in rest))
    print(json.dumps(row))
    return

  rows = [_child(["stream", str(w), str(n), str(args.pixels)])
          for w in args.widths for n in args.lengths]
  print(f"{'width':>5} {'latent F':>8} {'frames':>6} {'s/latent frame':>14} {'peak RSS MB':>11}")
  for r in rows:
    print(f"{r['width']:>5} {r['latent_frames']:>8} {r['video_frames']:>6} "
          f"{r['s_per_latent_frame']:>14.4f} {r['peak_rss_mb']:>11.1f}")
  ratios = {}
  for w in args.widths:
    short, long_ = (next(r for r in rows if r["width"] == w and r["latent_frames"] == n)
                    for n in (min(args.lengths), max(args.lengths)))
    ratios[str(w)] = dict(rss=long_["peak_rss_mb"] / short["peak_rss_mb"],
                          time=long_["s_per_latent_frame"] / short["s_per_latent_frame"])
    print(f"width {w}: RSS ratio {ratios[str(w)]['rss']:.3f}, time/frame ratio "
          f"{ratios[str(w)]['time']:.3f} (targets <= 1.10)")
  result = dict(rows=rows, ratios=ratios)
  if args.hd:
    result["hd"] = _child(["hd", "96"])
    print(f"480x832, width 96: {result['hd']['s_per_latent_frame']:.1f} s per latent frame "
          f"(first frame incl. compile {result['hd']['first_frame_with_compile_s']:.1f} s)")
  import jax
  result["device"] = str(jax.devices()[0])
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  with open(os.path.join(HERE, "results", "vae_decode.json"), "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
