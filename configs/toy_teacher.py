"""Stage 1 of the toy pipeline: the bidirectional teacher (the model Block Forcing distils from).

  python -m blockvid_jax.train --config configs/toy_teacher.py --workdir runs/toy_teacher

Same model, data and geometry as `configs/toy_cpu.py`, trained with full (bidirectional) attention
over the window, one flow time per sample (plain video diffusion) and the window's per-chunk captions
concatenated as its context. Samples (DIR/samples) are Euler samples of the whole window with
classifier-free guidance; DIR/params_ema initialises `configs/toy_causal.py`.
"""

import importlib.util
import os


def _sibling(name: str):
  """Loads `configs/<name>.py` (configs are files, not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_blockvid_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = ""):
  c = _sibling("toy_cpu").get_config(arg)
  c.train.stage = "teacher"               # bidirectional attention over the whole window
  c.train.noise.kind = "constant"         # one t ~ U(0, t_max) per sample for every chunk
  c.sample.solver = "euler"               # teacher samples: multi-step Euler on the flow
  c.sample.num_steps = 20
  c.sample.guidance = 3.0                 # classifier-free guidance (text dropout trains the null)
  return c
