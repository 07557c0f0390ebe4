"""Static sampling settings: the solver (few-step DMD or multi-step Euler), its schedule, guidance,
noise shuffling and the scan segment length (DESIGN 5)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from blockvid_jax.diffusion import flow
from blockvid_jax.errors import ConfigError

SOLVERS = ("dmd", "euler")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Static sampling settings (hashable)."""
  solver: str = "dmd"
  timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
  num_steps: int = 20
  shift: float = 5.0
  guidance: float = 1.0
  shuffle: bool = True
  shuffle_window: int = 4
  shuffle_mix: float = 0.5
  context_t: float = 0.0
  chunks_per_segment: int = 4

  def __post_init__(self):
    if self.solver not in SOLVERS:
      raise ConfigError(f"sample.solver must be one of {SOLVERS}, got {self.solver!r}")
    if self.solver == "dmd" and (not self.timesteps or
                                 any(not 0 < t <= 1000 for t in self.timesteps)):
      raise ConfigError(f"sample.timesteps must be in (0, 1000], got {self.timesteps}")
    if self.solver == "euler" and self.num_steps < 1:
      raise ConfigError(f"sample.num_steps must be >= 1, got {self.num_steps}")
    if not 0.0 <= self.shuffle_mix <= 1.0:
      raise ConfigError(f"sample.shuffle_mix must be in [0, 1], got {self.shuffle_mix}")
    if self.shuffle_window < 1:
      raise ConfigError(f"sample.shuffle_window must be >= 1, got {self.shuffle_window}")
    if self.chunks_per_segment < 1:
      raise ConfigError(f"sample.chunks_per_segment must be >= 1, got {self.chunks_per_segment}")

  @classmethod
  def from_config(cls, sample: Mapping[str, Any], context_t: float = 0.0) -> "SamplerSpec":
    d = dict(sample.to_dict() if hasattr(sample, "to_dict") else sample)
    d.pop("num_chunks", None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown sample config key(s) {unknown}")
    d["timesteps"] = tuple(float(t) for t in d.get("timesteps", cls.timesteps))
    return cls(**d, context_t=context_t)

  def schedule(self) -> tuple[np.ndarray, np.ndarray]:
    """(t, t_next) per denoising step, flow time in [0, 1] after the shift; the last t_next is 0."""
    if self.solver == "dmd":
      t = np.asarray(self.timesteps, np.float64) / 1000.0
    else:
      t = np.linspace(1.0, 0.0, self.num_steps + 1)[:-1]
    t = np.asarray(flow.shift_t(t, self.shift), np.float32)
    return t, np.append(t[1:], 0.0).astype(np.float32)
