"""Long-video generation from a config: prompts -> per-chunk text embeddings -> rollout -> video.

The library behind `python -m blockvid_jax.sample` and the Colab notebook. User mistakes raise
`ConfigError` with one line (the CLI prints it and exits 2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
import warnings
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax import parallel
from blockvid_jax.diffusion.sampler import BlockSampler, build_sampler, state_logical_axes
from blockvid_jax.models import DiTSpec, init_params
from blockvid_jax.models.params import init_boxed
from blockvid_jax.errors import CheckpointError, ConfigError

OUTPUT_SUFFIXES = (".mp4", ".gif", ".npy")


def read_prompts(path: str, chunks_per_prompt: int = 1) -> list[str]:
  """One prompt per chunk from a `.txt` (one prompt per line, each for `chunks_per_prompt` chunks)
  or a `.json` list of {"prompt": str, "chunks": int}."""
  if chunks_per_prompt < 1:
    raise ConfigError(f"--chunks_per_prompt must be >= 1, got {chunks_per_prompt}")
  if not os.path.isfile(path):
    raise ConfigError(f"prompts file {path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.endswith(".json"):
    try:
      items = json.loads(text)
    except json.JSONDecodeError as e:
      raise ConfigError(f"prompts file {path!r} is not valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(items, list) or not items:
      raise ConfigError(f"prompts file {path!r} must hold a non-empty list of "
                        '{"prompt": str, "chunks": int}')
    out = []
    for i, it in enumerate(items):
      if (not isinstance(it, dict) or not isinstance(it.get("prompt"), str)
          or not it["prompt"].strip()):
        raise ConfigError(f"prompts file {path!r}: item {i} needs a non-empty string 'prompt'")
      n = it.get("chunks", chunks_per_prompt)
      if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"prompts file {path!r}: item {i} has chunks={n!r}, need an integer >= 1")
      out += [it["prompt"].strip()] * n
    return out
  if not path.endswith(".txt"):
    raise ConfigError(f"prompts file {path!r} must end in .txt or .json")
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if not lines:
    raise ConfigError(f"prompts file {path!r} has no prompts")
  return [ln for ln in lines for _ in range(chunks_per_prompt)]


def chunk_prompts(prompts: Sequence[str], num_chunks: int) -> list[str]:
  """The prompt of each chunk: the narrative is cycled (or cut) to `num_chunks`."""
  if num_chunks < 1:
    raise ConfigError(f"num_chunks must be >= 1, got {num_chunks}")
  return [prompts[i % len(prompts)] for i in range(num_chunks)]


def make_text_encoder(config, spec: DiTSpec, mesh=None):
  """The text encoder named by `config.text.encoder`: `toy` (built in) or `umt5` (user weights).

  `mesh`: the umT5 params are placed on it by their logical axis names (`parallel.LOGICAL_RULES`,
  as the DiT's); without one they stay on the default device.
  """
  if config.text.encoder == "umt5":
    return _umt5_encoder(config.text, spec, mesh)
  if config.text.encoder != "toy":
    raise ConfigError(f"text.encoder={config.text.encoder!r} is not one of 'toy', 'umt5'")
  from blockvid_jax.models.text import ToyTextEncoder  # pylint: disable=import-outside-toplevel
  from blockvid_jax.data import toy_grammar  # pylint: disable=import-outside-toplevel
  return ToyTextEncoder(text_dim=spec.text_dim, max_len=config.text.max_len,
                        words=toy_grammar.vocabulary())          # fixed weights (its own seed)


def _need_path(group, dotted: str, why: str) -> str:
  """The path in config field `dotted` (e.g. "text.checkpoint"): required and existing."""
  path = group.get(dotted.rsplit(".", 1)[-1], "")
  if not path:
    raise ConfigError(f"{why} needs {dotted} (a path; see configs/self_forcing_1_3b.py)")
  if not os.path.exists(os.path.expanduser(path)):
    raise ConfigError(f"{dotted} {path!r} does not exist")
  return path


def _umt5_encoder(text, spec: DiTSpec, mesh=None):
  """umT5 weights (text.checkpoint) + tokenizer (text.tokenizer), checked against the DiT width."""
  from blockvid_jax.convert import load_umt5  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConvertError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.umt5 import UMT5TextEncoder, logical_partition_specs  # pylint: disable=import-outside-toplevel
  checkpoint = _need_path(text, "text.checkpoint", "text.encoder='umt5'")
  tokenizer = Tokenizer(_need_path(text, "text.tokenizer", "text.encoder='umt5'"), text.max_len)
  try:
    uspec, params = load_umt5(checkpoint, dtype=text.get("dtype", "float32"))
  except ConvertError as e:
    raise ConfigError(f"text.checkpoint: {e}") from None
  if uspec.dim != spec.text_dim:
    raise ConfigError(f"text.checkpoint {checkpoint!r} is a umT5 of width {uspec.dim}, but the DiT "
                      f"expects text_dim {spec.text_dim}")
  if max(tokenizer.pad_id, tokenizer.eos_id) >= uspec.vocab_size:
    raise ConfigError(f"text.tokenizer {tokenizer.path!r} does not match the {uspec.vocab_size}-word "
                      f"vocabulary of text.checkpoint")
  uspec = dataclasses.replace(uspec, dtype=text.get("dtype", "float32"))
  if mesh is not None:
    shardings = parallel.logical_to_sharding(logical_partition_specs(uspec), mesh)
    params = jax.device_put(params, shardings)
  return UMT5TextEncoder(uspec, params, tokenizer)


def make_autoencoder(config, spec: DiTSpec):
  """The Wan VAE of `autoencoder.checkpoint` (kind 'wan'), or None (toy, or latents only)."""
  ae = config.autoencoder
  if ae.kind not in ("wan", "wan_vae") or not ae.get("checkpoint", ""):
    return None
  from blockvid_jax.convert import load_wan_vae  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConvertError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models.vae import WanVAE  # pylint: disable=import-outside-toplevel
  path = _need_path(ae, "autoencoder.checkpoint", "autoencoder.kind='wan'")
  try:
    vspec, params = load_wan_vae(path)
  except ConvertError as e:
    raise ConfigError(f"autoencoder.checkpoint: {e}") from None
  if vspec.z_dim != spec.in_channels:
    raise ConfigError(f"autoencoder.checkpoint {path!r} has {vspec.z_dim} latent channels, the DiT "
                      f"{spec.in_channels}")
  return WanVAE(vspec, params, dtype=ae.get("dtype", "float32"))


def to_uint8(pixels) -> np.ndarray:
  """Pixels in [-1, 1] (clamped) -> uint8."""
  return np.clip(np.round((np.asarray(pixels) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def encode_image(config, vae, path: str) -> jax.Array:
  """I2V: an image file -> resized (cover) + centre-cropped -> VAE latents [1, 1, h, w, C]."""
  if vae is None:
    raise ConfigError("--image needs autoencoder.kind='wan' with autoencoder.checkpoint")
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  s = vae.spec.spatial_factor
  height, width = config.video.latent_height * s, config.video.latent_width * s
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      scale = max(height / im.height, width / im.width)
      size = (max(width, round(im.width * scale)), max(height, round(im.height * scale)))
      im = im.resize(size, Image.Resampling.BICUBIC)
      left, top = (size[0] - width) // 2, (size[1] - height) // 2
      pixels = np.asarray(im.crop((left, top, left + width, top + height)), np.float32)
  except (OSError, UnidentifiedImageError) as e:
    raise ConfigError(f"cannot read image {path!r}: {str(e).splitlines()[0]}") from None
  video = (pixels / 127.5 - 1.0)[None, None]  # [1, 1, H, W, 3]
  return vae.encode(video)  # [1, 1, h, w, C]


def encode_chunks(encoder, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
  """Per-chunk prompts -> (texts [C, 1, T, E], pooled [C, 1, E]) as host arrays; each distinct
  prompt encoded once, in a batch padded to a power of two (so later videos with a similar number of
  prompts reuse the encoder's compilation) and picked per chunk on the host (no per-length compile)."""
  unique = sorted(set(prompts))
  bucket = 1 << (len(unique) - 1).bit_length()
  emb, _, pooled = encoder.encode(unique + unique[-1:] * (bucket - len(unique)))
  row = {p: i for i, p in enumerate(unique)}
  idx = np.asarray([row[p] for p in prompts])
  return np.asarray(emb)[idx][:, None], np.asarray(pooled)[idx][:, None]


def load_or_init(config, spec: DiTSpec, checkpoint: Optional[str], warn: Callable[[str], None],
                 shardings=None):
  """Params from a params checkpoint directory, or a random init (with a warning); with
  `shardings` (a tree of NamedShardings) each array is restored / initialised straight into its
  shards (nothing is staged on one device)."""
  if checkpoint:
    from blockvid_jax import checkpoints  # pylint: disable=import-outside-toplevel
    try:
      _, params = checkpoints.load_params(checkpoint, spec, shardings=shardings)
    except CheckpointError as e:
      raise ConfigError(str(e)) from None
    return params
  warn("no --checkpoint given: sampling from a RANDOMLY INITIALISED model (expect noise-like video)")
  key = jax.random.key(config.seed)
  if shardings is None:
    return init_params(spec, key)
  leaves, treedef = jax.tree_util.tree_flatten(shardings)
  return _sharded_init(spec, tuple(leaves), treedef)(key)


@functools.lru_cache(maxsize=8)
def _sharded_init(spec: DiTSpec, sharding_leaves: tuple, treedef) -> Callable:
  """The jitted random init into given shardings, cached (a second video compiles nothing)."""
  return jax.jit(functools.partial(init_params, spec),
                 out_shardings=jax.tree_util.tree_unflatten(treedef, list(sharding_leaves)))


def sampling_mesh(config, sampler: BlockSampler):
  """The mesh one video samples on, or None on one device.

  `mesh.sampling="auto"` (default): all devices, split by `parallel.sampling_mesh_shape` (heads
  over `tensor`, the chunk's tokens and the cache slots over `context`; presets for 1, 2, 4 and 8
  devices); `"config"`: the mesh axes of the config as given.
  """
  n = jax.device_count()
  if n == 1:
    return None
  how = config.mesh.get("sampling", "auto")
  if how == "config":
    shape = {a: config.mesh[a] for a in parallel.MESH_AXES}
  else:
    c = sampler.cache
    counts = (c.tokens_per_chunk,) + ((c.k_salient,) if c.mode == "sparse" else ())
    shape = parallel.sampling_mesh_shape(n, sampler.model.num_heads, counts)
  return parallel.make_mesh(shape)


def segment_shardings(sampler: BlockSampler, spec: DiTSpec, mesh, batch: int):
  """NamedShardings of one video's sampling on `mesh`: (params, rollout state, output latents,
  the logical rules used)."""
  rules = parallel.LOGICAL_RULES
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch % dp:  # a batch that does not split over the data axes is replicated
    rules = parallel.rules_from_config({"cache_batch": None, "activation_batch": None})
  abstract = jax.eval_shape(functools.partial(init_boxed, spec), jax.random.key(0))
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  p_sh = parallel.logical_to_sharding(nn.get_partition_spec(abstract), mesh, rules)
  state = jax.eval_shape(functools.partial(sampler.init_state, batch), jax.random.key(0))
  axes = state_logical_axes(state)
  s_sh = jax.tree_util.tree_map(lambda a: parallel.named(mesh, *a, rules=rules), axes,
                                is_leaf=lambda x: isinstance(x, tuple))
  out_sh = parallel.named(mesh, None, "activation_batch", None, None, None, None, rules=rules)
  return p_sh, s_sh, out_sh, rules


def sharded_segment_fn(sampler: BlockSampler, spec: DiTSpec, mesh, batch: int):
  """Segment fn with NamedShardings for params (logical rules) and the donated rollout state."""
  p_sh, s_sh, out_sh, rules = segment_shardings(sampler, spec, mesh, batch)
  fn = sampler.make_segment_fn(s_sh, p_sh, out_sh)

  def call(params, state, *args):
    state = jax.device_put(state, s_sh)  # a fresh state traces like a carried one (no retrace)
    with parallel.activation_rules(mesh, rules):
      return fn(params, state, *args)
  return call, p_sh


class Progress:
  """A one-line progress bar on stderr with chunks/s (compile time excluded after the first)."""

  def __init__(self, total: int, stream=sys.stderr):
    self.total, self.stream, self.start = total, stream, time.perf_counter()

  def update(self, done: int, frames: Optional[int] = None):
    now = time.perf_counter()
    rate = done / max(now - self.start, 1e-9)  # includes compilation: the honest wall-clock rate
    bar = "#" * int(30 * done / self.total)
    written = "" if frames is None else f", {frames} frames written"
    self.stream.write(f"\rchunk {done}/{self.total} [{bar:<30}] {rate:6.2f} chunks/s{written}")
    if done == self.total:
      self.stream.write(f"  ({now - self.start:.1f}s)\n")
    self.stream.flush()


def generate(config, prompts: Sequence[str], num_chunks: int, seed: int, params=None,
             checkpoint: Optional[str] = None, progress: bool = True,
             warn: Callable[[str], None] = lambda m: print(f"warning: {m}", file=sys.stderr),
             frame_sink: Optional[Callable[[np.ndarray], None]] = None,
             image: Optional[str] = None):
  """Samples one video. Returns (latents [1, C*Fc, X, Y, 16], pixels uint8 [T, H, W, 3] or None).

  With the Wan VAE (autoencoder.checkpoint) every chunk is decoded (`decode_chunk`) as soon as it
  is generated; with `frame_sink` its uint8 frames go there (a streaming video writer) and pixels
  is None. `image`: I2V, the VAE-encoded image conditions the first chunk's first latent frame.
  """
  per_chunk = chunk_prompts(prompts, num_chunks)
  spec, sampler = build_sampler(config)
  vae = make_autoencoder(config, spec)
  first_frame = encode_image(config, vae, image) if image else None
  mesh = sampling_mesh(config, sampler)  # the DiT and the umT5 share it
  encoder = make_text_encoder(config, spec, mesh)
  segment_fn = p_sh = None
  if mesh is not None:
    segment_fn, p_sh = sharded_segment_fn(sampler, spec, mesh, batch=1)
  if params is None:
    params = load_or_init(config, spec, checkpoint, warn, shardings=p_sh)
  elif p_sh is not None:
    params = jax.device_put(params, p_sh)
  texts, pooled = encode_chunks(encoder, per_chunk)
  null_text, _ = encode_chunks(encoder, [config.text.get("negative_prompt", "")])
  bar = Progress(num_chunks) if progress else None
  chunks, pixel_chunks, written = [], [], 0
  decoder = vae.init_decode_cache(1, *sampler.chunk_shape[1:3]) if vae else None
  for i, x in sampler.stream(params, texts, pooled, jax.random.key(seed), null_text=null_text[0],
                             first_frame=first_frame, segment_fn=segment_fn):
    chunks.append(np.asarray(x))
    if vae is not None:
      decoder, frames = vae.decode_chunk(decoder, chunks[-1])               # [1, t, H, W, 3]
      frames = to_uint8(frames[0])                                          # [t, H, W, 3]
      written += frames.shape[0]
      if frame_sink is None:
        pixel_chunks.append(frames)
      else:
        frame_sink(frames)
    if bar:
      bar.update(i + 1, written if vae is not None else None)
  latents = np.concatenate(chunks, axis=1)                                  # [1, C*Fc, X, Y, 16]
  if vae is None:
    return latents, decode_pixels(config, latents)
  return latents, (np.concatenate(pixel_chunks) if pixel_chunks else None)


def decode_pixels(config, latents: np.ndarray) -> Optional[np.ndarray]:
  """Latents -> uint8 frames [T, H, W, 3] with the configured autoencoder (None if not built in)."""
  if config.autoencoder.kind != "toy":
    return None
  from blockvid_jax.models.toy_autoencoder import decode  # pylint: disable=import-outside-toplevel
  return to_uint8(decode(jnp.asarray(latents), config.autoencoder.factor)[0])  # [T, H, W, 3]


def check_output_path(path: str) -> str:
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in OUTPUT_SUFFIXES:
    raise ConfigError(f"--out must end in one of {OUTPUT_SUFFIXES}, got {path!r}")
  if os.path.isdir(path):
    raise ConfigError(f"--out {path!r} is a directory")
  return suffix


def save_output(path: str, latents: np.ndarray, pixels: Optional[np.ndarray], fps: int) -> str:
  """Writes `.npy` latents or a `.mp4`/`.gif` video atomically (nothing partial on failure)."""
  suffix = check_output_path(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if suffix == ".npy":
    tmp = path + ".tmp.npy"
    try:
      np.save(tmp, latents)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    return path
  if pixels is None:
    raise ConfigError("no decoder: set autoencoder.checkpoint (Wan VAE) or write the latents with "
                      "--out FILE.npy")
  from blockvid_jax.video_io import write_video  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():  # ffmpeg runs as a subprocess; JAX warns on any fork
    warnings.filterwarnings("ignore", message="os.fork()")
    return str(write_video(path, pixels, fps=fps))
