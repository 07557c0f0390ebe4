"""Block rollout sampler: one `lax.scan` over chunks with the fixed-size KV cache (DESIGN 5).

Each chunk is one step of the chunk engine (`diffusion.engine`) with the sparse cache as its KV
source and the `Sample` policy: read the cache (sink + retrieved + local context), draw the initial
noise (fresh or shuffled from the previous chunk's), denoise with the few-step DMD schedule or
multi-step Euler with classifier-free guidance - the cache is read-only meanwhile - then the commit
pass runs the clean chunk at `context_t` and writes its KV + saliency to the cache. The sampler object
holds only static settings; the changing state is a `ChunkState` pytree. The host loop runs
fixed-length scan segments (one compilation for any number of chunks) and streams finished chunks out.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.cache import CacheSpec, SparseKVCache
from blockvid_jax.cache import sparse_kv
from blockvid_jax.cache.sources import SparseSource
from blockvid_jax.diffusion.engine import ChunkEngine, ChunkInputs, ChunkState, prepare
from blockvid_jax.diffusion.policies import Sample, TeacherForced
from blockvid_jax.diffusion.sampler_spec import SOLVERS, SamplerSpec
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.typing import Array, PyTree
from blockvid_jax.errors import ConfigError

__all__ = ["SOLVERS", "BlockSampler", "SamplerSpec", "build_sampler", "state_logical_axes"]


@dataclasses.dataclass(frozen=True)
class BlockSampler:
  """Static, hashable rollout settings; all methods are pure functions of arrays."""
  model: DiTSpec
  cache: CacheSpec
  sampler: SamplerSpec
  latent_hw: tuple[int, int]

  @property
  def chunk_shape(self) -> tuple[int, int, int, int]:
    return (self.model.frames_per_chunk, *self.latent_hw, self.model.in_channels)

  @property
  def policy(self) -> Sample:
    return Sample(self.sampler)

  def engine(self, policy=None) -> ChunkEngine:
    """The chunk engine over this sampler's sparse cache (default policy: `Sample`); the cache
    keeps K/V in the model's compute dtype (half the bytes of fp32 for a bf16 model)."""
    source = SparseSource(self.cache, dtype=self.model.compute_dtype, latent_shape=self.chunk_shape)
    return ChunkEngine(self.model, source,
                       policy or self.policy, self.sampler.context_t)

  def init_state(self, batch: int, rng: Array) -> ChunkState:
    return self.engine().init_state(batch, rng, self.chunk_shape)

  def denoise(self, params, noise, rng, text, null_text, ctx, offset, first_frame=None,
              use_first=True) -> Array:
    """One chunk's denoising against a fixed context (`policies.Sample.denoise`)."""
    cc = prepare(self.model, params, ctx, offset, text)
    return self.policy.denoise(self.model, params, noise, rng, cc, null_text, first_frame, use_first)

  def chunk_step(self, params, state: ChunkState, text, pooled, null_text, first_frame=None,
                 recache=None):
    """One chunk of the rollout -> (new state, chunk latents [B, Fc, H, W, C]); recache [] bool:
    the prompt switched (with `cache.recache_on_switch`, the local window is re-run first)."""
    inputs = ChunkInputs(text=text, pooled=pooled, null_text=null_text, first_frame=first_frame,
                         recache=recache)
    return self.engine().step(params, state, inputs)

  def segment(self, params, state: ChunkState, texts, pooled, null_text, first_frame=None,
              active=None, recache=None):
    """`lax.scan` over chunks. texts [S, B, T, E], pooled [S, B, E], active [S] bool or None (False:
    a padding chunk, skipped), recache [S] bool or None (prompt switches) -> (state,
    [S, B, Fc, H, W, C])."""
    inputs = ChunkInputs(text=texts, pooled=pooled, recache=recache)
    return self.engine().scan(params, state, inputs, active, null_text=null_text,
                              first_frame=first_frame)

  def teacher_forced(self, params, cache: SparseKVCache, noisy, t, clean, texts, pooled):
    """Rollout with fixed chunks: each chunk's prediction on `noisy` [C, B, Fc, ...] at t [C, B, Fc]
    against the cache, then its `clean` latent committed. Returns (cache, predictions [C, B, Fc, ...])."""
    engine = self.engine(TeacherForced("clean"))
    state = ChunkState(kv=cache, rng=jax.random.key(0), prev_noise=jnp.zeros(()),
                       chunk=cache.step)
    state, v = engine.scan(params, state, ChunkInputs(text=texts, pooled=pooled, noisy=noisy, t=t,
                                                      clean=clean))
    return state.kv, v

  # ---------------------------------------------------------------- host loop
  def make_segment_fn(self, state_shardings=None, param_shardings=None, data_sharding=None):
    """The jitted segment `fn(params, state, texts, pooled, null_text, first_frame, active=None,
    recache=None)`,
    with optional NamedShardings; the rollout state is donated. Cached per sampler and shardings, so
    a second video in the same process compiles nothing."""
    flat = lambda tree: (lambda leaves, treedef: (tuple(leaves), treedef))(
        *jax.tree_util.tree_flatten(tree))
    return _segment_fn(self, flat(state_shardings), flat(param_shardings), data_sharding)

  def stream(self, params, texts, pooled, rng, null_text=None, first_frame=None,
             segment_fn: Optional[Callable] = None, state: Optional[ChunkState] = None
             ) -> Iterator[tuple[int, Array]]:
    """Yields (chunk index, latents [B, Fc, H, W, C]) for every chunk of texts [C, B, T, E].

    Runs fixed-length segments of `chunks_per_segment` (the last one padded by repeating the final
    prompt; padded chunks are skipped inside the scan), so any number of chunks uses one compilation.
    With `cache.recache_on_switch`, a chunk whose prompt embedding differs from the previous chunk's
    first re-runs the local window under its prompt (`sparse_kv.recache_local`).
    """
    num = texts.shape[0]
    if num < 1:
      raise ConfigError("num_chunks must be >= 1")
    seg = self.sampler.chunks_per_segment
    if null_text is None:
      null_text = jnp.zeros_like(texts[0])
    # The unconditional context: one [T, E] (or [1, T, E]) for the whole batch, or [B, T, E].
    null_text = jnp.broadcast_to(jnp.asarray(null_text, texts.dtype), texts.shape[1:])
    fn = segment_fn or self.make_segment_fn()
    state = self.init_state(texts.shape[1], rng) if state is None else state
    switch = np.zeros(num, bool)
    if self.cache.recache_on_switch:
      host = np.asarray(texts)
      switch[1:] = np.any(host[1:] != host[:-1], axis=tuple(range(1, host.ndim)))
    for start in range(0, num, seg):
      idx = np.minimum(np.arange(start, start + seg), num - 1)
      active = jnp.asarray(np.arange(start, start + seg) < num)                # [seg] bool
      recache = jnp.asarray(switch[idx]) if self.cache.recache_on_switch else None
      state, lat = fn(params, state, texts[idx], pooled[idx], null_text, first_frame, active,
                      recache)
      for i in range(min(seg, num - start)):
        yield start + i, lat[i]

  def sample(self, params, texts, pooled, rng, **kw) -> Array:
    """All chunks concatenated: [B, C * Fc, H, W, C]."""
    chunks = [x for _, x in self.stream(params, texts, pooled, rng, **kw)]
    return jnp.concatenate(chunks, axis=1)


