"""Block Forcing: Velocity Forcing == flow matching at gamma 1 / cond_mix 0, the Self Forcing rollout
(== the sampler at the last exit step; gradients only through the exit steps), DMD on an analytic
Gaussian, and the full step on 8 devices == 1 device with replicated exit steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from blockvid_jax import cache as kvc
from blockvid_jax import parallel
from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.sampler import BlockSampler, SamplerSpec
from blockvid_jax.models import DiTSpec, init_params
from blockvid_jax.training import block_forcing as bf
from blockvid_jax.training import block_forcing_config as bfc
from blockvid_jax.training import dmd, losses, optim
from blockvid_jax.training import velocity_forcing as vf
from blockvid_jax.training.self_forcing import SelfForcingRollout, chunks_to_video, per_chunk_prompts
from blockvid_jax.training import steps
from blockvid_jax.training.steps import batch_shardings, jit_train_step

SPEC = DiTSpec.preset("tiny")
HW = (4, 4)
STEPS = (1000.0, 600.0, 300.0)


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  """These tests compile large graphs (rollouts inside a train step): trade run for compile time."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def make_sampler(timesteps=STEPS):
  cspec = kvc.CacheSpec(num_layers=SPEC.num_layers, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=12, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, sink_chunks=1, local_chunks=1, bank_slots=3,
                        k_salient=4, retrieve_top_l=1)
  return BlockSampler(SPEC, cspec, SamplerSpec(timesteps=timesteps, chunks_per_segment=3), HW)


@pytest.fixture(scope="module")
def params():
  return init_params(SPEC, jax.random.key(0))


# ----------------------------------------------------------------------------- Velocity Forcing
def test_velocity_forcing_gamma1_mix0_is_plain_flow_matching():
  ks = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(ks[0], (2, 12, 4, 4, 16))
  eps = jax.random.normal(ks[1], x.shape)
  v_pred = jax.random.normal(ks[2], x.shape)
  idx = jnp.zeros((2, 4, 1), jnp.int32)
  valid = jnp.ones((2, 4, 1), bool)                                    # every chunk retrieves 0
  plain = losses.flow_matching_loss(v_pred, flow.velocity_target(x, eps))
  got = vf.loss(v_pred, x, eps, idx, valid, gamma=1.0, cond_mix=0.0)
  assert np.asarray(got) == np.asarray(plain)                          # exactly, not approximately
  np.testing.assert_array_equal(np.asarray(vf.target(x, eps, idx, valid, 1.0, 0.0)),
                                np.asarray(eps - x))
  assert float(vf.loss(v_pred, x, eps, idx, valid, gamma=1.0, cond_mix=0.5)) != float(plain)


def test_velocity_forcing_target_from_the_chunks_the_cache_retrieves():
  """Hand-built: scenes A B A B C over 5 chunks, a sparse cache with sink 1, local 1, top-2 bank
  retrieval. Chunks 0-2 retrieve nothing (everything earlier is in the sink or local window) and
  keep x; chunk 3 (B) retrieves chunk 1 (the only eligible one); chunk 4 (C) gets the mean of
  chunks 1 and 2 (its two eligible chunks)."""
  a, b, c = np.eye(3, dtype=np.float32)
  pooled = jnp.asarray(np.stack([[a, b, a + 0.1 * c, b, c]]))          # [1, 5, 3]
  cspec = kvc.CacheSpec(num_layers=1, num_heads=1, head_dim=8, tokens_per_chunk=4,
                        frames_per_chunk=3, embed_dim=3, sink_chunks=1, local_chunks=1,
                        bank_slots=4, k_salient=2, retrieve_top_l=2)
  idx, valid = kvc.retrieved_chunks(cspec, 5, pooled)
  assert np.asarray(valid).sum(axis=-1).tolist() == [[0, 0, 0, 1, 2]]
  x = jnp.arange(5, dtype=jnp.float32).reshape(1, 5, 1, 1, 1) * jnp.ones((1, 5, 2, 2, 1))
  x = jnp.repeat(x, 3, axis=1)                                          # [1, 15, 2, 2, 1] chunks 0..4
  x_cond = vf.conditioning(x, idx, valid, cond_mix=1.0)
  np.testing.assert_array_equal(np.asarray(x_cond[0, ::3, 0, 0, 0]), [0, 1, 2, 1, 1.5])
  eps = jnp.zeros_like(x)
  want = -2.0 * (0.75 * x + 0.25 * jnp.asarray([0, 1, 2, 1, 1.5]).repeat(3).reshape(1, 15, 1, 1, 1))
  np.testing.assert_allclose(np.asarray(vf.target(x, eps, idx, valid, 2.0, 0.25)),
                             np.asarray(want), rtol=1e-6)


