"""Distribution Matching Distillation (DMD) on a generator rollout: pure functions (DESIGN 6).

The generator's output x (its rollout, clean latents [B, F, H, W, C]) is noised at one random flow
time per sample, t = clip(shift_t(u, shift), t_min, t_max) with u ~ U(0, 1) (Self Forcing's "min/max
step" clamp). Two score networks predict the clean latent from x_t, both without gradients:
  * the frozen teacher ("real score"), with classifier-free guidance
    x0_real = x0_uncond + g (x0_cond - x0_uncond)   (g = 1: no guidance; linear, so the same as
    guiding the velocity),
  * the critic ("fake score"), trained on the generator's samples.
The gradient of the reverse KL w.r.t. x points along (x0_fake - x0_real) (their scores differ by a
positive multiple of it); normalised per sample by the mean |x - x0_real|:
    grad = (x0_fake - x0_real) / mean(|x - x0_real|)
and the generator minimises the stop-gradient surrogate  0.5 * mean((x - sg(x - grad))^2)  whose
gradient w.r.t. x is grad / x.size. The critic minimises flow matching on the stop-gradient rollout.

The networks enter as functions `x0_fn(x_t, t) -> x0` so the same code drives the DiT and the
analytic Gaussian test.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from blockvid_jax.diffusion import flow
from blockvid_jax.training import losses
from blockvid_jax.typing import Array

X0Fn = Callable[[Array, Array], Array]   # (x_t [B, ...], t [B]) -> x0 prediction [B, ...]


def sample_t(rng: Array, batch: int, t_min: float, t_max: float, shift: float = 1.0) -> Array:
  """Flow time per sample [B]: shift_t(U(0, 1)) clamped to [t_min, t_max]."""
  if not 0.0 <= t_min <= t_max <= 1.0:
    raise ValueError(f"need 0 <= t_min <= t_max <= 1, got {t_min}, {t_max}")
  u = jax.random.uniform(rng, (batch,), jnp.float32)                              # [B]
  return jnp.clip(flow.shift_t(u, shift), t_min, t_max)                            # [B]


def guided(x0_cond: Array, x0_uncond: Array, scale: float) -> Array:
  """Classifier-free guidance in x0 space: x0_u + g (x0_c - x0_u) (scale 1 returns x0_cond)."""
  if scale == 1.0:
    return x0_cond
  return x0_uncond + scale * (x0_cond - x0_uncond)


def dmd_direction(x: Array, x0_real: Array, x0_fake: Array) -> Array:
  """(x0_fake - x0_real) / mean(|x - x0_real|) per sample; all [B, ...] -> [B, ...] (finite)."""
  axes = tuple(range(1, x.ndim))
  norm = jnp.mean(jnp.abs(x - x0_real), axis=axes, keepdims=True)                 # [B, 1, ...]
  return jnp.nan_to_num((x0_fake - x0_real) / norm)


def surrogate_loss(x: Array, grad: Array) -> Array:
  """0.5 * mean((x - sg(x - grad))^2): its gradient w.r.t. x is grad / x.size. Scalar float32."""
  x = x.astype(jnp.float32)
  target = jax.lax.stop_gradient(x - grad.astype(jnp.float32))
  return 0.5 * jnp.mean(jnp.square(x - target))


def generator_loss(x: Array, rng: Array, real_x0: X0Fn, fake_x0: X0Fn, *, t_min: float,
                   t_max: float, shift: float) -> tuple[Array, dict]:
  """DMD loss of the generator output x [B, ...] -> (scalar, metrics).

  real_x0 / fake_x0 are called on stop-gradient inputs; only the surrogate carries gradients.
  """
  k_t, k_eps = jax.random.split(rng)
  t = sample_t(k_t, x.shape[0], t_min, t_max, shift)                               # [B]
  x_sg = jax.lax.stop_gradient(x)
  eps = jax.random.normal(k_eps, x.shape, jnp.float32)
  x_t = flow.noisy(x_sg, eps, t)                                                   # [B, ...]
  x0_real = jax.lax.stop_gradient(real_x0(x_t, t))
  x0_fake = jax.lax.stop_gradient(fake_x0(x_t, t))
  grad = dmd_direction(x_sg, x0_real, x0_fake)
  loss = surrogate_loss(x, grad)
  metrics = {"dmd/grad_abs": jnp.mean(jnp.abs(grad)), "dmd/t_mean": jnp.mean(t),
             "dmd/real_fake_gap": jnp.mean(jnp.abs(x0_fake - x0_real))}
  return loss, metrics


def critic_loss(x: Array, rng: Array, critic_v: Callable[[Array, Array], Array], *, t_min: float,
                t_max: float, shift: float) -> Array:
  """Flow matching of the critic on the stop-gradient rollout x [B, ...]; critic_v(x_t, t [B]) -> v."""
  k_t, k_eps = jax.random.split(rng)
  x = jax.lax.stop_gradient(x).astype(jnp.float32)
  t = sample_t(k_t, x.shape[0], t_min, t_max, shift)                               # [B]
  eps = jax.random.normal(k_eps, x.shape, jnp.float32)
  v = critic_v(flow.noisy(x, eps, t), t)
  return losses.flow_matching_loss(v, flow.velocity_target(x, eps))
