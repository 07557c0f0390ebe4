"""The umT5 tokenizer as Wan2.1 uses it: clean, tokenize, add EOS, truncate and pad to 512.

`Tokenizer(path)` reads either
  * `tokenizer.json` (the HuggingFace fast tokenizer that Wan loads through AutoTokenizer) with the
    `tokenizers` library: the same pre-tokenizer, normaliser and post-processor, so the ids are the
    ones Wan feeds its encoder; or
  * `spiece.model` (the SentencePiece model the fast tokenizer was converted from) with
    `sentencepiece`, EOS appended here. Used when only the .model file is at hand.
A directory is searched for tokenizer.json first, then spiece.model.

Cleaning ('whitespace', Wan's default): ftfy.fix_text, html.unescape twice, strip, collapse runs of
whitespace to one space. Output: ids and mask, both int32 [B, max_length]; a prompt longer than
max_length - 1 tokens is cut and still ends with EOS.
"""

from __future__ import annotations

import html
import os
import re
from typing import Sequence

import numpy as np

from blockvid_jax.errors import ConfigError


TEXT_LEN = 512
_JSON, _SPM = "tokenizer.json", "spiece.model"


def clean(text: str) -> str:
  """Wan's 'whitespace' prompt cleaning."""
  import ftfy  # pylint: disable=import-outside-toplevel
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return re.sub(r"\s+", " ", text).strip()


def _resolve(path: str) -> str:
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.isdir(path):
    for name in (_JSON, _SPM):
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise ConfigError(f"no {_JSON} or {_SPM} in tokenizer directory {path}")
  if not os.path.isfile(path):
    raise ConfigError(f"tokenizer {path} does not exist")
  return path


class Tokenizer:
  """Text -> (ids, mask) for the umT5 encoder."""

  def __init__(self, path: str | os.PathLike, max_length: int = TEXT_LEN):
    if max_length < 2:
      raise ConfigError(f"tokenizer max_length must be >= 2, got {max_length}")
    self.path, self.max_length = _resolve(path), max_length
    try:
      if self.path.endswith(".json"):
        self._init_json()
      else:
        self._init_spm()
    except ConfigError:
      raise
    except Exception as e:  # noqa: BLE001 - a broken file is a one-line user error
      raise ConfigError(f"cannot read tokenizer {self.path}: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e

  def _init_json(self) -> None:
    from tokenizers import Tokenizer as HFTokenizer  # pylint: disable=import-outside-toplevel
    tok = HFTokenizer.from_file(self.path)
    tok.no_padding()
    tok.no_truncation()
    self.pad_id = tok.token_to_id("<pad>")
    self.eos_id = tok.token_to_id("</s>")
    if self.pad_id is None or self.eos_id is None:
      raise ConfigError(f"tokenizer {self.path} has no <pad> or </s> token")
    self._encode = lambda text: tok.encode(text, add_special_tokens=True).ids
    self._adds_eos = True

  def _init_spm(self) -> None:
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    proc = spm.SentencePieceProcessor(model_file=self.path)
    self.pad_id, self.eos_id = proc.pad_id(), proc.eos_id()
    if self.pad_id < 0 or self.eos_id < 0:
      raise ConfigError(f"sentencepiece model {self.path} defines no pad or eos id")
    self._encode = lambda text: proc.encode(text)
    self._adds_eos = False

  def token_ids(self, text: str) -> list[int]:
    """Cleaned, tokenized, EOS-terminated ids of one prompt, cut to max_length."""
    ids = list(self._encode(clean(text)))
    if self._adds_eos and ids and ids[-1] == self.eos_id:
      ids = ids[:-1]
    return ids[:self.max_length - 1] + [self.eos_id]

  def __call__(self, prompts: Sequence[str] | str) -> tuple[np.ndarray, np.ndarray]:
    """ids, mask: int32 [B, max_length] (pad id and 0 after the EOS)."""
    if isinstance(prompts, str):
      prompts = [prompts]
    ids = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), self.max_length), np.int32)
    for row, text in enumerate(prompts):
      tokens = self.token_ids(text)
      ids[row, :len(tokens)] = tokens
      mask[row, :len(tokens)] = 1
    return ids, mask
