"""Embedded default: a small causal DiT on the procedural toy long videos, on CPU.

  python -m blockvid_jax.sample --config configs/toy_cpu.py --prompts prompts.txt --num_chunks 8 \
      --out outputs/video.mp4
"""

from blockvid_jax.config_lib import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.model.preset = "tiny"
  c.model.dim = 128                  # toy width: learns the toy videos in minutes on 2 cores
  c.model.ffn_dim = 512
  c.model.num_heads = 4
  c.model.num_layers = 4
  c.model.text_dim = 64              # toy text encoder width
  c.text.max_len = 16
  c.video.latent_height = 16         # 32x32 RGB pixels / space-to-depth factor 2
  c.video.latent_width = 16
  c.cache.k_salient = 64             # of 192 tokens per chunk (3 frames x 8x8 patches)
  c.cache.bank_slots = 8
  c.cache.local_chunks = 1
  c.cache.sink_chunks = 1
  c.sample.num_chunks = 8
  return c
