"""ResNet / MobileResNet generators, their super-network, discriminators and the MACs counter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import core
from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import layers, resnet
from lite_jax.gan_compression.subnet_search import space_size


def _profile(generator, height, width):
  x = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  params = jax.eval_shape(generator.init, jax.random.key(0), x)
  macs = core.count_macs(lambda p, x: generator.apply(p, x), params, x,
                         convention=layers.GAN_COMPRESSION)
  return macs, core.count_params(params)


def _randomize(params, seed=0):
  """Random values everywhere (biases too), so that masking bugs cannot hide behind zeros."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, l.shape) for k, l in
                                   zip(keys, leaves)])


def test_up_conv_matches_pytorch_transposed_conv():
  """ConvTranspose2d(k3, s2, p1, output_padding 1) in its scatter form, as a numpy loop."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  weight = rng.normal(size=(3, 5, 3, 3)).astype(np.float32)  # PyTorch [in, out, kh, kw]
  bias = rng.normal(size=5).astype(np.float32)
  full = np.zeros((2, 8, 10, 5), np.float32)
  for i in range(3):
    for j in range(4):
      for ki in range(3):
        for kj in range(3):
          full[:, 2 * i + ki, 2 * j + kj] += x[:, i, j] @ weight[:, :, ki, kj]
  expected = full[:, 1:7, 1:9] + bias
  kernel = np.transpose(weight, (2, 3, 1, 0))
  out = layers.UpConv(5).apply({"params": {"conv": {"kernel": kernel, "bias": bias}}}, x)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_up_conv_keeps_flax_conv_transpose_parameters():
  """`UpConv` (written on `lax.conv_transpose` so that ONNX converters accept it) has the
  parameter tree, shapes and function of the `nn.ConvTranspose(transpose_kernel=True)` it
  replaced, so earlier checkpoints load and compute the same."""
  from flax import linen as nn
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 6))
  flax_layer = nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                                transpose_kernel=True)
  params = _randomize(flax_layer.init(jax.random.key(1), x)["params"])
  ours = layers.UpConv(4).init(jax.random.key(1), x)["params"]
  assert jax.tree.map(jnp.shape, ours) == {"conv": jax.tree.map(jnp.shape, params)}
  np.testing.assert_allclose(layers.UpConv(4).apply({"params": {"conv": params}}, x),
                             flax_layer.apply({"params": params}, x), atol=1e-5)


def test_instance_norm_statistics_and_zero_channels():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4)) * 3 + 1
  x = x.at[..., 3].set(0.0)
  y = np.asarray(layers.instance_norm(x))
  np.testing.assert_allclose(y[..., :3].mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y[..., :3].var(axis=(1, 2)), 1, atol=1e-3)
  assert not y[..., 3].any()  # a masked (all-zero) channel stays zero


@pytest.mark.parametrize("generator, macs, params", [
    (resnet.resnet_generator(64), 56_831_770_624, 11_378_179),  # the reference's 56.83G / 11.378M
    (resnet.mobile_resnet_generator(64), 18.4e9, 1.99e6),
    (resnet.mobile_resnet_generator(96), 40.2e9, 4.42e6),
])
def test_reference_profiles(generator, macs, params):
  measured_macs, measured_params = _profile(generator, 256, 256)
  assert measured_macs == pytest.approx(macs, rel=3e-3)
  assert measured_params == pytest.approx(params, rel=3e-3)


def test_transposed_conv_charged_at_output_resolution():
  """The reference's counter charges 128^2 * 2ngf * 4ngf * 9 for 4ngf@64^2 -> 2ngf@128^2."""
  ngf = 64
  module = layers.UpConv(2 * ngf)
  x = jax.ShapeDtypeStruct((1, 64, 64, 4 * ngf), jnp.float32)
  params = jax.eval_shape(module.init, jax.random.key(0), x)
  assert core.count_macs(module.apply, params, x) == 128 ** 2 * 2 * ngf * 4 * ngf * 9


@pytest.mark.parametrize("channels, separable", [
    ((16, 16, 32, 16, 32, 32, 16, 16), True), ((24, 16, 8, 40, 8, 16, 24, 8), True),
    ((12,) * 8, False), ((8, 8, 8, 8, 8, 8), True)])
def test_closed_form_counts_match_the_traced_counter(channels, separable):
  generator = resnet.ResnetGenerator(resnet.expand_legacy(channels), separable=separable)
  macs, params = _profile(generator, 32, 48)
  assert resnet.generator_macs(channels, 32, 48, separable=separable) == macs
  assert resnet.generator_params(channels, separable=separable) == params


def test_search_space_sizes():
  sizes = {name: space_size(space) for name, space in resnet.SEARCH_SPACES.items()}
  assert sizes == {"channels-48": 5184, "channels-32": 6561, "channels-64-cycleGAN": 390625,
                   "channels-64-pix2pix": 5764801}


