"""Stage 1 of the toy pipeline: the bidirectional teacher (the model Block Forcing distils from).

  python -m blockvid_jax.train --config configs/toy_teacher.py --workdir runs/toy_teacher

Same model, data and geometry as `configs/toy_cpu.py`, trained with full (bidirectional) attention
over the window, one flow time per sample (plain video diffusion) and the window's per-chunk captions
concatenated as its context. Samples (DIR/samples) are Euler samples of the whole window with
classifier-free guidance; DIR/params_ema initialises `configs/toy_causal.py`.
"""

from blockvid_jax.config_lib import sibling_config


def get_config(arg: str = ""):
  c = sibling_config(__file__, "toy_cpu", arg)
  c.train.stage = "teacher"               # bidirectional attention over the whole window
  c.train.noise.kind = "constant"         # one t ~ U(0, t_max) per sample for every chunk
  c.sample.solver = "euler"               # teacher samples: multi-step Euler on the flow
  c.sample.num_steps = 20
  c.sample.guidance = 3.0                 # classifier-free guidance (text dropout trains the null)
  return c
