"""The fixed-size semantic sparse KV cache: a pytree of static-shape arrays and pure functions on it.

Regions (DESIGN 4), per layer and batch element:
  sink   dense KV of the first `sink_chunks` chunks
  local  dense KV of the last `local_chunks` chunks (ring buffer; `full` mode: `max_chunks` of them)
  bank   `bank_slots` entries, each the `k_salient` most salient tokens of one past chunk (chosen per
         layer), with their positions, the chunk's pooled prompt embedding, and usage statistics.
Keys are stored before RoPE with their original (frame, row, col) positions; `read` assigns the
RoPE positions (`absolute`, or `compact`: the context re-indexed into the frames just before the
current chunk). Shapes never depend on data: one compilation serves any video length.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import struct

from blockvid_jax.cache.spec import CacheSpec
from blockvid_jax.models.dit import ChunkKV, KVContext
from blockvid_jax.typing import Array

_NEG_INF = -jnp.inf


@struct.dataclass
class SparseKVCache:
  step: Array         # [] int32, chunks committed so far (= index of the next chunk)
  sink_k: Array       # [K, B, Ssink, N, H]
  sink_v: Array       # [K, B, Ssink, N, H]
  sink_pos: Array     # [B, Ssink, 3]
  sink_chunk: Array   # [B, n_sink] int32, -1 = empty
  local_k: Array      # [K, B, Slocal, N, H]
  local_v: Array      # [K, B, Slocal, N, H]
  local_pos: Array    # [B, Slocal, 3]
  local_chunk: Array  # [B, n_local] int32, -1 = empty
  bank_k: Array       # [K, B, n_bank, k, N, H]
  bank_v: Array       # [K, B, n_bank, k, N, H]
  bank_pos: Array     # [K, B, n_bank, k, 3]
  bank_tok: Array     # [K, B, n_bank, k] bool, token valid (tau cut)
  bank_emb: Array     # [B, n_bank, E] pooled prompt embedding of the entry's chunk
  bank_chunk: Array   # [B, n_bank] int32 chunk index of the entry, -1 = empty
  bank_usage: Array   # [B, n_bank] float32 decayed retrieval count
  local_latent: Array  # [B, n_local, Fc, H, W, C] clean latents of the local chunks
                       # (`recache_on_switch`; else [B, 0])


def init(spec: CacheSpec, batch: int, dtype=jnp.float32, latent_shape: tuple[int, ...] = ()
         ) -> SparseKVCache:
  """An empty cache; latent_shape (Fc, H, W, C) of a chunk: kept for `recache_on_switch`."""
  k, n, h, tc = spec.num_layers, spec.num_heads, spec.head_dim, spec.tokens_per_chunk
  ns, nl, nb, ks = spec.n_sink, spec.n_local, spec.n_bank, spec.k_salient if spec.n_bank else 0
  z = lambda *shape, d=dtype: jnp.zeros(shape, d)
  neg = lambda *shape: jnp.full(shape, -1, jnp.int32)
  return SparseKVCache(
      step=jnp.zeros((), jnp.int32),
      sink_k=z(k, batch, ns * tc, n, h), sink_v=z(k, batch, ns * tc, n, h),
      sink_pos=z(batch, ns * tc, 3, d=jnp.int32), sink_chunk=neg(batch, ns),
      local_k=z(k, batch, nl * tc, n, h), local_v=z(k, batch, nl * tc, n, h),
      local_pos=z(batch, nl * tc, 3, d=jnp.int32), local_chunk=neg(batch, nl),
      bank_k=z(k, batch, nb, ks, n, h), bank_v=z(k, batch, nb, ks, n, h),
      bank_pos=z(k, batch, nb, ks, 3, d=jnp.int32), bank_tok=z(k, batch, nb, ks, d=bool),
      bank_emb=z(batch, nb, spec.embed_dim, d=jnp.float32), bank_chunk=neg(batch, nb),
      bank_usage=z(batch, nb, d=jnp.float32),
      local_latent=(z(batch, nl, *latent_shape, d=jnp.float32) if spec.recache_on_switch
                    else z(batch, 0, d=jnp.float32)))


def logical_axes(cache: SparseKVCache) -> SparseKVCache:
  """Logical axis names of every array (resolve with `parallel.logical_to_sharding`)."""
  kv = ("cache_layers", "cache_batch", "cache_slots", "cache_heads", "cache_kv")
  bank_kv = ("cache_layers", "cache_batch", None, "cache_slots", "cache_heads", "cache_kv")
  b2 = ("cache_batch", None)
  return SparseKVCache(
      step=(), sink_k=kv, sink_v=kv, sink_pos=("cache_batch", "cache_slots", None), sink_chunk=b2,
      local_k=kv, local_v=kv, local_pos=("cache_batch", "cache_slots", None), local_chunk=b2,
      bank_k=bank_kv, bank_v=bank_kv, bank_pos=("cache_layers", "cache_batch", None, None, None),
      bank_tok=("cache_layers", "cache_batch", None, None), bank_emb=("cache_batch", None, None),
      bank_chunk=b2, bank_usage=b2,
      local_latent=("cache_batch",) + (None,) * (cache.local_latent.ndim - 1))


def cosine(a: Array, b: Array) -> Array:
  """a [B, E], b [B, M, E] -> cosine similarities [B, M] (0 for zero vectors)."""
  an = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  bn = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return jnp.einsum("BE,BME->BM", an, bn)


# ------------------------------------------------------------------------------------- read
def retrieve(spec: CacheSpec, cache: SparseKVCache, prompt: Array) -> tuple[Array, Array]:
  """Top-l bank entries for pooled prompt [B, E]: (slot indices [B, l], valid [B, l]).

  Only valid entries of chunks no longer in the local window are eligible; ties keep the lower slot.
  """
  eligible = (cache.bank_chunk >= 0) & (cache.bank_chunk < cache.step - spec.n_local)  # [B, nb]
  scores = jnp.where(eligible, cosine(prompt.astype(jnp.float32), cache.bank_emb), _NEG_INF)
  vals, idx = jax.lax.top_k(scores, spec.n_retrieve)                                   # [B, l]
  return idx, jnp.isfinite(vals)


def _take_slots(x: Array, idx: Array, axis: int) -> Array:
  """Gathers bank entries idx [B, l] along `axis` (the bank axis; batch is axis `axis`-1)."""
  shape = [1] * x.ndim
  shape[axis - 1], shape[axis] = idx.shape
  return jnp.take_along_axis(x, idx.reshape(shape), axis=axis)


def read(spec: CacheSpec, cache: SparseKVCache, prompt: Array
         ) -> tuple[KVContext, Array, SparseKVCache]:
  """The context of the next chunk: sink + top-l retrieved bank entries + local.

  prompt: pooled prompt embedding of the next chunk [B, E].
  Returns (KVContext with per-layer positions/mask, RoPE frame offset of the chunk [B] int32,
  the cache with updated retrieval statistics).
  """
  kk, b = cache.sink_k.shape[:2]
  tc, fpc = spec.tokens_per_chunk, spec.frames_per_chunk
  ks = [cache.sink_k, cache.local_k]
  vs = [cache.sink_v, cache.local_v]
  pos = [cache.sink_pos, cache.local_pos]                                   # [B, S*, 3]
  bank_parts = None
  if spec.n_retrieve:
    idx, ok = retrieve(spec, cache, prompt)                                 # [B, l]
    l, k_sal = spec.n_retrieve, spec.k_salient
    rk = _take_slots(cache.bank_k, idx, 2).reshape(kk, b, l * k_sal, *cache.bank_k.shape[4:])
    rv = _take_slots(cache.bank_v, idx, 2).reshape(kk, b, l * k_sal, *cache.bank_v.shape[4:])
    rpos = _take_slots(cache.bank_pos, idx, 2).reshape(kk, b, l * k_sal, 3)  # [K, B, l*k, 3]
    rtok = _take_slots(cache.bank_tok, idx, 2) & ok[None, :, :, None]       # [K, B, l, k]
    rchunk = jnp.where(ok, jnp.take_along_axis(cache.bank_chunk, idx, axis=1), -1)  # [B, l]
    bank_parts = (rk, rv, rpos, rtok.reshape(kk, b, l * k_sal), rchunk)
    hit = jnp.sum(jax.nn.one_hot(idx, spec.n_bank) * ok[..., None], axis=1)  # [B, nb]
    cache = cache.replace(bank_usage=spec.usage_decay * cache.bank_usage + hit)

  # Group (chunk) table of the whole context: sink | retrieved | local.
  chunks = [cache.sink_chunk] + ([bank_parts[4]] if bank_parts else []) + [cache.local_chunk]
  sizes = [tc] * spec.n_sink + ([spec.k_salient] * spec.n_retrieve) + [tc] * spec.n_local
  all_chunks = jnp.concatenate(chunks, axis=1)                             # [B, G]
  valid = all_chunks >= 0                                                  # [B, G]

  def expand(g: Array) -> Array:  # per-group values [B, G] -> per-token [B, S]
    return jnp.concatenate([jnp.repeat(g[:, i:i + 1], n, axis=1) for i, n in enumerate(sizes)],
                           axis=1) if sizes else g

  k_all = [ks[0]] + ([bank_parts[0]] if bank_parts else []) + [ks[1]]
  v_all = [vs[0]] + ([bank_parts[1]] if bank_parts else []) + [vs[1]]
  shared = lambda p: jnp.broadcast_to(p[None], (kk,) + p.shape)
  p_all = [shared(pos[0])] + ([bank_parts[2]] if bank_parts else []) + [shared(pos[1])]
  positions = jnp.concatenate(p_all, axis=2)                               # [K, B, S, 3]
  tok_valid = jnp.broadcast_to(expand(valid)[None], positions.shape[:3])   # [K, B, S]
  if bank_parts:
    s0 = spec.n_sink * tc
    s1 = s0 + spec.n_retrieve * spec.k_salient
    tok_valid = tok_valid.at[:, :, s0:s1].set(bank_parts[3])

  if spec.positions == "compact":
    # Rank of each valid context chunk in time order -> its frame base just before the chunk.
    earlier = (all_chunks[:, None, :] < all_chunks[:, :, None]) & valid[:, None, :]  # [B, G, G]
    rank = jnp.sum(earlier, axis=-1).astype(jnp.int32)                     # [B, G]
    shift = expand((rank - all_chunks) * fpc)                               # [B, S]
    positions = positions.at[..., 0].add(shift[None])
    offset = jnp.sum(valid, axis=1).astype(jnp.int32) * fpc                # [B]
  else:
    offset = jnp.broadcast_to(cache.step * fpc, (b,)).astype(jnp.int32)
  ctx = KVContext(k=jnp.concatenate(k_all, axis=2), v=jnp.concatenate(v_all, axis=2),
                  positions=jnp.where(tok_valid[..., None], positions, 0), mask=tok_valid)
  return ctx, offset, cache


# ------------------------------------------------------------------------------------ write
def select_salient(spec: CacheSpec, saliency: Array) -> tuple[Array, Array]:
  """Per layer top-k tokens of a chunk. saliency [K, B, Tc] -> (indices [K, B, k], valid [K, B, k]).

  With tau < 1, tokens beyond the smallest set whose (chunk-normalised) cumulative mass reaches tau
  are marked invalid inside the k budget.
  """
  vals, idx = jax.lax.top_k(saliency, spec.k_salient)                      # [K, B, k] sorted
  if spec.tau >= 1.0:
    return idx, jnp.ones(idx.shape, bool)
  mass = vals / jnp.maximum(jnp.sum(saliency, axis=-1, keepdims=True), 1e-30)
  before = jnp.cumsum(mass, axis=-1) - mass                                # mass of better tokens
  return idx, before < spec.tau


def choose_victim(spec: CacheSpec, cache: SparseKVCache, prompt: Array) -> Array:
  """Bank slot [B] that the next entry goes to: the first empty slot, else one picked by policy.

  Entries of chunks that stay in the local window are protected; ties go to the oldest entry.
  """
  chunk, step = cache.bank_chunk, cache.step
  empty = chunk < 0                                                         # [B, nb]
  cand = (~empty) & (chunk <= step - spec.n_local)
  cand = jnp.where(jnp.any(cand, axis=1, keepdims=True), cand, ~empty)      # nothing unprotected
  big = jnp.iinfo(jnp.int32).max
  age_key = jnp.where(cand, chunk, big)                                     # older = smaller
  if spec.eviction == "fifo":
    pick = cand
  elif spec.eviction == "least_retrieved":
    u = jnp.where(cand, cache.bank_usage, jnp.inf)
    pick = cand & (u <= jnp.min(u, axis=1, keepdims=True))
  else:  # redundant: most similar to another entry (or to the incoming one)
    emb = jnp.concatenate([cache.bank_emb, prompt[:, None].astype(jnp.float32)], axis=1)  # [B, nb+1, E]
    en = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    sim = jnp.einsum("BME,BNE->BMN", en[:, :-1], en)                        # [B, nb, nb+1]
    nb = chunk.shape[1]
    partner = jnp.concatenate([~empty, jnp.ones_like(empty[:, :1])], axis=1)  # [B, nb+1]
    partner = partner[:, None, :] & ~jnp.eye(nb, nb + 1, dtype=bool)[None]
    red = jnp.max(jnp.where(partner, sim, -jnp.inf), axis=-1)                # [B, nb]
    red = jnp.where(cand, red, -jnp.inf)
    pick = cand & (red >= jnp.max(red, axis=1, keepdims=True))
  victim = jnp.argmin(jnp.where(pick, age_key, big), axis=1)                # [B]
  return jnp.where(jnp.any(empty, axis=1), jnp.argmax(empty, axis=1), victim).astype(jnp.int32)


def _write_rows(buf: Array, rows: Array, start, axis: int, on=True) -> Array:
  """buf with `rows` written at `start` along `axis` where `on` ([] bool), in place: the select is
  over the written rows only (the old rows read back), never over the whole buffer."""
  rows = rows.astype(buf.dtype)
  if on is not True:
    old = jax.lax.dynamic_slice_in_dim(buf, start, rows.shape[axis], axis=axis)
    rows = jnp.where(on, rows, old)
  return jax.lax.dynamic_update_slice_in_dim(buf, rows, start, axis=axis)


def _write_entry(buf: Array, val: Array, victim: Array, lead: int, on) -> Array:
  """buf [*lead, B, n_bank, ...] with entry victim[b] of batch element b set to val [*lead, B, ...]
  where `on` ([] bool): a scatter of B entries, no select over the bank."""
  b = jnp.arange(victim.shape[0])
  index = (slice(None),) * lead + (b, victim)
  val = jnp.where(on, val.astype(buf.dtype), buf[index])
  return buf.at[index].set(val)


def write(spec: CacheSpec, cache: SparseKVCache, kv: ChunkKV, prompt: Array,
          latent: Optional[Array] = None) -> SparseKVCache:
  """Commits one finished chunk (its pre-RoPE KV, positions and saliency) and its pooled prompt;
  with `recache_on_switch`, a local chunk's clean latent [B, Fc, H, W, C] too."""
  c, tc = cache.step, spec.tokens_per_chunk
  b = kv.positions.shape[0]
  # Store original positions: the chunk's frames are c*fpc + (frame - first frame of the chunk),
  # whatever RoPE offset (`compact`) the chunk was run at.
  frames = kv.positions[..., 0]
  frames = frames - jnp.min(frames, axis=1, keepdims=True) + c * spec.frames_per_chunk
  kv = kv.replace(positions=kv.positions.at[..., 0].set(frames))
  chunk_id = jnp.broadcast_to(c, (b, 1)).astype(jnp.int32)
  in_sink = c < spec.n_sink
  new = cache.replace(step=c + 1)
  if spec.n_sink:
    slot = jnp.minimum(c, spec.n_sink - 1)
    new = new.replace(sink_k=_write_rows(cache.sink_k, kv.k, slot * tc, 2, in_sink),
                      sink_v=_write_rows(cache.sink_v, kv.v, slot * tc, 2, in_sink),
                      sink_pos=_write_rows(cache.sink_pos, kv.positions, slot * tc, 1, in_sink),
                      sink_chunk=_write_rows(cache.sink_chunk, chunk_id, slot, 1, in_sink))
  slot = jnp.maximum(c - spec.n_sink, 0) % spec.n_local
  to_local = ~in_sink
  new = new.replace(local_k=_write_rows(cache.local_k, kv.k, slot * tc, 2, to_local),
                    local_v=_write_rows(cache.local_v, kv.v, slot * tc, 2, to_local),
                    local_pos=_write_rows(cache.local_pos, kv.positions, slot * tc, 1, to_local),
                    local_chunk=_write_rows(cache.local_chunk, chunk_id, slot, 1, to_local))
  if spec.recache_on_switch and latent is not None:
    new = new.replace(local_latent=_write_rows(cache.local_latent, latent[:, None], slot, 1,
                                               to_local))
  if spec.n_bank:
    if kv.saliency is None:
      raise ValueError("sparse cache writes need the chunk's saliency (collect_saliency=True)")
    idx, tok_ok = select_salient(spec, kv.saliency)                          # [K, B, k]
    take = lambda x: jnp.take_along_axis(x, idx[..., None, None], axis=2)   # [K, B, k, N, H]
    pos = jnp.take_along_axis(jnp.broadcast_to(kv.positions[None], idx.shape[:2] + kv.positions.shape[1:]),
                              idx[..., None], axis=2)                        # [K, B, k, 3]
    victim = choose_victim(spec, cache, prompt)                              # [B]
    put = lambda old, val, lead: _write_entry(old, val, victim, lead, to_local)
    new = new.replace(
        bank_k=put(cache.bank_k, take(kv.k), 1), bank_v=put(cache.bank_v, take(kv.v), 1),
        bank_pos=put(cache.bank_pos, pos, 1), bank_tok=put(cache.bank_tok, tok_ok, 1),
        bank_emb=put(cache.bank_emb, prompt, 0),
        bank_chunk=put(cache.bank_chunk, chunk_id[:, 0], 0),
        bank_usage=put(cache.bank_usage, jnp.ones((b,), jnp.float32), 0))
  return new


