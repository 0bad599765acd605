r"""PVCNN scene segmentation on S3DIS (Area 5 held out): every paper setting, plus a CPU demo.

Presets (`--config=experiments/configs/pvcnn_s3dis.py:PRESET`, or a flagfile naming one):

* `demo`: synthetic box rooms with furniture (S3DIS's 13 labels; no download), blocked into
  windows exactly like S3DIS, PVCNN 0.25 x C at resolutions 8 / 4; a few minutes on CPU.
    python -m experiments.pvcnn_s3dis --flagfile=experiments/flags/pvcnn_s3dis_demo.flags
* `tiny`: the same task shrunk for tests.
* `pvcnn_c1`, `pvcnn_c0p25`, `pvcnn_c0p125`: PVCNN at width 1 / 0.25 / 0.125 (resolutions 32,
  16, 16); README Area 5 overall accuracy / mIoU 86.47 / 56.64, 85.00 / 53.08, 82.79 / 48.75.
* `pointnet`: PointNet; README 82.54 / 42.97.
* `voxel_unet`: voxel-only 3D U-Net at 96^3 (our widths); README 3D-UNet 85.12 / 54.93.
Each runs with its flagfile on the user's S3DIS, e.g.
    python -m experiments.pvcnn_s3dis --flagfile=experiments/flags/pvcnn_s3dis_c1.flags \
        --config.data.manual_dir=/path/to/Stanford3dDataset_v1.2_Aligned_Version
(raw area folders; or the reference's prepared h5 folders, which need `pip install h5py`).

Recipe (reference `configs/s3dis/`): 1.5 m windows in two passes, 3 cm grid resampling, at
most 8192 points per window; 4096 points sampled per window; batch 32 (issue #4: accuracy
drops with smaller batches; 32 was run on 2 GPUs), Adam lr 1e-3, weight decay 1e-5, cosine
over 50 epochs. Evaluation: every window tiled with ceil(8192 / 4096) samples, each room
point keeps its most confident prediction; overall accuracy and mIoU over all Area 5 points.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.pvcnn_common import base_config
from lite_jax.core.errors import UserError

PRESETS = ("demo", "tiny", "pvcnn_c1", "pvcnn_c0p25", "pvcnn_c0p125", "pointnet", "voxel_unet")


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for pvcnn_s3dis; choose one of {PRESETS}.")
  c = base_config("s3dis")
  c.preset = preset
  c.data.num_points = 4096
  c.train.num_epochs = 50.0
  c.optim.weight_decay = 1e-5
  c.eval.num_votes = 1
  c.eval.plot_examples = 1
  if preset.startswith("pvcnn_c"):
    c.model.width_multiplier = {"pvcnn_c1": 1.0, "pvcnn_c0p25": 0.25,
                                "pvcnn_c0p125": 0.125}[preset]
  elif preset in ("pointnet", "voxel_unet"):
    c.model.name = preset
  else:  # demo / tiny: synthetic rooms, a narrow PVCNN at coarse resolutions, CPU-sized.
    c.data.source = "synthetic"
    c.model.width_multiplier = 0.25
    c.model.voxel_resolution_multiplier = 0.25
    c.data.num_points = 512
    c.data.window_points = 1024
    c.data.synthetic_train = 40
    c.data.synthetic_test = 4
    c.data.synthetic_density = 60.0
    c.train.batch_size = 16
    c.train.num_epochs = 8.0
    c.train.log_every_steps = 25
    c.train.checkpoint_every_steps = 100
    c.eval.batch_size = 16
    if preset == "tiny":
      c.data.num_points = 64
      c.data.window_points = 256
      c.data.synthetic_train = 2
      c.data.synthetic_test = 1
      c.data.synthetic_density = 20.0
      c.model.width_multiplier = 0.125
      c.train.batch_size = 8
      c.train.num_epochs = 1.0
      c.train.log_every_steps = 1
      c.train.checkpoint_every_steps = 2
      c.eval.batch_size = 8
  c.lock()
  return c
