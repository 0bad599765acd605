"""Tests of the GauGAN (SPADE) generators: shapes, the reference's MACs/params, super-network
masking against standalone sub-networks, batch-norm re-calibration and input validation."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers, spade

# A small super-network: trunk 16 * 8 = 128 channels at the 1x2 bottom of a 32x64 label map.
SUPER = (8,) * 8
SMALL_HEIGHT, SMALL_WIDTH, SMALL_LABELS = 32, 64, 4
SEMANTIC_NC = SMALL_LABELS + 1  # + instance edge map.


def label_map(seed: int, batch: int = 2, height: int = SMALL_HEIGHT, width: int = SMALL_WIDTH,
              labels: int = SMALL_LABELS) -> jax.Array:
  """One-hot labels + a binary edge channel: `[batch, height, width, labels + 1]`."""
  rng = np.random.default_rng(seed)
  one_hot = np.eye(labels, dtype=np.float32)[rng.integers(0, labels, (batch, height, width))]
  edges = rng.integers(0, 2, (batch, height, width, 1)).astype(np.float32)
  return jnp.asarray(np.concatenate([one_hot, edges], axis=-1))


def small_super() -> spade.SpadeGenerator:
  return spade.mobile_spade_generator(SUPER, num_upsampling_layers="normal")


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def run(model, variables, seg, active=None, *, train=False):
  """`model.apply` with the block outputs; with `train`, also the updated batch statistics."""
  if train:
    return model.apply(variables, seg, active, train=True, mutable=["batch_stats"])
  return model.apply(variables, seg, active, return_features=True)


def random_variables(model, seg, seed: int):
  """Random parameters, nonzero running means and non-unit running variances (so that masking
  after batch norm matters), as numpy arrays: `jax.jit(model.init)` compiles for ~15 s on CPU, and
  slicing numpy arrays compiles nothing."""
  abstract = jax.eval_shape(model.init, jax.random.key(0), seg)
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      value = rng.uniform(0.5, 2.0, x.shape)
    else:
      value = rng.normal(0.0, 1.0 if name.endswith("['mean']") else 0.05, x.shape)
    return value.astype(x.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.mark.parametrize("mode", ["normal", "more", "most"])
def test_output_and_feature_shapes(mode):
  bottom = (1, 2)
  steps = spade.UPSAMPLING_STEPS[mode]
  height, width = bottom[0] * 2**steps, bottom[1] * 2**steps
  model = spade.spade_generator(4, num_upsampling_layers=mode)
  seg = jax.ShapeDtypeStruct((2, height, width, SEMANTIC_NC), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), seg)
  out, features = jax.eval_shape(lambda v, s: model.apply(v, s, return_features=True),
                                 variables, seg)
  assert out.shape == (2, height, width, 3)
  g_middle_1 = 1 if mode == "normal" else 2  # `more` upsamples between the middle blocks.
  expected = {"fc": (0, 64), "head_0": (0, 64), "G_middle_0": (1, 64),
              "G_middle_1": (g_middle_1, 64), "up_0": (g_middle_1 + 1, 32),
              "up_1": (g_middle_1 + 2, 16), "up_2": (g_middle_1 + 3, 8),
              "up_3": (g_middle_1 + 4, 4)}
  if mode == "most":
    expected["up_4"] = (g_middle_1 + 5, 2)
  assert set(features) == set(expected)
  for name, (level, channels) in expected.items():
    assert features[name].shape == (2, bottom[0] * 2**level, bottom[1] * 2**level, channels)


def test_nearest_resizing_matches_pytorch_indices():
  x = jnp.arange(2 * 8 * 16 * 3, dtype=jnp.float32).reshape(2, 8, 16, 3)
  rows, cols = (np.arange(2) * 8) // 2, (np.arange(4) * 16) // 4  # floor(out_index * in / out)
  np.testing.assert_array_equal(spade.downsample_nearest(x, 2, 4),
                                np.asarray(x)[:, rows][:, :, cols])
  up = spade.upsample_nearest(x)
  np.testing.assert_array_equal(up, np.asarray(x)[:, np.arange(16) // 2][:, :, np.arange(32) // 2])


@pytest.mark.parametrize("dataset, macs, params", [
    (spade.CITYSCAPES, 281.4e9, 93.0e6), (spade.COCO_STUFF, 191.2e9, 97.5e6)])
def test_reference_generator_macs_and_params(dataset, macs, params):
  """Spec §4 / README: GauGAN 281G / 93.0M (cityscapes) and 191G / 97.5M (COCO-Stuff)."""
  height, width, semantic_nc, mode = dataset
  traced_macs, traced_params = spade.profile(
      spade.spade_generator(64, num_upsampling_layers=mode), height, width, semantic_nc)
  assert traced_macs == pytest.approx(macs, rel=5e-3)
  assert traced_params == pytest.approx(params, rel=5e-3)
  assert spade.generator_macs((64,) * 8, height, width, semantic_nc, separable=False,
                              num_upsampling_layers=mode) == traced_macs
  assert spade.generator_params((64,) * 8, semantic_nc, separable=False,
                                num_upsampling_layers=mode) == traced_params


@pytest.mark.parametrize("config, dataset", [
    ("32_40_40_32_40_24_32_24", spade.CITYSCAPES),
    ("40_32_32_40_32_40_24_24", spade.COCO_STUFF),
    ((8, 6, 4, 8, 2, 4, 6, 8), (128, 256, SEMANTIC_NC, "most"))])
def test_closed_form_macs_and_params_equal_traced_count(config, dataset):
  height, width, semantic_nc, mode = dataset
  traced = spade.profile(spade.mobile_spade_generator(config, num_upsampling_layers=mode),
                         height, width, semantic_nc)
  assert traced == (
      spade.generator_macs(config, height, width, semantic_nc, num_upsampling_layers=mode),
      spade.generator_params(config, semantic_nc, num_upsampling_layers=mode))


@pytest.mark.parametrize("config, macs, params", [
    # README "Retrained" GauGAN cityscapes: 31.2G / 21.0M; the config of the tutorial/scripts.
    ("32_40_40_32_40_24_32_24", 31.2e9, 21.0e6),
    # README "Paper": 31.7G / 20.4M. Not in the reference code; the only config of the
    # channels-48 space matching both numbers (found by enumerating it).
    ("32_32_48_32_32_32_32_24", 31.7e9, 20.4e6)])
def test_compressed_cityscapes_generators_match_readme(config, macs, params):
  height, width, semantic_nc, mode = spade.CITYSCAPES
  assert spade.generator_macs(config, height, width, semantic_nc,
                              num_upsampling_layers=mode) == pytest.approx(macs, rel=5e-3)
  assert spade.generator_params(config, semantic_nc,
                                num_upsampling_layers=mode) == pytest.approx(params, rel=5e-3)


def test_search_space_sizes():
  sizes = {name: math.prod(len(c) for c in space) for name, space in spade.SEARCH_SPACES.items()}
  assert sizes == {"channels-48": 15_552, "channels-64": 128_000, "channels-64-coco": 390_625}
  assert all(len(space) == 8 for space in spade.SEARCH_SPACES.values())


def assert_trees_close(super_tree, sub_tree, **tolerance):
  """`sub_tree` equals the leading-channel slice of `super_tree`."""
  super_tree, sub_tree = jax.tree.map(np.asarray, (super_tree, sub_tree))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tolerance),
               layers.slice_params(super_tree, sub_tree), sub_tree)


@pytest.mark.parametrize("seed", [0, 1])
def test_super_network_equals_standalone_sub_network(seed):
  rng = np.random.default_rng(seed)
  config = tuple(int(rng.choice([2, 4, 6, 8])) for _ in SUPER)
  seg = label_map(seed)
  super_model, sub_model = small_super(), spade.mobile_spade_generator(
      config, num_upsampling_layers="normal")
  super_vars = random_variables(super_model, seg, seed)
  sub_vars = layers.slice_params(super_vars, jax.eval_shape(sub_model.init, jax.random.key(0),
                                                            seg))
  active = jnp.asarray(config)
  # Running statistics (evaluation).
  super_out, super_features = run(super_model, super_vars, seg, active)
  sub_out, sub_features = run(sub_model, sub_vars, seg)
  np.testing.assert_allclose(super_out, sub_out, rtol=1e-4, atol=1e-5)
  assert_trees_close(super_features, sub_features, rtol=1e-4, atol=1e-5)
  for name, feature in super_features.items():  # Channels beyond the sub-network stay zero.
    assert not np.any(np.asarray(feature)[..., sub_features[name].shape[-1]:])
  # Batch statistics (training), and the running averages they update.
  super_out, super_updates = run(super_model, super_vars, seg, active, train=True)
  sub_out, sub_updates = run(sub_model, sub_vars, seg, train=True)
  np.testing.assert_allclose(super_out, sub_out, rtol=1e-4, atol=1e-5)
  assert_trees_close(super_updates, sub_updates, rtol=1e-4, atol=1e-5)


def test_calibrate_keeps_the_last_batch_statistics():
  model = small_super()
  config = (4, 8, 6, 2, 6, 4, 8, 2)
  first, last = label_map(10), label_map(11)
  variables = random_variables(model, last, 0)
  calibrated = spade.calibrate(model, variables, [first, last], config)
  assert_trees_close(calibrated["params"], variables["params"], rtol=0, atol=0)
  assert_trees_close(calibrated, spade.calibrate(model, variables, iter([last]), config),
                     rtol=1e-6, atol=1e-6)
  # The first batch norm sees the output of `fc`: its statistics over batch and pixels.
  fc = np.asarray(run(model, variables, last, jnp.asarray(config))[1]["fc"])
  stats = calibrated["batch_stats"]["head_0"]["norm_0"]["param_free_norm"]
  active_width = 16 * config[0]
  np.testing.assert_allclose(stats["mean"][:active_width], fc.mean(axis=(0, 1, 2))[:active_width],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"][:active_width], fc.var(axis=(0, 1, 2))[:active_width],
                             rtol=1e-4, atol=1e-6)
  assert not np.any(stats["mean"][active_width:]) and not np.any(stats["var"][active_width:])
  first_stats = spade.calibrate(model, variables, [first], config)["batch_stats"]
  assert not np.allclose(first_stats["head_0"]["norm_0"]["param_free_norm"]["mean"],
                         stats["mean"])
  # Calibrating the super-network for a sub-network = calibrating the standalone sub-network.
  sub_model = spade.mobile_spade_generator(config, num_upsampling_layers="normal")
  sub_vars = layers.slice_params(variables, jax.eval_shape(sub_model.init, jax.random.key(0),
                                                           last))
  assert_trees_close(calibrated, spade.calibrate(sub_model, sub_vars, [last]),
                     rtol=1e-4, atol=1e-5)


def test_invalid_inputs_raise_user_errors():
  seg = label_map(0, batch=1)
  model = small_super()
  key = jax.random.key(0)
  with pytest.raises(UserError, match="8 positive entries"):
    spade.parse_config("32_32_32")
  with pytest.raises(UserError, match="integers"):
    spade.parse_config("32_x_32")
  with pytest.raises(UserError, match="wider than the super-network"):
    spade.check_subnet("64_48_48_48_48_48_48_48", (48,) * 8)
  with pytest.raises(UserError, match="unknown SPADE search space"):
    spade.search_space("channels-16")
  with pytest.raises(UserError, match="label map"):
    model.init(key, seg[0])
  with pytest.raises(UserError, match="divisible by 32"):
    model.init(key, seg[:, :24])
  with pytest.raises(UserError, match="8 positive entries"):
    model.init(key, seg, jnp.asarray([8] * 7))
  with pytest.raises(UserError, match="wider than the super-network"):
    model.init(key, seg, [8] * 7 + [16])
  with pytest.raises(UserError, match="num_upsampling_layers"):
    spade.generator_macs(SUPER, 32, 64, SEMANTIC_NC, num_upsampling_layers="extra")
  with pytest.raises(UserError, match="divisible by 64"):
    spade.generator_macs(SUPER, 32, 64, SEMANTIC_NC, num_upsampling_layers="more")
  with pytest.raises(UserError, match="at least one label batch"):
    spade.calibrate(model, {}, [])
