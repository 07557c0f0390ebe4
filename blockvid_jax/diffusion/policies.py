"""Policies of the chunk engine (DESIGN 5.1): what one chunk does against its context.

  Sample         denoise from the initial noise with the few-step DMD schedule (predict x0, re-noise
                 to the next t) or multi-step Euler; classifier-free guidance as ONE batched forward
                 of [cond | uncond] (2B); image conditioning of chunk 0. Commits the result.
  ExitStep       Self Forcing (DESIGN 6): the DMD steps before the chunk's exit step under
                 stop_gradient (a while_loop, no residuals), the exit step's x0 prediction WITH
                 gradients; the context and the commit are constants for the backward pass.
  TeacherForced  one prediction on a given noisy chunk; commits the given clean latent (`clean`) or
                 the prediction forward's own K/V (`self`: the block-causal training sequence).

With every exit step = S - 1, ExitStep computes exactly what Sample does (same keys, same arithmetic).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.engine import ChunkContext, ChunkInputs, Commit, chunk_forward, prompt_kv
from blockvid_jax.diffusion.sampler_spec import SamplerSpec
from blockvid_jax.diffusion.shuffle import shuffle_noise
from blockvid_jax.errors import ConfigError
from blockvid_jax.models.spec import REMAT_POLICIES, DiTSpec, checkpoint_policy
from blockvid_jax.typing import Array, PyTree

COMMITS = ("clean", "self")


def draw_noise(sampler: SamplerSpec, k_noise: Array, k_shuffle: Array, prev_noise: Array,
               chunk: Array) -> Array:
  """The chunk's initial noise [B, Fc, H, W, C]: fresh, or (after chunk 0) mixed with the previous
  chunk's noise shuffled within frame windows."""
  noise = jax.random.normal(k_noise, prev_noise.shape, jnp.float32)
  if sampler.shuffle and sampler.shuffle_mix > 0:
    mixed = shuffle_noise(k_shuffle, prev_noise, noise, sampler.shuffle_window, sampler.shuffle_mix)
    noise = jnp.where(chunk > 0, mixed, noise)
  return noise


def _with_null(model: DiTSpec, params: PyTree, cc: ChunkContext, null_text: Array) -> ChunkContext:
  """The prepared context of a [cond | uncond] batch of 2B: the context repeated along the batch,
  the prompt K/V followed by the null prompt's."""
  twice = lambda a: jnp.concatenate([a, a], axis=1)                                 # [K, 2B, ...]
  null = prompt_kv(model, params, null_text)
  return ChunkContext(ctx=jax.tree_util.tree_map(twice, cc.ctx.per_layer()),
                      offset=jnp.concatenate([cc.offset, cc.offset]),
                      prompt=jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=1),
                                                    cc.prompt, null))


@dataclasses.dataclass(frozen=True)
class Sample:
  sampler: SamplerSpec
  context_grad: bool = False

  def initial_noise(self, k_noise, k_shuffle, prev_noise, chunk) -> Array:
    return draw_noise(self.sampler, k_noise, k_shuffle, prev_noise, chunk)

  def denoise(self, model: DiTSpec, params: PyTree, noise: Array, rng: Array, cc: ChunkContext,
              null_text=None, first_frame=None, use_first=True) -> Array:
    """Denoises one chunk from `noise` [B, Fc, H, W, C] against a fixed prepared context -> x0.

    Guidance != 1 runs [cond | uncond] as ONE forward over 2B per step (null_text [B, T, E]).
    first_frame [B, 1, H, W, C] (image conditioning, applied where the traced `use_first` holds):
    the first latent frame is held clean at t = 0 throughout.
    """
    g, b = self.sampler.guidance, noise.shape[0]
    if g != 1.0:
      cc2 = _with_null(model, params, cc, null_text)
      two = lambda a: jnp.concatenate([a, a], axis=0)

    def velocity(x, t_frames):                                                      # [B, Fc, ...]
      if g == 1.0:
        return chunk_forward(model, params, x, t_frames, cc)[0]
      v = chunk_forward(model, params, two(x), two(t_frames), cc2)[0]              # [2B, Fc, ...]
      return v[b:] + g * (v[:b] - v[b:])

    ts, ts_next = self.sampler.schedule()
    keys = jax.random.split(rng, len(ts))
    if first_frame is not None:
      frame0 = (jnp.arange(noise.shape[1]) == 0)[None, :] & use_first                # [1, Fc]

    def clamp(x):
      return jnp.where(frame0[:, :, None, None, None], first_frame, x)

    def step(x, inp):
      t, t_next, key = inp
      t_frames = jnp.full(x.shape[:2], t)                                             # [B, Fc]
      if first_frame is not None:
        x = clamp(x)
        t_frames = jnp.where(frame0, 0.0, t_frames)
      v = velocity(x, t_frames)
      if self.sampler.solver == "dmd":
        x0 = flow.x0_from_v(x, v, t_frames)
        eps = jax.random.normal(key, x.shape, x.dtype)
        x_next = jnp.where(t_next > 0, flow.noisy(x0, eps, jnp.full(x.shape[:2], t_next)), x0)
      else:
        x_next = x + (t_next - t) * v
      return x_next, None

    x, _ = jax.lax.scan(step, noise, (jnp.asarray(ts), jnp.asarray(ts_next), keys))
    return x if first_frame is None else clamp(x)                                     # [B, Fc, H, W, C]

  def run(self, model, params, inputs: ChunkInputs, noise, cc, rng, chunk, saliency):
    del saliency  # the commit pass collects it
    x = self.denoise(model, params, noise, rng, cc, inputs.null_text, inputs.first_frame,
                     use_first=chunk == 0)                       # only chunk 0 is image-conditioned
    return x, Commit(latent=x)


