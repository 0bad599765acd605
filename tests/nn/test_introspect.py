"""list_layers: every LayerInfo field of a tiny model against hand counts."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lite_jax.nn.introspect import LayerInfo, list_layers


class _Block(nn.Module):

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(8, (3, 3), padding="SAME", feature_group_count=8, name="dw")(x)


class _Tiny(nn.Module):
  """Strided conv -> BatchNorm (needs `train`) -> depthwise conv -> pool -> dense."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(8, (3, 3), strides=2, padding="SAME", use_bias=False, name="stem")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = _Block(name="block")(x)
    return nn.Dense(5, name="head")(x.mean(axis=(1, 2)))


class _Sequence(nn.Module):
  """A 1-D conv with an int kernel size, and one dense layer called twice on [b, L, F]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(4, kernel_size=3, padding="VALID", name="conv1d")(x)
    dense = nn.Dense(4, name="shared")
    return dense(dense(x))


@pytest.fixture(scope="module")
def tiny_layers():
  model = _Tiny()
  x = jnp.zeros((2, 8, 8, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  return list_layers(model, variables, x, train=False)


def test_every_field_of_a_strided_conv_a_depthwise_conv_and_a_dense(tiny_layers):
  # stem: 3x3x3x8 = 216 weights, 8x8 -> 4x4 at stride 2; dw: 3x3x1x8 = 72 weights on 4x4.
  assert tiny_layers == [
      LayerInfo("stem", "conv", 3, 8, 3, 2, 1, 64, 16, 216, 216 * 16, 0),
      LayerInfo("block/dw", "conv", 8, 8, 3, 1, 8, 16, 16, 72, 72 * 16, 1),
      LayerInfo("head", "dense", 8, 5, 1, 0, 1, 1, 1, 40, 40, 2),
  ]
  assert [layer.depthwise for layer in tiny_layers] == [False, True, False]


def test_int_kernel_size_sequence_inputs_and_repeated_calls():
  model = _Sequence()
  x = jnp.zeros((2, 10, 2))
  variables = model.init(jax.random.key(0), x)
  layers = list_layers(model, variables, x)
  # conv1d: 3*2*4 = 24 weights, length 10 -> 8; the dense runs on 8 positions, twice.
  assert layers == [
      LayerInfo("conv1d", "conv", 2, 4, 3, 1, 1, 10, 8, 24, 24 * 8, 0),
      LayerInfo("shared", "dense", 4, 4, 1, 0, 1, 1, 1, 16, 16 * 8, 1),
      LayerInfo("shared", "dense", 4, 4, 1, 0, 1, 1, 1, 16, 16 * 8, 2),
  ]
