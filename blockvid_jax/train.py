"""CLI: train a model in a work directory, resuming automatically.

Stages (`train.stage`): `causal` and `teacher` (`training.loop`), `block_forcing`
(`training.block_forcing_loop`); all run in the one host loop of `training.trainer`.

  python -m blockvid_jax.train --config configs/toy_cpu.py --workdir runs/toy \
      [--config.train.total_steps=500 --config.seed=1 ...]

Writes DIR/checkpoints (orbax, with the data iterator), DIR/metrics.jsonl + TensorBoard events,
DIR/samples/*.mp4, and at the end DIR/params (+ DIR/params_ema) for `python -m blockvid_jax.sample
--checkpoint DIR/params`. SIGTERM saves a checkpoint and exits 0. User errors (bad config or flags)
print one line on stderr and exit 2; a non-finite loss prints one line naming the step and exits 1.
Multi-host: launch/tpu_vm.sh and launch/gpu_multinode.sh (BLOCKVID_DISTRIBUTED=1) start every host.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from blockvid_jax.config_overrides import fail as _fail, parse_flags
from blockvid_jax.errors import ConfigError, NonFiniteLossError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, samples).")


class _QuietLibraries:
  """absl-handler filter: INFO records from orbax / tfds internals are dropped (warnings pass)."""
  NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")

  def filter(self, record) -> bool:
    return record.levelno > 20 or not any(n in record.pathname for n in self.NOISY)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=import-outside-toplevel
  from blockvid_jax.parallel.distributed import maybe_initialize  # pylint: disable=import-outside-toplevel
  maybe_initialize()   # BLOCKVID_DISTRIBUTED=1 (launch/*.sh): jax.distributed.initialize()
  from blockvid_jax.training import loop, trainer  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  if config is None:
    _fail("--config is required (e.g. configs/toy_cpu.py)")
  if not _WORKDIR.value:
    _fail("--workdir is required")
  stage = loop.STAGE
  try:
    if "train" not in config or "data" not in config:
      raise ConfigError("the config has no train/data sections: pass a training config "
                        "(configs/toy_cpu.py, configs/toy_teacher.py, configs/wan_1_3b_causal.py)")
    if config.train.get("stage") == "block_forcing":
      from blockvid_jax.training import block_forcing_loop  # pylint: disable=import-outside-toplevel
      stage = block_forcing_loop.STAGE
    stage.validate(config)
  except OSError as e:  # config_flags reports a missing / broken config file lazily, here
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    _fail(f"cannot load --config: {lines[-1] if lines else e}")
  except (ConfigError, ValueError, TypeError, AttributeError, KeyError) as e:
    _fail(str(e))
  jax.config.update("jax_threefry_partitionable", True)
  try:
    trainer.run(config, _WORKDIR.value, stage)
  except ConfigError as e:
    _fail(str(e))
  except NonFiniteLossError as e:
    _fail(str(e), code=1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
