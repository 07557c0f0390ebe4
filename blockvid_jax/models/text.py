"""Text encoders. For now the toy encoder of the embedded CPU default (DESIGN 6-7).

Every text encoder of the package has one interface, the one the umT5 encoder will have:

  encoder.encode(prompts: list[str]) -> (emb [B, T, E] float32, mask [B, T] bool, pooled [B, E])

with T = max_len (padded), E = text_dim, emb zero at padded tokens (Wan zero-pads its context) and
pooled = mean of emb over the valid tokens (the prompt vector the semantic cache compares).

The toy encoder: a word-level tokenizer over the toy grammar's vocabulary (+ <pad>, <unk> and a
T5-style end token </s> that is always appended, so an empty prompt still has one valid token) and
a tiny bidirectional pre-LN transformer (2 layers, 2 heads, width text_dim) whose parameters are
drawn once from a fixed seed; it is never trained. Prompts that share words get nearby embeddings.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.models.attention import attend
from blockvid_jax.typing import Array

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
_WORD_RE = re.compile(r"[a-z0-9]+")


class WordTokenizer:
  """Lower-cased words -> ids; id 0 = <pad>, 1 = <unk>, 2 = </s>, then `words` in order."""

  def __init__(self, words: Sequence[str]):
    self.vocab: tuple[str, ...] = (PAD, UNK, EOS) + tuple(w for w in words
                                                          if w not in (PAD, UNK, EOS))
    self._ids = {w: i for i, w in enumerate(self.vocab)}
    self.pad_id, self.unk_id, self.eos_id = 0, 1, 2

  def __len__(self) -> int:
    return len(self.vocab)

  def words(self, text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())

  def tokenize(self, prompts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [B, T], mask bool [B, T]); words beyond max_len - 1 are cut, </s> is last."""
    if isinstance(prompts, str):
      raise TypeError("tokenize takes a list of prompts, not a single string")
    ids = np.full((len(prompts), max_len), self.pad_id, dtype=np.int32)  # [B, T]
    for b, prompt in enumerate(prompts):
      row = [self._ids.get(w, self.unk_id) for w in self.words(prompt)][:max_len - 1]
      row.append(self.eos_id)
      ids[b, :len(row)] = row
    return ids, ids != self.pad_id


class _EncoderBlock(nn.Module):
  """Pre-LN bidirectional transformer block with a key padding mask."""
  width: int
  num_heads: int
  mlp_width: int

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    b, t, _ = x.shape
    head_dim = self.width // self.num_heads
    h = nn.LayerNorm(epsilon=1e-6, name="norm_attn")(x)
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), name="qkv")(h)  # [B, T, 3, N, H]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, N, H] each
    key_mask = jnp.broadcast_to(mask[:, None, :], (b, t, t))  # [B, T(query), T(key)]
    out, _ = attend(q, k, v, key_mask)  # [B, T, N, H]
    x = x + nn.DenseGeneral(self.width, axis=(-2, -1), name="out")(out)  # [B, T, E]
    h = nn.LayerNorm(epsilon=1e-6, name="norm_mlp")(x)
    h = nn.gelu(nn.Dense(self.mlp_width, name="mlp_in")(h), approximate=True)  # [B, T, M]
    return x + nn.Dense(self.width, name="mlp_out")(h)  # [B, T, E]


class ToyTextTransformer(nn.Module):
  """ids [B, T] int32, mask [B, T] bool -> emb [B, T, E] float32 (zero at padding)."""
  vocab_size: int
  width: int
  max_len: int
  num_layers: int = 2
  num_heads: int = 2

  @nn.compact
  def __call__(self, ids: Array, mask: Array) -> Array:
    tok = nn.Embed(self.vocab_size, self.width, name="token_embedding",
                   embedding_init=nn.initializers.normal(1.0))(ids)  # [B, T, E]
    pos = self.param("position_embedding", nn.initializers.normal(0.3),
                     (self.max_len, self.width))  # [T, E]
    x = tok + pos[None, :ids.shape[1]]  # [B, T, E]
    for i in range(self.num_layers):
      x = _EncoderBlock(self.width, self.num_heads, 4 * self.width, name=f"block_{i}")(x, mask)
    x = nn.LayerNorm(epsilon=1e-6, name="norm_out")(x)  # [B, T, E]
    return jnp.where(mask[..., None], x, 0.0).astype(jnp.float32)  # [B, T, E]


def masked_mean(emb: Array, mask: Array) -> Array:
  """Mean over valid tokens: emb [B, T, E], mask [B, T] -> [B, E] (zero if no valid token)."""
  m = mask.astype(emb.dtype)[..., None]  # [B, T, 1]
  return jnp.sum(emb * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)  # [B, E]


# Jitted with the (hashable) module static, so encoders of equal geometry share compilations.
@functools.partial(jax.jit, static_argnums=0)
def _init(module: ToyTextTransformer, key: Array):
  ids = jnp.zeros((1, module.max_len), jnp.int32)  # [1, T]
  return module.init(key, ids, ids == 0)["params"]


@functools.partial(jax.jit, static_argnums=0)
def _forward(module: ToyTextTransformer, params, ids: Array, mask: Array) -> tuple[Array, Array]:
  emb = module.apply({"params": params}, ids, mask)  # [B, T, E]
  return emb, masked_mean(emb, mask)  # [B, T, E], [B, E]


class ToyTextEncoder:
  """Word tokenizer + frozen random transformer with the text-encoder interface (module doc)."""

  def __init__(self, text_dim: int, max_len: int, words: Sequence[str], *, num_layers: int = 2,
               num_heads: int = 2, seed: int = 0):
    if text_dim % num_heads:
      raise ValueError(f"text_dim {text_dim} is not divisible by num_heads {num_heads}")
    if max_len < 2:
      raise ValueError(f"max_len must be >= 2 (a word and </s>), got {max_len}")
    self.text_dim, self.max_len = text_dim, max_len
    self.tokenizer = WordTokenizer(words)
    self.module = ToyTextTransformer(vocab_size=len(self.tokenizer), width=text_dim,
                                     max_len=max_len, num_layers=num_layers, num_heads=num_heads)
    self.params = _init(self.module, jax.random.PRNGKey(seed))

  def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [B, T], mask bool [B, T])."""
    return self.tokenizer.tokenize(prompts, self.max_len)

  def encode_ids(self, ids: Array, mask: Array) -> tuple[Array, Array]:
    """Already tokenized: ids int32 [B, T], mask bool [B, T] -> (emb [B, T, E], pooled [B, E])."""
    return _forward(self.module, self.params, jnp.asarray(ids), jnp.asarray(mask))

  def encode(self, prompts: Sequence[str]) -> tuple[Array, Array, Array]:
    """-> (emb float32 [B, T, E], mask bool [B, T], pooled float32 [B, E])."""
    ids, mask = self.tokenize(prompts)
    emb, pooled = self.encode_ids(ids, mask)
    return emb, jnp.asarray(mask), pooled
