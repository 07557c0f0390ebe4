"""CLI: convert a PyTorch Wan-family DiT checkpoint into a blockvid_jax params checkpoint.

    python -m blockvid_jax.convert --src Wan2.1-T2V-1.3B/ --out ~/ckpt/wan_1_3b
    python -m blockvid_jax.convert --src self_forcing_dmd.pt --use_ema --out ~/ckpt/self_forcing

Prints a summary (format, spec, parameter count). A user error prints one line `error: ...` to
stderr and exits with status 2, leaving nothing at --out; a non-empty --out is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line instead of usage + message
    print(f"error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
  from blockvid_jax.convert.keymaps import FORMATS  # pylint: disable=import-outside-toplevel
  p = _Parser(prog="python -m blockvid_jax.convert",
              description="Convert a PyTorch Wan2.1 / Diffusers / Self Forcing DiT checkpoint into a "
                          "params checkpoint (spec.json + orbax params).")
  p.add_argument("--src", required=True,
                 help="a .safetensors file, a *.safetensors.index.json, a .pt/.pth file, or a "
                      "directory holding one of them (and optionally config.json)")
  p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
  p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                 help="key naming of the source (default: detected from the keys)")
  p.add_argument("--use_ema", action="store_true",
                 help="Self Forcing: convert generator_ema instead of generator")
  p.add_argument("--num_heads", type=int, default=None,
                 help="attention heads, when neither config.json nor the width tells it")
  p.add_argument("--frames_per_chunk", type=int, default=3,
                 help="latent frames per causal chunk (3: Self Forcing, LongLive; 5: SkyReels-V2-DF)")
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from blockvid_jax.convert.loader import convert_pytorch_dit  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import count_params  # pylint: disable=import-outside-toplevel

  try:
    out = checkpoints.check_output_dir(args.out)  # fail before reading gigabytes
    result = convert_pytorch_dit(args.src, format=args.format, use_ema=args.use_ema,
                                 num_heads=args.num_heads, frames_per_chunk=args.frames_per_chunk)
    checkpoints.save_params(out, result.spec, result.params)
  except ValueError as e:  # ConvertError, CheckpointError, ConfigError: one-line user errors
    print(f"error: {e}", file=sys.stderr)
    return 2

  s = result.spec
  files = result.files[0] + (f" (+{len(result.files) - 1} more shards)" if len(result.files) > 1 else "")
  prefix = f" (keys under {result.key_prefix!r})" if result.key_prefix else ""
  print(f"format:     {result.format}{prefix}")
  print(f"source:     {files}")
  print(f"config:     {result.config_path or '(none: shapes and defaults)'}")
  print(f"spec:       dim={s.dim} ffn_dim={s.ffn_dim} num_heads={s.num_heads} num_layers={s.num_layers} "
        f"text_dim={s.text_dim} channels={s.in_channels}->{s.out_channels} "
        f"patch_size={s.patch_size} freq_dim={s.freq_dim} eps={s.eps} "
        f"frames_per_chunk={s.frames_per_chunk}")
  print(f"parameters: {count_params(result.params):,}")
  print(f"wrote:      {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
