"""Block rollout sampler: determinism, sharded == single device, one compilation for any length,
image conditioning, guidance, noise shuffling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax import parallel
from blockvid_jax.diffusion import engine as engine_lib
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.diffusion.shuffle import shuffle_noise, window_permutation
from blockvid_jax.generate import sharded_segment_fn
from blockvid_jax.models import CausalDiT, DiTSpec, init_params

SPEC = DiTSpec.preset("tiny")
HW = (4, 4)


def make_sampler(**kw):
  cspec = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=12, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, sink_chunks=1, local_chunks=1, bank_slots=3,
                        k_salient=4, retrieve_top_l=2)
  return BlockSampler(SPEC, cspec, SamplerSpec(chunks_per_segment=2, **kw), HW)


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _prompts(n, b=1, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k1, (n, b, 5, SPEC.text_dim)), jax.random.normal(k2, (n, b, SPEC.text_dim)))


def test_same_seed_same_latents(params):
  s = make_sampler()
  texts, pooled = _prompts(5)
  a = s.sample(params, texts, pooled, jax.random.key(1))
  b = s.sample(params, texts, pooled, jax.random.key(1))
  c = s.sample(params, texts, pooled, jax.random.key(2))
  assert a.shape == (1, 15, *HW, 16)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jnp.abs(a - c).max()) > 1e-3
  assert bool(jnp.all(jnp.isfinite(a)))


def test_sharded_rollout_equals_single_device(params):
  s = make_sampler()
  texts, pooled = _prompts(4, b=4)
  ref = s.sample(params, texts, pooled, jax.random.key(3))
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  fn, p_sh = sharded_segment_fn(s, SPEC, mesh, batch=4)
  out = s.sample(jax.device_put(params, p_sh), texts, pooled, jax.random.key(3), segment_fn=fn)
  assert float(jnp.abs(out - ref).max()) < 1e-5


def test_one_compilation_for_any_number_of_chunks(params):
  s = make_sampler(shuffle_mix=0.3)
  fn = s.make_segment_fn()
  assert s.make_segment_fn() is fn                 # cached per sampler: a second video compiles nothing
  counts = []
  for n in (4, 40, 5):
    before = engine_lib.TRACE_COUNTS["step"]
    texts, pooled = _prompts(n)
    out = s.sample(params, texts, pooled, jax.random.key(0))
    assert out.shape[1] == n * 3
    counts.append(engine_lib.TRACE_COUNTS["step"] - before)
  # The 40-chunk rollout and the 5-chunk one (its last segment padded) reuse the 4-chunk compilation.
  assert counts[0] >= 1 and counts[1] == counts[2] == 0


def test_padding_chunks_are_skipped_and_leave_the_state_alone(params):
  """An odd number of chunks pads the last 2-chunk segment; the padded chunk does not run: the state
  after 3 chunks equals the state after a segment with the third chunk alone active."""
  s = make_sampler()
  texts, pooled = _prompts(3)
  null = jnp.zeros_like(texts[0])
  fn = s.make_segment_fn()
  st = s.init_state(1, jax.random.key(4))
  st, _ = fn(params, st, texts[:2], pooled[:2], null, None, jnp.array([True, True]))
  st_pad, out = fn(params, jax.tree_util.tree_map(jnp.copy, st), texts[jnp.array([2, 2])], pooled[jnp.array([2, 2])], null,
                   None, jnp.array([True, False]))
  st_one, one = s.chunk_step(params, st, texts[2], pooled[2], null)
  np.testing.assert_allclose(np.asarray(out[0]), np.asarray(one), atol=1e-5)  # jit vs eager
  assert not np.asarray(out[1]).any()                               # skipped: zeros
  assert int(st_pad.chunk) == int(st_one.chunk) == 3
  np.testing.assert_allclose(np.asarray(st_pad.kv.local_k), np.asarray(st_one.kv.local_k), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(st_pad.kv.bank_chunk), np.asarray(st_one.kv.bank_chunk))


def test_image_conditioning_keeps_first_frame(params):
  s = make_sampler()
  texts, pooled = _prompts(3)
  first = jax.random.normal(jax.random.key(4), (1, 1, *HW, 16))
  out = s.sample(params, texts, pooled, jax.random.key(1), first_frame=first)
  np.testing.assert_array_equal(np.asarray(out[:, :1]), np.asarray(first))
  free = s.sample(params, texts, pooled, jax.random.key(1))
  assert float(jnp.abs(out[:, 1:3] - free[:, 1:3]).max()) > 1e-4


def test_guidance_one_equals_conditional_and_euler_runs(params):
  texts, pooled = _prompts(2)
  null = jnp.zeros(texts.shape[2:])  # one [T, E] unconditional context for the whole batch
  a = make_sampler(solver="euler", num_steps=3, guidance=1.0).sample(params, texts, pooled,
                                                                      jax.random.key(0))
  b = make_sampler(solver="euler", num_steps=3, guidance=3.0).sample(params, texts, pooled,
                                                                      jax.random.key(0),
                                                                      null_text=null)
  assert bool(jnp.all(jnp.isfinite(b))) and float(jnp.abs(a - b).max()) > 1e-4


def test_schedules():
  t, t_next = SamplerSpec().schedule()
  shifted = 5 * np.array([1, .75, .5, .25]) / (1 + 4 * np.array([1, .75, .5, .25]))
  np.testing.assert_allclose(t, shifted, rtol=1e-6)
  np.testing.assert_allclose(t_next, np.append(shifted[1:], 0), rtol=1e-6)
  t, _ = SamplerSpec(solver="euler", num_steps=4, shift=1.0).schedule()
  np.testing.assert_allclose(t, [1, .75, .5, .25])


def test_noise_shuffling_moves_frames_only_inside_windows():
  for seed in range(5):
    perm = np.asarray(window_permutation(jax.random.key(seed), 10, 4))
    assert sorted(perm) == list(range(10))
    assert all(i // 4 == p // 4 for i, p in enumerate(perm))
  prev = jax.random.normal(jax.random.key(0), (1, 3, 2, 2, 4))
  fresh = jax.random.normal(jax.random.key(1), (1, 3, 2, 2, 4))
  np.testing.assert_array_equal(np.asarray(shuffle_noise(jax.random.key(2), prev, fresh, 4, 0.0)),
                                np.asarray(fresh))
  full = np.asarray(shuffle_noise(jax.random.key(2), prev, fresh, 4, 1.0))
  perm = np.asarray(window_permutation(jax.random.key(2), 3, 4))
  np.testing.assert_allclose(full, np.asarray(prev)[:, perm], rtol=1e-6)


def _one_step_setup(params, **kw):
  """A 1-step Euler sampler (t: 1 -> 0, so x0 = noise - v), the first chunk's context and inputs."""
  s = make_sampler(solver="euler", num_steps=1, **kw)
  texts, pooled = _prompts(1)
  ctx, offset, _ = kvc.read(s.cache, kvc.init(s.cache, 1), pooled[0])
  noise = jax.random.normal(jax.random.key(7), (1, *s.chunk_shape))
  return s, texts[0], ctx, offset, noise


