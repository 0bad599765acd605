"""Lite Transformer encoder-decoder: specs, parameter counts, causality, caching, padding."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.lite_transformer import BranchSpec
from lite_jax.lite_transformer import EncoderDecoder
from lite_jax.lite_transformer import TransformerConfig
from lite_jax.lite_transformer import init_cache
from lite_jax.lite_transformer import parse_branches
from lite_jax.lite_transformer.model import EncoderLayer
from lite_jax.nn import normal_embedding_init
from lite_jax.nn import sinusoidal_positions

TINY_BRANCHES = {
    "dynamic": ("attn:1:8:2", "dynamic:default:8:2"),
    "lightweight": ("attn:1:8:2", "lightweight:default:8:2"),
    "transformer": None,
}


def tiny_config(kind):
  """One layer each (keeps compiles short); lightweight gets separate vocabularies (IWSLT)."""
  separate = kind == "lightweight"
  return TransformerConfig(
      src_vocab_size=23, tgt_vocab_size=19 if separate else 23, share_embeddings=not separate,
      d_model=16, ffn_dim=24, num_encoder_layers=1, num_decoder_layers=1,
      encoder_branches=TINY_BRANCHES[kind], decoder_branches=TINY_BRANCHES[kind], num_heads=4,
      encoder_attention_heads=4, kernel_sizes=(5,), dropout=0.1, max_len=16)


def random_params(module, *init_args, seed=0):
  """Gaussian parameters of `module`'s shapes (skips compiling init: threefry is slow on CPU)."""
  init_args = init_args or (jnp.ones((1, 2), jnp.int32),) * 2
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *init_args)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)


def _is_embedding(path):
  return any("embedding" in getattr(k, "key", "") for k in path)


def non_embedding_counts(config):
  """(all non-embedding params, weight matrices only), counted without allocating."""
  model = EncoderDecoder(config)
  dummy = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), dummy, dummy)["params"])
  leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
            if not _is_embedding(p)]
  total = sum(math.prod(x.shape) for _, x in leaves)
  kernels = sum(math.prod(x.shape) for p, x in leaves if p[-1].key.endswith("kernel"))
  return total, kernels


# ----------------------------------------------------------------------------------------
# Branch specs and config validation
# ----------------------------------------------------------------------------------------


def test_parse_branches_fairseq_strings():
  expected = (BranchSpec("attn", None, 248, 4), BranchSpec("dynamic", None, 248, 4))
  assert parse_branches(["attn:1:248:4", "dynamic:default:248:4"], 496) == expected
  assert parse_branches("attn:1:248:4, dynamic:default:248:4", 496) == expected
  assert parse_branches("lightweight:7:160:4,attn:1:160:4", 320)[0].kernel_size == 7


@pytest.mark.parametrize("spec, message", [
    (["attn:1:248:4", "dynamic:default:200:4"], "dims must sum to d_model=496, got 448"),
    (["attn:1:248:4", "conv:default:248:4"], "unknown type 'conv'"),
    (["attn:1:248"], "must have the form type:kernel:dim:heads"),
    (["attn:1:248:5", "dynamic:3:248:4"], r"heads \(5\) must divide"),
    (["attn:1:248:4", "dynamic:wide:248:4"], "is invalid"),
])
def test_parse_branches_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    parse_branches(spec, 496)


def test_config_validation_names_the_argument():
  with pytest.raises(ValueError, match="encoder_branches dims must sum"):
    TransformerConfig(10, 10, d_model=16, encoder_branches="attn:1:8:2")
  with pytest.raises(ValueError, match="share_embeddings needs"):
    TransformerConfig(10, 12, share_embeddings=True, d_model=16, num_heads=4)
  with pytest.raises(ValueError, match="kernel sizes must be odd"):
    TransformerConfig(10, 10, d_model=16, num_heads=4,
                      encoder_branches="attn:1:8:2,lightweight:4:8:2")
  with pytest.raises(ValueError, match="kernel_sizes has 2 entries"):
    TransformerConfig(10, 10, d_model=16, num_heads=4, kernel_sizes=(3, 5),
                      decoder_branches="attn:1:8:2,dynamic:default:8:2")


