"""Self Forcing rollout for training: the generator rolls itself out chunk by chunk (DESIGN 6).

The same rollout as `diffusion.sampler.BlockSampler` - the same chunk engine over the same sparse
cache (per chunk: read the cache, draw the initial noise - fresh or shuffled -, denoise with the
few-step DMD schedule, commit the result at `context_t`) - with the `ExitStep` policy instead of
`Sample`, the one change that makes it trainable: every chunk c stops at an *exit step* e_c.

  steps 0 .. e_c - 1   predict x0, re-noise to the next t      under stop_gradient (a while_loop
                                                                 of e_c iterations, no residuals)
  step e_c             predict x0 = x_t - t v(x_t)             WITH gradients: the chunk's output
  cache commit         the clean output at `context_t`          under stop_gradient

so gradients reach the generator only through the exit steps' x0 predictions; the cache (and every
other step) is a constant for the backward pass. The exit steps `[n]` are drawn from a PRNG key that
the caller derives from the step rng with `fold_in` (replicated, so identical on all devices: every
device runs the same number of while-loop iterations). With every e_c = S - 1 the rollout is exactly
the sampler's (same keys, same arithmetic): `tests/test_block_forcing.py` pins that.

Recipe options (public Self Forcing defaults in `block_forcing_config`): `same_step_across_chunks`
draws one exit step for all chunks of the rollout (Self Forcing's `same_step_across_blocks`), else one
per chunk; `grad_last_frames` N > 0 keeps gradients only in the chunks holding the last N latent
frames (rounded out to whole chunks): the chunks before them run as a separate scan on
stop-gradient params, so they save no residuals and cost no backward pass - same values, fewer
gradients (Self Forcing: N = 21).

`inject` ([n, S, B, Fc, H, W, C], optional) is added to the input latent of step s of chunk c; it
exists so tests can measure which steps gradients reach.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from blockvid_jax.diffusion.engine import ChunkInputs
from blockvid_jax.diffusion.policies import ExitStep
from blockvid_jax.diffusion.sampler import BlockSampler
from blockvid_jax.errors import ConfigError
from blockvid_jax.typing import Array, PyTree


@dataclasses.dataclass(frozen=True)
class SelfForcingRollout:
  """Static rollout settings: the sampler (model, cache, few-step schedule, shuffling) + remat."""
  sampler: BlockSampler
  remat_policy: str = "none"     # jax.checkpoint of each chunk's exit-step forward (REMAT_POLICIES)
  same_step_across_chunks: bool = True   # one exit step for every chunk (else one per chunk)
  grad_last_frames: int = 0      # gradients only through the chunks of the last N frames (0: all)

  def __post_init__(self):
    _ = self.policy  # validates the solver and the remat policy now, not at the first step
    if not isinstance(self.grad_last_frames, int) or self.grad_last_frames < 0:
      raise ConfigError("block_forcing.grad_last_frames must be an integer >= 0 (0: all frames), "
                        f"got {self.grad_last_frames!r}")

  @property
  def policy(self) -> ExitStep:
    return ExitStep(self.sampler.sampler, self.remat_policy)

  @property
  def num_steps(self) -> int:
    """S, denoising steps of the few-step schedule."""
    return self.policy.num_steps

  def exit_steps(self, rng: Array, num_chunks: int) -> Array:
    """The chunks' exit steps, uniform on {0, .., S-1}: [n] int32, all equal when
    `same_step_across_chunks` (rng must be replicated)."""
    if self.same_step_across_chunks:
      one = jax.random.randint(rng, (), 0, self.num_steps, jnp.int32)
      return jnp.full((num_chunks,), one)                                          # [n]
    return jax.random.randint(rng, (num_chunks,), 0, self.num_steps, jnp.int32)   # [n]

  def no_grad_chunks(self, num_chunks: int) -> int:
    """How many leading chunks of an n-chunk rollout get no gradients (`grad_last_frames`)."""
    if self.grad_last_frames == 0:
      return 0
    fpc = self.sampler.chunk_shape[0]
    return max(num_chunks - -(-self.grad_last_frames // fpc), 0)

  def rollout(self, params: PyTree, texts: Array, pooled: Array, rng: Array, exit_steps: Array,
              inject: Optional[Array] = None) -> Array:
    """Rolls out n chunks from an empty cache (a scan of the chunk engine with `ExitStep`).

    texts [n, B, T, E], pooled [n, B, E] (per-chunk prompts), rng: the rollout key (noise),
    exit_steps [n] int32, inject [n, S, B, Fc, H, W, C] or None -> chunks [n, B, Fc, H, W, C].
    """
    engine = self.sampler.engine(self.policy)
    state = engine.init_state(texts.shape[1], rng, self.sampler.chunk_shape)
    inputs = ChunkInputs(text=texts, pooled=pooled, exit_step=exit_steps, inject=inject)
    k = self.no_grad_chunks(texts.shape[0])
    if k == 0:
      return engine.scan(params, state, inputs)[1]                      # [n, B, Fc, H, W, C]
    head, tail = (jax.tree_util.tree_map(lambda a, sl=sl: a[sl], inputs)
                  for sl in (slice(None, k), slice(k, None)))
    state, first = engine.scan(jax.lax.stop_gradient(params), state, head)   # no residuals
    _, last = engine.scan(params, state, tail)
    return jnp.concatenate([jax.lax.stop_gradient(first), last], axis=0)     # [n, B, Fc, H, W, C]


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
