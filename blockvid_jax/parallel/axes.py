"""Logical axis names and their default mapping onto the mesh axes: declared once, here.

Mesh axes: ('data', 'fsdp', 'context', 'tensor'). Parameters and activations carry logical names;
`LOGICAL_RULES` (overridable from config as data) maps them to mesh axes.
"""

from __future__ import annotations

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Parameter axes.
PARAM_AXES = {
    "layers": "stacked layer axis of nn.scan",
    "embed": "model width D on the input side of a projection",
    "embed_out": "model width D on the output side of a D->D projection",
    "heads": "attention heads x head dim (N*H), the q/k/v output and o input",
    "mlp": "FFN width M",
    "norm": "a per-channel scale/bias of width D",
    "mod_rows": "the 6 (block) or 2 (head) rows of a modulation table",
    "mod": "6*D time-projection output",
    "freq": "sinusoidal time-embedding width",
    "text_embed": "text encoder width E",
    "patch": "pt*ph*pw*C patch channels",
    "vocab": "text-encoder vocabulary rows of the token embedding",
    "rel_buckets": "relative-position buckets of a T5 bias table",
    "rel_heads": "heads of a T5 relative-position bias table",
}
# Activation and cache axes.
ACTIVATION_AXES = {
    "activation_batch": "batch B",
    "activation_length": "tokens L",
    "activation_embed": "width D",
    "activation_heads": "heads N",
    "cache_layers": "layer axis K of a KV cache",
    "cache_batch": "batch axis of a KV cache",
    "cache_slots": "slot axis S of a KV cache",
    "cache_heads": "head axis N of a KV cache",
    "cache_kv": "head dim H of a KV cache",
}

LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "context"),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("cache_layers", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_slots", "context"),
    ("cache_heads", "tensor"),
    ("cache_kv", None),
    ("layers", None),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("mod_rows", None),
    ("mod", "tensor"),
    ("freq", None),
    ("text_embed", None),
    ("patch", None),
    ("vocab", None),
    ("rel_buckets", None),
    ("rel_heads", None),
)


def rules_from_config(overrides=None) -> tuple[tuple[str, object], ...]:
  """The default rules with per-name overrides (a mapping name -> mesh axis / tuple / None)."""
  if not overrides:
    return LOGICAL_RULES
  overrides = dict(overrides)
  known = {name for name, _ in LOGICAL_RULES}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"unknown logical axis name(s) in sharding rules: {unknown}")
  out = []
  for name, target in LOGICAL_RULES:
    t = overrides.get(name, target)
    out.append((name, tuple(t) if isinstance(t, list) else t))
  return tuple(out)
