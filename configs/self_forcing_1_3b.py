"""Sample with the public Self Forcing DMD weights (Wan2.1-T2V-1.3B made causal): 480x832, 16 fps.

Files (users download them; nothing is fetched here): the Self Forcing checkpoint
`self_forcing_dmd.pt` and the Wan2.1-T2V-1.3B folder (WAN below) holding `Wan2.1_VAE.pth`,
`models_t5_umt5-xxl-enc-bf16.pth` and `google/umt5-xxl/` (tokenizer.json, spiece.model).

  python -m blockvid_jax.convert --src self_forcing_dmd.pt --use_ema --out ckpt/self_forcing
  python -m blockvid_jax.sample --config configs/self_forcing_1_3b.py:WAN \
      --checkpoint ckpt/self_forcing --prompts prompts.txt --num_chunks 7 --out outputs/sf.mp4

7 chunks of 3 latent frames = 21 latent frames = 81 video frames (about 5 s); longer videos just
take more chunks (the KV cache and the streamed VAE decode keep memory flat). Few-step DMD:
timesteps [1000, 750, 500, 250] warped with shift 5, the cache written at t = 0, no CFG.
`--config.autoencoder.dtype=bfloat16` decodes faster (the umT5 already runs in bf16).
"""

import os

from blockvid_jax.config_lib import base_config


def get_config(arg: str = ""):
  wan = arg or "Wan2.1-T2V-1.3B"
  c = base_config()
  c.model.preset = "wan_1_3b"             # D 1536, 30 layers, 12 heads, text_dim 4096
  c.model.frames_per_chunk = 3            # Self Forcing's causal chunk
  c.model.dtype = "bfloat16"              # matmul compute dtype (params stay float32)
  c.model.attention_impl = "auto"         # cuDNN flash on GPU, chunked (flash algorithm) elsewhere
  c.text.encoder = "umt5"
  c.text.max_len = 512                    # Wan's text length
  c.text.dtype = "bfloat16"               # the umT5 runs in bf16, as in Wan (halves its 23 GB)
  c.text.checkpoint = os.path.join(wan, "models_t5_umt5-xxl-enc-bf16.pth")
  c.text.tokenizer = os.path.join(wan, "google", "umt5-xxl")
  c.autoencoder.kind = "wan"
  c.autoencoder.checkpoint = os.path.join(wan, "Wan2.1_VAE.pth")
  c.video.latent_height = 60              # 480 / 8
  c.video.latent_width = 104              # 832 / 8
  c.video.fps = 16
  c.cache.k_salient = 1560                # of 4680 tokens per chunk (3 x 30 x 52)
  c.cache.context_t = 0.0                 # the context pass runs on the clean chunk
  c.sample.solver = "dmd"
  c.sample.timesteps = (1000, 750, 500, 250)
  c.sample.shift = 5.0
  c.sample.guidance = 1.0                 # distilled: no CFG
  c.sample.num_chunks = 7
  c.mesh.data = 1
  return c
