"""The one host training loop, shared by every stage: `run(config, workdir, stage)`.

  data (`inputs.make_input`) -> host batch -> global sharded arrays -> the stage's jitted pure
  step (state donated) -> metrics (console, TensorBoard, metrics.jsonl) -> orbax checkpoints of the
  train state + iterator position (async, keep-N, atomic) -> sample previews in DIR/samples
  -> params export DIR/params (+ DIR/params_ema) for sampling and for the next stage.

A stage (`causal` / `teacher` in `training.loop`, `block_forcing` in `training.block_forcing_loop`)
is a `StageDef`: how to validate the config and how to build its state and jitted step (`Stage`).
Everything else is here once: resume, SIGTERM, the NaN stop, checkpoints, metrics, previews, export.

Resumes automatically from the newest checkpoint in DIR/checkpoints (same data order, same per-step
RNG: rng = fold_in(seed key, step) inside the step, so a resumed run continues bit for bit).
SIGTERM: finish the current step, save, return normally (exit 0). A non-finite loss raises
`NonFiniteLossError` naming the step; nothing is saved after it, so the last good checkpoint stays.
Losses are checked one step late (the next step is dispatched first) and before every save.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from absl import logging

from blockvid_jax import parallel
from blockvid_jax.errors import ConfigError, NonFiniteLossError
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel.distributed import sync_processes
from blockvid_jax.training import batches, checkpoint, inputs, steps
from blockvid_jax.training.metric_writer import MetricWriter, create_default_writer
from blockvid_jax.training.progress import ReportProgress


@dataclasses.dataclass(frozen=True)
class StageContext:
  """What the trainer gives a stage to build itself: the run's mesh, rules and restore hook."""
  config: Any
  spec: DiTSpec
  mesh: Any
  rules: Any
  batch_sharding: Any
  key: jax.Array
  # abstract state -> the restored state of the newest checkpoint (iterator included) or None.
  restore: Callable[[Any], Any]


@dataclasses.dataclass
class Stage:
  """A built stage: its (restored or fresh) state and its jitted step (state, batch, rng) ->
  (state, metrics). The state has `step`, `params` and `ema_params` (None without EMA)."""
  state: Any
  train_step: Callable[[Any, Any, jax.Array], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class StageDef:
  """A training stage: `validate(config) -> DiTSpec` and `build(StageContext) -> Stage`."""
  name: str
  validate: Callable[[Any], DiTSpec]
  build: Callable[[StageContext], Stage]


class StopFlag:
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


def make_mesh(config, devices: Optional[Sequence[Any]]):
  """The mesh of `config.mesh` over `devices` (default all); a bad shape is a MeshError (a
  ConfigError)."""
  return parallel.make_mesh({a: config.mesh[a] for a in parallel.MESH_AXES}, devices)  # MeshError


def export_params(workdir: str, spec: DiTSpec, state) -> None:
  """Writes DIR/params (and DIR/params_ema) in the shared params format (`blockvid_jax.checkpoints`).

  Every process takes part: each writes its shards of the (sharded) params through orbax.
  """
  from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
  multi = jax.process_count() > 1
  primary = jax.process_index() == 0
  trees = {"params": state.params}
  if state.ema_params is not None:
    trees["params_ema"] = state.ema_params
  for name, tree in trees.items():
    target = os.path.join(workdir, name)
    tmp = target + ".new"
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
    sync_processes(f"export {name}: staged")
    checkpoints.save_params(tmp, spec, tree if multi else jax.device_get(tree))
    if primary:
      shutil.rmtree(target, ignore_errors=True)
      os.rename(tmp, target)
    sync_processes(f"export {name}: published")
  logging.info("exported %s to %s", " and ".join(trees), workdir)


def host_params(params: Any) -> Any:
  """Params for a host-side consumer (previews): every process takes part in gathering sharded
  multi-process params to NumPy; one process returns them unchanged."""
  if jax.process_count() == 1:
    return params
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils.process_allgather(params, tiled=True)


class MetricSink:
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


def tokens_per_step(config, spec: DiTSpec) -> int:
  """Video tokens in one global batch of training windows."""
  d = config.data
  return (config.train.batch_size * d.window_chunks * d.frames_per_chunk *
          (config.video.latent_height // spec.patch_size[1]) *
          (config.video.latent_width // spec.patch_size[2]))


def _make_preview(config, spec, preparer, reference, workdir: str):
  t = config.train
  if not t.sample_every:
    return None
  if reference is None:
    logging.warning("train.sample_every: no sample videos for data.kind=%r (no built-in decoder)",
                    config.data.kind)
    return None
  from blockvid_jax.training.preview import SamplePreview  # pylint: disable=import-outside-toplevel
  return SamplePreview(config, spec, preparer, reference, os.path.join(workdir, "samples"),
                       num_chunks=min(t.sample_chunks, config.data.chunks_per_video),
                       seed=config.seed)


def run(config, workdir: str, stage: StageDef, *,
        devices: Optional[Sequence[Any]] = None) -> dict:
  """Trains `stage` of `config` in `workdir` (resuming from its newest checkpoint); returns the
  last metrics and `interrupted`. `devices`: the mesh's devices (default all)."""
  jax.config.update("jax_threefry_partitionable", True)
  spec = stage.validate(config)
  t = config.train
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config, devices)
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
  logging.info("stage %s; mesh %s on %d devices; model %s", stage.name, dict(mesh.shape),
               mesh.size, spec)

  it, preparer, reference = inputs.make_input(config, spec, workdir,
                                              t.batch_size // jax.process_count())
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                                    async_save=t.async_checkpoint)
  key = jax.random.key(config.seed)
  batch_sharding = steps.batch_shardings(mesh, 4, rules)
  ctx = StageContext(config=config, spec=spec, mesh=mesh, rules=rules,
                     batch_sharding=batch_sharding, key=key,
                     restore=lambda abstract: checkpoint.restore_latest(manager, abstract, it))
  built = stage.build(ctx)
  state = built.state
  if is_main:
    from clu import parameter_overview  # pylint: disable=import-outside-toplevel
    parameter_overview.log_parameter_overview(state.params, include_stats=False,
                                              msg="parameter overview")
    writer.write_hparams(config.to_dict() if hasattr(config, "to_dict") else {})
  step_rng = jax.random.fold_in(key, 1)
  preview = _make_preview(config, spec, preparer, reference, workdir)
  use_ema = state.ema_params is not None

  step = first_step = int(state.step)
  progress = ReportProgress(t.total_steps, step, writer if is_main else None, every_secs=30.0,
                            tokens_per_step=tokens_per_step(config, spec))
  sink = MetricSink(writer, t.log_every, t.total_steps)
  last_saved = step if manager.latest_step() == step else None
  interrupted = False
  try:
    with StopFlag() as stop:
      while step < t.total_steps:
        if stop:
          interrupted = True
          break
        batch = batches.to_global(preparer(next(it)), batch_sharding)
        state, metrics = built.train_step(state, batch, step_rng)
        step += 1
        sink.add(step, metrics)
        save_now = step % t.checkpoint_every == 0 or step == t.total_steps or bool(stop)
        sample_now = preview is not None and step % t.sample_every == 0
        sink.flush(keep_last=not (save_now or sample_now))       # checks the loss before a save
        if save_now:
          checkpoint.save(manager, step, state, it)
          last_saved = step
        if sample_now:   # every process gathers; process 0 samples and writes the video
          params = host_params(state.ema_params if use_ema else state.params)
          if is_main:
            path = preview(step, params)
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
      export_params(workdir, spec, state)
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
