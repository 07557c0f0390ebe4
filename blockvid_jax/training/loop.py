"""The `causal` and `teacher` stages of the trainer: `train_and_evaluate(config, workdir)`.

The stage builds the train state (`training.state`: params, AdamW, EMA) and the jitted flow-matching
step (`training.steps`); the host loop, checkpoints, previews and export are `training.trainer`'s.
A fresh run starts from random params or from `train.init_from` (`training.init_from`: a converted
Wan checkpoint, or the exported params of an earlier stage, e.g. the teacher).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from absl import logging

from blockvid_jax.diffusion.sampler import build_sampler
from blockvid_jax.training import init_from, optim, state as state_lib, steps, trainer
from blockvid_jax.training.config import validate_train


def optimizer(config):
  """-> (AdamW with warmup + cosine decay and clipping, its learning-rate schedule) of `config.train`."""
  t = config.train
  return optim.make_optimizer(
      learning_rate=t.learning_rate, total_steps=t.total_steps, warmup_steps=t.warmup_steps,
      min_lr_ratio=t.min_lr_ratio, weight_decay=t.weight_decay, b1=t.b1, b2=t.b2,
      grad_clip=t.grad_clip)


def step_settings(config) -> steps.StepSettings:
  """The static settings of the causal/teacher step from `config.train`."""
  t = config.train
  return steps.StepSettings(stage=t.stage, noise_kind=t.noise.kind, t_min_max=t.noise.t_min_max,
                            t_max=t.noise.t_max, shift=t.noise.shift,
                            text_dropout=t.text_dropout, ema_decay=t.ema_decay,
                            ema_start_step=t.ema_start_step,
                            loss_weight=t.loss_weight, t_max_range=t.noise.t_max_range,
                            layout=t.layout, context_t=config.cache.context_t,
                            clean_noise=t.clean_noise,
                            cache=build_sampler(config)[1].cache if t.context_view == "cache"
                            else None)


def build_stage(ctx: trainer.StageContext) -> trainer.Stage:
  """The train state (restored, or fresh / `train.init_from`) and the jitted step of the stage."""
  config, spec, t = ctx.config, ctx.spec, ctx.config.train
  tx, schedule = optimizer(config)
  use_ema = t.ema_decay > 0
  shardings = state_lib.state_shardings(spec, tx, ctx.mesh, ctx.rules, use_ema)
  state = ctx.restore(state_lib.abstract_train_state(spec, tx, ctx.mesh, ctx.rules, use_ema))
  if state is None:
    state, _ = state_lib.create_train_state(spec, tx, jax.random.fold_in(ctx.key, 0), ctx.mesh,
                                            ctx.rules, use_ema)
    state = init_from.apply(config, spec, state, shardings)   # train.init_from (no-op if unset)
    logging.info("new run (%d parameters, %s)",
                 sum(x.size for x in jax.tree_util.tree_leaves(state.params)),
                 f"from {t.init_from}" if t.init_from else "random init")
  else:
    logging.info("resumed from checkpoint step %d", int(state.step))
  step_fn = steps.make_train_step(spec, tx, schedule, step_settings(config))
  train_step = steps.jit_train_step(step_fn, ctx.mesh, shardings, ctx.batch_sharding, ctx.rules)
  return trainer.Stage(state=state, train_step=train_step)


STAGE = trainer.StageDef(name="causal/teacher", validate=validate_train, build=build_stage)


def train_and_evaluate(config, workdir: str, *, devices: Optional[Sequence[Any]] = None) -> dict:
  """Trains the causal or teacher stage of `config` in `workdir` (see `trainer.run`)."""
  return trainer.run(config, workdir, STAGE, devices=devices)
