"""The paper-style LV-Bench table: 5 VDE dimensions + 5 VBench metrics, mean over videos.

`run_report` runs `blockvid_jax.evaluate` on a folder of videos (its outputs go to OUT/evaluate/),
then writes OUT/lvbench_table.md and OUT/lvbench_table.json with our row next to the paper's
reference rows (DESIGN 11: VDE on LV-Bench eval; the paper's VBench numbers are not recorded there,
so those cells stay empty). VDE: lower is better (drift from the first chunk); VBench metrics:
higher is better (raw VBench values over the whole video). A metric computed by a stand-in scorer
(no weights for MUSIQ / AMT-S given) is flagged: it is not comparable with the paper.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from blockvid_jax.evaluate import cli as evaluate_cli
from blockvid_jax.evaluate import vde
from blockvid_jax.errors import MetaError, UsageError

DIMENSIONS = ("subject", "background", "motion", "aesthetic", "clarity")   # paper's column order
TITLES = {"subject": "Subject", "background": "Background", "motion": "Motion",
          "aesthetic": "Aesthetic", "clarity": "Clarity"}
VBENCH_TITLES = {"subject_consistency": "Subject cons.", "background_consistency": "Backgr. cons.",
                 "motion_smoothness": "Motion smooth.", "aesthetic_quality": "Aesthetic q.",
                 "imaging_quality": "Imaging q."}
PAPER_VDE = {   # DESIGN 11, LV-Bench eval split; columns in DIMENSIONS order
    "SkyReels-V2-DF-1.3B (paper)": (0.1085, 0.3179, 0.0195, 1.2083, 0.9365),
    "BlockVid (paper)": (0.0844, 0.2945, 0.0119, 0.9618, 0.7551),
    "Self Forcing (paper)": (0.3716, 1.6108, 0.1549, 3.4683, 3.0798),
}
TABLE_MD, TABLE_JSON, EVAL_DIR = "lvbench_table.md", "lvbench_table.json", "evaluate"


def check_videos(videos: Path, meta_ids: Sequence[str]) -> list[str]:
  """Every video in the folder must be a meta id; returns the ids with no video (listed)."""
  names = [p.stem for p in evaluate_cli.list_videos(videos)]
  unknown = sorted(set(names) - set(meta_ids))
  if unknown:
    raise MetaError(f"videos not in the meta file: {', '.join(unknown[:5])}"
                    + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""))
  return sorted(set(meta_ids) - set(names))


def build_table(summary: dict, label: str = "ours", missing: Sequence[str] = ()) -> dict:
  """summary.json of an evaluation -> the table as JSON-ready data."""
  ours = {"name": label, "vde": {}, "vbench": {}, "paper_metric": {}, "num_videos": {}}
  for m in DIMENSIONS:
    s = summary["metrics"].get(m)
    ours["vde"][m] = None if s is None else s["mean"]
    ours["paper_metric"][m] = bool(s and s["paper_metric"])
    ours["num_videos"][m] = 0 if s is None else s["num_videos"]
  for name in VBENCH_TITLES:
    v = summary.get("vbench", {}).get(name)
    ours["vbench"][name] = None if v is None else v["mean"]
  rows = [ours] + [{"name": n, "vde": dict(zip(DIMENSIONS, vals)),
                    "vbench": {k: None for k in VBENCH_TITLES}} for n, vals in PAPER_VDE.items()]
  return {"dimensions": list(DIMENSIONS), "vbench_metrics": list(VBENCH_TITLES), "rows": rows,
          "n_chunks": summary["n_chunks"], "weighting": summary["weighting"],
          "missing_videos": list(missing), "skipped": summary.get("skipped", [])}


def _cell(v) -> str:
  if v is None:
    return "–"
  x = vde.from_json(v)
  return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else f"{x:.4f}")


def to_markdown(table: dict) -> str:
  ours = table["rows"][0]
  flag = {m: "" if ours["paper_metric"][m] else " †" for m in DIMENSIONS}
  head = ([f"VDE {TITLES[m]}{flag[m]} ↓" for m in DIMENSIONS]
          + [f"{VBENCH_TITLES[k]}{flag[m]} ↑" for k, m in zip(VBENCH_TITLES, DIMENSIONS)])
  lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
  for r in table["rows"]:
    cells = ([_cell(r["vde"][m]) for m in DIMENSIONS]
             + [_cell(r["vbench"][k]) for k in VBENCH_TITLES])
    lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
  n = max(ours["num_videos"].values() or [0])
  notes = [f"Ours: mean over {n} videos; VDE with N = {table['n_chunks']} chunks, "
           f"{table['weighting']} weights (lower is better); VBench metrics over whole videos "
           "(higher is better). Paper rows: LV-Bench eval split (DESIGN 11); their VBench "
           "values are not recorded here (–)."]
  if any(flag.values()):
    notes.append("† stand-in scorer (its weights were not given): not the paper's metric, not "
                 "comparable with the paper rows.")
  if table["missing_videos"]:
    notes.append(f"{len(table['missing_videos'])} meta videos have no video file.")
  if table["skipped"]:
    notes.append(f"{len(table['skipped'])} (video, metric) pairs skipped; see "
                 f"{EVAL_DIR}/summary.json.")
  return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def run_report(videos, out, weights_dir=None, meta_ids: Optional[Sequence[str]] = None,
               n_chunks: int = 10, metrics: Sequence[str] = DIMENSIONS, batch_size: int = 8,
               head_dim: int = 64, label: str = "ours", quiet: bool = False) -> dict:
  """Evaluates `videos` and writes the table into `out`. Raises MetaError /
  UsageError (one line) before anything is written."""
  videos, out = Path(videos), Path(out)
  missing = check_videos(videos, meta_ids) if meta_ids is not None else []
  args = argparse.Namespace(videos=str(videos), out=str(out / EVAL_DIR), metrics=",".join(metrics),
                            weights_dir=None if weights_dir is None else str(weights_dir),
                            n_chunks=n_chunks, weighting="linear", plugins="", head_dim=head_dim,
                            batch_size=batch_size, quiet=quiet)
  evaluate_cli.evaluate(args)
  summary = json.loads((out / EVAL_DIR / "summary.json").read_text())
  table = build_table(summary, label, missing)
  vde.write_text_atomic(out / TABLE_MD, to_markdown(table))
  vde.write_json_atomic(out / TABLE_JSON, table)
  return table

