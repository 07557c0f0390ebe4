"""Attention implementations behind one entry point (DESIGN 9.1), and saliency from the log-sum-exp.

  xla      the reference: logits, softmax and probabilities materialised ([B, N, L, S] float32).
  chunked  online softmax over key blocks in plain JAX (flash attention's algorithm): O(L * block)
           memory forward AND backward (a custom VJP that recomputes each block's probabilities
           from the saved log-sum-exp instead of storing them). Runs everywhere, CPU included.
  cudnn    `jax.nn.dot_product_attention(implementation="cudnn")`: the cuDNN flash kernel (GPU
           only; bf16/fp16, head_dim <= 128 and a multiple of 8).
  auto     cudnn where it applies on a GPU, chunked for long sequences (and on TPU), else xla.
           Never a GPU kernel on CPU.

Every implementation returns (out [B, L, N, H], lse [B, N, L] float32): the log-sum-exp of each
query's scaled, masked logits. `lse_saliency` turns it into DESIGN 4.1's saliency (the mean over
heads and queries of the probability mass each key receives) for just the keys that need it (a
chunk's own tokens), so no implementation has to hand back probabilities: exact against the xla
definition (`tests/test_attention_kernels.py`).

Masks are boolean [B|1, L, S] (True = attend) or structural (`GroupMask`: query and key group ids,
a small [B|1, Gq, Gk] table and per-key validity - the chunk geometry, never an [L, S] array), which
`chunked` expands one key block at a time (and xla/cudnn expand whole). Masked logits are
-1e30 (finite: a fully masked row averages all keys instead of producing NaN, in every
implementation alike). `USED` counts, per implementation, the attention calls traced with it.

Not here yet (issue 10): TPU splash attention with structural masks, a Pallas GPU library.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from blockvid_jax.errors import ConfigError
from blockvid_jax.typing import Array

IMPLEMENTATIONS = ("xla", "chunked", "cudnn", "auto")
USED = {name: 0 for name in IMPLEMENTATIONS if name != "auto"}
NEG = -1e30              # logit of a masked key
KEY_BLOCK = 512          # chunked: keys per block
AUTO_CHUNKED_MIN = 1 << 24   # auto: L * S from which the xla path's logits are too big to keep


@struct.dataclass
class GroupMask:
  """A structural attention mask: query l may attend key s iff table[b, q_group[l], k_group[s]]
  and k_valid[b, s]. Block-causal: groups = chunk ids, table lower-triangular; teacher forcing:
  2n groups (clean | noisy chunks); a cached context: one more key group for the context slots,
  whose validity is k_valid."""
  q_group: Array                    # [Lq] int32
  k_group: Array                    # [Lk] int32
  table: Array                      # [B|1, Gq, Gk] bool
  k_valid: Optional[Array] = None   # [B|1, Lk] bool (None: all valid)

  def dense(self) -> Array:
    """[B|1, Lq, Lk] bool."""
    return self.block(self.k_group, self.k_valid)

  def block(self, k_group: Array, k_valid: Optional[Array]) -> Array:
    """The dense mask [B|1, Lq, Bk] of the keys with groups k_group [Bk] (validity [B|1, Bk])."""
    m = self.table[:, self.q_group[:, None], jnp.clip(k_group, 0)[None, :]]    # [B|1, Lq, Bk]
    m = m & (k_group >= 0)[None, None, :]
    return m if k_valid is None else m & k_valid[:, None, :]

  def keys(self, start: int) -> "GroupMask":
    """The mask of the keys from index `start` on."""
    return self.replace(k_group=self.k_group[start:],
                        k_valid=None if self.k_valid is None else self.k_valid[:, start:])

  def with_context(self, valid: Array) -> "GroupMask":
    """S context keys in front (validity valid [B, S]), visible to every query group."""
    b, slots = valid.shape
    g = self.table.shape[2]
    table = jnp.concatenate([self.table, jnp.ones(self.table.shape[:2] + (1,), bool)], axis=2)
    own = (jnp.ones((b, self.k_group.shape[0]), bool) if self.k_valid is None
           else jnp.broadcast_to(self.k_valid, (b, self.k_group.shape[0])))
    return GroupMask(q_group=self.q_group,
                     k_group=jnp.concatenate([jnp.full((slots,), g, jnp.int32), self.k_group]),
                     table=table, k_valid=jnp.concatenate([valid, own], axis=1))


def available(backend: Optional[str] = None) -> tuple[str, ...]:
  """The implementations that can run on `backend` (default: jax's default backend)."""
  backend = backend or jax.default_backend()
  return ("xla", "chunked", "auto") + (("cudnn",) if backend == "gpu" else ())


def resolve(impl: str, q_shape: tuple[int, ...], k_shape: tuple[int, ...], dtype,
            backend: Optional[str] = None) -> str:
  """The implementation `impl` runs as for these shapes ([B, L, N, H], [B, S, N, H]) and dtype;
  a one-line ConfigError for an unknown or unavailable one."""
  backend = backend or jax.default_backend()
  if impl not in IMPLEMENTATIONS:
    raise ConfigError(f"model.attention_impl must be one of {list(IMPLEMENTATIONS)}, got {impl!r}")
  if impl not in available(backend):
    raise ConfigError(f"attention implementation {impl!r} is not available on {backend}; "
                      f"available: {list(available(backend))}")
  if impl != "auto":
    return impl
  head_dim = q_shape[-1]
  if (backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim <= 128
      and head_dim % 8 == 0):
    return "cudnn"
  if backend == "tpu" or q_shape[1] * k_shape[1] >= AUTO_CHUNKED_MIN:
    return "chunked"
  return "xla"


def attention(q: Array, k: Array, v: Array, mask: Optional[Array], impl: str = "xla"
              ) -> tuple[Array, Array]:
  """q [B, L, N, H]; k, v [B, S, N, H]; mask [B|1, L, S] bool or None ->
  (out [B, L, N, H], lse [B, N, L] float32)."""
  name = resolve(impl, q.shape, k.shape, q.dtype)
  USED[name] += 1
  if name == "chunked":
    return chunked(q, k, v, mask)
  if isinstance(mask, GroupMask):
    mask = mask.dense()
  if name == "cudnn":
    return _cudnn(q, k, v, mask)
  return _xla(q, k, v, mask)


def _logits(q: Array, k: Array, mask: Optional[Array]) -> Array:
  """Scaled logits [B, N, L, S] float32 of q [B, N, L, H], k [B, N, S, H] (dense mask [B|1, L, S])."""
  s = jnp.einsum("bnlh,bnsh->bnls", q, k, preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
  return s if mask is None else jnp.where(mask[:, None], s, NEG)


def _xla(q, k, v, mask):
  # Heads next to batch before the two matmuls (XLA:CPU fuses the mask and softmax into a
  # [B, L, N, H]-layout matmul badly: 4x slower forward; benchmarks/time_breakdown.py).
  q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))                 # [B, N, *, H]
  logits = _logits(q, k, mask)                                          # [B, N, L, S]
  lse = jax.nn.logsumexp(logits, axis=-1)                               # [B, N, L]
  probs = jnp.exp(logits - lse[..., None])
  out = jnp.einsum("bnls,bnsh->bnlh", probs.astype(v.dtype), v)         # [B, N, L, H]
  return jnp.swapaxes(out, 1, 2), lse


