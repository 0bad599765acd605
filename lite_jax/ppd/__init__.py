"""PPD (Physical Primitive Decomposition, ECCV 2018): primitives with physical parameters.

Primitive geometry (volumes, voxels, IoU, the shape F1); the MuJoCo simulator of the block
towers' physical event (a pendulum ball striking the tower); the model (voxel, image and
trajectory encoders, a recurrent primitive generator) and its losses. The modules built on
the dataset, `lite_jax.ppd.train` (training, evaluation, pictures), `lite_jax.ppd.metrics`
and `lite_jax.ppd.refine` (the physics refinement), are imported by name: `data.block_towers`
imports this package, so importing them here would be circular. `lite_jax/ppd/README.md`
gives the commands and the numbers measured.
"""

from lite_jax.ppd.geometry import (BOX, CYLINDER, VOXEL_BOUNDS, VOXEL_RESOLUTION, Primitives,
                                   check_voxel_grid, pairwise_iou, shape_f1, volumes, voxelize)
from lite_jax.ppd.model import PPD, LossWeights, num_primitives, ppd_loss
from lite_jax.ppd.physics import (Pendulum, Trajectory, settle, simulate,
                                  simulate_densities_mjx)

__all__ = ["BOX", "CYLINDER", "LossWeights", "PPD", "Pendulum", "Primitives", "Trajectory",
           "VOXEL_BOUNDS", "VOXEL_RESOLUTION", "check_voxel_grid", "num_primitives",
           "pairwise_iou", "ppd_loss", "settle", "shape_f1", "simulate",
           "simulate_densities_mjx", "volumes", "voxelize"]
