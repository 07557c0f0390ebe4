"""The `block_forcing` stage of the trainer: `train_and_evaluate(config, workdir)`.

The stage builds the Block Forcing state (generator, EMA, critic, frozen teacher; `training.
block_forcing`) and its jitted step over the Self Forcing rollout; the host loop, data, checkpoints
(state + grain iterator), metrics, previews of the generator and the export of its DIR/params
(+ DIR/params_ema) are `training.trainer`'s, the same code as every other stage.

A fresh run loads the generator from `train.block_forcing.generator_init` (the causal stage) and the
teacher - also the critic's start - from `train.block_forcing.teacher_init`; a run that finds a
checkpoint in DIR/checkpoints resumes from it instead.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from absl import logging

from blockvid_jax import checkpoints
from blockvid_jax.errors import CheckpointError, ConfigError
from blockvid_jax.diffusion.sampler import build_sampler
from blockvid_jax.training import block_forcing as bf, block_forcing_config as bfc
from blockvid_jax.training import init_from, steps, trainer
from blockvid_jax.training.self_forcing import SelfForcingRollout


def _teacher_spec(config, gen_spec):
  """The teacher's DiTSpec (stored next to its params) with the run's runtime fields."""
  directory = init_from.resolve(config.train.block_forcing.teacher_init)
  try:
    stored = checkpoints.load_spec(directory)
  except CheckpointError as e:
    raise ConfigError(str(e)) from None
  return init_from.runtime_spec(stored, gen_spec)


def build_stage(ctx: trainer.StageContext) -> trainer.Stage:
  """The Block Forcing state (restored, or generator + teacher loaded) and its jitted step."""
  config, spec, t = ctx.config, ctx.spec, ctx.config.train
  b = t.block_forcing
  teacher_spec = _teacher_spec(config, spec)
  logging.info("generator %s; teacher %s", spec, teacher_spec)
  (gen_tx, gen_sched), (critic_tx, critic_sched) = bfc.optimizers(config)
  use_ema = t.ema_decay > 0
  mesh, rules = ctx.mesh, ctx.rules
  state = ctx.restore(bf.abstract_state(spec, teacher_spec, gen_tx, critic_tx, mesh, rules,
                                        use_ema))
  shardings = bf.state_shardings(spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  if state is None:
    _, gen = init_from.load(b.generator_init, spec, shardings.params)
    _, teacher = init_from.load(b.teacher_init, teacher_spec, shardings.teacher_params)
    state, _ = bf.create_state(gen, teacher, spec, teacher_spec, gen_tx, critic_tx, mesh, rules,
                               use_ema)
    del gen, teacher
  else:
    logging.info("resumed from checkpoint step %d", int(state.step))
  _, sampler = build_sampler(config)
  rollout = SelfForcingRollout(sampler, **bfc.rollout_options(config))
  step_fn = bf.make_train_step(spec, teacher_spec, rollout, gen_tx, critic_tx, gen_sched,
                               critic_sched, bfc.settings(config))
  train_step = steps.jit_train_step(step_fn, mesh, shardings, ctx.batch_sharding, rules)
  return trainer.Stage(state=state, train_step=train_step)


STAGE = trainer.StageDef(name="block_forcing", validate=bfc.validate_block_forcing,
                         build=build_stage)


def train_and_evaluate(config, workdir: str, *, devices: Optional[Sequence[Any]] = None) -> dict:
  """Trains Block Forcing in `workdir` (see `trainer.run`) -> the last metrics."""
  return trainer.run(config, workdir, STAGE, devices=devices)
