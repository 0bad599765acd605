"""kernels/voxelize.py: the reference against a float64 numpy loop, and the Pallas kernel
against the reference, forward and gradient (interpret mode on CPU, compiled on GPU)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import _dispatch
from kernels import voxelize as vox

ON_GPU = jax.default_backend() == "gpu"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="compiled Pallas kernels need a GPU")


def voxelize_loop(features, coords, resolution, normalize, eps=0.0):
  """PVCNN's voxelization written as plain loops in float64 (the tests' ground truth)."""
  batch, num_points, channels = features.shape
  r = resolution
  sums = np.zeros((batch, r, r, r, channels))
  counts = np.zeros((batch, r, r, r))
  norm_coords = np.zeros((batch, num_points, 3))
  for b in range(batch):
    centroid = [sum(float(p[a]) for p in coords[b]) / num_points for a in range(3)]
    centred = [[float(p[a]) - centroid[a] for a in range(3)] for p in coords[b]]
    radius = 2 * max(sum(v * v for v in p) ** 0.5 for p in centred) + eps
    for n, p in enumerate(centred):
      for a in range(3):
        if normalize:
          unit = (p[a] / radius if radius > 0 else 0.0) + 0.5
        else:
          unit = (p[a] + 1) / 2
        norm_coords[b, n, a] = min(max(unit * r, 0.0), r - 1.0)
      x, y, z = (round(v) for v in norm_coords[b, n])  # Python rounds half to even.
      sums[b, x, y, z] += features[b, n]
      counts[b, x, y, z] += 1
  return sums / np.maximum(counts, 1)[..., None], norm_coords


def cloud(seed, batch, num_points, channels, spread=0.9):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, num_points, channels)).astype(np.float32),
          rng.uniform(-spread, spread, (batch, num_points, 3)).astype(np.float32))


@pytest.mark.parametrize("normalize", [False, True])
def test_reference_matches_numpy_loop(normalize):
  features, coords = cloud(0, 3, 60, 5)
  voxels, norm_coords = vox.voxelize_reference(jnp.asarray(features), jnp.asarray(coords), 6,
                                               normalize=normalize)
  want_voxels, want_norm = voxelize_loop(features, coords, 6, normalize)
  np.testing.assert_allclose(norm_coords, want_norm, atol=1e-5)
  np.testing.assert_allclose(voxels, want_voxels, atol=1e-5)
  # PVCNN issues #27/#29: voxel outputs silently all zero. Occupied voxels must hold data.
  assert np.count_nonzero(np.any(np.asarray(voxels) != 0, axis=-1)) == np.count_nonzero(
      np.any(want_voxels != 0, axis=-1)) > 10


# Jitted once per signature: eager op-by-op dispatch compiles every small op separately.
normalize_coords = jax.jit(vox.normalize_coords, static_argnums=(1, 2))


def test_coordinate_semantics():
  r = 4
  # Centred x = +-0.25 -> (x + 1) / 2 * 4 = 2.5 and 1.5: both round half to even to voxel 2.
  coords = jnp.array([[[0.25, 0.0, 0.0], [-0.25, 0.0, 0.0]]])
  norm_coords = normalize_coords(coords, r)
  np.testing.assert_allclose(norm_coords[0, :, 0], [2.5, 1.5])
  np.testing.assert_array_equal(vox.voxel_ids(norm_coords, r), [[2 * 16 + 2 * 4 + 2] * 2])
  # normalize=True: the farthest point lands r/2 from the grid centre (here inside the grid).
  far = jnp.array([[[-3.0, -3.0, -3.0], [1.0, 1.0, 1.0], [1.0, 0.5, 1.0], [1.0, 1.0, 0.5]]])
  norm_coords = normalize_coords(far, 10, True)
  np.testing.assert_allclose(np.linalg.norm(norm_coords[0, 0] - 5.0), 5.0, rtol=1e-6)
  # Everything clamps into [0, r - 1]; all-identical points go to the centre, not NaN.
  _, coords = cloud(1, 2, 50, 1, spread=3.0)
  for normalize in (False, True):
    norm_coords = normalize_coords(jnp.asarray(coords), r, normalize)
    assert float(norm_coords.min()) >= 0 and float(norm_coords.max()) <= r - 1
  same = normalize_coords(jnp.ones((1, 5, 3)), r, True)
  np.testing.assert_array_equal(same, np.full((1, 5, 3), r / 2))


def _kernel_and_reference(features, coords, r, normalize=False):
  """Both paths' voxels, norm_coords and feature gradients of a fixed random linear loss."""
  weights = jax.random.normal(jax.random.PRNGKey(0), (coords.shape[0], r, r, r,
                                                      features.shape[-1]))

  def run(f):
    def loss(x):
      voxels, norm = f(x)
      return jnp.sum(voxels.astype(jnp.float32) * weights), (voxels, norm)
    grads, (voxels, norm) = jax.grad(loss, has_aux=True)(features)
    return voxels, norm, grads

  kernel = jax.jit(lambda: run(lambda x: vox.voxelize(x, coords, r, normalize=normalize,
                                                      interpret=True)))()
  reference = jax.jit(lambda: run(lambda x: vox.voxelize_reference(x, coords, r,
                                                                   normalize=normalize)))()
  return kernel, reference, weights


