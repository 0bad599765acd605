r"""ProxylessNAS: the paper's search, the released architectures, and a CPU demo.

Presets (`--config=experiments/configs/proxyless_nas.py:PRESET`, or a flagfile naming one):

* `demo`: the generated 10-class grating task at 32x32 (no download; 5,000 training images
  of which 1,000 are held out for the architecture updates, 1,000 test), the reduced
  `SearchSpace.demo()` (6 searchable blocks, 3x3/5x5 x MBConv3/6 + zero). Builds a block
  latency table on this CPU, warms the super-network up, searches for two latency targets
  (ref = 0.05x and 2x the slowest architecture's latency; `add#linear`, as sub-millisecond
  references make `mul#log`'s log ref negative), derives both networks, measures them end to
  end (the table re-timed in the same rounds), fine-tunes them from the super-network's weights
  and evaluates. Deviations from the paper to fit minutes on 2 cores: a few epochs, and the
  architecture lr raised to 0.25 (Adam moves alpha by about lr per update, and the demo has ~18
  updates per target; at 0.05 the probabilities stayed near uniform). Measured (7 min 13 s on 2
  CPU cores): the 0.05x target derives 3x3_MBConv3,zero,5x5_MBConv3,zero,5x5_MBConv6,zero and
  runs in 0.846 ms (table estimate 0.877, +3.6%), the 2x target's six-block network in 1.125
  ms (estimate 1.042, -7.4%); test accuracy 90.9 and 91.0 after 2 epochs of fine-tuning.
    python -m experiments.proxyless_nas --flagfile=experiments/flags/proxyless_demo.flags
* `tiny`: the same pipeline on a two-block space at 16x16 with one latency target (half the
  slowest architecture's), shrunk for tests (seconds).
* `paper_mobile`: the paper's ImageNet search for the mobile target: 21 blocks, 40 warm-up
  epochs then 120 search epochs, SGD Nesterov lr 0.025 cosine, batch 256, wd 4e-5, label
  smoothing 0.1; alpha by Adam (lr 1e-3, beta1 0) once per 5 weight steps on 50,000 images held
  out from train; `two`-path binarization; `mul#log` against ref 80 ms from the reference's
  Pixel-1 table (`mobile_trim.yaml`, give it with --config.latency.table). Then the derived
  network is trained from scratch for 300 epochs (lr 0.05 cosine, batch 256 [unverified]).
  Reference result of the released mobile network: 74.59 / 92.20 top-1 / top-5.
    python -m experiments.proxyless_nas --flagfile=experiments/flags/proxyless_mobile_search.flags \
        --config.data.source=folder:/path/to/imagenet --config.latency.table=/path/mobile_trim.yaml
* `paper_device`: the same search against a table of THIS device (built by
  --mode=build_latency_table at batch 1), ref at half the slowest architecture's latency.
* `proxyless_gpu` / `proxyless_cpu` / `proxyless_mobile`: the released architectures, trained
  from scratch on ImageNet (`--mode=train`, then `evaluate`, `profile`). Reference top-1 / top-5
  75.08 / 92.54, 75.29 / 92.39, 74.59 / 92.20.
    python -m experiments.proxyless_nas --flagfile=experiments/flags/proxyless_gpu.flags \
        --config.data.source=folder:/path/to/imagenet
* `cifar10`: a released architecture (`--arch`, default proxyless_mobile) on CIFAR-10
  (prepared tfds `cifar10`), 32x32, 200 epochs (no published number).
"""

from __future__ import annotations

import ml_collections

from lite_jax.core.errors import UserError
from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config

PRESETS = ("demo", "tiny", "paper_mobile", "paper_device", "proxyless_gpu", "proxyless_cpu",
           "proxyless_mobile", "cifar10")


def _phase(epochs: float, batch_size: int, learning_rate: float) -> ml_collections.ConfigDict:
  """A weight-training phase: SGD Nesterov, momentum 0.9, cosine, wd 4e-5 (the paper's)."""
  c = train_config(log_every_steps=100, checkpoint_every_steps=1000, keep_checkpoints=2)
  c.num_epochs = epochs
  c.batch_size = batch_size
  c.label_smoothing = 0.1
  c.optim = ml_collections.ConfigDict(dict(learning_rate=learning_rate, momentum=0.9,
                                           nesterov=True, weight_decay=4e-5))
  return c


