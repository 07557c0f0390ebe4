"""`DiTSpec`: the frozen, typed description of a Wan2.1-compatible causal DiT.

The ml_collections config stops here: `DiTSpec.from_config(config.model)` validates the fields
(one-line `ConfigError`s) and the top model holds the spec; blocks take explicit sizes.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from blockvid_jax.errors import ConfigError


class AttentionImpl(str, enum.Enum):
  """Attention implementations (`models.attention_kernels`). `xla` is the reference every other one
  is tested against."""
  XLA = "xla"
  CHUNKED = "chunked"    # online softmax over key blocks, custom VJP: O(L * block) memory
  CUDNN = "cudnn"        # jax.nn.dot_product_attention(implementation="cudnn"), GPU only
  AUTO = "auto"          # the best one for backend / dtype / head dim / sequence length


# Rematerialisation policies, the one table of them: "none" (no jax.checkpoint), "full" (save
# nothing), "dots" (save matmul outputs), "dots_no_batch" (save matmuls without batch dims).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


def checkpoint_policy(name: str):
  """The `jax.checkpoint` policy of a remat policy name (None: save nothing, for "none"/"full")."""
  return {"dots": jax.checkpoint_policies.checkpoint_dots,
          "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}.get(name)


# What the output head predicts. `v`: the flow velocity eps - x0 (Wan2.1 and every public
# checkpoint). `x0`: the clean latents, turned into v = (x_t - x0) / max(t, X0_T_FLOOR) inside the
# model, so every caller still sees v (x-prediction, Li & He 2025, "Back to Basics: Let Denoising
# Generative Models Denoise"): a small network need not reproduce the input noise at high t.
PREDICTIONS = ("v", "x0")
X0_T_FLOOR = 0.05
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class DiTSpec:
  """Sizes and numerics of the causal DiT (defaults: Wan2.1-T2V-1.3B)."""
  dim: int = 1536                      # D, model width
  ffn_dim: int = 8960                  # M, MLP width
  num_heads: int = 12                  # N
  num_layers: int = 30                 # K
  text_dim: int = 4096                 # E, width of the text encoder output (umT5-XXL: 4096)
  in_channels: int = 16                # latent channels in
  out_channels: int = 16               # latent channels out
  patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw)
  freq_dim: int = 256                  # sinusoidal time embedding size
  eps: float = 1e-6                    # LayerNorm / RMSNorm epsilon
  frames_per_chunk: int = 3            # latent frames per causal chunk
  rope_theta: float = 10000.0
  dtype: str = "float32"               # compute dtype of matmuls (residual stream stays float32)
  param_dtype: str = "float32"
  remat_policy: str = "none"           # one of REMAT_POLICIES
  attention_impl: str = "xla"          # one of AttentionImpl
  prediction: str = "v"                # one of PREDICTIONS (the model still returns v)

  def __post_init__(self):
    self.validate()

  # ------------------------------------------------------------------ presets
  @classmethod
  def preset(cls, name: str, **overrides: Any) -> "DiTSpec":
    if name not in PRESETS:
      raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = dict(PRESETS[name])
    fields.update(overrides)
    return cls(**fields)

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> "DiTSpec":
    """Builds a spec from a config mapping (`config.model`); unknown keys are an error."""
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    preset = cfg.pop("preset", None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
      raise ConfigError(f"unknown model config key(s) {unknown}; known: {sorted(known)}")
    if "patch_size" in cfg:
      cfg["patch_size"] = tuple(int(p) for p in cfg["patch_size"])
    return cls.preset(preset, **cfg) if preset else cls(**cfg)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["patch_size"] = list(self.patch_size)
    return d

  # ------------------------------------------------------------------ derived
  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def patch_volume(self) -> int:
    pt, ph, pw = self.patch_size
    return pt * ph * pw

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  def validate(self) -> None:
    def need(cond: bool, msg: str):
      if not cond:
        raise ConfigError(msg)
    for name in ("dim", "ffn_dim", "num_heads", "num_layers", "text_dim", "in_channels",
                 "out_channels", "freq_dim", "frames_per_chunk"):
      v = getattr(self, name)
      need(isinstance(v, int) and not isinstance(v, bool) and v > 0,
           f"model.{name} must be a positive integer, got {v!r}")
    need(self.dim % self.num_heads == 0,
         f"model.num_heads={self.num_heads} does not divide model.dim={self.dim}")
    need(self.head_dim % 2 == 0 and self.head_dim >= 6,
         f"head_dim = dim / num_heads = {self.head_dim} must be even and >= 6 for the 3D RoPE")
    need(self.freq_dim % 2 == 0, f"model.freq_dim must be even, got {self.freq_dim}")
    need(len(self.patch_size) == 3 and all(isinstance(p, int) and p > 0 for p in self.patch_size),
         f"model.patch_size must be three positive integers, got {self.patch_size!r}")
    need(self.eps > 0, f"model.eps must be > 0, got {self.eps}")
    need(self.dtype in DTYPES, f"model.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
    need(self.param_dtype in DTYPES,
         f"model.param_dtype must be one of {sorted(DTYPES)}, got {self.param_dtype!r}")
    need(self.remat_policy in REMAT_POLICIES,
         f"model.remat_policy must be one of {list(REMAT_POLICIES)}, got {self.remat_policy!r}")
    need(self.attention_impl in {a.value for a in AttentionImpl},
         f"model.attention_impl must be one of {[a.value for a in AttentionImpl]}, "
         f"got {self.attention_impl!r}")

    need(self.prediction in PREDICTIONS,
         f"model.prediction must be one of {list(PREDICTIONS)}, got {self.prediction!r}")

  def check_latents(self, shape: tuple[int, ...], what: str = "latents") -> None:
    """One-line errors for a latent video of the wrong shape: [B, F, H, W, C]."""
    if len(shape) != 5:
      raise ConfigError(f"{what} must be [B, F, H, W, {self.in_channels}], got shape {tuple(shape)}")
    _, f, h, w, c = shape
    pt, ph, pw = self.patch_size
    if c != self.in_channels:
      raise ConfigError(f"{what} has {c} channels, the model expects {self.in_channels}")
    if h % ph or w % pw or f % pt:
      raise ConfigError(f"{what} frames/height/width {(f, h, w)} are not multiples of the patch "
                        f"size {self.patch_size}")


PRESETS: dict[str, dict[str, Any]] = {
    # Tests: a few thousand parameters, two chunks of 3 frames compile in seconds on CPU.
    "tiny": dict(dim=48, ffn_dim=96, num_heads=4, num_layers=2, text_dim=32, freq_dim=32),
    # CPU demos and benchmarks.
    "small": dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=8, text_dim=512),
    # Wan2.1-T2V-1.3B (1,418,996,800 parameters).
    "wan_1_3b": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    # Wan2.1-T2V-14B.
    "wan_14b": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}
