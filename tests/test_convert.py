"""PyTorch checkpoint conversion: parity with a NumPy Wan2.1 reference, strictness, CLI, params format.

Random weights are written in the original Wan2.1 / Diffusers / Self Forcing layouts, converted, run
through `CausalDiT` (float32) and compared with `wan_reference.wan_forward` (float64, written from
DESIGN 3 without the package's model code).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from blockvid_jax import checkpoints
from blockvid_jax.convert import convert_pytorch_dit, load_pytorch_dit
from blockvid_jax.convert import keymaps, loader, readers, spec_infer
from blockvid_jax.models import CausalDiT, DiTSpec, abstract_params, count_params
from blockvid_jax.parallel import logical_to_sharding, make_mesh
from wan_reference import random_wan_weights, wan_forward, wan_shapes  # tests/ is on sys.path

from blockvid_jax.errors import CheckpointError, ConvertError


TINY = dict(dim=48, ffn_dim=96, num_layers=2, text_dim=32, freq_dim=32)
HEADS = 4
TOL = 1e-4  # relative L2 error, float32 vs float64


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def weights():
  return random_wan_weights(0, **TINY)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(1)
  latents = rng.normal(size=(2, 6, 4, 4, 16)).astype(np.float32)   # [B, F, H, W, C]
  t = rng.uniform(size=(2, 6)).astype(np.float32)                  # [B, F], one t per frame
  context = rng.normal(size=(2, 5, TINY["text_dim"])).astype(np.float32)  # [B, T, E]
  return latents, t, context


@functools.lru_cache(maxsize=None)
def _jitted_apply(spec: DiTSpec, mode: str):
  return jax.jit(lambda p, z, t, c: CausalDiT(spec).apply({"params": p}, z, t, c, mode=mode))


def _rel_err(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def assert_matches_reference(spec, params, torch_weights, inputs, mode="causal"):
  latents, t, context = inputs
  out = _jitted_apply(spec, mode)(params, latents, t, context)
  ref = wan_forward(torch_weights, latents, t, context, num_heads=spec.num_heads,
                    frames_per_chunk=spec.frames_per_chunk if mode == "causal" else None,
                    eps=spec.eps, patch=spec.patch_size)
  assert out.shape == ref.shape
  err = _rel_err(out, ref)
  assert err < TOL, f"relative error {err:.2e} vs the NumPy reference ({mode})"


def to_diffusers_names(w: dict) -> dict:
  """Wan -> Diffusers names, written from the public diffusers conversion table (independently of
  the converter's own map): substring renames, with Wan's norm3 becoming Diffusers' norm2."""
  renames = [
      ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
      ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
      ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
      ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
      ("time_projection.1", "condition_embedder.time_proj"),
      ("head.modulation", "scale_shift_table"),
      ("head.head", "proj_out"),
      ("modulation", "scale_shift_table"),
      ("ffn.0", "ffn.net.0.proj"),
      ("ffn.2", "ffn.net.2"),
      ("norm3", "norm2"),
      ("self_attn.o", "attn1.to_out.0"),
      ("cross_attn.o", "attn2.to_out.0"),
      ("self_attn.norm_", "attn1.norm_"),
      ("cross_attn.norm_", "attn2.norm_"),
      ("self_attn.", "attn1.to_"),
      ("cross_attn.", "attn2.to_"),
  ]
  out = {}
  for key, value in w.items():
    for old, new in renames:
      key = key.replace(old, new)
    out[key] = value
  return out


def _flat(params):
  return traverse_util.flatten_dict(params)


def assert_same_params(a, b):
  fa, fb = _flat(a), _flat(b)
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg="/".join(k))


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_wan_safetensors_matches_reference(tmp_path, weights, inputs, mode):
  path = tmp_path / "model.safetensors"
  save_file(weights, str(path))
  spec, params = load_pytorch_dit(str(path), num_heads=HEADS)
  assert spec == DiTSpec.preset("tiny")
  assert {k: v.shape for k, v in _flat(params).items()} == {
      k: v.shape for k, v in _flat(abstract_params(spec)).items()}
  assert_matches_reference(spec, params, weights, inputs, mode)


