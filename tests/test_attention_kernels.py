"""Attention implementations against the xla reference (forward and gradients, fp32 and bf16) on
the block-causal, teacher-forcing and context-with-invalid-slots masks; LSE saliency against the
probability mass; the dispatcher's choices and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax.errors import ConfigError
from blockvid_jax.models import attention_kernels as ak
from blockvid_jax.models.attention import attend, block_causal_mask, teacher_forcing_mask

B, N, H = 2, 3, 16


def _masks():
  """name -> (L, S, mask [B|1, L, S]) for the three mask families the model uses."""
  chunk = jnp.repeat(jnp.arange(3), 8)                                    # 3 chunks of 8 tokens
  causal = block_causal_mask(chunk, chunk)[None]                           # [1, 24, 24]
  tf = teacher_forcing_mask(chunk)                                         # [1, 48, 48]
  # A chunk of 8 queries against 20 context slots of which the last 7 are invalid (per sample),
  # then its own 8 tokens (block-causal inside): the sampler's [context | own] layout.
  valid = jnp.arange(20)[None] < jnp.asarray([[13], [5]])                 # [B, 20]
  ctx = jnp.concatenate([jnp.broadcast_to(valid[:, None], (B, 8, 20)),
                         jnp.ones((B, 8, 8), bool)], axis=2)               # [B, 8, 28]
  return {"block_causal": (24, 24, causal), "teacher_forcing": (48, 48, tf),
          "context_invalid_slots": (8, 28, ctx)}


def _qkv(l, s, dtype, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (B, l, N, H)).astype(dtype)
  k = jax.random.normal(ks[1], (B, s, N, H)).astype(dtype)
  v = jax.random.normal(ks[2], (B, s, N, H)).astype(dtype)
  w = jax.random.normal(ks[3], (B, l, N, H))
  return q, k, v, w


@pytest.mark.parametrize("mask_name", ["block_causal", "teacher_forcing", "context_invalid_slots"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_chunked_equals_xla_forward_and_gradients(mask_name, dtype):
  l, s, mask = _masks()[mask_name]
  q, k, v, w = _qkv(l, s, dtype)

  def loss(impl, block):
    def f(q, k, v):
      out, lse = (ak.chunked(q, k, v, mask, block) if impl == "chunked"
                  else ak.attention(q, k, v, mask, "xla"))
      return jnp.sum(w * out.astype(jnp.float32)) + 0.1 * jnp.sum(lse), (out, lse)
    return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(q, k, v)

  (_, (out_r, lse_r)), g_r = jax.jit(lambda: loss("xla", None))()
  for block in (5, 16, 512):                   # ragged last block, exact split, one block
    (_, (out_c, lse_c)), g_c = jax.jit(lambda b=block: loss("chunked", b))()
    # fp32: 1e-5. bf16: inputs and outputs are bf16 (8 bits of mantissa, relative spacing 2^-8
    # = 0.0039); both paths accumulate in fp32, so they differ by the final rounding of values of
    # magnitude <= ~3: one bf16 ulp, 3 * 2^-8 ~ 0.012; gradients (sums over up to 48 terms of such
    # values) get 4 ulps.
    atol, gtol = (1e-5, 1e-5) if dtype == jnp.float32 else (3 * 2.0 ** -8, 12 * 2.0 ** -8)
    np.testing.assert_allclose(np.asarray(out_c, np.float32), np.asarray(out_r, np.float32),
                               atol=atol)
    np.testing.assert_allclose(np.asarray(lse_c), np.asarray(lse_r), atol=1e-5 if dtype ==
                               jnp.float32 else 1e-2)
    for a, b in zip(g_c, g_r):
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=gtol)
    assert out_c.dtype == dtype and all(g.dtype == dtype for g in g_c)


def test_lse_saliency_equals_probability_mass_with_a_context():
  """DESIGN 4.1 saliency of the chunk's own keys, by hand from the probabilities, with a non-empty
  (partly invalid) context: mean over heads and QUERIES (a mean over keys would not match)."""
  l, s, mask = _masks()["context_invalid_slots"]
  q, k, v, _ = _qkv(l, s, jnp.float32, seed=1)
  qt, kt = jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2)
  logits = jnp.einsum("bnlh,bnsh->bnls", qt, kt) / np.sqrt(H)
  probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e30), axis=-1)    # [B, N, L, S]
  want = np.asarray(probs.mean(axis=(1, 2)))[:, 20:]                          # own keys [B, 8]
  for impl in ("xla", "chunked"):
    _, got = attend(q, k, v, mask, impl, saliency_start=20)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
  wrong = np.asarray(probs.mean(axis=(1, 3)))                                 # over keys: [B, L]
  assert wrong.shape == want.shape and float(np.abs(want - wrong).max()) > 1e-2


def test_dispatcher_choices_and_errors():
  q, k = (1, 4680, 12, 128), (1, 17160, 12, 128)
  assert ak.resolve("auto", q, k, jnp.bfloat16, backend="gpu") == "cudnn"
  assert ak.resolve("auto", q, k, jnp.float32, backend="gpu") == "chunked"   # cuDNN: bf16/fp16
  assert ak.resolve("auto", q, k, jnp.bfloat16, backend="tpu") == "chunked"
  assert ak.resolve("auto", q, k, jnp.bfloat16, backend="cpu") == "chunked"  # big: no [L, S] logits
  assert ak.resolve("auto", (1, 64, 2, 32), (1, 64, 2, 32), jnp.float32, backend="cpu") == "xla"
  for shape in (q, (1, 64, 2, 32)):
    for dtype in (jnp.bfloat16, jnp.float32):
      assert ak.resolve("auto", shape, shape, dtype, backend="cpu") != "cudnn"
  with pytest.raises(ConfigError, match=r"'cudnn' is not available on cpu; available: "
                                        r"\['xla', 'chunked', 'auto'\]") as e:
    ak.resolve("cudnn", q, k, jnp.bfloat16, backend="cpu")
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="must be one of"):
    ak.resolve("flash", q, k, jnp.bfloat16, backend="cpu")
  # What actually ran is recorded per call.
  x = jnp.ones((1, 8, 2, 16))
  before = dict(ak.USED)
  attend(x, x, x, None, "auto")
  attend(x, x, x, None, "chunked")
  assert ak.USED["xla"] == before["xla"] + 1 and ak.USED["chunked"] == before["chunked"] + 1


def test_structural_masks_equal_the_dense_masks_and_run_in_every_implementation():
  """GroupMask (chunk ids + a small table + key validity) == the dense masks, and chunked with
  the structural mask == xla with the dense one (the structure never becomes an [L, S] array in
  `chunked`'s residuals)."""
  from blockvid_jax.models.attention import (  # pylint: disable=import-outside-toplevel
      block_causal_groups, teacher_forcing_groups)
  chunk = jnp.repeat(jnp.arange(3), 8)
  np.testing.assert_array_equal(np.asarray(block_causal_groups(chunk, 3).dense()),
                                np.asarray(block_causal_mask(chunk, chunk)[None]))
  vis = jnp.asarray([[[0, 0, 0], [1, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0]]], bool)
  for visible in (None, vis):
    np.testing.assert_array_equal(np.asarray(teacher_forcing_groups(chunk, 3, visible).dense()),
                                  np.asarray(teacher_forcing_mask(chunk, visible)))
  # A cached context in front of a chunk: 20 slots, partly invalid, then 8 own tokens.
  own = block_causal_groups(jnp.zeros((8,), jnp.int32), 1)
  valid = jnp.arange(20)[None] < jnp.asarray([[13], [5]])
  gm = own.with_context(valid)
  dense = _masks()["context_invalid_slots"][2]
  np.testing.assert_array_equal(np.asarray(gm.dense()), np.asarray(dense))
  q, k, v, w = _qkv(8, 28, jnp.float32, seed=2)
  f = lambda m, impl: lambda q, k, v: jnp.sum(w * attend(q, k, v, m, impl)[0])
  for impl in ("chunked", "xla"):
    ga = jax.grad(f(gm, impl), argnums=(0, 1, 2))(q, k, v)
    gb = jax.grad(f(dense, "xla"), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ga, gb):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  # Saliency of the own keys from the structural mask.
  _, s_gm = attend(q, k, v, gm, "chunked", saliency_start=20)
  _, s_dense = attend(q, k, v, dense, "xla", saliency_start=20)
  np.testing.assert_allclose(np.asarray(s_gm), np.asarray(s_dense), atol=1e-6)
