r"""AMC: AutoML for Model Compression (channel pruning), every paper setting plus a CPU demo.

Presets (`--config=experiments/configs/amc.py:PRESET`, or a flagfile naming one):

* `demo`: the generated 10-class grating task at 32x32 (no download; 4,600 training images,
  400 of train held out for the reward, 1,000 test), a plain 5-conv CNN (`PlainCNN`: its 3x3
  convs are refit by im2col least squares), 50% of its FLOPs: trains the full model, searches
  (DDPG, 300 episodes, reward = held-out top-1 without fine-tuning), exports and fine-tunes the
  searched widths and the uniform width of the same budget (3 epochs, lr 0.005). Measured (3
  min 33 s on 2 CPU cores): 0.499x FLOPs, channels 3,24,64,40,72,32; test top-1 96.7 after
  pruning and refitting (no fine-tuning), 96.2 fine-tuned, against 95.4 for the uniform width
  (0.695 of every layer, whole channels: 0.498x FLOPs) and 96.4 for the full model.
    python -m experiments.amc --flagfile=experiments/flags/amc_demo.flags
* `tiny`: the same pipeline on scikit-learn's digits, shrunk for tests (seconds).
* `mobilenetv1_0p5flops`: the paper's MobileNetV1 search at 50% FLOPs on ImageNet: 800
  episodes (100 warm-up), reward 0.01 x top-5 on 3,000 images held out from train, features of
  3,000 calibration images x 10 positions; then 150 epochs of fine-tuning (cosine lr 0.05,
  batch 256, wd 4e-5). Reference after fine-tuning: 70.494 / 89.306 top-1 / top-5
  (MobileNetV1-0.75: 68.4).
    python -m experiments.amc --flagfile=experiments/flags/amc_mobilenetv1_0p5flops.flags \
        --config.data.source=folder:/path/to/imagenet
* `mobilenetv1_0p5flops_reference`: the same, with the reference's published channels
  (3,24,48,96,80,192,200,328,352,368,360,328,400,736,752: 294M MACs here, the README's 285M)
  instead of a search: `--mode=profile` needs no data; `all` / `export` / `finetune` prune and
  fine-tune the trained full model to them.
* `mobilenetv2_0p7flops`: MobileNetV2 at 70% FLOPs (reference 70.854 top-1): the hidden
  (expansion) width of every block is pruned through its project 1x1 (block outputs, tied by
  the shortcuts, keep their widths).
* `resnet50_0p5flops`: ResNet-50 at 50% FLOPs (the paper reports ResNet-50 only in text, no
  released policy or number): each bottleneck's conv2 (3x3, im2col) and conv3 inputs.
* `cifar10_plain_cnn`: the demo's CNN, twice as wide, on prepared tfds CIFAR-10 at 50% FLOPs
  (no published number).

The full model the search starts from is trained by the `pretrain` phase unless the workdir
holds it. Rewards use data held out from train, never the test split.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.automl_common import data_config, sgd_phase
from lite_jax.core.errors import UserError
from lite_jax.core.mesh import mesh_config

PRESETS = ("demo", "tiny", "mobilenetv1_0p5flops", "mobilenetv1_0p5flops_reference",
           "mobilenetv2_0p7flops", "resnet50_0p5flops", "cifar10_plain_cnn")
REFERENCE_MOBILENET_V1_CHANNELS = "3,24,48,96,80,192,200,328,352,368,360,328,400,736,752"


def base_config() -> ml_collections.ConfigDict:
  """Every field the AMC pipeline reads, at the reference's MobileNetV1 50%-FLOPs search."""
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.seed = 0
  # Kept input channels per prunable layer, the image's first ('' = the search's best).
  c.channels = ""

  # Held out from train: the reward's images (reference: 3,000).
  c.data = data_config(holdout_size=3_000, eval_batch_size=250)

  c.model = ml_collections.ConfigDict()
  c.model.name = "mobilenet_v1"
  c.model.width = 1.0

  c.amc = ml_collections.ConfigDict()
  c.amc.preserve_ratio = 0.5  # FLOPs budget, a fraction of the full model's
  c.amc.lbound = 0.2
  c.amc.rbound = 1.0
  c.amc.channel_round = 8
  c.amc.reward = "acc"  # acc (0.01 x acc, budget by the clamp) | acc_flops (-error log FLOPs)
  c.amc.acc_metric = "top5"  # the reference's ImageNet reward; top1 for 10 classes
  c.amc.calibration_images = 3_000  # reference: 60 batches x 50 images
  c.amc.positions_per_image = 10

  c.pretrain = sgd_phase(150.0, 256, 0.05, 4e-5)  # the full model (the reference starts trained)

  c.search = ml_collections.ConfigDict()
  c.search.episodes = 800
  c.search.warmup_episodes = 100
  c.search.sigma_decay = 0.95
  c.search.seed = 2018
  c.search.checkpoint_every_episodes = 20

  c.finetune = sgd_phase(150.0, 256, 0.05, 4e-5)

  c.mesh = mesh_config()
  return c


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for amc; choose one of {PRESETS}.")
  c = base_config()
  c.preset = preset
  if preset == "mobilenetv1_0p5flops":
    pass  # the base config is this setting
  elif preset == "mobilenetv1_0p5flops_reference":
    c.channels = REFERENCE_MOBILENET_V1_CHANNELS
  elif preset == "mobilenetv2_0p7flops":
    c.model.name = "mobilenet_v2"
    c.amc.preserve_ratio = 0.7
    c.finetune = sgd_phase(150.0, 256, 0.05, 4e-5)
  elif preset == "resnet50_0p5flops":
    c.model.name = "resnet50"
    c.amc.calibration_images = 1_000  # 3x3 patches of 512 channels: 18 MB per 1,000 rows
    c.pretrain = sgd_phase(90.0, 256, 0.1, 1e-4)
    c.finetune = sgd_phase(30.0, 256, 0.01, 1e-4)
  elif preset == "cifar10_plain_cnn":
    c.data.source = "tfds:cifar10"
    c.data.image_size = 32
    c.model.name = "plain_cnn"
    c.model.width = 2.0
    c.amc.acc_metric = "top1"
    c.pretrain = sgd_phase(60.0, 128, 0.05, 5e-4)
    c.finetune = sgd_phase(20.0, 128, 0.01, 5e-4)
    c.search.episodes = 400
  elif preset in ("demo", "tiny"):
    c.data.source = "synthetic"
    c.data.image_size = 32
    c.data.holdout_size = 400
    c.data.eval_batch_size = 200
    c.model.name = "plain_cnn"
    c.amc.acc_metric = "top1"  # 10 classes: top-5 saturates
    c.amc.calibration_images = 500
    c.pretrain = sgd_phase(8.0, 64, 0.05, 4e-5)
    c.pretrain.log_every_steps = 20
    c.search.episodes = 300
    c.search.sigma_decay = 0.98
    c.search.checkpoint_every_episodes = 25
    c.finetune = sgd_phase(3.0, 64, 0.005, 4e-5)
    c.finetune.log_every_steps = 20
    if preset == "tiny":
      c.data.source = "digits"
      c.data.image_size = 16
      c.model.width = 0.5
      c.data.holdout_size = 64
      c.data.eval_batch_size = 64
      c.amc.calibration_images = 64
      c.pretrain.num_epochs = 0.3
      c.search.episodes = 3
      c.search.warmup_episodes = 2
      c.search.checkpoint_every_episodes = 2
      c.finetune.num_epochs = 0.1
  return c
