"""Beam search and greedy decoding for `EncoderDecoder`, following fairseq.

Both are jitted whole: one `lax.while_loop` over decode steps, each feeding one
token per hypothesis through the decoder cache. Hypotheses start from
`config.bos_id`; the returned tokens drop it and the final eos and are padded
with `config.pad_id`.

fairseq semantics: at most `max_len = min(max_len_a * src_len + max_len_b,
config.max_len - 1)` tokens before eos, which is forced at step `max_len`; pad
(and a bos distinct from eos) is never generated; eos is banned before
`min_len` tokens. A hypothesis' score is its summed log-probability, eos
included, divided by `(tokens + 1) ** length_penalty`. With
`no_repeat_ngram_size = n > 0` no n-gram occurs twice in a hypothesis: a token
that would complete an n-gram already present (bos included, as fairseq's
`NGramRepeatBlock` counts it) is banned.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lite_jax.core import compiler
from lite_jax.lite_transformer.model import EncoderDecoder
from lite_jax.lite_transformer.model import init_cache


def max_decode_length(config, src_len, max_len_a, max_len_b, min_len):
  """Most tokens decoded for a `src_len` source: `max_len_a * src_len + max_len_b` (fairseq's
  rule), capped by the position table; checks `min_len` against it."""
  max_len = min(int(max_len_a * src_len + max_len_b), config.max_len - 1)
  if max_len < 1:
    raise ValueError(f"max_len_a * src_len + max_len_b must be at least 1, got {max_len}.")
  if not 0 <= min_len <= max_len:
    raise ValueError(f"min_len must be in [0, max length {max_len}], got {min_len}.")
  return max_len


def _start(model, params, src_tokens, copies, max_len):
  """Encodes and builds the decoder cache, each repeated `copies` times per sentence.

  Returns the initial cache and `step(cache, tokens: [batch * copies]) ->
  (log_probs [batch * copies, vocab], cache)`; row `b * copies + k` is copy k
  of sentence b.
  """
  encoded, src_mask = model.apply({"params": params}, src_tokens,
                                  method=EncoderDecoder.encode)
  # The decoder input holds bos plus up to max_len tokens (the last one gets eos).
  cache = init_cache(model, params, encoded, src_mask, max_len + 1)
  encoded, src_mask, cache = jax.tree.map(
      lambda x: jnp.repeat(x, copies, axis=0) if x.ndim else x, (encoded, src_mask, cache))

  def step(cache, tokens):
    logits, variables = model.apply({"params": params, "cache": cache}, encoded, src_mask,
                                    tokens[:, None], decode=True, mutable=["cache"],
                                    method=EncoderDecoder.decode)
    return jax.nn.log_softmax(logits[:, 0]), variables["cache"]

  return cache, step


def _restrict(log_probs, step, max_len, min_len, config):
  """Applies fairseq's per-step constraints to `log_probs: [n, vocab]`."""
  ids = jnp.arange(log_probs.shape[-1])
  banned = ids == config.pad_id
  if config.bos_id != config.eos_id:
    banned |= ids == config.bos_id
  is_eos = ids == config.eos_id
  banned |= (is_eos & (step < min_len)) | (~is_eos & (step >= max_len))
  return jnp.where(banned, -jnp.inf, log_probs)


def banned_ngram_tokens(tokens, step, ngram_size, vocab_size):
  """Tokens that would repeat an n-gram, as a mask `[n, vocab_size]`.

  `tokens: [n, length]` holds each hypothesis up to position `step`
  (inclusive); token w is banned when the last `ngram_size - 1` tokens
  followed by w already occur in it.
  """
  n, length = tokens.shape
  starts = length - ngram_size + 1
  if starts < 1:  # no n-gram fits in the hypotheses at all
    return jnp.zeros((n, vocab_size), bool)
  suffix = lax.dynamic_slice_in_dim(tokens, step - ngram_size + 2, ngram_size - 1, axis=1)
  matches = jnp.broadcast_to(jnp.arange(starts) <= step - ngram_size + 1, (n, starts))
  for i in range(ngram_size - 1):
    matches &= tokens[:, i:i + starts] == suffix[:, i:i + 1]
  followers = tokens[:, ngram_size - 1:]
  return jnp.zeros((n, vocab_size), bool).at[jnp.arange(n)[:, None], followers].max(matches)


