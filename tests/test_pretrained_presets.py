"""The public-weights presets: they validate and build a sampler when their files exist, and name a
missing file in one line."""

import os

import pytest

from blockvid_jax import generate
from blockvid_jax.config_lib import sibling_config, validate
from blockvid_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "configs", "x.py")
FILES = ("Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", os.path.join("google", "umt5-xxl"))


@pytest.mark.parametrize("name, frames, hw, fps", [
    ("self_forcing_1_3b", 3, (60, 104), 16), ("skyreels_v2_df_1_3b", 5, (68, 120), 24)])
def test_preset_builds(tmp_path, name, frames, hw, fps):
  (tmp_path / "google" / "umt5-xxl").mkdir(parents=True)
  for f in FILES[:2]:
    (tmp_path / f).write_bytes(b"")
  config = sibling_config(HERE, name, str(tmp_path))
  spec, sampler = generate.build_sampler(config)
  assert spec.frames_per_chunk == frames and spec.text_dim == 4096
  assert sampler.chunk_shape == (frames, *hw, 16) and config.video.fps == fps
  assert config.text.encoder == "umt5" and config.autoencoder.kind == "wan"


def test_preset_missing_file(tmp_path):
  config = sibling_config(HERE, "self_forcing_1_3b", str(tmp_path))
  with pytest.raises(ConfigError, match="text.checkpoint .* does not exist"):
    validate(config)