def _v(s, params, x, t_frames, text, ctx, offset):
  return CausalDiT(SPEC).apply({"params": params}, x, t_frames, text, ctx, offset,
                               method=CausalDiT.forward_chunk)[0]


def test_guidance_is_the_cfg_formula(params):
  s, text, ctx, offset, noise = _one_step_setup(params, guidance=3.0)
  null = jnp.zeros_like(text)
  assert s.sampler.schedule()[0].tolist() == [1.0]
  t1 = jnp.ones(noise.shape[:2])
  v_c = _v(s, params, noise, t1, text, ctx, offset)
  v_u = _v(s, params, noise, t1, null, ctx, offset)
  ref = noise - (v_u + 3.0 * (v_c - v_u))
  out = s.denoise(params, noise, jax.random.key(0), text, null, ctx, offset)
  assert float(jnp.abs(v_c - v_u).max()) > 1e-3          # the two branches differ
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)


def test_image_conditioning_reaches_the_model_before_the_final_clamp(params):
  s, text, ctx, offset, noise = _one_step_setup(params)
  first = jax.random.normal(jax.random.key(8), (1, 1, *HW, 16))
  out = s.denoise(params, noise, jax.random.key(0), text, text, ctx, offset, first_frame=first)
  # The model sees the clean first frame at t = 0 and the noisy rest at t = 1.
  x_in = jnp.concatenate([first, noise[:, 1:]], axis=1)
  t_in = jnp.asarray([[0.0, 1.0, 1.0]])
  ref = noise[:, 1:] - _v(s, params, x_in, t_in, text, ctx, offset)[:, 1:]
  np.testing.assert_allclose(np.asarray(out[:, 1:]), np.asarray(ref), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(out[:, :1]), np.asarray(first))
  free = s.denoise(params, noise, jax.random.key(0), text, text, ctx, offset)
  assert float(jnp.abs(out[:, 1:] - free[:, 1:]).max()) > 1e-4


