"""Prompt switching with recache (`cache.recache_on_switch`, LongLive's KV recache): at a switch the
local window's clean chunks are re-run under the new prompt before the chunk is denoised."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax.diffusion import engine
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.errors import ConfigError
from blockvid_jax.models import DiTSpec, init_params
from blockvid_jax.models.dit import KVContext

SPEC = DiTSpec.preset("tiny")          # 3 latent frames per chunk; 4x4 latents -> 12 tokens a chunk
HW = (4, 4)
TC = 12


def _sampler(recache=True, mode="window", **kw):
  cspec = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=TC, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, mode=mode, sink_chunks=1, local_chunks=2,
                        bank_slots=3, k_salient=4, retrieve_top_l=2, recache_on_switch=recache,
                        **kw)
  return BlockSampler(SPEC, cspec, SamplerSpec(chunks_per_segment=2), HW)


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _two_prompts():
  k1, k2 = jax.random.split(jax.random.key(5))
  return (jax.random.normal(k1, (2, 1, 5, SPEC.text_dim)),
          jax.random.normal(k2, (2, 1, SPEC.text_dim)))


def test_recache_equals_rerunning_the_window_by_hand(params):
  s = _sampler()
  texts, pooled = _two_prompts()                                   # [2, B, T, E]: prompt A, B
  null = jnp.zeros_like(texts[0])
  state = s.init_state(1, jax.random.key(1))
  latents = []
  for _ in range(3):                                               # chunks 0-2 under prompt A
    state, x = s.chunk_step(params, state, texts[0], pooled[0], null)
    latents.append(x)
  # By hand: chunk 0 is the sink; chunks 1 and 2 (local slots 0 and 1) re-run under prompt B at
  # the commit pass's flow time, chunk 1 against the sink, chunk 2 against the sink + new chunk 1.
  kv = state.kv
  ctx_k, ctx_v, ctx_pos = kv.sink_k, kv.sink_v, kv.sink_pos
  new_k, new_v = [], []
  for c in (1, 2):
    ctx = KVContext(k=ctx_k, v=ctx_v, positions=ctx_pos, mask=jnp.ones(ctx_pos.shape[:2], bool))
    cc = engine.prepare(SPEC, params, ctx, jnp.array([3 * c], jnp.int32), texts[1])
    t = jnp.full((1, 3), s.sampler.context_t)
    _, ckv = engine.chunk_forward(SPEC, params, latents[c], t, cc)
    new_k.append(ckv.k)
    new_v.append(ckv.v)
    ctx_k, ctx_v = (jnp.concatenate([ctx_k, ckv.k], 2), jnp.concatenate([ctx_v, ckv.v], 2))
    ctx_pos = jnp.concatenate([ctx_pos, ckv.positions], 1)
  by_hand = kv.replace(local_k=jnp.concatenate(new_k, 2), local_v=jnp.concatenate(new_v, 2))
  _, ref = s.chunk_step(params, state.replace(kv=by_hand), texts[1], pooled[1], null,
                        recache=jnp.array(False))
  _, out = s.chunk_step(params, state, texts[1], pooled[1], null, recache=jnp.array(True))
  _, stale = s.chunk_step(params, state, texts[1], pooled[1], null, recache=jnp.array(False))
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
  assert float(jnp.abs(stale - ref).max()) > 1e-3               # the recache changes the chunk


@pytest.mark.parametrize("mode", ["window", "sparse"])
def test_stream_recaches_exactly_at_prompt_switches(params, mode):
  """stream() finds the switches itself (A A A B B: chunk 3 only), mid-segment included."""
  s = _sampler(mode=mode)
  two, pooled2 = _two_prompts()
  pick = np.array([0, 0, 0, 1, 1])
  texts, pooled = two[pick], pooled2[pick]                         # [5, B, T, E]
  null = jnp.zeros_like(texts[0])
  streamed = [x for _, x in s.stream(params, texts, pooled, jax.random.key(1), null_text=null)]
  state = s.init_state(1, jax.random.key(1))
  for c in range(5):
    state, x = s.chunk_step(params, state, texts[c], pooled[c], null, recache=jnp.array(c == 3))
    np.testing.assert_allclose(np.asarray(streamed[c]), np.asarray(x), atol=1e-5)
  off = _sampler(recache=False, mode=mode)
  plain = [x for _, x in off.stream(params, texts, pooled, jax.random.key(1), null_text=null)]
  for c in range(3):                                               # before the switch: the same
    np.testing.assert_allclose(np.asarray(streamed[c]), np.asarray(plain[c]), atol=1e-5)
  assert float(jnp.abs(streamed[3] - plain[3]).max()) > 1e-3
  assert off.init_state(1, jax.random.key(0)).kv.local_latent.shape == (1, 0)   # off: no latents


def test_recache_needs_a_local_window():
  with pytest.raises(ConfigError, match="recache_on_switch needs a local window"):
    _sampler(mode="full")
