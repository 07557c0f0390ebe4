"""The embedded-default components: toy space-to-depth autoencoder and toy text encoder."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from blockvid_jax.data import toy_grammar
from blockvid_jax.models import toy_autoencoder as tae
from blockvid_jax.models.text import ToyTextEncoder, WordTokenizer, masked_mean

# ------------------------------------------------------------------------------- autoencoder


def test_autoencoder_round_trip_is_exact():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1.0, 1.0, (2, 3, 8, 12, 3)).astype(np.float32))
  z = tae.encode(x)
  assert z.shape == (2, 3, 4, 6, 16) and z.dtype == x.dtype
  np.testing.assert_array_equal(z[..., 12:], 0.0)  # padding channels
  np.testing.assert_array_equal(tae.decode(z), x)
  # encode(decode(z)) == z on the encoder's range (zero padding) ...
  z2 = jnp.asarray(rng.normal(size=(1, 2, 4, 6, 16)).astype(np.float32)).at[..., 12:].set(0.0)
  np.testing.assert_array_equal(tae.encode(tae.decode(z2)), z2)
  # ... and decode ignores the padding channels.
  np.testing.assert_array_equal(tae.decode(z.at[..., 12:].set(5.0)), x)


def test_autoencoder_layout_against_a_literal_loop():
  s = 2
  x = np.arange(1 * 2 * 4 * 6 * 3, dtype=np.float32).reshape(1, 2, 4, 6, 3)
  z = np.asarray(tae.encode(jnp.asarray(x), factor=s))
  for f in range(2):
    for i in range(4):
      for j in range(6):
        for c in range(3):
          zi, zj, s1, s2 = i // s, j // s, i % s, j % s
          assert z[0, f, zi, zj, (s1 * s + s2) * 3 + c] == x[0, f, i, j, c]


def test_autoencoder_shapes_and_errors():
  ae = tae.ToyAutoencoder()
  assert ae.latent_shape((2, 9, 32, 32, 3)) == (2, 9, 16, 16, 16)
  assert ae.pixel_shape((2, 9, 16, 16, 16)) == (2, 9, 32, 32, 3)
  x = jnp.zeros((1, 1, 4, 4, 3))
  assert tae.encode(x, factor=1).shape == (1, 1, 4, 4, 16)
  np.testing.assert_array_equal(tae.decode(tae.encode(x, factor=1), factor=1), x)
  with pytest.raises(ValueError):
    tae.encode(x, factor=3)  # 27 channels do not fit in 16
  with pytest.raises(ValueError):
    tae.encode(jnp.zeros((1, 1, 5, 4, 3)))  # H not divisible by 2
  with pytest.raises(ValueError):
    tae.ToyAutoencoder(temporal_factor=4)


# -------------------------------------------------------------------------------- text encoder

PROMPTS = [
    "a red circle moves left on a navy background",
    "a red circle moves right on a navy background",
    "a white digit seven bounces around on a teal background",
    "a red square moves left on a navy background",
    "a green triangle stays still on a black background",
]


@pytest.fixture(scope="module")
def encoder():
  return ToyTextEncoder(text_dim=32, max_len=16, words=toy_grammar.vocabulary())


def test_tokenizer():
  tok = WordTokenizer(["a", "red", "circle"])
  ids, mask = tok.tokenize(["A red, circle!", "a purple circle", "", "a a a a a a"], max_len=5)
  assert tok.vocab[:3] == ("<pad>", "<unk>", "</s>")
  np.testing.assert_array_equal(ids, [[3, 4, 5, 2, 0], [3, 1, 5, 2, 0], [2, 0, 0, 0, 0],
                                      [3, 3, 3, 3, 2]])
  np.testing.assert_array_equal(mask, ids != 0)
  with pytest.raises(TypeError):
    tok.tokenize("a red circle", max_len=5)


def test_toy_captions_have_no_unknown_words(encoder):
  g = toy_grammar
  objects = g.SHAPES + g.DIGIT_WORDS  # every word of the grammar appears at least once below
  captions = [g.caption(g.SceneSpec(list(g.SPRITE_COLOURS)[i % 8], obj, list(g.MOTIONS)[i % 6],
                                    list(g.BACKGROUND_COLOURS)[i % 8]))
              for i, obj in enumerate(objects)]
  ids, _ = encoder.tokenize(captions)
  assert not np.any(ids == encoder.tokenizer.unk_id)
  assert set(ids.ravel().tolist()) == set(range(len(encoder.tokenizer))) - {1}  # all but <unk>


def test_encoder_interface_and_masking(encoder):
  emb, mask, pooled = encoder.encode(PROMPTS[:4] + [""])
  assert emb.shape == (5, 16, 32) and emb.dtype == jnp.float32
  assert mask.shape == (5, 16) and mask.dtype == jnp.bool_ and pooled.shape == (5, 32)
  assert mask.sum(axis=1).tolist() == [10, 10, 11, 10, 1]  # words + </s>; the empty prompt: </s>
  np.testing.assert_array_equal(jnp.where(mask[..., None], 0.0, emb), 0.0)  # zero at padding
  np.testing.assert_allclose(pooled, masked_mean(emb, mask), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(pooled[0], emb[0, :10].mean(axis=0), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(emb)))
  # Padded tokens are masked keys: whatever ids sit there, valid outputs do not change.
  ids, m = encoder.tokenize(PROMPTS)
  noisy = np.where(m, ids, np.random.default_rng(0).integers(3, 20, ids.shape)).astype(np.int32)
  a, _ = encoder.encode_ids(ids, m)
  b, _ = encoder.encode_ids(noisy, m)
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_encoder_is_deterministic(encoder):
  emb, _, pooled = encoder.encode(PROMPTS)
  emb2, _, pooled2 = ToyTextEncoder(text_dim=32, max_len=16, words=toy_grammar.vocabulary()).encode(PROMPTS)
  np.testing.assert_array_equal(emb, emb2)
  np.testing.assert_array_equal(pooled, pooled2)
  # The same prompt embeds the same whatever else is in the batch.
  _, _, alone = encoder.encode(PROMPTS[2:3])
  np.testing.assert_allclose(alone[0], pooled[2], rtol=1e-5, atol=1e-6)
  _, _, other_seed = ToyTextEncoder(text_dim=32, max_len=16, words=toy_grammar.vocabulary(), seed=1).encode(PROMPTS)
  assert not np.allclose(other_seed, pooled)


def test_similar_prompts_are_closer(encoder):
  _, _, pooled = encoder.encode(PROMPTS)
  unit = pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  cos = np.asarray(unit @ unit.T)  # [B, B]
  # One word changed (0-1: motion, 0-3: shape) beats a different scene (2, 4), both ways round.
  for near in (1, 3):
    for far in (2, 4):
      assert cos[0, near] > cos[0, far] + 0.03, cos
      assert cos[near, 0] > cos[near, far] + 0.03, cos


def test_the_toy_encoder_does_not_follow_the_run_seed():
  """A run trained with --config.seed=3 and sampled with the default config must see the same prompt
  embeddings: the frozen toy encoder's weights come from its own fixed seed, never `config.seed`."""
  from blockvid_jax import generate  # pylint: disable=import-outside-toplevel
  from blockvid_jax.models import DiTSpec  # pylint: disable=import-outside-toplevel
  from blockvid_jax.config_overrides import load_config_file  # pylint: disable=import-outside-toplevel
  config = load_config_file(str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "toy_cpu.py"))
  spec = DiTSpec.from_config(config.model)
  default = generate.make_text_encoder(config, spec).encode(PROMPTS)[0]
  config.seed = 3
  other_run = generate.make_text_encoder(config, spec).encode(PROMPTS)[0]
  np.testing.assert_array_equal(np.asarray(other_run), np.asarray(default))
  reference = ToyTextEncoder(text_dim=spec.text_dim, max_len=config.text.max_len,
                             words=toy_grammar.vocabulary()).encode(PROMPTS)[0]
  np.testing.assert_array_equal(np.asarray(default), np.asarray(reference))