@dataclasses.dataclass(frozen=True)
class ExitStep:
  sampler: SamplerSpec
  remat_policy: str = "none"     # jax.checkpoint of the exit-step forward (REMAT_POLICIES)
  context_grad: bool = False

  def __post_init__(self):
    if self.sampler.solver != "dmd":
      raise ConfigError("Self Forcing rolls out with the few-step schedule: sample.solver must be "
                        f"'dmd', got {self.sampler.solver!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ConfigError(f"block_forcing.remat_policy must be one of {list(REMAT_POLICIES)}, "
                        f"got {self.remat_policy!r}")

  @property
  def num_steps(self) -> int:
    return len(self.sampler.timesteps)

  def initial_noise(self, k_noise, k_shuffle, prev_noise, chunk) -> Array:
    return draw_noise(self.sampler, k_noise, k_shuffle, prev_noise, chunk)

  def denoise_to_exit(self, model: DiTSpec, params: PyTree, noise: Array, rng: Array,
                      exit_step: Array, cc: ChunkContext, inject=None) -> Array:
    """The x0 prediction of step `exit_step` ([] int32) from `noise` [B, Fc, H, W, C],
    differentiable w.r.t. params (and inject[exit_step]) only through that step.
    inject: [S, B, Fc, H, W, C] or None."""
    ts, ts_next = (jnp.asarray(a) for a in self.sampler.schedule())                 # [S] each
    keys = jax.random.split(rng, self.num_steps)                                     # as Sample
    p_sg, cc_sg = jax.lax.stop_gradient((params, cc))
    inj_sg = None if inject is None else jax.lax.stop_gradient(inject)

    def no_grad_step(carry):
      s, x = carry
      if inj_sg is not None:
        x = x + inj_sg[s]
      t = jnp.full(x.shape[:2], ts[s])                                               # [B, Fc]
      x0 = flow.x0_from_v(x, chunk_forward(model, p_sg, x, t, cc_sg)[0], t)
      eps = jax.random.normal(keys[s], x.shape, x.dtype)
      return s + 1, flow.noisy(x0, eps, jnp.full(x.shape[:2], ts_next[s]))          # [B, Fc, H, W, C]

    _, x = jax.lax.while_loop(lambda c: c[0] < exit_step, no_grad_step,
                              (jnp.zeros((), jnp.int32), jax.lax.stop_gradient(noise)))
    x = jax.lax.stop_gradient(x)
    if inject is not None:
      x = x + jax.lax.dynamic_index_in_dim(inject, exit_step, 0, keepdims=False)
    t = jnp.full(x.shape[:2], ts[exit_step])                                         # [B, Fc]

    def exit_forward(p, c, x_in):
      return flow.x0_from_v(x_in, chunk_forward(model, p, x_in, t, c)[0], t)
    if self.remat_policy != "none":
      exit_forward = jax.checkpoint(exit_forward, policy=checkpoint_policy(self.remat_policy))
    return exit_forward(params, cc, x)                                               # [B, Fc, H, W, C]

  def run(self, model, params, inputs: ChunkInputs, noise, cc, rng, chunk, saliency):
    del chunk, saliency
    x0 = self.denoise_to_exit(model, params, noise, rng, inputs.exit_step, cc, inputs.inject)
    return x0, Commit(latent=x0)


@dataclasses.dataclass(frozen=True)
class TeacherForced:
  commit: str = "clean"          # clean: commit inputs.clean | self: the prediction's own K/V
  context_grad: bool = True

  def __post_init__(self):
    if self.commit not in COMMITS:
      raise ConfigError(f"commit must be one of {COMMITS}, got {self.commit!r}")

  def initial_noise(self, k_noise, k_shuffle, prev_noise, chunk) -> Array:
    del k_noise, k_shuffle, chunk
    return prev_noise                                                 # nothing is drawn

  def run(self, model, params, inputs: ChunkInputs, noise, cc, rng, chunk, saliency):
    del noise, rng, chunk
    own = self.commit == "self"
    v, kv = chunk_forward(model, params, inputs.noisy, inputs.t, cc, saliency=own and saliency)
    return v, (Commit(kv=kv) if own else Commit(latent=inputs.clean))
