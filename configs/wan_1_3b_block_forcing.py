"""Stage `block_forcing` at real scale: Wan2.1-T2V-1.3B generator post-trained with Block Forcing
(Self Forcing DMD through the semantic sparse cache + Velocity Forcing). TPU / GPU, not CPU.

  python -m blockvid_jax.convert --src self_forcing_dmd.pt --use_ema --out /ckpt/sf_1_3b
  python -m blockvid_jax.convert --src Wan2.1-T2V-1.3B/ --out /ckpt/wan_1_3b
  python -m blockvid_jax.train --config configs/wan_1_3b_block_forcing.py --workdir DIR \
      --config.train.block_forcing.generator_init=/ckpt/sf_1_3b \
      --config.train.block_forcing.teacher_init=/ckpt/wan_1_3b \
      --config.data.data_dir=/data/wan_latents [--jax_distributed]

Generator: a converted Self Forcing (or SkyReels-V2-DF-1.3B) checkpoint, or the params exported by
`configs/wan_1_3b_causal.py`; teacher (real score, and the critic's start): a converted
Wan2.1-T2V-1.3B. Model, data (latents + umT5 embeddings, 7 chunks of 3 latent frames = Self Forcing's
21-frame rollouts), mesh and numerics are `configs/wan_1_3b_causal.py`'s. Optimisation follows the
public Self Forcing DMD recipe: AdamW(beta1 0, beta2 0.999), lr 2e-6 (generator) / 4e-7 (critic), 5
critic updates per generator update, EMA 0.99, DMD t in [0.02, 0.98] after shift 5, teacher guidance 3
in their convention (cond + 3 (cond - uncond)) = 4 in ours, the 4-step schedule 1000/750/500/250.
"""

from blockvid_jax.config_lib import sibling_config
from blockvid_jax.training.block_forcing_config import add_block_forcing_defaults


def get_config(arg: str = ""):
  del arg
  c = add_block_forcing_defaults(sibling_config(__file__, "wan_1_3b_causal"))
  b = c.train.block_forcing
  b.generator_init = "/ckpt/sf_1_3b"      # converted Self Forcing / SkyReels-V2-DF params (or a
                                          # wan_1_3b_causal work dir)
  b.teacher_init = "/ckpt/wan_1_3b"       # converted Wan2.1-T2V-1.3B params (real score)
  b.critic_steps = 5                      # Self Forcing dfake_gen_update_ratio
  b.fresh_critic_rollouts = True          # every critic update sees a new rollout
  b.guidance = 4.0                        # = Self Forcing guidance_scale 3 (see the docstring)
  b.t_min, b.t_max, b.shift = 0.02, 0.98, 5.0
  b.lambda_vf = 1.0                       # L = L_DMD + lambda_vf * L_VF (DESIGN 6)
  b.vf_gamma = 1.0
  b.vf_cond_mix = 0.1
  b.remat_policy = "full"                 # keep only each chunk's exit-step inputs for backward
  b.critic_learning_rate = 4e-7
  b.critic_b1, b.critic_b2 = 0.0, 0.999
  b.critic_grad_clip = 10.0

  c.train.total_steps = 2000              # generator updates (our choice; watch samples / VDE)
  c.train.batch_size = 64                 # global rollouts per step (Self Forcing: 64)
  c.train.learning_rate = 2e-6
  c.train.warmup_steps = 0
  c.train.b1, c.train.b2 = 0.0, 0.999
  c.train.weight_decay = 0.0
  c.train.grad_clip = 10.0
  c.train.ema_decay = 0.99
  c.train.init_from = ""                  # unused by this stage (generator_init / teacher_init)
  c.train.checkpoint_every = 200
  c.train.log_every = 10

  c.sample.solver = "dmd"                 # the rollout and sampling schedule of the generator
  c.sample.timesteps = (1000, 750, 500, 250)
  c.sample.shift = 5.0
  c.sample.guidance = 1.0                 # distilled: no CFG at sampling
  return c
