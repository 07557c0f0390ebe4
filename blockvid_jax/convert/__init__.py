"""PyTorch checkpoint conversion: Wan2.1 / Diffusers / Self Forcing DiT weights -> Flax params.

    spec, params = load_pytorch_dit("Wan2.1-T2V-1.3B/")          # Python
    python -m blockvid_jax.convert --src PATH --out DIR          # CLI, writes a params checkpoint

See `readers` (files), `keymaps` (names and layouts), `spec_infer` (the DiTSpec from shapes and
config.json) and `loader` (the strict conversion); `wan_vae` and `umt5` read the Wan
VAE (`load_wan_vae`) and the umT5 text encoder (`load_umt5`).
"""

from blockvid_jax.convert.keymaps import FORMATS
from blockvid_jax.convert.loader import Converted, convert_pytorch_dit, load_pytorch_dit
from blockvid_jax.convert.umt5 import load_umt5
from blockvid_jax.convert.wan_vae import load_wan_vae

__all__ = ["Converted", "FORMATS", "convert_pytorch_dit", "load_pytorch_dit",
           "load_umt5", "load_wan_vae"]
