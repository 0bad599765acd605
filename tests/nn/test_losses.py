"""lite_jax.nn.losses against optax's label smoothing and a numpy log-softmax."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lite_jax.nn import losses


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mean_cross_entropy_equals_optax_smoothed_targets(smoothing):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(6, 5)) * 3, jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, 6))
  targets = optax.smooth_labels(np.eye(5)[np.asarray(labels)], smoothing)
  expected = optax.softmax_cross_entropy(logits, targets).mean()
  np.testing.assert_allclose(losses.mean_cross_entropy(logits, labels, smoothing), expected,
                             rtol=1e-6)


def test_smoothed_cross_entropy_sums_weighted_positions():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 4))
  targets = rng.integers(0, 4, (2, 3))
  weights = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  loss, nll_sum = losses.smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                                jnp.asarray(weights), 0.2)
  np.testing.assert_allclose(nll_sum, (nll * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(loss, ((0.8 * nll - 0.2 * log_p.mean(-1)) * weights).sum(),
                             rtol=1e-5)
