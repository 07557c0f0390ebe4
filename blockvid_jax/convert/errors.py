"""`ConvertError`: the one error type of the checkpoint converter (a one-line, user-facing message)."""


class ConvertError(ValueError):
  """A problem with a checkpoint to convert: the message is one line that names the key or file."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))  # always one line