def test_velocity_forcing_predicts_through_the_generators_cache():
  """The VF prediction of chunk c sees only the clean chunks the sparse cache would hold: 5 chunks,
  sink 1 + local 1 + top-1 retrieval, chunk 4's prompt = chunk 1's -> chunk 4 sees chunks 0, 1, 3
  and not 2; chunk 3 sees chunk 2 (its local window). One layer, so that chunk 2 cannot reach
  chunk 4 through clean chunk 3's K/V (as it does, correctly, through a deeper cache)."""
  one = dataclasses.replace(SPEC, num_layers=1)
  params = init_params(one, jax.random.key(0))
  e = jnp.eye(SPEC.text_dim)
  ks = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(ks[0], (1, 15, *HW, 16))
  batch = {"context": jax.random.normal(ks[1], (1, 5, 5, SPEC.text_dim)),
           "pooled": jnp.stack([e[0], e[1], e[2], e[3], e[1]])[None]}
  cspec = kvc.CacheSpec(num_layers=1, num_heads=SPEC.num_heads,
                        head_dim=SPEC.head_dim, tokens_per_chunk=12, frames_per_chunk=3,
                        embed_dim=SPEC.text_dim, sink_chunks=1, local_chunks=1, bank_slots=4,
                        k_salient=4, retrieve_top_l=1)
  tf, idx, valid = vf.through_cache(jax.random.key(0), x, batch, cspec, 3)
  assert int(idx[0, 4, 0]) == 1 and bool(valid[0, 4, 0]) and not bool(valid[0, 2, 0])
  t = jnp.full((1, 15), 0.7)
  x_t = jax.random.normal(ks[2], x.shape)
  v = lambda clean: steps.predict_velocity(one, params, x_t, t, batch["context"], "causal",
                                           **dict(tf, clean_latents=clean))
  moved = np.abs(np.asarray(v(x.at[:, 6:9].add(3.0)) - v(x))).max(axis=(0, 2, 3, 4))   # [F]
  assert moved[12:].max() == 0.0 and moved[:9].max() == 0.0, moved         # chunks 4, 0-2
  assert moved[9:12].min() > 1e-4, moved                                  # chunk 3


