"""Fine-grained magnitude pruning, sensitivity analysis and sparse storage accounting.

Deep Compression (Han et al., 2016) and the "fine-grained sensitivity pruning" the Lite
Transformer paper uses for its 18.2x: every weight tensor loses its smallest-magnitude
elements, each tensor (or group of tensors) at its own sparsity, chosen from how much the
validation loss rises when that group alone is pruned. Everything here works on any parameter
pytree through leaf names ('encoder/layer_0/ffn/hidden/kernel'), so a paper picks its groups
by name and reuses the rest:

* `magnitude_mask` / `magnitude_masks` / `apply_masks`: exact-count masks, kept fixed while
  fine-tuning (apply them after each optimizer step).
* `sensitivity_scan` / `choose_sparsities`: probe groups at several sparsities, then the
  largest sparsity per group within a loss tolerance, or the smallest common tolerance that
  reaches a target overall sparsity.
* `compressed_bytes` / `storage_report`: the honest size of the result. A compressed tensor is
  stored either as a bitmask (one bit per element) plus the `bits`-bit codes of its nonzero
  elements, or as dense `bits`-bit codes, whichever is smaller, plus one float32 scale (per-
  tensor symmetric quantization); every other leaf is stored densely in its own dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.nn.quant import fake_quant

SCALE_BYTES = 4  # one float32 scale per quantized tensor


def leaf_name(path: jax.tree_util.KeyPath) -> str:
  """'/'-joined keys of a pytree path, e.g. 'decoder/layer_0/ffn/hidden/kernel'."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def named_leaves(tree: Any) -> dict[str, Any]:
  """`{leaf_name: leaf}` of a pytree, in flattening order."""
  return {leaf_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def is_weight(name: str) -> bool:
  """Flax's names for weight tensors: dense/conv/attention kernels and embedding tables
  (biases and normalization scales are not pruned or quantized)."""
  last = name.rsplit("/", 1)[-1]
  return last.endswith("kernel") or last == "embedding"


def magnitude_mask(weight: jax.Array, sparsity: float) -> jax.Array:
  """Keeps all but the `round(sparsity * size)` smallest-magnitude elements.

  Ties are broken by position, so exactly that many elements are pruned.

  Args:
    weight: any shape.
    sparsity: fraction of elements to prune, in [0, 1].

  Returns:
    A boolean mask of `weight`'s shape, True = kept.
  """
  if not 0.0 <= sparsity <= 1.0:
    raise ValueError(f"sparsity must be in [0, 1], got {sparsity}.")
  return _keep_all_but_smallest(weight, round(sparsity * weight.size))


@jax.jit  # the count is traced: one program per weight shape serves every sparsity level
def _keep_all_but_smallest(weight: jax.Array, pruned: jax.Array) -> jax.Array:
  order = jnp.argsort(jnp.abs(weight).ravel(), stable=True)
  rank = jnp.zeros(weight.size, jnp.int32).at[order].set(jnp.arange(weight.size,
                                                                    dtype=jnp.int32))
  return (rank >= pruned).reshape(weight.shape)


def magnitude_masks(params: Any, sparsities: Mapping[str, float]) -> dict[str, jax.Array]:
  """`{leaf name: magnitude_mask(leaf, sparsity)}` for each named leaf of `params`."""
  leaves = named_leaves(params)
  missing = sorted(set(sparsities) - set(leaves))
  if missing:
    raise ValueError(f"sparsities name leaves that params lacks: {missing[:3]}.")
  return {name: magnitude_mask(leaves[name], s) for name, s in sparsities.items()}


def _map_named(fn: Callable[[str, jax.Array], jax.Array], tree: Any) -> Any:
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(leaf_name(p), x), tree)


def apply_masks(params: Any, masks: Mapping[str, jax.Array]) -> Any:
  """`params` with the masked-out elements of each masked leaf set to zero (jit-safe)."""
  return _map_named(lambda name, x: jnp.where(masks[name], x, 0) if name in masks else x,
                    params)


def quantize_weights(params: Any, names: Sequence[str] | Mapping[str, Any], bits: int) -> Any:
  """The named leaves fake-quantized to `bits` (symmetric, one scale per tensor: max |w|).

  Zeros stay zero, so a pruned tensor keeps its mask; the scale is not differentiated (the
  straight-through rounding is), so this can sit inside a quantization-aware training loss.
  """
  return _quantize_named(params, tuple(sorted(names)), bits)


@functools.partial(jax.jit, static_argnums=(1, 2))  # eagerly: a few XLA ops per leaf shape
def _quantize_named(params: Any, names: tuple[str, ...], bits: int) -> Any:
  def quantize(name, x):
    if name not in names:
      return x
    clip = jax.lax.stop_gradient(jnp.max(jnp.abs(x)))
    return fake_quant(x, bits, clip, signed=True)
  return _map_named(quantize, params)


# ------------------------------------------------------------------------------------------
# Sensitivity
# ------------------------------------------------------------------------------------------


