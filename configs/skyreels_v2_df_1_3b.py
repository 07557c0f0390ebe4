"""Sample with the public SkyReels-V2-DF-1.3B weights (BlockVid's base): 540P (544x960), 24 fps.

Files (users download them; nothing is fetched here): the SkyReels-V2-DF-1.3B-540P folder (SKY below)
with `diffusion_pytorch_model.safetensors` (Wan2.1 layout), `config.json`, `Wan2.1_VAE.pth`,
`models_t5_umt5-xxl-enc-bf16.pth` and `google/umt5-xxl/` (tokenizer.json, spiece.model).

  python -m blockvid_jax.convert --src SKY --frames_per_chunk 5 --out ckpt/skyreels_df_1_3b
  python -m blockvid_jax.sample --config configs/skyreels_v2_df_1_3b.py:SKY \
      --checkpoint ckpt/skyreels_df_1_3b --prompts prompts.txt --num_chunks 6 --out outputs/sky.mp4
  # I2V: add --image first.png --config.sample.guidance=5.0

Diffusion forcing with causal blocks of 5 latent frames, flow shift 8, 30 Euler steps with CFG 6
(T2V; 5 for I2V). The CFG unconditional branch is the encoded `text.negative_prompt` (set it to
the base model's negative prompt with --config.text.negative_prompt="..."; empty by default).
"""

import os

from blockvid_jax.config_lib import base_config


def get_config(arg: str = ""):
  sky = arg or "SkyReels-V2-DF-1.3B-540P"
  c = base_config()
  c.model.preset = "wan_1_3b"             # Wan2.1 architecture at 1.3B
  c.model.frames_per_chunk = 5            # causal block of 5 latent frames
  c.model.dtype = "bfloat16"
  c.model.attention_impl = "auto"
  c.text.encoder = "umt5"
  c.text.max_len = 512
  c.text.dtype = "bfloat16"               # the umT5 runs in bf16, as in Wan (halves its 23 GB)
  c.text.checkpoint = os.path.join(sky, "models_t5_umt5-xxl-enc-bf16.pth")
  c.text.tokenizer = os.path.join(sky, "google", "umt5-xxl")
  c.text.negative_prompt = ""             # the base model's negative prompt (encoded, never zeros)
  c.autoencoder.kind = "wan"
  c.autoencoder.checkpoint = os.path.join(sky, "Wan2.1_VAE.pth")
  c.video.latent_height = 68              # 544 / 8
  c.video.latent_width = 120              # 960 / 8
  c.video.fps = 24
  c.cache.k_salient = 2040                # of 10200 tokens per chunk (5 x 34 x 60)
  c.sample.solver = "euler"
  c.sample.num_steps = 30
  c.sample.shift = 8.0
  c.sample.guidance = 6.0
  c.sample.num_chunks = 6
  c.mesh.data = 1
  return c
