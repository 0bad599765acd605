"""PSD metrics against hand-computed values and a brute-force (loops + permutations) reference."""

import itertools

import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.psd import metrics


def _scenes():
  """Two 8x8 scenes: circle top-left 4x4, square bottom-right 4x4 (both scenes), triangle
  bottom-left 4x4 (scene 1 only)."""
  ids = np.zeros((2, 8, 8), np.int32)
  ids[:, :4, :4] = 1
  ids[:, 4:, 4:] = 2
  ids[1, 4:, :4] = 3
  return ids


def test_perfect_masks_in_permuted_order_score_one():
  ids = _scenes()
  masks = np.stack([ids == 2, ids == 3, ids == 1], 1).astype(np.float32)  # dims: sq, tri, circ
  result = metrics.part_iou(masks, ids)
  assert result["part_iou"] == pytest.approx(1.0)
  assert result["per_object"] == pytest.approx([1.0, 1.0, 1.0])
  assert result["assignment"] == {1: 2, 2: 0, 3: 1}
  assert result["present_scenes"] == [2, 2, 1]


def test_half_overlap_gives_the_hand_computed_iou():
  ids = np.zeros((1, 8, 8), np.int32)
  ids[0, 4:, 4:] = 2  # Square: 16 pixels; circle and triangle absent.
  mask = np.full((1, 1, 8, 8), 0.3, np.float32)  # Below the 0.5 threshold: not the part.
  mask[0, 0, 4:6, 4:] = 0.7  # Upper half of the square: 8 pixels.
  mask[0, 0, 0:2, 0:4] = 0.9  # 8 background pixels.
  result = metrics.part_iou(mask, ids)
  assert result["per_object"][1] == pytest.approx(8 / 24)  # |I| 8, |U| 16 + 16 - 8.
  assert np.isnan(result["per_object"][0]) and np.isnan(result["per_object"][2])
  assert result["part_iou"] == pytest.approx(8 / 24)  # Objects in no scene are not averaged.
  assert metrics.part_iou(mask, ids, threshold=0.2)["part_iou"] == pytest.approx(16 / 64)


def test_an_unmatched_object_scores_zero_in_the_mean():
  ids = _scenes()
  masks = (ids == 2)[:, None].astype(np.float32)  # One dim for three objects.
  result = metrics.part_iou(masks, ids)
  assert result["assignment"] == {2: 0}
  assert result["per_object"] == pytest.approx([0.0, 1.0, 0.0])
  assert result["part_iou"] == pytest.approx(1 / 3)


def _brute_force_part_iou(binary, ids, num_objects):
  """Set arithmetic per (object, dim) over the scenes where the object is present, then the
  best of every injective object -> dim map."""
  n, k = binary.shape[:2]
  iou = np.zeros((num_objects, k))
  for o in range(1, num_objects + 1):
    inter = union = 0
    for s in range(n):
      if not np.any(ids[s] == o):
        continue
      for y in range(ids.shape[1]):
        for x in range(ids.shape[2]):
          if ids[s, y, x] < 0:
            continue
          inter += np.array([binary[s, d, y, x] and ids[s, y, x] == o for d in range(k)])
          union += np.array([binary[s, d, y, x] or ids[s, y, x] == o for d in range(k)])
    iou[o - 1] = np.where(np.asarray(union) > 0, inter / np.maximum(union, 1), 0)
  best = max(sum(iou[o, d] for o, d in enumerate(perm))
             for perm in itertools.permutations(range(k), num_objects))
  return iou, best / num_objects


def test_random_masks_match_a_brute_force_reference():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 4, size=(5, 6, 7)).astype(np.int32)
  ids[0, :2] = -1  # Unknown pixels are left out of every count.
  ids[2][ids[2] == 3] = 1  # Scene 2 has no triangle.
  masks = rng.uniform(size=(5, 4, 6, 7)).astype(np.float32)
  masks[:, 1] = np.maximum(masks[:, 1], ids == 2)  # Dim 1 contains the square.
  iou, best_mean = _brute_force_part_iou(masks >= 0.5, ids, 3)
  result = metrics.part_iou(masks, ids)
  np.testing.assert_allclose(result["iou_matrix"], iou, rtol=1e-12)
  assert result["part_iou"] == pytest.approx(best_mean)
  assert len(set(result["assignment"].values())) == 3


def test_unknown_ids_are_ignored_and_all_unknown_is_a_user_error():
  ids = _scenes()
  masks = np.stack([ids == 1, ids == 2, ids == 3], 1).astype(np.float32)
  masks[:, :, 0, 7] = 1.0  # A background pixel in every mask: hurts where the id is known.
  assert metrics.part_iou(masks, ids)["part_iou"] < 1.0
  ids[:, 0, 7] = -1
  assert metrics.part_iou(masks, ids)["part_iou"] == pytest.approx(1.0)
  with pytest.raises(UserError, match="needs ground-truth object ids"):
    metrics.part_iou(masks, np.full_like(ids, -1))