def test_config_resolves_default_kernels_per_layer():
  config = TransformerConfig(10, 10, d_model=16, encoder_branches="attn:1:8:2,dynamic:default:8:2")
  assert [config.layer_branches("encoder", i)[1].kernel_size for i in range(6)] == [
      3, 7, 15, 31, 31, 31]
  assert config.layer_branches("decoder", 0) == (BranchSpec("attn", None, 16, 8),)


# ----------------------------------------------------------------------------------------
# Parameter counts (spec section 3): non-embedding parameters
# ----------------------------------------------------------------------------------------


def wmt_lite_config(d):
  branches = (f"attn:1:{d // 2}:4", f"dynamic:default:{d // 2}:4")
  return TransformerConfig(32768, 32768, share_embeddings=True, d_model=d, ffn_dim=d,
                           encoder_branches=branches, decoder_branches=branches,
                           encoder_attention_heads=8, conv_glu=True)


@pytest.mark.parametrize("config, millions, decimals", [
    (wmt_lite_config(200), 2.85, 2),
    (wmt_lite_config(408), 11.68, 2),
    (wmt_lite_config(496), 17.21, 2),
    (TransformerConfig(32768, 32768, share_embeddings=True, d_model=512, ffn_dim=2048), 44.0, 1),
    (TransformerConfig(32768, 32768, share_embeddings=True, d_model=128, ffn_dim=512), 2.75, 2),
])
def test_non_embedding_parameter_counts(config, millions, decimals):
  total, kernels = non_embedding_counts(config)
  assert total == pytest.approx(millions * 1e6, rel=0.02)
  # The reference code's counts are of weight matrices only (biases and LayerNorms add
  # 150 * d_model here); those match ours to the digits given.
  assert round(kernels / 1e6, decimals) == millions