@functools.lru_cache(maxsize=32)
def _segment_fn(sampler: BlockSampler, state_sh, param_sh, data_sh) -> Callable:
  """The jitted segment of `sampler`; *_sh: (leaves, treedef) of the shardings (hashable)."""
  def fn(params, state, texts, pooled, null_text, first_frame, active=None, recache=None):
    return sampler.segment(params, state, texts, pooled, null_text, first_frame, active, recache)
  if not state_sh[0]:
    return jax.jit(fn, donate_argnums=1)
  unflat = lambda pair: jax.tree_util.tree_unflatten(pair[1], pair[0])
  return jax.jit(fn, donate_argnums=1,
                 in_shardings=(unflat(param_sh), unflat(state_sh), None, None, None, None, None,
                               None),
                 out_shardings=(unflat(state_sh), data_sh))


def state_logical_axes(state: ChunkState) -> PyTree:
  """Logical axis names of the rollout state (for NamedShardings)."""
  return ChunkState(kv=sparse_kv.logical_axes(state.kv), rng=(),
                      prev_noise=("activation_batch", None, None, None, None), chunk=())


def build_sampler(config) -> tuple[DiTSpec, BlockSampler]:
  """The validated model spec and the `BlockSampler` of a full config (model, cache, sample, video)."""
  from blockvid_jax.config_lib import validate  # pylint: disable=import-outside-toplevel
  spec = validate(config)
  hw = (config.video.latent_height, config.video.latent_width)
  tokens = (spec.frames_per_chunk // spec.patch_size[0]) * (hw[0] // spec.patch_size[1]) * (
      hw[1] // spec.patch_size[2])
  cspec = CacheSpec.from_config(
      config.cache, num_layers=spec.num_layers, num_heads=spec.num_heads, head_dim=spec.head_dim,
      tokens_per_chunk=tokens, frames_per_chunk=spec.frames_per_chunk // spec.patch_size[0],
      embed_dim=spec.text_dim)
  sspec = SamplerSpec.from_config(config.sample, context_t=config.cache.context_t)
  return spec, BlockSampler(spec, cspec, sspec, hw)
