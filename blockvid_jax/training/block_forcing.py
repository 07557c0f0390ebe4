"""Stage `block_forcing`: the train state of three networks and the pure jitted Block Forcing step.

Networks (DESIGN 6): the causal generator (trained, EMA kept), the critic ("fake score", bidirectional,
initialised from the teacher, trained) and the frozen teacher ("real score", bidirectional, with
classifier-free guidance). Separate optax optimizers for generator and critic.

One step `train_step(state, batch, rng) -> (state, metrics)`:
  1. critic: `critic_steps` updates, each flow matching on a stop-gradient Self Forcing rollout of the
     current generator (a fresh rollout per update, or one shared by all of them);
  2. generator: one update of  L_DMD(rollout) + lambda_vf * L_VF(data window), where the rollout is
     `self_forcing.SelfForcingRollout` (exit steps from `fold_in(rng, EXIT)`, identical on every
     device) and L_VF is `velocity_forcing.loss` on the ground-truth window under the chunk-wise noise
     schedule, predicted through the generator's cache (teacher-forcing layout with the cache's
     chunk visibility; x_cond from the chunks its bank retrieves).
The batch is the causal stage's (`training.steps`): latents [B, F, H, W, C], context [B, Nc, T, E],
null_context [T, E], and optionally pooled [B, Nc, E] (else derived from context: the mean of the
non-padding token embeddings, which is what the text encoders pool).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from blockvid_jax.diffusion import flow, noise
from blockvid_jax.models.params import init_boxed
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel import LOGICAL_RULES, activation_rules, logical_to_sharding
from blockvid_jax.training import dmd, velocity_forcing
from blockvid_jax.training.self_forcing import (SelfForcingRollout, chunks_to_video,
                                                per_chunk_prompts)
from blockvid_jax.training.state import apply_update, tree_norm
from blockvid_jax.training.steps import pooled_from_context, predict_velocity
from blockvid_jax.typing import Array, PyTree
from blockvid_jax.errors import ConfigError

# fold_in tags of the step rng (fixed: the exit steps must not depend on anything device-local).
EXIT, ROLLOUT, DMD, VF, CRITIC, VF_CLEAN = range(6)


@dataclasses.dataclass(frozen=True)
class BlockForcingSettings:
  """Static (hashable) settings of the Block Forcing step (defaults: DESIGN 6/10)."""
  critic_steps: int = 5              # critic updates per generator update
  fresh_critic_rollouts: bool = True  # each critic update rolls the generator out anew
  guidance: float = 4.0              # teacher CFG scale in the DMD loss (1: off; see dmd.guided)
  t_min: float = 0.02                # DMD / critic flow-time clamp
  t_max: float = 0.98
  shift: float = 5.0                 # timestep shift of the DMD / critic flow times
  lambda_vf: float = 1.0             # weight of Velocity Forcing (0: pure Self Forcing DMD)
  vf_gamma: float = 1.0              # target = eps - gamma * x_cond
  vf_cond_mix: float = 0.1           # x_cond = (1 - mix) x + mix x_retrieved
  noise_kind: str = "cosine"         # chunk-wise schedule of the VF data window
  t_min_max: float = 1.0
  noise_t_max: float = 1.0
  noise_shift: float = 1.0
  ema_decay: float = 0.0             # 0: no EMA
  ema_start_step: int = 0            # the EMA equals the generator until this step

  def __post_init__(self):
    def need(cond, msg):
      if not cond:
        raise ConfigError(msg)
    need(self.critic_steps >= 1, f"block_forcing.critic_steps must be >= 1, got {self.critic_steps}")
    need(0.0 <= self.t_min <= self.t_max <= 1.0,
         f"block_forcing t_min/t_max must satisfy 0 <= t_min <= t_max <= 1, got "
         f"{self.t_min}, {self.t_max}")
    need(self.shift > 0, f"block_forcing.shift must be > 0, got {self.shift}")
    need(self.lambda_vf >= 0, f"block_forcing.lambda_vf must be >= 0, got {self.lambda_vf}")
    need(0.0 <= self.vf_cond_mix <= 1.0,
         f"block_forcing.vf_cond_mix must be in [0, 1], got {self.vf_cond_mix}")
    need(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
    need(self.ema_start_step >= 0, f"ema_start_step must be >= 0, got {self.ema_start_step}")


@struct.dataclass
class BlockForcingState:
  """Everything a Block Forcing run carries (and checkpoints). `params` is the generator, named as in
  `TrainState` so sampling and export code reads both states alike."""
  step: Array                     # int32 [], generator updates taken
  params: PyTree                  # generator
  opt_state: PyTree
  ema_params: Optional[PyTree]    # EMA of the generator, or None
  critic_params: PyTree           # fake score
  critic_opt_state: PyTree
  teacher_params: PyTree          # real score (frozen)


# --------------------------------------------------------------------------- state creation
def _boxed_state(gen_spec: DiTSpec, teacher_spec: DiTSpec, gen_tx, critic_tx, use_ema: bool,
                 rng) -> BlockForcingState:
  k_gen, k_teacher = jax.random.split(rng)
  gen, teacher = init_boxed(gen_spec, k_gen), init_boxed(teacher_spec, k_teacher)
  return BlockForcingState(step=jnp.zeros((), jnp.int32), params=gen, opt_state=gen_tx.init(gen),
                           ema_params=gen if use_ema else None, critic_params=teacher,
                           critic_opt_state=critic_tx.init(teacher), teacher_params=teacher)


def state_shardings(gen_spec: DiTSpec, teacher_spec: DiTSpec, gen_tx, critic_tx, mesh,
                    rules=LOGICAL_RULES, use_ema: bool = True) -> BlockForcingState:
  """NamedShardings of every leaf (the logical names of the boxed init, resolved on `mesh`)."""
  init = functools.partial(_boxed_state, gen_spec, teacher_spec, gen_tx, critic_tx, use_ema)
  return logical_to_sharding(nn.get_partition_spec(jax.eval_shape(init, jax.random.key(0))), mesh,
                             rules)


def abstract_state(gen_spec: DiTSpec, teacher_spec: DiTSpec, gen_tx, critic_tx, mesh,
                   rules=LOGICAL_RULES, use_ema: bool = True) -> BlockForcingState:
  """ShapeDtypeStructs with shardings: the restore target of a checkpoint."""
  init = functools.partial(_boxed_state, gen_spec, teacher_spec, gen_tx, critic_tx, use_ema)
  abstract = nn.unbox(jax.eval_shape(init, jax.random.key(0)))
  shardings = state_shardings(gen_spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract, shardings)


def create_state(gen_params: PyTree, teacher_params: PyTree, gen_spec: DiTSpec,
                 teacher_spec: DiTSpec, gen_tx, critic_tx, mesh, rules=LOGICAL_RULES,
                 use_ema: bool = True) -> tuple[BlockForcingState, BlockForcingState]:
  """The initial sharded state from pretrained generator and teacher params (the critic starts as a
  copy of the teacher, the EMA as a copy of the generator) and its shardings."""
  sh = state_shardings(gen_spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  gen = jax.device_put(gen_params, sh.params)
  teacher = jax.device_put(teacher_params, sh.teacher_params)

  def build(g, t):
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)
    return BlockForcingState(step=jnp.zeros((), jnp.int32), params=g, opt_state=gen_tx.init(g),
                             ema_params=copy(g) if use_ema else None, critic_params=copy(t),
                             critic_opt_state=critic_tx.init(t), teacher_params=t)
  with activation_rules(mesh, rules):
    state = jax.jit(build, out_shardings=sh)(gen, teacher)
  return state, sh


# --------------------------------------------------------------------------- the step
def make_train_step(gen_spec: DiTSpec, teacher_spec: DiTSpec, rollout: SelfForcingRollout,
                    gen_tx: optax.GradientTransformation, critic_tx: optax.GradientTransformation,
                    gen_schedule: optax.Schedule, critic_schedule: optax.Schedule,
                    settings: BlockForcingSettings) -> Callable:
  """-> the pure `train_step(state, batch, rng) -> (state, metrics)` (not jitted)."""
  s = settings
  fpc = gen_spec.frames_per_chunk
  if rollout.sampler.model != gen_spec:
    raise ConfigError("the rollout sampler must use the generator's DiTSpec")

  def x0_fn(spec, params, context):
    def fn(x_t, t):                                                  # x_t [B, F, ...], t [B]
      t_frames = jnp.broadcast_to(t[:, None], x_t.shape[:2])         # [B, F]
      return flow.x0_from_v(x_t, predict_velocity(spec, params, x_t, t_frames, context,
                                                  "bidirectional"), t)
    return fn

  def train_step(state: BlockForcingState, batch: dict, rng: Array):
    rng = jax.random.fold_in(rng, state.step)
    x_data = batch["latents"].astype(jnp.float32)                    # [B, F, H, W, C]
    context = batch["context"]                                       # [B, Nc, T, E]
    if context.ndim != 4:
      raise ConfigError("block_forcing needs per-chunk captions: context [B, Nc, T, E]")
    pooled = batch.get("pooled")
    pooled = pooled_from_context(context) if pooled is None else pooled  # [B, Nc, E]
    null = jnp.broadcast_to(batch["null_context"].astype(context.dtype), context.shape)
    b, f = x_data.shape[:2]
    n = f // fpc
    texts, roll_pooled = per_chunk_prompts(context, pooled, n)       # [n, B, T, E], [n, B, E]

    def sample(params, key):                                         # a stop-gradient rollout
      k_exit, k_roll = jax.random.split(key)
      chunks = rollout.rollout(jax.lax.stop_gradient(params), texts, roll_pooled, k_roll,
                               rollout.exit_steps(k_exit, n))
      return jax.lax.stop_gradient(chunks_to_video(chunks))          # [B, F, H, W, C]

    # 1. critic updates -------------------------------------------------------------------
    k_critic = jax.random.fold_in(rng, CRITIC)
    shared = None if s.fresh_critic_rollouts else sample(state.params, k_critic)

    def critic_update(carry, key):
      cp, copt = carry
      k_sample, k_loss = jax.random.split(key)
      x = sample(state.params, k_sample) if shared is None else shared

      def loss_fn(p):
        v_fn = lambda x_t, t: predict_velocity(teacher_spec, p, x_t,
                                               jnp.broadcast_to(t[:, None], x_t.shape[:2]),
                                               context, "bidirectional")
        return dmd.critic_loss(x, k_loss, v_fn, t_min=s.t_min, t_max=s.t_max, shift=s.shift)
      loss, grads = jax.value_and_grad(loss_fn)(cp)
      updates, copt = critic_tx.update(grads, copt, cp)
      return (optax.apply_updates(cp, updates), copt), (loss, tree_norm(grads))

    keys = jax.random.split(jax.random.fold_in(k_critic, 1), s.critic_steps)
    (critic, critic_opt), (c_loss, c_gnorm) = jax.lax.scan(
        critic_update, (state.critic_params, state.critic_opt_state), keys)

    # 2. generator update -----------------------------------------------------------------
    exits = rollout.exit_steps(jax.random.fold_in(rng, EXIT), n)     # [n], replicated
    fake = x0_fn(teacher_spec, critic, context)

    def real_x0(x_t, t):                                             # teacher with CFG
      if s.guidance == 1.0:
        return x0_fn(teacher_spec, state.teacher_params, context)(x_t, t)
      both = x0_fn(teacher_spec, state.teacher_params,
                   jnp.concatenate([context, null], axis=0))(        # [2B, Nc, T, E]: cond | uncond
                       jnp.concatenate([x_t, x_t], axis=0), jnp.concatenate([t, t], axis=0))
      return dmd.guided(both[:b], both[b:], s.guidance)

    # Velocity Forcing through the generator's cache: the data window in the teacher-forcing
    # layout with the cache's chunk visibility, x_cond from the chunks its bank retrieves.
    vf_context, *vf_retrieved = velocity_forcing.through_cache(
        jax.random.fold_in(rng, VF_CLEAN), x_data, dict(batch, pooled=pooled),
        rollout.sampler.cache, fpc, rollout.sampler.sampler.context_t)

    def gen_loss(params):
      chunks = rollout.rollout(params, texts, roll_pooled, jax.random.fold_in(rng, ROLLOUT), exits)
      x = chunks_to_video(chunks)                                    # [B, F, H, W, C]
      l_dmd, aux = dmd.generator_loss(x, jax.random.fold_in(rng, DMD), real_x0, fake,
                                      t_min=s.t_min, t_max=s.t_max, shift=s.shift)
      aux = dict(aux, dmd_loss=l_dmd)
      total = l_dmd
      if s.lambda_vf > 0:
        k_t, k_eps = jax.random.split(jax.random.fold_in(rng, VF))
        t = noise.training_times(k_t, b, n, fpc, kind=s.noise_kind, t_min_max=s.t_min_max,
                                 t_max=s.noise_t_max, shift=s.noise_shift)   # [B, F]
        eps = jax.random.normal(k_eps, x_data.shape, jnp.float32)
        v = predict_velocity(gen_spec, params, flow.noisy(x_data, eps, t), t, context, "causal",
                             **vf_context)
        l_vf = velocity_forcing.loss(v, x_data, eps, *vf_retrieved, s.vf_gamma, s.vf_cond_mix)
        aux["vf_loss"] = l_vf
        total = total + s.lambda_vf * l_vf
      aux["rollout_abs"] = jnp.mean(jnp.abs(jax.lax.stop_gradient(x)))
      return total, aux

    (loss, aux), grads = jax.value_and_grad(gen_loss, has_aux=True)(state.params)
    params, opt_state, ema = apply_update(gen_tx, state.params, state.opt_state, grads,
                                          state.ema_params, state.step, s.ema_decay,
                                          s.ema_start_step)
    metrics = dict(aux, loss=loss, grad_norm=tree_norm(grads), param_norm=tree_norm(params),
                   critic_loss=jnp.mean(c_loss), critic_loss_last=c_loss[-1],
                   critic_grad_norm=jnp.mean(c_gnorm),
                   lr=jnp.asarray(gen_schedule(state.step), jnp.float32),
                   critic_lr=jnp.asarray(critic_schedule(state.step * s.critic_steps), jnp.float32))
    for c in range(n):
      metrics[f"exit_step/{c}"] = exits[c]
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema, critic_params=critic, critic_opt_state=critic_opt)
    return new_state, metrics

  return train_step
