"""Self Forcing rollout for training: the generator rolls itself out chunk by chunk (DESIGN 6).

The same rollout as `diffusion.sampler.BlockSampler` (one `lax.scan` over chunks carrying the fixed-
size semantic sparse KV cache; per chunk: read the cache, draw the initial noise - fresh or shuffled -,
denoise with the few-step DMD schedule, commit the result at `context_t`), with one change that makes
it trainable: every chunk c stops at an *exit step* e_c of the few-step schedule.

  steps 0 .. e_c - 1   predict x0, re-noise to the next t      under stop_gradient (a while_loop
                                                                 of e_c iterations, no residuals)
  step e_c             predict x0 = x_t - t v(x_t)             WITH gradients: the chunk's output
  cache commit         the clean output at `context_t`          under stop_gradient

so gradients reach the generator only through the exit steps' x0 predictions; the cache (and every
other step) is a constant for the backward pass. The exit steps `[n]` are drawn from a PRNG key that
the caller derives from the step rng with `fold_in` (replicated, so identical on all devices: every
device runs the same number of while-loop iterations). With every e_c = S - 1 the rollout is exactly
the sampler's (same keys, same arithmetic): `tests/test_block_forcing.py` pins that.

`inject` ([n, S, B, Fc, H, W, C], optional) is added to the input latent of step s of chunk c; it
exists so tests can measure which steps gradients reach.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from blockvid_jax.cache import sparse_kv
from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.sampler import BlockSampler, RolloutState
from blockvid_jax.diffusion.shuffle import shuffle_noise
from blockvid_jax.models.dit import CausalDiT
from blockvid_jax.models.spec import REMAT_POLICIES, checkpoint_policy
from blockvid_jax.typing import Array, PyTree
from blockvid_jax.errors import ConfigError



@dataclasses.dataclass(frozen=True)
class SelfForcingRollout:
  """Static rollout settings: the sampler (model, cache, few-step schedule, shuffling) + remat."""
  sampler: BlockSampler
  remat_policy: str = "none"     # jax.checkpoint of each chunk's exit-step forward (REMAT_POLICIES)

  def __post_init__(self):
    if self.sampler.sampler.solver != "dmd":
      raise ConfigError("Self Forcing rolls out with the few-step schedule: sample.solver must be "
                        f"'dmd', got {self.sampler.sampler.solver!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ConfigError(f"block_forcing.remat_policy must be one of {list(REMAT_POLICIES)}, "
                        f"got {self.remat_policy!r}")

  @property
  def num_steps(self) -> int:
    """S, denoising steps of the few-step schedule."""
    return len(self.sampler.sampler.timesteps)

  def exit_steps(self, rng: Array, num_chunks: int) -> Array:
    """One exit step per chunk, uniform on {0, .., S-1}: [n] int32 (rng must be replicated)."""
    return jax.random.randint(rng, (num_chunks,), 0, self.num_steps, jnp.int32)   # [n]

  # ------------------------------------------------------------------ model call
  def _velocity(self, params: PyTree, x: Array, t: Array, text: Array, ctx, offset) -> Array:
    t_frames = jnp.broadcast_to(t, x.shape[:2])                                     # [B, Fc]
    v, _ = CausalDiT(self.sampler.model).apply({"params": params}, x, t_frames, text, ctx, offset,
                                               method=CausalDiT.forward_chunk)
    return v                                                                         # [B, Fc, H, W, C]

  # ------------------------------------------------------------------ one chunk
  def denoise_to_exit(self, params: PyTree, noise: Array, rng: Array, exit_step: Array, text: Array,
                      ctx, offset, inject: Optional[Array] = None) -> Array:
    """Denoises one chunk from `noise` [B, Fc, H, W, C] and returns the x0 prediction of step
    `exit_step` ([] int32) - differentiable w.r.t. params (and inject[exit_step]) only through that
    step. inject: [S, B, Fc, H, W, C] or None."""
    ts, ts_next = (jnp.asarray(a) for a in self.sampler.sampler.schedule())         # [S] each
    keys = jax.random.split(rng, self.num_steps)                                     # as the sampler
    p_sg = jax.lax.stop_gradient(params)
    inj_sg = None if inject is None else jax.lax.stop_gradient(inject)

    def no_grad_step(carry):
      s, x = carry
      if inj_sg is not None:
        x = x + inj_sg[s]
      x0 = flow.x0_from_v(x, self._velocity(p_sg, x, ts[s], text, ctx, offset),
                          jnp.full(x.shape[:2], ts[s]))
      eps = jax.random.normal(keys[s], x.shape, x.dtype)
      return s + 1, flow.noisy(x0, eps, jnp.full(x.shape[:2], ts_next[s]))          # [B, Fc, H, W, C]

    _, x = jax.lax.while_loop(lambda c: c[0] < exit_step, no_grad_step,
                              (jnp.zeros((), jnp.int32), jax.lax.stop_gradient(noise)))
    x = jax.lax.stop_gradient(x)
    if inject is not None:
      x = x + jax.lax.dynamic_index_in_dim(inject, exit_step, 0, keepdims=False)
    t = jnp.full(x.shape[:2], ts[exit_step])                                         # [B, Fc]

    def exit_forward(p, x_in):
      return flow.x0_from_v(x_in, self._velocity(p, x_in, t, text, ctx, offset), t)
    if self.remat_policy != "none":
      exit_forward = jax.checkpoint(exit_forward, policy=checkpoint_policy(self.remat_policy))
    return exit_forward(params, x)                                                   # [B, Fc, H, W, C]

  def chunk_step(self, params: PyTree, state: RolloutState, text: Array, pooled: Array,
                 exit_step: Array, inject: Optional[Array] = None) -> tuple[RolloutState, Array]:
    """One chunk: (state, chunk x0 [B, Fc, H, W, C] with gradients from its exit step)."""
    sp = self.sampler
    rng, k_noise, k_shuffle, k_steps = jax.random.split(state.rng, 4)              # as the sampler
    cache = jax.lax.stop_gradient(state.cache)
    ctx, offset, cache = sparse_kv.read(sp.cache, cache, pooled)
    noise = jax.random.normal(k_noise, state.prev_noise.shape, jnp.float32)          # [B, Fc, H, W, C]
    if sp.sampler.shuffle and sp.sampler.shuffle_mix > 0:
      mixed = shuffle_noise(k_shuffle, state.prev_noise, noise, sp.sampler.shuffle_window,
                            sp.sampler.shuffle_mix)
      noise = jnp.where(state.chunk > 0, mixed, noise)
    x0 = self.denoise_to_exit(params, noise, k_steps, exit_step, text, ctx, offset, inject)
    cache = sp.commit(jax.lax.stop_gradient(params), cache, jax.lax.stop_gradient(x0), text, pooled,
                      ctx, offset)
    new = RolloutState(cache=jax.lax.stop_gradient(cache), rng=rng, prev_noise=noise,
                       chunk=state.chunk + 1)
    return new, x0

  # ------------------------------------------------------------------ the rollout
  def rollout(self, params: PyTree, texts: Array, pooled: Array, rng: Array, exit_steps: Array,
              inject: Optional[Array] = None) -> Array:
    """Rolls out n chunks from an empty cache.

    texts [n, B, T, E], pooled [n, B, E] (per-chunk prompts), rng: the rollout key (noise),
    exit_steps [n] int32, inject [n, S, B, Fc, H, W, C] or None -> chunks [n, B, Fc, H, W, C].
    """
    state = self.sampler.init_state(texts.shape[1], rng)
    xs = (texts, pooled, exit_steps) + (() if inject is None else (inject,))

    def body(st, inp):
      return self.chunk_step(params, st, inp[0], inp[1], inp[2],
                             None if inject is None else inp[3])
    _, chunks = jax.lax.scan(body, state, xs)
    return chunks                                                       # [n, B, Fc, H, W, C]


def chunks_to_video(chunks: Array) -> Array:
  """[n, B, Fc, H, W, C] -> [B, n * Fc, H, W, C]."""
  n, b, fc = chunks.shape[:3]
  return jnp.moveaxis(chunks, 0, 1).reshape(b, n * fc, *chunks.shape[3:])           # [B, F, H, W, C]


def per_chunk_prompts(context: Array, pooled: Array, num_chunks: int) -> tuple[Array, Array]:
  """Caption-chunk prompts -> one per model chunk: context [B, Nc, T, E], pooled [B, Nc, E] ->
  (texts [n, B, T, E], pooled [n, B, E]); each caption covers n / Nc consecutive chunks."""
  nc = context.shape[1]
  if num_chunks % nc:
    raise ConfigError(f"{num_chunks} rollout chunks are not a multiple of {nc} caption chunks")
  idx = jnp.arange(num_chunks) // (num_chunks // nc)                                 # [n]
  texts = jnp.moveaxis(jnp.take(context, idx, axis=1), 1, 0)                          # [n, B, T, E]
  return texts, jnp.moveaxis(jnp.take(pooled, idx, axis=1), 1, 0)                     # [n, B, E]
