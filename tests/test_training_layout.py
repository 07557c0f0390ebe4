"""Training sees what sampling sees: grouped per-chunk cross-attention, the teacher-forcing training
path == the cached rollout, and the adaLN-Zero init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.models import CausalDiT, DiTSpec, KVContext, init_params
from blockvid_jax.models.attention import CrossAttention
from blockvid_jax.training import steps

SPEC = DiTSpec.preset("tiny")           # dim 48, 4 heads, 2 layers, text_dim 32, 3 frames per chunk
HW = (4, 4)                             # 2x2 tokens per frame, 12 per chunk
T_LEN = 5


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _window(nc=3, b=2, seed=1):
  k = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(k[0], (b, nc * 3, *HW, 16))                       # [B, F, H, W, C]
  t = jax.random.uniform(k[1], (b, nc * 3))                               # [B, F]
  ctx = jax.random.normal(k[2], (b, nc, T_LEN, SPEC.text_dim))             # [B, Nc, T, E]
  clean = jax.random.normal(k[3], x.shape)
  return x, t, ctx, clean


def test_grouped_cross_attention_equals_each_group_alone():
  b, g, lg, d = 2, 3, 4, 48
  x = jax.random.normal(jax.random.key(0), (b, g * lg, d))
  text = jax.random.normal(jax.random.key(1), (b, g, T_LEN, d))
  mod = CrossAttention(d, 4, 1e-6, jnp.float32, jnp.float32)
  p = mod.init(jax.random.key(2), x, text[:, 0])
  grouped = mod.apply(p, x, text)                                          # [B, G*Lg, D]
  alone = jnp.concatenate([mod.apply(p, x[:, i * lg:(i + 1) * lg], text[:, i]) for i in range(g)],
                          axis=1)
  assert float(jnp.abs(grouped - alone).max()) < 1e-5
  assert float(jnp.abs(grouped - mod.apply(p, x, text[:, 0])).max()) > 1e-3  # prompts matter


def _chunk_by_chunk(params, x, t, ctx):
  """Independent reference: every chunk run alone with ITS caption against the K/V of the earlier
  chunks (what a per-chunk-caption causal forward means)."""
  model = CausalDiT(SPEC)
  b, nc = ctx.shape[:2]
  kv = KVContext.empty(SPEC, b)
  outs = []
  for c in range(nc):
    sl = slice(3 * c, 3 * c + 3)
    out, ckv = model.apply({"params": params}, x[:, sl], t[:, sl], ctx[:, c], kv, 3 * c,
                           method=CausalDiT.forward_chunk)
    outs.append(out)
    kv = KVContext(k=jnp.concatenate([kv.k, ckv.k], 2), v=jnp.concatenate([kv.v, ckv.v], 2),
                   positions=jnp.concatenate([kv.positions, ckv.positions], 1),
                   mask=jnp.concatenate([kv.mask, jnp.ones(ckv.positions.shape[:2], bool)], 1))
  return jnp.concatenate(outs, axis=1)


def test_per_chunk_captions_full_forward_equals_chunk_by_chunk(params):
  x, t, ctx, _ = _window()
  full = steps.predict_velocity(SPEC, params, x, t, ctx, "causal")          # one forward
  assert float(jnp.abs(full - _chunk_by_chunk(params, x, t, ctx)).max()) < 1e-5


def test_teacher_forcing_training_path_equals_cached_rollout(params):
  """The causal train step's teacher-forcing prediction == the sampler's teacher-forced rollout
  (each chunk predicted against the cache, then its clean latent committed at t = 0)."""
  x, t, ctx, clean = _window()
  b, nc = ctx.shape[:2]
  pred = steps.predict_velocity(SPEC, params, x, t, ctx, "causal", clean=clean,
                                clean_t=jnp.zeros_like(t))                 # [B, F, H, W, C]
  cspec = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=12, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, mode="full", max_chunks=nc,
                        positions="absolute")
  sampler = BlockSampler(SPEC, cspec, SamplerSpec(context_t=0.0), HW)
  per_chunk = lambda a: jnp.moveaxis(a.reshape(b, nc, 3, *a.shape[2:]), 1, 0)  # [C, B, 3, ...]
  pooled = jnp.moveaxis(ctx.mean(axis=2), 1, 0)                                # [C, B, E]
  _, roll = sampler.teacher_forced(params, kvc.init(cspec, b), per_chunk(x), per_chunk(t),
                                   per_chunk(clean), jnp.moveaxis(ctx, 1, 0), pooled)
  roll = jnp.moveaxis(roll, 0, 1).reshape(pred.shape)                           # [B, F, H, W, C]
  assert float(jnp.abs(pred - roll).max()) < 1e-5
  noisy_history = steps.predict_velocity(SPEC, params, x, t, ctx, "causal")
  assert float(jnp.abs(pred[:, 3:] - noisy_history[:, 3:]).max()) > 1e-3     # context differs


def test_train_step_layouts_differ_and_teacher_forcing_is_default():
  assert steps.StepSettings().layout == "teacher_forcing"
  assert steps.StepSettings(stage="teacher").teacher_forced is False
  with pytest.raises(ValueError, match="layout must be one of"):
    steps.StepSettings(layout="sideways")


def test_zero_init_starts_at_zero_and_learns():
  spec = DiTSpec.preset("tiny", zero_init=True)
  p = init_params(spec, jax.random.key(0))
  assert float(jnp.abs(p["blocks"]["modulation"][:, 2]).max()) == 0.0       # gate_msa row
  assert float(jnp.abs(p["blocks"]["modulation"][:, 5]).max()) == 0.0       # gate_mlp row
  assert float(jnp.abs(p["blocks"]["modulation"][:, 0]).max()) > 0.0        # shift row kept
  x, t, ctx, _ = _window(nc=1)
  out = CausalDiT(spec).apply({"params": p}, x, t, ctx[:, 0])
  np.testing.assert_array_equal(np.asarray(out), 0.0)                       # v = 0 at init
  loss = lambda q: jnp.mean((CausalDiT(spec).apply({"params": q}, x, t, ctx[:, 0]) - 1.0) ** 2)
  g = jax.grad(loss)(p)
  assert float(jnp.abs(g["head"]["kernel"]).max()) > 0.0                   # the head learns first
  wan = init_params(DiTSpec.preset("tiny"), jax.random.key(0))
  assert float(jnp.abs(wan["blocks"]["modulation"][:, 2]).max()) > 0.0     # default: Wan's init
