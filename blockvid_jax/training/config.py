"""The `data` and `train` config sections (defaults with one-line comments) and their validation.

`configs/*.py` call `add_train_defaults(base_config())` and override; the CLI calls
`validate_train(config)` after `config_lib.validate`, which raises a one-line `ConfigError` naming
the field. Only the CLI and the stages (`training.loop`, `training.trainer`) read these sections: the steps get explicit arguments.
"""

from __future__ import annotations

import ml_collections

from blockvid_jax.config_lib import validate
from blockvid_jax.diffusion.noise import SCHEDULES
from blockvid_jax.models.spec import DiTSpec
from blockvid_jax.training.losses import LOSS_WEIGHTS
from blockvid_jax.training.steps import LAYOUTS
from blockvid_jax.errors import ConfigError

STAGES = ("causal", "teacher")
DATA_KINDS = ("toy", "latents")
CONTEXT_VIEWS = ("cache", "full")


def add_train_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds `c.data` and `c.train` (in place) and returns `c`."""
  c.data = ml_collections.ConfigDict()
  c.data.kind = "toy"                     # toy (procedural, built if missing) | latents (folder)
  c.data.data_dir = ""                    # toy: tfds dir ("" -> <workdir>/data); latents: the
                                          # folder of data/latent_folder.py (required)
  c.data.window_chunks = 4                # n, chunks per training window (one caption per chunk)
  c.data.frames_per_chunk = 3             # latent frames per data chunk (toy: = pixel frames)
  c.data.chunks_per_video = 12            # toy: chunks per generated video
  c.data.num_videos = 64                  # toy: videos in the train split
  c.data.num_test_videos = 8              # toy: videos in the test split (sample prompts)
  c.data.toy_seed = 0                     # toy: generator seed (the data order uses `seed`)
  c.data.use_digits = True                # toy: digits besides the four shapes
  c.data.sprite_size = 0                  # toy: sprite side in pixels (0: resolution // 4)
  c.data.sprite_start = "random"          # toy: a scene's first sprite position: random | centre
  c.data.identities = False               # toy: per-video scene identities the captions do not
                                          # name (shades, texture, pattern; memory matters)
  c.data.min_return_gap = 0               # toy: chunks of other scenes before a scene returns
  c.data.num_threads = 2                  # grain reader threads (threads, not processes)
  c.data.prefetch = 4                     # grain prefetch buffer (batches)

  c.train = ml_collections.ConfigDict()
  c.train.stage = "causal"                # causal (block-causal student) | teacher (bidirectional)
  c.train.init_from = ""                  # fresh runs start from these params: a params dir or a
                                          # finished work dir (its params_ema / params); "": random
  c.train.total_steps = 2000              # optimizer steps
  c.train.batch_size = 8                  # global batch (windows per step)
  c.train.learning_rate = 3e-4            # peak AdamW learning rate
  c.train.warmup_steps = 100              # linear warmup from 0, then cosine decay
  c.train.min_lr_ratio = 0.1              # final learning rate / peak
  c.train.weight_decay = 0.01             # decoupled weight decay (kernels only)
  c.train.b1 = 0.9                        # Adam beta1
  c.train.b2 = 0.99                       # Adam beta2
  c.train.grad_clip = 1.0                 # global-norm gradient clipping (0: off)
  c.train.ema_decay = 0.999               # EMA of the params (0: no EMA kept)
  c.train.ema_start_step = 0              # the EMA equals the params until this step
  c.train.text_dropout = 0.1              # P(chunk caption -> empty prompt), for CFG
  c.train.loss_weight = "v"               # v: MSE on the velocity | x0: t^2-weighted = MSE on x0
  c.train.layout = "teacher_forcing"      # causal stage: teacher_forcing ([clean | noisy]: noisy
                                          # chunks see clean earlier chunks, as the sampler's cache)
                                          # | noisy_history (one sequence, noisy earlier chunks)
  c.train.context_view = "cache"          # teacher forcing: cache (each chunk sees the earlier
                                          # chunks the cache would hold: cache.mode) | full (all)
  c.train.clean_noise = 0.0               # teacher forcing: clean half at cache.context_t plus
                                          # U(0, clean_noise) per chunk
  c.train.noise = ml_collections.ConfigDict()
  c.train.noise.kind = "cosine"           # linear | cosine (paper) | independent | constant
  c.train.noise.t_min_max = 0.2           # t_min ~ U(0, t_min_max) per sample (ramps)
  c.train.noise.t_max = 1.0               # flow time of the last chunk (ramps); upper bound (others)
  c.train.noise.t_max_range = 0.3         # t_max per sample ~ U(t_max - t_max_range, t_max)
  c.train.noise.shift = 1.0               # timestep shift applied after the schedule
  c.train.log_every = 50                  # steps between metric writes
  c.train.checkpoint_every = 500          # steps between checkpoints (the last step always saves)
  c.train.keep_checkpoints = 3            # checkpoints kept (oldest deleted)
  c.train.async_checkpoint = True         # orbax async save (training continues while writing)
  c.train.sample_every = 1000             # steps between sample videos in <workdir>/samples (0: off)
  c.train.sample_chunks = 4               # chunks per sample video
  return c


def _need(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _positive_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v > 0


def validate_train(config: ml_collections.ConfigDict) -> DiTSpec:
  """`config_lib.validate` plus the data/train sections; returns the model spec (one-line errors)."""
  spec = validate(config)
  d, t = config.data, config.train
  _need(d.kind in DATA_KINDS, f"data.kind must be one of {list(DATA_KINDS)}, got {d.kind!r}")
  for name in ("window_chunks", "frames_per_chunk", "chunks_per_video", "num_videos", "num_threads",
               "prefetch"):
    _need(_positive_int(d[name]), f"data.{name} must be a positive integer, got {d[name]!r}")
  _need(isinstance(d.num_test_videos, int) and d.num_test_videos >= 0,
        f"data.num_test_videos must be a non-negative integer, got {d.num_test_videos!r}")
  _need(d.window_chunks <= d.chunks_per_video,
        f"data.window_chunks={d.window_chunks} exceeds data.chunks_per_video={d.chunks_per_video}")
  window = d.window_chunks * d.frames_per_chunk
  _need(window % spec.frames_per_chunk == 0,
        f"the training window of {window} latent frames (data.window_chunks={d.window_chunks} x "
        f"data.frames_per_chunk={d.frames_per_chunk}) is not a multiple of "
        f"model.frames_per_chunk={spec.frames_per_chunk}")
  _need(d.frames_per_chunk % spec.frames_per_chunk == 0,
        f"data.frames_per_chunk={d.frames_per_chunk} is not a multiple of "
        f"model.frames_per_chunk={spec.frames_per_chunk} (a caption must cover whole chunks)")
  if d.kind == "latents":
    _need(bool(d.data_dir), "data.kind='latents' needs data.data_dir (a latent_folder directory)")
  if d.kind == "toy":
    _need(config.autoencoder.kind == "toy", "data.kind='toy' needs autoencoder.kind='toy'")
    _need(not d.identities or d.sprite_start == "random",
          "data.identities=True draws each scene's start position: data.sprite_start must be "
          "'random'")
    _need(isinstance(d.min_return_gap, int) and d.min_return_gap >= 0,
          f"data.min_return_gap must be a non-negative integer, got {d.min_return_gap!r}")
    _need(config.video.latent_height == config.video.latent_width,
          "toy videos are square: video.latent_height must equal video.latent_width")
    _need(config.text.encoder == "toy", "data.kind='toy' needs text.encoder='toy'")

  _need(t.stage in STAGES, f"train.stage must be one of {list(STAGES)}, got {t.stage!r}")
  for name in ("total_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
               "sample_chunks"):
    _need(_positive_int(t[name]), f"train.{name} must be a positive integer, got {t[name]!r}")
  for name in ("warmup_steps", "sample_every", "ema_start_step"):
    _need(isinstance(t[name], int) and t[name] >= 0,
          f"train.{name} must be a non-negative integer, got {t[name]!r}")
  _need(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
  _need(t.warmup_steps < t.total_steps,
        f"train.warmup_steps={t.warmup_steps} must be < train.total_steps={t.total_steps}")
  _need(0.0 <= t.min_lr_ratio <= 1.0, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
  _need(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
  _need(0.0 <= t.b1 < 1.0 and 0.0 <= t.b2 < 1.0, f"train.b1/b2 must be in [0, 1), got "
        f"{t.b1}, {t.b2}")
  _need(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0: off), got {t.grad_clip}")
  _need(0.0 <= t.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
  _need(t.loss_weight in LOSS_WEIGHTS,
        f"train.loss_weight must be one of {list(LOSS_WEIGHTS)}, got {t.loss_weight!r}")
  _need(0.0 <= t.text_dropout < 1.0, f"train.text_dropout must be in [0, 1), got {t.text_dropout}")
  _need(t.layout in LAYOUTS, f"train.layout must be one of {list(LAYOUTS)}, got {t.layout!r}")
  _need(t.context_view in CONTEXT_VIEWS,
        f"train.context_view must be one of {list(CONTEXT_VIEWS)}, got {t.context_view!r}")
  _need(t.clean_noise >= 0 and config.cache.context_t + t.clean_noise <= 1.0,
        f"train.clean_noise must be >= 0 with cache.context_t + clean_noise <= 1, got "
        f"{t.clean_noise} (context_t {config.cache.context_t})")
  n = t.noise
  _need(n.kind in SCHEDULES, f"train.noise.kind must be one of {list(SCHEDULES)}, got {n.kind!r}")
  _need(0.0 < n.t_max <= 1.0, f"train.noise.t_max must be in (0, 1], got {n.t_max}")
  _need(0.0 <= n.t_min_max <= n.t_max,
        f"train.noise.t_min_max must be in [0, t_max={n.t_max}], got {n.t_min_max}")
  _need(n.shift > 0, f"train.noise.shift must be > 0, got {n.shift}")
  _need(0.0 <= n.t_max_range <= n.t_max - n.t_min_max,
        f"train.noise.t_max_range must be in [0, t_max - t_min_max = {n.t_max - n.t_min_max:g}], "
        f"got {n.t_max_range}")
  return spec
