"""AMC's channel selection, im2col least-squares reconstruction and export, against numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from lite_jax.automl import classifiers, pruning, training
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import list_layers


def _conv_reference(x, kernel, stride, pad):
  """A plain numpy loop: y[b, i, j, o] = sum over the kxk window of x_pad * kernel."""
  k = kernel.shape[0]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h = (xp.shape[1] - k) // stride + 1
  out_w = (xp.shape[2] - k) // stride + 1
  y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      window = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      y[:, i, j] = np.einsum("bhwc,hwco->bo", window, kernel)
  return y


def test_im2col_rows_reproduce_a_strided_padded_conv():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 7, 5))
  kernel = rng.normal(size=(3, 3, 5, 4))
  y = _conv_reference(x, kernel, 2, 1)
  batch, rows, cols = rng.integers(0, 2, 20), rng.integers(0, 4, 20), rng.integers(0, 4, 20)
  patches = pruning.im2col_rows(x, rows, cols, batch, kernel=3, stride=2,
                                padding=((1, 1), (1, 1)))
  assert patches.shape == (20, 3, 3, 5)
  np.testing.assert_allclose(patches.reshape(20, -1) @ kernel.reshape(-1, 4),
                             y[batch, rows, cols], rtol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_reconstruct_equals_numpy_least_squares_on_the_kept_columns(k):
  rng = np.random.default_rng(k)
  c_in, c_out, keep = 6, 4, np.array([0, 2, 5])
  inputs = rng.normal(size=(200, k, k, c_in)).astype(np.float32)
  outputs = rng.normal(size=(200, c_out)).astype(np.float32)
  refit = pruning.reconstruct(pruning.Features(inputs, outputs), keep)
  assert refit.shape == (k, k, 3, c_out)
  # Independent design matrix: column (h, w, j) is patch[h, w, keep[j]].
  design = np.stack([inputs[:, h, w, j] for h in range(k) for w in range(k) for j in keep], 1)
  expected = np.linalg.lstsq(design.astype(np.float64), outputs.astype(np.float64),
                             rcond=None)[0]
  np.testing.assert_allclose(refit.reshape(-1, c_out), expected, rtol=1e-4, atol=1e-5)


def test_least_squares_residual_is_at_most_the_unrefit_pruned_weights():
  rng = np.random.default_rng(3)
  kernel = rng.normal(size=(3, 3, 8, 5)).astype(np.float32)
  # Correlated channels, so the refit can make up for the removed ones.
  base = rng.normal(size=(300, 3, 3, 4))
  inputs = np.concatenate([base, base + 0.3 * rng.normal(size=base.shape)], -1)
  inputs = inputs.astype(np.float32)
  outputs = inputs.reshape(300, -1) @ kernel.reshape(-1, 5)
  keep = pruning.select_channels(kernel, 4)
  features = pruning.Features(inputs, outputs)
  refit = pruning.reconstruct(features, keep)
  kept = inputs[..., keep].reshape(300, -1)
  residual = np.linalg.norm(kept @ refit.reshape(-1, 5) - outputs)
  unrefit = np.linalg.norm(kept @ kernel[:, :, keep].reshape(-1, 5) - outputs)
  assert residual <= unrefit and residual < 0.8 * unrefit


def test_selection_keeps_the_largest_l1_input_channels():
  kernel = np.zeros((1, 1, 5, 2))
  kernel[0, 0, :, 0] = [0.1, -3.0, 0.5, 2.0, -0.2]
  kernel[0, 0, :, 1] = [0.0, 0.0, 0.1, 0.0, 0.0]
  np.testing.assert_array_equal(pruning.select_channels(kernel, 2), [1, 3])
  np.testing.assert_allclose(pruning.channel_importance(kernel), [0.1, 3.0, 0.6, 2.0, 0.2])
  assert pruning.round_width(32, 0.5) == 16 and pruning.round_width(32, 0.51) == 24
  assert pruning.round_width(20, 0.99) == 20  # never more than the layer has


def _randomized(model, image_size, seed):
  """Variables with random BatchNorm statistics and affine terms (not the identity init)."""
  variables = training.init_variables(model, image_size, jax.random.key(seed))
  keys = iter(jax.random.split(jax.random.key(seed + 1), 10_000))

  def perturb(path, x):
    name = path[-1].key
    if name in ("var", "scale"):
      return jax.random.uniform(next(keys), x.shape, minval=0.5, maxval=1.5)
    if name in ("mean", "bias"):
      return 0.3 * jax.random.normal(next(keys), x.shape)
    return x
  return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.mark.parametrize("model, size", [
    (classifiers.PlainCNN(channels=(16, 24, 16), strides=(1, 2, 2)), 16),
], ids=["plain_cnn"])
def test_exported_model_equals_the_masked_model(model, size):
  images = jax.random.normal(jax.random.key(5), (6, size, size, 3))
  variables = _randomized(model, size, 0)
  layers = list_layers(model, variables, images[:1], train=False)
  plan = pruning.pruning_plan(model, layers)
  features = pruning.sample_features(model, variables, [np.asarray(images)], plan,
                                     positions=4, seed=0)
  # Sampled features are the layers' true inputs and outputs: patches @ kernel = outputs.
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  for unit in plan[1:]:
    f = features[unit.path]
    kernel = np.asarray(flat[f"{unit.path}/kernel"])
    np.testing.assert_allclose(f.inputs.reshape(len(f.inputs), -1) @ kernel.reshape(
        -1, kernel.shape[-1]), f.outputs, rtol=1e-4, atol=1e-4)
  pruner = pruning.Pruner(variables, plan, features)
  widths = [plan[0].channels] + [max(1, (u.channels // 2 // 8) * 8 or u.channels // 2)
                                 for u in plan[1:]]
  masked = model.apply(pruner.masked(widths), images, train=False)
  small = pruning.pruned_model(model, plan, widths)
  exported = pruner.exported(widths)
  out = small.apply(exported, images, train=False)
  np.testing.assert_allclose(out, masked, rtol=1e-4, atol=1e-5)
  # The export really is smaller, with the widths asked for.
  small_layers = list_layers(small, exported, images[:1], train=False)
  assert [pruning.pruning_plan(small, small_layers)[i].channels
          for i in range(len(plan))] == widths


def test_resnet50_plan_and_export_shapes():
  model = classifiers.ResNet50(num_classes=10, width=0.25)
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  layers = list_layers(model, variables, image)
  plan = pruning.pruning_plan(model, layers)
  assert len(plan) == 1 + 2 * 16
  assert plan[1].path == "layer1_0/conv2/conv" and plan[1].producer == "layer1_0/conv1"
  assert plan[2].path == "layer1_0/conv3/conv" and plan[2].producer == "layer1_0/conv2"
  widths = [3] + [8] * 32
  small = pruning.pruned_model(model, plan, widths)
  small_vars = jax.eval_shape(small.init, jax.random.key(0), image)
  assert small_vars["params"]["layer1_0"]["conv2"]["conv"]["kernel"].shape == (3, 3, 8, 8)
  assert small_vars["params"]["layer1_0"]["conv3"]["conv"]["kernel"].shape[-2:] == (8, 64)


def test_channel_list_errors():
  model = classifiers.PlainCNN()
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  plan = pruning.pruning_plan(model, list_layers(model, variables, image))
  with pytest.raises(UserError, match="has 3 numbers but the model has 6"):
    pruning.check_widths(plan, [3, 8, 8])
  with pytest.raises(UserError, match="must be 3"):
    pruning.check_widths(plan, [4, 8, 8, 8, 8, 8])
  with pytest.raises(UserError, match=r"in \[1, 32\]"):
    pruning.check_widths(plan, [3, 40, 8, 8, 8, 8])


def test_mobilenet_v2_export_cuts_the_producer_and_depthwise_to_the_kept_channels():
  """Shapes only (nothing compiled): the exported tree fits the smaller module exactly."""
  model = classifiers.TinyMobileNetV2()
  image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), image)
  variables = jax.tree.map(lambda a: np.ones(a.shape, a.dtype), abstract)
  plan = pruning.pruning_plan(model, list_layers(model, abstract, image))
  assert [u.producer for u in plan] == [None, "stem", "blocks_1/expand", "blocks_2/expand",
                                        "blocks_3/expand"]
  assert plan[1].followers == ("blocks_0/depthwise",)
  rng = np.random.default_rng(0)
  features = {u.path: pruning.Features(rng.normal(size=(50, 1, 1, u.channels)),
                                       rng.normal(size=(50, u.layer.c_out)))
              for u in plan[1:]}
  widths = [3, 8, 48, 72, 96]
  small = pruning.pruned_model(model, plan, widths)
  exported = pruning.Pruner(variables, plan, features).exported(widths)
  expected = jax.eval_shape(small.init, jax.random.key(0), image)
  assert jax.tree.map(np.shape, exported) == jax.tree.map(lambda a: a.shape, expected)
  assert exported["params"]["blocks_0"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 8)
