"""Depthwise 2-D convolution: the shifted-sum form against XLA's grouped conv and a numpy loop."""

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import core, nn
from lite_jax.core import macs
from lite_jax.nn import depthwise


@pytest.mark.parametrize("size", [3, 5])
def test_shifted_depthwise_equals_grouped_conv_and_numpy(size):
  rng = np.random.default_rng(size)
  x = rng.normal(size=(2, 9, 7, 4)).astype(np.float32)
  kernel = rng.normal(size=(size, size, 1, 4)).astype(np.float32)
  expected = np.zeros((2, 10 - size, 8 - size, 4), np.float32)
  for i in range(expected.shape[1]):
    for j in range(expected.shape[2]):
      expected[:, i, j] = np.einsum("bhwc,hwc->bc", x[:, i:i + size, j:j + size],
                                    kernel[:, :, 0])
  shifts = nn.depthwise_conv2d(x, kernel)
  np.testing.assert_allclose(shifts, expected, atol=1e-5)
  np.testing.assert_allclose(nn.depthwise_conv2d(x, kernel, impl="conv"), expected, atol=1e-5)
  grads = [jax.grad(lambda k, impl=impl: jnp.sum(nn.depthwise_conv2d(x, k, impl=impl) ** 2))(
      kernel) for impl in ("shifts", "conv")]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4)


def test_macs_charge_the_shifted_form_like_the_conv():
  x = jax.ShapeDtypeStruct((1, 10, 10, 8), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 1, 8), jnp.float32)
  shifted = core.count_macs(nn.depthwise_conv2d, x, kernel)
  conv = core.count_macs(lambda a, k: nn.depthwise_conv2d(a, k, impl="conv"), x, kernel)
  assert shifted == conv == 8 * 8 * 8 * 9
  assert core.count_macs(nn.depthwise_conv2d, x, kernel, convention=macs.LITE_TRANSFORMER) == 0


@pytest.mark.parametrize("stride", [1, 2])
def test_the_nn_conv_drop_in_matches_a_grouped_conv_and_counts_the_same_macs(stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 8))
  make = lambda **kw: flax.linen.Conv(8, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
                                      feature_group_count=8, **kw)
  grouped, shifted = make(), make(conv_general_dilated=depthwise.conv_general_dilated)
  variables = grouped.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(shifted.apply(variables, x), grouped.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  loss = lambda module: lambda v: jnp.sum(module.apply(v, x) ** 2)
  np.testing.assert_allclose(jax.grad(loss(shifted))(variables)["params"]["kernel"],
                             jax.grad(loss(grouped))(variables)["params"]["kernel"],
                             rtol=1e-4, atol=1e-4)
  assert core.count_macs(shifted.apply, variables, x) == core.count_macs(grouped.apply,
                                                                         variables, x)
