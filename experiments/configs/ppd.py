r"""PPD (Physical Primitive Decomposition, Liu et al., ECCV 2018) on generated block towers.

Presets (`--config=experiments/configs/ppd.py:PRESET`, or a flagfile naming one):

* `towers`: the paper's setting as far as it is public: 32^3 voxels, 128 x 128 images, the
  per-block trajectories of a pendulum strike, a recurrent generator of up to 4 primitives,
  density as 100-way classification, and the appearance-only ablation trained by the same
  command. Ours (not public): the data's counts (10k / 1k / 1k scenes) and ranges
  (`data/block_towers.py`), the encoders' widths, the attention readout of each step over
  its block's voxels and pixels (`lite_jax/ppd/model.py`), the mirror augmentation, the loss
  weights (all 1), Adam 1e-3 with a cosine decay over 30k steps of batch 32, and the physics
  refinement over the top-3 bins.
  Expected (the paper): shape F1 97.5 on towers; appearance alone insufficient for density,
  trajectories helping substantially (not yet reproduced here).
    python -m experiments.ppd --flagfile=experiments/flags/ppd_towers.flags
* `demo`: the same pipeline sized for a 2-core CPU in under 10 minutes, data generation,
  both trainings and the test metrics included: 48 px images, 2,400 training scenes (each
  mirrored in x with probability 1/2), 2,200 steps of batch 16 per model, 200 test scenes.
  Targets: shape F1 >= 0.9 and a lower density RMSE with trajectories than without (numbers
  measured in `lite_jax/ppd/README.md`).
    python -m experiments.ppd --flagfile=experiments/flags/ppd_demo.flags
* `tiny`: the demo shrunk for tests (a few steps, seconds).

`--config.model.use_trajectory=False` trains the appearance-only model alone;
`--config.train.ablation=False` trains only the configured one; `--config.eval.refine=False`
skips the physics refinement.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from lite_jax.core.errors import UserError
from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config
from lite_jax.core.train import optimizer_config

PRESETS = ("towers", "demo", "tiny")


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for ppd; choose one of {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0  # parameters and the order of training batches

  # `data/block_towers.py`'s `default_data_config` fields.
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = config_dict.placeholder(str)  # ArrayRecord cache (None: <workdir>/data)
  c.data.image_size = 128
  c.data.num_train = 10_000
  c.data.num_validation = 1_000
  c.data.num_test = 1_000
  c.data.seed = 0

  c.model = ml_collections.ConfigDict()  # `lite_jax.ppd.model.PPD`
  c.model.use_trajectory = True  # False: the appearance-only model (image + voxels)
  c.model.voxel_resolution = 32  # the paper's grid; the data are voxelized at 32
  c.model.code_features = 256
  c.model.hidden = 256
  c.model.encoder_features = 256
  c.model.voxel_widths = (32, 64, 128)
  c.model.image_widths = (32, 64, 128, 128, 128)
  c.model.trajectory_widths = (64, 128, 128)
  c.model.slot_features = 64
  # attention (ours: each step attends over voxels and image) | global (the paper's outline)
  c.model.readout = "attention"
  # Occupied voxels a step attends over (a scene with more is a UserError): generated towers
  # occupy a median 189 and at most 612 of 32^3 (2,000 demo scenes, measured).
  c.model.max_points = 1024

  # `lite_jax.ppd.model.LossWeights` (`ppd_loss` documents each term).
  c.loss = ml_collections.ConfigDict()
  c.loss.shape = 1.0
  c.loss.size = 1.0
  c.loss.position = 1.0
  c.loss.quaternion = 1.0
  c.loss.density = 1.0
  c.loss.stop = 1.0
  c.loss.attention = 1.0  # readout="attention": KL(even over block t's voxels || step t's)

  c.train = train_config(log_every_steps=100, checkpoint_every_steps=2_000,
                         keep_checkpoints=2, eval_every_steps=0)
  c.train.batch_size = 32
  c.train.num_steps = 30_000
  # Each training scene reflected in x = 0 with probability 1/2 (`block_towers.mirror_x`).
  c.train.mirror = True
  c.train.ablation = True  # also train the appearance-only model (`appearance_only/`)

  c.optim = optimizer_config(min_lr=1e-5, clip_norm=1.0)  # Adam 1e-3, cosine

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 50
  c.eval.num_examples = 1_000  # test scenes scored (at most the test split)
  c.eval.top_k = 5  # density top-k accuracy
  c.eval.refine = True  # physics refinement (`lite_jax/ppd/refine.py`), reported beside
  c.eval.refine_k = 3  # density candidates per primitive

  c.visualize = ml_collections.ConfigDict()
  c.visualize.num_examples = 4

  c.mesh = mesh_config()

  if preset in ("demo", "tiny"):
    c.data.image_size = 48
    c.data.num_train = 2_400
    c.data.num_validation = 50
    c.data.num_test = 200
    c.model.code_features = 128
    c.model.hidden = 128
    c.model.encoder_features = 128
    c.model.voxel_widths = (16, 32, 64)
    c.model.image_widths = (16, 32, 64, 64)
    c.model.trajectory_widths = (32, 64, 64)
    c.model.slot_features = 32
    c.train.batch_size = 16
    c.train.num_steps = 2_200
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 1_000
    c.optim.learning_rate = 2e-3
    c.eval.num_examples = 200
    c.mesh.num_devices = 1  # small batches: one device, no cross-device overhead on 2 cores
  if preset == "tiny":
    c.data.image_size = 16
    c.data.num_train = 8
    c.data.num_validation = 2
    c.data.num_test = 3
    c.model.code_features = 16
    c.model.hidden = 16
    c.model.encoder_features = 16
    c.model.voxel_widths = (4, 8)
    c.model.image_widths = (4, 8)
    c.model.trajectory_widths = (8,)
    c.model.slot_features = 4
    c.train.batch_size = 4
    c.train.num_steps = 4
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 4  # the last step only: saving dominates 4 tiny steps
    c.eval.batch_size = 4
    c.eval.num_examples = 3
    c.eval.refine_k = 2
    c.visualize.num_examples = 1
  c.lock()
  return c
