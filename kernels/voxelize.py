"""Average voxelization: the scatter-mean of point features into an r x r x r grid (PVCNN).

Semantics (PVCNN `modules/voxelization.py`, `functional/src/voxelization/vox.cu`), per sample:
  1. centre the coordinates on their mean over the points;
  2. `normalize=True`:  c / (2 * max_n |c_n| + eps) + 0.5 (a ball of radius 0.5 around 0.5);
     `normalize=False`: (c + 1) / 2, which assumes the cloud already lies in the unit sphere
     (ShapeNet does this);
  3. `norm_coords = clip(c * r, 0, r - 1)`, kept as floats for trilinear devoxelization;
  4. voxel = round-half-to-even(norm_coords), flat id `x * r^2 + y * r + z`;
  5. each voxel holds the mean of the features of its points; empty voxels are exactly 0.
No gradient reaches the coordinates. Layout is channel-last: features `[batch, points, C]`,
voxels `[batch, r, r, r, C]` with axes (x, y, z).

Two deliberate departures, both where the reference produces NaN or out-of-bounds garbage:
a sample whose points all coincide maps them to the grid centre (the reference divides 0 by 0
when `normalize=True`), and a sample with a non-finite coordinate gets NaN `norm_coords` (so its
voxels and devoxelized features are NaN, never a write outside the grid). Called outside `jit`,
`voxelize` raises `ValueError` for non-finite coordinates instead.

Kernels. Voxelize and devoxelize are two weighted row maps between a point array `[P, C]` and
a voxel array `[R, C]` (R = batch * r^3), transposes of each other:
  scatter_add_rows:  out[ids[k, p]] += weights[k, p] * x[p]           (K = 1 here, 8 for the
                                                                        devoxelize backward)
  gather_rows:       out[p] = sum_k weights[k, p] * table[ids[k, p]]   (K = 1 for the voxelize
                                                                        backward, 8 forward)
Both are Pallas (Triton) kernels over a grid of (point tile x channel tile) programs, each the
other's VJP under `jax.custom_vjp`, so the two ops share one kernel pair. The scatter is
sort-free: f32 atomic adds of pre-divided features (`x / count`) into a zeroed accumulator, so
one pass over the points writes the mean directly. Counts and the `1 / count` per point are
cheap XLA ops over `P` ids. `kernels/devoxelize.py` builds trilinear devoxelization on the
same pair.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from kernels import _dispatch

OP_NAME = "voxelize"


@dataclasses.dataclass(frozen=True)
class Tiling:
  """Tile sizes of the row kernels (powers of 2: Triton needs power-of-2 block shapes).

  The default keeps the f32 kernels at 30-72 registers per thread on sm_90 with no spills (about
  half occupancy): at 128 points per program the 8-corner gather needs 184 registers and only 2
  blocks of 4 warps fit on an SM (`python -m kernels.compile_check` prints the
  numbers; `benchmarks/pvcnn.py` times the alternatives on a GPU).

  Attributes:
    points: points (rows) per program.
    channels: the largest channel tile; the tile used is the largest power of 2 that divides C
      and is at most this, so channel blocks never need masks or padding.
    num_warps: Triton warps per program.
  """
  points: int = 64
  channels: int = 64
  num_warps: int = 4

  def __post_init__(self):
    for name in ("points", "channels", "num_warps"):
      value = getattr(self, name)
      if value < 1 or value & (value - 1):
        raise ValueError(f"Tiling.{name} must be a power of 2, got {value}.")

  @classmethod
  def parse(cls, text: str) -> "Tiling":
    """`"POINTSxCHANNELS"` or `"POINTSxCHANNELSxWARPS"`, e.g. `"64x64x4"`."""
    parts = text.lower().split("x")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
      raise ValueError(f"a tiling is POINTSxCHANNELS[xWARPS] (e.g. 64x64x4), got {text!r}.")
    return cls(*map(int, parts))


def default_tiling(interpret: bool) -> Tiling:
  """One point per program in interpret mode: there, duplicate ids inside one atomic add keep
  only one update (jax#24117), while separate programs accumulate correctly."""
  return Tiling(points=1) if interpret else Tiling()


def _channel_tile(channels: int, max_tile: int) -> int:
  return min(channels & -channels, max_tile)  # largest power of 2 dividing `channels`


# ---------------------------------------------------------------------------------------------
# Kernels.
# ---------------------------------------------------------------------------------------------


def _tile_indices(num_points: int, block_points: int, block_channels: int):
  rows = pl.program_id(0) * block_points + jnp.arange(block_points)
  cols = pl.program_id(1) * block_channels + jnp.arange(block_channels)
  valid = rows < num_points
  return rows, cols, valid


def _scatter_add_kernel(x_ref, ids_ref, weights_ref, zeros_ref, out_ref, *, block_points,
                        block_channels):
  """out[ids[k, p], c] += weights[k, p] * x[p, c] for one (point tile, channel tile)."""
  del zeros_ref  # Aliased to `out_ref`: the accumulator starts at zero.
  rows, cols, valid = _tile_indices(x_ref.shape[0], block_points, block_channels)
  tile_valid = jnp.broadcast_to(valid[:, None], (block_points, block_channels))
  x = plt.load(x_ref.at[rows[:, None], cols[None, :]], mask=tile_valid, other=0)
  x = x.astype(jnp.float32)
  for k in range(ids_ref.shape[0]):
    # Rows past the end read id 0 and weight 0 and so add an exact 0 to row 0: the atomic needs
    # no mask (masked atomics do not run in interpret mode).
    ids = plt.load(ids_ref.at[k, rows], mask=valid, other=0)
    weights = plt.load(weights_ref.at[k, rows], mask=valid, other=0)
    plt.atomic_add(out_ref, (ids[:, None], cols[None, :]), x * weights[:, None])


def _gather_kernel(table_ref, ids_ref, weights_ref, out_ref, *, block_points, block_channels):
  """out[p, c] = sum_k weights[k, p] * table[ids[k, p], c] for one tile, accumulated in f32."""
  rows, cols, valid = _tile_indices(out_ref.shape[0], block_points, block_channels)
  acc = jnp.zeros((block_points, block_channels), jnp.float32)
  for k in range(ids_ref.shape[0]):
    ids = plt.load(ids_ref.at[k, rows], mask=valid, other=0)
    weights = plt.load(weights_ref.at[k, rows], mask=valid, other=0)
    rows_k = plt.load(table_ref.at[ids[:, None], cols[None, :]])
    acc += weights[:, None] * rows_k.astype(jnp.float32)
  tile_valid = jnp.broadcast_to(valid[:, None], (block_points, block_channels))
  plt.store(out_ref.at[rows[:, None], cols[None, :]], acc.astype(out_ref.dtype),
            mask=tile_valid)


def _grid(num_points: int, channels: int, tiling: Tiling) -> tuple[tuple[int, int], int]:
  block_channels = _channel_tile(channels, tiling.channels)
  return (pl.cdiv(num_points, tiling.points), channels // block_channels), block_channels


def _scatter_add_pallas(x, ids, weights, num_rows, tiling, interpret):
  num_points, channels = x.shape
  grid, block_channels = _grid(num_points, channels, tiling)
  kernel = functools.partial(_scatter_add_kernel, block_points=tiling.points,
                             block_channels=block_channels)
  # Triton atomics have no bf16 add: accumulate in f32 and cast once at the end.
  out = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((num_rows, channels), jnp.float32), grid=grid,
      input_output_aliases={3: 0}, interpret=interpret, name="scatter_add_rows",
      compiler_params=plt.CompilerParams(num_warps=tiling.num_warps),
  )(x, ids, weights, jnp.zeros((num_rows, channels), jnp.float32))
  return out.astype(x.dtype)


def _gather_pallas(table, ids, weights, tiling, interpret):
  num_points, channels = ids.shape[1], table.shape[1]
  grid, block_channels = _grid(num_points, channels, tiling)
  kernel = functools.partial(_gather_kernel, block_points=tiling.points,
                             block_channels=block_channels)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((num_points, channels), table.dtype), grid=grid,
      interpret=interpret, name="gather_rows",
      compiler_params=plt.CompilerParams(num_warps=tiling.num_warps),
  )(table, ids, weights)


