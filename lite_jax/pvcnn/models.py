"""PVCNN, PointNet and voxel-only 3D U-Net segmentation networks, configured as PVCNN's
reference code does (`models/shapenet/*.py`, `models/s3dis/*.py`, `models/utils.py`).

A block spec is `(out_channels, num_blocks, voxel_resolution)`: resolution `None` is a plain
SharedMLP, otherwise a PVConv. Channels are `int(width_multiplier * c)` and resolutions
`int(voxel_resolution_multiplier * r)`, as in `create_pointnet_components`. Head specs are
sequences of widths (scaled by the width multiplier) and dropout rates (floats < 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from kernels.devoxelize import devoxelize_trilinear
from kernels.voxelize import voxelize
from lite_jax.core.errors import UserError
from lite_jax.pvcnn.layers import ConvBNLeaky3D, PVConv, SharedMLP, conv3d_kernel_init

Block = tuple[int, int, int | None]

SHAPENET_PVCNN_BLOCKS: tuple[Block, ...] = ((64, 1, 32), (128, 2, 16), (512, 1, None),
                                            (2048, 1, None))
SHAPENET_POINTNET_BLOCKS: tuple[Block, ...] = ((64, 1, None), (128, 2, None), (512, 1, None),
                                               (2048, 1, None))
S3DIS_PVCNN_BLOCKS: tuple[Block, ...] = ((64, 1, 32), (64, 2, 16), (128, 1, 16),
                                         (1024, 1, None))
S3DIS_POINTNET_BLOCKS: tuple[Block, ...] = ((64, 3, None), (128, 1, None), (1024, 1, None))

PART_HEAD = (256, 0.2, 256, 0.2, 128)
S3DIS_PVCNN_HEAD = (512, 0.3, 256, 0.3)
S3DIS_POINTNET_HEAD = (512, 256, 0.3)
S3DIS_CLOUD_MLP = (256, 128)


class PointBlocks(nn.Module):
  """The point-feature trunk; returns every block's output `[B, N, C_i]`."""
  blocks: Sequence[Block]
  width_multiplier: float = 1.0
  voxel_resolution_multiplier: float = 1.0
  with_se: bool = False
  normalize: bool = True
  eps: float = 0.0
  kernel_backend: str = "auto"
  interpret: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, coords: jax.Array, train: bool) -> list[jax.Array]:
    outputs = []
    for out_channels, num_blocks, resolution in self.blocks:
      out_channels = int(self.width_multiplier * out_channels)
      for _ in range(num_blocks):
        if resolution is None:
          features = SharedMLP(out_channels, dtype=self.dtype)(features, train)
        else:
          features = PVConv(out_channels, int(self.voxel_resolution_multiplier * resolution),
                            with_se=self.with_se, normalize=self.normalize, eps=self.eps,
                            kernel_backend=self.kernel_backend, interpret=self.interpret,
                            dtype=self.dtype)(features, coords, train)
        outputs.append(features)
    return outputs


class Head(nn.Module):
  """SharedMLPs and dropouts from `layers`, then a per-point linear classifier."""
  layers: Sequence[float]
  num_classes: int
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for spec in self.layers:
      if spec < 1:
        x = nn.Dropout(spec, deterministic=not train)(x)
      else:
        x = SharedMLP(int(self.width_multiplier * spec), dtype=self.dtype)(x, train)
    return nn.Dense(self.num_classes, dtype=jnp.float32)(x)


def _broadcast_points(x: jax.Array, num_points: int) -> jax.Array:
  """`[B, C] -> [B, N, C]`."""
  return jnp.broadcast_to(x[:, None, :], (x.shape[0], num_points, x.shape[-1]))


class PartSegmentationNet(nn.Module):
  """ShapeNet Part: PVCNN (`SHAPENET_PVCNN_BLOCKS`) or PointNet (`SHAPENET_POINTNET_BLOCKS`).

  The head sees the category one-hot, every block's output and the global max of the last.
  """
  blocks: Sequence[Block]
  num_classes: int = 50
  num_categories: int = 16
  width_multiplier: float = 1.0
  voxel_resolution_multiplier: float = 1.0
  with_se: bool = True
  normalize: bool = False
  kernel_backend: str = "auto"
  interpret: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, points: jax.Array, category: jax.Array, train: bool) -> jax.Array:
    """`points [B, N, C_in]` (xyz first), `category [B]` int -> logits `[B, N, classes]` f32."""
    num_points = points.shape[1]
    outputs = PointBlocks(self.blocks, self.width_multiplier, self.voxel_resolution_multiplier,
                          self.with_se, self.normalize, kernel_backend=self.kernel_backend,
                          interpret=self.interpret, dtype=self.dtype
                          )(points, points[..., :3], train)
    one_hot = jax.nn.one_hot(category, self.num_categories, dtype=outputs[-1].dtype)
    pooled = jnp.max(outputs[-1], axis=1)
    x = jnp.concatenate([_broadcast_points(one_hot, num_points), *outputs,
                         _broadcast_points(pooled, num_points)], axis=-1)
    return Head(PART_HEAD, self.num_classes, self.width_multiplier, self.dtype)(x, train)


