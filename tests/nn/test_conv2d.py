"""The tap-sum 2-D convolution against a numpy loop and XLA's conv; the GAN layer that picks it."""

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import core, nn
from lite_jax.gan_compression import layers


def _numpy_conv(x, kernel):
  k = kernel.shape[0]
  out = np.zeros((x.shape[0], x.shape[1] - k + 1, x.shape[2] - k + 1, kernel.shape[-1]))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      out[:, i, j] = np.einsum("bhwc,hwco->bo", x[:, i:i + k, j:j + k], kernel)
  return out


@pytest.mark.parametrize("size,channels,out", [(3, 5, 2), (7, 16, 3)])
def test_tap_sum_equals_numpy_and_xla_conv_with_gradients(size, channels, out):
  rng = np.random.default_rng(size)
  x = rng.normal(size=(2, 11, 9, channels)).astype(np.float32)
  kernel = rng.normal(size=(size, size, channels, out)).astype(np.float32)
  np.testing.assert_allclose(nn.tap_sum_conv2d(x, kernel), _numpy_conv(x, kernel), atol=1e-4)
  xla = lambda a, k: jax.lax.conv_general_dilated(a, k, (1, 1), "VALID",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  loss = lambda f: jax.grad(lambda a, k: jnp.sum(jnp.sin(f(a, k))), argnums=(0, 1))(x, kernel)
  for ours, theirs in zip(loss(nn.tap_sum_conv2d), loss(xla)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  # Charged like the convolution, under every convention (it is not a depthwise conv).
  for convention in (core.macs.MATMUL_AND_CONV, core.macs.LITE_TRANSFORMER):
    assert core.count_macs(nn.tap_sum_conv2d, x, kernel, convention=convention) == (
        2 * (12 - size) * (10 - size) * out * size * size * channels)


def test_tap_sum_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match=r"square kernel \[k, k, in, out\]"):
    nn.tap_sum_conv2d(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 5, 2)))


def test_gan_conv_takes_the_tap_sum_form_by_shape_with_nn_conv_parameters():
  """A 7x7 head with 3 outputs from 32 channels uses the tap sum; its parameter tree, init and
  outputs are `nn.Conv`'s; a wide conv keeps XLA's convolution."""
  x = jax.random.normal(jax.random.key(1), (2, 14, 12, 32))
  head = layers.Conv(3, 7)
  variables = head.init(jax.random.key(0), x)
  reference = flax.linen.Conv(3, (7, 7), padding="VALID", kernel_init=layers.weight_init)
  assert jax.tree.map(jnp.shape, variables["params"]["conv"]) == jax.tree.map(
      jnp.shape, reference.init(jax.random.key(0), x)["params"])
  params = {"kernel": variables["params"]["conv"]["kernel"], "bias": jnp.arange(3.0)}
  np.testing.assert_allclose(head.apply({"params": {"conv": params}}, x),
                             reference.apply({"params": params}, x), atol=1e-5)
  jaxpr = str(jax.make_jaxpr(head.apply)(variables, x))
  assert "tap_sum_conv2d" in jaxpr and "conv_general_dilated" not in jaxpr
  wide = layers.Conv(8, 7)
  assert "conv_general_dilated" in str(jax.make_jaxpr(wide.apply)(wide.init(jax.random.key(0), x),
                                                                   x))