def _cudnn(q, k, v, mask):
  m = None if mask is None else jnp.broadcast_to(mask[:, None], (q.shape[0], 1) + mask.shape[1:])
  out, lse = jax.nn.dot_product_attention(q, k, v, mask=m, scale=1.0 / np.sqrt(q.shape[-1]),
                                          implementation="cudnn", return_residual=True)
  lse = lse if lse.shape[1] == q.shape[2] else jnp.swapaxes(lse, 1, 2)  # [B, N, L] (BNT or BTN)
  return out, lse.astype(jnp.float32)


# ------------------------------------------------------------------------------- chunked
def _blocks(k: Array, v: Array, mask, block: int):
  """k, v [B, N, S, H] -> [nb, B, N, Bk, H]; the mask per block: dense [nb, B|1, L, Bk], or for a
  GroupMask its key groups [nb, Bk] (padding -1) and validity [nb, B|1, Bk]; and a flag [nb, Bk] of
  the real keys (padding keys get -inf, so they never count, even in a fully masked row)."""
  s = k.shape[2]
  nb = -(-s // block)
  pad = nb * block - s
  k, v = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (k, v))
  split = lambda a: jnp.moveaxis(a.reshape(*a.shape[:2], nb, block, a.shape[-1]), 2, 0)
  real = (jnp.arange(nb * block) < s).reshape(nb, block)                # [nb, Bk]
  if isinstance(mask, GroupMask):
    groups = jnp.pad(mask.k_group, (0, pad), constant_values=-1).reshape(nb, block)
    valid = None
    if mask.k_valid is not None:
      valid = jnp.pad(mask.k_valid, ((0, 0), (0, pad)))
      valid = jnp.moveaxis(valid.reshape(valid.shape[0], nb, block), 1, 0)   # [nb, B|1, Bk]
    mask = (groups, valid)
  elif mask is not None:
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad)))
    mask = jnp.moveaxis(mask.reshape(*mask.shape[:2], nb, block), 2, 0)  # [nb, B|1, L, Bk]
  return split(k), split(v), mask, real


def _block_mask(mask, blocked):
  """One key block's dense mask [B|1, L, Bk] (or None) from `_blocks`' per-block slice."""
  if isinstance(mask, GroupMask):
    groups, valid = blocked
    return mask.block(groups, valid)
  return blocked


def _block_logits(q, kb, mb, real):
  s = _logits(q, kb, mb)                                                # [B, N, L, Bk]
  return jnp.where(real[None, None, None], s, -jnp.inf)


