"""The Colab sampling notebook runs top to bottom (its code cells, in a fresh interpreter)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_colab_notebook_runs(tmp_path):
  nb = json.load(open(os.path.join(ROOT, "notebooks", "sample_colab.ipynb")))
  cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
  script = "\n\n".join(cells).replace("NUM_CHUNKS = 12", "NUM_CHUNKS = 3")
  (tmp_path / "nb.py").write_text(script)
  env = dict(os.environ, BLOCKVID_REPO=ROOT, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "nb.py"], cwd=tmp_path, env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "frames (9, 32, 32, 3)" in r.stdout
  assert (tmp_path / "outputs" / "colab.mp4").stat().st_size > 0
