"""The base experiment config (every field with its default and a one-line comment) and validation.

`configs/*.py` start from `base_config()` and override; entry points call `validate(config)` which
raises `ConfigError` with one line naming the field. Library modules never read the config: the CLI
turns it into typed specs (`DiTSpec.from_config(config.model)`, `CacheSpec.from_config(...)`).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.parallel.axes import MESH_AXES
from blockvid_jax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                              # global seed (params, data order, sampling noise)

  c.model = ml_collections.ConfigDict()
  c.model.preset = "tiny"                 # tiny | small | wan_1_3b | wan_14b; fields below override
  c.model.frames_per_chunk = 3            # latent frames per causal chunk (DESIGN 10)
  c.model.dtype = "float32"               # matmul compute dtype (float32 | bfloat16)
  c.model.remat_policy = "none"           # none | full | dots | dots_no_batch
  c.model.attention_impl = "xla"          # xla | chunked (flash algorithm, any backend) | cudnn
                                          # (GPU) | auto
  c.model.prediction = "v"                # v (public checkpoints) | x0 (clean-latent head, toy)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                        # data-parallel axis (-1: all remaining devices)
  c.mesh.fsdp = 1                         # parameter-sharded data parallel axis
  c.mesh.context = 1                      # sequence (token) axis
  c.mesh.tensor = 1                       # heads / MLP axis
  c.mesh.sampling = "auto"                # one video: auto (all devices, parallel.SAMPLING_PRESETS)
                                          # | config (the axes above)
  c.mesh.rules = ml_collections.ConfigDict()  # overrides of parallel.axes.LOGICAL_RULES (name -> axis)

  c.video = ml_collections.ConfigDict()
  c.video.latent_height = 16              # latent rows (toy autoencoder: pixels / 2)
  c.video.latent_width = 16               # latent cols
  c.video.fps = 8                         # frames per second of written videos

  c.text = ml_collections.ConfigDict()
  c.text.encoder = "toy"                  # toy (built-in) | umt5 (weights from text.checkpoint)
  c.text.max_len = 16                     # text tokens T per prompt
  c.text.checkpoint = ""                  # umt5: models_t5_umt5-xxl-enc-bf16.pth / HF encoder dir
  c.text.tokenizer = ""                   # umt5: tokenizer.json / spiece.model / their folder
  c.text.dtype = "float32"                # umt5 params and matmuls (float32 | bfloat16)
  c.text.negative_prompt = ""             # CFG unconditional prompt (encoded, never zeros)

  c.autoencoder = ml_collections.ConfigDict()
  c.autoencoder.kind = "toy"              # toy space-to-depth (exact) | wan (Wan2.1 VAE; = wan_vae)
  c.autoencoder.factor = 2                # toy space-to-depth factor (pixels per latent side)
  c.autoencoder.checkpoint = ""           # wan: Wan2.1_VAE.pth / safetensors ("" = latents only)
  c.autoencoder.dtype = "float32"         # wan: decoder compute dtype (float32 | bfloat16)

  c.cache = ml_collections.ConfigDict()
  c.cache.mode = "sparse"                 # sparse (semantic bank) | window (sink+local) | full
  c.cache.sink_chunks = 1                 # dense chunks kept from the start (0: no sink)
  c.cache.local_chunks = 1                # dense ring buffer of the most recent chunks
  c.cache.bank_slots = 8                  # semantic bank entries (fixed size)
  c.cache.k_salient = 32                  # salient tokens kept per bank entry
  c.cache.retrieve_top_l = 2              # bank entries attended per chunk (paper: 2)
  c.cache.tau = 1.0                       # cumulative saliency-mass cut inside k (1.0: off; paper .97)
  c.cache.eviction = "least_retrieved"    # fifo | least_retrieved | redundant
  c.cache.usage_decay = 0.9               # decay of retrieval counts (least_retrieved)
  c.cache.positions = "compact"           # compact (bounded RoPE) | absolute (original frames)
  c.cache.max_chunks = 64                 # capacity of `full` mode (chunks)
  c.cache.recache_on_switch = False       # prompt switch: re-run the local window with the new prompt
  c.cache.context_t = 0.0                 # flow time of the commit pass that writes the cache

  c.sample = ml_collections.ConfigDict()
  c.sample.num_chunks = 8                 # chunks to generate
  c.sample.solver = "dmd"                 # dmd (few-step x0 + re-noise) | euler (multi-step + CFG)
  c.sample.timesteps = (1000, 750, 500, 250)  # dmd steps on the 0..1000 scale before the shift
  c.sample.num_steps = 20                 # euler steps
  c.sample.shift = 5.0                    # flow timestep shift
  c.sample.guidance = 1.0                 # classifier-free guidance scale (euler; 1 = off)
  c.sample.shuffle = True                 # noise shuffling across chunk boundaries
  c.sample.shuffle_window = 4             # latent frames per shuffle window (DESIGN 10)
  c.sample.shuffle_mix = 0.5              # weight of reused previous-chunk noise (0: fresh noise)
  c.sample.chunks_per_segment = 4         # chunks per jitted scan segment (progress / streaming)
  return c


def sibling_config(here: str, name: str, arg: str = "") -> ml_collections.ConfigDict:
  """`get_config(arg)` of `<name>.py` in the folder of the config file `here` (configs are files,
  not a package, so one config builds on another through this)."""
  path = os.path.join(os.path.dirname(os.path.abspath(here)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_blockvid_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def validate(config: ml_collections.ConfigDict) -> DiTSpec:
  """Checks cross-field constraints; returns the model spec. Raises ConfigError (one line)."""
  spec = DiTSpec.from_config(config.model)
  for axis in MESH_AXES:
    v = config.mesh.get(axis, 1)
    if not isinstance(v, int) or (v < 1 and v != -1):
      raise ConfigError(f"mesh.{axis} must be a positive integer or -1, got {v!r}")
  if config.mesh.get("sampling", "auto") not in MESH_SAMPLING:
    raise ConfigError(f"mesh.sampling must be one of {MESH_SAMPLING}, got "
                      f"{config.mesh.sampling!r}")
  v = config.get("video")
  if v is not None:
    _, ph, pw = spec.patch_size
    if v.latent_height % ph or v.latent_width % pw:
      raise ConfigError(f"video.latent_height/width ({v.latent_height}, {v.latent_width}) must be "
                        f"multiples of the patch size {spec.patch_size[1:]}")
  _check_pretrained(config)
  return spec


MESH_SAMPLING = ("auto", "config")
TEXT_ENCODERS = ("toy", "umt5")
AUTOENCODERS = ("toy", "wan", "wan_vae")


def _check_pretrained(config) -> None:
  """Known kinds, and every pretrained-weights path that is given exists."""
  text, ae = config.get("text"), config.get("autoencoder")
  if text is not None and text.encoder not in TEXT_ENCODERS:
    raise ConfigError(f"text.encoder must be one of {TEXT_ENCODERS}, got {text.encoder!r}")
  if ae is not None and ae.kind not in AUTOENCODERS:
    raise ConfigError(f"autoencoder.kind must be one of {AUTOENCODERS}, got {ae.kind!r}")
  for name, group, field in (("text.checkpoint", text, "checkpoint"),
                             ("text.tokenizer", text, "tokenizer"),
                             ("autoencoder.checkpoint", ae, "checkpoint")):
    path = group.get(field, "") if group is not None else ""
    if path and not os.path.exists(os.path.expanduser(path)):
      raise ConfigError(f"{name} {path!r} does not exist")
