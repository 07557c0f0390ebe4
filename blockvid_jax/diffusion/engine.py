"""The chunk engine (DESIGN 5.1): the one place where a chunk runs against a KV context.

    ChunkEngine(model, source, policy).step(params, state, inputs) -> (state, outputs)

per chunk: split the state's PRNG key (here and only here), at a prompt switch (`inputs.recache`,
for a source that `recaches`) re-run the source's local window under the new prompt, read the
context from the KV source,
prepare what every forward of the chunk shares (the context keys RoPE-rotated, the prompt's
cross-attention K/V: once per chunk, not once per denoising step), draw the chunk's initial noise (fresh, or shuffled from the previous chunk's), run the policy (the
denoising of the sampler, the exit-step denoising of Self Forcing, or one prediction on a given noisy
chunk), and commit the chunk's K/V to the source - either the K/V of the policy's own forward, or those
of a commit pass that runs the chunk's clean latent at `context_t`. The sampler, the Self Forcing
rollout, teacher-forced rollouts and causal training with per-chunk captions are `scan`s over this
step with different sources (`cache.sources`) and policies (`diffusion.policies`), so equal inputs
give equal outputs by construction.

A policy is a static, hashable object with
  context_grad                 bool: gradients flow through the context (else the source's state
                               and the commit pass are constants for the backward pass)
  initial_noise(k_noise, k_shuffle, prev_noise, chunk) -> the chunk's initial noise
  run(model, params, inputs, noise, cc: ChunkContext, rng, chunk, saliency) -> (outputs, Commit)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import struct

from blockvid_jax.models.dit import CausalDiT, ChunkKV, KVContext, PromptKV, rotate_context
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.typing import Array, PyTree

TRACE_COUNTS = {"step": 0}  # incremented each time the chunk step is traced (tests)


@struct.dataclass(kw_only=True)
class ChunkState:
  """The carry of every scan over chunks."""
  kv: PyTree          # the KV source's state (SparseKVCache)
  rng: Array          # PRNG key
  prev_noise: Array   # [B, Fc, H, W, C] initial noise of the previous chunk ([] if none is drawn)
  chunk: Array        # [] int32 index of the next chunk


@struct.dataclass
class ChunkInputs:
  """One chunk's inputs (scanned: a leading chunk axis on every field given per chunk)."""
  text: Array                            # [B, T, E] the chunk's prompt embedding
  pooled: Optional[Array] = None         # [B, E] its pooled embedding (sparse cache retrieval)
  null_text: Optional[Array] = None      # [B, T, E] unconditional context (guidance)
  first_frame: Optional[Array] = None    # [B, 1, H, W, C] image conditioning of chunk 0
  noisy: Optional[Array] = None          # [B, Fc, H, W, C] teacher forcing: the given noisy chunk
  t: Optional[Array] = None              # [B, Fc] its flow times
  clean: Optional[Array] = None          # [B, Fc, H, W, C] teacher forcing: the latent to commit
  exit_step: Optional[Array] = None      # [] int32 Self Forcing: the step that keeps gradients
  inject: Optional[Array] = None         # [S, B, Fc, H, W, C] added to each step's input (tests)
  recache: Optional[Array] = None        # [] bool prompt switch: re-run the local window first


@struct.dataclass
class Commit:
  """What the policy hands back to commit: its own forward's K/V, or a clean latent to run."""
  kv: Optional[ChunkKV] = None
  latent: Optional[Array] = None         # [B, Fc, H, W, C]


@struct.dataclass
class ChunkContext:
  """What every forward of one chunk shares, prepared once per chunk."""
  ctx: KVContext      # the context, keys RoPE-rotated (`rotate_context`)
  offset: Array       # [B] int32 RoPE frame position of the chunk's first frame
  prompt: PromptKV    # the chunk prompt's cross-attention K/V [K, B, T, N, H]


def prompt_kv(model: DiTSpec, params: PyTree, text: Array) -> PromptKV:
  """Every layer's cross-attention K/V of text [B, T, E]."""
  return CausalDiT(model).apply({"params": params}, text, method=CausalDiT.prompt_kv)


def prepare(model: DiTSpec, params: PyTree, ctx: KVContext, offset: Array, text: Array
            ) -> ChunkContext:
  """Rotates the context keys and computes the prompt's cross-attention K/V (once per chunk)."""
  return ChunkContext(ctx=rotate_context(ctx, model.head_dim, model.rope_theta, model.compute_dtype),
                      offset=offset, prompt=prompt_kv(model, params, text))