class SceneSegmentationNet(nn.Module):
  """S3DIS: a point trunk, the global max through a 2-layer MLP, broadcast, and a head.

  PVCNN concatenates every block's output (`concat_all_blocks`); PointNet only the last.
  """
  blocks: Sequence[Block]
  head: Sequence[float]
  concat_all_blocks: bool
  num_classes: int = 13
  width_multiplier: float = 1.0
  voxel_resolution_multiplier: float = 1.0
  with_se: bool = False
  normalize: bool = True
  kernel_backend: str = "auto"
  interpret: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, points: jax.Array, train: bool) -> jax.Array:
    """`points [B, N, 9]` (xyz first) -> logits `[B, N, classes]` f32."""
    outputs = PointBlocks(self.blocks, self.width_multiplier, self.voxel_resolution_multiplier,
                          self.with_se, self.normalize, kernel_backend=self.kernel_backend,
                          interpret=self.interpret, dtype=self.dtype
                          )(points, points[..., :3], train)
    cloud = jnp.max(outputs[-1], axis=1)
    for width in S3DIS_CLOUD_MLP:
      cloud = SharedMLP(int(self.width_multiplier * width), dtype=self.dtype)(cloud, train)
    point_features = outputs if self.concat_all_blocks else outputs[-1:]
    x = jnp.concatenate([*point_features, _broadcast_points(cloud, points.shape[1])], axis=-1)
    return Head(self.head, self.num_classes, self.width_multiplier, self.dtype)(x, train)


class VoxelUNet3D(nn.Module):
  """Voxel-only baseline for the memory comparison: voxelize -> 3-D U-Net -> devoxelize.

  The paper's 3D-UNet runs on 96^3 voxels; its widths are not published, so this one doubles
  `base_channels` per level (two ConvBNLeaky3D per level, 2x max-pool down, 2x transposed
  conv up with skip concatenation). Per-point logits come from trilinear devoxelization,
  concatenated with the category one-hot for part segmentation (`num_categories > 0`).
  """
  num_classes: int
  resolution: int = 96
  base_channels: int = 32
  levels: int = 4
  num_categories: int = 0
  normalize: bool = True
  kernel_backend: str = "auto"
  interpret: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, points: jax.Array, category: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    """`points [B, N, C_in]`, optional `category [B]` -> logits `[B, N, classes]` f32."""
    if self.resolution % 2 ** (self.levels - 1):
      raise UserError(f"the U-Net resolution {self.resolution} must be divisible by "
                      f"2^(levels - 1) = {2 ** (self.levels - 1)}.")
    ops = dict(backend=self.kernel_backend, interpret=self.interpret)
    x, norm_coords = voxelize(points.astype(self.dtype), points[..., :3], self.resolution,
                              normalize=self.normalize, **ops)
    skips = []
    for level in range(self.levels):
      channels = self.base_channels * 2 ** level
      x = ConvBNLeaky3D(channels, dtype=self.dtype)(x, train)
      x = ConvBNLeaky3D(channels, dtype=self.dtype)(x, train)
      if level < self.levels - 1:
        skips.append(x)
        x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2))
    for level in reversed(range(self.levels - 1)):
      channels = self.base_channels * 2 ** level
      x = nn.ConvTranspose(channels, (2, 2, 2), strides=(2, 2, 2), dtype=self.dtype,
                           kernel_init=conv3d_kernel_init)(x)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = ConvBNLeaky3D(channels, dtype=self.dtype)(x, train)
      x = ConvBNLeaky3D(channels, dtype=self.dtype)(x, train)
    features = devoxelize_trilinear(x, norm_coords, **ops)
    if self.num_categories:
      one_hot = jax.nn.one_hot(category, self.num_categories, dtype=features.dtype)
      features = jnp.concatenate([features, _broadcast_points(one_hot, points.shape[1])], -1)
    return Head((128,), self.num_classes, dtype=self.dtype)(features, train)


def build_model(task: str, model_config: ml_collections.ConfigDict, num_classes: int,
                num_categories: int = 0) -> nn.Module:
  """The network named by `model_config.name` ('pvcnn' | 'pointnet' | 'voxel_unet') for `task`
  ('shapenet' | 's3dis'), with the reference's per-task settings."""
  name = model_config.name
  common = dict(kernel_backend=model_config.kernel_backend,
                dtype=jnp.dtype(model_config.dtype))
  width = dict(width_multiplier=model_config.width_multiplier)
  if name == "voxel_unet":
    return VoxelUNet3D(num_classes, model_config.unet_resolution, model_config.unet_channels,
                       model_config.unet_levels, num_categories=num_categories,
                       normalize=task == "s3dis", **common)
  if name not in ("pvcnn", "pointnet"):
    raise UserError(f"unknown model {name!r}; choose pvcnn, pointnet or voxel_unet.")
  pvcnn = name == "pvcnn"
  resolution = dict(voxel_resolution_multiplier=model_config.voxel_resolution_multiplier)
  if task == "shapenet":
    blocks = SHAPENET_PVCNN_BLOCKS if pvcnn else SHAPENET_POINTNET_BLOCKS
    return PartSegmentationNet(blocks, num_classes, num_categories, **width, **resolution,
                               **common)
  blocks, head = ((S3DIS_PVCNN_BLOCKS, S3DIS_PVCNN_HEAD) if pvcnn
                  else (S3DIS_POINTNET_BLOCKS, S3DIS_POINTNET_HEAD))
  return SceneSegmentationNet(blocks, head, concat_all_blocks=pvcnn, num_classes=num_classes,
                              **width, **resolution, **common)
