"""k-means weight sharing (Deep Compression, HAQ's k-means mode) for any Flax model's kernels.

A layer with b bits stores 2^b shared values (its codebook) and one b-bit index per weight, so
the kernel can only take codebook values. `share_weights` clusters each listed kernel's scalars
with 1-D k-means (k-means++ seeding, Lloyd iterations; the reference uses sklearn with the
same recipe) and replaces every weight by its centroid. Fine-tuning then keeps the clusters:
after each optimizer step, `snap_to_centroids` resets every cluster to the mean of its
members, as the reference's `kmeans_update_model` does after every step (with plain SGD this
is the averaged-gradient update of the shared value). The assignments never change.

Clustering runs once per policy on the host, in numpy; the snap is jittable.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.quant import FULL_PRECISION, MAX_BITS, kernel_at, with_kernel

Codebooks = dict[str, dict[str, jax.Array]]


def _nearest(values: np.ndarray, sorted_centroids: np.ndarray) -> np.ndarray:
  """Index of the nearest centroid (the lower one on ties), by the midpoints between them."""
  midpoints = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
  return np.searchsorted(midpoints, values, side="left")


def _kmeans_plus_plus(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k seeds: the first uniform, each next one drawn with probability ~ squared distance to
  the nearest seed so far (needs more than k distinct values, so the distances never all
  vanish)."""
  seeds = [values[rng.integers(values.size)]]
  distance2 = (values - seeds[0]) ** 2
  for _ in range(1, k):
    cumulative = np.cumsum(distance2)
    pick = np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")
    seeds.append(values[pick])
    distance2 = np.minimum(distance2, (values - seeds[-1]) ** 2)
  return np.sort(np.asarray(seeds))


def kmeans_1d(values: np.ndarray, k: int, *, seed: int | Sequence[int],
              iters: int) -> tuple[np.ndarray, np.ndarray]:
  """1-D k-means of scalars: k-means++ seeding, then `iters` Lloyd iterations.

  Each iteration assigns every value to its nearest centroid and moves each centroid to the
  mean of its members (an empty cluster keeps its centroid), stopping early once nothing
  moves. The result ends with a mean step, so each centroid is the mean of its members.
  With at most k distinct values, the centroids are exactly those values.

  Args:
    values: any shape; flattened.
    k: number of clusters, >= 1.
    seed: `np.random.default_rng` seed of the k-means++ draws.
    iters: Lloyd iterations, >= 1 (the reference: 3 during search, 50 at the end).

  Returns:
    centroids: [min(k, distinct values)], ascending, in the values' float dtype (float32 for
      non-float input).
    assignments: [values.size] int32 indices into `centroids`.
  """
  if k < 1 or iters < 1:
    raise UserError(f"k-means needs k >= 1 and iters >= 1, got k={k}, iters={iters}.")
  array = np.asarray(values)
  if array.size == 0:
    raise UserError("values is empty; k-means needs at least one value.")
  dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)
  flat = array.astype(np.float64).ravel()
  distinct, inverse = np.unique(flat, return_inverse=True)
  if distinct.size <= k:
    return distinct.astype(dtype), inverse.ravel().astype(np.int32)

  centroids = _kmeans_plus_plus(flat, k, np.random.default_rng(seed))
  for _ in range(iters):
    order = np.argsort(centroids, kind="stable")
    centroids = centroids[order]
    assignments = _nearest(flat, centroids)
    counts = np.bincount(assignments, minlength=k)
    sums = np.bincount(assignments, weights=flat, minlength=k)
    moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    converged = np.array_equal(moved, centroids)
    centroids = moved
    if converged:
      break
  # Empty clusters may leave the means unsorted; sort and renumber the members to match.
  order = np.argsort(centroids, kind="stable")
  rank = np.empty(k, np.int64)
  rank[order] = np.arange(k)
  return centroids[order].astype(dtype), rank[assignments].astype(np.int32)


