"""Does a toy video show what its captions say? Per-frame sprite/background recognition (NumPy only).

For a frame f (uint8 [H, W, 3]) and a toy scene (background colour bg, sprite colour fg, object mask
m of the toy renderer's size), the squared error of the toy rendering with the sprite's top-left
corner at p (wrapping around the borders, as the renderer does) is

  E(p) = sum_x ||f(x) - bg||^2 + sum_{x in m + p} (||f(x) - fg||^2 - ||f(x) - bg||^2),

i.e. a constant plus the circular cross-correlation of the per-pixel difference map with the mask:
one FFT per frame and candidate gives the best placement of every object. From it, per frame:

  * `background`  - the background colour of the caption is the palette colour nearest to the
    frame's per-channel median;
  * `colour`      - among the sprite palette, the caption's colour explains the frame best (lowest
    best-placement error with the caption's object and background);
  * `shape`       - among the build's objects (`objects`: the shapes, and the digits when the build
    has them), the caption's object explains the frame best (with the caption's colours);
  * `render_error` - RMS pixel error / 255 of the caption's rendering at its best placement (the toy
    renderer's own frames score 0);
  * `sprite_gain`  - 1 - E(best) / E(no sprite): the share of the error of a flat background that the
    caption's sprite removes, clipped to [-1, 1] (1 for the renderer's frames, <= 0 when no sprite is visible).

A chunk is `correct` when the majority of its frames has background, colour and shape right.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from blockvid_jax.data import toy_grammar as grammar


def sprite_size(resolution: int, size: int = 0) -> int:
  """The toy renderer's sprite side for a frame of `resolution` pixels (`size` 0: the default)."""
  return size or grammar.default_sprite_size(resolution)


@functools.lru_cache(maxsize=None)
def _mask_fft(obj: str, size: int, resolution: int) -> np.ndarray:
  """FFT of the object mask placed at the origin of a resolution^2 canvas: complex [R, R]."""
  canvas = np.zeros((resolution, resolution), np.float64)
  canvas[:size, :size] = grammar.sprite_mask(obj, size)
  return np.fft.fft2(canvas)


def _placement_errors(frame: np.ndarray, obj: str, fg, bg, size: int) -> np.ndarray:
  """Squared error of the rendering at every top-left corner: [H, W] (frame float64 [H, W, 3])."""
  res = frame.shape[0]
  d_bg = np.sum((frame - np.asarray(bg, np.float64)) ** 2, axis=-1)          # [H, W]
  d_fg = np.sum((frame - np.asarray(fg, np.float64)) ** 2, axis=-1)          # [H, W]
  delta = d_fg - d_bg                                                         # [H, W]
  # corr[p] = sum_x mask(x) delta(x + p): circular cross-correlation through the FFT.
  corr = np.real(np.fft.ifft2(np.fft.fft2(delta) * np.conj(_mask_fft(obj, size, res))))
  return d_bg.sum() + corr                                                    # [H, W]


def frame_scores(frame: np.ndarray, caption: str, size: int = 0,
                 objects: Sequence[str] = grammar.objects()) -> dict:
  """Recognition results of one frame uint8 [H, W, 3] against a toy caption (module docstring).

  size: the sprite side of the build that rendered the caption (0: the default for the resolution);
  objects: the sprite objects of that build (`toy_grammar.objects(use_digits)`), the shape candidates.
  """
  scene = grammar.parse_caption(caption)
  f = np.asarray(frame, np.float64)
  res = f.shape[0]
  if f.shape != (res, res, 3):
    raise ValueError(f"toy frames are square RGB, got shape {frame.shape}")
  size = sprite_size(res, size)
  fg = grammar.SPRITE_COLOURS[scene.colour]
  bg = grammar.BACKGROUND_COLOURS[scene.background]
  # Background: palette colour nearest to the per-channel median of the frame (the sprite covers
  # about 1/16 of it).
  mode = np.median(f.reshape(-1, 3), axis=0)                                  # [3]
  names = list(grammar.BACKGROUND_COLOURS)
  dists = [np.sum((mode - np.asarray(grammar.BACKGROUND_COLOURS[n])) ** 2) for n in names]
  background_ok = names[int(np.argmin(dists))] == scene.background
  best = lambda obj, colour: float(np.min(_placement_errors(f, obj, colour, bg, size)))
  own = best(scene.obj, fg)
  colour_ok = all(own < best(scene.obj, c) for n, c in grammar.SPRITE_COLOURS.items()
                  if n != scene.colour)
  if scene.obj not in objects:
    raise ValueError(f"caption object {scene.obj!r} is not one of the build's objects {objects}")
  shape_ok = all(own < best(o, fg) for o in objects if o != scene.obj)
  flat_error = float(np.sum((f - np.asarray(bg, np.float64)) ** 2))
  return {"background": background_ok, "colour": colour_ok, "shape": shape_ok,
          "render_error": float(np.sqrt(max(own, 0.0) / (res * res * 3)) / 255.0),
          "sprite_gain": float(np.clip(1.0 - own / max(flat_error, 1e-9), -1.0, 1.0))}


def video_scores(frames: np.ndarray, captions: Sequence[str], frames_per_chunk: int,
                 size: int = 0, objects: Sequence[str] = grammar.objects()) -> dict:
  """Per-chunk and overall recognition of a toy video uint8 [C * Fc, H, W, 3] with C captions
  (`size`, `objects`: the sprite side and objects of the build, as in `frame_scores`)."""
  frames = np.asarray(frames)
  c = len(captions)
  if frames.shape[0] != c * frames_per_chunk:
    raise ValueError(f"{frames.shape[0]} frames do not match {c} captions x {frames_per_chunk} "
                     "frames per chunk")
  chunks = []
  for i, cap in enumerate(captions):
    per = [frame_scores(fr, cap, size, objects) for fr in frames[i * frames_per_chunk:(i + 1) * frames_per_chunk]]
    maj = lambda k: sum(p[k] for p in per) * 2 > len(per)
    chunk = {k: maj(k) for k in ("background", "colour", "shape")}
    chunk["correct"] = all(chunk.values())
    chunk["render_error"] = float(np.mean([p["render_error"] for p in per]))
    chunk["sprite_gain"] = float(np.mean([p["sprite_gain"] for p in per]))
    chunks.append(chunk)
  rate = lambda k: float(np.mean([ch[k] for ch in chunks]))
  return {"chunks": chunks,
          "summary": {"chunks": c, "correct": rate("correct"), "background": rate("background"),
                      "colour": rate("colour"), "shape": rate("shape"),
                      "render_error": rate("render_error"), "sprite_gain": rate("sprite_gain")}}
