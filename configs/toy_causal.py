"""Stage 2 of the toy pipeline (teacher -> causal -> block forcing): the block-causal student with the
chunk-wise noise ramp, initialised from the toy teacher. `arg` picks the noise schedule:
`cosine` (default, the paper's best) | `linear` | `independent` (Diffusion Forcing) | `constant`.

  python -m blockvid_jax.train --config configs/toy_teacher.py --workdir runs/toy_teacher
  python -m blockvid_jax.train --config configs/toy_causal.py --workdir runs/toy_causal
  python -m blockvid_jax.train --config configs/toy_block_forcing.py --workdir runs/toy_block_forcing

The model, data and cache geometry are `configs/toy_cpu.py`'s (a causal checkpoint must load into the
block forcing generator and the teacher into the causal model).
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
  kind = arg or "cosine"
  c = _sibling("toy_cpu").get_config()
  c.train.stage = "causal"
  c.train.init_from = "runs/toy_teacher"  # params dir or work dir of the teacher ("" = random init)
  c.train.noise.kind = kind               # chunk-wise ramp: cosine | linear | independent | constant
  return c
