"""`toy_long_video`: a tfds builder of procedurally generated long videos with per-chunk captions.

Nothing is downloaded. Each video visits 2-3 *scenes* (a sprite with a colour, an object - shape or
digit -, a motion, on a solid background; see `toy_grammar`) in a pattern such as A B A C B A: the
first visits come in order, then every shot (1-2 chunks) cuts to a different, already seen scene. A
returning scene resumes where it was left (same look, sprite at the position it had when the video
cut away), so a model that retrieves the earlier chunks of the same caption can continue it; that is
what BlockVid's semantic cache is for.

With `identities=True` (the toy where memory matters, DESIGN 7) each scene also gets a per-video
random *identity* that its caption does not name (`toy_identity`): exact sprite and background
shades (jittered around the named colours, still nearest to them in the palette), a sprite texture
and a background pattern, and a random start position; and `min_return_gap` makes a scene return
only after at least that many chunks of other scenes, i.e. after it has left a local window of that
size. A window cache then cannot restore a returning scene from its caption: only memory of its first
appearance can.

Features (no TensorFlow needed to build or read, so no Video/Image features):
  frames      uint8 [T, H, W, 3]  with T = chunks_per_video * frames_per_chunk
  captions    str   [C]           one caption per chunk (C = chunks_per_video)
  scene_ids   int32 [C]           index of the chunk's scene within its video
  video_index int32 []

Generation is a pure function of (config, split, video index): same seed -> identical bytes.

  builder = ToyLongVideo(config=toy_config(num_videos=8), data_dir=d, file_format="array_record")
  builder.download_and_prepare()
  source = builder.as_data_source("train")  # random access, for grain
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from blockvid_jax.data import toy_grammar as grammar
from blockvid_jax.data import toy_identity

_SPLIT_CODES = {"train": 0, "test": 1}
# "random": a scene's sprite starts anywhere at a random speed; "centre": it starts centred at the
# slow speed and a bouncing sprite starts moving down-right, so a scene's first chunk follows from its
# caption (the returning position stays whatever the scene's motion made it). A random direction and
# speed are up to 8 futures of one first frame, which the quickstart's small model averaged into a
# blob (thin crosses first, issue 15).
SPRITE_STARTS = ("random", "centre")


@dataclasses.dataclass(eq=False)
class ToyLongVideoConfig(tfds.core.BuilderConfig):
  """Geometry, size and seed of a toy build. Use `toy_config(...)` to get a named instance."""
  resolution: int = 32          # frames are resolution x resolution RGB
  frames_per_chunk: int = 3     # pixel frames per chunk (= latent frames with the toy autoencoder)
  chunks_per_video: int = 12    # C
  num_videos: int = 64          # train split size
  num_test_videos: int = 8      # test split size
  min_scenes: int = 2           # scenes per video are drawn from [min_scenes, max_scenes]
  max_scenes: int = 3
  use_digits: bool = True       # digits from the built-in 3x5 font besides the four shapes
  sprite_size: int = 0          # sprite side in pixels (0: max(4, resolution // 4))
  sprite_start: str = "random"  # a scene's first sprite position: "random" | "centre"
  identities: bool = False      # per-video scene identities not named by the captions
  min_return_gap: int = 0       # chunks of other scenes before a scene may return
  seed: int = 0

  def validate(self) -> None:
    if self.resolution < 8:
      raise ValueError(f"resolution must be >= 8, got {self.resolution}")
    if self.frames_per_chunk < 1 or self.chunks_per_video < 1:
      raise ValueError("frames_per_chunk and chunks_per_video must be >= 1")
    if self.num_videos < 1 or self.num_test_videos < 0:
      raise ValueError("num_videos must be >= 1 and num_test_videos >= 0")
    if self.sprite_size and not 4 <= self.sprite_size <= self.resolution:
      raise ValueError(f"sprite_size must be 0 (default) or in [4, resolution={self.resolution}], "
                       f"got {self.sprite_size}")
    if self.sprite_start not in SPRITE_STARTS:
      raise ValueError(f"sprite_start must be one of {SPRITE_STARTS}, got {self.sprite_start!r}")
    if self.min_return_gap < 0:
      raise ValueError(f"min_return_gap must be >= 0, got {self.min_return_gap}")
    if self.identities and self.sprite_start != "random":
      raise ValueError("identities=True draws the start position per video: sprite_start must be "
                       "'random'")
    if not 1 <= self.min_scenes <= self.max_scenes:
      raise ValueError(f"need 1 <= min_scenes <= max_scenes, got {self.min_scenes}, "
                       f"{self.max_scenes}")

  @property
  def sprite_side(self) -> int:
    return self.sprite_size or grammar.default_sprite_size(self.resolution)

  @property
  def frames_per_video(self) -> int:
    return self.chunks_per_video * self.frames_per_chunk


def toy_config(*, resolution: int = 32, frames_per_chunk: int = 3, chunks_per_video: int = 12,
               num_videos: int = 64, num_test_videos: int = 8, min_scenes: int = 2,
               max_scenes: int = 3, use_digits: bool = True, sprite_size: int = 0,
               sprite_start: str = "random", identities: bool = False, min_return_gap: int = 0,
               seed: int = 0) -> ToyLongVideoConfig:
  """A config whose name encodes every field, so each geometry/seed builds into its own folder."""
  name = (f"r{resolution}_f{frames_per_chunk}_c{chunks_per_video}_n{num_videos}"
          f"_t{num_test_videos}_s{min_scenes}-{max_scenes}_{'d' if use_digits else 'nd'}"
          f"{f'_z{sprite_size}' if sprite_size else ''}"
          f"{'_centred' if sprite_start == 'centre' else ''}"
          f"{'_id' if identities else ''}{f'_g{min_return_gap}' if min_return_gap else ''}"
          f"_seed{seed}")
  config = ToyLongVideoConfig(
      name=name, description="procedural sprites with recurring scenes", resolution=resolution,
      frames_per_chunk=frames_per_chunk, chunks_per_video=chunks_per_video, num_videos=num_videos,
      num_test_videos=num_test_videos, min_scenes=min_scenes, max_scenes=max_scenes,
      use_digits=use_digits, sprite_size=sprite_size, sprite_start=sprite_start,
      identities=identities, min_return_gap=min_return_gap, seed=seed)
  config.validate()
  return config


# ------------------------------------------------------------------------------------------------
# Procedural generation (pure NumPy, integer arithmetic only, so bytes are platform independent).


@dataclasses.dataclass
class _SpriteState:
  """Mutable simulation state of one scene's sprite: top-left corner and velocity, in pixels."""
  y: int
  x: int
  vy: int
  vx: int