def _check_w_bits(w_bits: Mapping[str, int]) -> None:
  for path, bits in w_bits.items():
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not (
        1 <= bits <= MAX_BITS or bits == FULL_PRECISION):
      raise UserError(f"w_bits[{path!r}] is {bits!r}; bits must be an integer in 1-{MAX_BITS}, "
                      f"or FULL_PRECISION ({FULL_PRECISION}) to leave the layer unshared.")


def share_weights(params: Any, w_bits: Mapping[str, int], *, seed: int, iters: int,
                  pad_to: int | None = None) -> tuple[Any, Codebooks]:
  """Each listed layer's kernel clustered into 2^bits shared values.

  Args:
    params: the `params` collection of a Flax model (the tree an optimizer updates).
    w_bits: `{layer_path: bits}`, bits in 1-8; FULL_PRECISION leaves a layer as it is.
    seed: k-means++ seed; layer i (in sorted path order) uses `default_rng([seed, i])`.
    iters: Lloyd iterations per layer.
    pad_to: give every codebook this many entries (unused ones are 0), so codebooks of
      different bit widths have one shape and a jitted step compiles once for all policies.

  Returns:
    params: the same tree with every listed kernel replaced by its centroids.
    codebooks: `{path: {"centroids": [k] , "assignments": int32 kernel-shaped}}` for the
      shared layers (k = min(2^bits, distinct weights)).
  """
  _check_w_bits(w_bits)
  codebooks: Codebooks = {}
  for index, path in enumerate(sorted(w_bits)):
    kernel = kernel_at(params, path)
    if w_bits[path] == FULL_PRECISION:
      continue
    centroids, assignments = kmeans_1d(np.asarray(kernel), 2 ** w_bits[path], seed=[seed, index],
                                       iters=iters)
    assignments = assignments.reshape(kernel.shape)
    params = with_kernel(params, path, jnp.asarray(centroids[assignments], kernel.dtype))
    if pad_to is not None:
      if pad_to < len(centroids):
        raise UserError(f"pad_to={pad_to} is smaller than the {len(centroids)} centroids of "
                        f"{path!r}.")
      centroids = np.pad(centroids, (0, pad_to - len(centroids)))
    codebooks[path] = {"centroids": jnp.asarray(centroids),
                       "assignments": jnp.asarray(assignments)}
  return params, codebooks


def snap_to_centroids(params: Any, codebooks: Codebooks) -> Any:
  """Every shared kernel's clusters reset to the means of their members (jittable).

  Args:
    params: the `params` collection after an optimizer step.
    codebooks: from `share_weights`; the assignments are kept, the stored centroids are only
      used for clusters without members.

  Returns:
    params with each shared kernel holding one value per cluster.
  """
  for path, book in codebooks.items():
    kernel = kernel_at(params, path)
    members = book["assignments"].reshape(-1)
    k = book["centroids"].shape[0]
    flat = kernel.reshape(-1).astype(jnp.float32)
    sums = jax.ops.segment_sum(flat, members, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(flat), members, num_segments=k)
    means = jnp.where(counts > 0, sums / jnp.maximum(counts, 1), book["centroids"])
    params = with_kernel(params, path, means[members].reshape(kernel.shape).astype(kernel.dtype))
  return params


def kmeans_size_bits(layers: list[LayerInfo], w_bits: Mapping[str, int]) -> int:
  """Storage of the shared kernels in bits: `n_weights * bits + 2^bits * 32` per shared layer
  (indices plus a float32 codebook), `n_weights * 32` for the others; biases are not counted,
  and a layer called several times is stored once."""
  _check_w_bits(w_bits)
  unique = {layer.path: layer for layer in layers}
  unknown = sorted(set(w_bits) - set(unique))
  if unknown:
    raise UserError(f"w_bits names {unknown}, which are not conv or dense layers of the model.")
  total = 0
  for path, layer in unique.items():
    bits = w_bits.get(path, FULL_PRECISION)
    total += (layer.n_weights * 32 if bits == FULL_PRECISION
              else layer.n_weights * bits + 2 ** bits * 32)
  return total
