"""kernels/devoxelize.py: the reference against a float64 numpy loop, the semantics the
reference CUDA code has, and the Pallas kernel against the reference, forward and gradient
(interpret mode on CPU, compiled on GPU)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import _dispatch
from kernels import devoxelize as devox
from kernels.voxelize import Tiling

ON_GPU = jax.default_backend() == "gpu"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="compiled Pallas kernels need a GPU")


def devoxelize_loop(voxels, norm_coords):
  """Trilinear devoxelization written as plain loops in float64."""
  batch, channels = voxels.shape[0], voxels.shape[-1]
  out = np.zeros((batch, norm_coords.shape[1], channels))
  for b in range(batch):
    for n, point in enumerate(norm_coords[b]):
      ends = []
      for x in point:
        lo = math.floor(x)
        d1 = float(x) - lo
        ends.append(((lo, 1 - d1), (lo + 1 if d1 > 0 else lo, d1)))
      for (ix, wx) in ends[0]:
        for (iy, wy) in ends[1]:
          for (iz, wz) in ends[2]:
            out[b, n] += wx * wy * wz * voxels[b, ix, iy, iz]
  return out


def grid_and_points(seed, batch, num_points, channels, r, dtype=np.float32):
  rng = np.random.default_rng(seed)
  voxels = rng.normal(size=(batch, r, r, r, channels)).astype(dtype)
  norm_coords = rng.uniform(0, r - 1, (batch, num_points, 3)).astype(np.float32)
  return voxels, norm_coords


def test_reference_matches_numpy_loop():
  voxels, norm_coords = grid_and_points(0, 2, 40, 5, 5)
  norm_coords[0, :4] = [[0, 0, 0], [4, 4, 4], [4, 0.5, 2], [1, 2, 3]]  # Corners and nodes.
  got = devox.devoxelize_trilinear_reference(jnp.asarray(voxels), jnp.asarray(norm_coords))
  np.testing.assert_allclose(got, devoxelize_loop(voxels, norm_coords), atol=1e-5)


def test_corner_semantics():
  r = 4
  points = jnp.array([[[1.25, 2.0, 3.0], [3.0, 3.0, 3.0], [0.0, 0.5, 2.75]]])
  ids, weights = jax.jit(devox.trilinear_corners, static_argnums=1)(points, r)
  assert ids.shape == weights.shape == (8, 1, 3)
  assert float(weights.min()) >= 0
  np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-6)
  assert int(ids.max()) < r ** 3  # A point at r - 1 reads in bounds.
  # On a grid node all the weight sits on corner 000; the "upper" neighbours of a zero
  # fraction are the node itself (weight 0), never the next voxel.
  np.testing.assert_array_equal(ids[:, 0, 1], [63] * 8)
  np.testing.assert_allclose(weights[:, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0])
  # Bit order (x, y, z): corner 4 = upper x only; x = 1.25 puts 0.25 of the weight there.
  np.testing.assert_array_equal(ids[:, 0, 0], [1 * 16 + 2 * 4 + 3] * 4 + [2 * 16 + 2 * 4 + 3] * 4)
  np.testing.assert_allclose(weights[[0, 4], 0, 0], [0.75, 0.25])
  voxels, _ = grid_and_points(1, 1, 1, 2, r)
  node = jax.jit(devox.devoxelize_trilinear)(jnp.asarray(voxels), jnp.array([[[1.0, 2.0, 3.0]]]))
  np.testing.assert_array_equal(node[0, 0], voxels[0, 1, 2, 3])


def _both_paths(voxels, norm_coords, tiling=None):
  """Both paths' outputs and gradients w.r.t. the voxels and the coordinates."""
  weights = jax.random.normal(jax.random.PRNGKey(0), norm_coords.shape[:2] + voxels.shape[-1:])

  def run(f):
    loss = lambda v, c: jnp.sum(f(v, c).astype(jnp.float32) * weights)
    out = f(voxels, norm_coords)
    return (out, *jax.grad(loss, argnums=(0, 1))(voxels, norm_coords))

  kernel = jax.jit(lambda: run(lambda v, c: devox.devoxelize_trilinear(
      v, c, interpret=True, tiling=tiling)))()
  reference = jax.jit(lambda: run(devox.devoxelize_trilinear_reference))()
  return kernel, reference