def _sample_scenes(rng: np.random.Generator, count: int,
                   use_digits: bool) -> list[grammar.SceneSpec]:
  """`count` scenes with pairwise different captions."""
  objects = grammar.objects(use_digits)
  colours, backgrounds = tuple(grammar.SPRITE_COLOURS), tuple(grammar.BACKGROUND_COLOURS)
  motions = tuple(grammar.MOTIONS)
  scenes: list[grammar.SceneSpec] = []
  while len(scenes) < count:
    scene = grammar.SceneSpec(
        colour=colours[rng.integers(len(colours))], obj=objects[rng.integers(len(objects))],
        motion=motions[rng.integers(len(motions))],
        background=backgrounds[rng.integers(len(backgrounds))])
    if scene not in scenes:
      scenes.append(scene)
  return scenes


def _scene_pattern(rng: np.random.Generator, num_scenes: int, num_chunks: int,
                   min_gap: int = 0) -> np.ndarray:
  """Scene id per chunk [C]: shots of 1-2 chunks; first visits in order, later shots revisit a
  different scene whose last chunk lies at least `min_gap` chunks back (until one does, the current
  shot goes on)."""
  ids: list[int] = []
  shot = 0
  while len(ids) < num_chunks:
    if shot < num_scenes:
      scene = shot
    elif num_scenes == 1:
      scene = 0
    else:  # cut to a different scene that was already seen (and has been away long enough)
      last = {s: i for i, s in enumerate(ids)}
      others = [s for s in range(num_scenes) if s != ids[-1] and len(ids) - 1 - last[s] >= min_gap]
      if not others:
        ids.append(ids[-1])
        continue
      scene = others[rng.integers(len(others))]
    ids.extend([scene] * int(rng.integers(1, 3)))
    shot += 1
  return np.asarray(ids[:num_chunks], dtype=np.int32)  # [C]


