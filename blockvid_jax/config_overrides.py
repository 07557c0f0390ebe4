"""Command-line config overrides (`--config.a.b=value`) checked before any work starts.

Every CLI takes `--config FILE[:arg]` plus overrides. A key that does not exist or a value of the
wrong type becomes one `ConfigError` line naming the key, the closest valid keys or the expected
type, instead of the AttributeError / ValueError text of the flag library:

  error: unknown config key 'total_steps' in --config.total_steps=6; did you mean train.total_steps?
  error: --config.train.total_steps=abc: train.total_steps is an int, got 'abc'

`parse_flags` is the absl `flags_parser` of the absl CLIs (train, sample, encode); `apply_overrides`
is the argparse path (LV-Bench).
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
import sys
from typing import Any, Sequence

import ml_collections

from blockvid_jax.errors import ConfigError

PREFIX = "--config."
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of `config` as a dotted path (sections are not leaves)."""
  keys = []
  for name, value in config.items():
    path = f"{prefix}{name}"
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, path + "."))
    else:
      keys.append(path)
  return keys


def _closest(key: str, keys: Sequence[str]) -> list[str]:
  """Valid keys that the user probably meant: same last name first, then spelling neighbours."""
  last = key.rsplit(".", 1)[-1]
  same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == last]
  leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
  near_leaf = [leaves[n] for n in difflib.get_close_matches(last, list(leaves), n=3, cutoff=0.75)]
  near_path = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
  out = []
  for k in (same_leaf + near_leaf) or near_path:
    if k not in out:
      out.append(k)
  return out[:3]


def _lookup(config: ml_collections.ConfigDict, key: str, item: str):
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      hint = _closest(key, flat_keys(config))
      did = f"; did you mean {' or '.join(hint)}?" if hint else ""
      raise ConfigError(f"unknown config key {key!r} in {item}{did}")
    if i < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def parse_value(key: str, current: Any, text: str, item: str) -> Any:
  """`text` as the type of the field's current value; ConfigError (one line) if it is not one."""
  def bad(kind: str):
    return ConfigError(f"{item}: {key} is {kind}, got {text!r}")
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"{item}: {key} is a section, set one of its fields "
                      f"(e.g. {PREFIX}{flat_keys(current, key + '.')[0]}=...)")
  if isinstance(current, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise bad("a bool (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise bad("an int") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise bad("a float") from None
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise bad(f"a {type(current).__name__} such as {current!r}") from None
    if not isinstance(value, (tuple, list)):
      raise bad(f"a {type(current).__name__} such as {current!r}")
    return type(current)(value)
  if current is None or isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split_override(item: str) -> tuple[str, str]:
  """'--config.a.b=v' -> ('a.b', 'v'); ConfigError if there is no value."""
  key, eq, value = item[len(PREFIX):].partition("=")
  if not eq:
    raise ConfigError(f"{item}: give a value, e.g. {item}=...")
  return key, value


def check_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Raises ConfigError for the first override whose key is unknown or whose value is mistyped
  (`config` itself is left unchanged)."""
  apply_overrides(copy.deepcopy(config), overrides)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Sets each `--config.a.b=value` (typed as the field) on `config` in place and returns it."""
  for item in overrides:
    key, text = split_override(item)
    node, leaf = _lookup(config, key, item)
    node[leaf] = parse_value(key, node[leaf], text, item)
  return config


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`path[:arg]` -> the file's `get_config(arg)`; ConfigError if it is not a config .py file."""
  from blockvid_jax.config_lib import sibling_config  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path) or not path.endswith(".py"):
    raise ConfigError(f"--config {path!r} is not a config .py file")
  return sibling_config(path, os.path.splitext(os.path.basename(path))[0], arg)


def _config_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
  """The `--config` file spec and the `--config.*` overrides of an absl command line."""
  spec, overrides = None, []
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
    elif arg.startswith(PREFIX):
      overrides.append(arg)
  return spec, overrides


def fail(message, code: int = 2):
  """Prints `error: <first line of message>` on stderr and exits with `code`."""
  lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
  print(f"error: {lines[0] if lines else message}", file=sys.stderr)
  sys.exit(code)


def parse_flags(argv):
  """absl `flags_parser`: overrides checked against the config file first, every error one line."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  spec, overrides = _config_args(argv[1:])
  if spec and overrides:
    try:
      config = load_config_file(spec)
    except ConfigError as e:
      fail(e)
    except Exception:  # noqa: BLE001  a broken file: the flag library reports it below
      config = None
    if config is not None:
      try:
        check_overrides(config, overrides)
      except ConfigError as e:
        fail(e)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(e)
  except Exception as e:  # noqa: BLE001  config_flags raises plain errors for a broken config file
    fail(f"{type(e).__name__}: {e}")