def _check_ngram_size(no_repeat_ngram_size):
  if no_repeat_ngram_size < 0:
    raise ValueError(f"no_repeat_ngram_size must be non-negative, got {no_repeat_ngram_size}.")


def _ban_repeats(log_probs, tokens, step, ngram_size):
  """`log_probs: [n, vocab]` with the tokens that would repeat an n-gram of `tokens: [n,
  length]` (up to `step`) at -inf; unchanged when `ngram_size` is 0."""
  if not ngram_size:
    return log_probs
  banned = banned_ngram_tokens(tokens, step, ngram_size, log_probs.shape[-1])
  return jnp.where(banned, -jnp.inf, log_probs)


def _output(tokens, config):
  """Drops bos and eos: `[..., max_len + 2]` -> `[..., max_len]`, padded after eos."""
  tokens = tokens[..., 1:-1]
  return jnp.where(tokens == config.eos_id, config.pad_id, tokens)


@functools.partial(compiler.jit, static_argnames=("model", "length_penalty", "max_len_a",
                                             "max_len_b", "min_len", "no_repeat_ngram_size"))
def greedy_decode(model: EncoderDecoder, params, src_tokens: jax.Array, *,
                  length_penalty: float = 0.6, max_len_a: float = 0, max_len_b: int = 200,
                  min_len: int = 0, no_repeat_ngram_size: int = 0
                  ) -> tuple[jax.Array, jax.Array]:
  """Greedy decoding of `src_tokens: [batch, src_len]`.

  Returns (tokens `[batch, max_len]` without bos/eos, pad-filled; scores
  `[batch]` scored like `beam_search`).
  """
  config = model.config
  batch, src_len = src_tokens.shape
  _check_ngram_size(no_repeat_ngram_size)
  max_len = max_decode_length(config, src_len, max_len_a, max_len_b, min_len)
  cache, step_fn = _start(model, params, src_tokens, 1, max_len)
  tokens = jnp.full((batch, max_len + 2), config.pad_id, jnp.int32).at[:, 0].set(config.bos_id)
  zeros = jnp.zeros((batch,), jnp.float32)

  def body(state):
    step, tokens, finished, log_prob, length, cache = state
    log_probs, cache = step_fn(cache, tokens[:, step])
    log_probs = _restrict(log_probs, step, max_len, min_len, config)
    log_probs = _ban_repeats(log_probs, tokens, step, no_repeat_ngram_size)
    best = jnp.argmax(log_probs, axis=-1)
    best_log_prob = jnp.take_along_axis(log_probs, best[:, None], axis=-1)[:, 0]
    tokens = tokens.at[:, step + 1].set(jnp.where(finished, config.pad_id, best))
    log_prob += jnp.where(finished, 0.0, best_log_prob)
    length += ~finished
    return step + 1, tokens, finished | (best == config.eos_id), log_prob, length, cache

  def cond(state):
    step, _, finished, *_ = state
    return (step <= max_len) & ~jnp.all(finished)

  _, tokens, _, log_prob, length, _ = lax.while_loop(
      cond, body, (0, tokens, zeros.astype(bool), zeros, zeros, cache))
  return _output(tokens, config), log_prob / length**length_penalty


@functools.partial(compiler.jit, static_argnames=("model", "beam_size", "length_penalty",
                                             "max_len_a", "max_len_b", "min_len",
                                             "no_repeat_ngram_size"))
