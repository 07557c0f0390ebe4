"""Sample videos during training: `DIR/samples/step_000500.mp4`, panels side by side:

  reference | one-step denoised | sample

The prompts and the reference frames are the first `num_chunks` chunks of toy test video 0 (a pure
function of the data config), so videos of different steps are comparable.
  * one-step denoised: the reference latents noised with a rising chunk-wise t (0.3 -> 0.9) and
    denoised by ONE model call (x0 = x_t - t v): shows what the model knows long before samples
    from pure noise are clean.
  * sample, stage `causal` (and `block_forcing`): the block rollout sampler
    (`blockvid_jax.diffusion.sampler`, built through `blockvid_jax.generate`), chunk by chunk with
    the sparse KV cache and `config.sample`'s solver. Left out if the sampler cannot be imported.
  * sample, stage `teacher` (bidirectional, not a block model): all frames jointly with Euler steps
    on the flow (`sample.num_steps`, `sample.shift`, classifier-free guidance `sample.guidance`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from blockvid_jax.diffusion import flow
from blockvid_jax.diffusion.sampler import build_sampler
from blockvid_jax.models import toy_autoencoder
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.training.steps import predict_velocity


def to_uint8(pixels) -> np.ndarray:
  """[..., 3] floats in [-1, 1] -> uint8."""
  return np.clip(np.round((np.asarray(pixels, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_frames(path: str, frames: np.ndarray, fps: int) -> str:
  """uint8 [T, H, W, 3] -> mp4 through `blockvid_jax.video_io` (GIF with pillow if that fails)."""
  try:
    from blockvid_jax.video_io import write_video  # pylint: disable=import-outside-toplevel
    return str(write_video(path, frames, fps=fps))
  except Exception as e:  # noqa: BLE001  (no ffmpeg, no video_io: a GIF still shows progress)
    gif = os.path.splitext(path)[0] + ".gif"
    logging.warning("mp4 writing failed (%s); writing %s", str(e).splitlines()[0] if str(e) else e,
                    gif)
    from PIL import Image  # pylint: disable=import-outside-toplevel
    images = [Image.fromarray(f) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return gif


class SamplePreview:
  """Callable `(step, params) -> path of the written video`."""

  def __init__(self, config: Any, spec: DiTSpec, preparer: Any, reference: dict, out_dir: str,
               num_chunks: int, seed: int):
    self.config, self.spec, self.out_dir = config, spec, out_dir
    fpc = config.data.frames_per_chunk
    self.captions = [str(c) for c in reference["captions"][:num_chunks]]
    frames = np.asarray(reference["frames"][:num_chunks * fpc], np.float32) / 127.5 - 1.0
    self.reference = frames[None]                                             # [1, F, H, W, 3]
    self.factor = config.autoencoder.factor
    self.preparer, self.seed = preparer, seed
    self._sampler = self._segment_fn = None
    self.teacher = config.train.stage == "teacher"
    self._teacher = jax.jit(self._teacher_fn) if self.teacher else None
    if not self.teacher:
      _, self._sampler = build_sampler(config)
      self._segment_fn = self._sampler.make_segment_fn()
    self._one_step = jax.jit(self._one_step_fn)
    os.makedirs(out_dir, exist_ok=True)

  @property
  def uses_sampler(self) -> bool:
    return self._sampler is not None

  def _one_step_fn(self, params, latents, context, rng):
    b, f = latents.shape[:2]
    nc = context.shape[1]
    t = jnp.repeat(jnp.linspace(0.3, 0.9, nc), f // nc)[None].repeat(b, 0)    # [B, F]
    eps = jax.random.normal(rng, latents.shape, jnp.float32)
    x_t = flow.noisy(latents, eps, t)
    v = predict_velocity(self.spec, params, x_t, t, context,
                         "bidirectional" if self.teacher else "causal")
    return flow.x0_from_v(x_t, v, t)                                           # [B, F, X, Y, C]

  def _teacher_fn(self, params, latents_like, context, null, rng):
    """Euler on the flow over the whole window, bidirectional, with CFG: -> [1, F, X, Y, C]."""
    smp = self.config.sample
    ts = flow.shift_t(jnp.linspace(1.0, 0.0, smp.num_steps + 1), smp.shift)   # [S + 1]
    f = latents_like.shape[1]

    def velocity(x, t):
      tf = jnp.full((1, f), t)
      v = predict_velocity(self.spec, params, x, tf, context, "bidirectional")
      if smp.guidance != 1.0:
        v_u = predict_velocity(self.spec, params, x, tf, jnp.broadcast_to(null, context.shape),
                               "bidirectional")
        v = v_u + smp.guidance * (v - v_u)
      return v

    def body(x, i):
      return x + (ts[i + 1] - ts[i]) * velocity(x, ts[i]), None

    x = jax.random.normal(rng, latents_like.shape, jnp.float32)
    x, _ = jax.lax.scan(body, x, jnp.arange(smp.num_steps))
    return x

  def _sample_latents(self, params) -> np.ndarray:
    texts = np.stack([self.preparer.embed(c) for c in self.captions])[:, None]  # [C, 1, T, E]
    _, _, pooled = self.preparer.encoder.encode(self.captions)                 # [C, E]
    pooled = np.asarray(pooled)[:, None]                                       # [C, 1, E]
    chunks = [np.asarray(x) for _, x in self._sampler.stream(
        params, jnp.asarray(texts), jnp.asarray(pooled), jax.random.key(self.seed),
        null_text=jnp.asarray(self.preparer.null_context), segment_fn=self._segment_fn)]
    return np.concatenate(chunks, axis=1)                                      # [1, F, X, Y, C]

  def __call__(self, step: int, params: Any) -> Optional[str]:
    ref_lat = np.asarray(toy_autoencoder.encode(self.reference, self.factor, self.spec.in_channels))
    context = np.stack([self.preparer.embed(c) for c in self.captions])[None]    # [1, Nc, T, E]
    x0 = self._one_step(params, jnp.asarray(ref_lat), jnp.asarray(context),
                           jax.random.key(self.seed))
    latents = [x0]
    if self.teacher:
      latents.append(self._teacher(params, jnp.asarray(ref_lat), jnp.asarray(context),
                                   jnp.asarray(self.preparer.null_context),
                                   jax.random.key(self.seed)))
    elif self.uses_sampler:
      latents.append(self._sample_latents(params))
    panels = [self.reference] + [np.asarray(toy_autoencoder.decode(jnp.asarray(z), self.factor))
                                 for z in latents]
    frames = np.concatenate([to_uint8(p[0]) for p in panels], axis=2)          # [F, H, W*k, 3]
    path = os.path.join(self.out_dir, f"step_{step:06d}.mp4")
    return write_frames(path, frames, self.config.video.fps)
