"""k-means weight sharing against numpy cluster means and hand counts."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.quant import FULL_PRECISION
from lite_jax.nn.weight_sharing import (kmeans_1d, kmeans_size_bits, share_weights,
                                        snap_to_centroids)


def test_kmeans_finds_separated_clusters_and_centroids_are_member_means():
  rng = np.random.default_rng(0)
  groups = [rng.normal(center, 0.1, 50) for center in (-3.0, 0.0, 5.0)]
  values = rng.permutation(np.concatenate(groups))
  centroids, assignments = kmeans_1d(values, 3, seed=1, iters=20)
  np.testing.assert_allclose(centroids, [g.mean() for g in groups], rtol=1e-12)
  np.testing.assert_array_equal(assignments, np.digitize(values, [-1.5, 2.5]))
  # Any data: each centroid is the mean of its members, and members sit at their nearest one.
  values = rng.normal(0, 1, 500)
  centroids, assignments = kmeans_1d(values, 8, seed=2, iters=3)
  assert assignments.shape == (500,) and centroids.shape == (8,)
  assert np.all(np.diff(centroids) > 0)
  for j in range(8):
    np.testing.assert_allclose(centroids[j], values[assignments == j].mean(), rtol=1e-12)
  same = kmeans_1d(values, 8, seed=2, iters=3)
  np.testing.assert_array_equal(same[0], centroids)


def test_kmeans_with_fewer_distinct_values_than_clusters():
  centroids, assignments = kmeans_1d(np.array([5.0, 1.0, 2.0, 1.0, 2.0]), 8, seed=0, iters=3)
  np.testing.assert_array_equal(centroids, [1.0, 2.0, 5.0])
  np.testing.assert_array_equal(assignments, [2, 0, 1, 0, 1])


@pytest.fixture(scope="module")
def shared():
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": rng.normal(0, 1, (3, 3, 2, 4)).astype(np.float32)},
            "block": {"head": {"kernel": rng.normal(0, 1, (36, 3)).astype(np.float32),
                               "bias": np.ones(3, np.float32)}}}
  new, books = share_weights(params, {"conv": 2, "block/head": FULL_PRECISION}, seed=0,
                             iters=10)
  return params, new, books


def test_share_weights_leaves_at_most_2_pow_bits_values(shared):
  params, new, books = shared
  kernel = np.asarray(new["conv"]["kernel"])
  assert len(np.unique(kernel)) <= 4
  assert list(books) == ["conv"]
  np.testing.assert_array_equal(kernel, np.asarray(books["conv"]["centroids"])[
      np.asarray(books["conv"]["assignments"])])
  # Each weight moved to its nearest centroid.
  original = params["conv"]["kernel"]
  distances = np.abs(original[..., None] - np.asarray(books["conv"]["centroids"]))
  np.testing.assert_array_equal(books["conv"]["assignments"], distances.argmin(-1))
  np.testing.assert_array_equal(new["block"]["head"]["kernel"], params["block"]["head"]["kernel"])
  np.testing.assert_array_equal(new["block"]["head"]["bias"], params["block"]["head"]["bias"])


def test_snap_resets_clusters_to_member_means_and_keeps_assignments(shared):
  _, new, books = shared
  step = np.random.default_rng(1).normal(0, 0.1, (3, 3, 2, 4)).astype(np.float32)
  updated = {**new, "conv": {"kernel": new["conv"]["kernel"] - step}}
  snapped = jax.jit(snap_to_centroids)(updated, books)
  assignments = np.asarray(books["conv"]["assignments"])
  moved = np.asarray(updated["conv"]["kernel"])
  means = np.array([moved[assignments == j].mean() for j in range(4)])
  np.testing.assert_allclose(snapped["conv"]["kernel"], means[assignments], rtol=1e-6)
  np.testing.assert_array_equal(snapped["block"]["head"]["kernel"],
                                new["block"]["head"]["kernel"])


def test_padded_codebooks_have_one_shape_and_snap_the_same(shared):
  params, new, books = shared
  padded_new, padded = share_weights(params, {"conv": 2, "block/head": FULL_PRECISION}, seed=0,
                                     iters=10, pad_to=256)
  assert padded["conv"]["centroids"].shape == (256,)
  np.testing.assert_array_equal(padded_new["conv"]["kernel"], new["conv"]["kernel"])
  step = np.full((3, 3, 2, 4), 0.05, np.float32)
  moved = {**new, "conv": {"kernel": new["conv"]["kernel"] - step}}
  np.testing.assert_allclose(snap_to_centroids(moved, {"conv": padded["conv"]})["conv"]["kernel"],
                             snap_to_centroids(moved, {"conv": books["conv"]})["conv"]["kernel"])
  with pytest.raises(UserError, match="pad_to=2 is smaller than the 4 centroids"):
    share_weights(params, {"conv": 2}, seed=0, iters=10, pad_to=2)


def test_kmeans_size_and_errors():
  layers = [LayerInfo("conv", "conv", 2, 4, 3, 2, 1, 49, 9, 72, 648, 0),
            LayerInfo("head", "dense", 36, 3, 1, 0, 1, 1, 1, 108, 108, 1)]
  assert kmeans_size_bits(layers, {"conv": 2}) == 72 * 2 + 4 * 32 + 108 * 32
  assert kmeans_size_bits(layers, {"conv": 3, "head": 1}) == (72 * 3 + 8 * 32) + (108 + 2 * 32)
  with pytest.raises(UserError, match="w_bits\\['conv'\\] is 9; bits must be an integer in 1-8"):
    kmeans_size_bits(layers, {"conv": 9})
  with pytest.raises(UserError, match="'cnov' is not a conv or dense layer of the model; "
                                      "closest: conv"):
    share_weights({"conv": {"kernel": np.zeros((2, 2))}}, {"cnov": 2}, seed=0, iters=1)