def test_pooled_from_context_matches_the_text_encoder():
  from blockvid_jax.models.text import ToyTextEncoder  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data.toy_grammar import vocabulary  # pylint: disable=import-outside-toplevel
  enc = ToyTextEncoder(text_dim=16, max_len=12, words=vocabulary())
  emb, _, pooled = enc.encode(["a red circle moves left on a navy background", ""])
  np.testing.assert_allclose(np.asarray(steps.pooled_from_context(emb)), np.asarray(pooled),
                             rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Self Forcing rollout
def test_caption_chunks_map_onto_model_chunks_and_chunks_onto_the_video():
  context = jnp.arange(2 * 2 * 3 * 1, dtype=jnp.float32).reshape(2, 2, 3, 1)   # [B, Nc, T, E]
  pooled = context[:, :, 0]                                                 # [B, Nc, E]
  texts, pool = per_chunk_prompts(context, pooled, 4)                       # 2 chunks per caption
  assert texts.shape == (4, 2, 3, 1) and pool.shape == (4, 2, 1)
  np.testing.assert_array_equal(np.asarray(texts[:, 1, 0, 0]), [6, 6, 9, 9])
  chunks = jnp.arange(4)[:, None, None, None, None, None] * jnp.ones((4, 2, 3, 1, 1, 1))
  video = chunks_to_video(chunks)                                           # [B, 12, 1, 1, 1]
  np.testing.assert_array_equal(np.asarray(video[1, :, 0, 0, 0]), np.repeat(np.arange(4), 3))


def test_rollout_equals_sampler_and_gradients_reach_only_exit_steps(params):
  sampler = make_sampler()
  rollout = SelfForcingRollout(sampler)
  n, b, s = 3, 2, len(STEPS)
  k1, k2 = jax.random.split(jax.random.key(1))
  texts = jax.random.normal(k1, (n, b, 5, SPEC.text_dim))
  pooled = jax.random.normal(k2, (n, b, SPEC.text_dim))
  rng = jax.random.key(3)

  @jax.jit
  def value_and_grad(inject, exits):
    def f(inj):
      chunks = rollout.rollout(params, texts, pooled, rng, exits, inj)
      return jnp.sum(jnp.square(chunks)), chunks
    return jax.value_and_grad(f, has_aux=True)(inject)

  inject = jnp.zeros((n, s, b, 3, *HW, 16))
  # Every chunk exits at the last step: the rollout is the sampler's, bit for bit.
  (_, chunks), grads = value_and_grad(inject, jnp.full((n,), s - 1, jnp.int32))
  state = sampler.init_state(b, rng)
  _, ref = jax.jit(sampler.segment)(params, state, texts, pooled, jnp.zeros((5, SPEC.text_dim)))
  np.testing.assert_allclose(np.asarray(chunks), np.asarray(ref), atol=1e-6)
  # Gradients reach an input injected at step e_c of chunk c, and nothing else, exactly.
  for exits in ([s - 1] * n, [1, 0, 2]):
    (_, _), grads = value_and_grad(inject, jnp.asarray(exits, jnp.int32))
    mag = np.abs(np.asarray(grads)).reshape(n, s, -1).max(-1)          # [n, S]
    hit = np.zeros((n, s), bool)
    hit[np.arange(n), exits] = True
    assert np.all(mag[~hit] == 0.0), mag
    assert np.all(mag[hit] > 1e-3), mag
  # Rematerialising the exit-step forward changes memory, not numbers.
  remat = SelfForcingRollout(sampler, remat_policy="full")
  loss = lambda ro, p: jnp.sum(jnp.square(ro.rollout(p, texts, pooled, rng,
                                                     jnp.asarray([1, 0, 2], jnp.int32))))
  g_ref = jax.jit(jax.grad(lambda p: loss(rollout, p)))(params)
  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_ref), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_same_exit_step_across_chunks_and_the_gradient_window(params):
  sampler = make_sampler()
  same, per_chunk = SelfForcingRollout(sampler), SelfForcingRollout(sampler,
                                                                    same_step_across_chunks=False)
  keys = jax.random.split(jax.random.key(5), 30)
  e_same = np.stack([np.asarray(same.exit_steps(k, 4)) for k in keys])       # [30, 4]
  e_per = np.stack([np.asarray(per_chunk.exit_steps(k, 4)) for k in keys])
  assert np.all(e_same == e_same[:, :1]) and set(e_same[:, 0]) == {0, 1, 2}
  assert np.any(e_per != e_per[:, :1]) and set(e_per.ravel()) == {0, 1, 2}
  # The window: 3 chunks of 3 frames, the last 4 frames -> chunks 1 and 2 keep gradients.
  window = SelfForcingRollout(sampler, grad_last_frames=4)
  assert [window.no_grad_chunks(n) for n in (3, 1)] == [1, 0]
  assert SelfForcingRollout(sampler, grad_last_frames=21).no_grad_chunks(10) == 3
  assert same.no_grad_chunks(10) == 0 and SelfForcingRollout(
      sampler, grad_last_frames=1).no_grad_chunks(10) == 9
  n, b, s = 3, 2, len(STEPS)
  k1, k2 = jax.random.split(jax.random.key(1))
  texts = jax.random.normal(k1, (n, b, 5, SPEC.text_dim))
  pooled = jax.random.normal(k2, (n, b, SPEC.text_dim))
  exits, rng = jnp.asarray([1, 0, 2], jnp.int32), jax.random.key(3)

  def loss(ro, p, inj, first):                        # sum of squares of chunks first..n-1
    chunks = ro.rollout(p, texts, pooled, rng, exits, inj)
    return jnp.sum(jnp.square(chunks[first:])), chunks
  inject = jnp.zeros((n, s, b, 3, *HW, 16))
  (_, c_win), (g_win, gi_win) = jax.jit(jax.value_and_grad(
      lambda p, i: loss(window, p, i, 0), argnums=(0, 1), has_aux=True))(params, inject)
  (_, c_all), (g_ref, _) = jax.jit(jax.value_and_grad(
      lambda p, i: loss(same, p, i, 1), argnums=(0, 1), has_aux=True))(params, inject)
  np.testing.assert_allclose(np.asarray(c_win), np.asarray(c_all), atol=1e-6)   # same values
  mag = np.abs(np.asarray(gi_win)).reshape(n, s, -1).max(-1)                    # [n, S]
  assert np.all(mag[0] == 0.0) and mag[1, 0] > 1e-3 and mag[2, 2] > 1e-3, mag
  # Chunk 0 contributes nothing: the window's gradient is that of the loss without chunk 0.
  for a, r in zip(jax.tree_util.tree_leaves(g_win), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-7)
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match="grad_last_frames"):
    SelfForcingRollout(sampler, grad_last_frames=-1)


