"""The optimizer: optax AdamW with a warmup + cosine learning-rate schedule and global-norm clipping.

Built from explicit arguments (the loop reads them from `config.train`). Weight decay applies to
matrix kernels only (leaves named `kernel`), not to biases, norms or modulation tables.
"""

from __future__ import annotations

import jax
import optax


def lr_schedule(learning_rate: float, total_steps: int, warmup_steps: int,
                min_lr_ratio: float = 0.1) -> optax.Schedule:
  """0 -> peak linearly over `warmup_steps`, then cosine decay to `min_lr_ratio * peak` at the end."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=learning_rate * min_lr_ratio)


def decay_mask(params):
  """True for the leaves that get weight decay: the `kernel` of every Dense."""
  def is_kernel(path, _):
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]  # skips nn.Partitioned boxes
    return bool(keys) and keys[-1] == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(*, learning_rate: float, total_steps: int, warmup_steps: int,
                   min_lr_ratio: float = 0.1, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.99, eps: float = 1e-8,
                   grad_clip: float = 0.0) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """-> (transformation, learning-rate schedule). grad_clip = 0 disables clipping."""
  schedule = lr_schedule(learning_rate, total_steps, warmup_steps, min_lr_ratio)
  parts = []
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=decay_mask))
  return optax.chain(*parts), schedule
