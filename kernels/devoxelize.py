"""Trilinear devoxelization: each point reads its 8 neighbouring voxels (PVCNN).

Semantics (PVCNN `functional/src/interpolate/trilinear_devox.cu`), per point and axis, on the
`norm_coords` in `[0, r - 1]` that `voxelize` returns: `lo = floor(x)`, `d1 = x - lo`,
`d0 = 1 - d1`, and the upper neighbour is `lo + 1` only when `d1 > 0` (so a point at exactly
r - 1 reads in bounds). The 8 corners are ordered 000 ... 111 with bit order (x, y, z); corner
weights are products of d0/d1, sum to 1 and are not renormalized. No gradient reaches the
coordinates. A sample with NaN `norm_coords` (non-finite input coordinates, see
`kernels/voxelize.py`) devoxelizes to NaN.

Kernel. The forward pass is the weighted 8-way row gather of `kernels/voxelize.py` and the
backward pass its transpose, the 8-way atomic scatter-add; corner ids and weights are computed
once in XLA and kept as the residuals, as the reference does in training.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _dispatch
from kernels.voxelize import (Tiling, batch_offsets, check_coordinates, default_tiling,
                              flat_voxel_id, gather_rows, grid_index)

OP_NAME = "devoxelize_trilinear"


def trilinear_corners(norm_coords: jax.Array, resolution: int) -> tuple[jax.Array, jax.Array]:
  """Flat ids and weights of the 8 voxels around each point.

  Args:
    norm_coords: `[batch, points, 3]` grid coordinates in `[0, r - 1]`.
    resolution: r.

  Returns:
    `(ids [8, batch, points] int32 per-sample flat ids, weights [8, batch, points] f32)`,
    corner k = 4 * bx + 2 * by + bz.
  """
  norm_coords = jax.lax.stop_gradient(norm_coords).astype(jnp.float32)
  lo_f = jnp.floor(norm_coords)
  d1 = norm_coords - lo_f
  lo = grid_index(lo_f, resolution)
  hi = jnp.minimum(lo + (d1 > 0), resolution - 1)
  ends = ((lo, 1.0 - d1), (hi, d1))  # (index, weight) of the lower and upper neighbour per axis
  ids, weights = [], []
  for bx in (0, 1):
    for by in (0, 1):
      for bz in (0, 1):
        (ix, wx), (iy, wy), (iz, wz) = (ends[b] for b in (bx, by, bz))
        ids.append(flat_voxel_id(ix[..., 0], iy[..., 1], iz[..., 2], resolution))
        weights.append(wx[..., 0] * wy[..., 1] * wz[..., 2])
  return jnp.stack(ids), jnp.stack(weights)


def _check_args(voxels, norm_coords) -> None:
  shape = voxels.shape
  # `any(d < 1 ...)`, not `min(shape) < 1`: a symbolic batch (jax.export) compares with a
  # constant but not with the other sizes.
  if voxels.ndim != 5 or not shape[1] == shape[2] == shape[3] or any(d < 1 for d in shape):
    raise ValueError(f"devoxelize_trilinear: voxels must be [batch, r, r, r, channels], got "
                     f"shape {list(shape)}.")
  if not jnp.issubdtype(voxels.dtype, jnp.floating):
    raise ValueError(f"devoxelize_trilinear: voxels must be floating point, got "
                     f"{voxels.dtype}.")
  num_points = norm_coords.shape[1] if norm_coords.ndim == 3 else -1
  check_coordinates(OP_NAME, norm_coords, "norm_coords", shape[0], num_points)
  if num_points < 1:
    raise ValueError("devoxelize_trilinear: norm_coords must hold at least one point.")


def devoxelize_path(backend: str = "auto", interpret: bool = False) -> str:
  """Which implementation `devoxelize_trilinear` runs: 'pallas', 'pallas_interpret' or 'xla'."""
  return _dispatch.select_path(OP_NAME, backend, interpret)


def devoxelize_trilinear(voxels: jax.Array, norm_coords: jax.Array, *, backend: str = "auto",
                         interpret: bool = False, tiling: Tiling | None = None) -> jax.Array:
  """Trilinear interpolation of voxel features at the points; Pallas on GPU, XLA elsewhere.

  Args:
    voxels: `[batch, r, r, r, C]` f32 or bf16.
    norm_coords: `[batch, points, 3]` grid coordinates from `voxelize` (detached).
    backend: 'auto' | 'pallas' | 'xla' (see `kernels._dispatch.select_path`).
    interpret: run the Pallas kernel in interpret mode (CPU tests).
    tiling: kernel tile sizes; default `default_tiling(interpret)`.

  Returns:
    `[batch, points, C]` in `voxels.dtype` (accumulated in f32).
  """
  _check_args(voxels, norm_coords)
  if devoxelize_path(backend, interpret) == _dispatch.XLA:
    return devoxelize_trilinear_reference(voxels, norm_coords)
  kernel_path = functools.partial(_devoxelize_pallas, tiling=tiling or default_tiling(interpret),
                                  interpret=interpret)
  return _dispatch.map_batch_shards(kernel_path, voxels, norm_coords)


def _devoxelize_pallas(voxels, norm_coords, *, tiling, interpret):
  batch, resolution, channels = voxels.shape[0], voxels.shape[1], voxels.shape[-1]
  ids, weights = trilinear_corners(norm_coords, resolution)
  ids = (ids + batch_offsets(batch, resolution)).reshape(8, -1)
  out = gather_rows(voxels.reshape(-1, channels), ids, weights.reshape(8, -1), tiling,
                    interpret)
  return out.reshape(batch, -1, channels)


def devoxelize_trilinear_reference(voxels: jax.Array, norm_coords: jax.Array) -> jax.Array:
  """Plain-jnp trilinear devoxelization with `take_along_axis`; also the XLA path.

  Same arguments and result as `devoxelize_trilinear`.
  """
  batch, resolution, channels = voxels.shape[0], voxels.shape[1], voxels.shape[-1]
  ids, weights = trilinear_corners(norm_coords, resolution)
  flat = voxels.reshape(batch, -1, channels)
  out = jnp.zeros((batch, norm_coords.shape[1], channels), jnp.float32)
  for k in range(8):
    corner = jnp.take_along_axis(flat, ids[k][..., None], axis=1).astype(jnp.float32)
    out += weights[k][..., None] * corner
  return out.astype(voxels.dtype)
