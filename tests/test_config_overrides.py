"""Config overrides: unknown keys and mistyped values are one line naming the key / expected type."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from blockvid_jax import config_overrides as co
from blockvid_jax.errors import ConfigError

TOY_CPU = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "toy_cpu.py")


def _config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.train = ml_collections.ConfigDict({"total_steps": 10, "learning_rate": 1e-3, "stage": "causal",
                                       "async_checkpoint": True})
  c.model = ml_collections.ConfigDict({"patch_size": (1, 2, 2), "dim": 64})
  return c


@pytest.mark.parametrize("item, message", [
    ("--config.total_steps=6",
     "unknown config key 'total_steps' in --config.total_steps=6; did you mean train.total_steps?"),
    ("--config.train.totl_steps=6", "did you mean train.total_steps?"),
    ("--config.nope.dim=3", "unknown config key 'nope.dim'"),
    ("--config.train.total_steps=abc", "train.total_steps is an int, got 'abc'"),
    ("--config.train.total_steps=1.5", "train.total_steps is an int, got '1.5'"),
    ("--config.train.learning_rate=fast", "train.learning_rate is a float, got 'fast'"),
    ("--config.train.async_checkpoint=maybe", "train.async_checkpoint is a bool (true/false)"),
    ("--config.model.patch_size=2", "model.patch_size is a tuple such as (1, 2, 2), got '2'"),
    ("--config.model=3", "model is a section"),
    ("--config.seed", "give a value"),
])
def test_bad_override_is_one_line(item, message):
  with pytest.raises(ConfigError) as info:
    co.check_overrides(_config(), [item])
  text = str(info.value)
  assert message in text and "\n" not in text, text


def test_good_overrides_are_typed_as_the_field():
  c = co.apply_overrides(_config(), ["--config.train.total_steps=6", "--config.train.learning_rate=2",
                                     "--config.train.async_checkpoint=false",
                                     "--config.model.patch_size=(1, 4, 4)",
                                     "--config.train.stage=teacher"])
  assert c.train.total_steps == 6 and isinstance(c.train.total_steps, int)
  assert c.train.learning_rate == 2.0 and isinstance(c.train.learning_rate, float)
  assert c.train.async_checkpoint is False
  assert c.model.patch_size == (1, 4, 4) and c.train.stage == "teacher"
  co.check_overrides(_config(), ["--config.train.total_steps=6"])   # valid: no error


def test_train_cli_names_the_closest_key():
  """The CLI prints the same line (exit 2) before any work: no JAX traceback, no workdir."""
  r = subprocess.run([sys.executable, "-m", "blockvid_jax.train", "--config", TOY_CPU,
                      "--workdir", "/nonexistent/never", "--config.total_steps=6"],
                     capture_output=True, text=True, timeout=120, check=False)
  lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
  assert r.returncode == 2 and lines == [
      "error: unknown config key 'total_steps' in --config.total_steps=6; did you mean "
      "train.total_steps?"], r.stderr[-2000:]
