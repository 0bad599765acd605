"""DLG on a BERT-like masked language model: a word-piece sentence from its MLM gradient.

The DLG paper's text experiment: a client computes BERT's masked-LM loss on one sentence
(some pieces replaced by `[MASK]`, the loss is the cross-entropy of the original pieces at
those positions) and shares `∇θ`. The attacker knows the sentence length and which positions
were masked (the masking is part of the training protocol), not the pieces. It optimises

  * input embeddings `e' [length, width]` at the unmasked positions (the masked ones hold the
    known `[MASK]` embedding), and
  * soft labels `softmax(y') [num_masked, vocab]` at the masked positions,

with DLG's squared-L2 gradient matching and L-BFGS (`lbfgs.py`), then reads the sentence back:
each optimised embedding decodes to its nearest row of the token-embedding table, each masked
position to its label's argmax. That finds the right pieces but often in a wrong order (a
local minimum of the relaxation), so `discrete_search` then swaps and substitutes pieces while
the exact gradient distance of the discrete sentence drops (`search_rounds=0`: plain DLG).

Two details make the decoding well-posed:
  * the embedding LayerNorm is invariant to adding a constant to every feature of `e' + p`,
    so the gradient cannot pin the embedding's mean; the nearest row is found after removing
    each vector's mean (`nearest_tokens`);
  * the token-embedding table's own gradient is left out of the match: the dummy embeddings
    enter after the lookup, so its dummy gradient is zero by construction (the real one's
    non-zero rows would give the bag of pieces away, a stronger attack than DLG's). For the
    same reason the MLM output layer is not tied to the input table (BERT ties them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lite_jax.core.errors import UserError
from lite_jax.leakage import lbfgs
from lite_jax.leakage.attacks import l2_distance

# Ids below this are the tokenizer's specials (pad, bos, eos, unk: `data.tokenizer`); the
# attacker never decodes to them or to `[MASK]`.
NUM_SPECIAL = 4


class PostLNBlock(nn.Module):
  """BERT's encoder layer: `LN(x + attention(x))`, then `LN(x + MLP(x))` with a GELU MLP
  (smooth, so the gradient-matching loss is twice differentiable)."""
  num_heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[batch, length, width]` -> same."""
    x = nn.LayerNorm(epsilon=1e-12)(x + nn.SelfAttention(self.num_heads)(x))
    h = nn.gelu(nn.Dense(self.mlp_ratio * x.shape[-1])(x), approximate=False)
    return nn.LayerNorm(epsilon=1e-12)(x + nn.Dense(x.shape[-1])(h))


