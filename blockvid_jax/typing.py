"""The shape legend used in every `# [...]` comment and einsum of this package.

Letters:
  B  batch                       F  latent frames (of a sequence or a chunk)
  P  tokens per latent frame     L  query tokens (F * P)
  S  key / cache slots           N  attention heads
  H  head dim                    D  model width
  M  MLP width                   C  channels (latent or pixel)
  T  text tokens                 E  text embedding width (text_dim)
  K  layers (stacked params)     X  spatial rows (h)   Y spatial cols (w)

Positions are int32 triples (frame, row, col) on the post-patch token grid, shape [..., 3].
"""

from typing import Any

import jax

Array = jax.Array
PyTree = Any
