"""Beam search and greedy decoding on a tiny randomly initialised Lite Transformer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.lite_transformer import EncoderDecoder
from lite_jax.lite_transformer import TransformerConfig
from lite_jax.lite_transformer import beam_search
from lite_jax.lite_transformer import greedy_decode
from lite_jax.lite_transformer.beam_search import banned_ngram_tokens

CONFIG = TransformerConfig(
    src_vocab_size=13, tgt_vocab_size=13, share_embeddings=True, d_model=16, ffn_dim=16,
    num_encoder_layers=1, num_decoder_layers=1,
    encoder_branches=("attn:1:8:2", "dynamic:default:8:2"),
    decoder_branches=("attn:1:8:2", "dynamic:default:8:2"), encoder_attention_heads=2,
    kernel_sizes=(3,), max_len=12)
MODEL = EncoderDecoder(CONFIG)
# Decode at most src_len + 2 = 7 tokens, so that some hypotheses hit the length limit.
LIMITS = dict(max_len_a=1, max_len_b=2)
PAD, EOS = CONFIG.pad_id, CONFIG.eos_id


@pytest.fixture(scope="module")
def params():
  """Random parameters; the eos logit is raised so hypotheses end at varied lengths."""
  dummy = jnp.ones((1, 2), jnp.int32)
  shapes = nn.unbox(jax.eval_shape(MODEL.init, jax.random.key(0), dummy, dummy)["params"])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes)
  params["shared_embedding"]["embedding"][EOS] += 0.2
  return params


@pytest.fixture(scope="module")
def src():
  src = np.random.default_rng(1).integers(3, 13, size=(3, 5))
  src[0, 3:] = PAD
  src[:, -1] = EOS
  return jnp.asarray(src)


@pytest.fixture(scope="module")
def beam4(params, src):
  return beam_search(MODEL, params, src, beam_size=4, length_penalty=0.6, **LIMITS)


def _lengths(tokens):
  return (np.asarray(tokens) != PAD).sum(axis=1)


def _teacher_forced_scores(params, src, tokens, length_penalty):
  """fairseq's score of `tokens` followed by eos, from full-sequence logits."""
  tokens = np.asarray(tokens)
  lengths = _lengths(tokens)
  batch, max_len = tokens.shape
  target = np.full((batch, max_len + 1), PAD)
  target[:, :max_len] = tokens
  target[np.arange(batch), lengths] = EOS
  tgt_in = np.concatenate([np.full((batch, 1), CONFIG.bos_id), target[:, :-1]], axis=1)
  logits = jax.jit(MODEL.apply)({"params": params}, src, jnp.asarray(tgt_in))
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  picked = np.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
  summed = (picked * (np.arange(max_len + 1) <= lengths[:, None])).sum(axis=1)
  return summed / (lengths + 1.0)**length_penalty


def test_output_shapes_and_padding(beam4, src):
  tokens, scores = beam4
  assert tokens.shape == (3, src.shape[1] + 2) and scores.shape == (3,)
  tokens = np.asarray(tokens)
  for row, length in zip(tokens, _lengths(tokens)):
    assert np.all(row[:length] != PAD) and np.all(row[length:] == PAD)
    assert EOS not in row and CONFIG.bos_id not in row
  # The fixture is tuned so that beams end early, at different lengths.
  assert len(set(_lengths(tokens))) > 1 and max(_lengths(tokens)) < tokens.shape[1]


def test_score_equals_teacher_forced_model_score(beam4, params, src):
  tokens, scores = beam4
  np.testing.assert_allclose(scores, _teacher_forced_scores(params, src, tokens, 0.6),
                             rtol=1e-4, atol=1e-4)


def test_beam_size_one_equals_greedy(params, src):
  beam_tokens, beam_scores = beam_search(MODEL, params, src, beam_size=1, **LIMITS)
  greedy_tokens, greedy_scores = greedy_decode(MODEL, params, src, **LIMITS)
  np.testing.assert_array_equal(beam_tokens, greedy_tokens)
  np.testing.assert_allclose(beam_scores, greedy_scores, rtol=1e-5)


def test_stops_at_eos_once_min_len_allows_it(params, src):
  """With eos by far the likeliest token, hypotheses end exactly at min_len; the
  n-gram ban keeps the forced tokens from repeating a bigram."""
  params = jax.tree.map(np.copy, params)
  # The last LayerNorm outputs the constant e_0, and only eos has weight on it.
  norm = params["decoder"]["layer_0"]["ffn_norm"]
  norm["scale"][:] = 0
  norm["bias"][:] = np.eye(16)[0]
  table = params["shared_embedding"]["embedding"]
  table[:, 0] = 0
  table[EOS, 0] = 30
  tokens, _ = beam_search(MODEL, params, src, beam_size=2, min_len=4, no_repeat_ngram_size=2,
                          **LIMITS)
  tokens = np.asarray(tokens)
  np.testing.assert_array_equal(_lengths(tokens), 4)
  for row in tokens:
    bigrams = list(zip(row[:3], row[1:4]))
    assert len(set(bigrams)) == len(bigrams), row


