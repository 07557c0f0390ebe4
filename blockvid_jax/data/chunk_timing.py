"""`ChunkTiming`: which pixel frames (and seconds) each model chunk of a video covers.

A chunk of Fc latent frames decodes to Fc x temporal factor pixel frames, except the first chunk of
a causal VAE: its first latent frame decodes to a single pixel frame, so with the Wan VAE
(factor 4) chunk 0 has 3 frames fewer and a video of C chunks has 1 + 4 (C Fc - 1) frames. One
rule for every user: latent pre-encoding (the caption at each chunk's middle) and LV-Bench (the
caption spans that condition each chunk).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class ChunkTiming:
  """Pixel frames and seconds of each model chunk (see the module docstring)."""
  frames: int          # pixel frames of every chunk but the first
  first_short: int     # pixel frames the first chunk has fewer (Wan VAE: 3; toy: 0)
  fps: float

  def frame_range(self, c: int) -> tuple[int, int]:
    """[lo, hi) pixel frames of chunk c."""
    return max(0, c * self.frames - self.first_short), (c + 1) * self.frames - self.first_short

  def span(self, c: int) -> tuple[float, float]:
    """[lo, hi) seconds of chunk c."""
    lo, hi = self.frame_range(c)
    return lo / self.fps, hi / self.fps

  def num_frames(self, num_chunks: int) -> int:
    """Pixel frames of a video of `num_chunks` chunks."""
    return self.frame_range(num_chunks - 1)[1]

  def num_chunks(self, seconds: float) -> int:
    """The fewest chunks (>= 1) whose frames last at least `seconds`."""
    return max(1, math.ceil((seconds * self.fps + self.first_short) / self.frames - 1e-9))
