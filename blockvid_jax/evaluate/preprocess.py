"""Image preprocessing of the VDE scorers: uint8 frames [T, H, W, 3] -> normalised float32 NHWC.

The reference pipelines (VBench's `dino_transform` / `clip_transform`, which LV-Bench's scorers use)
run torchvision on uint8 video tensors:
  * DINO (subject):      Resize(224) shorter side, bilinear, antialias=False (no crop) -> /255 ->
                         ImageNet mean/std. A 480x832 frame becomes 224x388.
  * CLIP (background, aesthetic): Resize(224) shorter side, bicubic, antialias=False ->
                         CenterCrop(224) -> /255 -> CLIP mean/std.
torchvision resizes a uint8 tensor in float and rounds back to uint8 (clamping to 0..255 for
bicubic); we do the same, so the network sees the same 8-bit image. Sizes follow torchvision: the
longer side becomes int(size * long / short) (truncated); the crop offset is
int(round((H - s) / 2)).
"""

from __future__ import annotations

import numpy as np

from blockvid_jax.evaluate.resize import resize_hw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
  """torchvision's output (h, w) of Resize(size) for an int size: the shorter side becomes size."""
  if h <= w:
    return size, int(size * w / h)
  return int(size * h / w), size


def resize_uint8(frames: np.ndarray, out_hw: tuple[int, int], method: str) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T, h, w, 3] holding the rounded, clamped 8-bit values 0..255."""
  if tuple(out_hw) == tuple(frames.shape[1:3]):
    return frames.astype(np.float32)                      # torchvision returns the input unchanged
  x = resize_hw(frames.astype(np.float32), out_hw, method)  # [T, h, w, 3]
  return np.clip(np.round(x), 0.0, 255.0)


def center_crop(x: np.ndarray, size: int) -> np.ndarray:
  """[T, H, W, C] -> [T, size, size, C] (H, W >= size), torchvision's offsets."""
  _, h, w, _ = x.shape
  if h < size or w < size:
    raise ValueError(f"cannot centre-crop {h}x{w} to {size}x{size}")
  top = int(round((h - size) / 2.0))
  left = int(round((w - size) / 2.0))
  return x[:, top:top + size, left:left + size]           # [T, size, size, C]


def normalize(x255: np.ndarray, mean, std) -> np.ndarray:
  """float [T, H, W, 3] in 0..255 -> (x / 255 - mean) / std, float32."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return ((x255.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def _check(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def dino_preprocess(frames: np.ndarray, short_side: int = 224) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T, h, w, 3]: shorter side `short_side`, bilinear, ImageNet."""
  frames = _check(frames)
  out_hw = shorter_side_size(frames.shape[1], frames.shape[2], short_side)
  x = resize_uint8(frames, out_hw, "bilinear")            # [T, h, w, 3]
  return normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def clip_preprocess(frames: np.ndarray, size: int = 224) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T, size, size, 3]: bicubic shorter side, centre crop, CLIP."""
  frames = _check(frames)
  out_hw = shorter_side_size(frames.shape[1], frames.shape[2], size)
  x = resize_uint8(frames, out_hw, "bicubic")             # [T, h, w, 3]
  x = center_crop(x, size)                                # [T, size, size, 3]
  return normalize(x, CLIP_MEAN, CLIP_STD)
