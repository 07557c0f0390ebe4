"""The fixed-size semantic sparse KV cache: equivalences with the full forward, retrieval, eviction,
saliency top-k and compact positions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.models import CausalDiT, ChunkKV, DiTSpec, init_params
from blockvid_jax.errors import ConfigError

SPEC = DiTSpec.preset("tiny")
HW = (4, 4)                        # latent rows/cols -> 2x2 = 4 tokens per frame
TC = SPEC.frames_per_chunk * 4     # tokens per chunk


def cache_spec(**kw):
  geo = dict(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads, head_dim=SPEC.head_dim,
             tokens_per_chunk=TC, frames_per_chunk=SPEC.frames_per_chunk, embed_dim=8)
  geo.update(kw)
  return kvc.CacheSpec(**geo)


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _data(num_chunks, b=2, seed=3):
  ks = jax.random.split(jax.random.key(seed), 5)
  f = num_chunks * SPEC.frames_per_chunk
  noisy = jax.random.normal(ks[0], (b, f, *HW, 16))
  clean = jax.random.normal(ks[1], (b, f, *HW, 16))
  t = jax.random.uniform(ks[2], (b, f))
  text = jax.random.normal(ks[3], (b, 5, SPEC.text_dim))
  pooled = jax.random.normal(ks[4], (num_chunks, b, 8))
  return noisy, clean, t, text, pooled


def _per_chunk(x, n):  # [B, n*Fc, ...] -> [n, B, Fc, ...]
  return jnp.moveaxis(x.reshape(x.shape[0], n, -1, *x.shape[2:]), 1, 0)


def _teacher_forced(params, cspec, noisy, clean, t, text, pooled, n):
  sampler = BlockSampler(SPEC, cspec, SamplerSpec(), HW)
  texts = jnp.broadcast_to(text[None], (n,) + text.shape)
  cache = kvc.init(cspec, noisy.shape[0])
  _, preds = jax.jit(sampler.teacher_forced)(params, cache, _per_chunk(noisy, n), _per_chunk(t, n),
                                             _per_chunk(clean, n), texts, pooled)
  return jnp.concatenate(list(preds), axis=1)


@pytest.mark.parametrize("positions", ["absolute", "compact"])
def test_full_mode_teacher_forced_rollout_equals_full_forward(params, positions):
  n = 4
  noisy, clean, t, text, pooled = _data(n)
  ref = CausalDiT(SPEC).apply({"params": params}, noisy, t, text, clean_latents=clean)
  got = _teacher_forced(params, cache_spec(mode="full", max_chunks=n, positions=positions),
                        noisy, clean, t, text, pooled, n)
  assert float(jnp.abs(got - ref).max()) < 1e-5


@pytest.mark.parametrize("positions", ["absolute", "compact"])
def test_lossless_bank_equals_full_mode(params, positions):
  n = 5
  noisy, clean, t, text, pooled = _data(n, seed=4)
  full = _teacher_forced(params, cache_spec(mode="full", max_chunks=n, positions=positions),
                         noisy, clean, t, text, pooled, n)
  bank = _teacher_forced(params, cache_spec(mode="sparse", sink_chunks=1, local_chunks=1,
                                            bank_slots=n, k_salient=TC, retrieve_top_l=n,
                                            positions=positions),
                         noisy, clean, t, text, pooled, n)
  assert float(jnp.abs(full - bank).max()) < 1e-5


def _fake_kv(cspec, step, b=1, seed=0, saliency=None):
  ks = jax.random.split(jax.random.key(seed), 3)
  shape = (cspec.num_layers, b, TC, cspec.num_heads, cspec.head_dim)
  f, r, c = np.meshgrid(np.arange(SPEC.frames_per_chunk), np.arange(2), np.arange(2), indexing="ij")
  pos = np.stack([f + step * SPEC.frames_per_chunk, r, c], -1).reshape(1, TC, 3).repeat(b, 0)
  sal = jax.random.uniform(ks[2], shape[:3]) if saliency is None else saliency
  return ChunkKV(k=jax.random.normal(ks[0], shape), v=jax.random.normal(ks[1], shape),
                 positions=jnp.asarray(pos, jnp.int32), saliency=sal)


def _fill(cspec, embs):
  """Writes one fake chunk per embedding [E] and returns the cache."""
  cache = kvc.init(cspec, 1)
  for i, e in enumerate(embs):
    cache = kvc.write(cspec, cache, _fake_kv(cspec, i, seed=i), jnp.asarray(e, jnp.float32)[None])
  return cache


def test_retrieval_returns_most_similar_entries_outside_local_window():
  cspec = cache_spec(sink_chunks=1, local_chunks=1, bank_slots=6, k_salient=4, retrieve_top_l=2)
  eye = np.eye(8)
  # chunk 0 -> sink; chunks 1..5 -> bank; chunk 5 is still in the local window.
  embs = [eye[0], eye[1], eye[2], eye[1] + 0.5 * eye[2], eye[3], eye[1] * 2]
  cache = _fill(cspec, embs)
  idx, ok = kvc.retrieve(cspec, cache, jnp.asarray(eye[1])[None])
  chunks = np.asarray(cache.bank_chunk)[0, np.asarray(idx)[0]]
  assert list(chunks) == [1, 3] and bool(ok.all())  # chunk 5 matches best but is local
  # A query similar to nothing in particular still returns valid entries; empty bank -> invalid.
  empty = kvc.init(cspec, 1)
  _, ok = kvc.retrieve(cspec, empty, jnp.asarray(eye[1])[None])
  assert not bool(ok.any())


def test_read_context_has_constant_size_and_masks_padding():
  cspec = cache_spec(sink_chunks=1, local_chunks=1, bank_slots=4, k_salient=4, retrieve_top_l=2)
  cache = _fill(cspec, [np.ones(8)] * 2)  # chunk 0 in sink, chunk 1 in local (+ bank)
  ctx, offset, _ = kvc.read(cspec, cache, jnp.ones((1, 8)))
  assert ctx.k.shape[2] == cspec.context_slots == 2 * TC + 2 * 4
  assert int(ctx.mask[0, 0].sum()) == 2 * TC     # both retrieved slots invalid (chunk 1 is local)
  assert int(offset[0]) == 2 * SPEC.frames_per_chunk


def test_eviction_policies_exact():
  """Each policy on a hand-built full bank (no protection issues: step far ahead)."""
  eye = np.eye(8)
  for policy, want in [("fifo", 0), ("least_retrieved", 1), ("redundant", 2)]:
    cspec = cache_spec(sink_chunks=0, local_chunks=1, bank_slots=3, k_salient=4, eviction=policy)
    cache = kvc.init(cspec, 1).replace(
        step=jnp.asarray(10, jnp.int32),
        bank_chunk=jnp.asarray([[2, 5, 7]], jnp.int32),          # slot 0 oldest
        bank_usage=jnp.asarray([[3.0, 0.5, 2.0]]),               # slot 1 least retrieved
        bank_emb=jnp.asarray([[eye[0], eye[1], eye[2] + 0.05 * eye[3]]]))  # slot 2 ~ incoming
    victim = int(kvc.choose_victim(cspec, cache, jnp.asarray(eye[2])[None])[0])
    assert victim == want, policy
  # An empty slot is always used first.
  cspec = cache_spec(sink_chunks=0, local_chunks=1, bank_slots=3, k_salient=4)
  cache = kvc.init(cspec, 1).replace(bank_chunk=jnp.asarray([[4, -1, 6]], jnp.int32))
  assert int(kvc.choose_victim(cspec, cache, jnp.ones((1, 8)))[0]) == 1
  # Entries of chunks still in the local window are protected.
  cspec = cache_spec(sink_chunks=0, local_chunks=2, bank_slots=2, k_salient=4, eviction="fifo")
  cache = kvc.init(cspec, 1).replace(step=jnp.asarray(6, jnp.int32),
                                     bank_chunk=jnp.asarray([[5, 3]], jnp.int32))
  assert int(kvc.choose_victim(cspec, cache, jnp.ones((1, 8)))[0]) == 1


def test_saliency_top_k_matches_numpy():
  cspec = cache_spec(k_salient=5, tau=1.0)
  sal = jax.random.uniform(jax.random.key(7), (SPEC.num_layers, 2, TC))
  idx, ok = kvc.select_salient(cspec, sal)
  want = np.argsort(-np.asarray(sal), axis=-1, kind="stable")[..., :5]
  np.testing.assert_array_equal(np.sort(np.asarray(idx), -1), np.sort(want, -1))
  assert bool(ok.all())
  # tau: keep the smallest prefix (by saliency) whose cumulative normalised mass reaches tau.
  cspec = cache_spec(k_salient=5, tau=0.5)
  _, ok = kvc.select_salient(cspec, sal)
  s = np.sort(np.asarray(sal), -1)[..., ::-1]
  m = s / s.sum(-1, keepdims=True)
  before = np.cumsum(m, -1) - m
  np.testing.assert_array_equal(np.asarray(ok), before[..., :5] < 0.5)


def test_bank_stores_the_salient_tokens_with_their_positions():
  cspec = cache_spec(sink_chunks=0, local_chunks=1, bank_slots=2, k_salient=3)
  sal = jnp.zeros((SPEC.num_layers, 1, TC)).at[0, 0, jnp.array([2, 7, 9])].set(1.0)
  sal = sal.at[1, 0, jnp.array([0, 1, 11])].set(1.0)
  kv = _fake_kv(cspec, 0, saliency=sal)
  cache = kvc.write(cspec, kvc.init(cspec, 1), kv, jnp.ones((1, 8)))
  slot = int(np.argmax(np.asarray(cache.bank_chunk)[0] == 0))
  for layer, toks in [(0, [2, 7, 9]), (1, [0, 1, 11])]:
    got = np.asarray(cache.bank_pos)[layer, 0, slot]
    want = np.asarray(kv.positions)[0, toks]
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    np.testing.assert_array_equal(np.sort(np.asarray(cache.bank_k)[layer, 0, slot, :, 0, 0]),
                                  np.sort(np.asarray(kv.k)[layer, 0, toks, 0, 0]))


def test_compact_positions_stay_in_trained_window_over_500_chunks():
  cspec = cache_spec(sink_chunks=1, local_chunks=2, bank_slots=4, k_salient=4, retrieve_top_l=2,
                     positions="compact")
  window = cspec.max_position_frame + 1  # frames of context + current chunk
  prompts = jax.random.normal(jax.random.key(1), (500, 1, 8))

  def body(cache, prompt):
    ctx, offset, cache = kvc.read(cspec, cache, prompt)
    kv = _fake_kv(cspec, 0)
    kv = kv.replace(positions=kv.positions.at[..., 0].add(offset[:, None]))
    cache = kvc.write(cspec, cache, kv, prompt)
    top = jnp.max(jnp.where(ctx.mask, ctx.positions[..., 0], -1))
    return cache, (top, offset[0], jnp.max(cache.local_pos[..., 0]))

  _, (ctx_max, offsets, stored) = jax.jit(lambda c: jax.lax.scan(body, c, prompts))(kvc.init(cspec, 1))
  assert int(ctx_max.max()) < int(offsets.max()) <= window - SPEC.frames_per_chunk
  assert int(offsets.max()) + SPEC.frames_per_chunk <= window
  assert int(stored[-1]) == 500 * SPEC.frames_per_chunk - 1  # storage keeps the true frame index


def test_cache_spec_errors():
  with pytest.raises(ConfigError, match="k_salient"):
    cache_spec(k_salient=TC + 1)
  with pytest.raises(ConfigError, match="cache.mode"):
    cache_spec(mode="dense")
  with pytest.raises(ConfigError, match="retrieve_top_l"):
    cache_spec(bank_slots=2, retrieve_top_l=3, k_salient=4)


def _equations(jaxpr):
  """Every equation of a (closed) jaxpr, nested sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _equations(inner)


