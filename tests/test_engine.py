"""The chunk engine: prepared chunk context (prompt K/V once, context keys rotated once) equals the
recomputing forward, the prompt is projected once per chunk (not per denoising step), and the
training forward (one block-causal pass, grouped per-chunk captions) equals the engine's caption
rollout, values and gradients."""

import einops
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax.cache.sources import SparseSource
from blockvid_jax.diffusion import engine
from blockvid_jax.diffusion.policies import TeacherForced
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.errors import ConfigError
from blockvid_jax.models import CausalDiT, DiTSpec, init_params
from blockvid_jax.models.dit import ChunkKV, KVContext
from blockvid_jax.training import steps

SPEC = DiTSpec.preset("tiny")          # dim 48, 4 heads, 2 layers, text_dim 32, 3 frames per chunk
HW = (4, 4)
T_LEN = 5


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _context(b=2, s=24, seed=1):
  ks = jax.random.split(jax.random.key(seed), 4)
  shape = (SPEC.num_layers, b, s, SPEC.num_heads, SPEC.head_dim)
  pos = jax.random.randint(ks[2], (b, s, 3), 0, 6)
  mask = jnp.arange(s)[None] < jnp.array([[s], [s - 7]])                   # batch 1: 7 empty slots
  return KVContext(k=jax.random.normal(ks[0], shape), v=jax.random.normal(ks[1], shape),
                   positions=pos, mask=mask)


def test_prepared_context_equals_recomputed_forward(params):
  ks = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(ks[0], (2, 3, *HW, 16))
  t = jax.random.uniform(ks[1], (2, 3))
  text = jax.random.normal(ks[2], (2, T_LEN, SPEC.text_dim))
  ctx, offset = _context(), jnp.array([6, 3], jnp.int32)
  ref, ref_kv = CausalDiT(SPEC).apply({"params": params}, x, t, text, ctx, offset,
                                      collect_saliency=True, method=CausalDiT.forward_chunk)
  cc = engine.prepare(SPEC, params, ctx, offset, text)
  assert cc.ctx.rotated and cc.prompt.k.shape == (SPEC.num_layers, 2, T_LEN, SPEC.num_heads,
                                                   SPEC.head_dim)
  out, kv = engine.chunk_forward(SPEC, params, x, t, cc, saliency=True)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-6)
  np.testing.assert_allclose(np.asarray(kv.k), np.asarray(ref_kv.k), atol=1e-6)
  np.testing.assert_allclose(np.asarray(kv.saliency), np.asarray(ref_kv.saliency), atol=1e-6)
  # The prepared prompt is what the forward uses: another prompt's K/V change the output.
  other = cc.replace(prompt=engine.prompt_kv(SPEC, params, text[::-1]))
  assert float(jnp.abs(engine.chunk_forward(SPEC, params, x, t, other)[0] - out).max()) > 1e-3


def _count_prompt_projections(jaxpr, shape) -> int:
  """dot_generals whose left operand is a [B, T, E] prompt, in a jaxpr and all its sub-jaxprs."""
  n = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general" and tuple(eqn.invars[0].aval.shape) == shape:
      n += 1
    for sub in jax_core.jaxprs_in_params(eqn.params):
      n += _count_prompt_projections(sub, shape)
  return n


@pytest.mark.parametrize("guidance,expected", [(1.0, 1), (3.0, 2)])
def test_prompt_is_projected_once_per_chunk(params, guidance, expected):
  """4 DMD steps + the commit pass: the text MLP runs once per prompt and chunk (it ran 5 times per
  prompt before the engine prepared it), guidance adds only the null prompt's."""
  cspec = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=12, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, sink_chunks=1, local_chunks=1, bank_slots=2,
                        k_salient=4, retrieve_top_l=1)
  s = BlockSampler(SPEC, cspec, SamplerSpec(guidance=guidance), HW)
  text = jnp.ones((1, T_LEN, SPEC.text_dim))
  state = s.init_state(1, jax.random.key(0))
  jaxpr = jax.make_jaxpr(s.chunk_step)(params, state, text, jnp.ones((1, SPEC.text_dim)),
                                       jnp.zeros_like(text)).jaxpr
  assert _count_prompt_projections(jaxpr, (1, T_LEN, SPEC.text_dim)) == expected


