"""`python -m blockvid_jax.lvbench`: generate the LV-Bench videos, then report the paper's table.

  python -m blockvid_jax.lvbench generate --meta META.json --config configs/toy_cpu.py \
      [--config.key=value ...] --out DIR [--start N --count M] [--ids a,b] [--checkpoint DIR]
      [--seed S]
  python -m blockvid_jax.lvbench report --videos DIR --out DIR [--weights_dir DIR]
      [--meta META.json] [--n_chunks 10] [--metrics subject,...]

`generate` writes DIR/<video id>.mp4 per meta entry (finished videos are skipped; hosts split the
sorted ids with --start/--count). `report` runs `python -m blockvid_jax.evaluate` into
OUT/evaluate/ and writes OUT/lvbench_table.md and .json. A malformed meta file, a bad selection, a
bad config override or missing scorer weights print one line and exit 2 before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from blockvid_jax.lvbench import meta as lvmeta
from blockvid_jax.lvbench.report import DIMENSIONS, TABLE_MD
from blockvid_jax.errors import BlockvidError, ConfigError, MetaError


def parse_args(argv: Optional[Sequence[str]] = None):
  ap = argparse.ArgumentParser(prog="python -m blockvid_jax.lvbench",
                               description="LV-Bench: generate videos, report VDE + VBench table.")
  sub = ap.add_subparsers(dest="command", required=True)
  g = sub.add_parser("generate", help="sample one video per meta entry")
  g.add_argument("--meta", required=True, help="LV-Bench meta JSON {id: [{start, end, caption}]}")
  g.add_argument("--config", required=True, help="config file (configs/*.py[:arg])")
  g.add_argument("--out", required=True, help="output folder of <video id>.mp4")
  g.add_argument("--start", type=int, default=0, help="first index into the sorted ids")
  g.add_argument("--count", type=int, default=None, help="number of ids from --start (default all)")
  g.add_argument("--ids", default="", help="comma-separated ids to restrict to (before sharding)")
  g.add_argument("--checkpoint", default=None, help="params checkpoint (default: random init)")
  g.add_argument("--seed", type=int, default=0, help="base seed (+ index of the id)")
  g.add_argument("--quiet", action="store_true", help="no per-chunk progress bar")
  r = sub.add_parser("report", help="evaluate a video folder, write the paper-style table")
  r.add_argument("--videos", required=True, help="folder of generated videos")
  r.add_argument("--out", required=True, help="output folder for the table and evaluate/")
  r.add_argument("--weights_dir", default=None, help="folder with the scorers' weight files")
  r.add_argument("--meta", default=None, help="meta file: every video must be one of its ids")
  r.add_argument("--n_chunks", type=int, default=10, help="VDE chunks per video (paper: 10)")
  r.add_argument("--metrics", default=",".join(DIMENSIONS), help="VDE dimensions to score")
  r.add_argument("--head_dim", type=int, default=64, help="ViT head dim (64 for public models)")
  r.add_argument("--batch_size", type=int, default=8, help="frames per scorer call")
  r.add_argument("--label", default="ours", help="name of our row in the table")
  r.add_argument("--quiet", action="store_true", help="no progress line")
  args, extra = ap.parse_known_args(argv)
  bad = [a for a in extra if args.command != "generate" or not a.startswith("--config.")]
  if bad:
    ap.error(f"unrecognized arguments: {' '.join(bad)}")
  args.overrides = extra
  return args


def load_config(spec: str, overrides: Sequence[str] = ()):
  """`path[:arg]` -> get_config(arg), then `--config.a.b=value` overrides (typed as the field)."""
  from blockvid_jax import config_overrides  # pylint: disable=import-outside-toplevel
  return config_overrides.apply_overrides(config_overrides.load_config_file(spec), overrides)


def run_generate(args) -> int:
  from blockvid_jax.lvbench import driver  # pylint: disable=import-outside-toplevel
  meta = lvmeta.load_meta(args.meta)
  only = [v.strip() for v in args.ids.split(",") if v.strip()]
  try:
    config = load_config(args.config, args.overrides)
    from blockvid_jax.config_lib import validate  # pylint: disable=import-outside-toplevel
    validate(config)
    driver.plan(config, meta, args.start, args.count, only)           # all checks, no output yet
    res = driver.generate_videos(config, meta, args.out, start=args.start, count=args.count,
                                 only=only, seed=args.seed, checkpoint=args.checkpoint,
                                 progress=not args.quiet)
  except ConfigError as err:
    raise MetaError(str(err).splitlines()[0]) from None
  print(f"generated {len(res['generated'])}, skipped {len(res['skipped'])} (already there) "
        f"-> {args.out}")
  return 0


def run_report(args) -> int:
  from blockvid_jax.lvbench import report  # pylint: disable=import-outside-toplevel
  ids = list(lvmeta.load_meta(args.meta)) if args.meta else None
  metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
  report.run_report(args.videos, args.out, args.weights_dir, ids, args.n_chunks, metrics,
                    args.batch_size, args.head_dim, args.label, args.quiet)
  print((Path(args.out) / TABLE_MD).read_text(), end="")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  try:
    return run_generate(args) if args.command == "generate" else run_report(args)
  except BlockvidError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