def test_write_selects_only_the_written_rows():
  # In-place commits (issue 10): the sink / local / bank writes select between the new and the old
  # rows of the written slot only; no select over a whole buffer (which keeps two copies alive).
  cspec = cache_spec(sink_chunks=2, local_chunks=2, bank_slots=3, k_salient=4)
  cache = kvc.init(cspec, 2)
  write = lambda c, kv, p: kvc.write(cspec, c, kv, p)
  jaxpr = jax.make_jaxpr(write)(cache, _fake_kv(cspec, 3, b=2), jnp.ones((2, 8), jnp.float32))
  whole = {tuple(getattr(cache, n).shape) for n in ("sink_k", "sink_v", "local_k", "local_v",
                                                     "bank_k", "bank_v", "bank_pos", "bank_tok")}
  selects = [tuple(e.outvars[0].aval.shape) for e in _equations(jaxpr.jaxpr)
             if e.primitive.name == "select_n"]
  assert selects, "the conditional row writes are selects"
  assert not whole & set(selects), f"whole-buffer selects: {whole & set(selects)}"
  # ... and the result is the same as writing chunk by chunk (sink first, then the local ring).
  for step in range(5):
    cache = kvc.write(cspec, cache, _fake_kv(cspec, step, b=2, seed=step), jnp.ones((2, 8)))
  kv = lambda s: np.asarray(_fake_kv(cspec, s, b=2, seed=s).k)
  np.testing.assert_array_equal(np.asarray(cache.sink_k), np.concatenate([kv(0), kv(1)], axis=2))
  np.testing.assert_array_equal(np.asarray(cache.local_k), np.concatenate([kv(4), kv(3)], axis=2))
  assert np.asarray(cache.local_chunk).tolist() == [[4, 3], [4, 3]]
