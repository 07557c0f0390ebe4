"""CausalDiT: parameter counts, causality, full vs cached-chunk equivalence, teacher forcing, RoPE."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax.models import CausalDiT, DiTSpec, KVContext, abstract_params
from blockvid_jax.models import count_params, init_params
from blockvid_jax.models import rope
from blockvid_jax.models.attention import CrossAttention
from blockvid_jax.errors import ConfigError

SPEC = DiTSpec.preset("tiny")


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


def _inputs(b=2, f=9, h=4, w=4, t_len=5, seed=1):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  lat = jax.random.normal(k1, (b, f, h, w, SPEC.in_channels))
  t = jax.random.uniform(k2, (b, f))
  ctx = jax.random.normal(k3, (b, t_len, SPEC.text_dim))
  return lat, t, ctx


def test_wan_1_3b_param_count():
  assert count_params(abstract_params(DiTSpec.preset("wan_1_3b"))) == 1_418_996_800


def test_param_counts_of_presets():
  counts = {n: count_params(abstract_params(DiTSpec.preset(n))) for n in
            ("tiny", "small", "wan_1_3b", "wan_14b")}
  assert counts["tiny"] < counts["small"] < counts["wan_1_3b"] < counts["wan_14b"]
  assert counts["wan_14b"] == 14_288_491_584


def test_layers_are_stacked(params):
  assert params["blocks"]["self_attn"]["q"]["kernel"].shape == (SPEC.num_layers, 48, 48)
  assert params["blocks"]["modulation"].shape == (SPEC.num_layers, 6, 48)


def test_causality_bitwise(params):
  lat, t, ctx = _inputs()
  model = CausalDiT(SPEC)
  fwd = jax.jit(lambda l: model.apply({"params": params}, l, t, ctx))
  base = np.asarray(fwd(lat))
  fpc = SPEC.frames_per_chunk
  for c in range(2):  # perturb chunk c+1 (and later) -> chunks <= c unchanged
    pert = lat.at[:, (c + 1) * fpc:].add(3.0)
    out = np.asarray(fwd(pert))
    np.testing.assert_array_equal(out[:, :(c + 1) * fpc], base[:, :(c + 1) * fpc])
    assert np.abs(out[:, (c + 1) * fpc:] - base[:, (c + 1) * fpc:]).max() > 1e-3


def test_bidirectional_is_not_causal(params):
  lat, t, ctx = _inputs()
  model = CausalDiT(SPEC)
  a = model.apply({"params": params}, lat, t, ctx, mode="bidirectional")
  b = model.apply({"params": params}, lat.at[:, -1].add(3.0), t, ctx, mode="bidirectional")
  assert np.abs(np.asarray(a[:, 0] - b[:, 0])).max() > 1e-4


def _rollout_dense(params, lat, t, ctx, spec=SPEC):
  """Chunk-by-chunk cached forward with a dense context of all earlier chunks."""
  model = CausalDiT(spec)
  fpc = spec.frames_per_chunk
  kv = KVContext.empty(spec, lat.shape[0])
  outs = []
  step = jax.jit(lambda l, tt, kvc, off: model.apply({"params": params}, l, tt, ctx, kvc, off,
                                                     method=CausalDiT.forward_chunk))
  for c in range(lat.shape[1] // fpc):
    sl = slice(c * fpc, (c + 1) * fpc)
    out, ckv = step(lat[:, sl], t[:, sl], kv, c * fpc)
    outs.append(out)
    kv = KVContext(k=jnp.concatenate([kv.k, ckv.k], axis=2), v=jnp.concatenate([kv.v, ckv.v], axis=2),
                   positions=jnp.concatenate([kv.positions, ckv.positions], axis=1),
                   mask=jnp.concatenate([kv.mask, jnp.ones(ckv.positions.shape[:2], bool)], axis=1))
  return jnp.concatenate(outs, axis=1), kv


def test_full_forward_equals_cached_chunk_forward(params):
  lat, t, ctx = _inputs()  # 3 chunks x 3 frames
  full = CausalDiT(SPEC).apply({"params": params}, lat, t, ctx)
  cached, _ = _rollout_dense(params, lat, t, ctx)
  assert float(jnp.abs(full - cached).max()) < 1e-5


def test_padded_context_slots_are_ignored(params):
  lat, t, ctx = _inputs()
  model = CausalDiT(SPEC)
  _, kv = _rollout_dense(params, lat[:, :6], t[:, :6], ctx)
  sl = slice(6, 9)
  ref, _ = model.apply({"params": params}, lat[:, sl], t[:, sl], ctx, kv, 6,
                       method=CausalDiT.forward_chunk)
  junk = jax.random.normal(jax.random.key(9), kv.k.shape[:2] + (7,) + kv.k.shape[3:]) * 50
  padded = KVContext(k=jnp.concatenate([kv.k, junk], 2), v=jnp.concatenate([kv.v, junk], 2),
                     positions=jnp.concatenate([kv.positions, jnp.zeros((2, 7, 3), jnp.int32)], 1),
                     mask=jnp.concatenate([kv.mask, jnp.zeros((2, 7), bool)], 1))
  out, _ = model.apply({"params": params}, lat[:, sl], t[:, sl], ctx, padded, 6,
                       method=CausalDiT.forward_chunk)
  # Masked junk (scale 50) would move the output by O(1); the longer softmax reduction moves it by a
  # few float32 ulps of values ~1.
  assert float(jnp.abs(out - ref).max()) < 4e-6


def test_teacher_forcing_equals_cache_written_from_clean_chunks(params):
  """[clean | noisy] layout == rollout whose cache entries come from clean chunks at t=0."""
  lat, t, ctx = _inputs()
  clean = jax.random.normal(jax.random.key(5), lat.shape)
  model = CausalDiT(SPEC)
  tf = model.apply({"params": params}, lat, t, ctx, clean_latents=clean)
  fpc = SPEC.frames_per_chunk
  _, kv = _rollout_dense(params, clean, jnp.zeros_like(t), ctx)
  outs = []
  for c in range(3):
    sl = slice(c * fpc, (c + 1) * fpc)
    s = c * fpc * 4  # tokens per frame = 2x2 after patching
    sub = KVContext(k=kv.k[:, :, :s], v=kv.v[:, :, :s], positions=kv.positions[:, :s],
                    mask=kv.mask[:, :s])
    out, _ = model.apply({"params": params}, lat[:, sl], t[:, sl], ctx, sub, c * fpc,
                         method=CausalDiT.forward_chunk)
    outs.append(out)
  assert float(jnp.abs(tf - jnp.concatenate(outs, 1)).max()) < 1e-5


def test_grouped_cross_attention_equals_each_group_alone():
  """text [B, G, T, D]: group g of the queries attends to caption g only == G separate calls."""
  mod = CrossAttention(dim=48, num_heads=4, eps=1e-6, dtype=jnp.float32, param_dtype=jnp.float32)
  x = jax.random.normal(jax.random.key(0), (2, 12, 48))                      # [B, L, D]
  text = jax.random.normal(jax.random.key(1), (2, 3, 5, 48))                 # [B, G, T, D]
  variables = mod.init(jax.random.key(2), x, text[:, 0])
  grouped = mod.apply(variables, x, text)
  alone = jnp.concatenate([mod.apply(variables, x[:, 4 * g:4 * (g + 1)], text[:, g])
                           for g in range(3)], axis=1)
  np.testing.assert_allclose(np.asarray(grouped), np.asarray(alone), atol=1e-6)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_per_chunk_captions_in_every_layout(params, mode):
  """One caption repeated per chunk == that caption for the window (plain and [clean | noisy]);
  distinct captions reach exactly their chunks' cross-attention."""
  lat, t, ctx = _inputs()
  model = CausalDiT(SPEC)
  rep = jnp.repeat(ctx[:, None], 3, axis=1)                                  # [B, 3, T, E]
  kw = dict(clean_latents=jax.random.normal(jax.random.key(5), lat.shape)) if mode == "causal" else {}
  a = model.apply({"params": params}, lat, t, ctx, mode=mode, **kw)
  b = model.apply({"params": params}, lat, t, rep, mode=mode, **kw)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
  c = model.apply({"params": params}, lat, t, rep.at[:, 2].set(-ctx), mode=mode, **kw)
  assert float(jnp.abs(c - a)[:, 6:].max()) > 1e-4
  if mode == "causal":  # earlier chunks cannot see chunk 2 or its caption (up to float reordering)
    np.testing.assert_allclose(np.asarray(c[:, :6]), np.asarray(a[:, :6]), atol=1e-5)