def test_reference_modes_differ(weights, inputs):
  """The parity tests can tell the modes apart, and the causal reference ignores later chunks."""
  latents, t, context = inputs
  causal = wan_forward(weights, latents, t, context, num_heads=HEADS, frames_per_chunk=3)
  full = wan_forward(weights, latents, t, context, num_heads=HEADS)
  assert _rel_err(causal, full) > 100 * TOL
  later = latents.copy()
  later[:, 3:] += 1.0                                              # change chunk 1 only
  moved = wan_forward(weights, later, t, context, num_heads=HEADS, frames_per_chunk=3)
  np.testing.assert_allclose(moved[:, :3], causal[:, :3], rtol=1e-12, atol=1e-12)
  assert _rel_err(moved[:, 3:], causal[:, 3:]) > 100 * TOL


def test_diffusers_pipeline_folder_with_config(tmp_path, weights, inputs):
  folder = tmp_path / "transformer"  # a Diffusers pipeline: weights and config under transformer/
  folder.mkdir()
  dw = to_diffusers_names(weights)
  assert "blocks.0.attn1.to_q.weight" in dw and "blocks.1.norm2.bias" in dw
  assert dw["scale_shift_table"].shape == (1, 2, TINY["dim"])
  save_file(dw, str(folder / "diffusion_pytorch_model.safetensors"))
  config = {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2],
            "num_attention_heads": HEADS, "attention_head_dim": TINY["dim"] // HEADS,
            "in_channels": 16, "out_channels": 16, "text_dim": TINY["text_dim"],
            "freq_dim": TINY["freq_dim"], "ffn_dim": TINY["ffn_dim"], "num_layers": 2,
            "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6,
            "image_dim": None, "added_kv_proj_dim": None, "rope_max_seq_len": 1024}
  (folder / "config.json").write_text(json.dumps(config))
  result = convert_pytorch_dit(str(tmp_path))  # no --num_heads: config.json has it
  assert result.format == "diffusers"
  assert result.config_path == str(folder / "config.json")
  assert result.spec == DiTSpec.preset("tiny")
  assert_matches_reference(result.spec, result.params, weights, inputs)


def test_sharded_safetensors_with_index(tmp_path, weights, inputs):
  keys = sorted(weights)
  shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
  weight_map = {}
  for name, names in shards.items():
    save_file({k: weights[k] for k in names}, str(tmp_path / name))
    weight_map.update({k: name for k in names})
  index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
  index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
  (tmp_path / "config.json").write_text(json.dumps(  # Wan's own config keys
      {"_class_name": "WanModel", "model_type": "t2v", "dim": TINY["dim"], "ffn_dim": TINY["ffn_dim"],
       "num_heads": HEADS, "num_layers": 2, "in_dim": 16, "out_dim": 16, "freq_dim": 32,
       "text_dim": 32, "eps": 1e-6, "text_len": 512}))
  result = convert_pytorch_dit(str(index))
  assert result.format == "wan" and len(result.files) == 2
  assert result.spec == DiTSpec.preset("tiny")
  assert_matches_reference(result.spec, result.params, weights, inputs)
  # The directory finds the same index.
  spec, params = load_pytorch_dit(str(tmp_path))
  assert spec == result.spec
  assert_same_params(params, result.params)


