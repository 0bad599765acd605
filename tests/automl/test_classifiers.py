"""The design-automation classifiers against the published sizes and the reference layer orders.

The big models are only traced (`jax.eval_shape`, `jax.make_jaxpr`), never compiled; the tiny
one runs eagerly on two 32x32 images.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.automl import classifiers
from lite_jax.automl.classifiers import (MobileNetV1, MobileNetV2, ResNet50, TinyMobileNetV2,
                                         build_classifier, profile_classifier)
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import list_layers

IMAGES_224 = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


@functools.cache
def _layers(model, images=IMAGES_224):
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return list_layers(model, variables, images)


@pytest.mark.parametrize("name, params, macs, layers", [
    ("mobilenet_v2", 3.50e6, 300e6, 53),  # MobileNetV2 paper; torchvision.
    ("mobilenet_v1", 4.23e6, 569e6, 28),  # MobileNetV1 paper, 1.0 MobileNet-224.
    ("resnet50", 25.6e6, 4.1e9, 54),  # torchvision ResNet-50 (v1.5).
])
def test_published_params_and_macs_at_224(name, params, macs, layers):
  profile = profile_classifier(build_classifier(name, num_classes=1000), 224)
  assert profile["params"] == pytest.approx(params, rel=0.01)
  assert profile["macs"] == pytest.approx(macs, rel=0.01)
  assert profile["quantizable_layers"] == layers


def test_mobilenet_v2_has_haq_layer_order():
  layers = _layers(MobileNetV2())
  # HAQ's latency table has one row per quantizable layer: [53, 8, 8].
  assert len(layers) == 53
  repeats = [1, 2, 3, 4, 3, 3, 1]
  outputs = [16, 24, 32, 64, 96, 160, 320]
  expected = ["stem/conv"]
  for block in range(sum(repeats)):
    if block > 0:  # The first block's expansion ratio is 1: no expand conv.
      expected.append(f"blocks_{block}/expand/conv")
    expected += [f"blocks_{block}/depthwise/conv", f"blocks_{block}/project/conv"]
  expected += ["head/conv", "classifier"]
  assert [layer.path for layer in layers] == expected

  first, last = layers[0], layers[-1]
  assert (first.kind, first.c_in, first.c_out, first.kernel, first.stride) == (
      "conv", 3, 32, 3, 2)
  assert (last.kind, last.c_in, last.c_out) == ("dense", 1280, 1000)
  assert (layers[-2].c_in, layers[-2].c_out, layers[-2].out_hw) == (320, 1280, 7 * 7)
  projections = [layer.c_out for layer in layers if layer.path.endswith("project/conv")]
  assert projections == [c for c, n in zip(outputs, repeats) for _ in range(n)]


def test_depthwise_flags():
  dw_v2 = [layer for layer in _layers(MobileNetV2()) if layer.depthwise]
  assert [layer.path for layer in dw_v2] == [f"blocks_{i}/depthwise/conv" for i in range(17)]
  assert all(layer.kernel == 3 and layer.groups == layer.c_in for layer in dw_v2)
  assert [layer.stride for layer in dw_v2] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]

  v1 = _layers(MobileNetV1())
  dw_v1 = [layer for layer in v1 if layer.depthwise]
  assert len(dw_v1) == 13 and all(v1[layer.index + 1].kernel == 1 for layer in dw_v1)
  assert [layer.stride for layer in dw_v1] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
  assert [v1[layer.index + 1].c_out for layer in dw_v1] == (
      [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024])
  assert v1[0].path == "stem/conv" and not v1[0].depthwise


def test_resnet50_is_v1_5():
  layers = {layer.path: layer for layer in _layers(ResNet50())}
  order = [path for path in layers if path.startswith("layer2_0/")]
  assert order == [f"layer2_0/{name}/conv" for name in ("conv1", "conv2", "conv3", "downsample")]
  assert layers["layer2_0/conv1/conv"].stride == 1
  assert layers["layer2_0/conv2/conv"].stride == 2
  assert layers["layer2_0/downsample/conv"].stride == 2
  assert (layers["stem/conv"].kernel, layers["stem/conv"].stride) == (7, 2)
  assert layers["layer1_0/conv1/conv"].in_hw == 56 * 56  # After the stride-2 max pool.


def test_width_multiplier():
  for model in (MobileNetV1, MobileNetV2):
    full, half = _layers(model()), _layers(model(width=0.5))
    assert sum(layer.macs for layer in half) < 0.4 * sum(layer.macs for layer in full)
    assert len(half) == len(full)
    if model is MobileNetV2:
      # HAQ's rounding: blocks ceil(c * width / 8) * 8, the stem and the head stay unscaled.
      assert half[0].c_out == 32 and half[-2].c_out == 1280
      assert [layer.c_out for layer in half if layer.path.endswith("project/conv")][:4] == [
          8, 16, 16, 16]
  assert MobileNetV2(width=1.4).head_channels() == 1792  # Scaled above 1: 1280 * 1.4.


def test_mobilenet_v1_takes_amc_exported_channels():
  amc_half_flops = (24, 48, 96, 80, 192, 200, 328, 352, 368, 360, 328, 400, 736, 752)
  layers = _layers(MobileNetV1(channels=amc_half_flops))
  assert [layer.c_out for layer in layers if layer.kind == "conv" and not layer.depthwise] == list(
      amc_half_flops)
  assert layers[-1].c_in == 752
  with pytest.raises(UserError, match="14 numbers"):
    _layers(MobileNetV1(channels=amc_half_flops[:-1]))


def test_signed_input_layers_follow_the_linear_bottlenecks():
  signed = MobileNetV2().signed_input_layers()
  paths = {layer.path: layer for layer in _layers(MobileNetV2())}
  # HAQ's half_wave=False: the expand 1x1 of the 16 expanding blocks and the head 1x1.
  assert signed == {f"blocks_{i}/expand/conv" for i in range(1, 17)} | {"head/conv"}
  assert all(paths[path].kernel == 1 and not paths[path].depthwise for path in signed)
  assert MobileNetV1().signed_input_layers() == ResNet50().signed_input_layers() == frozenset()


@pytest.fixture(scope="module")
def tiny_run():
  """The tiny model's variables, images and one jitted training-mode forward pass that also
  returns the smallest input value of every conv and dense layer."""
  model = TinyMobileNetV2()
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)

  def forward(variables, images):
    minima = {}

    def record(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
        minima["/".join(context.module.path)] = jnp.min(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return logits, updates, minima

  return model, variables, images, jax.jit(forward)(variables, images)


def test_signed_input_layers_match_observed_input_signs(tiny_run):
  model, _, _, (_, _, minima) = tiny_run
  minima = dict(minima)
  del minima["stem/conv"]  # Reads the images.
  observed = {path for path, minimum in minima.items() if minimum < 0}
  assert observed == model.signed_input_layers()
  assert len(observed) == 4  # Three expanding blocks and the head.


def test_tiny_model_forward_and_batch_norm_modes(tiny_run):
  model, variables, images, (logits, updates, _) = tiny_run
  assert 10 <= profile_classifier(model, 32)["quantizable_layers"] <= 15
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  old = variables["batch_stats"]["stem"]["bn"]["mean"]
  assert not np.allclose(updates["batch_stats"]["stem"]["bn"]["mean"], old)
  # Evaluation uses the running statistics: an image's logits ignore the rest of the batch
  # (in training mode they do not).
  evaluate = jax.jit(model.apply)
  other = images.at[1].set(-images[1])
  np.testing.assert_allclose(evaluate(variables, images)[0], evaluate(variables, other)[0],
                             rtol=1e-5, atol=1e-5)


def test_dtypes():
  model = build_classifier("mobilenet_v2", num_classes=10, width=0.5, dtype=jnp.bfloat16,
                           param_dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.bfloat16)}
  jaxpr = jax.make_jaxpr(model.apply)(variables, images)
  convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
  assert convs and all(e.outvars[0].aval.dtype == jnp.bfloat16 for e in convs)
  assert [out.dtype for out in jaxpr.out_avals] == [jnp.float32]


def test_user_errors():
  with pytest.raises(UserError) as error:
    build_classifier("mobilenet_v3", num_classes=10)
  for name in classifiers.CLASSIFIERS:
    assert name in str(error.value)
  with pytest.raises(UserError, match="width"):
    build_classifier("resnet50", num_classes=10, width=0.0)
  with pytest.raises(UserError, match=r"\[batch, height, width, channels\]"):
    TinyMobileNetV2().init(jax.random.key(0), jnp.zeros((32, 32, 3)))
  with pytest.raises(UserError, match="image_size"):
    profile_classifier(TinyMobileNetV2(), 0)


def test_plain_cnn_and_explicit_widths_for_pruned_models():
  # By hand: 3x3 convs 3->32 (16x16 out), 32->64 (16x16), 64->64 (8x8), 64->128 (8x8),
  # 128->128 (4x4), FC 128->10; BatchNorm scale + bias per channel.
  macs = (27 * 32 * 256 + 288 * 64 * 256 + 576 * 64 * 64 + 576 * 128 * 64 + 1152 * 128 * 16
          + 128 * 10)
  params = (27 * 32 + 288 * 64 + 576 * 64 + 576 * 128 + 1152 * 128 + 2 * (32 + 64 + 64 + 128
                                                                            + 128) + 1290)
  profile = profile_classifier(build_classifier("plain_cnn", num_classes=10), 32)
  assert profile == {"params": params, "macs": macs, "quantizable_layers": 6}
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  pruned = _layers(MobileNetV2(num_classes=10, hidden_channels=(32,) + (40,) * 16), images)
  assert [l.c_out for l in pruned if l.path == "blocks_3/expand/conv"] == [40]
  pruned = _layers(ResNet50(num_classes=10, inner_channels=((8, 16),) * 16), images)
  assert [(l.c_in, l.c_out) for l in pruned if l.path.startswith("layer1_0/conv")] == [
      (64, 8), (8, 16), (16, 256)]
  with pytest.raises(UserError, match="one width per block"):
    _layers(MobileNetV2(num_classes=10, hidden_channels=(32,)), images)
  with pytest.raises(UserError, match="16 bottlenecks"):
    _layers(ResNet50(num_classes=10, inner_channels=((8, 8),)), images)
