"""The pure train step: 8-device sharded == 1 device, per-chunk captions, dropout, EMA, optimizer."""

import einops
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from blockvid_jax import cache as kvc
from blockvid_jax import parallel
from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.models import CausalDiT, DiTSpec, init_params
from blockvid_jax.training import optim, state as state_lib, steps

SPEC = DiTSpec.preset("tiny")          # dim 48, 4 heads, 2 layers, text_dim 32, 3 frames per chunk
T_LEN = 5


def _batch(seed, b=8, nc=2, hw=4):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"latents": jax.random.normal(k1, (b, nc * 3, hw, hw, 16)),
          "context": jax.random.normal(k2, (b, nc, T_LEN, SPEC.text_dim)),
          "null_context": jax.random.normal(k3, (T_LEN, SPEC.text_dim))}


EMA_DECAY = 0.9


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  """Compile with most XLA optimisations off (both sides of every comparison alike)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _train(mesh, num_steps=3):
  """3 steps; also returns host copies of the params before/after the first step and its EMA."""
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=0,
                                      weight_decay=0.01, grad_clip=1.0)
  settings = steps.StepSettings(text_dropout=0.3, ema_decay=EMA_DECAY)
  state, shardings = state_lib.create_train_state(SPEC, tx, jax.random.key(0), mesh)
  bsh = steps.batch_shardings(mesh, 4)
  run = steps.jit_train_step(steps.make_train_step(SPEC, tx, schedule, settings), mesh, shardings,
                             bsh)
  # (a host view of a CPU buffer would keep it alive and block donation: copy first)
  history, trace = [], {"p0": jax.device_get(jax.tree_util.tree_map(jnp.copy, state.params)),
                        "initial": state}
  for i in range(num_steps):
    batch = {k: jax.device_put(v, bsh[k]) for k, v in _batch(10 + i).items()}
    state, metrics = run(state, batch, jax.random.key(42))
    history.append(jax.device_get(metrics))
    if i == 0:
      trace["p1"], trace["ema1"] = jax.device_get(jax.tree_util.tree_map(
          jnp.copy, (state.params, state.ema_params)))
  return state, history, trace


@pytest.fixture(scope="module")
def runs():
  assert jax.device_count() == 8, "tests/conftest.py must give 8 fake CPU devices"
  mesh8 = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  mesh1 = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
  return _train(mesh8), _train(mesh1)


def _max_diff(a, b):
  diff = jax.tree_util.tree_map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()),
                                jax.device_get(a), jax.device_get(b))
  return max(jax.tree_util.tree_leaves(diff))


def test_sharded_train_step_equals_single_device(runs):
  (s8, h8, _), (s1, h1, _) = runs
  assert int(s8.step) == int(s1.step) == 3
  for m8, m1 in zip(h8, h1):
    for k in m1:
      assert abs(float(m8[k]) - float(m1[k])) <= 1e-5 * max(1.0, abs(float(m1[k]))), k
  q = s8.params["blocks"]["self_attn"]["q"]["kernel"]
  assert len(q.sharding.device_set) == 8 and q.sharding.spec == P(None, "fsdp", "tensor")
  mu = s8.opt_state[1][0].mu["blocks"]["self_attn"]["q"]["kernel"]        # AdamW moment
  assert mu.sharding.spec == q.sharding.spec                              # sharded like the param
  for tree8, tree1 in ((s8.params, s1.params), (s8.ema_params, s1.ema_params),
                       (s8.opt_state, s1.opt_state)):
    assert _max_diff(tree8, tree1) <= 1e-5
  assert h1[-1]["loss"] > 0 and abs(h1[0]["lr"] - 1e-3) < 1e-9 and h1[2]["lr"] < 1e-3
  assert {"loss", "grad_norm", "param_norm", "lr", "t_mean", "loss_chunk/0",
          "loss_chunk/1"} <= set(h1[0])


def test_state_is_donated_and_ema_follows_params(runs):
  _, _, trace = runs[1]
  assert trace["initial"].params["head"]["kernel"].is_deleted()         # donated to the first step
  assert _max_diff(trace["p0"], trace["p1"]) > 1e-4                      # the first update moved
  want = jax.tree_util.tree_map(lambda e, p: EMA_DECAY * e + (1 - EMA_DECAY) * p, trace["p0"],
                                trace["p1"])
  assert _max_diff(want, trace["ema1"]) < 1e-6


def test_state_without_ema():
  mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=1)
  shardings = state_lib.state_shardings(SPEC, tx, mesh, use_ema=False)
  assert shardings.ema_params is None
  abstract = state_lib.abstract_train_state(SPEC, tx, mesh, use_ema=False)
  assert abstract.params["head"]["kernel"].sharding == shardings.params["head"]["kernel"]


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


_predict = jax.jit(steps.predict_velocity, static_argnums=(0, 5))


def test_per_chunk_captions_rollout(params):
  b = _batch(1, b=2, nc=3)
  x, ctx = b["latents"], b["context"]
  t = jax.random.uniform(jax.random.key(2), x.shape[:2])
  same = jnp.repeat(ctx[:, :1], 3, axis=1)                                # one caption for all
  full = CausalDiT(SPEC).apply({"params": params}, x, t, ctx[:, 0])
  roll = _predict(SPEC, params, x, t, same, "causal")
  assert float(jnp.abs(full - roll).max()) < 1e-5                        # == full causal forward
  a = _predict(SPEC, params, x, t, ctx, "causal")
  other = ctx.at[:, 1].set(ctx[:, 2])                                     # change chunk 1's caption
  c = _predict(SPEC, params, x, t, other, "causal")
  np.testing.assert_array_equal(np.asarray(a[:, :3]), np.asarray(c[:, :3]))  # chunk 0 unaffected
  assert float(jnp.abs(a[:, 3:] - c[:, 3:]).max()) > 1e-4                 # chunks 1, 2 see it


def test_teacher_is_bidirectional(params):
  b = _batch(3, b=2, nc=2)
  x, ctx = b["latents"], b["context"]
  t = jnp.full(x.shape[:2], 0.5)
  a = _predict(SPEC, params, x, t, ctx, "bidirectional")
  c = _predict(SPEC, params, x.at[:, 3:].add(1.0), t, ctx, "bidirectional")
  assert float(jnp.abs(a[:, :3] - c[:, :3]).max()) > 1e-4                 # chunk 0 sees chunk 1
  # Per-chunk captions, grouped (each chunk's frames cross-attend to their own caption, as
  # `CrossAttention` is tested to do in test_model.py), never one concatenated prompt.
  grouped = CausalDiT(SPEC).apply({"params": params}, x, t, ctx, mode="bidirectional")
  concat = CausalDiT(SPEC).apply({"params": params}, x, t, ctx.reshape(2, 2 * T_LEN, -1),
                                 mode="bidirectional")
  np.testing.assert_allclose(np.asarray(a), np.asarray(grouped), atol=1e-5)
  assert float(jnp.abs(a - concat).max()) > 1e-4


def test_text_dropout():
  ctx = jnp.ones((512, 3, 4, 8))
  null = jnp.zeros((4, 8))
  np.testing.assert_array_equal(steps.dropout_context(jax.random.key(0), ctx, null, 0.0), ctx)
  out = np.asarray(steps.dropout_context(jax.random.key(0), ctx, null, 0.3))
  dropped = out[..., 0, 0] == 0                                           # [B, Nc]
  assert np.all(out.reshape(512, 3, -1).min(-1) == out.reshape(512, 3, -1).max(-1))  # whole chunks
  assert abs(dropped.mean() - 0.3) < 0.04
  assert 0 < dropped.all(axis=1).mean() < 0.1                             # per chunk, not per sample
  one = np.asarray(steps.dropout_context(jax.random.key(1), jnp.ones((4000, 4, 8)), null, 0.5))
  assert abs((one[:, 0, 0] == 0).mean() - 0.5) < 0.04                     # [B, T, E]: per sample


def test_optimizer_schedule_and_decay_mask(params):
  sched = optim.lr_schedule(1e-3, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
  assert float(sched(0)) == 0.0
  assert abs(float(sched(5)) - 5e-4) < 1e-9 and abs(float(sched(10)) - 1e-3) < 1e-9
  assert abs(float(sched(100)) - 1e-4) < 1e-9 and float(sched(50)) < 1e-3
  mask = optim.decay_mask(params)
  assert mask["blocks"]["self_attn"]["q"]["kernel"] and not mask["blocks"]["self_attn"]["q"]["bias"]
  assert not mask["blocks"]["modulation"] and not mask["head_modulation"]


def test_ema_equals_params_until_the_start_step_then_averages():
  """`ema_update` (both stages' EMA) against the recurrence written out by hand."""
  ps = [{"w": jnp.full((3,), v)} for v in (1.0, 2.0, 4.0, 8.0)]
  ema, want = ps[0], None
  for step, p in enumerate(ps[1:]):        # updates 0, 1, 2 produce params 2, 4, 8
    ema = state_lib.ema_update(ema, p, jnp.asarray(step, jnp.int32), 0.5, start_step=2)
    want = float(p["w"][0]) if step < 2 else 0.5 * want + 0.5 * float(p["w"][0])
    np.testing.assert_array_equal(np.asarray(ema["w"]), np.full((3,), want, np.float32))
  assert want == 6.0                       # 0.5 * 4 + 0.5 * 8: the average did start
  same = state_lib.ema_update(ps[0], ps[1], jnp.asarray(0, jnp.int32), 0.5)    # start 0: average
  np.testing.assert_array_equal(np.asarray(same["w"]), np.full((3,), 1.5, np.float32))


def _tf_cache(mode, n, **kw):
  return kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                       head_dim=SPEC.head_dim, tokens_per_chunk=3 * 4, frames_per_chunk=3,
                       embed_dim=SPEC.text_dim, mode=mode, sink_chunks=1, local_chunks=1,
                       max_chunks=n, positions="absolute", k_salient=4, **kw)


