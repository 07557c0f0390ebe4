"""CLI: train a model in a work directory, resuming automatically.

Stages (`train.stage`): `causal` and `teacher` (`training.loop`), `block_forcing`
(`training.block_forcing_loop`).

  python -m blockvid_jax.train --config configs/toy_cpu.py --workdir runs/toy \
      [--config.train.total_steps=500 --config.seed=1 ...]

Writes DIR/checkpoints (orbax, with the data iterator), DIR/metrics.jsonl + TensorBoard events,
DIR/samples/*.mp4, and at the end DIR/params (+ DIR/params_ema) for `python -m blockvid_jax.sample
--checkpoint DIR/params`. SIGTERM saves a checkpoint and exits 0. User errors (bad config or flags)
print one line on stderr and exit 2; a non-finite loss prints one line naming the step and exits 1.
Multi-host: launch/tpu_vm.sh and launch/gpu_multinode.sh (BLOCKVID_DISTRIBUTED=1) start every host.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, samples).")


def _fail(message: str, code: int = 2):
  lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
  print(f"error: {lines[0] if lines else message}", file=sys.stderr)
  sys.exit(code)


def _parse_flags(argv):
  """absl flag parsing whose errors (unknown config key, bad value) are one line + exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except Exception as e:  # noqa: BLE001  config_flags raises plain errors for a broken config file
    _fail(f"{type(e).__name__}: {e}")


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
  from blockvid_jax.models.spec import ConfigError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training import loop  # pylint: disable=import-outside-toplevel
  from blockvid_jax.training.config import validate_train  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  if config is None:
    _fail("--config is required (e.g. configs/toy_cpu.py)")
  if not _WORKDIR.value:
    _fail("--workdir is required")
  stage_loop, validate = loop, validate_train
  try:
    if "train" not in config or "data" not in config:
      raise ConfigError("the config has no train/data sections: pass a training config "
                        "(configs/toy_cpu.py, configs/toy_teacher.py, configs/wan_1_3b_causal.py)")
    if config.train.get("stage") == "block_forcing":
      from blockvid_jax.training import block_forcing_config, block_forcing_loop  # pylint: disable=import-outside-toplevel
      stage_loop, validate = block_forcing_loop, block_forcing_config.validate_block_forcing
    validate(config)
  except OSError as e:  # config_flags reports a missing / broken config file lazily, here
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    _fail(f"cannot load --config: {lines[-1] if lines else e}")
  except (ConfigError, ValueError, TypeError, AttributeError, KeyError) as e:
    _fail(str(e))
  jax.config.update("jax_threefry_partitionable", True)
  try:
    stage_loop.train_and_evaluate(config, _WORKDIR.value)
  except ConfigError as e:
    _fail(str(e))
  except loop.NonFiniteLossError as e:
    _fail(str(e), code=1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
