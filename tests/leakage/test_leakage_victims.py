"""Victim models: the reference LeNet's shape facts, init, padding, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import leakage
from lite_jax.core import UserError, count_params


def _lenet(shape=(32, 32, 3), classes=100):
  return leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=shape,
                             num_classes=classes)


def test_lenet_matches_reference_parameter_count_and_flatten_widths():
  victim = _lenet()
  assert count_params(victim.params) == 85_036
  assert victim.params["classifier"]["kernel"].shape == (768, 100)
  assert _lenet((28, 28, 1), 10).params["classifier"]["kernel"].shape == (588, 10)


def test_lenet_init_is_uniform_half_for_weights_and_biases():
  leaves = jax.tree.leaves(_lenet().params)
  values = np.concatenate([np.ravel(x) for x in leaves])
  assert values.min() >= -0.5 and values.max() <= 0.5
  assert values.min() < -0.49 and values.max() > 0.49
  assert all(np.abs(np.asarray(x)).max() > 0.3 for x in leaves)  # Biases too, not zeros.


def test_first_conv_uses_pytorch_padding():
  """Stride-2 k5 conv with 2 pixels of zero padding on every side, against a numpy loop."""
  victim = _lenet((8, 8, 3), 10)
  x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  kernel = np.asarray(victim.params["Conv_0"]["kernel"])  # [5, 5, in, out]
  bias = np.asarray(victim.params["Conv_0"]["bias"])
  padded = np.pad(x[0], ((2, 2), (2, 2), (0, 0)))
  expected = np.zeros((4, 4, 12), np.float32)
  for i in range(4):
    for j in range(4):
      patch = padded[2 * i:2 * i + 5, 2 * j:2 * j + 5]
      expected[i, j] = np.einsum("hwc,hwco->o", patch, kernel) + bias
  _, state = leakage.LeNet(num_classes=10).apply(
      {"params": victim.params}, jnp.asarray(x), capture_intermediates=True,
      mutable=["intermediates"])
  got = state["intermediates"]["Conv_0"]["__call__"][0][0]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # And the full model: the 8x8 input gives a 2x2x12 = 48-wide flatten.
  assert victim.params["classifier"]["kernel"].shape == (48, 10)


def test_soft_cross_entropy_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  labels = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = np.mean(np.sum(-labels * log_p, -1))
  assert float(leakage.soft_cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_user_module_and_sigmoid_resnet_give_gradients_of_their_params():
  victim = leakage.make_victim("resnet", jax.random.PRNGKey(0), input_shape=(8, 8, 3),
                               num_classes=10)
  x = jnp.ones((2, 8, 8, 3))
  grads = jax.jit(victim.gradient)(x, victim.one_hot(jnp.array([1, 2])))
  assert jax.tree.structure(grads) == jax.tree.structure(victim.params)
  custom = leakage.Victim.from_module(leakage.MLP(num_classes=3, hidden=(4,)),
                                      jax.random.PRNGKey(0), (2, 2, 1), 3)
  assert custom.apply_fn(custom.params, jnp.ones((5, 2, 2, 1))).shape == (5, 3)


def test_bad_inputs_are_one_clear_user_error():
  victim = _lenet()
  with pytest.raises(UserError, match=r"victim takes \[batch, 32, 32, 3\]"):
    victim.check_inputs(np.zeros((1, 28, 28, 1)))
  grads = victim.gradient(jnp.zeros((1, 32, 32, 3)), victim.one_hot(jnp.array([0])))
  with pytest.raises(UserError, match="does not match the model"):
    victim.check_gradient({"classifier": grads["classifier"]})
  wrong = jax.tree.map(lambda g: g, grads)
  wrong["classifier"]["bias"] = jnp.zeros(10)
  with pytest.raises(UserError, match="has shape"):
    victim.check_gradient(wrong)
  bad = jax.tree.map(lambda g: g, grads)
  bad["Conv_0"]["bias"] = bad["Conv_0"]["bias"].at[0].set(jnp.nan)
  with pytest.raises(UserError, match="NaN or inf"):
    leakage.dlg(victim, bad, jax.random.PRNGKey(0))
