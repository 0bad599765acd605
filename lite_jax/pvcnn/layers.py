"""PVCNN layers: shared point MLP, squeeze-excitation over voxels, and the PVConv block.

Channel-last throughout: points `[batch, points, C]`, voxels `[batch, r, r, r, C]`.
Hyper-parameters follow PVCNN `modules/` (BatchNorm eps 1e-4 in the voxel branch and PyTorch's
default 1e-5 elsewhere, PyTorch momentum 0.1 = Flax momentum 0.9, LeakyReLU 0.1, SE reduction 8).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.devoxelize import devoxelize_trilinear
from kernels.voxelize import voxelize

_BN_MOMENTUM = 0.9  # PyTorch momentum 0.1.


def conv3d_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
  """Flax's default LeCun-normal init, drawn as `[k^3 * C_in, C_out]` and reshaped.

  Same distribution (the fan-in is the same); XLA:CPU takes ~10 s to compile random bits of a
  5-D shape, per convolution, and 1 s for the 2-D one.
  """
  flat = nn.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype)
  return flat.reshape(shape)


class SharedMLP(nn.Module):
  """Conv1d(k=1) + BatchNorm + ReLU, the same for every point: `[..., C_in] -> [..., C_out]`."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return nn.relu(x)


class SqueezeExcite3D(nn.Module):
  """Channel gates from the mean over all voxels, empty ones included: `[B, r, r, r, C]`."""
  reduction: int = 8
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    gate = jnp.mean(x, axis=(1, 2, 3))
    gate = nn.relu(nn.Dense(channels // self.reduction, use_bias=False, dtype=self.dtype,
                            param_dtype=self.param_dtype)(gate))
    gate = nn.sigmoid(nn.Dense(channels, use_bias=False, dtype=self.dtype,
                               param_dtype=self.param_dtype)(gate))
    return x * gate[:, None, None, None, :]


class ConvBNLeaky3D(nn.Module):
  """Conv3d(k, pad k//2) + BatchNorm3d(eps 1e-4) + LeakyReLU(0.1): `[B, r, r, r, C]`."""
  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel_size,) * 3, padding="SAME", dtype=self.dtype,
                param_dtype=self.param_dtype, kernel_init=conv3d_kernel_init)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=1e-4,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return nn.leaky_relu(x, 0.1)


class PVConv(nn.Module):
  """Point-voxel convolution: a coarse voxel branch summed with a per-point MLP.

  Voxel branch: average voxelization at `resolution` -> 2 x ConvBNLeaky3D -> optional SE ->
  trilinear devoxelization back to the points. Point branch: SharedMLP. The voxel ops dispatch
  to the Pallas kernels on GPU (see `kernels/`); `kernel_backend`/`interpret` pass through.

  Attributes:
    features: output channels.
    resolution: voxels per side (memory grows as resolution^3).
    with_se: squeeze-excitation on the voxel features.
    normalize: voxelize with per-sample scale normalization (S3DIS) or assume the unit sphere
      (ShapeNet); see `kernels.voxelize.normalize_coords`.
    eps: the normalization's denominator epsilon.
  """
  features: int
  resolution: int
  kernel_size: int = 3
  with_se: bool = False
  normalize: bool = True
  eps: float = 0.0
  kernel_backend: str = "auto"
  interpret: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, coords: jax.Array, train: bool) -> jax.Array:
    """`features [B, N, C_in]`, `coords [B, N, 3]` -> `[B, N, features]`."""
    ops = dict(backend=self.kernel_backend, interpret=self.interpret)
    layer = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    voxels, norm_coords = voxelize(features.astype(self.dtype), coords, self.resolution,
                                   normalize=self.normalize, eps=self.eps, **ops)
    voxels = ConvBNLeaky3D(self.features, self.kernel_size, **layer)(voxels, train)
    voxels = ConvBNLeaky3D(self.features, self.kernel_size, **layer)(voxels, train)
    if self.with_se:
      voxels = SqueezeExcite3D(**layer)(voxels)
    voxel_features = devoxelize_trilinear(voxels, norm_coords, **ops)
    return voxel_features + SharedMLP(self.features, **layer)(features, train)
