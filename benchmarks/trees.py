"""Benchmarks that compare commits in one run: a commit's tree unpacked by `git archive` and
imported instead of the working tree (each measurement runs in its own subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short_hash(commit: str = "HEAD") -> str:
  out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", commit], capture_output=True,
                       text=True)
  return out.stdout.strip() or "worktree"


def unpack(commit: str, dest: str) -> str:
  """`git archive COMMIT` of this repository unpacked into dest; -> its short hash."""
  archive = subprocess.run(["git", "-C", ROOT, "archive", commit], check=True, capture_output=True)
  subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
  return short_hash(commit)


def use_tree(root: str) -> None:
  """Puts `root` (and its configs/) first on sys.path and checks blockvid_jax comes from there."""
  sys.path.insert(0, root)
  sys.path.insert(0, os.path.join(root, "configs"))
  import blockvid_jax  # pylint: disable=import-outside-toplevel
  pkg = os.path.dirname(os.path.dirname(os.path.abspath(blockvid_jax.__file__)))
  if os.path.realpath(pkg) != os.path.realpath(root):
    raise SystemExit(f"imported blockvid_jax from {pkg}, wanted the tree at {root}")