def edge_case_batch():
  """One batch, one edge case per sample (samples are normalized independently): random
  points, all points identical, points exactly on the boundary (centred at +-1: they land on
  0 and clamp to r - 1), and a cluster crowded into few voxels (many duplicate ids)."""
  features, coords = cloud(2, 4, 12, 6)
  coords[1] = 0.3
  coords[2] = np.resize([[1, -1, 0], [-1, 1, 0], [0, 0, 1], [0, 0, -1]], (12, 3))
  coords[3] *= 0.05
  return jnp.asarray(features), jnp.asarray(coords)


@pytest.fixture(scope="module", params=[False, True], ids=["unit_sphere", "normalized"])
def edge_cases(request):
  features, coords = edge_case_batch()
  return _kernel_and_reference(features, coords, 4, request.param)


def test_kernel_matches_reference_interpret(edge_cases):
  kernel, reference, _ = edge_cases
  for got, want in zip(kernel, reference):
    np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.all(np.any(np.asarray(kernel[0]).reshape(4, -1) != 0, axis=1))


def test_one_point():
  features, coords = cloud(3, 1, 1, 3)
  kernel, reference, _ = _kernel_and_reference(jnp.asarray(features), jnp.asarray(coords), 4,
                                               True)
  for got, want in zip(kernel, reference):
    np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(kernel[0][0, 2, 2, 2], features[0, 0])  # The grid centre.


def test_gradient_is_the_mean_gather(edge_cases):
  (_, norm, grads), _, weights = edge_cases
  ids = np.asarray(vox.voxel_ids(norm, 4))
  counts = np.stack([np.bincount(row, minlength=64) for row in ids])
  want = np.take_along_axis(np.asarray(weights).reshape(4, 64, 6), ids[..., None], 1)
  want /= np.take_along_axis(counts, ids, 1)[..., None]
  np.testing.assert_allclose(grads, want, atol=1e-6)


def test_bfloat16_accumulates_in_float32():
  features, coords = cloud(4, 2, 40, 8)
  features = jnp.asarray(features, jnp.bfloat16)
  (voxels, _, grads), (want_voxels, _, want_grads), _ = _kernel_and_reference(
      features, jnp.asarray(coords), 3)
  assert voxels.dtype == grads.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(voxels), np.float32(want_voxels), rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(np.float32(grads), np.float32(want_grads), rtol=1e-2, atol=1e-2)


