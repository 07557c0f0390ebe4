"""CLI: pre-encode captioned videos into a `latent_folder` (Wan VAE latents + umT5 caption embeddings).

  python -m blockvid_jax.encode --config configs/self_forcing_1_3b.py:WAN --videos DIR \
      [--captions DIR/captions.json] --out LATENT_DIR [--max_chunks N] [--videos_per_device K]

The config gives the weights (`autoencoder.checkpoint`, `text.checkpoint`, `text.tokenizer`), the
pixel size (`video.latent_height/width` x 8) and `model.frames_per_chunk`. Data-parallel over this
host's devices (K videos per device per step); on several hosts (BLOCKVID_DISTRIBUTED=1, see
`parallel.distributed`) each process encodes its own share of the videos into the shared
LATENT_DIR. Resumable (finished videos are skipped); a progress bar shows videos done / total,
videos/s and the ETA; LATENT_DIR/encode_report.json lists written, done and skipped videos. The
library (`blockvid_jax.encode_videos.encode_folder`) documents the details. User errors print
one line and exit 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from blockvid_jax.config_overrides import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with the pretrained paths.",
                                          lock_config=True)
_VIDEOS = flags.DEFINE_string("videos", None, "Folder of videos.")
_CAPTIONS = flags.DEFINE_string("captions", "", "captions.json (default: VIDEOS/captions.json).")
_OUT = flags.DEFINE_string("out", None, "Output latent_folder directory.")
_MAX_CHUNKS = flags.DEFINE_integer("max_chunks", 0, "At most this many chunks per video (0: all).")
_PER_DEVICE = flags.DEFINE_integer("videos_per_device", 1, "Videos per device in one encode step.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from blockvid_jax.encode_videos import REPORT, encode_folder  # pylint: disable=import-outside-toplevel
  from blockvid_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from blockvid_jax.parallel.distributed import maybe_initialize  # pylint: disable=import-outside-toplevel
  try:
    if _CONFIG.value is None or not _VIDEOS.value or not _OUT.value:
      raise ConfigError("--config, --videos and --out are required")
    maybe_initialize()
    count = encode_folder(_CONFIG.value, _VIDEOS.value, _CAPTIONS.value, _OUT.value,
                          _MAX_CHUNKS.value, videos_per_device=_PER_DEVICE.value)
  except (ConfigError, ValueError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {count} videos to {_OUT.value} (skipped ones: {os.path.join(_OUT.value, REPORT)})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
