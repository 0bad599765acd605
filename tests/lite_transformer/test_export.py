"""The Lite Transformer's portable artifacts (`lite_transformer/export.py`) against the library
model: a tiny random-init LSRA model exported once per module; outputs compared for two batch
sizes (the batch is symbolic), a greedy loop over the artifacts against `greedy_decode`, and the
encoder run by `run_exported.py` in an interpreter that cannot import lite_jax. The launcher's
`--mode=export` on a trained workdir is tested in `test_train.py` (it has the trained run)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import wmt_lite
from lite_jax.core import export as portable
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import export as lite_export
from lite_jax.lite_transformer.beam_search import greedy_decode
from lite_jax.lite_transformer.model import EncoderDecoder, TransformerConfig, init_cache

CONFIG = TransformerConfig(
    src_vocab_size=23, tgt_vocab_size=19, d_model=16, ffn_dim=24, num_encoder_layers=2,
    num_decoder_layers=2, encoder_branches="attn:1:8:2,dynamic:default:8:2",
    decoder_branches="attn:1:8:2,lightweight:default:8:2", num_heads=2,
    encoder_attention_heads=4, kernel_sizes=(3, 5), max_len=16)
SRC_LEN = 7
DECODE_LENGTH = 6  # bos + at most 5 tokens


def _sources(batch, seed, src_len=SRC_LEN):
  """`[batch, src_len]` sources of different lengths: pieces, eos, then pad."""
  rng = np.random.default_rng(seed)
  src = np.full((batch, src_len), CONFIG.pad_id, np.int32)
  for row, length in enumerate(rng.integers(1, src_len, batch)):
    src[row, :length] = rng.integers(3, CONFIG.src_vocab_size, length)
    src[row, length] = CONFIG.eos_id
  return src


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  model = EncoderDecoder(CONFIG)
  dummy = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), dummy, dummy)["params"]
  directory = str(tmp_path_factory.mktemp("export"))
  paths = lite_export.export_artifacts(model, params, directory, src_len=SRC_LEN,
                                       decode_length=DECODE_LENGTH)
  library = jax.jit(functools.partial(_library, model), static_argnames="steps")
  return params, library, paths, {name: portable.load(p) for name, p in paths.items()}


def _library(model, params, src, steps):
  """The library's encoder output, fresh cache, and `steps` decoder steps from bos."""
  encoded, mask = model.apply({"params": params}, src, method=EncoderDecoder.encode)
  cache = init_cache(model, params, encoded, mask, DECODE_LENGTH)
  fresh, outputs, tokens = cache, [], jnp.full((len(src), 1), CONFIG.bos_id, jnp.int32)
  for i in range(steps):
    logits, variables = model.apply({"params": params, "cache": cache}, encoded, mask, tokens,
                                    decode=True, mutable=["cache"],
                                    method=EncoderDecoder.decode)
    cache = variables["cache"]
    outputs.append((jax.nn.log_softmax(logits[:, 0]), cache))
    tokens = (tokens + 3 + i) % CONFIG.tgt_vocab_size  # any next tokens, the same for both
  return encoded, mask, fresh, outputs


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,src_len", [(1, SRC_LEN), (3, 4)])
def test_artifacts_match_the_library(exported, batch, src_len):
  """Batch and source length are both symbolic (the length up to SRC_LEN)."""
  params, library, _, artifacts = exported
  src = _sources(batch, seed=batch, src_len=src_len)
  encoded, mask, fresh, steps = library(params, src, steps=2)

  got_encoded, got_mask = artifacts["encoder"](src)
  assert got_encoded.shape == (batch, src_len, CONFIG.d_model)
  _close(got_encoded, encoded)
  np.testing.assert_array_equal(got_mask, mask)
  cache = artifacts["init_cache"](got_encoded, got_mask)
  jax.tree.map(_close, cache, fresh)
  tokens = np.full((batch, 1), CONFIG.bos_id, np.int32)
  for i, (log_probs, library_cache) in enumerate(steps):
    got, cache = artifacts["decoder_step"](got_encoded, got_mask, cache, tokens)
    assert got.shape == (batch, CONFIG.tgt_vocab_size)
    _close(got, log_probs)
    jax.tree.map(_close, cache, library_cache)
    tokens = (tokens + 3 + i) % CONFIG.tgt_vocab_size


def test_plain_jax_greedy_loop_matches_greedy_decode(exported):
  """fairseq's greedy search written over the artifacts with jnp only."""
  params, _, _, artifacts = exported
  src = _sources(3, seed=7)
  max_tokens = DECODE_LENGTH - 1
  encoded, mask = artifacts["encoder"](src)
  cache = artifacts["init_cache"](encoded, mask)
  token = jnp.full((3,), CONFIG.bos_id, jnp.int32)
  finished = jnp.zeros((3,), bool)
  out = []
  ids = jnp.arange(CONFIG.tgt_vocab_size)
  for step in range(DECODE_LENGTH):
    log_probs, cache = artifacts["decoder_step"](encoded, mask, cache, token[:, None])
    banned = (ids == CONFIG.pad_id) | (ids == CONFIG.bos_id)
    if step == max_tokens:
      banned |= ids != CONFIG.eos_id
    token = jnp.argmax(jnp.where(banned, -jnp.inf, log_probs), axis=-1).astype(jnp.int32)
    out.append(jnp.where(finished | (token == CONFIG.eos_id), CONFIG.pad_id, token))
    finished |= token == CONFIG.eos_id
    if bool(finished.all()):
      break
  # Every row's last token is eos (pad here); the library drops it from its output.
  ours = np.stack(out, axis=1)
  ours = np.pad(ours, ((0, 0), (0, DECODE_LENGTH - ours.shape[1])))
  assert not ours[:, max_tokens].any()
  expected, _ = greedy_decode(EncoderDecoder(CONFIG), params, jnp.asarray(src), max_len_a=0,
                              max_len_b=max_tokens)
  np.testing.assert_array_equal(ours[:, :max_tokens], expected)
  assert len(np.unique(ours)) > 2  # the comparison sees a real decode, not one token


def test_encoder_runs_without_lite_jax(exported):
  params, library, paths, _ = exported
  src = _sources(3, seed=3, src_len=4)  # a test above's: the library's output is compiled
  outputs = portable.run_standalone(paths["encoder"], {"src_tokens": src})
  encoded, mask, *_ = library(params, src, steps=2)
  _close(outputs["[0]"], encoded)
  np.testing.assert_array_equal(outputs["[1]"], mask)


def test_a_source_longer_than_the_exported_bound_is_refused(exported):
  with pytest.raises(ValueError, match="src_len = 8 breaks the exported bound src_len <= 7"):
    exported[3]["encoder"](_sources(1, seed=0, src_len=SRC_LEN + 1))


@pytest.mark.parametrize("lengths,message", [
    ({"src_len": 0, "decode_length": 4}, "src_len must be in"),
    ({"src_len": 4, "decode_length": 17}, "decode_length must be in"),
])
def test_lengths_outside_the_position_table_are_user_errors(tmp_path, lengths, message):
  with pytest.raises(UserError, match=message):
    lite_export.export_artifacts(EncoderDecoder(CONFIG), {}, str(tmp_path), **lengths)


def test_unknown_platform_is_a_user_error(tmp_path):
  config = wmt_lite.get_config("tiny")
  config.export.platforms = ("gpu",)
  with pytest.raises(UserError, match="config.export.platforms must name some of cpu, cuda"):
    lite_export.export_workdir(config, str(tmp_path))