@pytest.mark.parametrize("case", ["random_and_boundary", "one_point"])
def test_kernel_matches_reference_interpret(case):
  voxels, norm_coords = grid_and_points(2, 2, 37, 6, 4)
  norm_coords[0, :3] = [[3, 3, 3], [0, 0, 0], [3, 0, 1.5]]  # Grid corners and an edge.
  if case == "one_point":
    voxels, norm_coords = voxels[:1, ..., :3], norm_coords[:1, 2:3]
  kernel, reference = _both_paths(jnp.asarray(voxels), jnp.asarray(norm_coords))
  for got, want in zip(kernel, reference):
    np.testing.assert_allclose(got, want, atol=1e-5)
  assert not np.any(kernel[2]) and not np.any(reference[2])  # No gradient to coordinates.


def test_partial_point_tiles_forward():
  """37 points in tiles of 16 (the gather has no duplicate-id caveat in interpret mode)."""
  voxels, norm_coords = grid_and_points(3, 2, 37, 16, 4)
  got = jax.jit(lambda v, c: devox.devoxelize_trilinear(
      v, c, interpret=True, tiling=Tiling(points=16, channels=8)))(voxels, norm_coords)
  np.testing.assert_allclose(got, devoxelize_loop(voxels, norm_coords), atol=1e-5)


def test_adjoint_identity_and_bfloat16():
  """<devox(F), G> = <F, devox^T(G)>, with devox^T the kernel's scatter-add VJP."""
  voxels, norm_coords = grid_and_points(4, 2, 30, 8, 3)
  g = np.random.default_rng(5).normal(size=(2, 30, 8)).astype(np.float32)

  @jax.jit
  def run(v):
    out, vjp = jax.vjp(lambda v: devox.devoxelize_trilinear(v, norm_coords, interpret=True), v)
    return out, vjp(jnp.asarray(g, v.dtype))[0]

  out, transposed = run(jnp.asarray(voxels))
  np.testing.assert_allclose(np.vdot(out, g), np.vdot(voxels, transposed), rtol=1e-5)
  out16, transposed16 = run(jnp.asarray(voxels, jnp.bfloat16))
  assert out16.dtype == transposed16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(out16), out, rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(np.float32(transposed16), transposed, rtol=2e-2, atol=5e-2)


def test_bad_inputs_get_clear_errors():
  voxels, norm_coords = grid_and_points(6, 2, 10, 3, 4)
  with pytest.raises(ValueError, match=r"voxels must be \[batch, r, r, r, channels\]"):
    devox.devoxelize_trilinear(voxels[:, :3], norm_coords)
  with pytest.raises(ValueError, match=r"norm_coords must be \[batch, points, 3\]"):
    devox.devoxelize_trilinear(voxels, norm_coords[:1])
  if not ON_GPU:
    with pytest.raises(ValueError, match="backend='pallas' needs a GPU"):
      devox.devoxelize_trilinear(voxels, norm_coords, backend="pallas")
  norm_coords[0, 2, 1] = np.nan
  with pytest.raises(ValueError, match="1 non-finite"):
    devox.devoxelize_trilinear(voxels, norm_coords)
  out = jax.jit(lambda c: devox.devoxelize_trilinear(voxels, c, interpret=True))(norm_coords)
  assert np.isnan(out[0, 2]).all() and np.isfinite(np.delete(np.asarray(out), 2, 1)).all()
  assert devox.devoxelize_path(interpret=True) == _dispatch.PALLAS_INTERPRET


@pytest.mark.parametrize("shape,dtype", [((4, 5000, 64, 32), jnp.float32),
                                         ((2, 3000, 48, 64), jnp.float32),
                                         ((3, 1000, 6, 16), jnp.float32),
                                         ((4, 5000, 64, 32), jnp.bfloat16)])
@pytest.mark.gpu
@needs_gpu
def test_compiled_kernel_matches_reference_on_gpu(shape, dtype):
  batch, num_points, channels, r = shape
  voxels, norm_coords = grid_and_points(7, batch, num_points, channels, r)
  voxels = jnp.asarray(voxels, dtype)
  g = jax.random.normal(jax.random.PRNGKey(1), (batch, num_points, channels), dtype)

  def run(f):
    out, vjp = jax.vjp(lambda v: f(v, jnp.asarray(norm_coords)), voxels)
    return out, vjp(g)[0]

  assert devox.devoxelize_path("pallas") == _dispatch.PALLAS
  got = jax.jit(lambda: run(lambda v, c: devox.devoxelize_trilinear(v, c, backend="pallas")))()
  want = jax.jit(lambda: run(devox.devoxelize_trilinear_reference))()
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tolerance, atol=tolerance)
