"""The pure training steps: `train_step(state, batch, rng) -> (state, metrics)`, and their jit.

Stage `causal` (DESIGN 6): flow matching over a window of n chunks with block-causal attention, the
chunk-wise noise schedule (`diffusion.noise`), and text dropout for classifier-free guidance. Stage
`teacher`: the same objective with bidirectional attention (the teacher Block Forcing distils from).

A batch (global arrays):
  latents       float32 [B, F, H, W, C]   F = n * frames_per_chunk latent frames
  context       float32 [B, Nc, T, E]     one text embedding per caption chunk (Nc divides n), or
                        [B, T, E]         one per window
  null_context  float32 [T, E]            the empty-prompt embedding (dropout / CFG target)

Per-chunk captions: chunk c must cross-attend only to its own caption, so a [B, Nc, T, E]
context goes to the one full-sequence block-causal forward as grouped cross-attention (frames of
caption g see caption g only; `models.attention.CrossAttention`) - equal, values and gradients, to
the chunk engine run caption by caption with each segment's own K/V committed
(tests/test_engine.py), in one forward without a scan. The bidirectional teacher (and the Block
Forcing critic) attend to all frames but cross-attend the same way, frames of chunk c to caption c
only - no concatenated prompts, which a Wan teacher never saw in training.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from blockvid_jax.cache import CacheSpec, chunk_visibility
from blockvid_jax.diffusion import flow, noise
from blockvid_jax.models.dit import CausalDiT
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel import LOGICAL_RULES, activation_rules, named, replicated
from blockvid_jax.training import losses
from blockvid_jax.training.state import TrainState, apply_update, tree_norm
from blockvid_jax.typing import Array, PyTree

STAGE_MODES = {"causal": "causal", "teacher": "bidirectional"}
LAYOUTS = ("teacher_forcing", "noisy_history")


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """Static (hashable) settings of a training step."""
  stage: str = "causal"          # causal | teacher
  noise_kind: str = "cosine"     # see diffusion.noise.SCHEDULES
  t_min_max: float = 1.0
  t_max: float = 1.0
  shift: float = 1.0
  text_dropout: float = 0.0      # P(a caption chunk's context -> null context)
  ema_decay: float = 0.0         # 0: no EMA
  ema_start_step: int = 0        # the EMA equals the params until this step (state.ema_update)
  loss_weight: str = "v"         # see losses.LOSS_WEIGHTS
  t_max_range: float = 0.0       # per-sample ramp top t_max ~ U(t_max - t_max_range, t_max)
  layout: str = "noisy_history"  # causal stage: teacher_forcing [clean | noisy] | noisy_history
  context_t: float = 0.0         # teacher forcing: flow time of the clean half (cache.context_t)
  clean_noise: float = 0.0       # ... plus U(0, clean_noise) per chunk (0: exactly context_t)
  cache: Optional[CacheSpec] = None  # teacher forcing: the clean chunks each chunk sees follow
                                 # this cache (`cache.chunk_visibility`); None: all earlier ones

  def __post_init__(self):
    if self.stage not in STAGE_MODES:
      raise ValueError(f"stage must be one of {sorted(STAGE_MODES)}, got {self.stage!r}")
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")


def dropout_context(rng: Array, context: Array, null_context: Array, p: float) -> Array:
  """Replaces each caption chunk's context by `null_context` [T, E] with probability p.

  context [B, Nc, T, E] (one draw per sample and chunk) or [B, T, E] (one draw per sample).
  """
  if p <= 0.0:
    return context
  drop = jax.random.bernoulli(rng, p, context.shape[:-2])                      # [B, Nc] or [B]
  null = jnp.broadcast_to(null_context.astype(context.dtype), context.shape)
  return jnp.where(drop[..., None, None], null, context)


def predict_velocity(spec: DiTSpec, params: PyTree, x_t: Array, t: Array, context: Array,
                     mode: str, **teacher_forcing) -> Array:
  """The model's flow prediction v for x_t [B, F, H, W, C], t [B, F] -> [B, F, H, W, C];
  context [B, T, E] (one per window) or [B, Nc, T, E] (one per F / Nc frames: grouped
  cross-attention, each frame sees its own chunk's caption, in either attention mode).
  `teacher_forcing`: clean_latents / clean_t / clean_visible of `CausalDiT.__call__`."""
  return CausalDiT(spec).apply({"params": params}, x_t, t, context, mode=mode, **teacher_forcing)


def pooled_from_context(context: Array) -> Array:
  """Mean of the non-padding (non-zero) token embeddings: [..., T, E] -> [..., E]."""
  valid = jnp.any(context != 0, axis=-1, keepdims=True).astype(jnp.float32)     # [..., T, 1]
  return jnp.sum(context * valid, axis=-2) / jnp.maximum(jnp.sum(valid, axis=-2), 1.0)


def chunk_pooled(batch: dict, num_chunks: int) -> Array:
  """Each model chunk's pooled prompt [B, n, E], from batch["pooled"] ([B, Nc, E] or [B, E]) or
  the mean of its caption's token embeddings."""
  pooled = batch.get("pooled")
  pooled = pooled_from_context(batch["context"]) if pooled is None else pooled
  if pooled.ndim == 2:
    return jnp.broadcast_to(pooled[:, None], (pooled.shape[0], num_chunks, pooled.shape[-1]))
  return jnp.repeat(pooled, num_chunks // pooled.shape[1], axis=1)                  # [B, n, E]


def teacher_forcing_inputs(rng: Array, x: Array, batch: dict, num_chunks: int,
                           frames_per_chunk: int, *, context_t: float = 0.0,
                           clean_noise: float = 0.0, cache: Optional[CacheSpec] = None) -> dict:
  """The clean half of the teacher-forcing layout for clean latents x [B, F, H, W, C]:
  clean_latents at clean_t [B, F] (context_t, plus U(0, clean_noise) per chunk) and the chunk
  visibility of `cache` (None: every earlier chunk) -> keyword arguments of `predict_velocity`."""
  k_t, k_eps = jax.random.split(rng)
  b = x.shape[0]
  t_c = context_t + jax.random.uniform(k_t, (b, num_chunks), jnp.float32, 0.0, clean_noise)
  clean_t = noise.frame_times(t_c, frames_per_chunk)                            # [B, F]
  if context_t == 0.0 and clean_noise == 0.0:
    clean = x                                                                   # exactly clean
  else:
    clean = flow.noisy(x, jax.random.normal(k_eps, x.shape, jnp.float32), clean_t)
  visible = None
  if cache is not None:
    pooled = chunk_pooled(batch, num_chunks) if cache.n_retrieve else None
    visible = chunk_visibility(cache, num_chunks, pooled)                        # [B|1, n, n]
  return dict(clean_latents=clean, clean_t=clean_t, clean_visible=visible)


def make_train_step(spec: DiTSpec, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    settings: StepSettings) -> Callable:
  """-> the pure `train_step(state, batch, rng) -> (state, metrics)` (not jitted)."""
  mode = STAGE_MODES[settings.stage]
  fpc = spec.frames_per_chunk

  def train_step(state: TrainState, batch: dict, rng: Array):
    rng = jax.random.fold_in(rng, state.step)
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    x = batch["latents"].astype(jnp.float32)                                   # [B, F, H, W, C]
    b, f = x.shape[:2]
    n = f // fpc
    t = noise.training_times(k_t, b, n, fpc, kind=settings.noise_kind, t_min_max=settings.t_min_max,
                             t_max=settings.t_max, shift=settings.shift,
                             t_max_range=settings.t_max_range)                 # [B, F]
    eps = jax.random.normal(k_eps, x.shape, jnp.float32)                       # [B, F, H, W, C]
    x_t = flow.noisy(x, eps, t)
    target = flow.velocity_target(x, eps)
    context = dropout_context(k_drop, batch["context"], batch["null_context"],
                              settings.text_dropout)
    tf = {}
    if settings.layout == "teacher_forcing" and mode == "causal":
      tf = teacher_forcing_inputs(jax.random.fold_in(rng, 3), x, batch, n, fpc,
                                  context_t=settings.context_t, clean_noise=settings.clean_noise,
                                  cache=settings.cache)

    def loss_fn(params):
      v = predict_velocity(spec, params, x_t, t, context, mode, **tf)          # [B, F, H, W, C]
      weight = losses.frame_weights(t, settings.loss_weight)                   # [B, F]
      return losses.flow_matching_loss(v, target, weight), v

    (loss, v), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, ema = apply_update(tx, state.params, state.opt_state, grads,
                                          state.ema_params, state.step, settings.ema_decay,
                                          settings.ema_start_step)
    metrics = {"loss": loss, "grad_norm": tree_norm(grads), "param_norm": tree_norm(params),
               "lr": jnp.asarray(schedule(state.step), jnp.float32), "t_mean": jnp.mean(t)}
    chunk_mse = losses.per_chunk_mse(jax.lax.stop_gradient(v), target, n)      # [n]
    for c in range(n):
      metrics[f"loss_chunk/{c}"] = chunk_mse[c]
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           ema_params=ema)
    return new_state, metrics

  return train_step


def batch_shardings(mesh, context_ndim: int = 4, rules=LOGICAL_RULES) -> dict:
  """NamedShardings of a batch: split over the batch axis (data, fsdp), the null context replicated."""
  return {
      "latents": named(mesh, "activation_batch", None, None, None, None, rules=rules),
      "context": named(mesh, "activation_batch", *([None] * (context_ndim - 1)), rules=rules),
      "null_context": replicated(mesh),
  }


def jit_train_step(train_step: Callable, mesh, state_shardings: TrainState, batch_sharding: dict,
                   rules=LOGICAL_RULES) -> Callable:
  """jit with explicit in/out shardings, the state donated; traced under the activation rules."""
  jitted = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding, replicated(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)

  def run(state: TrainState, batch: dict, rng: Array):
    with activation_rules(mesh, rules):
      return jitted(state, batch, rng)

  run.jitted = jitted
  return run
