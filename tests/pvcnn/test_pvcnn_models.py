"""lite_jax.pvcnn layers and models: the Pallas path equals the XLA path through a PVConv,
reference block specs and parameter counts, SE over empty voxels, and profiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import pvcnn_s3dis, pvcnn_shapenet
from lite_jax import pvcnn
from lite_jax.core import UserError
from lite_jax.pvcnn import models


def test_pvconv_kernel_path_equals_xla_path():
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(2, 24, 5)), jnp.float32)
  coords = jnp.asarray(rng.uniform(-1, 1, (2, 24, 3)), jnp.float32)
  kernel = pvcnn.PVConv(8, resolution=3, with_se=True, interpret=True)
  xla = pvcnn.PVConv(8, resolution=3, with_se=True, kernel_backend="xla")
  variables = xla.init(jax.random.PRNGKey(0), features, coords, train=False)

  @jax.jit
  def run(variables):
    def loss(params, module):
      out, _ = module.apply({**variables, "params": params}, features, coords, train=True,
                            mutable=["batch_stats"])
      return jnp.sum(out ** 2), out
    return [jax.grad(loss, has_aux=True)(variables["params"], m) for m in (kernel, xla)]

  (kernel_grads, kernel_out), (xla_grads, xla_out) = run(variables)
  assert kernel_out.shape == (2, 24, 8)
  np.testing.assert_allclose(kernel_out, xla_out, atol=1e-5)
  for a, b in zip(jax.tree.leaves(kernel_grads), jax.tree.leaves(xla_grads)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_squeeze_excite_averages_over_empty_voxels_too():
  x = jnp.zeros((1, 2, 2, 2, 8)).at[0, 0, 0, 0].set(8.0)  # One occupied voxel of eight.
  se = pvcnn.SqueezeExcite3D()
  params = se.init(jax.random.PRNGKey(0), x)["params"]
  w1, w2 = params["Dense_0"]["kernel"], params["Dense_1"]["kernel"]
  gate = jax.nn.sigmoid(jax.nn.relu(jnp.ones((1, 8)) @ w1) @ w2)  # mean = 8 / 8 = 1
  np.testing.assert_allclose(se.apply({"params": params}, x)[0, 0, 0, 0], 8.0 * gate[0],
                             rtol=1e-6)
  assert w1.shape == (8, 1)  # reduction 8


def _params(task, preset):
  config = (pvcnn_shapenet if task == "shapenet" else pvcnn_s3dis).get_config(preset)
  return pvcnn.profile(config)


def test_pointnet_parameters_match_a_closed_form():
  """ShapeNet PointNet (xyz only): SharedMLP = Dense (w, b) + BatchNorm (scale, bias)."""
  mlp = lambda c_in, c_out: c_in * c_out + 3 * c_out
  trunk = [(3, 64), (64, 128), (128, 128), (128, 512), (512, 2048)]
  head_in = 16 + 64 + 128 + 128 + 512 + 2048 + 2048
  want = (sum(mlp(*io) for io in trunk) + mlp(head_in, 256) + mlp(256, 256) + mlp(256, 128)
          + 128 * 50 + 50)
  assert _params("shapenet", "pointnet")["params"] == want


def test_block_specs_and_widths_follow_the_reference():
  config = pvcnn_shapenet.get_config("pvcnn_c0p5")
  model = models.build_model("shapenet", config.model, 50, 16)
  assert model.blocks == ((64, 1, 32), (128, 2, 16), (512, 1, None), (2048, 1, None))
  assert model.width_multiplier == 0.5 and model.with_se and not model.normalize
  points, category = jnp.zeros((1, 32, 6)), jnp.zeros((1,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), points, category,
                                                train=False))
  trunk = variables["params"]["PointBlocks_0"]
  assert trunk["PVConv_0"]["ConvBNLeaky3D_0"]["Conv_0"]["kernel"].shape == (3, 3, 3, 6, 32)
  assert trunk["SharedMLP_1"]["Dense_0"]["kernel"].shape == (256, 1024)
  s3dis = models.build_model("s3dis", pvcnn_s3dis.get_config("pvcnn_c1").model, 13)
  assert s3dis.normalize and not s3dis.with_se and s3dis.concat_all_blocks
  assert s3dis.blocks == ((64, 1, 32), (64, 2, 16), (128, 1, 16), (1024, 1, None))


@pytest.mark.parametrize("task,presets", [
    ("shapenet", ("pvcnn_c1", "pvcnn_c0p5", "pvcnn_c0p25", "pointnet", "voxel_unet")),
    ("s3dis", ("pvcnn_c1", "pvcnn_c0p25", "pvcnn_c0p125", "pointnet", "voxel_unet"))])
def test_profile_every_paper_preset(task, presets):
  results = {preset: _params(task, preset) for preset in presets}
  for result in results.values():
    assert result["params"] > 0 and result["macs"] > 0 and result["voxelize_path"]
  widths = [results[p]["params"] for p in presets[:3]]
  assert widths == sorted(widths, reverse=True)  # Narrower models have fewer parameters.
  assert results["voxel_unet"]["macs"] > results["pvcnn_c1"]["macs"]  # 96^3 voxels are dear.


def test_unet_resolution_must_divide_into_its_levels():
  unet = models.VoxelUNet3D(num_classes=4, resolution=20, levels=4)
  with pytest.raises(UserError, match="divisible by 2\\^\\(levels - 1\\) = 8"):
    unet.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 3)), train=False)
  unet = models.VoxelUNet3D(4, resolution=8, base_channels=4, levels=2, num_categories=3)
  logits = jax.eval_shape(lambda: unet.init_with_output(
      jax.random.PRNGKey(0), jnp.zeros((2, 8, 3)), jnp.zeros((2,), jnp.int32), train=False)[0])
  assert logits.shape == (2, 8, 4)