# The two row maps are linear in their float operand and transposes of each other; ids and
# weights are constants of the map (no gradient, as in the reference: coordinates are detached).


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def scatter_add_rows(x: jax.Array, ids: jax.Array, weights: jax.Array, num_rows: int,
                     tiling: Tiling, interpret: bool) -> jax.Array:
  """`out[ids[k, p]] += weights[k, p] * x[p]` with the Pallas kernel.

  Args:
    x: `[points, C]` float (f32 or bf16; accumulated in f32).
    ids: `[K, points]` int32 target rows, each in `[0, num_rows)`.
    weights: `[K, points]` f32.
    num_rows: rows of the output.
    tiling: kernel tile sizes.
    interpret: run the kernel in interpret mode.

  Returns:
    `[num_rows, C]` in `x.dtype`; rows nobody adds to are 0.
  """
  return _scatter_add_pallas(x, ids, weights, num_rows, tiling, interpret)


def _scatter_add_rows_fwd(x, ids, weights, num_rows, tiling, interpret):
  return _scatter_add_pallas(x, ids, weights, num_rows, tiling, interpret), (ids, weights)


def _scatter_add_rows_bwd(num_rows, tiling, interpret, residuals, g):
  del num_rows
  ids, weights = residuals
  return gather_rows(g, ids, weights, tiling, interpret), None, None


