"""The host training loop: `train_and_evaluate(config, workdir)`.

  data (toy tfds, built if missing) -> grain iterator -> host batch -> global sharded arrays
  -> jitted pure `train_step` (state donated) -> metrics (console, TensorBoard, metrics.jsonl)
  -> orbax checkpoints of the train state + iterator position (async, keep-N, atomic)
  -> sample videos in DIR/samples -> params export DIR/params (+ DIR/params_ema) for sampling

A fresh run starts from random params or from `train.init_from` (`training.init_from`: a converted
Wan checkpoint, or the exported params of an earlier stage, e.g. the teacher).

Resumes automatically from the newest checkpoint in DIR/checkpoints (same data order, same per-step
RNG: rng = fold_in(seed key, step) inside the step, so a resumed run continues bit for bit).
SIGTERM: finish the current step, save, return normally (exit 0). A non-finite loss raises
`NonFiniteLossError` naming the step; nothing is saved after it, so the last good checkpoint stays.
Losses are checked one step late (the next step is dispatched first) and before every save.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging

from blockvid_jax import parallel
from blockvid_jax.models.spec import ConfigError, DiTSpec
from blockvid_jax.training import batches, checkpoint, init_from, optim, state as state_lib, steps
from blockvid_jax.training.config import validate_train
from blockvid_jax.training.metric_writer import MetricWriter, create_default_writer
from blockvid_jax.training.progress import ReportProgress


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/inf loss (one-line message naming the step)."""


class _StopFlag:
  """Set by SIGTERM (installed only in the main thread); restored on exit."""

  def __init__(self):
    self.event = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def __bool__(self):
    return self.event.is_set()


def _make_mesh(config, devices: Optional[Sequence[Any]]):
  shape = {a: config.mesh[a] for a in parallel.MESH_AXES}
  try:
    return parallel.make_mesh(shape, devices)
  except parallel.MeshError as e:
    raise ConfigError(str(e)) from None


def _toy_data(config, data_dir: str):
  """The toy builder config of `config.data` (its resolution follows the latent size)."""
  from blockvid_jax.data.toy_long_video import toy_config  # pylint: disable=import-outside-toplevel
  d = config.data
  return toy_config(resolution=config.video.latent_height * config.autoencoder.factor,
                    frames_per_chunk=d.frames_per_chunk, chunks_per_video=d.chunks_per_video,
                    num_videos=d.num_videos, num_test_videos=d.num_test_videos,
                    use_digits=d.use_digits, sprite_size=d.sprite_size, seed=d.toy_seed)


def make_input(config, spec: DiTSpec, workdir: str, local_batch: int):
  """-> (grain iterator, batch preparer, reference test video dict for samples or None)."""
  from blockvid_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  d = config.data
  if d.kind == "latents":
    from blockvid_jax.data import latent_folder  # pylint: disable=import-outside-toplevel
    try:
      source = latent_folder.LatentFolderSource(d.data_dir)
      null = source.null_context()
    except ValueError as e:
      raise ConfigError(f"data.data_dir: {e}") from None
    dataset = latent_folder.make_dataset(source, batch_size=local_batch,
                                         window_chunks=d.window_chunks,
                                         frames_per_chunk=d.frames_per_chunk, seed=config.seed)
    it = pipeline.make_iterator(dataset, num_threads=d.num_threads,
                                prefetch_buffer_size=d.prefetch)
    return it, batches.LatentBatchPreparer(null), None
  from blockvid_jax.data.toy_long_video import generate_video  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.text import ToyTextEncoder  # pylint: disable=import-outside-toplevel
  data_dir = os.path.abspath(d.data_dir or os.path.join(workdir, "data"))
  toy = _toy_data(config, data_dir)
  t0 = time.monotonic()
  builder = pipeline.build_toy_dataset(data_dir, toy)
  logging.info("toy data %s ready in %s (%.1fs)", toy.name, data_dir, time.monotonic() - t0)
  dataset = pipeline.make_dataset(builder.as_data_source("train"), batch_size=local_batch,
                                  window_chunks=d.window_chunks, frames_per_chunk=d.frames_per_chunk,
                                  seed=config.seed)
  it = pipeline.make_iterator(dataset, num_threads=d.num_threads, prefetch_buffer_size=d.prefetch)
  # The sampler (blockvid_jax.generate) builds the same encoder: keep the seeds in step.
  encoder = ToyTextEncoder(text_dim=spec.text_dim, max_len=config.text.max_len, seed=config.seed)
  preparer = batches.ToyBatchPreparer(encoder, config.autoencoder.factor, spec.in_channels)
  split = "test" if toy.num_test_videos else "train"
  return it, preparer, generate_video(toy, split, 0)


def _export(workdir: str, spec: DiTSpec, state: state_lib.TrainState) -> None:
  """Writes DIR/params (and DIR/params_ema) in the shared params format (`blockvid_jax.checkpoints`)."""
  if jax.process_count() > 1:
    logging.info("multi-process run: not exporting params (use the training checkpoint)")
    return
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  trees = {"params": state.params}
  if state.ema_params is not None:
    trees["params_ema"] = state.ema_params
  for name, tree in trees.items():
    target = os.path.join(workdir, name)
    tmp = target + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoints.save_params(tmp, spec, jax.device_get(tree))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
  logging.info("exported %s to %s", " and ".join(trees), workdir)