def test_saliency_is_attention_mass(params):
  lat, t, ctx = _inputs()
  model = CausalDiT(SPEC)
  _, kv = model.apply({"params": params}, lat[:, :3], t[:, :3], ctx, KVContext.empty(SPEC, 2), 0,
                      collect_saliency=True, method=CausalDiT.forward_chunk)
  # A chunk attending only to itself: masses over its keys sum to 1 per (layer, batch).
  np.testing.assert_allclose(np.asarray(kv.saliency.sum(-1)), 1.0, rtol=1e-5)
  assert kv.saliency.shape == (SPEC.num_layers, 2, 3 * 4)


def _naive_rope(x, pos, head_dim, theta=10000.0):
  """x [L, N, H] real; pos [L, 3]; complex rotation of adjacent pairs, per-axis frequency tables."""
  s = head_dim // 6
  dims = [head_dim - 4 * s, 2 * s, 2 * s]
  out = np.zeros_like(x, dtype=np.float64)
  for li in range(x.shape[0]):
    for n in range(x.shape[1]):
      start = 0
      for axis, d in enumerate(dims):
        for i in range(d // 2):
          ang = pos[li, axis] * (1.0 / theta ** (2 * i / d))
          z = complex(x[li, n, start + 2 * i], x[li, n, start + 2 * i + 1]) * complex(
              np.cos(ang), np.sin(ang))
          out[li, n, start + 2 * i], out[li, n, start + 2 * i + 1] = z.real, z.imag
        start += d
  return out


@pytest.mark.parametrize("head_dim", [12, 128])
def test_rope_against_naive_numpy(head_dim):
  rng = np.random.default_rng(0)
  pos = np.stack([rng.integers(0, 40, 10), rng.integers(0, 30, 10), rng.integers(0, 50, 10)], -1)
  x = rng.standard_normal((10, 2, head_dim)).astype(np.float32)
  cos, sin = rope.angles(jnp.asarray(pos)[None], head_dim)
  got = np.asarray(rope.apply_rope(jnp.asarray(x)[None], cos, sin))[0]
  np.testing.assert_allclose(got, _naive_rope(x, pos, head_dim), atol=2e-5, rtol=1e-4)


def test_rope_split_for_wan_head_dim():
  assert rope.axis_dims(128) == (44, 42, 42)


def test_bad_config_values_give_one_line_errors():
  with pytest.raises(ConfigError, match="num_heads=5 does not divide model.dim=48"):
    DiTSpec.preset("tiny", num_heads=5)
  with pytest.raises(ConfigError, match="remat_policy"):
    DiTSpec.preset("tiny", remat_policy="sometimes")
  with pytest.raises(ConfigError, match="unknown model preset"):
    DiTSpec.preset("huge")
  with pytest.raises(ConfigError, match="unknown model config key"):
    DiTSpec.from_config({"preset": "tiny", "dimm": 3})
  with pytest.raises(ConfigError, match="positive integer"):
    DiTSpec.preset("tiny", num_layers=0)


def test_bad_inputs_give_one_line_errors(params):
  model = CausalDiT(SPEC)
  lat, t, ctx = _inputs(f=9)
  with pytest.raises(ConfigError, match="not a multiple of frames_per_chunk"):
    model.apply({"params": params}, lat[:, :8], t[:, :8], ctx)
  with pytest.raises(ConfigError, match="channels"):
    model.apply({"params": params}, lat[..., :3], t, ctx)
  with pytest.raises(ConfigError, match="t must be"):
    model.apply({"params": params}, lat, t[:, :3], ctx)
  with pytest.raises(ConfigError, match="context must be"):
    model.apply({"params": params}, lat, t, ctx[..., :5])
  with pytest.raises(ConfigError, match="patch size"):
    model.apply({"params": params}, lat[:, :, :3], t, ctx)


def test_bf16_compute_runs_and_stays_close(params):
  lat, t, ctx = _inputs()
  f32 = CausalDiT(SPEC).apply({"params": params}, lat, t, ctx)
  bf16 = CausalDiT(DiTSpec.preset("tiny", dtype="bfloat16")).apply({"params": params}, lat, t, ctx)
  assert bf16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
  # bf16 keeps 8 significant bits: unit roundoff u = 2^-8. Rounding the operands of each matmul
  # of the 2 blocks gives an output error of a few u (measured 1.2-1.3 u over 3 seeds); a wrong
  # cast (e.g. bf16 softmax statistics or norms) gives >= 10 u. The lower bound proves the bf16
  # compute dtype is in effect.
  u = 2.0 ** -8
  assert u / 8 < rel < 4 * u, rel / u


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_policies_do_not_change_numbers(params, policy):
  lat, t, ctx = _inputs()

  def loss(p, spec):
    return jnp.mean(CausalDiT(spec).apply({"params": p}, lat, t, ctx) ** 2)

  g0 = jax.grad(functools.partial(loss, spec=SPEC))(params)
  g1 = jax.grad(functools.partial(loss, spec=DiTSpec.preset("tiny", remat_policy=policy)))(params)
  diff = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), g0, g1)
  assert max(jax.tree_util.tree_leaves(diff)) < 1e-6