def _engine_caption_rollout(p, x, t, context):
  """The reference: the chunk engine run caption by caption, each segment predicting on its noisy
  latents against the committed K/V of the earlier ones (a `full` cache holding every segment)."""
  nc, fc = context.shape[1], x.shape[1] // context.shape[1]
  cache = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=fc * HW[0] * HW[1] // 4,
                        frames_per_chunk=fc, embed_dim=SPEC.text_dim, mode="full", max_chunks=nc)
  eng = engine.ChunkEngine(SPEC, SparseSource(cache), TeacherForced("self"))
  per_seg = lambda a: einops.rearrange(a, "b (n f) ... -> n b f ...", n=nc)    # [Nc, B, fc, ...]
  pooled = jnp.zeros((nc, x.shape[0], SPEC.text_dim))
  inputs = engine.ChunkInputs(text=jnp.moveaxis(context, 1, 0), pooled=pooled, noisy=per_seg(x),
                              t=per_seg(t))
  _, v = eng.scan(p, eng.init_state(x.shape[0], jax.random.key(0)), inputs)    # [Nc, B, fc, ...]
  return einops.rearrange(v, "n b f ... -> b (n f) ...")                       # [B, F, H, W, C]


def test_grouped_causal_forward_equals_the_engine_caption_rollout(params):
  """Per-chunk captions: the one block-causal pass with grouped cross-attention has the value and
  gradients of the training forward, the chunk engine run caption by caption with own-K/V commits."""
  ks = jax.random.split(jax.random.key(3), 4)
  x = jax.random.normal(ks[0], (2, 9, *HW, 16))
  t = jax.random.uniform(ks[1], (2, 9))
  context = jax.random.normal(ks[2], (2, 3, T_LEN, SPEC.text_dim))             # 3 distinct captions
  w = jax.random.normal(ks[3], x.shape)
  full = lambda p: jnp.sum(w * CausalDiT(SPEC).apply({"params": p}, x, t, context))
  roll = lambda p: jnp.sum(w * _engine_caption_rollout(p, x, t, context))
  (va, ga), (vb, gb) = jax.value_and_grad(full)(params), jax.value_and_grad(roll)(params)
  np.testing.assert_allclose(float(vb), float(va), rtol=1e-5)
  flat_a, flat_b = jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)
  scale = max(float(jnp.abs(g).max()) for g in flat_a)
  worst = max(float(jnp.abs(a - b).max()) for a, b in zip(flat_a, flat_b))
  assert worst < 1e-4 * scale, (worst, scale)
  # Each chunk sees its own caption: changing caption 1 moves frames 3..5 only.
  other = context.at[:, 1].set(-context[:, 1])
  va_, vb_ = (steps.predict_velocity(SPEC, params, x, t, c, "causal") for c in (context, other))
  diff = np.abs(np.asarray(va_ - vb_)).max(axis=(0, 2, 3, 4))                  # [F]
  assert diff[:3].max() == 0 and diff[3:6].min() > 1e-4, diff
  # Gradients reach the earlier segments' K/V: the first segment's latents move later outputs.
  later = lambda x0: jnp.sum(steps.predict_velocity(SPEC, params, x.at[:, :3].set(x0), t, context,
                                                    "causal")[:, 3:])
  assert float(jnp.abs(jax.grad(later)(x[:, :3])).max()) > 1e-4


def test_grouped_context_must_split_into_whole_chunks(params):
  x, t = jnp.zeros((1, 9, *HW, 16)), jnp.zeros((1, 9))
  with pytest.raises(ConfigError, match="2 captions do not split 9 latent frames"):
    CausalDiT(SPEC).apply({"params": params}, x, t, jnp.zeros((1, 2, T_LEN, SPEC.text_dim)))