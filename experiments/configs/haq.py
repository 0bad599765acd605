r"""HAQ: hardware-aware mixed-precision quantization, every paper setting plus a CPU demo.

Presets (`--config=experiments/configs/haq.py:PRESET`, or a flagfile naming one):

* `demo`: the deterministic 10-class grating task at 32x32 (generated, no download; 4,600
  training images, 400 of train held out for the search's reward, 1,000 test), a narrow
  MobileNetV2 (14 quantizable layers), the bit-serial edge latency model, a budget of 0.5x the
  all-8-bit latency: trains the fp32 model, searches 2-8-bit weights and activations per layer
  with DDPG (100 episodes), fine-tunes the searched policy and the uniform policy of the same
  budget. About 5 minutes on 2 CPU cores; measured: 0.461 ms within the 0.473 ms budget, acc
  95.5 against acc_uniform 94.8 (5 bits) and acc_fp32 95.9.
    python -m experiments.haq --flagfile=experiments/flags/haq_demo.flags
* `tiny`: the same pipeline on scikit-learn's digits at 16x16, shrunk for tests (seconds).
* `mobilenetv2_latency0p6`: the paper's linear quantization of MobileNetV2 at 0.6x the
  all-8-bit latency. Each search episode fine-tunes one epoch on 20k training images and is
  scored on 10k others held out from train; then 30 epochs of fine-tuning on ImageNet (lr 0.01
  cosine, wd 4e-5, batch 256). Reference top-1/top-5 71.23/90.00 against fp32 72.05/90.49.
  The reference searches on its ImageNet-100 classes and fine-tunes on all 1000; here one
  dataset serves every phase: `--config.data.subset=imagenet100` gives the reference's search
  data (and a 100-class model throughout), the default the 1000-class model. The reference's latency is its released table
  (`--config.cost.table=/path/qmobilenetv2_imagenet100_batch16_latency_table.npy`,
  `--config.cost.kind=table`); without it the bit-serial cloud model stands in.
    python -m experiments.haq --flagfile=experiments/flags/haq_mobilenetv2_latency0p6.flags \
        --config.data.source=folder:/path/to/imagenet
* `resnet50_kmeans_size0p1`: k-means weight sharing of ResNet-50 (weights only, 1-8 bits) at
  10% of the fp32 size; 100 epochs of fine-tuning. Reference 75.48/92.42 against 76.15/92.87.
    python -m experiments.haq --flagfile=experiments/flags/haq_resnet50_kmeans_size0p1.flags \
        --config.data.source=folder:/path/to/imagenet
* `cifar10_mobilenetv2`: MobileNetV2 on CIFAR-10 (prepared tfds `cifar10`) at 0.6x latency
  (no published number; a setting that runs on one GPU in hours).

The fp32 model the search starts from is trained by the `pretrain` phase (the reference starts
from a trained model: MobileNetV2 150 epochs) unless the workdir already holds it. Rewards are
measured on the held-out part of train, never on the test split (the reference's linear search
uses training accuracy: we do not).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.automl_common import data_config, sgd_phase
from lite_jax.core.errors import UserError
from lite_jax.core.mesh import mesh_config

PRESETS = ("demo", "tiny", "mobilenetv2_latency0p6", "resnet50_kmeans_size0p1",
           "cifar10_mobilenetv2")


def base_config() -> ml_collections.ConfigDict:
  """Every field the HAQ pipeline reads, at the reference's MobileNetV2 linear setting."""
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.seed = 0

  c.data = data_config(holdout_size=10_000)  # held out from train: the search's reward set
  c.data.search_train_size = 20_000  # the training subset each episode fine-tunes on

  c.model = ml_collections.ConfigDict()
  c.model.name = "mobilenet_v2"  # lite_jax.automl.classifiers.build_classifier
  c.model.width = 1.0

  c.quant = ml_collections.ConfigDict()
  c.quant.method = "linear"  # linear (weights + activations) | kmeans (weights only)
  c.quant.min_bits = 2
  c.quant.max_bits = 8
  c.quant.activation_cap = 6.0  # ReLU6 range: max calibration caps activations here
  c.quant.kmeans_iters = 3  # Lloyd iterations per layer and policy (the reference's search: 3)

  c.cost = ml_collections.ConfigDict()
  # table (the reference's .npy) | device (a table built by --mode=build_latency_table) |
  # bitserial_edge | bitserial_cloud | bitfusion_latency | bitfusion_energy | size
  c.cost.kind = "bitserial_cloud"
  c.cost.table = ""  # .npy (table) or .json (device; '' = <workdir>/latency_table.json)
  c.cost.preserve_ratio = 0.6  # budget: this fraction of the all-8-bit cost (fp32 for size)
  c.cost.batch_size = 16  # the batch the latency is of (the reference's table: 16)

  c.pretrain = sgd_phase(150.0, 256, 0.05, 4e-5)  # the fp32 model (reference: 150 epochs)

  c.search = ml_collections.ConfigDict()
  c.search.episodes = 600
  c.search.warmup_episodes = 20
  c.search.sigma_decay = 0.99
  c.search.seed = 234
  c.search.finetune_epochs = 1.0  # on search_train_size images, per episode
  c.search.batch_size = 128
  c.search.learning_rate = 1e-3  # SGD momentum 0.9, constant
  c.search.checkpoint_every_episodes = 10

  c.finetune = sgd_phase(30.0, 256, 0.01, 4e-5)
  c.finetune.policy = ""  # 'w,a;w,a;...' per layer ('' = the search's best policy)

  c.mesh = mesh_config()
  return c


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for haq; choose one of {PRESETS}.")
  c = base_config()
  c.preset = preset
  if preset == "mobilenetv2_latency0p6":
    pass  # the base config is this setting
  elif preset == "resnet50_kmeans_size0p1":
    c.model.name = "resnet50"
    c.quant.method = "kmeans"
    c.quant.min_bits = 1
    c.cost.kind = "size"
    c.cost.preserve_ratio = 0.1
    c.search.batch_size = 256
    c.data.holdout_size = 10_000
    c.pretrain = sgd_phase(90.0, 256, 0.1, 1e-4)
    c.finetune = sgd_phase(100.0, 256, 1e-3, 1e-4)
    c.finetune.policy = ""
  elif preset == "cifar10_mobilenetv2":
    c.data.source = "tfds:cifar10"
    c.data.image_size = 32
    c.data.holdout_size = 5_000
    c.pretrain = sgd_phase(150.0, 128, 0.05, 4e-5)
  elif preset in ("demo", "tiny"):
    # Oriented gratings in noise (data/image_classification.py): learnable but not saturated,
    # so uniform low bits cost accuracy and the search has something to find (on digits,
    # uniform 5 bits already equal fp32; benchmarks/RESULTS.md).
    c.data.source = "synthetic"
    c.data.image_size = 32
    c.data.holdout_size = 400
    c.data.search_train_size = 640
    c.data.eval_batch_size = 250
    c.model.name = "tiny_mobilenet_v2"
    c.cost.kind = "bitserial_edge"
    c.cost.batch_size = 1
    c.cost.preserve_ratio = 0.5  # uniform 5 bits fit (6 do not); the paper's 0.6 fits 6 bits
    c.pretrain = sgd_phase(8.0, 64, 0.05, 4e-5)
    c.pretrain.log_every_steps = 20
    c.search.episodes = 100
    c.search.sigma_decay = 0.98  # sigma 0.5 -> 0.1 over the 80 episodes after warm-up
    c.search.finetune_epochs = 1.0
    c.search.batch_size = 64
    c.search.learning_rate = 5e-3
    c.finetune = sgd_phase(2.0, 64, 0.01, 4e-5)
    c.finetune.policy = ""
    c.finetune.log_every_steps = 20
    if preset == "tiny":
      c.data.source = "digits"  # 1,297 images: the smallest offline set
      # 8x8 digits need no 32x32: at 16 every phase computes 4x less (the stages end at 1x1).
      c.data.image_size = 16
      c.data.holdout_size = 64
      c.data.search_train_size = 64
      c.data.eval_batch_size = 64
      c.pretrain.num_epochs = 0.3
      c.search.episodes = 3
      c.search.warmup_episodes = 2
      c.search.checkpoint_every_episodes = 2
      c.search.batch_size = 32
      c.finetune.num_epochs = 0.1
  return c