@pytest.mark.parametrize("mode", ["full", "window"])
def test_teacher_forcing_step_predicts_what_the_cached_rollout_does(mode):
  """The causal step's teacher-forcing path (`teacher_forcing_inputs` + `predict_velocity`, what
  its loss differentiates) == the sampler's teacher-forced rollout through a real cache (clean
  commits at t = 0, per-chunk captions), per cache mode."""
  params = init_params(SPEC, jax.random.key(0))
  n, b = 4, 2
  batch = _batch(4, b=b, nc=n, hw=4)                                  # 4 chunks, 4 captions
  x = batch["latents"]
  cspec = _tf_cache(mode, n)
  tf = steps.teacher_forcing_inputs(jax.random.key(1), x, batch, n, 3, cache=cspec)
  np.testing.assert_array_equal(np.asarray(tf["clean_latents"]), np.asarray(x))  # exactly clean
  k1, k2 = jax.random.split(jax.random.key(2))
  t = jax.random.uniform(k1, (b, 12))
  x_t = flow.noisy(x, jax.random.normal(k2, x.shape), t)
  v = steps.predict_velocity(SPEC, params, x_t, t, batch["context"], "causal", **tf)
  per_chunk = lambda a: einops.rearrange(a, "b (n f) ... -> n b f ...", n=n)
  sampler = BlockSampler(SPEC, cspec, SamplerSpec(), (4, 4))
  pooled = jnp.moveaxis(steps.chunk_pooled(batch, n), 1, 0)           # [n, B, E]
  _, preds = jax.jit(sampler.teacher_forced)(params, kvc.init(cspec, b), per_chunk(x_t),
                                             per_chunk(t), per_chunk(x),
                                             jnp.moveaxis(batch["context"], 1, 0), pooled)
  ref = einops.rearrange(preds, "n b f ... -> b (n f) ...")
  np.testing.assert_allclose(np.asarray(v), np.asarray(ref), atol=2e-5)
  full = steps.predict_velocity(SPEC, params, x_t, t, batch["context"], "causal",
                                clean_latents=x)                     # sees every earlier chunk
  gap = np.abs(np.asarray(v - full)).max(axis=(0, 2, 3, 4))           # [F]
  if mode == "window":                # chunk 3 does not see chunk 1 (sink 0 + local 2 only)
    assert gap[:9].max() == 0 and gap[9:].min() > 1e-4, gap
  else:
    assert gap.max() == 0, gap


