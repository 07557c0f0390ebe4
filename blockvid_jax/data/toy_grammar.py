"""The caption grammar of the toy long-video dataset, its vocabulary and a tiny digit font.

A toy scene is one sprite on a solid background. Its caption follows one rule:

  caption    := ART COLOUR OBJECT MOTION "on" ART BACKGROUND "background"
  ART        := "a" | "an" (before a vowel)
  OBJECT     := SHAPE | "digit" DIGIT
  MOTION     := "moves left" | "moves right" | "moves up" | "moves down" | "stays still"
              | "bounces around"

e.g. "a red circle moves left on a navy background", "an orange digit seven bounces around on an
olive background". This module has no heavy imports: the toy text encoder reads its vocabulary from here.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

# Sprite colours (RGB). Background colours are darker and never share a name with a sprite colour.
SPRITE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (60, 110, 240),
    "yellow": (235, 220, 50), "cyan": (40, 210, 220), "magenta": (210, 50, 200),
    "white": (240, 240, 240), "orange": (245, 140, 30),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "gray": (100, 100, 100), "navy": (15, 20, 80), "maroon": (90, 15, 25),
    "olive": (80, 80, 15), "teal": (10, 80, 80), "purple": (60, 20, 90), "brown": (80, 50, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                "eight", "nine")
# Motion name -> caption phrase.
MOTIONS: dict[str, str] = {
    "left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down",
    "still": "stays still", "bounce": "bounces around",
}

# A 3x5 bitmap font for the digits 0-9 (rows top to bottom, "#" = ink).
_FONT_3X5: tuple[tuple[str, ...], ...] = (
    ("###", "#.#", "#.#", "#.#", "###"),  # 0
    (".#.", "##.", ".#.", ".#.", "###"),  # 1
    ("###", "..#", "###", "#..", "###"),  # 2
    ("###", "..#", ".##", "..#", "###"),  # 3
    ("#.#", "#.#", "###", "..#", "..#"),  # 4
    ("###", "#..", "###", "..#", "###"),  # 5
    ("###", "#..", "###", "#.#", "###"),  # 6
    ("###", "..#", ".#.", ".#.", ".#."),  # 7
    ("###", "#.#", "###", "#.#", "###"),  # 8
    ("###", "#.#", "###", "..#", "###"),  # 9
)


@dataclasses.dataclass(frozen=True)
class SceneSpec:
  """What a caption says about a scene: sprite colour, object, motion and background names.

  `obj` is a shape name ("circle") or a digit word ("seven").
  """
  colour: str
  obj: str
  motion: str
  background: str


def caption(scene: SceneSpec) -> str:
  """The caption of a scene, e.g. "a red circle moves left on a navy background"."""
  obj = f"digit {scene.obj}" if scene.obj in DIGIT_WORDS else scene.obj
  return (f"{_article(scene.colour)} {scene.colour} {obj} {MOTIONS[scene.motion]} on "
          f"{_article(scene.background)} {scene.background} background")


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


_CAPTION_RE = re.compile(
    r"^(?P<art1>an?) (?P<colour>{c}) (?:(?P<shape>{s})|digit (?P<digit>{d})) (?P<motion>{m}) "
    r"on (?P<art2>an?) (?P<background>{b}) background$".format(
        c="|".join(SPRITE_COLOURS), s="|".join(SHAPES), d="|".join(DIGIT_WORDS),
        m="|".join(MOTIONS.values()), b="|".join(BACKGROUND_COLOURS)))


def parse_caption(text: str) -> SceneSpec:
  """Inverse of `caption`; raises ValueError for a string outside the grammar."""
  match = _CAPTION_RE.match(text)
  if (match is None or match["art1"] != _article(match["colour"])
      or match["art2"] != _article(match["background"])):
    raise ValueError(f"not a toy caption: {text!r}")
  motion = {phrase: name for name, phrase in MOTIONS.items()}[match["motion"]]
  return SceneSpec(colour=match["colour"], obj=match["shape"] or match["digit"], motion=motion,
                   background=match["background"])


def vocabulary() -> tuple[str, ...]:
  """Every word the grammar can produce, sorted (no special tokens)."""
  words = {"a", "an", "on", "background", "digit"}
  words.update(SPRITE_COLOURS, BACKGROUND_COLOURS, SHAPES, DIGIT_WORDS)
  for phrase in MOTIONS.values():
    words.update(phrase.split())
  return tuple(sorted(words))


def objects(use_digits: bool = True) -> tuple[str, ...]:
  """The sprite objects of a toy build: the four shapes, then the digit words if `use_digits`."""
  return SHAPES + (DIGIT_WORDS if use_digits else ())


def default_sprite_size(resolution: int) -> int:
  """The sprite side in pixels of a toy frame of `resolution` pixels unless a build sets another."""
  return max(4, resolution // 4)


def sprite_mask(obj: str, size: int) -> np.ndarray:
  """Boolean ink mask [size, size] of a shape or a digit (the font scaled by nearest neighbour)."""
  if obj in DIGIT_WORDS:
    glyph = np.array([[ch == "#" for ch in row] for row in _FONT_3X5[DIGIT_WORDS.index(obj)]])
    rows = (np.arange(size) * 5) // size  # [size] font row per pixel row
    cols = (np.arange(size) * 3) // size  # [size] font col per pixel col
    return glyph[rows[:, None], cols[None, :]]  # [size, size]
  centre = (size - 1) / 2.0
  y, x = np.mgrid[0:size, 0:size].astype(np.float64) - centre  # [size, size] each
  if obj == "circle":
    return y * y + x * x <= (size / 2.0) ** 2
  if obj == "square":
    return np.ones((size, size), dtype=bool)
  if obj == "triangle":  # apex at the top, base at the bottom row
    return np.abs(x) <= (y + centre + 1.0) / 2.0
  if obj == "cross":  # a plus sign with arms a third of the size wide
    half = max(size / 6.0, 0.5)
    return (np.abs(x) <= half) | (np.abs(y) <= half)
  raise ValueError(f"unknown sprite object {obj!r}")