def beam_search(model: EncoderDecoder, params, src_tokens: jax.Array, *, beam_size: int = 4,
                length_penalty: float = 0.6, max_len_a: float = 0, max_len_b: int = 200,
                min_len: int = 0, no_repeat_ngram_size: int = 0
                ) -> tuple[jax.Array, jax.Array]:
  """fairseq beam search over `src_tokens: [batch, src_len]`.

  Each step ranks the `2 * beam_size` best continuations by summed
  log-probability. Those ending in eos and ranked within the first
  `beam_size` are finalised; the best `beam_size` others stay alive. A
  sentence stops once `beam_size` hypotheses are finalised (fairseq keeps the
  first ones; this keeps the best-scoring ones when a step overshoots), and
  the best finalised hypothesis is returned.

  Returns:
    tokens `[batch, max_len]` without bos/eos, padded with pad_id, and their
    length-normalised scores `[batch]`.
  """
  config = model.config
  batch, src_len = src_tokens.shape
  if beam_size < 1:
    raise ValueError(f"beam_size must be positive, got {beam_size}.")
  _check_ngram_size(no_repeat_ngram_size)
  max_len = max_decode_length(config, src_len, max_len_a, max_len_b, min_len)
  vocab = config.tgt_vocab_size
  cache, step_fn = _start(model, params, src_tokens, beam_size, max_len)

  seqs = jnp.full((batch, beam_size, max_len + 2), config.pad_id, jnp.int32)
  seqs = seqs.at[..., 0].set(config.bos_id)
  # All beams start identical: only the first may expand at step 0.
  alive_log_prob = jnp.where(jnp.arange(beam_size) == 0, 0.0, -jnp.inf)
  alive_log_prob = jnp.broadcast_to(alive_log_prob, (batch, beam_size))
  finished_scores = jnp.full((batch, beam_size), -jnp.inf)
  num_finished = jnp.zeros((batch,), jnp.int32)

  def gather(x, indices):
    """`x: [batch, k, ...]` at `indices: [batch, m]` -> `[batch, m, ...]`."""
    return jax.vmap(lambda row, idx: row[idx])(x, indices)

  def body(state):
    step, seqs, alive_log_prob, finished_seqs, finished_scores, num_finished, cache = state
    flat_seqs = seqs.reshape(batch * beam_size, -1)
    log_probs, cache = step_fn(cache, flat_seqs[:, step])
    log_probs = _restrict(log_probs, step, max_len, min_len, config)
    log_probs = _ban_repeats(log_probs, flat_seqs, step, no_repeat_ngram_size)
    candidates = alive_log_prob[..., None] + log_probs.reshape(batch, beam_size, vocab)
    top_log_prob, top_index = lax.top_k(candidates.reshape(batch, -1), 2 * beam_size)
    origin, token = top_index // vocab, top_index % vocab
    top_seqs = gather(seqs, origin).at[:, :, step + 1].set(token)
    is_eos = token == config.eos_id

    finalize = (is_eos & (top_log_prob > -jnp.inf)
                & (jnp.arange(2 * beam_size) < beam_size)
                & (num_finished < beam_size)[:, None])
    new_scores = jnp.where(finalize, top_log_prob / (step + 1.0)**length_penalty, -jnp.inf)
    finished_scores, keep = lax.top_k(
        jnp.concatenate([finished_scores, new_scores], axis=1), beam_size)
    finished_seqs = gather(jnp.concatenate([finished_seqs, top_seqs], axis=1), keep)
    num_finished += finalize.sum(axis=1)

    alive_log_prob, pick = lax.top_k(jnp.where(is_eos, -jnp.inf, top_log_prob), beam_size)
    seqs = gather(top_seqs, pick)
    rows = (jnp.arange(batch)[:, None] * beam_size + gather(origin, pick)).reshape(-1)
    cache = jax.tree.map(lambda x: x[rows] if x.ndim else x, cache)
    return step + 1, seqs, alive_log_prob, finished_seqs, finished_scores, num_finished, cache

  def cond(state):
    step, *_, num_finished, _ = state
    return (step <= max_len) & jnp.any(num_finished < beam_size)

  state = (0, seqs, alive_log_prob, seqs, finished_scores, num_finished, cache)
  _, _, _, finished_seqs, finished_scores, _, _ = lax.while_loop(cond, body, state)
  best = jnp.argmax(finished_scores, axis=1)
  tokens = jnp.take_along_axis(finished_seqs, best[:, None, None], axis=1)[:, 0]
  return _output(tokens, config), jnp.take_along_axis(finished_scores, best[:, None], axis=1)[:, 0]