# ----------------------------------------------------------------------------- DMD
MU, SIG = 2.0, 0.5


def gaussian_x0(x_t, t, mu, sig):
  """E[x | x_t] for x ~ N(mu, sig^2) per dimension and x_t = (1 - t) x + t eps (exact)."""
  t = flow.expand_t(t, x_t)
  return mu + (1 - t) * sig ** 2 / ((1 - t) ** 2 * sig ** 2 + t ** 2) * (x_t - (1 - t) * mu)


def test_dmd_matches_an_analytic_gaussian():
  """Generator x = a z + b; teacher = the exact denoiser of N(2, 0.5^2); a learned Gaussian critic."""
  b_size, d, critic_steps = 256, 2, 5
  gen = {"a": jnp.ones((d,)), "b": jnp.zeros((d,))}
  critic = {"m": jnp.full((d,), MU), "log_s": jnp.full((d,), np.log(SIG))}  # from the teacher
  gen_tx, critic_tx = optax.adam(0.03), optax.adam(0.05)
  kw = dict(t_min=0.02, t_max=0.98, shift=1.0)

  def step(carry, key):
    gen, critic, g_opt, c_opt = carry
    k_z, k_c, k_d = jax.random.split(key, 3)

    def critic_update(c, k):
      critic, c_opt = c
      k1, k2 = jax.random.split(k)
      x = gen["a"] * jax.random.normal(k1, (b_size, d)) + gen["b"]
      def loss_fn(cp):
        v = lambda x_t, t: flow.v_from_x0(x_t, gaussian_x0(x_t, t, cp["m"], jnp.exp(cp["log_s"])), t)
        return dmd.critic_loss(x, k2, v, **kw)
      grads = jax.grad(loss_fn)(critic)
      updates, c_opt = critic_tx.update(grads, c_opt, critic)
      return (optax.apply_updates(critic, updates), c_opt), None
    (critic, c_opt), _ = jax.lax.scan(critic_update, (critic, c_opt),
                                      jax.random.split(k_c, critic_steps))
    z = jax.random.normal(k_z, (b_size, d))

    def gen_loss(g):
      fake = lambda x_t, t: gaussian_x0(x_t, t, critic["m"], jnp.exp(critic["log_s"]))
      real = lambda x_t, t: gaussian_x0(x_t, t, MU, SIG)
      return dmd.generator_loss(g["a"] * z + g["b"], k_d, real, fake, **kw)[0]
    grads = jax.grad(gen_loss)(gen)
    updates, g_opt = gen_tx.update(grads, g_opt, gen)
    return (optax.apply_updates(gen, updates), critic, g_opt, c_opt), None

  init = (gen, critic, gen_tx.init(gen), critic_tx.init(critic))
  (gen, _, _, _), _ = jax.jit(lambda k: jax.lax.scan(step, init, jax.random.split(k, 300)))(
      jax.random.key(0))
  samples = gen["a"] * jax.random.normal(jax.random.key(1), (100_000, d)) + gen["b"]
  np.testing.assert_allclose(np.asarray(samples.mean(0)), MU, rtol=0.1)
  np.testing.assert_allclose(np.asarray(samples.std(0)), SIG, rtol=0.1)


