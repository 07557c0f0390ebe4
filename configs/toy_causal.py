"""Stage 2 of the toy pipeline (teacher -> causal -> block forcing): the block-causal student with the
chunk-wise noise ramp, initialised from the toy teacher. `arg` picks the noise schedule:
`cosine` (default, the paper's best) | `linear` | `independent` (Diffusion Forcing) | `constant`.

  python -m blockvid_jax.train --config configs/toy_teacher.py --workdir runs/toy_teacher
  python -m blockvid_jax.train --config configs/toy_causal.py --workdir runs/toy_causal
  python -m blockvid_jax.train --config configs/toy_block_forcing.py --workdir runs/toy_block_forcing

The model, data and cache geometry are `configs/toy_cpu.py`'s (a causal checkpoint must load into the
block forcing generator and the teacher into the causal model).
"""

from blockvid_jax.config_lib import sibling_config


def get_config(arg: str = ""):
  kind = arg or "cosine"
  c = sibling_config(__file__, "toy_cpu")
  c.train.stage = "causal"
  c.train.init_from = "runs/toy_teacher"  # params dir or work dir of the teacher ("" = random init)
  c.train.noise.kind = kind               # chunk-wise ramp: cosine | linear | independent | constant
  c.train.layout = "teacher_forcing"      # train what the sampler does: clean cached context
  c.train.context_view = "cache"          # ... the chunks the cache would hold (cache.mode)
  c.train.noise.t_min_max = 0.2           # the ramp on the noisy half
  c.train.noise.t_max_range = 0.3         # t_max ~ U(0.7, 1)
  return c