def _chunked_fwd_impl(q, k, v, mask, block):
  """q [B, N, L, H], k, v [B, N, S, H] -> out [B, N, L, H] (q's dtype), lse [B, N, L] float32."""
  kbs, vbs, mbs, real = _blocks(k, v, mask, block)
  b, n, l, h = q.shape
  init = (jnp.full((b, n, l), -jnp.inf, jnp.float32), jnp.zeros((b, n, l), jnp.float32),
          jnp.zeros((b, n, l, h), jnp.float32))

  def body(carry, xs):
    m, den, acc = carry
    kb, vb, mb, rb = xs
    s = _block_logits(q, kb, _block_mask(mask, mb), rb)                 # [B, N, L, Bk]
    m_new = jnp.maximum(m, s.max(axis=-1))
    p = jnp.exp(s - m_new[..., None])
    corr = jnp.exp(m - m_new)
    den = den * corr + p.sum(axis=-1)
    acc = acc * corr[..., None] + jnp.einsum("bnls,bnsh->bnlh", p.astype(vb.dtype), vb,
                                             preferred_element_type=jnp.float32)
    return (m_new, den, acc), None

  (m, den, acc), _ = jax.lax.scan(body, init, (kbs, vbs, mbs, real))
  out = (acc / den[..., None]).astype(q.dtype)
  return out, m + jnp.log(den)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _chunked_core(q, k, v, mask, block):
  return _chunked_fwd_impl(q, k, v, mask, block)


def _chunked_fwd(q, k, v, mask, block):
  out, lse = _chunked_fwd_impl(q, k, v, mask, block)
  return (out, lse), (q, k, v, mask, out, lse)


def _chunked_bwd(block, res, cts):
  q, k, v, mask, out, lse = res
  d_out, d_lse = cts                                                    # [B,N,L,H], [B,N,L]
  d_out = d_out.astype(jnp.float32)
  kbs, vbs, mbs, real = _blocks(k, v, mask, block)
  delta = jnp.sum(d_out * out.astype(jnp.float32), axis=-1)             # [B, N, L]
  scale = 1.0 / np.sqrt(q.shape[-1])

  def body(dq, xs):
    kb, vb, mb, rb = xs
    p = jnp.exp(_block_logits(q, kb, _block_mask(mask, mb), rb) - lse[..., None])  # [B,N,L,Bk]
    dv = jnp.einsum("bnls,bnlh->bnsh", p, d_out)
    dp = jnp.einsum("bnlh,bnsh->bnls", d_out, vb.astype(jnp.float32))
    ds = p * (dp - delta[..., None] + d_lse[..., None])                  # d logits
    dq = dq + jnp.einsum("bnls,bnsh->bnlh", ds, kb.astype(jnp.float32)) * scale
    dk = jnp.einsum("bnls,bnlh->bnsh", ds, q.astype(jnp.float32)) * scale
    return dq, (dk, dv)

  dq, (dks, dvs) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32), (kbs, vbs, mbs, real))
  s = k.shape[2]
  unblock = lambda a: jnp.moveaxis(a, 0, 2).reshape(*a.shape[1:3], -1, a.shape[-1])[:, :, :s]
  d_mask = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, jax.dtypes.float0), mask)
  return (dq.astype(q.dtype), unblock(dks).astype(k.dtype), unblock(dvs).astype(v.dtype), d_mask)


_chunked_core.defvjp(_chunked_fwd, _chunked_bwd)


def chunked(q: Array, k: Array, v: Array, mask: Optional[Array], block: Optional[int] = None
            ) -> tuple[Array, Array]:
  """Online-softmax attention over key blocks of `block` (default KEY_BLOCK; module docstring):
  q [B, L, N, H], k, v [B, S, N, H], mask [B|1, L, S] -> (out [B, L, N, H], lse [B, N, L])."""
  q_, k_, v_ = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))               # [B, N, *, H]
  out, lse = _chunked_core(q_, k_, v_, mask, min(block or KEY_BLOCK, k.shape[1]))
  return jnp.swapaxes(out, 1, 2), lse


# ------------------------------------------------------------------------------- saliency
def lse_saliency(q: Array, k: Array, lse: Array, mask: Optional[Array]) -> Array:
  """Mean over heads and queries of the attention probability of each key in `k`: q [B, L, N, H],
  k [B, S', N, H] (any subset of the attended keys), lse [B, N, L] of the full attention, mask
  [B|1, L, S'] -> [B, S'] float32. Equals the xla path's probability mass of those keys."""
  q_, k_ = (jnp.swapaxes(a, 1, 2) for a in (q, k))                      # [B, N, *, H]
  if isinstance(mask, GroupMask):
    mask = mask.dense()
  p = jnp.exp(_logits(q_, k_, mask) - lse[..., None])                   # [B, N, L, S']
  return jnp.mean(p, axis=(1, 2))
