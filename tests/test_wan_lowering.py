"""The Wan-scale training configs trace and lower (not compile, not run) on 8 fake CPU devices with
their own meshes: abstract state and batch (`jax.ShapeDtypeStruct` with the configs' shardings),
nothing allocated. Catches shape, sharding-rule and config errors of `configs/wan_1_3b_*.py` that
the toy configs cannot reach (480x832, 21-frame windows, 512-token umT5 contexts, 30 layers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax import parallel
from blockvid_jax.config_overrides import load_config_file
from blockvid_jax.diffusion.sampler import build_sampler
from blockvid_jax.parallel import activation_rules
from blockvid_jax.training import block_forcing as bf
from blockvid_jax.training import block_forcing_config as bfc
from blockvid_jax.training import loop, state as state_lib, steps, trainer
from blockvid_jax.training.config import validate_train
from blockvid_jax.training.self_forcing import SelfForcingRollout

BATCH = 8   # global windows: one per device


def _setup(name):
  c = load_config_file(f"configs/{name}.py")
  mesh = trainer.make_mesh(c, jax.devices())
  rules = parallel.rules_from_config(c.mesh.rules.to_dict() if c.mesh.rules else None)
  return c, mesh, rules


def _abstract_batch(c, mesh, rules):
  bs = steps.batch_shardings(mesh, 4, rules)
  d, v = c.data, c.video
  lat = (BATCH, d.window_chunks * d.frames_per_chunk, v.latent_height, v.latent_width, 16)
  ctx = (BATCH, d.window_chunks, c.text.max_len, 4096)
  return bs, {"latents": jax.ShapeDtypeStruct(lat, jnp.float32, sharding=bs["latents"]),
              "context": jax.ShapeDtypeStruct(ctx, jnp.float32, sharding=bs["context"]),
              "null_context": jax.ShapeDtypeStruct(ctx[2:], jnp.float32,
                                                   sharding=bs["null_context"])}


def _param_count(tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _per_device_count(tree):
  """Parameters one device holds under the tree's shardings."""
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", ["wan_1_3b_causal"])
def test_wan_causal_step_lowers_on_8_devices(name):
  c, mesh, rules = _setup(name)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "context": 1, "tensor": 2}
  spec = validate_train(c)
  tx, schedule = loop.optimizer(c)
  use_ema = c.train.ema_decay > 0
  state = state_lib.abstract_train_state(spec, tx, mesh, rules, use_ema)
  assert _param_count(state.params) == 1_418_996_800
  shardings = state_lib.state_shardings(spec, tx, mesh, rules, use_ema)
  bs, batch = _abstract_batch(c, mesh, rules)
  step_fn = steps.make_train_step(spec, tx, schedule, loop.step_settings(c))
  fn = steps.jit_train_step(step_fn, mesh, shardings, bs, rules)
  with activation_rules(mesh, rules):
    lowered = fn.jitted.lower(state, batch, jax.random.key(0))
  assert "sharding" in lowered.as_text()
  assert _per_device_count(state.params) < _param_count(state.params) / 7
  # FSDP x tensor: each device holds about 1/8 of the params (norms and biases are replicated).
  assert _per_device_count(state.params) < _param_count(state.params) / 7


def test_wan_block_forcing_step_lowers_on_8_devices():
  c, mesh, rules = _setup("wan_1_3b_block_forcing")
  spec = bfc.validate_block_forcing(c)
  teacher_spec = spec          # Wan2.1-T2V-1.3B: the generator's architecture, run bidirectionally
  (gen_tx, gen_sched), (critic_tx, critic_sched) = bfc.optimizers(c)
  use_ema = c.train.ema_decay > 0
  state = bf.abstract_state(spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  assert _param_count(state.params) == 1_418_996_800
  shardings = bf.state_shardings(spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  _, sampler = build_sampler(c)
  rollout = SelfForcingRollout(sampler, **bfc.rollout_options(c))
  step_fn = bf.make_train_step(spec, teacher_spec, rollout, gen_tx, critic_tx, gen_sched,
                               critic_sched, bfc.settings(c))
  bs, batch = _abstract_batch(c, mesh, rules)
  fn = steps.jit_train_step(step_fn, mesh, shardings, bs, rules)
  with activation_rules(mesh, rules):
    lowered = fn.jitted.lower(state, batch, jax.random.key(0))
  assert "sharding" in lowered.as_text()
  assert _per_device_count(state.params) < _param_count(state.params) / 7
