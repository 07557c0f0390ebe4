"""Sharding: params initialised directly sharded with the declared specs; 8-device forward == 1 device."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from blockvid_jax import parallel
from blockvid_jax.models import CausalDiT, DiTSpec, init_params
from blockvid_jax.models.params import init_boxed
from blockvid_jax.errors import MeshError

SPEC = DiTSpec.preset("tiny")


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py must give 8 fake CPU devices"
  return parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def test_mesh_shape_resolution_and_errors():
  assert parallel.mesh_shape({"data": -1, "tensor": 2}, 8) == (4, 1, 1, 2)
  with pytest.raises(MeshError, match="needs 16 devices"):
    parallel.mesh_shape({"data": 4, "tensor": 4}, 8)
  with pytest.raises(MeshError, match="unknown mesh axis"):
    parallel.mesh_shape({"model": 2}, 8)
  with pytest.raises(MeshError, match="at most one"):
    parallel.mesh_shape({"data": -1, "fsdp": -1}, 8)


def test_params_have_declared_shardings(mesh):
  params, _ = parallel.sharded_init(functools.partial(init_boxed, SPEC), mesh, jax.random.key(0))
  specs = jax.tree_util.tree_map(lambda x: x.sharding.spec, params)
  b = specs["blocks"]
  assert b["self_attn"]["q"]["kernel"] == P(None, "fsdp", "tensor")   # [K, embed, heads]
  assert b["self_attn"]["o"]["kernel"] == P(None, "tensor", "fsdp")   # [K, heads, embed]
  assert b["ffn_fc1"]["kernel"] == P(None, "fsdp", "tensor")          # [K, embed, mlp]
  assert b["ffn_fc2"]["kernel"] == P(None, "tensor", "fsdp")          # [K, mlp, embed]
  assert b["modulation"] == P(None, None, None)
  assert specs["patch_embedding"]["kernel"] == P(None, "fsdp")
  assert specs["time_embedding"]["projection"]["kernel"] == P("fsdp", "tensor")
  # Every weight matrix is actually split across devices (not replicated).
  q = params["blocks"]["self_attn"]["q"]["kernel"]
  assert q.addressable_shards[0].data.shape == (SPEC.num_layers, 48 // 2, 48 // 2)


@pytest.mark.parametrize("shape", [None, {"data": 1, "fsdp": 2, "context": 2, "tensor": 2}],
                         ids=["data2_fsdp2_tensor2", "fsdp2_context2_tensor2"])
def test_sharded_forward_equals_single_device(mesh, shape):
  if shape is not None:   # sequence parallel: activations' token axis split over `context`
    mesh = parallel.make_mesh(shape)
  params1 = init_params(SPEC, jax.random.key(0))
  params8, shardings = parallel.sharded_init(functools.partial(init_boxed, SPEC), mesh,
                                             jax.random.key(0))
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  lat = jax.random.normal(k1, (4, 6, 4, 4, 16))
  t = jax.random.uniform(k2, (4, 6))
  ctx = jax.random.normal(k3, (4, 5, SPEC.text_dim))
  model = CausalDiT(SPEC)
  ref = model.apply({"params": params1}, lat, t, ctx)
  batch = lambda *names: parallel.named(mesh, "activation_batch", *names)
  with parallel.activation_rules(mesh):
    fwd = jax.jit(lambda p, l, tt, c: model.apply({"params": p}, l, tt, c),
                  in_shardings=(shardings, batch(None, None, None, None), batch(None),
                                batch(None, None)),
                  out_shardings=batch(None, None, None, None))
    out = fwd(params8, lat, t, ctx)
    if shape is not None:   # the token axis of the activations is constrained to `context`
      assert '{"context"}' in fwd.lower(params8, lat, t, ctx).as_text()
  assert len(out.sharding.device_set) == 8
  assert float(jnp.abs(out - ref).max()) < 1e-5
