"""The `train.block_forcing` config section (defaults with one-line comments), its validation and the
typed objects built from it (step settings, the two optimizers).

Defaults follow DESIGN 6/10 and the public Self Forcing DMD recipe (AdamW with beta1 = 0, learning
rates 2e-6 / 4e-7, critic_steps 5, DMD flow time clamped to [0.02, 0.98] after shift 5, teacher
guidance 4 in our convention). Only the CLI, the loop and benchmarks read the config; the step gets
`BlockForcingSettings`.
"""

from __future__ import annotations

import ml_collections
import optax

from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.training import optim
from blockvid_jax.training.block_forcing import BlockForcingSettings
from blockvid_jax.training.config import validate_train
from blockvid_jax.models.spec import REMAT_POLICIES
from blockvid_jax.errors import ConfigError

STAGE = "block_forcing"


def add_block_forcing_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets `train.stage = "block_forcing"` and adds `c.train.block_forcing` (in place); returns `c`."""
  c.train.stage = STAGE
  b = c.train.block_forcing = ml_collections.ConfigDict()
  b.generator_init = ""                   # causal-stage params dir or work dir (params_ema preferred)
  b.teacher_init = ""                     # teacher params dir or work dir (real score; critic init)
  b.critic_steps = 5                      # critic updates per generator update
  b.fresh_critic_rollouts = True          # each critic update rolls the generator out anew
  b.guidance = 4.0                        # teacher CFG x0_u + g (x0_c - x0_u) in DMD (1: off); 4 =
                                          # Self Forcing guidance_scale 3 (cond + 3 (cond - uncond))
  b.t_min = 0.02                          # DMD / critic flow time clamp, lower end
  b.t_max = 0.98                          # ... upper end
  b.shift = 5.0                           # timestep shift of the DMD / critic flow times
  b.lambda_vf = 1.0                       # weight of Velocity Forcing (0: Self Forcing DMD only)
  b.vf_gamma = 1.0                        # VF target eps - gamma * x_cond (DESIGN 10)
  b.vf_cond_mix = 0.1                     # x_cond = (1 - mix) x + mix x_retrieved (DESIGN 10)
  b.remat_policy = "none"                 # jax.checkpoint of each chunk's exit-step forward
  b.same_step_across_chunks = True        # one random exit step for all chunks of a rollout
                                          # (Self Forcing same_step_across_blocks); False: per chunk
  b.grad_last_frames = 21                 # generator gradients only through the chunks of the
                                          # last N latent frames (Self Forcing 21; 0: all)
  b.critic_learning_rate = 4e-7           # critic AdamW peak learning rate (Self Forcing: 4e-7)
  b.critic_b1 = 0.0                       # critic Adam beta1
  b.critic_b2 = 0.999                     # critic Adam beta2
  b.critic_weight_decay = 0.0             # critic decoupled weight decay
  b.critic_grad_clip = 10.0               # critic global-norm clipping (0: off)
  # The generator uses train.learning_rate / b1 / b2 / weight_decay / grad_clip / warmup_steps /
  # ema_decay, and train.noise for the Velocity Forcing data windows.
  c.train.learning_rate = 2e-6            # Self Forcing generator learning rate
  c.train.b1 = 0.0
  c.train.b2 = 0.999
  c.train.weight_decay = 0.0
  c.train.grad_clip = 10.0
  c.train.warmup_steps = 0
  c.train.ema_start_step = 200            # Self Forcing ema_start_step (EMA = generator before)
  c.train.text_dropout = 0.0              # unused by this stage (the teacher gets the null prompt)
  return c


def _need(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def validate_block_forcing(config: ml_collections.ConfigDict) -> DiTSpec:
  """`validate_train` (as for a causal run) plus the block_forcing section; returns the model spec."""
  _need(config.train.stage == STAGE, f"train.stage must be {STAGE!r} here, got "
        f"{config.train.stage!r}")
  _need("block_forcing" in config.train, "train.block_forcing is missing: configs of this stage "
        "start from add_block_forcing_defaults()")
  probe = ml_collections.ConfigDict(config.to_dict())
  probe.train.stage = "causal"            # the shared fields validate as for a causal run
  spec = validate_train(probe)
  b = config.train.block_forcing
  _need(bool(b.teacher_init), "train.block_forcing.teacher_init must name the teacher's params "
        "(a params directory or the teacher stage's work directory)")
  _need(bool(b.generator_init), "train.block_forcing.generator_init must name the causal stage's "
        "params (a params directory or work directory)")
  _need(isinstance(b.critic_steps, int) and b.critic_steps >= 1,
        f"train.block_forcing.critic_steps must be an integer >= 1, got {b.critic_steps!r}")
  _need(b.remat_policy in REMAT_POLICIES, f"train.block_forcing.remat_policy must be one of "
        f"{list(REMAT_POLICIES)}, got {b.remat_policy!r}")
  _need(isinstance(b.same_step_across_chunks, bool), "train.block_forcing.same_step_across_chunks "
        f"must be True or False, got {b.same_step_across_chunks!r}")
  _need(isinstance(b.grad_last_frames, int) and b.grad_last_frames >= 0,
        "train.block_forcing.grad_last_frames must be an integer >= 0 (0: all frames), got "
        f"{b.grad_last_frames!r}")
  _need(b.critic_learning_rate > 0, "train.block_forcing.critic_learning_rate must be > 0, got "
        f"{b.critic_learning_rate}")
  _need(0.0 <= b.critic_b1 < 1.0 and 0.0 <= b.critic_b2 < 1.0,
        f"train.block_forcing.critic_b1/b2 must be in [0, 1), got {b.critic_b1}, {b.critic_b2}")
  _need(b.guidance > 0, f"train.block_forcing.guidance must be > 0, got {b.guidance}")
  _need(config.sample.solver == "dmd", "block forcing rolls out with the few-step schedule: "
        f"sample.solver must be 'dmd', got {config.sample.solver!r}")
  settings(config)                        # range checks of the step settings
  return spec


def settings(config: ml_collections.ConfigDict) -> BlockForcingSettings:
  t, b = config.train, config.train.block_forcing
  return BlockForcingSettings(
      critic_steps=b.critic_steps, fresh_critic_rollouts=b.fresh_critic_rollouts,
      guidance=b.guidance, t_min=b.t_min, t_max=b.t_max, shift=b.shift, lambda_vf=b.lambda_vf,
      vf_gamma=b.vf_gamma, vf_cond_mix=b.vf_cond_mix, noise_kind=t.noise.kind,
      t_min_max=t.noise.t_min_max, noise_t_max=t.noise.t_max, noise_shift=t.noise.shift,
      ema_decay=t.ema_decay, ema_start_step=t.ema_start_step)


def rollout_options(config: ml_collections.ConfigDict) -> dict:
  """The `SelfForcingRollout` fields set by the section (besides the sampler)."""
  b = config.train.block_forcing
  return dict(remat_policy=b.remat_policy, same_step_across_chunks=b.same_step_across_chunks,
              grad_last_frames=b.grad_last_frames)


def optimizers(config: ml_collections.ConfigDict) -> tuple[tuple[optax.GradientTransformation,
                                                                 optax.Schedule], ...]:
  """((generator tx, schedule), (critic tx, schedule)); the critic's schedule runs over
  total_steps * critic_steps updates."""
  t, b = config.train, config.train.block_forcing
  gen = optim.make_optimizer(learning_rate=t.learning_rate, total_steps=t.total_steps,
                             warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio,
                             weight_decay=t.weight_decay, b1=t.b1, b2=t.b2, grad_clip=t.grad_clip)
  critic = optim.make_optimizer(learning_rate=b.critic_learning_rate,
                                total_steps=t.total_steps * b.critic_steps,
                                warmup_steps=t.warmup_steps * b.critic_steps,
                                min_lr_ratio=t.min_lr_ratio, weight_decay=b.critic_weight_decay,
                                b1=b.critic_b1, b2=b.critic_b2, grad_clip=b.critic_grad_clip)
  return gen, critic