class BertMLM(nn.Module):
  """A BERT-like masked LM: token + learned position embeddings, embedding LayerNorm,
  `num_layers` post-LN encoder layers, and BERT's MLM head (dense, GELU, LayerNorm, decoder)
  evaluated only at the masked positions.

  `vocab_size` counts the tokenizer's pieces; `[MASK]` is the extra id `vocab_size`. Weights
  use Flax's default scales (std ~1/sqrt(fan_in)) rather than BERT's 0.02: at 0.02 an
  untrained model's attention is uniform, and its output barely depends on word order.
  """
  vocab_size: int
  max_length: int = 32
  width: int = 128
  num_heads: int = 4
  num_layers: int = 2

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  def setup(self):
    self.token_embed = nn.Embed(self.vocab_size + 1, self.width)
    self.position = self.param("position", nn.initializers.normal(self.width ** -0.5),
                               (self.max_length, self.width))
    self.embed_norm = nn.LayerNorm(epsilon=1e-12)
    self.blocks = [PostLNBlock(self.num_heads) for _ in range(self.num_layers)]
    self.head_dense = nn.Dense(self.width)
    self.head_norm = nn.LayerNorm(epsilon=1e-12)
    self.decoder = nn.Dense(self.vocab_size)

  def __call__(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """tokens: `[batch, length]` int (masked already); positions: `[batch, num_masked]` int
    -> logits `[batch, num_masked, vocab]`."""
    return self.from_embeddings(self.token_embed(tokens), positions)

  def from_embeddings(self, embeddings: jax.Array, positions: jax.Array) -> jax.Array:
    """embeddings: `[batch, length, width]`; positions: `[batch, num_masked]` -> logits
    `[batch, num_masked, vocab]`."""
    x = self.embed_norm(embeddings + self.position[:embeddings.shape[1]])
    for block in self.blocks:
      x = block(x)
    x = jnp.take_along_axis(x, positions[..., None], axis=1)
    return self.decoder(self.head_norm(nn.gelu(self.head_dense(x), approximate=False)))


def mask_tokens(model: BertMLM, tokens: jax.Array, positions: jax.Array) -> jax.Array:
  """`tokens [length]` with `[MASK]` at `positions [num_masked]`."""
  return tokens.at[positions].set(model.mask_id)


def mlm_loss(logits: jax.Array, soft_targets: jax.Array) -> jax.Array:
  """Mean over masked positions of `Σ_v -y_v log softmax(logits)_v`; both `[num_masked, V]`."""
  return jnp.mean(jnp.sum(-soft_targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def _without_token_table(tree: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in tree.items() if k != "token_embed"}


def mlm_gradient(model: BertMLM, params, tokens: jax.Array, positions: jax.Array):
  """What the client shares: `∇θ` of the MLM loss on `tokens [length]` masked at
  `positions [num_masked]` (targets: the original pieces there)."""
  masked = mask_tokens(model, tokens, positions)

  def loss(p):
    logits = model.apply({"params": p}, masked[None], positions[None])[0]
    return mlm_loss(logits, jax.nn.one_hot(tokens[positions], model.vocab_size))
  return jax.grad(loss)(params)


def _token_distances(embeddings: jax.Array, table: jax.Array) -> jax.Array:
  """Squared L2 distances `[n, V]` (up to a per-row constant) between mean-removed vectors;
  rows below `NUM_SPECIAL` and `[MASK]` (the last row) are at infinity."""
  center = lambda v: v - jnp.mean(v, axis=-1, keepdims=True)
  e, t = center(embeddings), center(table)
  distances = jnp.sum(t ** 2, -1)[None, :] - 2 * e @ t.T
  rows = jnp.arange(table.shape[0])
  excluded = (rows < NUM_SPECIAL) | (rows == table.shape[0] - 1)
  return jnp.where(excluded[None, :], jnp.inf, distances)


def nearest_tokens(embeddings: jax.Array, table: jax.Array) -> jax.Array:
  """Index of the closest table row for each embedding, `[n, w], [V, w] -> [n]`: L2 after
  removing each vector's mean (the embedding LayerNorm makes the mean unidentifiable), never a
  special piece or `[MASK]`."""
  return jnp.argmin(_token_distances(embeddings, table), axis=-1)


def relaxed_distance(model: BertMLM, params, target, embeddings: jax.Array,
                     soft_labels: jax.Array, positions: jax.Array) -> jax.Array:
  """The gradient distance to `target` (the observed gradient without the token table) of
  continuous inputs: `embeddings [length, width]` (after the lookup; `[MASK]`'s where masked)
  and `soft_labels [num_masked, vocab]` at `positions [num_masked]`. DLG's cost."""
  def loss(p):
    logits = model.apply({"params": p}, embeddings[None], positions[None],
                         method=BertMLM.from_embeddings)[0]
    return mlm_loss(logits, soft_labels)
  return l2_distance(_without_token_table(jax.grad(loss)(params)), target)


def first_order_substitutions(model: BertMLM, params, target, tokens: jax.Array,
                              positions: jax.Array, count: int) -> jax.Array:
  """`[length, count]` pieces whose substitution lowers the distance most to first order.

  HotFlip's estimate: with `g` the gradient of `relaxed_distance` at the sentence's one-hot
  point, replacing the piece at an unmasked position i by v changes the distance by about
  `g_e[i]·(table[v] - table[t_i])`, at a masked position j (where only the label depends on
  the piece) by `g_y[j, v] - g_y[j, t_j]`. Scores all pieces with one gradient, so the search
  can reach pieces that are far from the continuous optimum. Never the current piece or a
  special one.
  """
  table = params["token_embed"]["embedding"]
  embeddings = table[mask_tokens(model, tokens, positions)]
  labels = jax.nn.one_hot(tokens[positions], model.vocab_size)
  g_e, g_y = jax.grad(lambda e, y: relaxed_distance(model, params, target, e, y, positions),
                      argnums=(0, 1))(embeddings, labels)
  change = g_e @ table[:model.vocab_size].T - jnp.sum(g_e * embeddings, -1, keepdims=True)
  change = change.at[positions].set(g_y - jnp.take_along_axis(g_y, tokens[positions][:, None],
                                                               axis=1))
  rows = jnp.arange(tokens.shape[0])
  change = change.at[:, :NUM_SPECIAL].set(jnp.inf).at[rows, tokens].set(jnp.inf)
  return jnp.argsort(change, axis=-1)[:, :count]


def sentence_distance(model: BertMLM, params, target, tokens: jax.Array,
                      positions: jax.Array) -> jax.Array:
  """The gradient distance of a candidate sentence `tokens [length]` (masked at `positions`,
  one-hot targets) to `target` (the observed gradient without the token table)."""
  return l2_distance(_without_token_table(mlm_gradient(model, params, tokens, positions)),
                     target)


def discrete_search(model: BertMLM, params, target, tokens: jax.Array, positions: jax.Array,
                    alternatives: jax.Array, rounds: int, chunk: int = 64
                    ) -> tuple[jax.Array, jax.Array]:
  """Greedy search over discrete sentences, scored by their exact gradient distance.

  Each round scores every swap of two positions and every substitution of one position by one
  of its `alternatives [length, k]` (the runner-up pieces of the continuous solution) or of
  the `k` best `first_order_substitutions` of the current sentence, and takes the best if it
  lowers the distance; it stops after `rounds` rounds or when nothing improves.
  Continuous DLG gets the bag of pieces right but often leaves them in a permuted order, a
  local minimum the relaxation cannot leave (the discrete step of LAMP, Balunović et al. 2022).

  Returns `(tokens [length], distance)`.
  """
  length, k = alternatives.shape
  first, second = np.triu_indices(length, 1)
  sub_pos = np.repeat(np.arange(length), 2 * k)
  distance = lambda t: sentence_distance(model, params, target, t, positions)

  def candidates(t):
    swapped = jnp.tile(t, (len(first), 1))
    rows = jnp.arange(len(first))
    swapped = swapped.at[rows, first].set(t[second]).at[rows, second].set(t[first])
    pieces = jnp.concatenate([alternatives, first_order_substitutions(
        model, params, target, t, positions, k)], axis=1)
    substituted = jnp.tile(t, (2 * length * k, 1)).at[jnp.arange(2 * length * k),
                                                      sub_pos].set(pieces.reshape(-1))
    return jnp.concatenate([swapped, substituted])

  def body(carry):
    t, best, count, _ = carry
    options = candidates(t)
    scores = jax.lax.map(distance, options, batch_size=chunk)
    i = jnp.argmin(scores)
    better = scores[i] < best
    return (jnp.where(better, options[i], t), jnp.where(better, scores[i], best), count + 1,
            better)

  def not_done(carry):
    return (carry[2] < rounds) & carry[3]

  t, best, _, _ = jax.lax.while_loop(not_done, body, (tokens, distance(tokens),
                                                      jnp.zeros((), jnp.int32),
                                                      jnp.ones((), bool)))
  return t, best


class TextAttackResult(flax.struct.PyTreeNode):
  """What the text attack recovered (leading `vmap` axes, if any, come first).

  Attributes:
    tokens: `[length]` int, the recovered sentence (after the discrete search).
    relaxed_tokens: `[length]` int, the continuous optimum decoded (plain DLG's answer).
    embeddings: `[length, width]`, the optimised input embeddings (`[MASK]`'s where masked).
    gradient_loss: scalar, the continuous optimum's gradient distance.
    sentence_distance: scalar, `tokens`' own gradient distance (0 for the true sentence).
    losses: `[steps]` the continuous cost after each L-BFGS outer step.
    restarts: scalar int, L-BFGS restarts.
  """
  tokens: jax.Array
  relaxed_tokens: jax.Array
  embeddings: jax.Array
  gradient_loss: jax.Array
  sentence_distance: jax.Array
  losses: jax.Array
  restarts: jax.Array


def bert_attack(model: BertMLM, params, observed_grads, length: int, positions: jax.Array,
                key: jax.Array, config: lbfgs.LBFGSConfig = lbfgs.LBFGSConfig(),
                search_rounds: int = 0, alternatives: int = 4) -> TextAttackResult:
  """DLG on the masked LM: recovers a `length`-piece sentence from its MLM gradient.

  Args:
    observed_grads: the shared gradient (a pytree like `params`).
    length: pieces in the sentence (known to the attacker, like DLG's image shape).
    positions: `[num_masked]` int, the masked positions (known to the attacker).
    config: the L-BFGS run on the continuous relaxation (DLG).
    search_rounds: rounds of `discrete_search` after it; 0 is plain DLG.
    alternatives: runner-up pieces per position that the search may substitute, and as many
      first-order candidates per position and round.
  Returns a `TextAttackResult`: `relaxed_tokens` decodes the continuous optimum (masked
  positions from the soft labels' argmax, the rest from the nearest embeddings), `tokens` is
  that after the search.
  """
  if jax.tree_util.tree_structure(observed_grads) != jax.tree_util.tree_structure(params):
    raise UserError("the observed gradient does not match the masked LM's parameters.")
  if not 1 <= length <= model.max_length:
    raise UserError(f"length must be in [1, {model.max_length}], not {length}.")
  if positions.ndim != 1 or not 1 <= positions.shape[0] <= length:
    raise UserError(f"positions must be [num_masked] with 1 <= num_masked <= {length}, "
                    f"not shape {positions.shape}.")
  table = params["token_embed"]["embedding"]
  is_masked = jnp.zeros((length,), bool).at[positions].set(True)
  dummy = {"embeddings": jnp.zeros((length, model.width)),
           "label_logits": jnp.zeros((positions.shape[0], model.vocab_size))}
  flat, unravel = ravel_pytree(dummy)
  target = _without_token_table(observed_grads)

  def inputs(embeddings):
    # The masked positions hold the known [MASK] embedding, not a free variable.
    return jnp.where(is_masked[:, None], table[model.mask_id], embeddings)

  def cost(z):
    variables = unravel(z)
    return relaxed_distance(model, params, target, inputs(variables["embeddings"]),
                            jax.nn.softmax(variables["label_logits"], axis=-1), positions)

  # DLG's N(0, 1) start for the label logits; the embeddings start at the table's scale, so
  # that the position embeddings weigh in the sum `e' + p` as much as they do for real pieces.
  scale = ravel_pytree({"embeddings": jnp.full((length, model.width), jnp.std(table)),
                        "label_logits": jnp.ones((positions.shape[0], model.vocab_size))})[0]

  def init_fn(k):
    return scale * jax.random.normal(k, flat.shape, flat.dtype)

  state, losses, _ = lbfgs.minimize(cost, init_fn, key, config)
  best = unravel(state.best_x)
  # Lowest score first: embedding distances at unmasked positions, -logits at masked ones.
  scores = _token_distances(best["embeddings"], table)[:, :model.vocab_size]
  special = jnp.arange(model.vocab_size) < NUM_SPECIAL
  scores = scores.at[positions].set(jnp.where(special, jnp.inf, -best["label_logits"]))
  ranked = jnp.argsort(scores, axis=-1)[:, :alternatives + 1]
  tokens, distance = discrete_search(model, params, target, ranked[:, 0], positions,
                                     ranked[:, 1:], search_rounds)
  return TextAttackResult(tokens=tokens, relaxed_tokens=ranked[:, 0],
                          embeddings=inputs(best["embeddings"]), gradient_loss=state.best_loss,
                          sentence_distance=distance, losses=losses, restarts=state.restarts)


def choose_masked_positions(key: jax.Array, length: int, num_masked: int) -> jax.Array:
  """`num_masked` distinct positions in `[0, length)`, sorted (BERT masks 15% of pieces)."""
  return jnp.sort(jax.random.permutation(key, length)[:num_masked])