scatter_add_rows.defvjp(_scatter_add_rows_fwd, _scatter_add_rows_bwd)


def gather_rows(table: jax.Array, ids: jax.Array, weights: jax.Array, tiling: Tiling,
                interpret: bool) -> jax.Array:
  """`out[p] = sum_k weights[k, p] * table[ids[k, p]]` with the Pallas kernel.

  Args:
    table: `[rows, C]` float (f32 or bf16; accumulated in f32).
    ids: `[K, points]` int32 rows of `table`.
    weights: `[K, points]` f32.
    tiling: kernel tile sizes.
    interpret: run the kernel in interpret mode.

  Returns:
    `[points, C]` in `table.dtype`.
  """
  return _gather_rows(table, ids, weights, table.shape[0], tiling, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _gather_rows(table, ids, weights, num_rows, tiling, interpret):
  del num_rows  # Only the backward pass needs it, as the row count of the table's cotangent.
  return _gather_pallas(table, ids, weights, tiling, interpret)


def _gather_rows_fwd(table, ids, weights, num_rows, tiling, interpret):
  del num_rows
  return _gather_pallas(table, ids, weights, tiling, interpret), (ids, weights)


def _gather_rows_bwd(num_rows, tiling, interpret, residuals, g):
  ids, weights = residuals
  return scatter_add_rows(g, ids, weights, num_rows, tiling, interpret), None, None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


# ---------------------------------------------------------------------------------------------
# Coordinates, validation, the public op and its reference.
# ---------------------------------------------------------------------------------------------


def normalize_coords(coords: jax.Array, resolution: int, normalize: bool = False,
                     eps: float = 0.0) -> jax.Array:
  """Grid coordinates in `[0, r - 1]` of each point, per sample (steps 1-3 above).

  Args:
    coords: `[batch, points, 3]` raw xyz (any float dtype; computed in f32).
    resolution: r, voxels per side.
    normalize: scale by the sample's largest distance from its centroid (True), or assume the
      unit sphere (False).
    eps: added to the `normalize=True` denominator (the reference's default is 0).

  Returns:
    `[batch, points, 3]` f32; all-NaN for a sample with any non-finite coordinate.
  """
  coords = jax.lax.stop_gradient(coords).astype(jnp.float32)
  centred = coords - jnp.mean(coords, axis=1, keepdims=True)
  if normalize:
    radius = 2.0 * jnp.max(jnp.linalg.norm(centred, axis=-1), axis=1)[:, None, None] + eps
    safe_radius = jnp.where(radius > 0, radius, 1.0)  # All points coincide: centred is 0.
    unit = centred / safe_radius + 0.5
  else:
    unit = (centred + 1.0) / 2.0
  norm_coords = jnp.clip(unit * resolution, 0.0, resolution - 1.0)
  finite = jnp.all(jnp.isfinite(coords), axis=(1, 2), keepdims=True)
  return jnp.where(finite, norm_coords, jnp.nan)


def grid_index(values: jax.Array, resolution: int) -> jax.Array:
  """Integer grid positions of float positions, clipped to `[0, r - 1]`; NaN goes to 0.

  The clip only matters for NaN or out-of-range input: it keeps every kernel access in bounds.
  """
  safe = jnp.where(jnp.isnan(values), 0.0, values)
  return jnp.clip(safe, 0, resolution - 1).astype(jnp.int32)


def flat_voxel_id(x: jax.Array, y: jax.Array, z: jax.Array, resolution: int) -> jax.Array:
  return (x * resolution + y) * resolution + z


def voxel_ids(norm_coords: jax.Array, resolution: int) -> jax.Array:
  """`[batch, points]` int32 flat voxel id per point (round half to even, like `torch.round`)."""
  xyz = grid_index(jnp.round(norm_coords), resolution)
  return flat_voxel_id(xyz[..., 0], xyz[..., 1], xyz[..., 2], resolution)


def batch_offsets(batch: int, resolution: int) -> jax.Array:
  """`[batch, 1]` first flat row of each sample in the `[batch * r^3, C]` voxel rows."""
  return (jnp.arange(batch, dtype=jnp.int32) * resolution ** 3)[:, None]


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_coordinates(op: str, coords, name: str, batch: int, num_points: int) -> None:
  """Shape check always; finiteness check when the values are known (outside `jit`)."""
  if coords.ndim != 3 or coords.shape != (batch, num_points, 3):
    raise ValueError(f"{op}: {name} must be [batch, points, 3] = {[batch, num_points, 3]} "
                     f"to match the features, got {list(coords.shape)}.")
  if not jnp.issubdtype(coords.dtype, jnp.floating):
    raise ValueError(f"{op}: {name} must be floating point, got {coords.dtype}.")
  if is_concrete(coords):
    bad = int(np.size(coords) - np.count_nonzero(np.isfinite(np.asarray(coords))))
    if bad:
      raise ValueError(f"{op}: {name} holds {bad} non-finite value(s); coordinates must be "
                       f"finite.")


def _check_voxelize_args(features, coords, resolution) -> None:
  if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1:
    raise ValueError(f"voxelize: features must be [batch, points, channels] with at least one "
                     f"point, got shape {list(features.shape)}.")
  if not jnp.issubdtype(features.dtype, jnp.floating):
    raise ValueError(f"voxelize: features must be floating point, got {features.dtype}.")
  if not isinstance(resolution, (int, np.integer)) or resolution < 1:
    raise ValueError(f"voxelize: resolution must be a positive int, got {resolution!r}.")
  check_coordinates("voxelize", coords, "coords", features.shape[0], features.shape[1])


def voxelize_path(backend: str = "auto", interpret: bool = False) -> str:
  """Which implementation `voxelize` runs here: 'pallas', 'pallas_interpret' or 'xla'."""
  return _dispatch.select_path(OP_NAME, backend, interpret)


def voxelize(features: jax.Array, coords: jax.Array, resolution: int, *,
             normalize: bool = False, eps: float = 0.0, backend: str = "auto",
             interpret: bool = False, tiling: Tiling | None = None
             ) -> tuple[jax.Array, jax.Array]:
  """Average voxelization; the Pallas kernel on GPU, `voxelize_reference` elsewhere.

  Args:
    features: `[batch, points, C]` f32 or bf16.
    coords: `[batch, points, 3]` raw xyz (detached: no gradient flows to them).
    resolution: r, voxels per side.
    normalize, eps: see `normalize_coords`.
    backend: 'auto' | 'pallas' | 'xla' (see `kernels._dispatch.select_path`).
    interpret: run the Pallas kernel in interpret mode (CPU tests).
    tiling: kernel tile sizes; default `default_tiling(interpret)`.

  Returns:
    `(voxels [batch, r, r, r, C] in features.dtype, norm_coords [batch, points, 3] f32)`.
  """
  _check_voxelize_args(features, coords, resolution)
  if voxelize_path(backend, interpret) == _dispatch.XLA:
    return voxelize_reference(features, coords, resolution, normalize=normalize, eps=eps)
  kernel_path = functools.partial(_voxelize_pallas, resolution=resolution, normalize=normalize,
                                  eps=eps, tiling=tiling or default_tiling(interpret),
                                  interpret=interpret)
  return _dispatch.map_batch_shards(kernel_path, features, coords)


def _voxelize_pallas(features, coords, *, resolution, normalize, eps, tiling, interpret):
  batch, num_points, channels = features.shape
  num_rows = batch * resolution ** 3
  norm_coords = normalize_coords(coords, resolution, normalize, eps)
  ids = (voxel_ids(norm_coords, resolution) + batch_offsets(batch, resolution)).reshape(-1)
  counts = jnp.zeros(num_rows, jnp.int32).at[ids].add(1)
  inv_count = 1.0 / counts[ids].astype(jnp.float32)
  inv_count = jnp.where(jnp.isnan(norm_coords[..., 0]).reshape(-1), jnp.nan, inv_count)
  voxels = scatter_add_rows(features.reshape(-1, channels), ids[None], inv_count[None],
                            num_rows, tiling, interpret)
  return voxels.reshape(batch, resolution, resolution, resolution, channels), norm_coords


def voxelize_reference(features: jax.Array, coords: jax.Array, resolution: int, *,
                       normalize: bool = False, eps: float = 0.0
                       ) -> tuple[jax.Array, jax.Array]:
  """Plain-jnp average voxelization (`segment_sum` of features and of counts, then divide).

  Same arguments and results as `voxelize`; also the XLA path of `voxelize`.
  """
  batch, num_points, channels = features.shape
  num_rows = batch * resolution ** 3
  norm_coords = normalize_coords(coords, resolution, normalize, eps)
  ids = (voxel_ids(norm_coords, resolution) + batch_offsets(batch, resolution)).reshape(-1)
  values = features.reshape(-1, channels).astype(jnp.float32)
  values = jnp.where(jnp.isnan(norm_coords[..., :1]).reshape(-1, 1), jnp.nan, values)
  sums = jax.ops.segment_sum(values, ids, num_segments=num_rows)
  counts = jax.ops.segment_sum(jnp.ones_like(ids), ids, num_segments=num_rows)
  means = sums / jnp.maximum(counts, 1)[:, None].astype(jnp.float32)
  voxels = means.astype(features.dtype)
  return voxels.reshape(batch, resolution, resolution, resolution, channels), norm_coords
