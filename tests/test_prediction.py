"""x-prediction head (`model.prediction = "x0"`) and the x0 loss weighting (`train.loss_weight`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax.diffusion import flow
from blockvid_jax.models import CausalDiT, DiTSpec, KVContext, init_params
from blockvid_jax.models.spec import X0_T_FLOOR
from blockvid_jax.training import losses
from blockvid_jax.errors import ConfigError


def _inputs(spec, frames=6):
  k1, k2 = jax.random.split(jax.random.key(1))
  x = jax.random.normal(k1, (2, frames, 4, 4, spec.in_channels))                    # [B, F, H, W, C]
  t = jnp.array([[0.9] * 3 + [0.02] * 3, [0.5] * 3 + [0.3] * 3])[:, :frames]        # [B, F]
  ctx = jax.random.normal(k2, (2, 5, spec.text_dim))                                 # [B, T, E]
  return x, t, ctx


def test_x0_head_returns_the_velocity_of_its_clean_prediction():
  spec_v = DiTSpec.preset("tiny")
  spec_x0 = DiTSpec.preset("tiny", prediction="x0")
  params = init_params(spec_v, jax.random.key(0))   # same parameter tree for both heads
  x, t, ctx = _inputs(spec_v)
  head = CausalDiT(spec_v).apply({"params": params}, x, t, ctx)       # what the head outputs
  v = CausalDiT(spec_x0).apply({"params": params}, x, t, ctx)
  floor = np.maximum(np.asarray(t), X0_T_FLOOR)[:, :, None, None, None]
  np.testing.assert_allclose(v, (np.asarray(x) - np.asarray(head)) / floor, rtol=1e-5, atol=1e-5)
  # Above the floor the sampler's x0 conversion returns the head's clean latents exactly.
  x0 = flow.x0_from_v(x, v, t)
  np.testing.assert_allclose(x0[0, :3], head[0, :3], rtol=1e-5, atol=1e-5)
  # The cached one-chunk forward uses the same head.
  out, _ = CausalDiT(spec_x0).apply({"params": params}, x[:, :3], t[:, :3], ctx,
                                    KVContext.empty(spec_x0, 2), 0,
                                    method=CausalDiT.forward_chunk)
  np.testing.assert_allclose(out, v[:, :3], rtol=1e-5, atol=1e-5)


def test_unknown_prediction_is_a_one_line_error():
  with pytest.raises(ConfigError, match="model.prediction must be one of"):
    DiTSpec.preset("tiny", prediction="eps")


def test_x0_loss_weight_is_the_clean_latent_mse():
  k = jax.random.split(jax.random.key(3), 3)
  x0 = jax.random.normal(k[0], (2, 6, 4, 4, 16))
  eps = jax.random.normal(k[1], x0.shape)
  x0_hat = x0 + 0.1 * jax.random.normal(k[2], x0.shape)
  t = jnp.array([[0.9] * 3 + [0.2] * 3, [0.5] * 6])                                  # all >= floor
  x_t = flow.noisy(x0, eps, t)
  v_hat = flow.v_from_x0(x_t, x0_hat, t)
  target = flow.velocity_target(x0, eps)
  weighted = losses.flow_matching_loss(v_hat, target, losses.frame_weights(t, "x0"))
  np.testing.assert_allclose(weighted, np.mean(np.square(x0_hat - x0)), rtol=1e-5)
  plain = losses.flow_matching_loss(v_hat, target, losses.frame_weights(t, "v"))
  expected = np.mean(np.square(x0_hat - x0) / np.square(np.asarray(t))[:, :, None, None, None])
  np.testing.assert_allclose(plain, expected, rtol=1e-4)
  with pytest.raises(ValueError, match="loss weight must be one of"):
    losses.frame_weights(t, "snr")
