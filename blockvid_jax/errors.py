"""The user-facing error types of blockvid_jax, in one module at the bottom of the import graph.

Every error here carries a one-line message that names the field, key, file or step at fault; the
CLIs print it as `error: <message>` and exit 2 (1 for `NonFiniteLossError`). `BlockvidError` is the
common base, so a caller can catch every user-facing error with one clause. This module imports
nothing from the package, so any layer may raise these.
"""

from __future__ import annotations


def one_line(message) -> str:
  """`message` with its whitespace (newlines included) collapsed to single spaces."""
  return " ".join(str(message).split())


def describe(e: BaseException, limit: int = 200) -> str:
  """`Type: first line of the message` (cut to `limit` characters) of a library's exception."""
  text = str(e).strip()
  line = text.splitlines()[0] if text else ""
  if len(line) > limit:
    line = line[:limit - 3] + "..."
  return f"{type(e).__name__}: {line}" if line else type(e).__name__


class BlockvidError(Exception):
  """Base of the user-facing errors; the message is always one line."""

  def __init__(self, message: str = ""):
    super().__init__(one_line(message))


class ConfigError(BlockvidError, ValueError):
  """A configuration field, override or flag is invalid."""


class MeshError(ConfigError):
  """The mesh shape does not fit the devices."""


class CheckpointError(BlockvidError, ValueError):
  """A params checkpoint directory is missing, incomplete or does not fit the model."""


class ConvertError(BlockvidError, ValueError):
  """A checkpoint to convert has an unexpected layout (the message names the key or file)."""


class MetaError(BlockvidError):
  """An LV-Bench meta file or a selection in it is malformed."""


class VideoError(BlockvidError):
  """A video could not be read or written."""


class WeightsError(BlockvidError):
  """A scorer weights file is missing or cannot be read."""


class UsageError(BlockvidError):
  """A command line that cannot run (stops before any work is done)."""


class NonFiniteLossError(BlockvidError, RuntimeError):
  """Training produced a NaN/inf loss (the message names the step)."""