@pytest.mark.parametrize("config", [(8, 4, 8, 4, 8, 4, 8, 4), (4, 8, 4, 8, 8, 8, 4, 8)])
def test_masked_supernet_equals_sliced_standalone_student(config):
  """Super-network at `active=config` == the student built at `config` with sliced weights,
  for the image and for the distillation taps; everything beyond the active width is 0."""
  super_student = layers.DistillStudent(resnet.mobile_resnet_generator(8, n_blocks=3), (12,) * 4)
  sub_student = layers.DistillStudent(resnet.mobile_resnet_generator(config, n_blocks=3),
                                      (12,) * 4)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  params = _randomize(super_student.init(jax.random.key(0), x)["params"])
  sub_params = layers.slice_params(
      params, jax.eval_shape(sub_student.init, jax.random.key(0), x)["params"])
  out, taps = jax.jit(lambda p, a: super_student.apply({"params": p}, x, a))(
      params, jnp.asarray(config))
  sub_out, sub_taps = sub_student.apply({"params": sub_params}, x)
  np.testing.assert_allclose(out, sub_out, atol=1e-4, rtol=1e-4)  # summation order differs
  for tap, sub_tap in zip(taps, sub_taps):
    np.testing.assert_allclose(tap, sub_tap, atol=1e-4)
  # The trunk beyond the active width is exactly zero inside the super-network.
  _, features = resnet.ResnetGenerator((8,) * 8, separable=True, n_blocks=3).apply(
      {"params": params["generator"]}, x, jnp.asarray(config), return_features=True)
  assert not np.asarray(features[0])[..., 4 * config[2]:].any()


def test_widest_subnet_is_the_supernet():
  generator = resnet.mobile_resnet_generator(8, n_blocks=3)
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3), minval=-1, maxval=1)
  params = _randomize(generator.init(jax.random.key(0), x))
  np.testing.assert_allclose(generator.apply(params, x, jnp.full((8,), 8)),
                             generator.apply(params, x), atol=1e-6)


def test_sample_configs_stay_in_the_space():
  space = resnet.search_space("channels-48")
  samples = jax.vmap(lambda k: resnet.sample_configs(space, k))(
      jax.random.split(jax.random.key(0), 256))
  for i, choices in enumerate(space):
    assert set(np.asarray(samples[:, i]).tolist()) == set(choices)


def test_user_errors():
  with pytest.raises(core.UserError, match="8 or 6 positive entries"):
    resnet.parse_config("16_16_32")
  with pytest.raises(core.UserError, match="integers joined by"):
    resnet.parse_config("16_x_32")
  with pytest.raises(core.UserError, match="wider than the super-network"):
    resnet.check_subnet((16, 16, 72, 16, 16, 16, 16, 16), (64,) * 8)
  with pytest.raises(core.UserError, match="divisible by 4"):
    resnet.resnet_generator(4, n_blocks=1).init(jax.random.key(0), jnp.zeros((1, 18, 16, 3)))
  with pytest.raises(core.UserError, match="too small"):
    disc.PatchDiscriminator(8, n_layers=3).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(core.UserError, match="unknown ResNet search space"):
    resnet.search_space("channels-7")
  with pytest.raises(core.UserError, match="does not fit inside"):
    layers.slice_params({"w": jnp.zeros((2, 3))}, {"w": jnp.zeros((3, 3))})


def test_patch_discriminator_is_the_70x70_patchgan():
  d = disc.PatchDiscriminator(ndf=64, n_layers=3)
  x = jax.ShapeDtypeStruct((1, 256, 256, 6), jnp.float32)
  variables = jax.eval_shape(d.init, jax.random.key(0), x)
  logits, features = jax.eval_shape(d.apply, variables, x)
  assert logits.shape == (1, 30, 30, 1) and len(features) == 4
  # 6*64*16 + 64 + 64*128*16 + 128 + 128*256*16 + 256 + 256*512*16 + 512 + 512*16 + 1
  assert core.count_params(variables) == 2_767_809


def test_gan_losses():
  real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.5])
  assert disc.discriminator_loss("hinge", real, fake) == pytest.approx(0.5 * (0.25 + 0.75))
  assert disc.discriminator_loss("lsgan", real, fake) == pytest.approx(
      0.5 * ((1 + 0.25) / 2 + (4 + 0.25) / 2))
  assert disc.generator_gan_loss("hinge", fake) == pytest.approx(0.75)
  assert disc.generator_gan_loss("lsgan", [fake, fake]) == pytest.approx((9 + 0.25) / 2)
  bce = lambda z, t: np.mean(np.log1p(np.exp(-z)) if t else np.log1p(np.exp(z)))
  assert disc.discriminator_loss("vanilla", real, fake) == pytest.approx(
      0.5 * (bce(np.asarray(real), 1) + bce(np.asarray(fake), 0)), rel=1e-5)
  with pytest.raises(core.UserError, match="gan_mode"):
    disc.generator_gan_loss("wgan", fake)


def test_depthwise_implementations_agree():
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  fast = resnet.mobile_resnet_generator(8, n_blocks=3)
  params = _randomize(fast.init(jax.random.key(0), x))
  slow = fast.clone(depthwise_impl="conv")
  np.testing.assert_allclose(fast.apply(params, x), slow.apply(params, x), atol=1e-5)
