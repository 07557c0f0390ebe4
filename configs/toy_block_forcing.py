"""Stage 3 of the toy pipeline: Block Forcing (Self Forcing DMD through the semantic sparse cache +
Velocity Forcing) on top of the causal student, with the toy teacher as real score and critic start.

  python -m blockvid_jax.train --config configs/toy_teacher.py --workdir runs/toy_teacher
  python -m blockvid_jax.train --config configs/toy_causal.py --workdir runs/toy_causal
  python -m blockvid_jax.train --config configs/toy_block_forcing.py --workdir runs/toy_block_forcing
  python -m blockvid_jax.sample --config configs/toy_block_forcing.py \
      --checkpoint runs/toy_block_forcing/params_ema --prompts configs/toy_prompts.json \
      --num_chunks 40 --out outputs/toy_block_forcing.mp4

Geometry = `configs/toy_cpu.py`. Learning rates are toy-sized (the Wan recipe in
`configs/wan_1_3b_block_forcing.py` uses Self Forcing's 2e-6 / 4e-7).
"""

from blockvid_jax.config_lib import sibling_config
from blockvid_jax.training.block_forcing_config import add_block_forcing_defaults


def get_config(arg: str = ""):
  del arg
  c = add_block_forcing_defaults(sibling_config(__file__, "toy_cpu"))
  b = c.train.block_forcing
  b.generator_init = "runs/toy_causal"    # the causal stage (its params_ema)
  b.teacher_init = "runs/toy_teacher"     # the bidirectional teacher (real score; critic start)
  b.critic_steps = 5                      # critic updates per generator update
  b.fresh_critic_rollouts = False         # toy: one rollout feeds the 5 critic updates (2x faster)
  b.guidance = 3.0                        # teacher CFG in the DMD loss
  b.lambda_vf = 1.0                       # L = L_DMD + lambda_vf * L_VF
  b.vf_gamma = 1.0
  b.vf_cond_mix = 0.1
  b.critic_learning_rate = 2e-4           # toy scale
  c.train.learning_rate = 2e-4            # toy scale (generator)
  c.train.total_steps = 150               # ~6 s per step on 2 cores (batch 4, 64 tokens per frame)
  c.train.ema_decay = 0.95                # short run: a short EMA horizon
  c.train.ema_start_step = 25             # short run (the recipe's 200 is past its end)
  c.train.log_every = 10
  c.train.checkpoint_every = 50
  c.train.sample_every = 75
  c.train.noise.kind = "cosine"           # Velocity Forcing windows use the causal stage's ramp
  c.sample.solver = "dmd"                 # the distilled generator samples with the few-step schedule
  c.sample.guidance = 1.0
  return c