def _saved_residual_sizes(params, policy):
  """(count, total elements) of the arrays the backward pass keeps (the VJP closure's leaves)."""
  lat, t, ctx = _inputs()
  spec = DiTSpec.preset("tiny", remat_policy=policy)
  _, vjp = jax.vjp(lambda p: jnp.mean(CausalDiT(spec).apply({"params": p}, lat, t, ctx) ** 2),
                   params)
  leaves = jax.tree_util.tree_leaves(vjp)
  return len(leaves), sum(int(x.size) for x in leaves)


def test_remat_policies_save_fewer_residuals(params):
  sizes = {p: _saved_residual_sizes(params, p) for p in ("none", "dots", "dots_no_batch", "full")}
  n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
  elems = {p: s[1] - n_params for p, s in sizes.items()}   # activations only
  # Measured (tiny, 2 blocks): none 480k, dots 230k, dots_no_batch 192k, full 128k elements.
  assert elems["none"] > elems["dots"] > elems["dots_no_batch"] > elems["full"] > 0, elems
  assert elems["none"] > 3 * elems["full"], elems
  assert sizes["none"][0] > sizes["dots"][0] > sizes["full"][0], sizes


def test_chunked_attention_model_matches_xla_and_is_the_one_used(params):
  """The whole tiny DiT with attention_impl="chunked" (key blocks of 8: several per attention) ==
  the xla reference, and the dispatcher's record shows which implementation ran."""
  from blockvid_jax.models import attention_kernels as ak  # pylint: disable=import-outside-toplevel
  lat, t, ctx = _inputs()
  a = CausalDiT(SPEC).apply({"params": params}, lat, t, ctx)
  before = dict(ak.USED)
  old = ak.KEY_BLOCK
  ak.KEY_BLOCK = 8
  try:
    b = CausalDiT(DiTSpec.preset("tiny", attention_impl="chunked")).apply(
        {"params": params}, lat, t, ctx)
  finally:
    ak.KEY_BLOCK = old
  assert ak.USED["chunked"] > before["chunked"] and ak.USED["cudnn"] == before["cudnn"]
  assert float(jnp.abs(a - b).max()) < 1e-5
