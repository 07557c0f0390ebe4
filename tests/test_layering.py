"""The import graph of blockvid_jax: imports only go down the layers, no private names cross modules.

Layers (DESIGN 2): errors/typing <- parallel, video_io <- models, data, evaluate <- cache,
config_lib, checkpoints <- diffusion, convert <- training <- generate <- encode/LV-Bench libraries
<- CLIs. A unit may import its own package and any lower layer, never a layer at its own level or
above. Every top-level module or package must be placed in `LAYERS`.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "blockvid_jax"

LAYERS = {
    "__init__": 0, "errors": 0, "typing": 0,
    "parallel": 1, "video_io": 1,
    "models": 2, "data": 2, "evaluate": 2,
    "cache": 3, "config_lib": 3, "checkpoints": 3,
    "diffusion": 4, "convert": 4, "config_overrides": 4,
    "training": 5,
    "generate": 6,
    "encode_videos": 7,
    "lvbench": 8,
    "train": 9, "sample": 9, "encode": 9,
}


def _parse_all():
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    yield path, parts[0], ast.parse(path.read_text(encoding="utf-8"))


# Parsed when pytest collects this module, before any test runs in the process: CPython 3.11.7's
# ast.parse can fail with "SystemError: AST constructor recursion depth mismatch" after other tests
# (JAX tracing) ran in the same process.
_PARSED = list(_parse_all())
_MADE_UP = ast.parse("from blockvid_jax.training import loop\nfrom blockvid_jax.models.params import _x\n")


def _modules():
  return iter(_PARSED)


def _imports(tree):
  """(module, imported names) of every `from blockvid_jax... import` and `import blockvid_jax...`."""
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "blockvid_jax":
      yield node.module, [a.name for a in node.names]
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "blockvid_jax":
          yield alias.name, []


def _unit(module: str, names) -> list[str]:
  parts = module.split(".")
  return [parts[1]] if len(parts) > 1 else list(names)


def test_every_unit_has_a_layer():
  units = {unit for _, unit, _ in _modules()}
  assert units <= set(LAYERS), f"place these in LAYERS: {sorted(units - set(LAYERS))}"


def test_imports_only_go_down():
  bad = []
  for path, unit, tree in _modules():
    for module, names in _imports(tree):
      for target in _unit(module, names):
        if target != unit and LAYERS.get(target, 99) >= LAYERS[unit]:
          bad.append(f"{path.relative_to(ROOT)}: {unit} (layer {LAYERS[unit]}) imports {module} "
                     f"(layer {LAYERS.get(target)})")
  assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
  bad = []
  for path, _, tree in _modules():
    aliases = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("blockvid_jax"):
        bad += [f"{path.relative_to(ROOT)}: from {node.module} import {a.name}"
                for a in node.names if a.name.startswith("_")]
        aliases |= {a.asname or a.name for a in node.names}
      elif isinstance(node, ast.Import):
        aliases |= {a.asname or a.name.split(".")[0] for a in node.names
                    if a.name.startswith("blockvid_jax")}
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
          and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
          and node.value.id in aliases):
        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
  assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import():
  """The graph walk itself: an upward and a private import in a made-up module are reported."""
  found = list(_imports(_MADE_UP))
  assert found == [("blockvid_jax.training", ["loop"]), ("blockvid_jax.models.params", ["_x"])]
  assert LAYERS[_unit(*found[0])[0]] > LAYERS["models"]
