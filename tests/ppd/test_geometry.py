"""PPD geometry: IoU against closed forms, the shape F1's matching, voxelization and its errors."""

import math

import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry as g


def _prims(shapes, sizes, positions, yaws=None):
  n = len(shapes)
  yaws = np.zeros(n) if yaws is None else np.asarray(yaws, np.float64)
  quat = np.stack([np.cos(yaws / 2), 0 * yaws, 0 * yaws, np.sin(yaws / 2)], -1)
  return g.Primitives(np.asarray(shapes, np.int32), np.asarray(sizes, np.float64),
                      np.asarray(positions, np.float64), quat, np.full(n, 500.0))


def test_axis_aligned_box_iou_is_exact():
  a = _prims([g.BOX], [[2, 1, 1]], [[0, 0, 0]])
  b = _prims([g.BOX, g.BOX, g.BOX], [[2, 1, 1], [2, 1, 1], [1, 2, 1]],
             [[0, 0, 0], [1, 0, 0], [5, 0, 0]])
  iou = g.pairwise_iou(a, b)
  # identical -> 1; shifted by half its length -> 1 / (2 + 2 - 1); disjoint -> 0.
  np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]], atol=1e-15)
  # A quarter turn maps axes onto axes: still the exact path; [1, 2] vs [2, 1] cross.
  turned = _prims([g.BOX], [[1, 2, 1]], [[0, 0, 0]], yaws=[math.pi / 2])
  assert g.pairwise_iou(a, turned)[0, 0] == pytest.approx(1.0, abs=1e-12)
  crossed = _prims([g.BOX], [[1, 2, 1]], [[0, 0, 0]])
  assert g.pairwise_iou(a, crossed)[0, 0] == pytest.approx(1 / 3, abs=1e-12)


def test_rotated_iou_estimate_matches_closed_forms():
  # A square against itself turned 45 degrees: the overlap is the regular octagon of area
  # 2 (sqrt 2 - 1) s^2, so IoU = sqrt(2) / 2.
  square = _prims([g.BOX], [[1, 1, 0.5]], [[0, 0, 0]])
  turned = _prims([g.BOX], [[1, 1, 0.5]], [[0, 0, 0]], yaws=[math.pi / 4])
  estimate = g.pairwise_iou(square, turned)[0, 0]
  assert abs(estimate - math.sqrt(2) / 2) < 0.015  # 3.5 x the measured error std
  assert g.pairwise_iou(square, turned, seed=0)[0, 0] == estimate  # seeded
  # A cylinder inscribed in a box: pi / 4 (every sample of the smaller one is inside).
  cylinder = _prims([g.CYLINDER], [[1, 1, 0.5]], [[0, 0, 0]], yaws=[0.3])
  assert g.pairwise_iou(cylinder, square)[0, 0] == pytest.approx(math.pi / 4, abs=1e-12)
  assert g.pairwise_iou(square, cylinder)[0, 0] == pytest.approx(math.pi / 4, abs=1e-12)
  # Half a cylinder's height overlapping: 1/3 up to the sampling error.
  lifted = _prims([g.CYLINDER], [[1, 1, 0.5]], [[0, 0, 0.25]], yaws=[1.0])
  assert abs(g.pairwise_iou(cylinder, lifted)[0, 0] - 1 / 3) < 0.01
  far = _prims([g.CYLINDER], [[1, 1, 0.5]], [[3, 0, 0]])
  assert g.pairwise_iou(cylinder, far)[0, 0] == 0.0
  # In a mixed set, axis-aligned box pairs keep their exact value.
  mixed = _prims([g.BOX, g.BOX], [[1, 1, 0.5]] * 2, [[0.5, 0, 0], [0, 0, 0]], yaws=[0, 0.7])
  iou = g.pairwise_iou(mixed, square)
  assert iou[0, 0] == pytest.approx(1 / 3, abs=1e-15) and 0.5 < iou[1, 0] < 1