def test_foreground_baseline_on_a_hand_made_scene():
  ids = _scenes()
  flow = np.zeros((2, 8, 8, 2), np.float32)
  flow[ids > 0] = (0.01, -0.02)
  # One mask = all three objects. Circle and square: |I| 16 + 16, |U| 32 + 48 in the two
  # scenes; triangle (scene 1 only): 16 / 48.
  expected = (32 / 80 + 32 / 80 + 16 / 48) / 3
  assert metrics.foreground_baseline_iou(ids, flow) == pytest.approx(expected)
  flow[1][ids[1] == 3] = 0  # A stationary triangle is not moving foreground.
  expected = (32 / 64 + 32 / 64 + 0) / 3
  assert metrics.foreground_baseline_iou(ids, flow) == pytest.approx(expected)


# Active dims 18 (circle), 9 (square), 0 (triangle) as in the reference's Shapes demo, plus an
# active dim 5 matched to no object.
DIMS = (18, 9, 0, 5)
ASSIGNMENT = {1: 0, 2: 1, 3: 2}


def _probs(*edges):
  probs = np.full((32, 32), 1 / (1 + np.exp(10.0)))  # sigmoid(-10), the init.
  for i, j in edges:
    probs[i, j] = 0.99
  return probs


def test_hierarchy_correct_tree():
  result = metrics.hierarchy(_probs((18, 9), (18, 0), (3, 7)), DIMS, ASSIGNMENT)
  assert result["hierarchy_correct"]
  assert sorted(result["expected_edges"]) == [(18, 0), (18, 9)]
  assert sorted(e[:2] for e in result["edges"]) == [(18, 0), (18, 9)]  # (3, 7) not active.
  assert result["edges"][0][2] == pytest.approx(0.99)


@pytest.mark.parametrize("edges", [
    [(9, 18), (18, 0)],  # Swapped parent.
    [(18, 9), (18, 0), (9, 0)],  # Extra edge.
    [(18, 9)],  # Missing edge.
    [(18, 9), (18, 0), (18, 5)],  # Edge to the active dim matched to no object.
    [(18, 9), (0, 18)],  # Child as parent.
])
def test_hierarchy_wrong_trees(edges):
  assert not metrics.hierarchy(_probs(*edges), DIMS, ASSIGNMENT)["hierarchy_correct"]


def test_hierarchy_with_two_objects_matched():
  dims, assignment = (18, 9), {1: 0, 2: 1}  # Circle and square only.
  result = metrics.hierarchy(_probs((18, 9)), dims, assignment)
  assert result["hierarchy_correct"] and result["expected_edges"] == [(18, 9)]
  assert not metrics.hierarchy(_probs(), dims, assignment)["hierarchy_correct"]
  # Square and triangle without the circle: no parent -> child pair to recover.
  assert not metrics.hierarchy(_probs(), dims, {2: 0, 3: 1})["hierarchy_correct"]


def test_hierarchy_rejects_logits():
  with pytest.raises(ValueError, match="sigmoid"):
    metrics.hierarchy(np.full((32, 32), -10.0), DIMS, ASSIGNMENT)


def test_dimension_statistics_closed_form():
  mean = np.array([[1.0, 0.0], [3.0, 0.0]])
  log_var = np.array([[0.0, np.log(4.0)], [0.0, np.log(0.25)]])
  stats = metrics.dimension_statistics(mean, log_var)
  # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - ln s.
  kl_dim1 = ((4 - 1) / 2 - np.log(2) + (0.25 - 1) / 2 + np.log(2)) / 2
  np.testing.assert_allclose(stats["kl"], [(0.5 + 4.5) / 2, kl_dim1])
  np.testing.assert_allclose(stats["mean_range"], [2.0, 0.0])
  np.testing.assert_allclose(stats["log_var_mean"], [0.0, 0.0], atol=1e-12)


def test_three_active_dims_among_collapsed_ones():
  rng = np.random.default_rng(0)
  mean = rng.normal(0, 0.01, size=(256, 32))  # Collapsed: posterior ~ the prior.
  log_var = rng.normal(0, 0.01, size=(256, 32))
  for dim, scale in ((5, 1.0), (17, 3.0), (30, 0.5)):
    mean[:, dim] = rng.normal(0, scale, size=256)
    log_var[:, dim] = -4.0
  assert metrics.select_active_dimensions(mean, log_var) == (17, 5, 30)
  assert metrics.select_active_dimensions(mean, log_var, max_dims=2) == (17, 5)
  with pytest.raises(UserError, match="no latent dimension is active"):
    metrics.select_active_dimensions(mean, log_var, min_kl=100.0)


def test_flow_epe_on_a_known_offset():
  true = np.random.default_rng(0).uniform(-0.2, 0.2, size=(2, 4, 4, 2))
  pred = true + np.array([3.0, -4.0]) / 128  # 5 pixels at 128 px per image width.
  assert metrics.flow_epe(pred, true, 128) == pytest.approx(5.0)
  assert metrics.flow_epe(true, true, 128) == 0.0
  with pytest.raises(ValueError):
    metrics.flow_epe(pred[..., :1], true[..., :1], 128)