# ---------------------------------------------------------------------------------- recache
def recache_local(spec: CacheSpec, cache: SparseKVCache, prompt: Array,
                  rerun: Callable[[KVContext, Array, Array], ChunkKV]) -> SparseKVCache:
  """Prompt switch (LongLive's KV recache): the local chunks' K/V recomputed under the new prompt.

  The local chunks' clean latents are re-run, oldest first, by `rerun(ctx, offset, latent) ->
  ChunkKV` (the model with the new prompt at the commit pass's flow time), each against the sink
  and the already re-run older local chunks (no bank entries), at the RoPE positions `read` gives
  them; their K/V replace the old ones in place. Sink and bank keep the K/V of their own prompts.
  prompt: the new pooled embedding [B, E] (only for `read`'s bookkeeping, which is discarded).
  """
  if not spec.recache_on_switch:
    raise ValueError("recache_local needs cache.recache_on_switch=True (the local latents)")
  tc = spec.tokens_per_chunk
  s_local = spec.n_sink * tc + spec.n_retrieve * spec.k_salient           # first local token
  big = jnp.iinfo(jnp.int32).max
  ids = cache.local_chunk[0]                                               # [nl] same for all B
  order = jnp.argsort(jnp.where(ids >= 0, ids, big))                       # oldest first
  ctx, _, _ = read(spec, cache, prompt)                                    # sink | bank | local
  local_ids = jnp.repeat(cache.local_chunk, tc, axis=1)                    # [B, nl*tc]
  b = local_ids.shape[0]
  for r in range(spec.n_local):
    slot, first = order[r], s_local + order[r] * tc
    cid = ids[slot]
    allowed = jnp.concatenate([jnp.ones((b, spec.n_sink * tc), bool),    # sink, no bank entries,
                               jnp.zeros((b, s_local - spec.n_sink * tc), bool),
                               (local_ids >= 0) & (local_ids < cid)], axis=1)  # older local [B, S]
    pos = jax.lax.dynamic_slice_in_dim(ctx.positions[0], first, tc, axis=1)  # [B, tc, 3]
    offset = jnp.min(pos[..., 0], axis=1).astype(jnp.int32)                # [B]
    latent = jax.lax.dynamic_index_in_dim(cache.local_latent, slot, axis=1, keepdims=False)
    kv = rerun(ctx.replace(mask=ctx.mask & allowed[None]), offset, latent)
    # Empty slots (video start) keep what they hold; the new K/V go to the cache and the context.
    keep_empty = lambda new, buf, start: jnp.where(
        cid >= 0, new.astype(buf.dtype), jax.lax.dynamic_slice_in_dim(buf, start, tc, axis=2))
    k_new = keep_empty(kv.k, cache.local_k, slot * tc)                     # [K, B, tc, N, H]
    v_new = keep_empty(kv.v, cache.local_v, slot * tc)
    cache = cache.replace(local_k=_write_rows(cache.local_k, k_new, slot * tc, 2),
                          local_v=_write_rows(cache.local_v, v_new, slot * tc, 2))
    ctx = ctx.replace(k=_write_rows(ctx.k, k_new, first, 2), v=_write_rows(ctx.v, v_new, first, 2))
  return cache
