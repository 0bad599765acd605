r"""PVCNN part segmentation on ShapeNet Part: every paper setting, plus a CPU demo.

Presets (`--config=experiments/configs/pvcnn_shapenet.py:PRESET`, or a flagfile naming one):

* `demo`: the built-in synthetic part shapes (4 categories made of labelled primitives, 10
  parts; no download), PVCNN 0.25 x C at voxel resolutions 8 / 4, 256 points; under 10
  minutes on 2 CPU cores; instance mIoU >= 0.8 and a PNG of segmented shapes.
    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags
* `tiny`: the same task shrunk for tests (a few steps, seconds).
* `pvcnn_c1`, `pvcnn_c0p5`, `pvcnn_c0p25`: PVCNN at width 1 / 0.5 / 0.25 (resolutions 32, 16
  at every width, as the reference's configs); README instance mIoU 85.8 / 85.5 / 84.9.
* `pointnet`: PointNet (no T-Net, xyz only, as the reference's config); README 83.7.
* `voxel_unet`: voxel-only 3D U-Net at 96^3 (our widths; the paper's are not published);
  README 3D-UNet 84.6. Here for the memory comparison of `benchmarks/pvcnn.py`.
Each runs with its flagfile on the user's copy of
`shapenetcore_partanno_segmentation_benchmark_v0_normal`, e.g.
    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_shapenet_c1.flags \
        --config.data.manual_dir=/path/to/shapenetcore_partanno_segmentation_benchmark_v0_normal

Recipe (reference `configs/shapenet/`): 2048 points sampled with replacement from each
normalized shape, jitter sigma 0.01 clipped at 0.05, batch 32, Adam lr 1e-3, cosine over 250
epochs (PointNet: 200; the reference's PointNet used StepLR(20, 0.5), we keep cosine).
Evaluation: every point of every test shape with 10 votes, predictions restricted to the
category's parts, instance mIoU (reported) and class mIoU.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.pvcnn_common import base_config
from lite_jax.core.errors import UserError

PRESETS = ("demo", "tiny", "pvcnn_c1", "pvcnn_c0p5", "pvcnn_c0p25", "pointnet", "voxel_unet")


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for pvcnn_shapenet; choose one of {PRESETS}.")
  c = base_config("shapenet")
  c.preset = preset
  c.train.num_epochs = 250.0
  if preset.startswith("pvcnn_c"):
    c.model.width_multiplier = {"pvcnn_c1": 1.0, "pvcnn_c0p5": 0.5, "pvcnn_c0p25": 0.25}[preset]
  elif preset == "pointnet":
    c.model.name = "pointnet"
    c.data.with_normals = False
    c.train.num_epochs = 200.0
  elif preset == "voxel_unet":
    c.model.name = "voxel_unet"
  else:  # demo / tiny: synthetic shapes, a narrow PVCNN at coarse resolutions, CPU-sized.
    c.data.source = "synthetic"
    c.model.width_multiplier = 0.25
    c.model.voxel_resolution_multiplier = 0.25
    c.eval.plot_examples = 4
    if preset == "demo":
      c.data.num_points = 256
      c.data.synthetic_train = 2000
      c.data.synthetic_test = 48
      c.train.batch_size = 16
      c.train.num_epochs = 2.0
      c.train.log_every_steps = 25
      c.train.checkpoint_every_steps = 100
      c.eval.num_votes = 3
      c.eval.batch_size = 32
    else:
      c.data.num_points = 64
      c.data.synthetic_train = 32
      c.data.synthetic_test = 8
      c.data.synthetic_points = (100, 160)
      c.model.width_multiplier = 0.125
      c.train.batch_size = 8
      c.train.num_epochs = 1.0
      c.train.log_every_steps = 1
      c.train.checkpoint_every_steps = 2
      c.eval.num_votes = 2
      c.eval.batch_size = 8
  c.lock()
  return c
