"""A tiny training config for the training tests (CLI: --config tests/tiny_train_config.py).

16x16 toy videos -> 8x8 latents -> 16 tokens per frame; windows of 2 chunks of 3 frames; the tiny
DiT. Set `data.data_dir` to a shared folder so the toy data is built once per test session.
"""

from blockvid_jax.config_lib import base_config
from blockvid_jax.training.config import add_train_defaults


def get_config(arg: str = ""):
  del arg
  c = add_train_defaults(base_config())
  c.model.preset = "tiny"                 # dim 48, 2 layers, text_dim 32
  c.text.max_len = 8
  c.video.latent_height = 8               # 16x16 pixels
  c.video.latent_width = 8
  c.cache.k_salient = 8
  c.mesh.data = 1
  c.data.window_chunks = 2
  c.data.chunks_per_video = 4
  c.data.num_videos = 8
  c.data.num_test_videos = 1
  c.data.num_threads = 1
  c.data.prefetch = 2
  c.train.total_steps = 20
  c.train.batch_size = 4
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 5
  c.train.ema_decay = 0.9
  c.train.log_every = 1
  c.train.checkpoint_every = 5
  c.train.keep_checkpoints = 5
  c.train.sample_every = 0
  # The one-sequence layout keeps the trainer tests quick; the teacher-forcing step is tested in
  # tests/test_train_step.py and lowered at Wan scale through loop.step_settings in test_wan_lowering.
  c.train.layout = "noisy_history"
  c.train.noise.t_max_range = 0.0
  return c
