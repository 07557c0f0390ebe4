"""CLI: sample a long video chunk by chunk with the sparse KV cache.

  python -m blockvid_jax.sample --config configs/toy_cpu.py [--checkpoint DIR] --prompts FILE \
      --num_chunks N --seed S --out out.mp4      (.mp4 | .gif | .npy latents) [--image first.png]

Prompts: `.txt` (one prompt per line, each for --chunks_per_prompt chunks) or `.json`
([{"prompt": ..., "chunks": n}, ...]); the narrative is cycled to --num_chunks. User errors print one
line and exit 2; no partial output file is left behind.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from blockvid_jax.config_overrides import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint directory (train/convert).")
_PROMPTS = flags.DEFINE_string("prompts", None, "Prompts file (.txt or .json).")
_NUM_CHUNKS = flags.DEFINE_integer("num_chunks", None, "Chunks to generate (default: config).")
_CHUNKS_PER_PROMPT = flags.DEFINE_integer("chunks_per_prompt", 1, "Chunks per .txt prompt line.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", "outputs/video.mp4", "Output .mp4 / .gif / .npy path.")
_IMAGE = flags.DEFINE_string("image", None, "I2V: first-frame image (resized + centre-cropped, "
                             "VAE-encoded; needs autoencoder.kind='wan').")


def _streams(config, out: str) -> bool:
  """Frames go straight to the .mp4 as chunks are decoded (Wan VAE with weights)."""
  ae = config.autoencoder
  return (out.lower().endswith(".mp4") and ae.kind in ("wan", "wan_vae")
          and bool(ae.get("checkpoint", "")))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.parallel.distributed import maybe_initialize  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  maybe_initialize()
  config = _CONFIG.value
  try:
    if config is None:
      raise ConfigError("--config is required (e.g. configs/toy_cpu.py)")
    if not _PROMPTS.value:
      raise ConfigError("--prompts is required (a .txt or .json file)")
    generate.check_output_path(_OUT.value)
    num = config.sample.num_chunks if _NUM_CHUNKS.value is None else _NUM_CHUNKS.value
    prompts = generate.read_prompts(_PROMPTS.value, _CHUNKS_PER_PROMPT.value)
    generate.chunk_prompts(prompts, num)
    if _streams(config, _OUT.value):
      from blockvid_jax.video_io import VideoWriter  # pylint: disable=import-outside-toplevel
      with VideoWriter(_OUT.value, fps=config.video.fps) as writer:
        generate.generate(config, prompts, num, _SEED.value, checkpoint=_CHECKPOINT.value,
                          frame_sink=writer.append, image=_IMAGE.value)
      path, frames = _OUT.value, writer.frames
    else:
      latents, pixels = generate.generate(config, prompts, num, _SEED.value,
                                          checkpoint=_CHECKPOINT.value, image=_IMAGE.value)
      path = generate.save_output(_OUT.value, latents, pixels, config.video.fps)
      frames = latents.shape[1] if pixels is None else pixels.shape[0]
  except (ConfigError, ValueError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {path}: {num} chunks, {frames} frames")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
