"""Key maps: PyTorch checkpoint names -> the Flax parameter tree of `CausalDiT`.

The canonical names are the original Wan2.1 ones (`blocks.3.self_attn.q.weight`). Source formats:
  * `wan`: original names (Wan2.1, SkyReels-V2-DF, Self Forcing's CausalWanModel saved alone).
  * `diffusers`: `WanTransformer3DModel` names (`blocks.3.attn1.to_q.weight`, `condition_embedder.*`,
    `proj_out`, `scale_shift_table`; Diffusers' block `norm2` is Wan's affine `norm3`).
  * `self_forcing`: a `.pt` holding `generator` / `generator_ema` state dicts of Wan names under
    `model.`; `use_ema` picks `generator_ema`.
In every format the wrapper segments `_fsdp_wrapped_module.`, `_orig_mod.` and
`_checkpoint_wrapped_module.` are removed wherever they occur, and the prefix in front of
`patch_embedding.weight` (e.g. `model.`, `module.`) is stripped from every key.

`RULES` lists, for every Flax leaf, the Wan key it comes from (`{i}` = layer of a stacked leaf) and
how the tensor is laid out (`Kind`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Optional

from blockvid_jax.convert.readers import TensorRef
from blockvid_jax.errors import ConvertError

FORMATS = ("wan", "diffusers", "self_forcing")
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.")
ANCHOR = "patch_embedding.weight"  # every format has it; what precedes it is the key prefix
SELF_FORCING_ROOTS = {False: "generator.", True: "generator_ema."}


class Kind(str, enum.Enum):
  """Layout of a source tensor relative to its Flax leaf."""
  LINEAR = "linear"  # torch Linear weight [out, in] -> kernel [in, out]
  VECTOR = "vector"  # bias / norm weight [D] -> same
  CONV = "conv"      # Conv3d weight [D, C, pt, ph, pw] -> kernel [pt*ph*pw*C, D], rows (pt, ph, pw, c)
  TABLE = "table"    # modulation [1, n, D] -> [n, D]


@dataclasses.dataclass(frozen=True)
class Rule:
  path: tuple[str, ...]  # Flax path in the params tree
  key: str               # Wan key; "{i}" is the layer of stacked ([K, ...]) leaves
  kind: Kind

  @property
  def stacked(self) -> bool:
    return "{i}" in self.key


def _linear(path: tuple[str, ...], key: str) -> tuple[Rule, ...]:
  return (Rule(path + ("kernel",), key + ".weight", Kind.LINEAR),
          Rule(path + ("bias",), key + ".bias", Kind.VECTOR))


def _attention(name: str) -> tuple[Rule, ...]:
  rules = []
  for proj in ("q", "k", "v", "o"):
    rules += _linear(("blocks", name, proj), f"blocks.{{i}}.{name}.{proj}")
  for norm in ("norm_q", "norm_k"):
    rules.append(Rule(("blocks", name, norm, "scale"), f"blocks.{{i}}.{name}.{norm}.weight", Kind.VECTOR))
  return tuple(rules)


RULES: tuple[Rule, ...] = (
    Rule(("patch_embedding", "kernel"), "patch_embedding.weight", Kind.CONV),
    Rule(("patch_embedding", "bias"), "patch_embedding.bias", Kind.VECTOR),
    *_linear(("text_embedding", "fc1"), "text_embedding.0"),
    *_linear(("text_embedding", "fc2"), "text_embedding.2"),
    *_linear(("time_embedding", "fc1"), "time_embedding.0"),
    *_linear(("time_embedding", "fc2"), "time_embedding.2"),
    *_linear(("time_embedding", "projection"), "time_projection.1"),
    *_attention("self_attn"),
    *_attention("cross_attn"),
    Rule(("blocks", "norm3", "scale"), "blocks.{i}.norm3.weight", Kind.VECTOR),
    Rule(("blocks", "norm3", "bias"), "blocks.{i}.norm3.bias", Kind.VECTOR),
    *_linear(("blocks", "ffn_fc1"), "blocks.{i}.ffn.0"),
    *_linear(("blocks", "ffn_fc2"), "blocks.{i}.ffn.2"),
    Rule(("blocks", "modulation"), "blocks.{i}.modulation", Kind.TABLE),
    *_linear(("head",), "head.head"),
    Rule(("head_modulation",), "head.modulation", Kind.TABLE),
)


# ------------------------------------------------------------------ Diffusers names
# Module renames Wan -> Diffusers (the parameter leaf `weight` / `bias` is kept) and whole-name renames.
_DIFFUSERS_TOP_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_DIFFUSERS_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
_DIFFUSERS_BLOCK_MODULES = {
    **{f"self_attn.{p}": f"attn1.to_{p}" for p in "qkv"},
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    **{f"cross_attn.{p}": f"attn2.to_{p}" for p in "qkv"},
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # the affine LayerNorm before cross-attention
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_DIFFUSERS_BLOCK_PARAMS = {"modulation": "scale_shift_table"}
_BLOCK_KEY = re.compile(r"(blocks\.\d+\.)(.+)")


def _invert(d: dict[str, str]) -> dict[str, str]:
  return {v: k for k, v in d.items()}


def _rename(key: str, top_modules, top_params, block_modules, block_params) -> Optional[str]:
  m = _BLOCK_KEY.fullmatch(key)
  prefix, rest = (m.group(1), m.group(2)) if m else ("", key)
  modules, params = (block_modules, block_params) if m else (top_modules, top_params)
  if rest in params:
    return prefix + params[rest]
  module, _, leaf = rest.rpartition(".")
  if module in modules and leaf in ("weight", "bias"):
    return f"{prefix}{modules[module]}.{leaf}"
  return None


def wan_to_diffusers(key: str) -> Optional[str]:
  return _rename(key, _DIFFUSERS_TOP_MODULES, _DIFFUSERS_TOP_PARAMS, _DIFFUSERS_BLOCK_MODULES,
                 _DIFFUSERS_BLOCK_PARAMS)


def diffusers_to_wan(key: str) -> Optional[str]:
  return _rename(key, _invert(_DIFFUSERS_TOP_MODULES), _invert(_DIFFUSERS_TOP_PARAMS),
                 _invert(_DIFFUSERS_BLOCK_MODULES), _invert(_DIFFUSERS_BLOCK_PARAMS))


# ------------------------------------------------------------------ selection and detection
def strip_wrappers(key: str) -> str:
  for seg in WRAPPER_SEGMENTS:
    key = key.replace(seg, "")
  return key


def detect_format(keys, source: str) -> str:
  """'self_forcing', 'diffusers' or 'wan' from (wrapper-stripped) key names."""
  keys = list(keys)
  if any(k.startswith(tuple(SELF_FORCING_ROOTS.values())) for k in keys):
    return "self_forcing"
  if any(k.startswith("condition_embedder.") or ".condition_embedder." in k or ".attn1." in k
         for k in keys):
    return "diffusers"
  if any(k == ANCHOR or k.endswith("." + ANCHOR) for k in keys):
    return "wan"
  raise ConvertError(f"cannot tell the format of {source}: none of its {len(keys)} tensors is "
                     f"{ANCHOR!r}; is it a Wan DiT checkpoint? (or pass --format)")


@dataclasses.dataclass
class Canonical:
  """The tensors of the selected model under Wan names, and how to name keys in the source."""
  format: str
  root: str                        # "generator." / "generator_ema." (Self Forcing) or ""
  prefix: str                      # what preceded `patch_embedding.weight`, e.g. "model."
  tensors: dict[str, TensorRef]    # Wan key -> tensor
  unmapped: list[TensorRef]        # tensors of the selected model with no Wan name

  def source_key(self, wan_key: str) -> str:
    """The name `wan_key` has (or would have) in the source file, for messages."""
    name = wan_to_diffusers(wan_key) if self.format == "diffusers" else wan_key
    return f"{self.root}{self.prefix}{name or wan_key}"


def canonicalize(tensors: dict[str, TensorRef], fmt: str, use_ema: bool, source: str) -> Canonical:
  """Selects the model's tensors in a checkpoint and names them with Wan keys."""
  stripped: dict[str, TensorRef] = {}
  for key, ref in tensors.items():
    name = strip_wrappers(key)
    if name in stripped:
      raise ConvertError(f"{source} holds both {stripped[name].key!r} and {key!r} (same name once "
                         f"wrapper prefixes are removed)")
    stripped[name] = ref
  if fmt == "auto":
    fmt = detect_format(stripped, source)
  if fmt not in FORMATS:
    raise ConvertError(f"unknown format {fmt!r}; choose one of {['auto', *FORMATS]}")

  root = ""
  if fmt == "self_forcing":
    root = SELF_FORCING_ROOTS[use_ema]
    roots = sorted({k.split(".", 1)[0] for k in stripped if "." in k})
    if not any(k.startswith(root) for k in stripped):
      raise ConvertError(f"{source} has no {root[:-1]!r} state dict (top-level entries: "
                         f"{', '.join(roots[:8])}); expected a Self Forcing checkpoint")
    # Only the chosen state dict is converted; the other entries (EMA, critic, ...) are ignored.
    stripped = {k[len(root):]: v for k, v in stripped.items() if k.startswith(root)}
  elif use_ema:
    raise ConvertError(f"--use_ema applies to Self Forcing checkpoints (generator / generator_ema), "
                       f"but {source} is in format {fmt!r}")

  anchors = sorted(k for k in stripped if k == ANCHOR or k.endswith("." + ANCHOR))
  if not anchors:
    raise ConvertError(f"missing {root + ANCHOR!r} in {source} (format {fmt})")
  if len(anchors) > 1:
    hint = "; use --format self_forcing" if any(a.startswith("generator") for a in anchors) else ""
    raise ConvertError(f"{source} holds several models ({', '.join(root + a for a in anchors[:4])})"
                       f"{hint}")
  prefix = anchors[0][:-len(ANCHOR)]

  canonical: dict[str, TensorRef] = {}
  unmapped: list[TensorRef] = []
  for key, ref in stripped.items():
    if not key.startswith(prefix):
      unmapped.append(ref)
      continue
    rest = key[len(prefix):]
    wan = diffusers_to_wan(rest) if fmt == "diffusers" else rest
    if wan is None:
      unmapped.append(ref)
    else:
      canonical[wan] = ref
  return Canonical(format=fmt, root=root, prefix=prefix, tensors=canonical, unmapped=unmapped)