@pytest.mark.torch
def test_self_forcing_pt(tmp_path, weights, inputs):
  torch = pytest.importorskip("torch")
  ema = random_wan_weights(7, **TINY)

  def wrapped(key):  # FSDP / activation-checkpoint / compile wrappers of a Self Forcing run
    key = "model._fsdp_wrapped_module." + key
    return key.replace("self_attn.", "_checkpoint_wrapped_module._orig_mod.self_attn.")

  generator = {wrapped(k): torch.from_numpy(v).to(torch.bfloat16) for k, v in weights.items()}
  torch.save({"generator": generator,
              "generator_ema": {"model." + k: torch.from_numpy(v) for k, v in ema.items()},
              "critic": {"model.patch_embedding.weight": torch.zeros(2)},  # ignored
              "step": 1000}, str(tmp_path / "self_forcing_dmd.pt"))
  path = str(tmp_path / "self_forcing_dmd.pt")
  rounded = {k: v.float().numpy() for k, v in
             ((k, torch.from_numpy(w).to(torch.bfloat16)) for k, w in weights.items())}

  result = convert_pytorch_dit(path, num_heads=HEADS)
  assert result.format == "self_forcing" and result.key_prefix == "generator.model."
  assert_matches_reference(result.spec, result.params, rounded, inputs)
  spec, params = load_pytorch_dit(path, use_ema=True, frames_per_chunk=3, num_heads=HEADS)
  assert spec == DiTSpec.preset("tiny")
  assert_matches_reference(spec, params, ema, inputs)


def test_other_patch_and_channels(tmp_path, inputs):
  """A temporal patch, a non-square spatial patch and out_channels != in_channels."""
  patch = (2, 2, 1)
  w = random_wan_weights(3, **TINY, out_dim=8, patch=patch)
  save_file(w, str(tmp_path / "m.safetensors"))
  spec, params = load_pytorch_dit(str(tmp_path / "m.safetensors"), num_heads=HEADS,
                                  frames_per_chunk=2)
  assert spec.patch_size == patch and spec.out_channels == 8
  latents, t, context = inputs
  latents = latents[:, :, :, :2]                                   # [B, 6, 4, 2, 16]
  out = _jitted_apply(spec, "causal")(params, latents, t, context)
  ref = wan_forward(w, latents, t, context, num_heads=HEADS, frames_per_chunk=2, patch=patch)
  assert out.shape == ref.shape == (2, 6, 4, 2, 8)
  assert _rel_err(out, ref) < TOL


# ------------------------------------------------------------------ spec inference and strictness
@pytest.mark.parametrize("preset", ["wan_1_3b", "wan_14b"])
def test_full_size_shapes_give_the_preset(preset):
  """Spec inference and every shape check on Wan2.1 sizes, from shapes only (no data is read)."""
  p = DiTSpec.preset(preset)
  shapes = wan_shapes(dim=p.dim, ffn_dim=p.ffn_dim, num_layers=p.num_layers, text_dim=p.text_dim,
                      freq_dim=p.freq_dim)

  def unreadable():
    raise AssertionError("no tensor data may be read")
  refs = {k: readers.TensorRef(k, s, "bfloat16", "fake.safetensors", unreadable)
          for k, s in shapes.items()}
  model = keymaps.canonicalize(refs, "auto", False, "fake")
  spec = spec_infer.infer_spec(model, "fake", None, None)          # heads from the known widths
  assert spec == p
  _, plan = loader._plan(model, spec, "fake")  # pylint: disable=protected-access
  assert len(plan) == len(shapes)
  total = sum(int(np.prod(s)) for s in shapes.values())
  assert total == count_params(abstract_params(spec))
  if preset == "wan_1_3b":
    assert total == 1_418_996_800  # Wan2.1-T2V-1.3B


def test_num_heads_sources(tmp_path, weights):
  path = tmp_path / "m.safetensors"
  save_file(weights, str(path))
  with pytest.raises(ConvertError, match="--num_heads"):
    load_pytorch_dit(str(path))
  (tmp_path / "config.json").write_text(json.dumps({"dim": 48, "num_heads": 6}))
  spec, _ = load_pytorch_dit(str(path))
  assert spec.num_heads == 6
  with pytest.raises(ConvertError, match="disagrees"):
    load_pytorch_dit(str(path), num_heads=4)
  (tmp_path / "config.json").write_text(json.dumps({"dim": 64, "num_heads": 4}))
  with pytest.raises(ConvertError, match=r"dim=64 does not match"):
    load_pytorch_dit(str(path))
  (tmp_path / "config.json").write_text(json.dumps({"dim": 48, "num_heads": 4,
                                                    "model_type": "i2v"}))
  with pytest.raises(ConvertError, match="t2v"):
    load_pytorch_dit(str(path))