def test_one_video_split_over_tensor_and_context_equals_1_device(params):
  """Batch 1 on 8 fake devices (data 2 x context 2 x tensor 2): the chunk's tokens and the cache
  slots split over `context`, heads over `tensor`; same latents as one device, and each device holds
  a quarter of every cache K/V buffer."""
  s = make_sampler()
  texts, pooled = _prompts(4)
  ref = s.sample(params, texts, pooled, jax.random.key(3))
  mesh = parallel.make_mesh({"data": 2, "context": 2, "tensor": 2})
  fn, p_sh = sharded_segment_fn(s, SPEC, mesh, batch=1)
  sharded = jax.device_put(params, p_sh)
  out = s.sample(sharded, texts, pooled, jax.random.key(3), segment_fn=fn)
  assert float(jnp.abs(out - ref).max()) < 1e-5
  state, _ = fn(sharded, s.init_state(1, jax.random.key(3)), texts[:2], pooled[:2],
                jnp.zeros_like(texts[0]), None, jnp.ones((2,), bool), None)
  kv = state.kv
  for name in ("sink_k", "local_v", "bank_k"):
    a = getattr(kv, name)
    assert all(sh.data.nbytes * 4 == a.nbytes for sh in a.addressable_shards), name
  leaves = jax.tree_util.tree_leaves(kv)
  per_device = sum(x.addressable_shards[0].data.nbytes for x in leaves)
  assert per_device <= 0.3 * sum(x.nbytes for x in leaves)


def test_sampling_mesh_presets_and_fallback():
  # Wan2.1-1.3B: 12 heads, 4680 tokens per chunk, 32 salient tokens -> the presets.
  assert parallel.sampling_mesh_shape(8, 12, (4680, 32)) == {"data": 1, "context": 2, "tensor": 4}
  assert parallel.sampling_mesh_shape(4, 12, (4680, 32)) == {"data": 1, "context": 2, "tensor": 2}
  assert parallel.sampling_mesh_shape(1, 12, (4680, 32)) == {"data": 1, "context": 1, "tensor": 1}
  # 3 heads: no tensor split of 2 or 4 -> all 4 devices on the tokens.
  assert parallel.sampling_mesh_shape(4, 3, (12, 4)) == {"data": 1, "context": 4, "tensor": 1}
  # 6 devices (no preset): the largest tensor split that divides the heads, the rest on context.
  assert parallel.sampling_mesh_shape(6, 12, (12, 4)) == {"data": 1, "context": 1, "tensor": 6}
  assert parallel.sampling_mesh_shape(6, 4, (12, 6)) == {"data": 1, "context": 3, "tensor": 2}
  # Nothing divides: the devices replicate the work (data).
  assert parallel.sampling_mesh_shape(8, 1, (3,)) == {"data": 8, "context": 1, "tensor": 1}


def test_cache_keeps_kv_in_the_compute_dtype(params):
  """A bf16-compute model's cache holds bf16 K/V (half the bytes of fp32); its video is that of the
  same model with an fp32 cache up to bf16 rounding of the stored K/V."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from blockvid_jax.cache.sources import SparseSource  # pylint: disable=import-outside-toplevel

  class Fp32Cache(BlockSampler):
    def engine(self, policy=None):
      return engine_lib.ChunkEngine(self.model, SparseSource(self.cache, dtype=jnp.float32),
                                    policy or self.policy, self.sampler.context_t)

  s16 = dataclasses.replace(make_sampler(), model=dataclasses.replace(SPEC, dtype="bfloat16"))
  s32 = Fp32Cache(s16.model, s16.cache, s16.sampler, s16.latent_hw)
  st16, st32 = s16.init_state(1, jax.random.key(0)), s32.init_state(1, jax.random.key(0))
  assert st16.kv.bank_v.dtype == jnp.bfloat16 and st32.kv.bank_v.dtype == jnp.float32
  assert st16.kv.local_k.nbytes * 2 == st32.kv.local_k.nbytes
  texts, pooled = _prompts(4)
  state, _ = s16.make_segment_fn()(params, st16, texts[:2], pooled[:2], jnp.zeros_like(texts[0]),
                                   None, jnp.ones((2,), bool), None)
  assert state.kv.sink_k.dtype == jnp.bfloat16 and bool(jnp.any(state.kv.sink_k != 0))
  out16 = s16.sample(params, texts, pooled, jax.random.key(3))
  out32 = s32.sample(params, texts, pooled, jax.random.key(3))
  err = float(jnp.abs(out16 - out32).max())
  assert err < 0.05 * float(jnp.abs(out32).max()), err