def test_unshared_output_projection_is_a_non_embedding_param():
  config = tiny_config("lightweight")
  shapes = nn.unbox(jax.eval_shape(EncoderDecoder(config).init, jax.random.key(0),
                                   jnp.ones((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)))
  params = shapes["params"]
  assert params["source_embedding"]["embedding"].shape == (23, 16)
  assert params["target_embedding"]["embedding"].shape == (19, 16)
  assert params["decoder"]["output_projection"]["kernel"].shape == (16, 19)


# ----------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------


def test_sinusoidal_positions_fairseq_layout():
  table = np.asarray(sinusoidal_positions(5, 9))
  half = 4
  for p in range(5):
    for i in range(half):
      angle = p * 10000.0**(-i / (half - 1))
      assert table[p, i] == pytest.approx(math.sin(angle), abs=1e-6)
      assert table[p, half + i] == pytest.approx(math.cos(angle), abs=1e-6)
  np.testing.assert_array_equal(table[:, -1], 0.0)


def test_embedding_init_zero_pad_row():
  table = normal_embedding_init(0.25, pad_id=0)(jax.random.key(0), (400, 16))
  np.testing.assert_array_equal(table[0], 0.0)
  assert float(jnp.std(table[1:])) == pytest.approx(0.25, rel=0.05)


# ----------------------------------------------------------------------------------------
# Causality and incremental decoding (one compile per config)
# ----------------------------------------------------------------------------------------

CUT = 3  # decoder inputs after this position are perturbed


@pytest.fixture(scope="module", params=sorted(TINY_BRANCHES))
def decoded(request):
  """Full-sequence and step-by-step logits for original and perturbed decoder inputs."""
  config = tiny_config(request.param)
  model = EncoderDecoder(config)
  params = random_params(model)
  rng = np.random.default_rng(1)
  src = rng.integers(3, 19, size=(2, 6))
  src[0, 4:] = config.pad_id
  tgt = rng.integers(3, 19, size=(2, 7))
  tgt[:, 0] = config.bos_id
  perturbed = tgt.copy()
  perturbed[:, CUT + 1:] = rng.integers(3, 19, size=(2, 7 - CUT - 1))
  src, tgt = np.concatenate([src, src]), np.concatenate([tgt, perturbed])

  @jax.jit
  def full_and_incremental(params, src, tgt):
    full = model.apply({"params": params}, src, tgt)
    encoded, src_mask = model.apply({"params": params}, src, method=EncoderDecoder.encode)

    def step(cache, tokens):
      logits, variables = model.apply({"params": params, "cache": cache}, encoded, src_mask,
                                      tokens[:, None], decode=True, mutable=["cache"],
                                      method=EncoderDecoder.decode)
      return variables["cache"], logits[:, 0]

    cache = init_cache(model, params, encoded, src_mask, tgt.shape[1])
    _, steps = jax.lax.scan(step, cache, tgt.T)
    return full, jnp.swapaxes(steps, 0, 1)

  return full_and_incremental(params, jnp.asarray(src), jnp.asarray(tgt))


def test_decoder_outputs_ignore_future_inputs(decoded):
  full, _ = decoded
  original, perturbed = full[:2], full[2:]
  np.testing.assert_allclose(original[:, :CUT + 1], perturbed[:, :CUT + 1], atol=1e-5)
  assert not np.allclose(original[:, CUT + 1:], perturbed[:, CUT + 1:], atol=1e-3)


def test_incremental_decoding_matches_full_sequence(decoded):
  full, incremental = decoded
  assert incremental.shape == full.shape
  np.testing.assert_allclose(incremental, full, atol=1e-4)


# ----------------------------------------------------------------------------------------
# Padding
# ----------------------------------------------------------------------------------------


def test_encoder_ignores_padding_and_other_batch_rows():
  """A sentence encodes the same alone, padded further, or next to another sentence."""
  config = tiny_config("dynamic")
  model = EncoderDecoder(config)
  params = random_params(model)
  encode = jax.jit(lambda p, src: model.apply({"params": p}, src, method=EncoderDecoder.encode))
  sentence = np.array([5, 9, 4, 7, config.eos_id])
  alone, _ = encode(params, sentence[None])
  batch = np.full((2, 9), config.pad_id)
  batch[0, :5] = sentence
  batch[1] = np.random.default_rng(2).integers(3, 19, size=9)
  batched, mask = encode(params, batch)
  np.testing.assert_array_equal(mask[0], np.arange(9) < 5)
  np.testing.assert_allclose(batched[0, :5], alone[0], atol=1e-5)


def test_lsra_layer_ignores_padded_contents():
  """Encoder-layer outputs at real positions do not depend on the states at padded ones."""
  layer = EncoderLayer(tiny_config("dynamic"), 0)  # kernel 5: the window reaches the padding
  params = random_params(layer, jnp.ones((1, 2, 16)), jnp.ones((1, 2), bool))
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 6, 16)).astype(np.float32)
  valid = np.ones((2, 6), bool)
  valid[:, 3:] = False
  garbage = x.copy()
  garbage[:, 3:] = rng.normal(size=(2, 3, 16)) * 100
  out = jax.jit(layer.apply)({"params": params}, np.concatenate([x, garbage]),
                             np.concatenate([valid, valid]))
  np.testing.assert_allclose(out[:2, :3], out[2:, :3], atol=1e-5)


def test_invalid_inputs_raise():
  model = EncoderDecoder(tiny_config("dynamic"))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="src_tokens must be an integer array"):
    jax.eval_shape(model.init, key, jnp.ones((2, 3)), jnp.ones((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="tgt_in_tokens has length 17 > config.max_len=16"):
    jax.eval_shape(model.init, key, jnp.ones((2, 3), jnp.int32), jnp.ones((2, 17), jnp.int32))
