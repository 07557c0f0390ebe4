"""Tiny "public" weights in their original formats, shared by the real-path tests.

`write_tiny_pretrained(folder)` writes what `tests/tiny_pretrained_config.py:FOLDER` reads: a
base-dim-8 Wan VAE (`Wan2.1_VAE.pth`), a width-32 umT5 (`models_t5_umt5-xxl-enc-bf16.pth`), a
50-piece sentencepiece tokenizer (`spiece.model`), and a random tiny Wan DiT (`dit.safetensors`)
converted by `python -m blockvid_jax.convert` into `dit_params/`. Needs torch and sentencepiece
(callers skip without them).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from blockvid_jax.convert.umt5 import expected_shapes
from blockvid_jax.convert.wan_vae import random_state_dict
from blockvid_jax.models.umt5 import UMT5Spec
from blockvid_jax.models.vae import VAESpec
from wan_reference import random_wan_weights  # tests/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "tiny_pretrained_config.py")
FRAMES_PER_CHUNK = 3      # latent frames per chunk of the tiny config (DiT preset "tiny")
T5 = UMT5Spec(vocab_size=300, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2)
VAE = VAESpec(dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1)


def run_module(module: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m module args` on one CPU device (not the tests' 8 fake ones), from the repo root."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=ROOT)


def write_tiny_pretrained(folder):
  """Writes the files above into `folder` (a pathlib.Path); returns it."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  torch.save({k: torch.from_numpy(v) for k, v in random_state_dict(VAE).items()},
             str(folder / "Wan2.1_VAE.pth"))
  t5 = {key: (rng.normal(size=shape) * (0.2 if len(shape) > 1 else 1.0)).astype(np.float32)
        for key, shape in expected_shapes(T5, "wan").values()}
  torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in t5.items()},
             str(folder / "models_t5_umt5-xxl-enc-bf16.pth"))
  corpus = folder / "corpus.txt"
  corpus.write_text("\n".join(["a cat walks on the beach", "the dog runs in a green park",
                               "waves crash on dark rocks at night"] * 5))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"),
                                 vocab_size=50, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False)
  dit = folder / "dit.safetensors"
  save_file(random_wan_weights(0, dim=48, ffn_dim=96, num_layers=2, text_dim=32, freq_dim=32),
            str(dit))
  r = run_module("blockvid_jax.convert", "--src", str(dit), "--out", str(folder / "dit_params"),
                 "--num_heads", "4")
  if r.returncode != 0:
    raise RuntimeError(f"converting the tiny DiT failed:\n{r.stderr[-2000:]}")
  return folder