def test_dmd_direction_and_surrogate_gradient():
  ks = jax.random.split(jax.random.key(0), 3)
  x, real, fake = (jax.random.normal(k, (3, 4, 5)) for k in ks)
  grad = dmd.dmd_direction(x, real, fake)
  norm = np.abs(np.asarray(x - real)).mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(fake - real) / norm, rtol=1e-6)
  g = jax.grad(dmd.surrogate_loss)(x, grad)
  np.testing.assert_allclose(np.asarray(g), np.asarray(grad) / x.size, rtol=1e-5, atol=1e-9)
  t = dmd.sample_t(jax.random.key(1), 1000, 0.1, 0.9, shift=5.0)
  assert float(t.min()) >= 0.1 and float(t.max()) <= 0.9 and float(t.mean()) > 0.6


# ----------------------------------------------------------------------------- the full step
def _step_and_state(mesh, gen, teacher):
  rollout = SelfForcingRollout(make_sampler(timesteps=(1000.0, 500.0)))
  gen_tx, gen_sched = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=0,
                                           b1=0.0, grad_clip=1.0)
  critic_tx, critic_sched = optim.make_optimizer(learning_rate=1e-3, total_steps=20, warmup_steps=0,
                                                 b1=0.0)
  settings = bf.BlockForcingSettings(critic_steps=2, guidance=2.0, ema_decay=0.9, vf_cond_mix=0.5)
  step = bf.make_train_step(SPEC, SPEC, rollout, gen_tx, critic_tx, gen_sched, critic_sched,
                            settings)
  state, shardings = bf.create_state(gen, teacher, SPEC, SPEC, gen_tx, critic_tx, mesh)
  return jit_train_step(step, mesh, shardings, batch_shardings(mesh)), state


def test_step_on_8_devices_equals_1_device_with_replicated_exit_steps(params):
  teacher = init_params(SPEC, jax.random.key(7))
  ks = jax.random.split(jax.random.key(2), 2)
  batch = {"latents": jax.random.normal(ks[0], (4, 6, *HW, 16)),           # 2 chunks
           "context": jax.random.normal(ks[1], (4, 2, 5, SPEC.text_dim)),
           "null_context": jnp.zeros((5, SPEC.text_dim))}
  runs = {}
  for name, mesh in (("one", parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])),
                     ("eight", parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))):
    step, state = _step_and_state(mesh, params, teacher)
    local = jax.device_put(batch, batch_shardings(mesh))
    metrics = []
    for i in range(2):
      state, m = step(state, local, jax.random.key(11))
      metrics.append(m)
    runs[name] = (state, metrics)
  (s1, m1), (s8, m8) = runs["one"], runs["eight"]
  for a, b in zip(m1, m8):
    for k in a:
      np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), rtol=1e-5, atol=1e-5, err_msg=k)
  # Adam divides each gradient element by its running RMS: where a gradient is ~0, the order of the
  # sharded reductions (~1e-7) becomes a visible fraction of a step (seen: 1.6e-5 on 1 of 4608
  # elements). A sharding bug moves whole tensors by whole steps (lr 1e-3): the bound is 1/10 step.
  step_tol = 0.1 * 1e-3
  for tree in ("params", "critic_params", "ema_params"):
    for a, b in zip(jax.tree_util.tree_leaves(getattr(s1, tree)),
                    jax.tree_util.tree_leaves(getattr(s8, tree))):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=step_tol)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(s1.params),
                                                           jax.tree_util.tree_leaves(params)))
  assert moved > 10 * step_tol, moved                  # the two steps did move the generator
  assert m8[0]["loss"].sharding.is_fully_replicated
  for m in m8:                                          # the exit steps: one value on every device
    exits = [m[f"exit_step/{c}"] for c in range(2)]
    for e in exits:
      shards = {int(np.asarray(sh.data)) for sh in e.addressable_shards}
      assert len(shards) == 1 and len(e.addressable_shards) == 8
  # ... and they are the ones the replicated step key gives, not something device-dependent.
  rollout = SelfForcingRollout(make_sampler(timesteps=(1000.0, 500.0)))
  for i, m in enumerate(m8):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(11), i), bf.EXIT)
    np.testing.assert_array_equal([int(m[f"exit_step/{c}"]) for c in range(2)],
                                  np.asarray(rollout.exit_steps(key, 2)))
  assert int(s8.step) == 2 and np.isfinite(float(m8[-1]["loss"]))


