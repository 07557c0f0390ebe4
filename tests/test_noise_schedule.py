"""Chunk-wise training noise schedules (diffusion.noise) and the flow-matching helpers (flow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax.diffusion import flow, noise

B, N = 4096, 6


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ramps_are_monotone_within_bounds_and_end_at_t_max(kind):
  t = np.asarray(noise.chunk_times(jax.random.key(0), B, N, kind, t_min_max=0.4, t_max=0.9))
  assert t.shape == (B, N)
  assert np.all(np.diff(t, axis=1) >= -1e-7)                     # non-decreasing across chunks
  assert np.all(np.diff(t, axis=1).sum(1) > 0)                   # and rising
  assert t.min() >= 0.0 and t.max() <= 0.9 + 1e-6
  np.testing.assert_allclose(t[:, -1], 0.9, atol=1e-6)           # last chunk at t_max
  assert t[:, 0].max() <= 0.4                                    # first chunk = t_min <= t_min_max


def test_ramp_values_match_the_formula():
  t_max = 0.8
  for kind, f in (("linear", lambda u: u), ("cosine", lambda u: 1 - np.cos(np.pi * u / 2))):
    t = np.asarray(noise.chunk_times(jax.random.key(1), 8, 5, kind, 0.5, t_max))
    t_min = t[:, :1]
    u = np.arange(5) / 4
    np.testing.assert_allclose(t, t_min + f(u)[None] * (t_max - t_min), atol=1e-6)
  # cosine stays below linear inside (0, 1): the noise rises late
  lin = np.asarray(noise.chunk_times(jax.random.key(2), 8, 5, "linear", 0.5, 1.0))
  cos = np.asarray(noise.chunk_times(jax.random.key(2), 8, 5, "cosine", 0.5, 1.0))
  assert np.all(cos[:, 1:-1] < lin[:, 1:-1])


def test_t_min_is_uniform_per_sample():
  t = np.asarray(noise.chunk_times(jax.random.key(3), B, N, "cosine", 0.6, 1.0))
  t_min = t[:, 0]
  assert len(np.unique(t_min)) > B * 0.99                        # drawn per sample
  assert t_min.min() >= 0 and t_min.max() <= 0.6
  assert abs(t_min.mean() - 0.3) < 0.02 and abs(t_min.std() - 0.6 / np.sqrt(12)) < 0.02
  hist, _ = np.histogram(t_min, bins=4, range=(0, 0.6))
  assert hist.min() > 0.2 * B                                    # roughly flat


def test_independent_is_iid_per_chunk():
  t = np.asarray(noise.chunk_times(jax.random.key(4), B, N, "independent", 0.0, 1.0))
  assert t.min() >= 0 and t.max() <= 1
  np.testing.assert_allclose(t.mean(0), 0.5, atol=0.03)          # same law for every chunk
  np.testing.assert_allclose(t.std(0), 1 / np.sqrt(12), atol=0.02)
  corr = np.corrcoef(t.T)[np.triu_indices(N, 1)]
  assert np.abs(corr).max() < 0.06                               # uncorrelated chunks
  assert np.mean(np.all(np.diff(t, axis=1) >= 0, axis=1)) < 0.01  # hardly ever monotone


def test_constant_shares_one_time_per_sample():
  t = np.asarray(noise.chunk_times(jax.random.key(5), 64, N, "constant", 0.0, 0.7))
  np.testing.assert_array_equal(t, np.repeat(t[:, :1], N, axis=1))
  assert t.max() <= 0.7 and len(np.unique(t[:, 0])) == 64


def test_one_chunk_ramp_is_t_min_and_bad_args():
  t = np.asarray(noise.chunk_times(jax.random.key(6), 16, 1, "linear", 0.3, 1.0))
  assert t.shape == (16, 1) and t.max() <= 0.3
  with pytest.raises(ValueError, match="noise schedule"):
    noise.chunk_times(jax.random.key(0), 2, 2, "quadratic", 0.5, 1.0)
  with pytest.raises(ValueError, match="t_min_max"):
    noise.chunk_times(jax.random.key(0), 2, 2, "linear", 0.9, 0.5)


def test_frame_times_and_shift():
  t = jnp.asarray([[0.1, 0.5], [0.2, 0.9]])
  f = noise.frame_times(t, 3)
  np.testing.assert_allclose(f, [[.1, .1, .1, .5, .5, .5], [.2, .2, .2, .9, .9, .9]], rtol=1e-7)
  tt = noise.training_times(jax.random.key(7), 3, 4, 3, kind="linear", t_min_max=0.5, shift=3.0)
  raw = noise.frame_times(noise.chunk_times(jax.random.key(7), 3, 4, "linear", 0.5), 3)
  np.testing.assert_allclose(tt, 3 * raw / (1 + 2 * raw), rtol=1e-6)
  u = jnp.linspace(0, 1, 11)
  s = flow.shift_t(u, 5.0)
  assert float(s[0]) == 0.0 and abs(float(s[-1]) - 1.0) < 1e-7
  assert np.all(np.diff(np.asarray(s)) > 0) and np.all(np.asarray(s) >= np.asarray(u))
  np.testing.assert_array_equal(flow.shift_t(u, 1.0), u)


def test_flow_conversions_round_trip():
  k1, k2, k3 = jax.random.split(jax.random.key(8), 3)
  x = jax.random.normal(k1, (2, 6, 4, 4, 16))
  eps = jax.random.normal(k2, x.shape)
  t = jax.random.uniform(k3, (2, 6), minval=0.05)
  x_t = flow.noisy(x, eps, t)
  v = flow.velocity_target(x, eps)
  np.testing.assert_allclose(flow.x0_from_v(x_t, v, t), x, atol=1e-5)
  np.testing.assert_allclose(flow.eps_from_v(x_t, v, t), eps, atol=1e-5)
  np.testing.assert_allclose(flow.v_from_x0(x_t, x, t), v, atol=1e-4)
  np.testing.assert_allclose(flow.noisy(x, eps, jnp.zeros((2, 6))), x)
  np.testing.assert_allclose(flow.noisy(x, eps, jnp.ones((2, 6))), eps)