def test_format_choice_errors(tmp_path, weights):
  path = tmp_path / "m.safetensors"
  save_file(weights, str(path))
  with pytest.raises(ConvertError, match="use_ema"):
    load_pytorch_dit(str(path), num_heads=HEADS, use_ema=True)
  with pytest.raises(ConvertError, match="generator"):
    load_pytorch_dit(str(path), num_heads=HEADS, format="self_forcing")
  with pytest.raises(ConvertError, match="missing"):  # Wan names read as Diffusers names
    load_pytorch_dit(str(path), num_heads=HEADS, format="diffusers")


def test_errors_are_one_line_and_name_the_key(tmp_path, weights):
  bad = dict(weights)
  bad["blocks.1.cross_attn.k.weight"] = np.zeros((48, 40), np.float32)
  save_file(bad, str(tmp_path / "m.safetensors"))
  with pytest.raises(ConvertError) as info:
    load_pytorch_dit(str(tmp_path / "m.safetensors"), num_heads=HEADS)
  msg = str(info.value)
  assert "\n" not in msg and "blocks.1.cross_attn.k.weight" in msg and "(48, 48)" in msg


# ------------------------------------------------------------------ CLI
def _run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "blockvid_jax.convert", *map(str, args)],
                        capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_converts_and_round_trips(tmp_path, weights):
  src = tmp_path / "m.safetensors"
  save_file(weights, str(src))
  out = tmp_path / "out"
  proc = _run_cli("--src", src, "--out", out, "--num_heads", HEADS)
  assert proc.returncode == 0, proc.stderr
  assert "format:     wan" in proc.stdout and "parameters:" in proc.stdout
  assert sorted(os.listdir(out)) == ["params", "spec.json"]
  spec, params = checkpoints.load_params(str(out))
  want_spec, want = load_pytorch_dit(str(src), num_heads=HEADS)
  assert spec == want_spec
  assert_same_params(params, want)


def _missing_key(w):
  return {k: v for k, v in w.items() if k != "blocks.1.norm3.bias"}


def _wrong_shape(w):
  return {**w, "blocks.0.self_attn.q.weight": np.zeros((48, 40), np.float32)}


def _unused_key(w):
  return {**w, "blocks.0.extra.weight": np.zeros((3,), np.float32)}


@pytest.mark.parametrize("case, expect", [
    ("missing_key", "'blocks.1.norm3.bias'"),
    ("wrong_shape", "'blocks.0.self_attn.q.weight'"),
    ("unused_key", "'blocks.0.extra.weight'"),
    ("truncated", "cannot read safetensors file"),
    ("truncated_pt", "cannot read"),
    ("empty_dir", "no weights"),
    ("no_such_path", "does not exist"),
    ("nonempty_out", "not empty"),
])
def test_cli_bad_input(tmp_path, weights, case, expect):
  src = tmp_path / "src" / "model.safetensors"
  src.parent.mkdir()
  mutate = {"missing_key": _missing_key, "wrong_shape": _wrong_shape, "unused_key": _unused_key}
  save_file(mutate.get(case, dict)(weights), str(src))
  if case == "truncated":
    data = src.read_bytes()
    src.write_bytes(data[: len(data) - 100])
  if case == "truncated_pt":
    torch = pytest.importorskip("torch")
    src.unlink()
    src = src.with_suffix(".pt")
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, str(src))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
  if case == "empty_dir":
    src.unlink()
    src = src.parent
  if case == "no_such_path":
    src = tmp_path / "nowhere.safetensors"
  out = tmp_path / "out"
  if case == "nonempty_out":
    out.mkdir()
    (out / "keep.txt").write_text("mine")

  proc = _run_cli("--src", src, "--out", out, "--num_heads", HEADS)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert expect in lines[0]
  if case == "nonempty_out":
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
  else:
    assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # no temporary leftovers