def test_partial_point_tiles():
  """13 points in tiles of 8: the last tile's missing rows must add nothing anywhere."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(13, 16)), jnp.float32)
  ids = jnp.asarray(rng.permutation(40)[:13], jnp.int32)  # Unique: see the next test.
  weights = jnp.asarray(rng.uniform(size=13), jnp.float32)
  got = vox.scatter_add_rows(x, ids[None], weights[None], 40, vox.Tiling(points=8, channels=8),
                             True)
  want = jax.ops.segment_sum(x * weights[:, None], ids, 40)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_interpret_mode_loses_duplicate_ids_within_a_tile():
  """Documents jax#24117, the reason interpret mode runs one point per program: inside one
  atomic add, duplicate ids keep a single update (separate programs do accumulate). When this
  test fails, interpret mode handles duplicates and the tests may use bigger tiles."""
  ids = jnp.array([0, 1, 1, 3, 0, 0, 2, 3, 3, 6, 6, 5, 7, 7, 7, 7], jnp.int32)
  ones = jnp.ones((16, 8), jnp.float32)
  got = vox.scatter_add_rows(ones, ids[None], jnp.ones((1, 16)), 8, vox.Tiling(points=8), True)
  tiles_touching = [len({t for t in (0, 1) if row in np.asarray(ids[8 * t:8 * t + 8])})
                    for row in range(8)]
  np.testing.assert_array_equal(got[:, 0], tiles_touching)
  assert not np.array_equal(got, jax.ops.segment_sum(ones, ids, 8))


def test_bad_inputs_get_clear_errors():
  features, coords = cloud(6, 2, 10, 3)
  with pytest.raises(ValueError, match=r"coords must be \[batch, points, 3\]"):
    vox.voxelize(features, coords.transpose(0, 2, 1), 4)  # Channel-first by mistake.
  with pytest.raises(ValueError, match="features must be"):
    vox.voxelize(features[0], coords, 4)
  with pytest.raises(ValueError, match="resolution must be a positive int"):
    vox.voxelize(features, coords, 0)
  bad = coords.copy()
  bad[1, 3, 0] = np.inf
  with pytest.raises(ValueError, match="1 non-finite"):
    vox.voxelize(features, bad, 4)
  # Under jit the values are unknown: that sample turns NaN (its points all in voxel 0),
  # never an out-of-bounds write; the other sample is untouched.
  voxels, norm = jax.jit(lambda c: vox.voxelize(features, c, 4, interpret=True))(bad)
  assert np.isnan(norm[1]).all() and np.isfinite(norm[0]).all()
  flat = np.asarray(voxels[1]).reshape(64, 3)
  assert np.isnan(flat[0]).all() and not np.any(flat[1:])
  np.testing.assert_allclose(voxels[0], vox.voxelize_reference(features, coords, 4)[0][0],
                             atol=1e-6)


def test_path_selection_is_reported_and_never_silent(caplog):
  platform = jax.default_backend()
  want = _dispatch.PALLAS if ON_GPU else _dispatch.XLA
  _dispatch._logged.clear()
  with caplog.at_level(logging.INFO):
    assert vox.voxelize_path() == want
    assert vox.voxelize_path(interpret=True) == _dispatch.PALLAS_INTERPRET
  assert f"voxelize runs the {'compiled Pallas (Triton) kernel' if ON_GPU else 'XLA reference'}" \
      f" on {platform}." in caplog.text
  assert vox.voxelize_path("xla") == _dispatch.XLA
  with pytest.raises(ValueError, match="one of"):
    vox.voxelize_path("cuda")
  with pytest.raises(ValueError, match="interpret=True runs the Pallas kernel"):
    vox.voxelize_path("xla", interpret=True)
  if not ON_GPU:
    with pytest.raises(ValueError, match="backend='pallas' needs a GPU"):
      vox.voxelize(*cloud(7, 1, 4, 2), 4, backend="pallas")


@pytest.mark.parametrize("shape,dtype", [((4, 5000, 64, 32), jnp.float32),
                                         ((2, 3000, 48, 64), jnp.float32),
                                         ((3, 1000, 6, 16), jnp.float32),
                                         ((4, 5000, 64, 32), jnp.bfloat16)])
@pytest.mark.gpu
@needs_gpu
def test_compiled_kernel_matches_reference_on_gpu(shape, dtype):
  batch, num_points, channels, r = shape
  features, coords = cloud(8, batch, num_points, channels)
  features = jnp.asarray(features, dtype)
  weights = jax.random.normal(jax.random.PRNGKey(0), (batch, r, r, r, channels))

  def run(voxelize_fn):
    def loss(x):
      voxels, _ = voxelize_fn(x, jnp.asarray(coords), r, normalize=True)
      return jnp.sum(voxels.astype(jnp.float32) * weights), voxels
    return jax.jit(jax.grad(loss, has_aux=True))(features)

  assert vox.voxelize_path("pallas") == _dispatch.PALLAS
  (grads, voxels) = run(lambda *a, **k: vox.voxelize(*a, backend="pallas", **k))
  (want_grads, want_voxels) = run(vox.voxelize_reference)
  tolerance = 1e-5 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.float32(voxels), np.float32(want_voxels), rtol=tolerance,
                             atol=tolerance)
  np.testing.assert_allclose(np.float32(grads), np.float32(want_grads), rtol=tolerance,
                             atol=tolerance)
