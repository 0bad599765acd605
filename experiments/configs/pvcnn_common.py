"""Fields shared by the PVCNN configs (`pvcnn_shapenet.py`, `pvcnn_s3dis.py`)."""

from __future__ import annotations

import ml_collections

from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config
from lite_jax.core.train import optimizer_config


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every field the PVCNN trainer reads, with the reference's Adam + cosine recipe."""
  c = ml_collections.ConfigDict()
  c.task = task  # 'shapenet' | 's3dis'
  c.preset = ""
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "local"  # 'local' (the user's files via the tfds builders) | 'synthetic'
  c.data.manual_dir = ""  # the dataset folder (see data/pointclouds.py)
  c.data.tfds_data_dir = ""  # where the ArrayRecord copy goes ('' = <workdir>/data/tfds)
  c.data.rebuild = False  # build the ArrayRecord copy again when data settings changed
  c.data.seed = 0  # of the synthetic generators
  c.data.num_points = 2048  # points per training / vote sample
  c.data.with_normals = True  # ShapeNet: xyz + normals (6 channels) or xyz only
  c.data.jitter = True  # ShapeNet training: sigma 0.01, clip 0.05
  c.data.holdout_area = 5  # S3DIS test area
  c.data.window_points = 8192  # S3DIS window capacity (the reference's max_num_points)
  c.data.synthetic_train = 2000  # synthetic shapes / rooms
  c.data.synthetic_test = 100
  c.data.synthetic_points = (600, 1200)  # points per synthetic shape
  c.data.synthetic_density = 150.0  # points per square metre of synthetic room surface

  c.model = ml_collections.ConfigDict()
  c.model.name = "pvcnn"  # 'pvcnn' | 'pointnet' | 'voxel_unet'
  c.model.width_multiplier = 1.0
  c.model.voxel_resolution_multiplier = 1.0  # resolutions of every PVConv are scaled by this
  c.model.kernel_backend = "auto"  # voxel ops: 'auto' (Pallas on GPU) | 'pallas' | 'xla'
  c.model.dtype = "float32"  # compute dtype ('bfloat16' halves activation memory)
  c.model.unet_resolution = 96  # voxel_unet only
  c.model.unet_channels = 32
  c.model.unet_levels = 4

  c.train = train_config(log_every_steps=50, checkpoint_every_steps=1000, keep_checkpoints=3)
  c.train.batch_size = 32
  c.train.num_epochs = 200.0

  # Adam 1e-3, cosine to 0 (PyTorch CosineAnnealingLR's eta_min), weight decay as L2 added to
  # the gradient (torch.optim.Adam's); total_updates set at run time.
  c.optim = optimizer_config()

  c.mesh = mesh_config()  # data parallel over every device

  c.eval = ml_collections.ConfigDict()
  c.eval.num_votes = 10
  c.eval.batch_size = 32  # vote samples per forward pass
  c.eval.plot_examples = 4  # shapes / rooms drawn into <workdir>/segmentation.png
  return c