def test_torch_missing_is_one_line(tmp_path, monkeypatch):
  (tmp_path / "m.pt").write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(ConvertError, match=r"pip install -e \.\[torch\]"):
    load_pytorch_dit(str(tmp_path / "m.pt"), num_heads=HEADS)


def test_cli_usage_error_is_one_line(tmp_path):
  proc = _run_cli("--src", tmp_path, "--out", tmp_path / "o", "--format", "onnx")
  assert proc.returncode == 2
  assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")


# ------------------------------------------------------------------ params checkpoints
@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory, weights):
  path = tmp_path_factory.mktemp("w") / "m.safetensors"
  save_file(weights, str(path))
  return load_pytorch_dit(str(path), num_heads=HEADS)


def test_save_load_round_trip(tmp_path, tiny_params):
  spec, params = tiny_params
  directory = checkpoints.save_params(str(tmp_path / "ck"), spec, params)
  assert directory == str(tmp_path / "ck") and checkpoints.is_params_checkpoint(directory)
  with open(os.path.join(directory, "spec.json"), encoding="utf-8") as f:
    assert json.load(f) == spec.to_dict()
  loaded_spec, loaded = checkpoints.load_params(directory)
  assert loaded_spec == spec
  assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(loaded))
  assert_same_params(loaded, params)

  # Runtime fields may differ from the stored spec; params follow the given param_dtype.
  run_spec = DiTSpec.preset("tiny", remat_policy="full", param_dtype="bfloat16")
  got_spec, got = checkpoints.load_params(directory, spec=run_spec)
  assert got_spec == run_spec
  assert got["blocks"]["ffn_fc1"]["kernel"].dtype == jax.numpy.bfloat16

  with pytest.raises(CheckpointError, match="num_heads=4"):
    checkpoints.load_params(directory, spec=DiTSpec.preset("tiny", num_heads=6))
  with pytest.raises(CheckpointError, match="not empty"):
    checkpoints.save_params(directory, spec, params)


def test_load_onto_named_shardings(tmp_path, tiny_params):
  spec, params = tiny_params
  directory = checkpoints.save_params(str(tmp_path / "ck"), spec, params)
  mesh = make_mesh({"data": 1, "fsdp": 2, "context": 1, "tensor": 4})
  shardings = logical_to_sharding(nn.get_partition_spec(abstract_params(spec, boxed=True)), mesh)
  _, loaded = checkpoints.load_params(directory, spec=spec, shardings=shardings)
  q = loaded["blocks"]["self_attn"]["q"]["kernel"]                 # [K, D, D]: (layers, embed, heads)
  assert q.sharding == shardings["blocks"]["self_attn"]["q"]["kernel"]
  assert len(q.sharding.device_set) == 8
  assert_same_params(loaded, params)


def test_not_a_params_checkpoint(tmp_path, tiny_params):
  with pytest.raises(CheckpointError, match="not a params checkpoint"):
    checkpoints.load_params(str(tmp_path))
  spec, params = tiny_params
  directory = checkpoints.save_params(str(tmp_path / "ck"), spec, params)
  with open(os.path.join(directory, "spec.json"), "w", encoding="utf-8") as f:
    json.dump(DiTSpec.preset("tiny", ffn_dim=64).to_dict(), f)  # spec.json no longer fits params/
  with pytest.raises(CheckpointError, match="cannot restore") as info:
    checkpoints.load_params(directory)
  assert "\n" not in str(info.value)


def test_save_is_atomic(tmp_path, tiny_params, monkeypatch):
  spec, params = tiny_params
  target = tmp_path / "ck"
  bad = traverse_util.unflatten_dict({**_flat(params), ("head", "bias"): np.zeros(3, np.float32)})
  with pytest.raises(CheckpointError, match="head/bias"):
    checkpoints.save_params(str(target), spec, bad)

  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(checkpoints.json, "dump", fail)
  with pytest.raises(OSError, match="disk full"):
    checkpoints.save_params(str(target), spec, params)
  assert os.listdir(tmp_path) == []  # nothing at the target, no temporary directory
