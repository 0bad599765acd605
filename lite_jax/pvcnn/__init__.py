"""PVCNN (Point-Voxel CNN, NeurIPS 2019): points for memory, voxels for locality.

The voxel ops dispatch to the Pallas kernels in `kernels/` on GPU and to their XLA references
elsewhere; `voxelize_path()` / `devoxelize_path()` say which runs.
"""

from kernels.devoxelize import (devoxelize_path, devoxelize_trilinear,
                                devoxelize_trilinear_reference, trilinear_corners)
from kernels.voxelize import normalize_coords, voxelize, voxelize_path, voxelize_reference
from lite_jax.pvcnn.layers import ConvBNLeaky3D, PVConv, SharedMLP, SqueezeExcite3D
from lite_jax.pvcnn.models import (PartSegmentationNet, SceneSegmentationNet, VoxelUNet3D,
                                   build_model)
from lite_jax.pvcnn.export import export_segmenter
from lite_jax.pvcnn.train import evaluate, profile, train_and_evaluate, trained_variables