def base_config() -> ml_collections.ConfigDict:
  """Every field the pipeline reads, at the paper's ImageNet mobile search."""
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # digits | synthetic | tfds:cifar10 | tfds:imagenet2012 | folder:PATH
  c.data.source = "folder:"
  c.data.data_dir = ""  # prepared tfds datasets / the ArrayRecord copy ('' = <workdir>/data)
  c.data.image_size = 224
  c.data.holdout_size = 50_000  # held out from train: the architecture updates' data
  c.data.eval_batch_size = 256

  c.space = ml_collections.ConfigDict()
  c.space.name = "paper"  # paper (21 blocks) | demo | tiny
  c.space.width = 1.0

  c.latency = ml_collections.ConfigDict()
  c.latency.kind = "mobile_trim"  # mobile_trim (the reference's yaml) | device (this device)
  c.latency.table = ""  # yaml (mobile_trim) or JSON (device; '' = <workdir>/latency_table.json)
  c.latency.loss = "mul#log"  # mul#log | add#linear
  c.latency.ref_ms = 80.0
  # Comma-separated fractions of the slowest architecture's latency (the table's), one search
  # each ('' = ref_ms).
  c.latency.ref_fractions = ""
  c.latency.batch_size = 1  # images per timed call (table and measurements)
  c.latency.repeats = 20
  c.latency.check_archs = 4  # sampled networks timed end to end to check a built table

  c.warmup = _phase(40.0, 256, 0.025)  # weights only, uniform paths
  c.search = _phase(120.0, 256, 0.025)
  c.search.mode = "two"  # two | full
  c.search.arch_lr = 1e-3  # Adam, betas (0, 0.999)
  c.search.arch_every = 5  # weight steps per architecture update
  c.search.arch_batch_size = 256

  c.train = _phase(300.0, 256, 0.05)
  c.train.arch = ""  # proxyless_gpu | proxyless_cpu | proxyless_mobile | 'op,op,...' | ''
  c.train.init = "scratch"  # scratch | supernet (the derived weights from the search)

  c.mesh = mesh_config()
  return c


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r} for proxyless_nas; choose one of {PRESETS}.")
  c = base_config()
  c.preset = preset
  if preset == "paper_device":
    c.latency.kind = "device"
    c.latency.ref_fractions = "0.5"
  elif preset in ("proxyless_gpu", "proxyless_cpu", "proxyless_mobile"):
    c.train.arch = preset
  elif preset == "cifar10":
    c.data.source = "tfds:cifar10"
    c.data.image_size = 32
    c.data.holdout_size = 5_000
    c.train = _phase(200.0, 128, 0.05)
    c.train.arch = "proxyless_mobile"
    c.train.init = "scratch"
  elif preset in ("demo", "tiny"):
    c.data.source = "synthetic"
    c.data.image_size = 32
    c.data.holdout_size = 1_000
    c.data.eval_batch_size = 250
    c.space.name = "demo"
    c.latency.kind = "device"
    c.latency.loss = "add#linear"
    c.latency.ref_fractions = "0.05,2"
    c.latency.repeats = 15
    c.latency.check_archs = 3
    # Uniformly sampled paths sit on the grating task's initial plateau for ~150 steps
    # (a fixed path: ~50), so the warm-up gets most of the time.
    c.warmup = _phase(4.0, 64, 0.05)
    c.search = _phase(1.5, 64, 0.025)
    c.search.mode = "two"
    c.search.arch_lr = 0.25
    c.search.arch_every = 5
    c.search.arch_batch_size = 64
    c.train = _phase(2.0, 64, 0.02)
    c.train.arch = ""
    c.train.init = "supernet"
    for phase in (c.warmup, c.search, c.train):
      phase.log_every_steps = 10
    if preset == "tiny":
      c.data.image_size = 16
      c.data.holdout_size = 64
      c.data.eval_batch_size = 100
      c.space.name = "tiny"
      c.latency.ref_fractions = "0.5"  # one search (the demo's two cost twice the time)
      c.latency.repeats = 3
      c.latency.check_archs = 1
      c.warmup.num_epochs = c.train.num_epochs = 0.02  # 6 steps
      c.search.num_epochs = 0.04  # 12 steps, 2 architecture updates
      for phase in (c.warmup, c.search, c.train):
        phase.batch_size = 16
        phase.checkpoint_every_steps = 10
      c.search.arch_batch_size = 16
  return c
