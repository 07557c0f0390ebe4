"""Per-video scene identities of the toy where memory matters (DESIGN 7), and the identity metric.

A caption names a sprite colour, an object, a motion and a background colour. An `Identity` adds
what it does not name, drawn per video and scene: the exact sprite and background shades (jittered
around the named colours, resampled until the named colour is still the nearest palette colour, so
`toy_fidelity`'s checks keep working), a sprite texture (a darker shade on every third row, column
or checker cell) and a background pattern (lines of a lighter shade, period and phase random, on a
quarter of the pixels or fewer, so the background's median stays its base shade).

`descriptor(chunk)` summarises the identity visible in a chunk of frames, independent of the sprite's
position: background median shade, sprite mean shade, background line energy along rows and columns
and the sprite's texture contrast. `identity_error(a, b)` is the mean absolute difference of two
descriptors (0: same identity; two random identities of the same caption differ by about 0.03-0.1).
Pure NumPy, integer rendering.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from blockvid_jax.data import toy_grammar as grammar

TEXTURES = ("solid", "rows", "cols", "checker")
PATTERNS = ("flat", "rows", "cols", "grid")


@dataclasses.dataclass(frozen=True)
class Identity:
  """What a scene looks like beyond its caption (all uint8-range integers)."""
  sprite: tuple[int, int, int]         # sprite base shade
  texture: str                         # TEXTURES
  background: tuple[int, int, int]     # background base shade
  pattern: str                         # PATTERNS
  period: int                          # pattern period in pixels
  phase: int                           # pattern phase in pixels


def _nearest(rgb: np.ndarray, palette: dict) -> str:
  names = list(palette)
  d = [float(np.sum((rgb - np.asarray(palette[n], np.int64)) ** 2)) for n in names]
  return names[int(np.argmin(d))]


def _jitter(rng: np.random.Generator, name: str, palette: dict, amount: int) -> tuple[int, ...]:
  base = np.asarray(palette[name], np.int64)
  while True:
    rgb = np.clip(base + rng.integers(-amount, amount + 1, size=3), 0, 255)
    if _nearest(rgb, palette) == name:
      return tuple(int(v) for v in rgb)


def sample(rng: np.random.Generator, scene: grammar.SceneSpec) -> Identity:
  """A random identity for a scene of this caption."""
  sprite = _jitter(rng, scene.colour, grammar.SPRITE_COLOURS, 40)
  background = _jitter(rng, scene.background, grammar.BACKGROUND_COLOURS, 15)
  texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
  pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
  period = int(rng.integers(4, 9))
  return Identity(sprite=sprite, texture=texture, background=background, pattern=pattern,
                  period=period, phase=int(rng.integers(period)))


def _shade(rgb: tuple[int, ...], num: int, den: int) -> np.ndarray:
  return np.clip(np.asarray(rgb, np.int64) * num // den, 0, 255).astype(np.uint8)


def background(identity: Identity, resolution: int) -> np.ndarray:
  """The scene's background frame uint8 [H, W, 3]."""
  frame = np.empty((resolution, resolution, 3), np.uint8)
  frame[...] = np.asarray(identity.background, np.uint8)
  lines = (np.arange(resolution) + identity.phase) % identity.period == 0        # [H]
  light = np.clip(np.asarray(identity.background, np.int64) + 14, 0, 255).astype(np.uint8)
  if identity.pattern in ("rows", "grid"):
    frame[lines] = light
  if identity.pattern in ("cols", "grid"):
    frame[:, lines] = light
  return frame


def sprite_texture(identity: Identity, size: int) -> np.ndarray:
  """The sprite's ink uint8 [size, size, 3] (the object mask selects from it)."""
  ink = np.empty((size, size, 3), np.uint8)
  ink[...] = np.asarray(identity.sprite, np.uint8)
  y, x = np.mgrid[0:size, 0:size]
  dark = {"solid": np.zeros((size, size), bool), "rows": y % 3 == 1, "cols": x % 3 == 1,
          "checker": (y // 2 + x // 2) % 2 == 1}[identity.texture]
  ink[dark] = _shade(identity.sprite, 13, 20)
  return ink


def descriptor(frames: np.ndarray) -> np.ndarray:
  """The identity visible in frames uint8 [F, H, W, 3] -> float64 [9] in [0, 1]-ish units."""
  f = frames.astype(np.float64)
  bg = np.median(f.reshape(-1, 3), axis=0)                                       # [3]
  far = np.abs(f - bg).max(axis=-1) > 40                                         # [F, H, W]
  sprite = f[far].mean(axis=0) if far.any() else bg                              # [3]
  near = ~far
  d_rows = np.abs(np.diff(f, axis=1)).max(axis=-1)[near[:, 1:] & near[:, :-1]]  # background lines
  d_cols = np.abs(np.diff(f, axis=2)).max(axis=-1)[near[:, :, 1:] & near[:, :, :-1]]
  contrast = f[far].std(axis=0).mean() if far.sum() > 1 else 0.0
  energy = lambda d: float(d.mean()) if d.size else 0.0
  return np.concatenate([bg / 255.0, sprite / 255.0,
                         [energy(d_rows) / 14.0, energy(d_cols) / 14.0, contrast / 255.0]])


def identity_error(a: np.ndarray, b: np.ndarray) -> float:
  """Mean absolute difference of two chunks' descriptors (frames uint8 [F, H, W, 3] each)."""
  return float(np.mean(np.abs(descriptor(a) - descriptor(b))))


def returning_identity_error(frames: np.ndarray, scene_ids: np.ndarray,
                             frames_per_chunk: int) -> dict:
  """For every chunk of a scene that returns after a cut: its identity error against the scene's
  first chunk in the same video. frames [C * Fc, H, W, 3], scene_ids [C] ->
  {"per_chunk": {chunk: error}, "mean": float or nan}."""
  first, errors = {}, {}
  for c, s in enumerate(np.asarray(scene_ids).tolist()):
    chunk = frames[c * frames_per_chunk:(c + 1) * frames_per_chunk]
    if s not in first:
      first[s] = chunk
    elif scene_ids[c - 1] != s:                                                  # a return
      errors[c] = identity_error(chunk, first[s])
  return {"per_chunk": errors, "mean": float(np.mean(list(errors.values()))) if errors
          else float("nan")}
