"""A tiny "real weights" sampling config for the end-to-end test: `--config tests/tiny_pretrained_config.py:DIR`.

DIR holds what the test writes in the original formats: `Wan2.1_VAE.pth` (a base-dim-8 VAE),
`models_t5_umt5-xxl-enc-bf16.pth` (a width-32 umT5) and `spiece.model`. 32x32 pixels -> 4x4 latents,
the tiny DiT (text_dim 32 = the umT5 width), 3 latent frames per chunk, two DMD steps.
"""

import os

from blockvid_jax.config_lib import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.model.preset = "tiny"                 # dim 48, 2 layers, 4 heads, text_dim 32
  c.text.encoder = "umt5"
  c.text.max_len = 16
  c.text.checkpoint = os.path.join(arg, "models_t5_umt5-xxl-enc-bf16.pth")
  c.text.tokenizer = os.path.join(arg, "spiece.model")
  c.autoencoder.kind = "wan"
  c.autoencoder.checkpoint = os.path.join(arg, "Wan2.1_VAE.pth")
  c.video.latent_height = 4               # 32 pixels / 8
  c.video.latent_width = 4
  c.video.fps = 16
  c.cache.k_salient = 4                   # of 12 tokens per chunk
  c.cache.bank_slots = 2
  c.sample.timesteps = (1000, 500)
  c.sample.chunks_per_segment = 2
  c.mesh.data = 1
  return c
