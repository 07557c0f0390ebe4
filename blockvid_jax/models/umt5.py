"""The umT5 text encoder of Wan2.1 (DESIGN 8.2): `UMT5Spec` + `UMT5Encoder` (Flax linen).

  UMT5Encoder(spec).apply({"params": p}, ids [B, T] int32, mask [B, T]) -> [B, T, E] float32

Pre-norm T5 blocks without biases; attention without 1/sqrt(d) scaling, plus a per-layer
bidirectional relative-position bias (32 buckets, max distance 128); a gated-GELU (tanh) FFN; a final
RMS norm. Rows where `mask` is 0 are zero in the output (what the DiT's context expects). Every param
carries logical axis names (`parallel/axes.py`) so the 5.7B encoder shards like the DiT.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.models.embeddings import dense
from blockvid_jax.models.spec import DTYPES
from blockvid_jax.models.text import masked_mean
from blockvid_jax.typing import Array
from blockvid_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class UMT5Spec:
  """Sizes of a umT5 encoder (defaults: umt5-xxl, the Wan2.1 text encoder)."""
  vocab_size: int = 256384
  dim: int = 4096           # E, model width
  dim_attn: int = 4096      # N * H
  dim_ffn: int = 10240      # FFN width
  num_heads: int = 64       # N
  num_layers: int = 24
  num_buckets: int = 32     # relative-position buckets (both directions together)
  max_distance: int = 128   # distance at which the log-spaced buckets end
  eps: float = 1e-6         # T5LayerNorm epsilon
  dtype: str = "float32"    # compute dtype of the matmuls; norms and softmax stay float32

  def __post_init__(self):
    if self.dim_attn % self.num_heads:
      raise ConfigError(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}")
    if self.dtype not in DTYPES:
      raise ConfigError(f"unknown umT5 dtype {self.dtype!r}; choose one of {sorted(DTYPES)}")
    if self.num_buckets % 4:
      raise ConfigError(f"num_buckets must be a multiple of 4, got {self.num_buckets}")


def relative_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bidirectional T5 buckets of rel = k - q: [q_len, k_len] int32 (a constant, built in NumPy)."""
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]  # [Q, K]
  half = num_buckets // 2
  bucket = np.where(rel > 0, half, 0)
  dist = np.abs(rel)
  exact = half // 2
  with np.errstate(divide="ignore"):
    large = exact + (np.log(np.maximum(dist, 1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (bucket + np.where(dist < exact, dist, large)).astype(np.int32)


class T5Norm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale, in float32."""
  eps: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                       (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps) * scale


class T5Attention(nn.Module):
  """Multi-head self-attention, no biases, no scaling, logits + relative bias + key padding mask."""
  dim: int
  dim_attn: int
  num_heads: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: Array, bias: Array, key_mask: Array) -> Array:
    b, t, _ = x.shape
    n, h = self.num_heads, self.dim_attn // self.num_heads

    def proj(name):
      y = dense(self.dim_attn, ("embed", "heads"), self.dtype, jnp.float32, name, use_bias=False)(x)
      return y.reshape(b, t, n, h)  # [B, T, N, H]

    q, k, v = proj("q"), proj("k"), proj("v")
    logits = jnp.einsum("BQNH,BKNH->BNQK", q, k,
                        preferred_element_type=jnp.float32)  # [B, N, Q, K]
    logits = logits + bias[None] + jnp.where(key_mask, 0.0, jnp.finfo(jnp.float32).min)[:, None, None]
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # [B, N, Q, K]
    out = jnp.einsum("BNQK,BKNH->BQNH", weights, v).reshape(b, t, n * h)  # [B, T, N*H]
    return dense(self.dim, ("heads", "embed"), self.dtype, jnp.float32, "o", use_bias=False)(out)


class T5FeedForward(nn.Module):
  """fc2(fc1(x) * gelu_tanh(gate(x)))."""
  dim: int
  dim_ffn: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    gate = dense(self.dim_ffn, ("embed", "mlp"), self.dtype, jnp.float32, "gate", use_bias=False)(x)
    up = dense(self.dim_ffn, ("embed", "mlp"), self.dtype, jnp.float32, "fc1", use_bias=False)(x)
    h = up * jax.nn.gelu(gate, approximate=True)  # [B, T, M]
    return dense(self.dim, ("mlp", "embed"), self.dtype, jnp.float32, "fc2", use_bias=False)(h)


class T5Block(nn.Module):
  """x += attn(norm1(x)); x += ffn(norm2(x)); the layer owns its relative-bias table."""
  spec: UMT5Spec

  @nn.compact
  def __call__(self, x: Array, buckets: np.ndarray, key_mask: Array) -> Array:
    s, dtype = self.spec, DTYPES[self.spec.dtype]
    table = self.param("pos_bias", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("rel_buckets", "rel_heads")),
        (s.num_buckets, s.num_heads), jnp.float32)  # [buckets, N]
    bias = jnp.transpose(table[buckets], (2, 0, 1))  # [N, Q, K]
    h = T5Norm(s.eps, name="norm1")(x)
    x = x + T5Attention(s.dim, s.dim_attn, s.num_heads, dtype, name="attn")(h, bias, key_mask)
    h = T5Norm(s.eps, name="norm2")(x)
    return x + T5FeedForward(s.dim, s.dim_ffn, dtype, name="ffn")(h)


class UMT5Encoder(nn.Module):
  """ids [B, T], mask [B, T] -> [B, T, E] float32, rows with mask 0 zeroed."""
  spec: UMT5Spec

  @nn.compact
  def __call__(self, ids: Array, mask: Array) -> Array:
    s = self.spec
    table = self.param("token_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("vocab", "embed")), (s.vocab_size, s.dim), jnp.float32)
    x = jnp.take(table, ids, axis=0)  # [B, T, E]
    key_mask = jnp.asarray(mask) > 0  # [B, T]
    buckets = relative_buckets(ids.shape[1], ids.shape[1], s.num_buckets, s.max_distance)
    for i in range(s.num_layers):
      x = T5Block(s, name=f"block_{i}")(x, buckets, key_mask)
    x = T5Norm(s.eps, name="norm")(x)
    return jnp.where(key_mask[..., None], x, 0.0).astype(jnp.float32)  # [B, T, E]


def logical_partition_specs(spec: UMT5Spec):
  """The params tree of `UMT5Encoder(spec)` as logical PartitionSpecs (`parallel.logical_to_sharding`
  turns them into NamedShardings on a mesh)."""
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  boxed = jax.eval_shape(UMT5Encoder(spec).init, jax.random.key(0), ids, ids)["params"]
  return nn.get_partition_spec(boxed)


class UMT5TextEncoder:
  """Tokenizer + umT5 with the package's text-encoder interface (see `models/text.py`):

    encode(prompts) -> (emb [B, T, E] float32, zero at padding; mask [B, T] bool; pooled [B, E])
  """

  def __init__(self, spec: UMT5Spec, params, tokenizer):
    self.spec, self.params, self.tokenizer = spec, params, tokenizer
    self.max_len = tokenizer.max_length
    self._apply = jax.jit(UMT5Encoder(spec).apply)

  def encode(self, prompts, batch_sharding=None) -> tuple[Array, Array, Array]:
    """`batch_sharding`: optional sharding of the [B, T] token ids (e.g. B over the mesh's data
    axes, B a multiple of their size): the prompts are then encoded data-parallel."""
    ids, mask = self.tokenizer(list(prompts))  # [B, T] int32 each
    put = jnp.asarray if batch_sharding is None else (
        lambda a: jax.device_put(a, batch_sharding))
    emb = self._apply({"params": self.params}, put(ids), put(mask))  # [B, T, E]
    mask = jnp.asarray(mask) > 0
    return emb, mask, masked_mean(emb, mask)
