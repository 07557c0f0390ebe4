"""The host loop of stage `block_forcing`: `train_and_evaluate(config, workdir)`.

The causal/teacher loop (`training.loop`) with the Block Forcing state and step in place of the
single-network ones; everything else is shared with it: the toy data and batch preparation, orbax
checkpoints of the state + grain iterator position (exact resume), metrics (console, TensorBoard,
metrics.jsonl) with the non-finite loss check, sample videos of the generator, SIGTERM handling, and
at the end the generator's DIR/params (+ DIR/params_ema) export for sampling.

A fresh run loads the generator from `train.block_forcing.generator_init` (the causal stage) and the
teacher - also the critic's start - from `train.block_forcing.teacher_init`; a run that finds a
checkpoint in DIR/checkpoints resumes from it instead.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
from absl import logging

from blockvid_jax import checkpoints, parallel
from blockvid_jax.generate import build_sampler
from blockvid_jax.models.spec import ConfigError
from blockvid_jax.training import batches, block_forcing as bf, block_forcing_config as bfc
from blockvid_jax.training import checkpoint, init_from, steps
from blockvid_jax.training.loop import (NonFiniteLossError, _export, _make_mesh, _MetricSink,
                                        _StopFlag, make_input)
from blockvid_jax.training.metric_writer import create_default_writer
from blockvid_jax.training.progress import ReportProgress
from blockvid_jax.training.self_forcing import SelfForcingRollout


def _teacher_spec(config, gen_spec):
  """The teacher's DiTSpec (stored next to its params) with the run's runtime fields."""
  directory = init_from.resolve(config.train.block_forcing.teacher_init)
  try:
    stored = checkpoints.load_spec(directory)
  except checkpoints.CheckpointError as e:
    raise ConfigError(str(e)) from None
  return init_from.runtime_spec(stored, gen_spec)


def train_and_evaluate(config, workdir: str, *, devices: Optional[Sequence[Any]] = None) -> dict:
  """Trains Block Forcing in `workdir` (resuming from its newest checkpoint) -> the last metrics."""
  jax.config.update("jax_threefry_partitionable", True)
  spec = bfc.validate_block_forcing(config)
  t, b = config.train, config.train.block_forcing
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = _make_mesh(config, devices)
  rules = parallel.rules_from_config(config.mesh.rules.to_dict() if config.mesh.rules else None)
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if t.batch_size % dp or t.batch_size % jax.process_count():
    raise ConfigError(f"train.batch_size={t.batch_size} must be a multiple of the data-parallel "
                         f"size data x fsdp = {dp} and of the process count {jax.process_count()}")
  is_main = jax.process_index() == 0
  writer = create_default_writer(workdir, just_logging=not is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True) + "\n")
  teacher_spec = _teacher_spec(config, spec)
  logging.info("mesh %s; generator %s; teacher %s", dict(mesh.shape), spec, teacher_spec)

  it, preparer, reference = make_input(config, spec, workdir, t.batch_size // jax.process_count())
  (gen_tx, gen_sched), (critic_tx, critic_sched) = bfc.optimizers(config)
  use_ema = t.ema_decay > 0
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                                    async_save=t.async_checkpoint)
  abstract = bf.abstract_state(spec, teacher_spec, gen_tx, critic_tx, mesh, rules, use_ema)
  state = checkpoint.restore_latest(manager, abstract, it)
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
  rollout = SelfForcingRollout(sampler, remat_policy=b.remat_policy)
  step_fn = bf.make_train_step(spec, teacher_spec, rollout, gen_tx, critic_tx, gen_sched,
                               critic_sched, bfc.settings(config))
  batch_sharding = steps.batch_shardings(mesh, 4, rules)
  train_step = steps.jit_train_step(step_fn, mesh, shardings, batch_sharding, rules)
  step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  preview = None
  if t.sample_every and is_main:
    from blockvid_jax.training.preview import SamplePreview  # pylint: disable=import-outside-toplevel
    preview = SamplePreview(config, spec, preparer, reference, os.path.join(workdir, "samples"),
                            num_chunks=min(t.sample_chunks, config.data.chunks_per_video),
                            seed=config.seed)

  step = first_step = int(state.step)
  progress = ReportProgress(t.total_steps, step, writer if is_main else None, every_secs=30.0)
  sink = _MetricSink(writer, t.log_every, t.total_steps)
  last_saved = step if manager.latest_step() == step else None
  interrupted = False
  try:
    with _StopFlag() as stop:
      while step < t.total_steps:
        if stop:
          interrupted = True
          break
        batch = batches.to_global(preparer(next(it)), batch_sharding)
        state, metrics = train_step(state, batch, step_rng)
        step += 1
        sink.add(step, metrics)
        save_now = step % t.checkpoint_every == 0 or step == t.total_steps or bool(stop)
        sample_now = preview is not None and step % t.sample_every == 0
        sink.flush(keep_last=not (save_now or sample_now))
        if save_now:
          checkpoint.save(manager, step, state, it)
          last_saved = step
        if sample_now:
          path = preview(step, state.ema_params if use_ema else state.params)
          logging.info("step %d: wrote sample %s", step, path)
        progress(step)
      interrupted = interrupted or bool(stop)
    sink.flush()
    if interrupted and last_saved != step:
      checkpoint.save(manager, step, state, it)
    manager.wait_until_finished()
    if interrupted:
      logging.info("SIGTERM: saved checkpoint at step %d, exiting", step)
    elif step >= t.total_steps:
      _export(workdir, spec, state)
      logging.info("done: %d steps (%d this run)", step, step - first_step)
  except NonFiniteLossError as e:
    manager.wait_until_finished()
    raise NonFiniteLossError(f"{e}; stopped, last good checkpoint: step "
                             f"{manager.latest_step()}") from None
  finally:
    manager.close()
    writer.flush()
    writer.close()
  return {**sink.last, "interrupted": interrupted}