# ----------------------------------------------------------------------------- configs and init
def _load_config(name, arg=""):
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_test_cfg_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_block_forcing_configs_validate_and_bad_values_fail_in_one_line():
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  toy = _load_config("toy_block_forcing")
  assert bfc.validate_block_forcing(toy).dim == 128
  wan = _load_config("wan_1_3b_block_forcing")
  assert bfc.validate_block_forcing(wan).num_layers == 30
  assert bfc.settings(wan).critic_steps == 5 and bfc.settings(wan).guidance == 4.0
  assert bfc.settings(wan).ema_start_step == 200 and bfc.settings(wan).t_min == 0.02
  assert bfc.rollout_options(wan) == {"remat_policy": "full", "same_step_across_chunks": True,
                                      "grad_last_frames": 21}
  assert _load_config("toy_causal", "linear").train.noise.kind == "linear"
  for field, value, match in (("critic_steps", 0, "critic_steps"),
                              ("teacher_init", "", "teacher_init"),
                              ("remat_policy", "some", "remat_policy"),
                              ("vf_cond_mix", 1.5, "vf_cond_mix"),
                              ("grad_last_frames", -3, "grad_last_frames")):
    bad = _load_config("toy_block_forcing")
    bad.train.block_forcing[field] = value
    with pytest.raises(ConfigError, match=match) as e:
      bfc.validate_block_forcing(bad)
    assert "\n" not in str(e.value)


def test_init_from_resolves_work_dirs_and_prefers_ema(tmp_path, params):
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import init_from  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match="train the previous stage"):
    init_from.resolve(str(tmp_path))
  checkpoints.save_params(str(tmp_path / "params"), SPEC, params)
  assert init_from.resolve(str(tmp_path)) == str(tmp_path / "params")
  ema = jax.tree_util.tree_map(lambda x: x + 1.0, params)
  checkpoints.save_params(str(tmp_path / "params_ema"), SPEC, ema)
  assert init_from.resolve(str(tmp_path)) == str(tmp_path / "params_ema")
  assert init_from.resolve(str(tmp_path / "params")) == str(tmp_path / "params")
  _, loaded = init_from.load(str(tmp_path), SPEC)
  a, b = jax.tree_util.tree_leaves(loaded)[0], jax.tree_util.tree_leaves(ema)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rollout_backward_memory_grows_at_most_linearly_in_chunks(params):
  """Compiled temporaries of the Self Forcing rollout's gradient (nothing allocated): 8 chunks need
  at most ~2x the temporaries of 4 (what one chunk's exit-step residuals and one fixed-size cache
  cost), not a copy of a growing context per chunk."""
  sampler = make_sampler()
  rollout = SelfForcingRollout(sampler, remat_policy="full")

  def temp_bytes(n):
    texts = jax.ShapeDtypeStruct((n, 2, 5, SPEC.text_dim), jnp.float32)
    pooled = jax.ShapeDtypeStruct((n, 2, SPEC.text_dim), jnp.float32)
    def loss(p, tx, pl):
      return jnp.sum(jnp.square(rollout.rollout(p, tx, pl, jax.random.key(0),
                                                jnp.ones((n,), jnp.int32))))
    compiled = jax.jit(jax.grad(loss)).lower(params, texts, pooled).compile()
    return compiled.memory_analysis().temp_size_in_bytes
  t4, t8 = temp_bytes(4), temp_bytes(8)
  assert 0 < t8 <= 2.2 * t4, (t4, t8)
