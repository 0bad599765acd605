"""PSD model: the spec's shape checks at paper size (`jax.eval_shape`), per-latent independence,
the structural descriptor against numpy expectations, cross convolution and PyTorch padding
against numpy loops, initialisation statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.psd import model as psd

# XLA's grouped convolutions compile in half the time of the CPU shifted form; the fixture's
# `None` decode runs the default (shifted) form and is checked against this one.
TINY = dict(num_latents=8, image_size=32, width_scale=0.25, unet_features=8, unet_levels=3,
            depthwise_impl="conv")
DIMS = (1, 3, 5)


def build_tiny():
  """A tiny PSD, its variables and a batch (`tests/psd/test_losses.py` builds the same, so the
  compiled init is shared through the persistent cache)."""
  model = psd.PSD(**TINY)
  keys = jax.random.split(jax.random.key(0), 4)
  image1 = jax.random.uniform(keys[0], (3, 32, 32, 3))
  flow = 0.1 * jax.random.normal(keys[1], (3, 32, 32, 2))
  variables = jax.jit(lambda: model.init({"params": keys[2], "latent": keys[3]}, image1, flow,
                                         train=False))()
  return model, variables, image1, flow


@pytest.fixture(scope="module")
def tiny():
  """`build_tiny` and one jitted eval-mode decode per structure setting: without structure on
  the default depthwise path (shifted multiply-adds on CPU), with it on XLA's convolutions."""
  model, variables, image1, flow = build_tiny()
  default = psd.PSD(**{**TINY, "depthwise_impl": "auto"})
  decode = {
      dims: jax.jit(lambda v, z, dims=dims, m=m: m.apply(v, image1, z, dimensions=dims,
                                                          method=psd.PSD.decode))
      for dims, m in ((None, default), (DIMS, model))}
  z = jax.random.normal(jax.random.key(5), (3, TINY["num_latents"]))
  return model, variables, image1, flow, decode, z


def _with_structure(variables, logits):
  return {**variables, "params": {**variables["params"], "structure": jnp.asarray(logits)}}


def test_paper_size_shapes():
  model = psd.PSD()
  image1, flow = jnp.zeros((2, 128, 128, 3)), jnp.zeros((2, 128, 128, 2))
  variables = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "latent": jax.random.key(1)}, image1, flow, train=False))
  encoder = variables["params"]["motion_encoder"]
  assert len(encoder) == 7  # 128 -> 1 after seven stride-2 convs
  widths = [encoder[f"conv{i}"]["conv"]["kernel"].shape[-1] for i in range(7)]
  assert widths == [16, 16, 32, 32, 64, 64, 64]
  assert psd.MotionEncoder(32, 5).widths() == (32, 32, 64, 64, 64)  # 32 px: drop from the front
  assert psd.MotionEncoder(32, 8).widths() == (16, 16, 16, 32, 32, 64, 64, 64)  # 256 px
  assert variables["params"]["structure"].shape == (32, 32)
  out = jax.eval_shape(lambda v: model.apply(v, image1, flow, train=True, dimensions=(18, 9, 0),
                                             mutable=["batch_stats"],
                                             rngs={"latent": jax.random.key(2)})[0], variables)
  shapes = {k: v.shape for k, v in out.items()}
  assert shapes["mean"] == shapes["log_var"] == shapes["z"] == (2, 32)  # 64-d split in two
  assert shapes["layers"] == (2, 32, 32, 32)  # image encoder: 3x128x128 -> 32x32x32
  assert shapes["kernels"] == (2, 32, 5, 5)
  assert shapes["motions"] == (2, 32, 128, 128, 2)
  assert shapes["masks"] == (2, 32, 128, 128)
  assert shapes["flow"] == (2, 128, 128, 2) and shapes["image"] == (2, 128, 128, 3)
  moved = jax.eval_shape(lambda l, k: psd.upsample_nearest(psd.cross_convolution(l, k), 4),
                         out["layers"], out["kernels"])
  assert moved.shape == (2, 128, 128, 32)  # cross conv 32x32x32, upsampled to 128x128


def test_perturbing_one_latent_changes_only_its_kernel_and_layer(tiny):
  _, variables, _, _, decode, z = tiny
  base = decode[None](variables, z)
  k = 2
  moved = decode[None](variables, z.at[:, k].add(0.7))
  others = np.arange(TINY["num_latents"]) != k
  for key in ("kernels", "motions"):
    before, after = np.asarray(base[key]), np.asarray(moved[key])
    np.testing.assert_array_equal(after[:, others], before[:, others])
    assert np.abs(after[:, k] - before[:, k]).max() > 1e-3
  np.testing.assert_array_equal(moved["layers"], base["layers"])  # the image path ignores z