def test_sparse_visibility_retrieves_the_most_similar_earlier_chunk():
  """Hand-built: 5 chunks, sink 1 + local 1 + top-1 retrieval; chunk 4's prompt is chunk 1's."""
  e = jnp.eye(SPEC.text_dim)
  pooled = jnp.stack([e[0], e[1], e[2], e[3], e[1] + 0.1 * e[2]])[None]   # [1, 5, E]
  vis = np.asarray(kvc.chunk_visibility(_tf_cache("sparse", 5, bank_slots=4, retrieve_top_l=1),
                                        5, pooled))[0]
  want = np.zeros((5, 5), bool)
  want[1, 0] = want[2, [0, 1]] = want[3, [0, 1, 2]] = True  # sink + local; chunk 3 retrieves 1
  want[4, [0, 3, 1]] = True                                # sink, local, retrieved chunk 1 (not 2)
  np.testing.assert_array_equal(vis, want)
  window = np.asarray(kvc.chunk_visibility(_tf_cache("window", 5), 5))[0]
  c, j = np.arange(5)[:, None], np.arange(5)[None, :]
  np.testing.assert_array_equal(window, (j < c) & ((j == 0) | (j == c - 1)))
  with pytest.raises(ValueError, match="pooled prompts"):
    kvc.chunk_visibility(_tf_cache("sparse", 5), 5)


def test_noise_top_is_drawn_below_t_max():
  from blockvid_jax.diffusion import noise  # pylint: disable=import-outside-toplevel
  t = np.asarray(noise.chunk_times(jax.random.key(0), 2000, 4, "linear", 0.2, 1.0, 0.3))
  top = t[:, -1]                                            # the ramp's last chunk = t_max
  assert top.min() >= 0.7 - 1e-6 and top.max() <= 1.0 and top.max() - top.min() > 0.25
  assert abs(float(top.mean()) - 0.85) < 0.01 and t[:, 0].max() <= 0.2
  with pytest.raises(ValueError, match="t_max_range"):
    noise.chunk_times(jax.random.key(0), 2, 4, "linear", 0.8, 1.0, 0.3)