def test_volumes_and_masses():
  p = _prims([g.BOX, g.CYLINDER], [[0.1, 0.2, 0.3], [0.2, 0.2, 0.5]], [[0, 0, 0]] * 2)
  np.testing.assert_allclose(g.volumes(p), [0.006, math.pi * 0.01 * 0.5], rtol=1e-12)
  np.testing.assert_allclose(g.masses(p), 500 * g.volumes(p), rtol=1e-12)


def test_shape_f1_matches_one_to_one_above_half_iou():
  truth = _prims([g.BOX, g.BOX], [[1, 1, 1]] * 2, [[0, 0, 0], [0, 0, 1]])
  assert g.shape_f1(truth, truth)["f1"] == 1.0
  # An extra disjoint prediction: tp 2 of 3 predictions -> F1 = 4 / 5.
  extra = _prims([g.BOX] * 3, [[1, 1, 1]] * 3, [[0, 0, 0], [0, 0, 1], [9, 9, 9]])
  result = g.shape_f1(extra, truth)
  assert (result["tp"], result["precision"], result["recall"]) == (2, 2 / 3, 1.0)
  assert result["f1"] == pytest.approx(0.8)
  # Two predictions on one truth count once (one-to-one).
  twice = _prims([g.BOX] * 2, [[1, 1, 1]] * 2, [[0, 0, 0], [0, 0, 0.01]])
  assert g.shape_f1(twice, truth.take([0]))["tp"] == 1
  # IoU exactly 1/3 (half shifted) is not a hit; > 0.5 is.
  shifted = _prims([g.BOX], [[1, 1, 1]], [[0.5, 0, 0]])
  assert g.shape_f1(shifted, truth.take([0]))["tp"] == 0
  near = _prims([g.BOX], [[1, 1, 1]], [[0.2, 0, 0]])  # IoU 0.8 / 1.2 = 2/3
  assert g.shape_f1(near, truth.take([0]))["f1"] == 1.0
  empty = truth.take(np.zeros(2, bool))
  assert g.shape_f1(empty, truth)["f1"] == 0.0 and g.shape_f1(empty, empty)["f1"] == 1.0


def test_voxelize_counts_voxel_centres_inside():
  cell = 0.5 / 32  # the default grid's voxel side
  # A box spanning exactly 4 x 4 x 4 voxels (edges on voxel faces) fills 64 of them.
  box = _prims([g.BOX], [[4 * cell, 4 * cell, 4 * cell]], [[0, 0, 2 * cell]])
  voxels = g.voxelize(box)
  assert voxels.shape == (32, 32, 32) and voxels.dtype == bool and voxels.sum() == 64
  assert voxels[14:18, 14:18, 0:4].all()
  # A cylinder: the voxel count approaches its volume / cell^3 (independent of the test above).
  cyl = _prims([g.CYLINDER], [[0.3, 0.3, 0.2]], [[0, 0, 0.1]])
  assert abs(g.voxelize(cyl).sum() * cell ** 3 / g.volumes(cyl)[0] - 1) < 0.03
  assert g.voxelize(box, resolution=8).shape == (8, 8, 8)


def test_voxel_grid_size_errors():
  box = _prims([g.BOX], [[0.1, 0.1, 0.1]], [[0, 0, 0.05]])
  for bad in (0, -3, 2.5, True):
    with pytest.raises(UserError, match="voxel resolution must be a positive integer"):
      g.voxelize(box, resolution=bad)
  with pytest.raises(UserError, match=r"voxels must be a 32x32x32 grid .* got shape "
                                      r"\(16, 16, 16\)"):
    g.check_voxel_grid(np.zeros((16, 16, 16)))
  assert g.check_voxel_grid(np.zeros((2, 32, 32, 32))).shape == (2, 32, 32, 32)


def test_primitives_validate_shapes():
  with pytest.raises(UserError, match=r"primitives.size must have shape \(2, 3\)"):
    g.Primitives(np.zeros(2, int), np.ones((2, 2)), np.zeros((2, 3)), np.ones((2, 4)),
                 np.ones(2))
  with pytest.raises(UserError, match="must hold 0 \\(box\\) or 1 \\(cylinder\\)"):
    g.Primitives(np.full(1, 7), np.ones((1, 3)), np.zeros((1, 3)), np.ones((1, 4)),
                 np.ones(1))