def test_flow_is_sum_of_layer_motions_without_structure(tiny):
  _, variables, _, _, decode, z = tiny
  out = decode[None](variables, z)
  motions = np.asarray(out["motions"], np.float64)
  np.testing.assert_allclose(out["flow"], motions.sum(axis=1), rtol=1e-5, atol=1e-5)
  masks = np.linalg.norm(motions, axis=-1)
  masks = masks / (masks.max(axis=(2, 3), keepdims=True) + psd.MASK_EPS)
  np.testing.assert_allclose(out["masks"], masks, rtol=1e-5, atol=1e-6)


def test_depthwise_implementations_agree(tiny):
  _, variables, _, _, decode, z = tiny
  shifted = decode[None](variables, z)
  grouped = decode[DIMS](_with_structure(variables, np.full((8, 8), -1e4, np.float32)), z)
  for key in ("motions", "flow", "image"):
    np.testing.assert_allclose(grouped[key], shifted[key], rtol=1e-4, atol=1e-4, err_msg=key)


def _flow_max(motions: np.ndarray) -> np.ndarray:
  """[B, L, H, W, 2] -> [B, L, 2]: the signed value of largest magnitude, by a plain loop."""
  b, l, _, _, c = motions.shape
  out = np.zeros((b, l, c))
  for s in range(b):
    for k in range(l):
      for a in range(c):
        values = motions[s, k, :, :, a].ravel()
        out[s, k, a] = values[np.argmax(np.abs(values))]
  return out


def test_structure_adds_parent_motion_on_child_mask_one_level_only(tiny):
  _, variables, _, _, decode, z = tiny
  assert np.allclose(jax.nn.sigmoid(variables["params"]["structure"]), 4.5398e-5, rtol=1e-4)
  off = np.full((8, 8), -1e4, np.float32)  # sigmoid -> exactly 0
  i, j, k = DIMS
  one_pair = off.copy()
  one_pair[i, j] = 1e4  # sigmoid -> exactly 1
  chain = one_pair.copy()
  chain[j, k] = 1e4
  disallowed = off.copy()
  disallowed[0, j] = disallowed[i, i] = 1e4  # 0 is not active; the diagonal is never allowed
  for logits, pairs in ((one_pair, [(i, j)]), (chain, [(i, j), (j, k)]), (disallowed, [])):
    out = decode[DIMS](_with_structure(variables, logits), z)
    motions, masks = np.asarray(out["motions"], np.float64), np.asarray(out["masks"], np.float64)
    flow_max = _flow_max(motions)
    expected = motions.sum(axis=1)
    for parent, child in pairs:
      expected = expected + flow_max[:, parent, None, None, :] * masks[:, child, :, :, None]
    np.testing.assert_allclose(out["flow"], expected, rtol=1e-5, atol=1e-4)


def test_structure_mask_allows_only_active_off_diagonal_pairs():
  mask = psd.structure_mask((18, 9, 0), 32)
  expected = np.zeros((32, 32))
  for a in (18, 9, 0):
    for b in (18, 9, 0):
      expected[a, b] = a != b
  np.testing.assert_array_equal(mask, expected)
  assert not psd.structure_mask(None, 32).any()
  with pytest.raises(UserError, match="out of range"):
    psd.structure_mask((3, 32), 32)
  with pytest.raises(UserError, match="repeat"):
    psd.structure_mask((3, 3), 32)


