"""umT5 encoder and tokenizer: parity with transformers' `UMT5EncoderModel` (same random weights),
both key layouts (Wan .pth, HF single and sharded safetensors), relative buckets against a plain
loop, padded rows, logical axis names, and the tokenizer on a SentencePiece model trained here.
"""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from blockvid_jax.convert.umt5 import expected_shapes, load_umt5
from blockvid_jax.models.tokenizer import Tokenizer, clean
from blockvid_jax.models.umt5 import UMT5Encoder, UMT5Spec, logical_partition_specs, relative_buckets
from blockvid_jax.errors import ConfigError, ConvertError

TINY = UMT5Spec(vocab_size=300, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2)
TOL = 1e-4
LENGTHS = (40, 13)  # > 8 and < 128 tokens: exact and log-spaced buckets both used


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def reference():
  """(HF model, its state dict as NumPy under HF names)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  config = transformers.UMT5Config(
      vocab_size=TINY.vocab_size, d_model=TINY.dim, d_kv=TINY.dim_attn // TINY.num_heads,
      d_ff=TINY.dim_ffn, num_layers=TINY.num_layers, num_heads=TINY.num_heads,
      relative_attention_num_buckets=TINY.num_buckets,
      relative_attention_max_distance=TINY.max_distance, feed_forward_proj="gated-gelu",
      dropout_rate=0.0)
  model = transformers.UMT5EncoderModel(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif "relative_attention_bias" in name:
        p.copy_(torch.randn_like(p))
  state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  return model, state


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(3, TINY.vocab_size, size=(2, max(LENGTHS))).astype(np.int32)
  mask = (np.arange(max(LENGTHS))[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
  return np.where(mask, ids, 0), mask


def _wan_state(state: dict) -> dict:
  """HF names -> Wan names (both layouts list the same tensors)."""
  hf, wan = expected_shapes(TINY, "hf"), expected_shapes(TINY, "wan")
  return {wan[path][0]: state[hf[path][0]] for path in hf}


def _encode(spec, params, ids, mask):
  return np.asarray(jax.jit(UMT5Encoder(spec).apply)({"params": params}, ids, mask))


def _check_against(model, out, ids, mask):
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    ref = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  for row, n in enumerate(LENGTHS):
    assert _rel_err(out[row, :n], ref[row, :n]) < TOL
    assert np.all(out[row, n:] == 0)  # padded rows are zero


# ------------------------------------------------------------------ parity and layouts
@pytest.mark.torch
def test_wan_pth_matches_transformers(reference, inputs, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  model, state = reference
  path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
  torch.save({k: torch.from_numpy(v) for k, v in _wan_state(state).items()}, str(path))
  spec, params = load_umt5(path)
  assert spec == TINY
  _check_against(model, _encode(spec, params, *inputs), *inputs)


@pytest.mark.torch
def test_hf_single_and_sharded_safetensors(reference, inputs, tmp_path):
  model, state = reference
  single = tmp_path / "single"
  single.mkdir()
  save_file({k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"},
            str(single / "model.safetensors"))
  spec, params = load_umt5(single)
  assert spec == TINY
  out = _encode(spec, params, *inputs)
  _check_against(model, out, *inputs)

  sharded = tmp_path / "sharded"
  sharded.mkdir()
  keys = sorted(state)
  shards = {"model-00001-of-00002.safetensors": keys[:len(keys) // 2],
            "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
  for name, ks in shards.items():
    save_file({k: state[k] for k in ks}, str(sharded / name))
  (sharded / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {k: name for name, ks in shards.items() for k in ks}}))
  spec2, params2 = load_umt5(sharded / "model.safetensors.index.json")
  assert spec2 == TINY
  np.testing.assert_array_equal(_encode(spec2, params2, *inputs), out)


@pytest.mark.torch
def test_bfloat16_params(reference, inputs, tmp_path):
  _, state = reference
  save_file({k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"},
            str(tmp_path / "model.safetensors"))
  spec, params = load_umt5(tmp_path / "model.safetensors", dtype="bfloat16")
  assert params["block_0"]["attn"]["q"]["kernel"].dtype == jax.numpy.bfloat16
  _, full = load_umt5(tmp_path / "model.safetensors")
  fast = _encode(UMT5Spec(**{**spec.__dict__, "dtype": "bfloat16"}), params, *inputs)
  assert _rel_err(fast, _encode(spec, full, *inputs)) < 5e-2


def test_wrong_shape_and_not_umt5(tmp_path):
  rng = np.random.default_rng(0)
  state = {key: rng.normal(size=shape).astype(np.float32)
           for key, shape in expected_shapes(TINY, "wan").values()}
  state["blocks.1.ffn.fc2.weight"] = np.zeros((32, 63), np.float32)
  save_file(state, str(tmp_path / "t5.safetensors"))
  with pytest.raises(ConvertError) as e:
    load_umt5(tmp_path / "t5.safetensors")
  assert "blocks.1.ffn.fc2.weight" in str(e.value) and "\n" not in str(e.value)
  save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "x.safetensors"))
  with pytest.raises(ConvertError, match="not a umT5"):
    load_umt5(tmp_path / "x.safetensors")


# ------------------------------------------------------------------ buckets, axes
def _bucket_loop(rel: int, num_buckets: int = 32, max_distance: int = 128) -> int:
  half = num_buckets // 2
  out = half if rel > 0 else 0
  dist = abs(rel)
  exact = half // 2
  if dist < exact:
    return out + dist
  return out + min(half - 1, exact + int(math.log(dist / exact) / math.log(max_distance / exact)
                                         * (half - exact)))


def test_relative_buckets_match_a_plain_loop():
  table = relative_buckets(300, 300, 32, 128)
  expected = np.array([[_bucket_loop(k - q) for k in range(300)] for q in range(300)])
  np.testing.assert_array_equal(table, expected)
  assert table.min() == 0 and table.max() == 31


def test_params_carry_logical_axis_names():
  ids = np.zeros((1, 8), np.int32)
  boxed = jax.eval_shape(UMT5Encoder(TINY).init, jax.random.key(0), ids, ids)["params"]
  specs = nn.get_partition_spec(boxed)
  assert specs["token_embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert specs["block_0"]["attn"]["q"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads")
  assert specs["block_1"]["ffn"]["fc2"]["kernel"] == jax.sharding.PartitionSpec("mlp", "embed")
  leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert all(len(s) > 0 for s in leaves)
  shapes = {path: shape for path, (_, shape) in expected_shapes(TINY, "wan").items()}
  flat = {k: v.shape for k, v in traverse_util.flatten_dict(nn.unbox(boxed)).items()}
  assert set(flat) == set(shapes)


def test_sharded_params_give_the_same_output(inputs):
  """Params placed by their logical names on a data x fsdp x tensor mesh (8 fake CPU devices)."""
  from blockvid_jax import parallel  # pylint: disable=import-outside-toplevel
  ids, mask = inputs
  params = UMT5Encoder(TINY).init(jax.random.key(0), ids, mask)["params"]
  params = nn.unbox(params)
  expected = _encode(TINY, params, ids, mask)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = parallel.logical_to_sharding(logical_partition_specs(TINY), mesh)
  sharded = jax.device_put(params, shardings)
  q = sharded["block_0"]["attn"]["q"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  np.testing.assert_allclose(_encode(TINY, sharded, ids, mask), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  spm = pytest.importorskip("sentencepiece")
  folder = tmp_path_factory.mktemp("spm")
  corpus = folder / "corpus.txt"
  corpus.write_text("\n".join([
      "a cat walks on the beach at sunset", "the dog runs in the park",
      "a red car drives down the road", "waves crash on the rocks",
      "birds fly over the city at night", "a child plays with a ball"] * 4))
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=60, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False)
  return folder / "spiece.model"


def test_clean():
  assert clean("  a &amp;amp; b \n\t  c  ") == "a & b c"
  assert clean("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake


def test_spm_tokenizer_eos_padding_truncation(spm_model):
  tok = Tokenizer(spm_model.parent, max_length=16)  # a directory: finds spiece.model
  ids, mask = tok(["a cat walks", "  a   cat\nwalks  "])
  assert ids.shape == mask.shape == (2, 16) and ids.dtype == np.int32
  np.testing.assert_array_equal(ids[0], ids[1])  # cleaning collapses the whitespace
  n = int(mask[0].sum())
  assert ids[0, n - 1] == tok.eos_id == 1
  assert np.all(ids[0, n:] == tok.pad_id) and np.all(mask[0, n:] == 0) and np.all(mask[0, :n] == 1)
  long_ids, long_mask = tok("the dog runs in the park " * 10)
  assert long_mask.sum() == 16 and long_ids[0, -1] == 1  # cut, still ends with EOS
  default = Tokenizer(spm_model)
  assert default(["x"])[0].shape == (1, 512)


def test_json_tokenizer(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "walks": 5}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="$A </s>", special_tokens=[("</s>", 1)])
  tok.save(str(tmp_path / "tokenizer.json"))
  ids, mask = Tokenizer(tmp_path, max_length=6)("a  cat walks dog")
  np.testing.assert_array_equal(ids[0], [3, 4, 5, 2, 1, 0])
  np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 0])
  ids, _ = Tokenizer(tmp_path, max_length=3)("a cat walks")
  np.testing.assert_array_equal(ids[0], [3, 4, 1])


def test_tokenizer_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    Tokenizer(tmp_path / "missing.model")
  with pytest.raises(ConfigError, match="no tokenizer.json or spiece.model"):
    Tokenizer(tmp_path)
  (tmp_path / "broken.model").write_bytes(b"not a model")
  with pytest.raises(ConfigError) as e:
    Tokenizer(tmp_path / "broken.model")
  assert "\n" not in str(e.value)


def test_generate_places_umt5_params_on_the_mesh(spm_model, tmp_path):
  """`generate.make_text_encoder(..., mesh)`: the weights sharded on 8 fake CPU devices by their
  logical names, the encoding equal to the single-device one."""
  import tiny_pretrained_config  # pylint: disable=import-outside-toplevel  # tests/ is on sys.path
  from blockvid_jax import generate, parallel  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import DiTSpec  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  weights = {key: (rng.normal(size=shape) * (0.2 if len(shape) > 1 else 1.0)).astype(np.float32)
             for key, shape in expected_shapes(TINY, "wan").values()}
  save_file(weights, str(tmp_path / "umt5.safetensors"))
  config = tiny_pretrained_config.get_config(str(tmp_path))
  config.text.checkpoint = str(tmp_path / "umt5.safetensors")
  config.text.tokenizer = str(spm_model)
  spec = DiTSpec.from_config(config.model)
  prompts = ["a cat walks on the beach", "waves crash on the rocks at night"]
  single = generate.make_text_encoder(config, spec)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = generate.make_text_encoder(config, spec, mesh)
  q = sharded.params["block_0"]["attn"]["q"]["kernel"]  # [32, 32]
  assert len(q.sharding.device_set) > 1 and not q.sharding.is_fully_replicated
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  for a, b in zip(sharded.encode(prompts), single.encode(prompts)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