def _initial_state(rng: np.random.Generator, motion: str, resolution: int, size: int,
                   start: str) -> _SpriteState:
  speed = int(rng.integers(1, 3)) * max(1, resolution // 32)
  y, x = (int(v) for v in rng.integers(0, resolution - size + 1, size=2))  # drawn for either start
  if start == "centre":                       # (so both starts consume the same random stream)
    y = x = (resolution - size) // 2
    speed = max(1, resolution // 32)
  vy, vx = {"left": (0, -speed), "right": (0, speed), "up": (-speed, 0), "down": (speed, 0),
            "still": (0, 0)}.get(motion, (0, 0))
  if motion == "bounce":
    signs = rng.choice([-1, 1], size=2)  # drawn for either start: the same stream for both
    vy, vx = (speed, speed) if start == "centre" else (int(s) * speed for s in signs)
  return _SpriteState(y=y, x=x, vy=vy, vx=vx)


def _step(state: _SpriteState, motion: str, resolution: int, size: int) -> None:
  """Advances one frame: straight motions wrap around the frame, `bounce` reflects off the walls."""
  if motion != "bounce":
    state.y = (state.y + state.vy) % resolution
    state.x = (state.x + state.vx) % resolution
    return
  limit = resolution - size
  for pos, vel in (("y", "vy"), ("x", "vx")):
    p = getattr(state, pos) + getattr(state, vel)
    if p < 0 or p > limit:
      p = -p if p < 0 else 2 * limit - p
      setattr(state, vel, -getattr(state, vel))
    setattr(state, pos, p)


def render_frame(scene: grammar.SceneSpec, y: int, x: int, mask: np.ndarray, resolution: int,
                 identity: Optional[toy_identity.Identity] = None) -> np.ndarray:
  """One frame uint8 [H, W, 3] of a scene with the sprite's top-left corner at (y, x) (wrapping
  around the borders) and its ink mask [size, size]; with `identity`, that identity's look."""
  if identity is None:
    frame = np.empty((resolution, resolution, 3), dtype=np.uint8)  # [H, W, 3]
    frame[...] = np.asarray(grammar.BACKGROUND_COLOURS[scene.background], dtype=np.uint8)
    ink = np.asarray(grammar.SPRITE_COLOURS[scene.colour], dtype=np.uint8)
  else:
    frame = toy_identity.background(identity, resolution)                        # [H, W, 3]
  size = mask.shape[0]
  rows = (y + np.arange(size)) % resolution  # [size]
  cols = (x + np.arange(size)) % resolution  # [size]
  patch = frame[rows[:, None], cols[None, :]]  # [size, size, 3]
  if identity is not None:
    ink = toy_identity.sprite_texture(identity, size)[mask]                      # [M, 3]
  patch[mask] = ink
  frame[rows[:, None], cols[None, :]] = patch
  return frame


def generate_video(config: ToyLongVideoConfig, split: str, index: int) -> dict[str, np.ndarray]:
  """One example (see the module docstring), a pure function of (config, split, index)."""
  rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
  res, fpc, num_chunks = config.resolution, config.frames_per_chunk, config.chunks_per_video
  num_scenes = int(rng.integers(config.min_scenes, config.max_scenes + 1))
  num_scenes = max(1, min(num_scenes, num_chunks - 1))  # leave room for at least one return
  scenes = _sample_scenes(rng, num_scenes, config.use_digits)
  size = config.sprite_side
  masks = [grammar.sprite_mask(s.obj, size) for s in scenes]
  states = [_initial_state(rng, s.motion, res, size, config.sprite_start) for s in scenes]
  scene_ids = _scene_pattern(rng, num_scenes, num_chunks, config.min_return_gap)  # [C]
  # Drawn after everything else, so a build without identities keeps its bytes.
  idents = ([toy_identity.sample(rng, s) for s in scenes] if config.identities
            else [None] * num_scenes)
  frames = np.empty((num_chunks * fpc, res, res, 3), dtype=np.uint8)  # [T, H, W, 3]
  for c, s in enumerate(scene_ids):
    for f in range(fpc):
      frames[c * fpc + f] = render_frame(scenes[s], states[s].y, states[s].x, masks[s], res,
                                         idents[s])
      _step(states[s], scenes[s].motion, res, size)
  captions = np.asarray([grammar.caption(scenes[s]) for s in scene_ids], dtype=object)  # [C] str
  return {"frames": frames, "captions": captions, "scene_ids": scene_ids,
          "video_index": np.int32(index)}


class ToyLongVideo(tfds.core.GeneratorBasedBuilder):
  """Procedural long videos of sprites with per-chunk captions and recurring scenes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [ToyLongVideoConfig(name="default", description="32x32, 12 chunks of 3")]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 resolves this through `importlib_resources`, which it does not install on
    # Python >= 3.9; the answer is simply this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config: ToyLongVideoConfig = self.builder_config
    config.validate()
    res, num_chunks = config.resolution, config.chunks_per_video
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(config.frames_per_video, res, res, 3),
                                           dtype=np.uint8),
            "captions": tfds.features.Tensor(shape=(num_chunks,), dtype=np.str_),
            "scene_ids": tfds.features.Tensor(shape=(num_chunks,), dtype=np.int32),
            "video_index": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    splits = {"train": self._generate_examples("train", self.builder_config.num_videos)}
    if self.builder_config.num_test_videos:
      splits["test"] = self._generate_examples("test", self.builder_config.num_test_videos)
    return splits

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      yield f"{split}_{index:06d}", generate_video(self.builder_config, split, index)
