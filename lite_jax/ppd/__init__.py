"""PPD (Physical Primitive Decomposition, ECCV 2018): primitives with physical parameters.

So far: primitive geometry (volumes, voxels, IoU, the shape F1) and the MuJoCo simulator of
the block towers' physical event (a pendulum ball striking the tower), which the dataset
(`data/block_towers.py`) and the later physics refinement share.
"""

from lite_jax.ppd.geometry import (BOX, CYLINDER, VOXEL_BOUNDS, VOXEL_RESOLUTION, Primitives,
                                   check_voxel_grid, pairwise_iou, shape_f1, volumes, voxelize)
from lite_jax.ppd.physics import (Pendulum, Trajectory, settle, simulate,
                                  simulate_densities_mjx)

__all__ = ["BOX", "CYLINDER", "VOXEL_BOUNDS", "VOXEL_RESOLUTION", "Pendulum", "Primitives",
           "Trajectory", "check_voxel_grid", "pairwise_iou", "settle", "shape_f1", "simulate",
           "simulate_densities_mjx", "volumes", "voxelize"]