@pytest.mark.parametrize("impl", ["shifts", "conv"])
def test_cross_convolution_matches_numpy_loop(impl):
  rng = np.random.default_rng(0)
  layers = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
  kernels = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
  padded = np.pad(layers, ((0, 0), (2, 2), (2, 2), (0, 0)))
  expected = np.zeros_like(layers)
  for b in range(2):
    for c in range(3):
      for y in range(6):
        for x in range(7):  # cross-correlation: no kernel flip
          expected[b, y, x, c] = np.sum(padded[b, y:y + 5, x:x + 5, c] * kernels[b, c])
  got = psd.cross_convolution(jnp.asarray(layers), jnp.asarray(kernels), impl=impl)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_stride2_conv_pads_like_pytorch():
  layer = psd.ConvLayer(3, 5, strides=2, norm=False)
  x = np.random.default_rng(1).standard_normal((1, 8, 8, 2)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x, False)
  kernel = np.asarray(variables["params"]["conv"]["kernel"])  # [5, 5, in, out]
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # PyTorch padding=2 on both sides
  expected = np.zeros((1, 4, 4, 3), np.float32)
  for y in range(4):
    for x_ in range(4):
      window = padded[0, 2 * y:2 * y + 5, 2 * x_:2 * x_ + 5, :]
      expected[0, y, x_] = np.einsum("hwi,hwio->o", window, kernel)
  np.testing.assert_allclose(layer.apply(variables, x, False), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features", [3, 16])  # one 3x3 conv / four 2x2 convs
def test_transposed_conv_matches_pytorch_scatter_loop(features):
  layer = psd.TransposedConv(features)
  x = np.random.default_rng(2).standard_normal((1, 3, 4, 2)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x)
  kernel = np.asarray(variables["params"]["kernel"])  # [k, k, out, in]
  weight = kernel.transpose(3, 2, 0, 1)  # PyTorch ConvTranspose2d weight [in, out, k, k]
  full = np.zeros((1, 2 * 3 + 2, 2 * 4 + 2, features), np.float32)
  for y in range(3):
    for x_ in range(4):
      for i in range(4):
        for j in range(4):
          full[0, 2 * y + i, 2 * x_ + j] += x[0, y, x_] @ weight[:, :, i, j]
  expected = full[:, 1:-1, 1:-1] + np.asarray(variables["params"]["bias"])  # padding 1
  np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_initialisation_statistics(tiny):
  _, variables, _, _, _, _ = tiny
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  names = lambda path: "/".join(str(getattr(p, "key", p)) for p in path)
  scales = np.concatenate([np.ravel(v) for p, v in flat if names(p).endswith("/scale")])
  assert scales.size > 500 and abs(scales.mean() - 1) < 0.2 and 0.8 < scales.std() < 1.2
  biases = [np.asarray(v) for p, v in flat if names(p).endswith("bias")
            and "image_decoder/up" not in names(p)]  # PyTorch-default transposed convs
  assert all(not b.any() for b in biases)
  kernel = np.asarray(variables["params"]["image_encoder"]["conv3"]["conv"]["kernel"])
  fan_in = 5 * 5 * kernel.shape[2]  # kaiming_normal_: fan_in, gain sqrt(2)
  assert abs(kernel.std() / np.sqrt(2 / fan_in) - 1) < 0.15


def test_aggregate_posterior_sample_draws_dataset_statistics():
  sample = jax.jit(psd.aggregate_posterior_sample, static_argnums=3)
  means = jnp.arange(12.0).reshape(4, 3)
  z = sample(means, jnp.full((4, 3), -60.0), jax.random.key(0), 50)
  assert z.shape == (50, 3)
  rows = {tuple(r) for r in np.asarray(means)}
  picked = {tuple(np.round(r, 4)) for r in np.asarray(z)}
  assert picked <= rows and len(picked) > 1
  wide = sample(jnp.zeros((4, 3)), jnp.zeros((4, 3)), jax.random.key(1), 4000)
  assert abs(float(wide.std()) - 1) < 0.05


def test_bad_inputs_are_one_sentence_errors(tiny):
  model, variables, image1, flow, _, _ = tiny
  with pytest.raises(UserError, match="flow must be"):
    model.apply(variables, image1, flow[:, :16], train=False, sample=False)
  with pytest.raises(UserError, match="image1 must be"):
    model.apply(variables, image1[:, :16, :16], flow[:, :16, :16], train=False, sample=False)
  with pytest.raises(UserError, match="out of range"):
    model.apply(variables, image1, flow, train=False, sample=False, dimensions=(0, 8))
  with pytest.raises(UserError, match="power of two"):
    psd.PSD(image_size=48).init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)),
                                jnp.zeros((1, 48, 48, 2)), train=False, sample=False)


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_stride_and_motion_kernels_set_the_layer_grid_and_decoder(stride):
  """Shapes only (`jax.eval_shape`): the layers at 1 / stride of the image, the motion decoder
  with the given depthwise kernels, the motions at full size."""
  model = psd.PSD(**{**TINY, "layer_stride": stride, "motion_kernels": (3, 3, 1)})
  image1, flow = jnp.zeros((2, 32, 32, 3)), jnp.zeros((2, 32, 32, 2))
  variables = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "latent": jax.random.key(1)}, image1, flow, train=False))
  decoder = variables["params"]["motion_decoder"]
  assert [decoder[f"conv{i}"]["conv"]["kernel"].shape[:2] for i in range(3)] == [
      (3, 3), (3, 3), (1, 1)]
  out = jax.eval_shape(lambda v: model.apply(v, image1, flow, train=False, sample=False),
                       variables)
  assert out["layers"].shape == (2, 32 // stride, 32 // stride, 8)
  assert out["motions"].shape == (2, 8, 32, 32, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"layer_stride": 8}, "layer_stride must be 1, 2 or 4, got 8."),
    ({"motion_kernels": (3, 4)}, r"motion_kernels must be odd sizes >= 1, got \(3, 4\)."),
    ({"motion_kernels": ()}, r"motion_kernels must be odd sizes >= 1, got \(\)."),
])
def test_bad_layer_grid_options_are_one_sentence_errors(kwargs, message):
  model = psd.PSD(**{**TINY, **kwargs})
  with pytest.raises(UserError, match=message):
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)),
                                      jnp.zeros((1, 32, 32, 2)), train=False, sample=False))