def _repeats_an_ngram(prefix, token, size):
  """Brute force: does `prefix + [token]` end in an n-gram of `size` it already holds?"""
  seq = [int(t) for t in prefix] + [int(token)]
  if len(seq) < size:
    return False
  last = tuple(seq[-size:])
  return any(tuple(seq[i:i + size]) == last for i in range(len(seq) - size))


def _has_repeated_ngram(seq, size):
  grams = [tuple(seq[i:i + size]) for i in range(len(seq) - size + 1)]
  return len(grams) != len(set(grams))


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_banned_ngram_tokens_matches_brute_force_at_every_step(size):
  """fairseq's rule: token w is banned at `step` when tokens[:step + 1] + [w] would hold the
  n-gram ending in w twice; checked against enumerating every n-gram, at every step
  (including those before a whole n-gram fits)."""
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 3, size=(4, 9))
  vocab = 5
  banned_fn = jax.jit(banned_ngram_tokens, static_argnums=(2, 3))
  for step in range(tokens.shape[1]):
    banned = np.asarray(banned_fn(tokens, step, size, vocab))
    for row, row_banned in zip(tokens, banned):
      expected = [_repeats_an_ngram(row[:step + 1], w, size) for w in range(vocab)]
      np.testing.assert_array_equal(row_banned, expected, err_msg=f"step {step}, {row}")


def _reference_greedy(params, src, no_repeat, min_len, max_len):
  """Greedy decoding by full teacher-forced forward passes, with pad/bos banned, eos banned
  before `min_len`, forced at `max_len`, and the n-gram rule by brute force."""
  apply = jax.jit(MODEL.apply)
  out = []
  for row in np.asarray(src):
    seq = [CONFIG.bos_id]
    while len(seq) <= max_len:
      tgt_in = np.full((1, max_len + 1), PAD)
      tgt_in[0, :len(seq)] = seq
      logits = np.array(apply({"params": params}, jnp.asarray(row[None]),
                                jnp.asarray(tgt_in)))[0, len(seq) - 1]
      step = len(seq) - 1
      for w in range(len(logits)):
        if (w in (PAD, CONFIG.bos_id) or (w == EOS and step < min_len)
            or (w != EOS and step >= max_len)
            or (no_repeat and _repeats_an_ngram(seq, w, no_repeat))):
          logits[w] = -np.inf
      best = int(np.argmax(logits))
      if best == EOS:
        break
      seq.append(best)
    out.append(seq[1:] + [PAD] * (max_len + 1 - len(seq)))
  return np.asarray(out)


def test_greedy_with_ngram_ban_and_min_len_matches_brute_force(params, src):
  """Greedy decoding and beam search with one beam equal a python loop over full forward
  passes that bans repeated n-grams by enumeration (one compile each: both constraints at
  once)."""
  no_repeat, min_len = 2, 5
  max_len = src.shape[1] + 2  # LIMITS
  expected = _reference_greedy(params, src, no_repeat, min_len, max_len)
  greedy, _ = greedy_decode(MODEL, params, src, min_len=min_len,
                            no_repeat_ngram_size=no_repeat, **LIMITS)
  beam1, _ = beam_search(MODEL, params, src, beam_size=1, min_len=min_len,
                         no_repeat_ngram_size=no_repeat, **LIMITS)
  np.testing.assert_array_equal(greedy, expected)
  np.testing.assert_array_equal(beam1, expected)
  assert (_lengths(expected) >= min_len).all()


def test_ngram_ban_changes_outputs_and_beams_never_repeat(params, src):
  """The random model repeats bigrams when unconstrained (so the ban is tested for real);
  with the ban, no beam-4 output holds a repeated bigram (bos included) and scores still
  equal the teacher-forced model score."""
  free, _ = greedy_decode(MODEL, params, src, **LIMITS)
  assert any(_has_repeated_ngram([CONFIG.bos_id, *row[:n]], 2)
             for row, n in zip(np.asarray(free), _lengths(free)))
  tokens, scores = beam_search(MODEL, params, src, beam_size=4, length_penalty=0.6,
                               no_repeat_ngram_size=2, **LIMITS)
  for row, n in zip(np.asarray(tokens), _lengths(tokens)):
    assert not _has_repeated_ngram([CONFIG.bos_id, *row[:n]], 2), row
  np.testing.assert_allclose(scores, _teacher_forced_scores(params, src, tokens, 0.6),
                             rtol=1e-4, atol=1e-4)


def test_invalid_arguments_raise(params, src):
  with pytest.raises(ValueError, match="min_len must be in"):
    beam_search(MODEL, params, src, min_len=9, **LIMITS)
  with pytest.raises(ValueError, match="beam_size must be positive"):
    beam_search(MODEL, params, src, beam_size=0)
