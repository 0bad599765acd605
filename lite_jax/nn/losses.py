"""Losses shared across papers."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smoothed_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                           label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """fairseq's label-smoothed cross-entropy, summed over weighted positions.

  Args:
    logits: `[..., vocab]` unnormalised scores (any float dtype; computed in f32).
    targets: `[...]` int ids.
    weights: `[...]` 0/1 (or fractional) weight per position; padding has weight 0.
    label_smoothing: epsilon; the loss is `(1 - eps) * nll + eps / V * sum_v(-log p_v)`.

  Returns:
    `(loss_sum, nll_sum)`: smoothed loss and plain negative log-likelihood, both summed.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  smooth = -jnp.mean(log_probs, axis=-1)
  loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
  return jnp.sum(loss * weights), jnp.sum(nll * weights)


def mean_cross_entropy(logits: jax.Array, labels: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
  """The classifiers' loss: `smoothed_cross_entropy` averaged over a batch.

  logits: `[batch, classes]`, labels: `[batch]` int; smoothing spreads `label_smoothing` of the
  target mass uniformly over the classes (optax's `smooth_labels`, Inception-v3's form).
  """
  loss, _ = smoothed_cross_entropy(logits, labels, jnp.ones(labels.shape, jnp.float32),
                                   label_smoothing)
  return loss / labels.size
