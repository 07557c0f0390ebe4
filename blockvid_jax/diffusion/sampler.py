"""Block rollout sampler: one `lax.scan` over chunks with the fixed-size KV cache (DESIGN 5).

Per chunk: read the cache (sink + retrieved + local context), draw the initial noise (fresh or
shuffled from the previous chunk's), denoise with the few-step DMD schedule (predict x0, re-noise to
the next t) or multi-step Euler with classifier-free guidance — the cache is read-only meanwhile —
then the commit pass runs the clean chunk at `context_t` and writes its KV + saliency to the cache.
The sampler object holds only static settings; the changing state is a `RolloutState` pytree. The
host loop runs fixed-length scan segments (one compilation for any number of chunks) and streams
finished chunks out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from blockvid_jax.cache import CacheSpec, SparseKVCache
from blockvid_jax.cache import sparse_kv
from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.shuffle import shuffle_noise
from blockvid_jax.models.dit import CausalDiT, KVContext
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.typing import Array, PyTree
from blockvid_jax.errors import ConfigError

SOLVERS = ("dmd", "euler")
TRACE_COUNTS = {"chunk_step": 0}  # incremented each time the chunk body is traced (tests)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Static sampling settings (hashable)."""
  solver: str = "dmd"
  timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
  num_steps: int = 20
  shift: float = 5.0
  guidance: float = 1.0
  shuffle: bool = True
  shuffle_window: int = 4
  shuffle_mix: float = 0.5
  context_t: float = 0.0
  chunks_per_segment: int = 4

  def __post_init__(self):
    if self.solver not in SOLVERS:
      raise ConfigError(f"sample.solver must be one of {SOLVERS}, got {self.solver!r}")
    if self.solver == "dmd" and (not self.timesteps or
                                 any(not 0 < t <= 1000 for t in self.timesteps)):
      raise ConfigError(f"sample.timesteps must be in (0, 1000], got {self.timesteps}")
    if self.solver == "euler" and self.num_steps < 1:
      raise ConfigError(f"sample.num_steps must be >= 1, got {self.num_steps}")
    if not 0.0 <= self.shuffle_mix <= 1.0:
      raise ConfigError(f"sample.shuffle_mix must be in [0, 1], got {self.shuffle_mix}")
    if self.shuffle_window < 1:
      raise ConfigError(f"sample.shuffle_window must be >= 1, got {self.shuffle_window}")
    if self.chunks_per_segment < 1:
      raise ConfigError(f"sample.chunks_per_segment must be >= 1, got {self.chunks_per_segment}")

  @classmethod
  def from_config(cls, sample: Mapping[str, Any], context_t: float = 0.0) -> "SamplerSpec":
    d = dict(sample.to_dict() if hasattr(sample, "to_dict") else sample)
    d.pop("num_chunks", None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown sample config key(s) {unknown}")
    d["timesteps"] = tuple(float(t) for t in d.get("timesteps", cls.timesteps))
    return cls(**d, context_t=context_t)

  def schedule(self) -> tuple[np.ndarray, np.ndarray]:
    """(t, t_next) per denoising step, flow time in [0, 1] after the shift; the last t_next is 0."""
    if self.solver == "dmd":
      t = np.asarray(self.timesteps, np.float64) / 1000.0
    else:
      t = np.linspace(1.0, 0.0, self.num_steps + 1)[:-1]
    t = np.asarray(flow.shift_t(t, self.shift), np.float32)
    return t, np.append(t[1:], 0.0).astype(np.float32)


@struct.dataclass(kw_only=True)
class RolloutState:
  cache: SparseKVCache
  rng: Array          # PRNG key
  prev_noise: Array   # [B, Fc, H, W, C] initial noise of the previous chunk
  chunk: Array        # [] int32 index of the next chunk


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

  def init_state(self, batch: int, rng: Array) -> RolloutState:
    return RolloutState(cache=sparse_kv.init(self.cache, batch), rng=rng,
                        prev_noise=jnp.zeros((batch, *self.chunk_shape), jnp.float32),
                        chunk=jnp.zeros((), jnp.int32))

  # ---------------------------------------------------------------- model calls
  def _fwd(self, params, x, t, text, ctx: KVContext, offset, saliency=False):
    t_frames = jnp.broadcast_to(t, x.shape[:2])                           # [B, Fc]
    return CausalDiT(self.model).apply({"params": params}, x, t_frames, text, ctx, offset,
                                       collect_saliency=saliency, method=CausalDiT.forward_chunk)

  def _velocity(self, params, x, t_frames, text, null_text, ctx, offset):
    v = self._fwd(params, x, t_frames, text, ctx, offset)[0]
    if self.sampler.guidance != 1.0:
      v_u = self._fwd(params, x, t_frames, null_text, ctx, offset)[0]
      v = v_u + self.sampler.guidance * (v - v_u)
    return v                                                              # [B, Fc, H, W, C]

  def commit(self, params, cache: SparseKVCache, clean, text, pooled, ctx, offset) -> SparseKVCache:
    """Runs the clean chunk at `context_t` and writes its KV (+ saliency) to the cache."""
    t = jnp.full(clean.shape[:2], self.sampler.context_t, jnp.float32)
    _, kv = self._fwd(params, clean, t, text, ctx, offset, saliency=self.cache.n_bank > 0)
    return sparse_kv.write(self.cache, cache, kv, pooled)

  # ---------------------------------------------------------------- one chunk
  def denoise(self, params, noise, rng, text, null_text, ctx, offset, first_frame=None,
              use_first=True):
    """Denoises one chunk from `noise` [B, Fc, H, W, C] against a fixed context -> x0.

    first_frame [B, 1, H, W, C] (image conditioning, applied where the traced `use_first` holds):
    the first latent frame is held clean at t = 0 throughout.
    """
    ts, ts_next = self.sampler.schedule()
    keys = jax.random.split(rng, len(ts))
    if first_frame is not None:
      frame0 = (jnp.arange(noise.shape[1]) == 0)[None, :] & use_first     # [1, Fc]

    def clamp(x):
      return jnp.where(frame0[:, :, None, None, None], first_frame, x)

    def step(x, inp):
      t, t_next, key = inp
      t_frames = jnp.full(x.shape[:2], t)                                   # [B, Fc]
      if first_frame is not None:
        x = clamp(x)
        t_frames = jnp.where(frame0, 0.0, t_frames)
      v = self._velocity(params, x, t_frames, text, null_text, ctx, offset)
      if self.sampler.solver == "dmd":
        x0 = flow.x0_from_v(x, v, t_frames)
        eps = jax.random.normal(key, x.shape, x.dtype)
        x_next = jnp.where(t_next > 0, flow.noisy(x0, eps, jnp.full(x.shape[:2], t_next)), x0)
      else:
        x_next = x + (t_next - t) * v
      return x_next, None

    x, _ = jax.lax.scan(step, noise, (jnp.asarray(ts), jnp.asarray(ts_next), keys))
    return x if first_frame is None else clamp(x)                                                               # [B, Fc, H, W, C]

  def chunk_step(self, params, state: RolloutState, text, pooled, null_text, first_frame=None):
    """One chunk of the rollout -> (new state, chunk latents [B, Fc, H, W, C])."""
    TRACE_COUNTS["chunk_step"] += 1
    rng, k_noise, k_shuffle, k_steps = jax.random.split(state.rng, 4)
    ctx, offset, cache = sparse_kv.read(self.cache, state.cache, pooled)
    noise = jax.random.normal(k_noise, state.prev_noise.shape, jnp.float32)
    if self.sampler.shuffle and self.sampler.shuffle_mix > 0:
      mixed = shuffle_noise(k_shuffle, state.prev_noise, noise, self.sampler.shuffle_window,
                            self.sampler.shuffle_mix)
      noise = jnp.where(state.chunk > 0, mixed, noise)
    # Only the very first chunk is image-conditioned.
    x = self.denoise(params, noise, k_steps, text, null_text, ctx, offset, first_frame,
                     use_first=state.chunk == 0)
    cache = self.commit(params, cache, x, text, pooled, ctx, offset)
    return RolloutState(cache=cache, rng=rng, prev_noise=noise, chunk=state.chunk + 1), x

  def segment(self, params, state: RolloutState, texts, pooled, null_text, first_frame=None):
    """`lax.scan` over chunks. texts [S, B, T, E], pooled [S, B, E] -> (state, [S, B, Fc, H, W, C])."""
    def body(st, xs):
      return self.chunk_step(params, st, xs[0], xs[1], null_text, first_frame)
    return jax.lax.scan(body, state, (texts, pooled))

  def teacher_forced(self, params, cache: SparseKVCache, noisy, t, clean, texts, pooled):
    """Rollout with fixed chunks: each chunk's prediction on `noisy` [C, B, Fc, ...] at t [C, B, Fc]
    against the cache, then its `clean` latent committed. Returns (cache, predictions [C, B, Fc, ...])."""
    def body(cache, xs):
      x_t, t_c, x_clean, text, pool = xs
      ctx, offset, cache = sparse_kv.read(self.cache, cache, pool)
      v, _ = self._fwd(params, x_t, t_c, text, ctx, offset)
      return self.commit(params, cache, x_clean, text, pool, ctx, offset), v
    return jax.lax.scan(body, cache, (noisy, t, clean, texts, pooled))

  # ---------------------------------------------------------------- host loop
  def make_segment_fn(self, state_shardings=None, param_shardings=None, data_sharding=None):
    """The jitted segment, with optional NamedShardings; the rollout state is donated."""
    def fn(params, state, texts, pooled, null_text, first_frame):
      return self.segment(params, state, texts, pooled, null_text, first_frame)
    if state_shardings is None:
      return jax.jit(fn, donate_argnums=1)
    return jax.jit(fn, donate_argnums=1,
                   in_shardings=(param_shardings, state_shardings, None, None, None, None),
                   out_shardings=(state_shardings, data_sharding))

  def stream(self, params, texts, pooled, rng, null_text=None, first_frame=None,
             segment_fn: Optional[Callable] = None, state: Optional[RolloutState] = None
             ) -> Iterator[tuple[int, Array]]:
    """Yields (chunk index, latents [B, Fc, H, W, C]) for every chunk of texts [C, B, T, E].

    Runs fixed-length segments of `chunks_per_segment` (the last one padded by repeating the final
    prompt; padded chunks are dropped), so any number of chunks uses one compilation.
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
    for start in range(0, num, seg):
      idx = np.minimum(np.arange(start, start + seg), num - 1)
      state, lat = fn(params, state, texts[idx], pooled[idx], null_text, first_frame)
      for i in range(min(seg, num - start)):
        yield start + i, lat[i]

  def sample(self, params, texts, pooled, rng, **kw) -> Array:
    """All chunks concatenated: [B, C * Fc, H, W, C]."""
    chunks = [x for _, x in self.stream(params, texts, pooled, rng, **kw)]
    return jnp.concatenate(chunks, axis=1)


def state_logical_axes(state: RolloutState) -> PyTree:
  """Logical axis names of the rollout state (for NamedShardings)."""
  return RolloutState(cache=sparse_kv.logical_axes(state.cache), rng=(),
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
