"""Imports the public PyTorch reference architectures (pyiqa's MUSIQ, VBench's AMT-S) for tests.

Both come from the `test` extra (`pyiqa==0.1.16`, `vbench==0.1.5`, installed with `--no-deps`:
their full dependency sets are heavy and partly conflict with ours). Their package `__init__`
files import much more than the architectures (decord, cv2, transformers, ...), so the packages are
registered as bare namespace modules pointing at the installed folders: the architecture files
themselves run unchanged. pyiqa's `arch_util` imports `torchvision.transforms` for code the MUSIQ
forward never calls; without torchvision an empty stand-in module satisfies that import.
Returns None when torch or the package is missing (the tests then skip).
"""

import importlib
import importlib.machinery
import importlib.util
import sys
import types


def _bare_package(name: str, path: str) -> None:
  if name in sys.modules:
    return
  mod = types.ModuleType(name)
  mod.__path__ = [path]
  sys.modules[name] = mod


def _root(package: str):
  spec = importlib.machinery.PathFinder.find_spec(package)   # searches sys.path, not sys.modules
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def _import_bypassing_inits(package: str, module: str, also_bare=()):
  """Imports `module` with the `__init__` of each parent package (and of `also_bare`) skipped."""
  root = _root(package)
  if root is None:
    return None
  parts = module.split(".")
  names = [".".join(parts[:i]) for i in range(1, len(parts))] + list(also_bare)
  for name in names:
    _bare_package(name, "/".join([root] + name.split(".")[1:]))
  return importlib.import_module(module)


def musiq_arch():
  """pyiqa.archs.musiq_arch, or None."""
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  stub = importlib.util.find_spec("torchvision") is None
  if stub:
    tv = types.ModuleType("torchvision")
    tv.__path__ = []
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms})
  try:
    return _import_bypassing_inits("pyiqa", "pyiqa.archs.musiq_arch",
                                   also_bare=("pyiqa.utils", "pyiqa.data"))
  except ImportError:
    return None
  finally:
    if stub:   # only the import needed it; leave no fake torchvision behind
      sys.modules.pop("torchvision", None)
      sys.modules.pop("torchvision.transforms", None)


def amt_s_arch():
  """VBench's AMT-S network module (`vbench/third_party/amt/networks/AMT-S.py`), or None."""
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  try:
    if _import_bypassing_inits("vbench", "vbench.third_party.amt.networks.blocks.raft") is None:
      return None
  except ImportError:
    return None
  path = _root("vbench") + "/third_party/amt/networks/AMT-S.py"
  mod_spec = importlib.util.spec_from_file_location("vbench_amt_s", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod
