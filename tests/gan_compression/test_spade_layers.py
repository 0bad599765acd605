"""GauGAN's layers: spectral norm (power iteration against numpy, the spectral-instance D, the
teacher's spectral generator folded into plain weights) and the VGG19 port and loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import layers, spade, vgg

NARROW_VGG = (4, 4, 8, 8, 8)  # stage widths of the tests' random VGG19


def _vgg_state_dict(widths, seed: int = 0) -> dict[str, np.ndarray]:
  """A random torchvision-layout VGG19 state dict (OIHW) up to relu5_1, plus a classifier key
  the loader must ignore."""
  rng = np.random.default_rng(seed)
  state_dict, in_channels = {"classifier.0.weight": np.zeros((2, 2), np.float32)}, 3
  for width, indices in zip(widths, vgg.conv_indices()):
    for index in indices:
      fan_in = in_channels * 9
      state_dict[f"features.{index}.weight"] = (
          rng.standard_normal((width, in_channels, 3, 3)) / np.sqrt(fan_in)).astype(np.float32)
      state_dict[f"features.{index}.bias"] = rng.uniform(-0.1, 0.1, width).astype(np.float32)
      in_channels = width
  return state_dict


def test_spectral_conv_power_iteration_matches_numpy_and_normalizes():
  conv = disc.SpectralConv(6, 3)
  x = jnp.ones((1, 5, 5, 4))
  variables = conv.init(jax.random.key(0), x)
  w = np.asarray(variables["params"]["kernel"]).reshape(-1, 6).T  # [out, k * k * in]
  u = np.asarray(variables["spectral"]["u"])
  _, updates = conv.apply(variables, x, update_stats=True, mutable=["spectral"])
  v = w.T @ u / np.linalg.norm(w.T @ u)  # torch.nn.utils.spectral_norm, one iteration
  u = w @ v / np.linalg.norm(w @ v)
  np.testing.assert_allclose(updates["spectral"]["u"], u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updates["spectral"]["v"], v, rtol=1e-5, atol=1e-6)
  step = jax.jit(lambda v: conv.apply(v, x, update_stats=True, mutable=["spectral"])[1])
  for _ in range(50):
    variables = {**variables, **step(variables)}
  u, v = (np.asarray(variables["spectral"][k]) for k in ("u", "v"))
  sigma = u @ w @ v
  np.testing.assert_allclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-4)
  np.testing.assert_allclose(np.linalg.svd(w / sigma, compute_uv=False)[0], 1.0, rtol=1e-4)
  # Without update_stats the vectors stay and the output uses the normalized kernel.
  y = conv.apply(variables, x)
  expected = jax.lax.conv_general_dilated(x, variables["params"]["kernel"] / sigma, (1, 1),
                                          [(0, 0)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_spectral_instance_discriminator_layout():
  d = disc.MultiscaleDiscriminator(num_d=2, ndf=4, n_layers=4, norm="spectral_instance")
  variables = jax.eval_shape(d.init, jax.random.key(0), jnp.zeros((1, 64, 64, 5)))
  scale = variables["params"]["scale0"]
  assert set(scale["conv1"]) == {"kernel"}  # normalized convs lose their bias
  assert set(scale["conv0"]["conv"]) == set(scale["logits"]["conv"]) == {"kernel", "bias"}
  assert set(variables["spectral"]["scale1"]) == {"conv1", "conv2", "conv3"}
  assert variables["spectral"]["scale0"]["conv3"]["v"].shape == (4 * 4 * 16,)


def test_vgg_state_dict_round_trip_and_torch_layout(tmp_path):
  state_dict = _vgg_state_dict(NARROW_VGG, seed=1)
  path = tmp_path / "vgg.npz"
  np.savez(path, **state_dict)
  params = vgg.load_vgg19(path)
  assert vgg.network(params).widths == NARROW_VGG
  back = vgg.state_dict_from_params(params)
  assert set(back) == set(state_dict) - {"classifier.0.weight"}
  for key, value in back.items():
    np.testing.assert_array_equal(value, state_dict[key])
  x = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  taps = vgg.network(params).apply({"params": params}, x)
  assert [t.shape for t in taps] == [(1, 16 >> i, 16 >> i, w) for i, w in enumerate(NARROW_VGG)]
  # relu1_1 by an explicit NCHW loop over PyTorch's OIHW weights, zero padding 1.
  weight, bias = state_dict["features.0.weight"], state_dict["features.0.bias"]
  padded = np.pad(x[0].transpose(2, 0, 1), ((0, 0), (1, 1), (1, 1)))
  expected = np.zeros((4, 16, 16), np.float32)
  for o in range(4):
    for i in range(16):
      for j in range(16):
        expected[o, i, j] = (weight[o] * padded[:, i:i + 3, j:j + 3]).sum() + bias[o]
  np.testing.assert_allclose(taps[0][0], np.maximum(expected, 0).transpose(1, 2, 0), atol=1e-5)


def test_vgg_loss_is_zero_for_identical_images_and_weights_the_taps():
  params = vgg.params_from_state_dict(_vgg_state_dict(NARROW_VGG))
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  y = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  assert float(vgg.vgg_loss(params, x, x)) == 0.0
  taps_x, taps_y = (vgg.network(params).apply({"params": params}, i) for i in (x, y))
  expected = sum(w * np.abs(a - b).mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1),
                                                              taps_x, taps_y))
  np.testing.assert_allclose(vgg.vgg_loss(params, x, y), expected, rtol=1e-5)
  grad_y = jax.grad(lambda t: vgg.vgg_loss(params, x, t))(y)  # the target gets no gradient
  assert not np.any(grad_y)


def test_spectral_norm_generator_equals_the_plain_one_after_removal():
  """A SPADE generator with spectral norm (the teacher in training): a training call advances
  every conv_0 / conv_1 / conv_s power iteration, and `remove_spectral_norm` gives the plain
  generator's variables with the same outputs."""
  kwargs = dict(num_upsampling_layers="normal", depthwise_impl="conv")
  spectral = spade.SpadeGenerator((2,) * 8, spectral=True, **kwargs)
  plain = spade.SpadeGenerator((2,) * 8, **kwargs)
  seg = jax.random.uniform(jax.random.key(1), (2, 32, 32, 5))
  variables = spectral.init(jax.random.key(0), seg)
  names = {k for block in variables["spectral"].values() for k in block}
  assert names == {"conv_0", "conv_1", "conv_s"}
  _, updates = spectral.apply(variables, seg, train=True, mutable=["batch_stats", "spectral"])
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), updates["spectral"],
                       variables["spectral"])
  assert all(jax.tree.leaves(moved))
  variables = {**variables, **updates}
  folded = layers.remove_spectral_norm(variables)
  assert "spectral" not in folded
  assert jax.tree.structure(folded) == jax.tree.structure(
      plain.init(jax.random.key(0), seg))
  np.testing.assert_allclose(plain.apply(folded, seg), spectral.apply(variables, seg),
                             atol=1e-5)
  block = variables["params"]["head_0"]["conv_0"]["conv"]
  assert not np.allclose(folded["params"]["head_0"]["conv_0"]["conv"]["kernel"], block["kernel"])