class _MetricSink:
  """Fetches step metrics (one step late), checks the loss, writes every `log_every` steps."""

  def __init__(self, writer: MetricWriter, log_every: int, total_steps: int):
    self.writer, self.log_every, self.total_steps = writer, log_every, total_steps
    self.pending: list[tuple[int, Any]] = []
    self._losses: list[float] = []
    self.last: dict[str, float] = {}

  def add(self, step: int, metrics: Any) -> None:
    self.pending.append((step, metrics))

  def flush(self, keep_last: bool = False) -> None:
    todo = self.pending[:-1] if keep_last else self.pending
    self.pending = self.pending[-1:] if keep_last else []
    for step, metrics in todo:
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(host["loss"]):
        raise NonFiniteLossError(f"non-finite loss ({host['loss']}) at step {step}")
      self._losses.append(host["loss"])
      self.last = {"step": step, **host}
      if step % self.log_every == 0 or step == self.total_steps:
        self.writer.write_scalars(step, {**host, "loss_avg": float(np.mean(self._losses))})
        self._losses = []


def train_and_evaluate(config, workdir: str, *, devices: Optional[Sequence[Any]] = None) -> dict:
  """Trains `config` in `workdir` (resuming from its newest checkpoint); returns the last metrics.

  `devices`: the devices of the mesh (default: all); the mesh sizes in `config.mesh` must fit them.
  """
  jax.config.update("jax_threefry_partitionable", True)
  spec = validate_train(config)
  t = config.train
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
  logging.info("mesh %s on %d devices; model %s", dict(mesh.shape), mesh.size, spec)

  it, preparer, reference = make_input(config, spec, workdir, t.batch_size // jax.process_count())
  tx, schedule = optim.make_optimizer(
      learning_rate=t.learning_rate, total_steps=t.total_steps, warmup_steps=t.warmup_steps,
      min_lr_ratio=t.min_lr_ratio, weight_decay=t.weight_decay, b1=t.b1, b2=t.b2,
      grad_clip=t.grad_clip)
  use_ema = t.ema_decay > 0
  shardings = state_lib.state_shardings(spec, tx, mesh, rules, use_ema)
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                                    async_save=t.async_checkpoint)
  key = jax.random.key(config.seed)
  state = checkpoint.restore_latest(
      manager, state_lib.abstract_train_state(spec, tx, mesh, rules, use_ema), it)
  if state is None:
    state, _ = state_lib.create_train_state(spec, tx, jax.random.fold_in(key, 0), mesh, rules,
                                            use_ema)
    state = init_from.apply(config, spec, state, shardings)   # train.init_from (no-op if unset)
    logging.info("new run (%d parameters, %s)",
                 sum(x.size for x in jax.tree_util.tree_leaves(state.params)),
                 f"from {t.init_from}" if t.init_from else "random init")
  else:
    logging.info("resumed from checkpoint step %d", int(state.step))
  if is_main:
    from clu import parameter_overview  # pylint: disable=import-outside-toplevel
    parameter_overview.log_parameter_overview(state.params, include_stats=False,
                                              msg="parameter overview")
    writer.write_hparams(config.to_dict() if hasattr(config, "to_dict") else {})

  settings = steps.StepSettings(stage=t.stage, noise_kind=t.noise.kind,
                                t_min_max=t.noise.t_min_max, t_max=t.noise.t_max,
                                shift=t.noise.shift, text_dropout=t.text_dropout,
                                ema_decay=t.ema_decay, loss_weight=t.loss_weight)
  batch_sharding = steps.batch_shardings(mesh, 4, rules)
  train_step = steps.jit_train_step(steps.make_train_step(spec, tx, schedule, settings), mesh,
                                    shardings, batch_sharding, rules)
  step_rng = jax.random.fold_in(key, 1)
  preview = None
  if t.sample_every and is_main and reference is None:
    logging.warning("train.sample_every: no sample videos for data.kind=%r (no built-in decoder)",
                    config.data.kind)
  elif t.sample_every and is_main:
    from blockvid_jax.training.preview import SamplePreview  # pylint: disable=import-outside-toplevel
    preview = SamplePreview(config, spec, preparer, reference, os.path.join(workdir, "samples"),
                            num_chunks=min(t.sample_chunks, config.data.chunks_per_video),
                            seed=config.seed)

  step = int(state.step)
  first_step = step
  tokens = (t.batch_size * config.data.window_chunks * config.data.frames_per_chunk *
            (config.video.latent_height // spec.patch_size[1]) *
            (config.video.latent_width // spec.patch_size[2]))
  progress = ReportProgress(t.total_steps, step, writer if is_main else None, every_secs=30.0,
                            tokens_per_step=tokens)
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
        sink.flush(keep_last=not (save_now or sample_now))       # checks the loss before a save
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
    manager.wait_until_finished()   # earlier (good) saves complete; nothing newer is written
    raise NonFiniteLossError(f"{e}; stopped, last good checkpoint: step "
                             f"{manager.latest_step()}") from None
  finally:
    manager.close()
    writer.flush()
    writer.close()
  return {**sink.last, "interrupted": interrupted}