def chunk_forward(model: DiTSpec, params: PyTree, x: Array, t: Array, cc: ChunkContext,
                  saliency: bool = False) -> tuple[Array, ChunkKV]:
  """The DiT on one chunk x [B, Fc, H, W, C] at t ([B, Fc] or broadcastable) against a prepared
  context -> (flow prediction [B, Fc, H, W, C], the chunk's ChunkKV)."""
  t_frames = jnp.broadcast_to(t, x.shape[:2])                                      # [B, Fc]
  return CausalDiT(model).apply({"params": params}, x, t_frames, None, cc.ctx, cc.offset,
                                collect_saliency=saliency, prompt_kv=cc.prompt,
                                method=CausalDiT.forward_chunk)


@dataclasses.dataclass(frozen=True)
class ChunkEngine:
  """Static settings: the model, the KV source, the policy, and the commit pass's flow time."""
  model: DiTSpec
  source: Any
  policy: Any
  context_t: float = 0.0

  def init_state(self, batch: int, rng: Array, chunk_shape: Optional[tuple[int, ...]] = None
                 ) -> ChunkState:
    """An empty source; prev_noise [B, *chunk_shape] (zeros), or [] when no noise is drawn."""
    prev = jnp.zeros(() if chunk_shape is None else (batch, *chunk_shape), jnp.float32)
    return ChunkState(kv=self.source.init(batch), rng=rng, prev_noise=prev,
                      chunk=jnp.zeros((), jnp.int32))

  def step(self, params: PyTree, state: ChunkState, inputs: ChunkInputs
           ) -> tuple[ChunkState, Array]:
    """One chunk -> (the new state, the policy's outputs for it)."""
    TRACE_COUNTS["step"] += 1
    grad = self.policy.context_grad
    keep = (lambda a: a) if grad else jax.lax.stop_gradient
    rng, k_noise, k_shuffle, k_run = jax.random.split(state.rng, 4)
    kv = keep(state.kv)
    if inputs.recache is not None and getattr(self.source, "recaches", False):
      kv = jax.lax.cond(inputs.recache, lambda s: self._recache(params, s, inputs), lambda s: s, kv)
    ctx, offset, kv = self.source.read(kv, inputs.pooled)
    cc = prepare(self.model, params, ctx, offset, inputs.text)
    noise = self.policy.initial_noise(k_noise, k_shuffle, state.prev_noise, state.chunk)
    out, commit = self.policy.run(self.model, params, inputs, noise, cc, k_run, state.chunk,
                                  self.source.needs_saliency)
    chunk_kv = commit.kv
    if chunk_kv is None:  # the commit pass: the clean chunk at context_t
      t = jnp.full(commit.latent.shape[:2], self.context_t, jnp.float32)           # [B, Fc]
      _, chunk_kv = chunk_forward(self.model, keep(params), keep(commit.latent), t, keep(cc),
                                  saliency=self.source.needs_saliency)
    latent = None if commit.latent is None else keep(commit.latent)
    kv = keep(self.source.commit(kv, chunk_kv, inputs.pooled, latent))
    return ChunkState(kv=kv, rng=rng, prev_noise=noise, chunk=state.chunk + 1), out

  def _recache(self, params: PyTree, kv: PyTree, inputs: ChunkInputs) -> PyTree:
    """The source's local window re-run under this chunk's prompt at the commit pass's flow time."""
    def rerun(ctx: KVContext, offset: Array, latent: Array) -> ChunkKV:
      t = jnp.full(latent.shape[:2], self.context_t, jnp.float32)                  # [B, Fc]
      cc = prepare(self.model, params, ctx, offset, inputs.text)
      return chunk_forward(self.model, params, latent, t, cc)[1]
    return self.source.recache(kv, inputs.pooled, rerun)

  def scan(self, params: PyTree, state: ChunkState, inputs: ChunkInputs,
           active: Optional[Array] = None, **shared) -> tuple[ChunkState, Array]:
    """`lax.scan` of `step` over the leading chunk axis of `inputs`; `shared` ChunkInputs fields
    (e.g. null_text, first_frame) are the same for every chunk. `active` [n] bool (optional): chunks
    where it is False are skipped (state unchanged, zero outputs; the padding of a fixed-length
    segment costs nothing). -> (state, outputs [n, ...])."""
    def body(st, xs):
      inp, on = xs
      inp = inp.replace(**shared)
      if on is None:
        return self.step(params, st, inp)
      out = jax.eval_shape(lambda: self.step(params, st, inp)[1])
      return jax.lax.cond(on, lambda: self.step(params, st, inp),
                          lambda: (st, jnp.zeros(out.shape, out.dtype)))
    return jax.lax.scan(body, state, (inputs, active))