def test_given_layers_replace_the_image_encoders(tiny):
  """`decode(layers=...)` uses the given maps in place of the image encoder's: its own layers
  give back the same outputs, other maps other motions."""
  model, variables, image1, _, _, z = tiny
  decode = jax.jit(lambda v, z, layers: model.apply(v, image1, z, layers=layers,
                                                    method=psd.PSD.decode))
  own = model.apply(variables, image1, method=lambda m, x: m.image_encoder(x, False))
  base, same = decode(variables, z, None), decode(variables, z, own)
  for key in ("layers", "motions", "flow", "masks"):
    np.testing.assert_allclose(same[key], base[key], rtol=1e-6, atol=1e-6)
  other = decode(variables, z, own[:, :, ::-1])
  assert np.abs(np.asarray(other["motions"]) - np.asarray(base["motions"])).max() > 1e-3
  with pytest.raises(UserError, match=r"layers must be \[3, 8, 8, 8\]"):
    decode(variables, z, own[:, :4])


def test_object_layers_are_the_true_objects_pooled_to_the_layer_grid():
  ids = np.zeros((1, 4, 4), np.int32)
  ids[0, :2, :2] = 1  # circle: the top-left 2x2 cell
  ids[0, 2:, 2:] = 2  # square: bottom-right
  ids[0, 0, 3] = 3  # triangle: one pixel of the top-right cell
  objects = psd.object_layers(ids, 4, 2, "objects")
  assert objects.shape == (1, 2, 2, 4) and objects.dtype == np.float32
  np.testing.assert_array_equal(objects[0, ..., 0], [[1, 0], [0, 0]])
  np.testing.assert_array_equal(objects[0, ..., 1], [[0, 0], [0, 1]])
  np.testing.assert_array_equal(objects[0, ..., 2], [[0, 0.25], [0, 0]])
  np.testing.assert_array_equal(objects[0, ..., 3], 0)
  shared = psd.object_layers(ids, 4, 2, "objects_shared")  # layer 0: every object
  np.testing.assert_array_equal(shared[0, ..., 0], [[1, 0.25], [0, 1]])
  np.testing.assert_array_equal(shared[..., 1:], objects[..., 1:])
  with pytest.raises(UserError, match="num_latents >= 3"):
    psd.object_layers(ids, 2, 2, "objects")
  with pytest.raises(UserError, match="'objects' or 'objects_shared'"):
    psd.object_layers(ids, 4, 2, "image")


def test_mask_eps_keeps_a_still_layer_out_of_the_masks():
  """With the reference's eps a layer that barely moves (an absent or still child) still gets a
  full mask, so the structure step paints its parent's motion over the frame; a larger eps
  leaves its mask near 0 and the moving layer's unchanged (`model.mask_eps`)."""
  motions = np.zeros((1, 2, 4, 4, 2), np.float32)
  motions[0, 0, :2, :2] = (3.0, 4.0)  # a moving part: |m| = 5 on a quarter of the frame
  motions[0, 1] = 1e-3  # a still layer's residual motion everywhere
  reference = np.asarray(psd.part_masks(jnp.asarray(motions)))
  assert reference[0, 1].min() > 0.9  # the whole frame
  masks = np.asarray(psd.part_masks(jnp.asarray(motions), eps=1.0))
  assert masks[0, 1].max() < 0.01
  np.testing.assert_allclose(masks[0, 0, :2, :2], 5 / 6, rtol=1e-6)
  np.testing.assert_array_equal(masks[0, 0, 2:], 0)
