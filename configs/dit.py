"""Model presets as configs: `--config configs/dit.py:tiny|small|wan_1_3b|wan_14b`.

  python -m blockvid_jax.sample --config configs/dit.py:small --prompts prompts.txt --num_chunks 4 \
      --out outputs/small.mp4
"""

from blockvid_jax.config_lib import base_config

_TEXT_DIM = {"tiny": 32, "small": 512, "wan_1_3b": 4096, "wan_14b": 4096}


def get_config(arg: str = "tiny"):
  preset = arg or "tiny"
  c = base_config()
  c.model.preset = preset
  if preset in ("wan_1_3b", "wan_14b"):
    c.model.dtype = "bfloat16"          # bf16 compute on accelerators; params stay float32
    c.model.remat_policy = "dots_no_batch"
    c.model.attention_impl = "auto"     # cuDNN flash on GPU, chunked (flash algorithm) elsewhere
    c.text.encoder = "umt5"             # umT5-XXL embeddings [B, 512, 4096]
    c.text.max_len = 512
    c.video.latent_height = 60          # 480x832 pixels / 8 (Wan VAE)
    c.video.latent_width = 104
    c.cache.k_salient = 1560            # of 4680 tokens per chunk (3 x 30 x 52)
    c.mesh.fsdp = -1
    c.mesh.data = 1
  return c