def sensitivity_scan(params: Any, groups: Mapping[str, Sequence[str]], levels: Sequence[float],
                     loss_fn: Callable[[Any], float], *,
                     progress: Callable[[Any], Any] = lambda it: it
                     ) -> dict[str, list[float]]:
  """Loss with one group pruned at a time, at each level (nothing else pruned).

  Args:
    params: the trained parameters.
    groups: group name -> the leaf names pruned together (each leaf at the level).
    levels: the sparsities probed.
    loss_fn: `params -> validation loss` (a float).
    progress: wraps the iteration over (group, level) pairs, e.g. a progress bar.

  Returns:
    group -> losses, one per level.
  """
  curves = {group: [] for group in groups}
  for group, level in progress([(g, s) for g in groups for s in levels]):
    masks = magnitude_masks(params, {name: level for name in groups[group]})
    curves[group].append(float(loss_fn(apply_masks(params, masks))))
  return curves


def _within(curve: Sequence[float], levels: Sequence[float], baseline: float,
            tolerance: float) -> float:
  """The largest level reached before the curve first rises more than `tolerance` above
  `baseline` (0 if at once)."""
  chosen = 0.0
  for level, loss in zip(levels, curve):
    if loss - baseline > tolerance:
      break
    chosen = level
  return chosen


def choose_sparsities(curves: Mapping[str, Sequence[float]], levels: Sequence[float],
                      baseline: float, *, tolerance: float, sizes: Mapping[str, int] | None = None,
                      target_sparsity: float = 0.0) -> tuple[dict[str, float], float]:
  """Per-group sparsity: the largest probed level (levels ascending) before the group's loss
  rises more than a tolerance above `baseline`.

  With `target_sparsity` > 0 the tolerance is not `tolerance` but the smallest loss increase
  seen in the curves at which the chosen sparsities, weighted by `sizes` (group -> element
  count), prune at least that fraction of all elements (or the largest, if none does): the
  less sensitive groups are pruned harder, as a sensitivity-ordered target.

  Returns:
    (group -> sparsity, the tolerance used).
  """
  if list(levels) != sorted(levels):
    raise ValueError(f"levels must be ascending, got {list(levels)}.")

  def choose(tol):
    return {g: _within(curve, levels, baseline, tol) for g, curve in curves.items()}

  if target_sparsity <= 0.0:
    return choose(tolerance), tolerance
  if sizes is None:
    raise ValueError("target_sparsity needs the groups' sizes.")
  total = sum(sizes[g] for g in curves)
  candidates = sorted({max(loss - baseline, 0.0) for c in curves.values() for loss in c})
  for tol in candidates:
    chosen = choose(tol)
    if sum(chosen[g] * sizes[g] for g in chosen) >= target_sparsity * total:
      return chosen, tol
  return choose(candidates[-1]), candidates[-1]


# ------------------------------------------------------------------------------------------
# Storage accounting
# ------------------------------------------------------------------------------------------


def compressed_bytes(size: int, nonzeros: int, bits: int) -> tuple[int, str]:
  """Bytes of one quantized tensor of `size` elements, `nonzeros` of them nonzero.

  'bitmask': ceil(size / 8) mask bytes + the nonzero codes packed at `bits` each; 'dense':
  every element's code packed at `bits`; whichever is smaller, plus a float32 scale.

  Returns:
    (bytes, format name).
  """
  sparse = math.ceil(size / 8) + math.ceil(nonzeros * bits / 8)
  dense = math.ceil(size * bits / 8)
  if sparse < dense:
    return sparse + SCALE_BYTES, "bitmask"
  return dense + SCALE_BYTES, "dense"


@dataclasses.dataclass(frozen=True)
class LeafStorage:
  """How one leaf is stored: its element count, nonzeros, format and bytes (and in fp32)."""
  name: str
  shape: tuple[int, ...]
  nonzeros: int
  format: str  # 'bitmask' | 'dense' (quantized) | the dtype name (not compressed)
  bytes: int
  bytes_fp32: int

  @property
  def sparsity(self) -> float:
    size = math.prod(self.shape)
    return 1.0 - self.nonzeros / size if size else 0.0


def storage_report(params: Any, compressed: Sequence[str] | Mapping[str, Any], bits: int
                   ) -> list[LeafStorage]:
  """The storage of every leaf of `params` (the final, pruned and quantized values).

  Leaves named in `compressed` cost `compressed_bytes(size, nonzeros, bits)`; the others
  their size times their dtype's item size. `bytes_fp32` is 4 per element throughout.
  """
  report = []
  for name, x in named_leaves(params).items():
    x = np.asarray(x)
    nonzeros = int(np.count_nonzero(x))
    if name in compressed:
      size, fmt = compressed_bytes(x.size, nonzeros, bits)
    else:
      size, fmt = x.size * x.dtype.itemsize, x.dtype.name
    report.append(LeafStorage(name, tuple(x.shape), nonzeros, fmt, size, 4 * x.size))
  return report


def expected_storage(shapes: Any, sparsities: Mapping[str, float], bits: int
                     ) -> list[LeafStorage]:
  """`storage_report` of a model not at hand: leaf shapes (e.g. `jax.eval_shape` output) and
  the sparsity each compressed leaf would be pruned to (other leaves dense float32)."""
  report = []
  for name, x in named_leaves(shapes).items():
    size = math.prod(x.shape)
    if name in sparsities:
      nonzeros = size - round(sparsities[name] * size)
      stored, fmt = compressed_bytes(size, nonzeros, bits)
    else:
      nonzeros, stored, fmt = size, 4 * size, "float32"
    report.append(LeafStorage(name, tuple(x.shape), nonzeros, fmt, stored, 4 * size))
  return report
