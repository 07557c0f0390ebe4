"""Saliency (DESIGN 4.1) against NumPy with a non-empty context: the mean attention mass each of the
chunk's own keys receives, averaged over heads and over the chunk's QUERIES (not over keys), from
softmax rows that also cover the context keys (so a chunk's masses sum to < 1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.models.attention import SelfAttention, attend


def _np_rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def test_attend_mass_is_mean_over_heads_and_queries_with_masked_keys():
  rng = np.random.default_rng(0)
  b, l, s, n, h = 2, 3, 5, 2, 4
  q = rng.normal(size=(b, l, n, h)).astype(np.float32)
  k = rng.normal(size=(b, s, n, h)).astype(np.float32)
  v = rng.normal(size=(b, s, n, h)).astype(np.float32)
  mask = np.ones((b, l, s), bool)
  mask[0, :, 1] = False                   # an invalid context slot in batch 0
  mask[1, 0, 4] = False                   # query 0 of batch 1 does not see key 4
  ref = np.zeros((b, s))
  for bi in range(b):
    for ni in range(n):
      logits = q[bi, :, ni] @ k[bi, :, ni].T / np.sqrt(h)                     # [L, S]
      logits = np.where(mask[bi], logits, -np.inf)
      ref[bi] += _np_softmax(logits).sum(0)                                   # over queries
  ref /= n * l
  for impl in ("xla", "chunked"):                 # from the log-sum-exp, for every implementation
    _, mass = attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask), impl,
                     saliency_start=0)
    np.testing.assert_allclose(np.asarray(mass), ref, rtol=1e-5, atol=1e-7)
    assert float(mass[0, 1]) == 0.0


def test_self_attention_saliency_with_context_matches_numpy():
  rng = np.random.default_rng(1)
  b, l, s, d, n, eps = 2, 4, 6, 16, 2, 1e-6
  h = d // n
  x = rng.normal(size=(b, l, d)).astype(np.float32)
  ck = rng.normal(size=(b, s, n, h)).astype(np.float32)
  cv = rng.normal(size=(b, s, n, h)).astype(np.float32)
  # Identity rotation (RoPE is tested against NumPy in test_model), so the reference stays short.
  one, zero = jnp.ones((b, l, h // 2)), jnp.zeros((b, l, h // 2))
  ctx = {"k": jnp.asarray(ck), "v": jnp.asarray(cv), "cos": jnp.ones((b, s, h // 2)),
         "sin": jnp.zeros((b, s, h // 2))}
  mask = np.ones((1, l, s + l), bool)
  mask[0, :, 2] = False                   # one invalid context slot
  mod = SelfAttention(d, n, eps, jnp.float32, jnp.float32)
  variables = mod.init(jax.random.key(0), x, one, zero, jnp.asarray(mask), ctx)
  # Non-trivial norm scales, so a wrong normalisation cannot hide.
  p = jax.tree.map(np.asarray, nn.unbox(variables["params"]))
  p["norm_q"]["scale"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
  p["norm_k"]["scale"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
  _, _, _, sal = mod.apply({"params": p}, x, one, zero, jnp.asarray(mask), ctx,
                           return_saliency=True)
  assert sal.shape == (b, l)

  lin = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  q = _np_rms(lin("q", x), p["norm_q"]["scale"], eps).reshape(b, l, n, h)
  k = _np_rms(lin("k", x), p["norm_k"]["scale"], eps).reshape(b, l, n, h)
  k_all = np.concatenate([ck, k], axis=1)                                     # [B, S+L, N, H]
  ref = np.zeros((b, l))
  for bi in range(b):
    for ni in range(n):
      logits = q[bi, :, ni] @ k_all[bi, :, ni].T / np.sqrt(h)                 # [L, S+L]
      probs = _np_softmax(np.where(mask[0], logits, -np.inf))
      ref[bi] += probs[:, s:].sum(0)                                          # own keys, over queries
  ref /= n * l
  np.testing.assert_allclose(np.asarray(sal), ref, rtol=2e-4, atol=1e-6)
  total = np.asarray(sal).sum(-1)
  assert np.all(total < 0.999) and np.all(total > 0.0), total   # the context takes the rest
