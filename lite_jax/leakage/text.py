"""Recovering a token sequence from the gradient of a small transformer language model.

DLG's text experiment: the victim shares `∇θ` of its next-token loss on one sequence. The
attacker cannot optimise discrete tokens, so it optimises the *input embeddings* `e' [length-1,
width]` and soft next-token labels `softmax(y') [length-1, vocab]` with the same L2 gradient
matching and L-BFGS as `attacks.dlg`, then decodes each embedding to the nearest row of the
token-embedding table.

The token-embedding table's own gradient is left out of the match: the dummy embeddings enter
after the lookup, so the dummy's gradient there is zero by construction (the real one's
non-zero rows would give away the bag of tokens, a stronger attack than DLG's).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lite_jax.core.errors import UserError
from lite_jax.leakage import lbfgs
from lite_jax.leakage.attacks import AttackResult, l2_distance

ALPHABET = " abcdefghijklmnopqrstuvwxyz.,'"


def encode(text: str) -> np.ndarray:
  """Character-level token ids over `ALPHABET` (lower-cased), `[len(text)]`."""
  text = text.lower()
  unknown = sorted(set(text) - set(ALPHABET))
  if unknown:
    raise UserError(f"text contains characters outside the alphabet {ALPHABET!r}: {unknown}.")
  return np.asarray([ALPHABET.index(c) for c in text], np.int32)


def decode(tokens) -> str:
  return "".join(ALPHABET[int(t)] for t in np.asarray(tokens))


class CausalBlock(nn.Module):
  """Pre-LN transformer block: causal self-attention and a GELU MLP (smooth, so twice
  differentiable everywhere)."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[batch, length, width]`."""
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    x = x + nn.SelfAttention(self.num_heads)(nn.LayerNorm()(x), mask=mask)
    h = nn.gelu(nn.Dense(4 * x.shape[-1])(nn.LayerNorm()(x)))
    return x + nn.Dense(x.shape[-1])(h)


class TinyTransformerLM(nn.Module):
  """A decoder-only LM: token + learned position embeddings, causal blocks, untied head."""
  vocab_size: int = len(ALPHABET)
  max_length: int = 32
  width: int = 32
  num_heads: int = 2
  num_layers: int = 1

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.width)
    # As large as the token embeddings (std 1/sqrt(width)): with GPT's 0.02 an untrained model
    # barely sees order, and the attack finds the right characters in the wrong places.
    self.position = self.param("position", nn.initializers.normal(self.width ** -0.5),
                               (self.max_length, self.width))
    self.blocks = [CausalBlock(self.num_heads) for _ in range(self.num_layers)]
    self.final_norm = nn.LayerNorm()
    self.head = nn.Dense(self.vocab_size)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens: `[batch, length]` int -> logits `[batch, length, vocab]`."""
    return self.from_embeddings(self.embed(tokens))

  def from_embeddings(self, embeddings: jax.Array) -> jax.Array:
    """embeddings: `[batch, length, width]` -> logits `[batch, length, vocab]`."""
    x = embeddings + self.position[:embeddings.shape[1]]
    for block in self.blocks:
      x = block(x)
    return self.head(self.final_norm(x))


def _next_token_loss(logits: jax.Array, soft_targets: jax.Array) -> jax.Array:
  """Mean over positions of `Σ_v -y_v log softmax(logits)_v`; shapes `[length, vocab]`."""
  return jnp.mean(jnp.sum(-soft_targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def _without_embedding(tree):
  return {k: v for k, v in tree.items() if k != "embed"}


def sequence_gradient(model: TinyTransformerLM, params, tokens: jax.Array):
  """The shared gradient of the next-token loss on one sequence `tokens [length]`."""
  def loss(p):
    logits = model.apply({"params": p}, tokens[None, :-1])[0]
    return _next_token_loss(logits, jax.nn.one_hot(tokens[1:], model.vocab_size))
  return jax.grad(loss)(params)


def nearest_tokens(embeddings: jax.Array, table: jax.Array) -> jax.Array:
  """Row index of the closest (L2) table entry for each embedding: `[n, w], [V, w] -> [n]`."""
  distances = (jnp.sum(embeddings ** 2, -1)[:, None] - 2 * embeddings @ table.T
               + jnp.sum(table ** 2, -1)[None, :])
  return jnp.argmin(distances, axis=-1)


def text_attack(model: TinyTransformerLM, params, observed_grads, length: int, key: jax.Array,
                config: lbfgs.LBFGSConfig = lbfgs.LBFGSConfig()) -> AttackResult:
  """DLG on text: recovers a `length`-token sequence from its LM gradient.

  Returns an `AttackResult` whose `labels [length]` is the decoded sequence: positions
  `0..length-2` from the nearest embeddings, the last one from the recovered soft label (it is
  never an input). `images` holds the optimised embeddings `[length-1, width]`.
  """
  if jax.tree_util.tree_structure(observed_grads) != jax.tree_util.tree_structure(params):
    raise UserError("the observed gradient does not match the language model's parameters.")
  if not 2 <= length <= model.max_length:
    raise UserError(f"length must be in [2, {model.max_length}], not {length}.")
  dummy = {"embeddings": jnp.zeros((length - 1, model.width)),
           "label_logits": jnp.zeros((length - 1, model.vocab_size))}
  flat, unravel = ravel_pytree(dummy)
  target = _without_embedding(observed_grads)

  def cost(z):
    variables = unravel(z)
    def loss(p):
      logits = model.apply({"params": p}, variables["embeddings"][None],
                           method=TinyTransformerLM.from_embeddings)[0]
      return _next_token_loss(logits, jax.nn.softmax(variables["label_logits"], axis=-1))
    return l2_distance(_without_embedding(jax.grad(loss)(params)), target)

  def init_fn(k):
    return jax.random.normal(k, flat.shape, flat.dtype)

  state, losses, _ = lbfgs.minimize(cost, init_fn, key, config)
  best = unravel(state.best_x)
  inputs = nearest_tokens(best["embeddings"], params["embed"]["embedding"])
  last = jnp.argmax(best["label_logits"][-1])
  tokens = jnp.concatenate([inputs, last[None]])
  return AttackResult(images=best["embeddings"], labels=tokens, gradient_loss=state.best_loss,
                      losses=losses, snapshots=jnp.zeros((0,)), restarts=state.restarts)


def token_accuracy(tokens: jax.Array, true_tokens: jax.Array) -> jax.Array:
  """Fraction of positions recovered exactly."""
  return jnp.mean(tokens == true_tokens)
