r"""GAN Compression (Fast and original pipelines): every reference setting.

Presets (`--config=experiments/configs/gan_compress.py:PRESET`, or a flagfile that names one):

* `demo`: the built-in synthetic paired task (outline -> filled, textured shapes; no
  download) at 32x32: teacher -> once-for-all distillation -> evolutionary search -> export ->
  evaluation in under 10 minutes on 2 CPU cores; writes `compare.png` (input | teacher |
  compressed | target) and `search.png`.
    python -m experiments.gan_compress --flagfile=experiments/flags/gan_compress_demo.flags
* `tiny`: the demo shrunk for tests (16x16, 3 residual blocks, a few steps, seconds).
* `cyclegan_horse2zebra`, `pix2pix_edges2shoes`, `pix2pix_cityscapes`, `pix2pix_map2aerial`:
  the reference's Fast GAN Compression recipes (`scripts/<model>/<task>_fast/*.sh`): the original
  ResNet generator (ngf 64, 56.8G MACs) as teacher, a ngf-64 mobile super-network distilled
  from it from scratch, evolutionary search under the reference's MACs budget, fine-tuning
  where the reference fine-tunes, export. Reference results (README, retrained/Fast):
  horse2zebra FID 65.19 (Fast) at ~2.6-3G MACs, edges2shoes FID 25.76, cityscapes mIoU
  41.71, map2aerial FID 48.67. Each runs with its flagfile, e.g.
    python -m experiments.gan_compress --flagfile=experiments/flags/cyclegan_horse2zebra.flags \
        --config.data.source=folder:/path/to/horse2zebra \
        --config.eval.fid_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  (`folder:` takes the CycleGAN `trainA/trainB/testA/testB` or the pix2pix `train/val/test`
  side-by-side layout; `tfds:cycle_gan/horse2zebra` reads a prepared tfds copy.) The
  reference scores cityscapes with a DRN segmentation network (mIoU), which is not
  implemented here: that preset searches and evaluates with FID.
* `cyclegan_horse2zebra_gc`, `pix2pix_edges2shoes_gc`, `pix2pix_cityscapes_gc`,
  `pix2pix_map2aerial_gc`: the same tasks with the original (non-Fast) GAN Compression
  pipeline: a MobileResNet teacher (ngf 64 / 64 / 96 / 96), a fixed student (ngf 32 / 48 / 48 /
  48) initialised as the teacher's L1-pruned copy (`lite_jax.gan_compression.pruning`) and
  distilled with D from the teacher's (`<workdir>/student/`, part of `--mode=distill`), then
  the super-network from the student and its D, searched in `channels-32` / `channels-48`,
  fine-tuned where the reference does, with the reference's epochs per phase. The reference's
  final configs: horse2zebra `16_16_32_16_32_32_16_16` (README FID 65.12), edges2shoes
  `32_32_48_32_48_48_16_16` (26.70), cityscapes `32_32_48_32_32_48_24_24` (mIoU 38.63), maps
  `32_32_48_32_48_32_16_16`. Search budgets and held-out splits are the Fast presets' (the
  reference's non-Fast scripts were not checked for theirs).
* `gaugan_cityscapes`: Fast GAN Compression of GauGAN (SPADE) on Cityscapes at 512x256, 35
  labels + instance edge (`lite_jax.gan_compression.spade_recipe`): the SPADE teacher (ngf 64,
  281.4G MACs, 93.0M params; 100+100 epochs, hinge GAN with a 2-scale spectral-instance D,
  feature matching 10, VGG 10, G lr 1e-4 / D 4e-4, Adam (0, 0.9), batch 16), a ngf-64 mobile
  super-network distilled from it from scratch (200+200 epochs, distillation 10 on head_0 /
  G_middle_1 / up_1), evolutionary search under 32e9 MACs with BN re-calibration on the
  200 held-out images, export, evaluation. Reference result (README, Fast): FID 56.25,
  mIoU 61.17 at ~31G MACs (`32_32_32_48_32_24_24_32`). mIoU needs the DRN-D-105 segmenter,
  which is not implemented: search and evaluation use FID (`eval.fid_weights`). Fine-tuning
  the chosen sub-network is off (0 epochs: the searched slice is exported). The reference's
  tutorial calls it optional; its `cityscapes_fast/finetune.sh` trains 100+100 epochs with D
  continued from the super-network's, which
  `--config.finetune.nepochs=100 --config.finetune.nepochs_decay=100` reproduces: the
  pipeline then fine-tunes between search and export (`--mode=finetune` runs that phase
  alone). Needs the user's files:
    python -m experiments.gan_compress --flagfile=experiments/flags/gaugan_cityscapes.flags \
        --config.data.source=cityscapes:/path/to/cityscapes \
        --config.gaugan.vgg_weights=/path/to/vgg19-dcbb9e9d.pth \
        --config.eval.fid_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  (`--mode=profile` prints the MACs without data: 281.4G / 93.0M.)
* `gaugan_coco`: the same on COCO-Stuff at 256x256 (182 labels + dontcare + instance edge,
  191.2G MACs / 97.5M params; training maps resized to 286 and randomly cropped to 256),
  searched in `channels-64-coco` under 36e9 MACs on 500 held-out images, batch 32. Reference
  result (README, Fast): FID 25.06, mIoU 35.05 (DeepLabV2, not implemented: FID here) at
  `40_32_32_40_32_40_24_24`. Its epochs are the cityscapes preset's; the reference's COCO
  scripts were not available to check. `--config.data.source=coco:/path/to/cocostuff` with
  `train_img/ train_label/ train_inst/ val_img/ val_label/ val_inst/`.
* `gaugan_demo`: the same pipeline on synthetic label maps (4 classes + instance edges) at
  64x32, no VGG loss (it needs the weights file) and D from scratch: a SPADE teacher (ngf 8,
  72.6M MACs) -> ngf-8 super-network -> evolution under 15M MACs, scored by L1 to the real
  held-out images; writes `compare.png` (label map | teacher | compressed | real) and
  `search.png`. About 8 minutes on 2 shared CPU cores; one run gave test L1 / PSNR 0.107 /
  20.5 dB for the teacher (trained with spectral norm) and 0.144 / 18.7 dB for
  `4_4_4_4_4_4_4_6`, 5.3x smaller. No fine-tuning unless asked
  (`--config.finetune.nepochs=N`: N epochs of the chosen sub-network before export).
    python -m experiments.gan_compress --config=experiments/configs/gan_compress.py:gaugan_demo \
        --workdir=runs/gaugan_demo
* `gaugan_tiny`: the GauGAN demo shrunk for tests (ngf 4, a few steps, seconds).

Budgets are the reference's evolution budgets (horse2zebra 3e9, edges2shoes 4.9e9,
cityscapes 5.7e9, maps 4.6e9 MACs); held-out search splits are its train2 sizes (120, 2048,
200, 300 images), drawn with a fixed seed because its meta files are not public data.
"""

from __future__ import annotations

import ml_collections

from lite_jax.core.errors import UserError
from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config


def _phase(batch_size: int, nepochs: int, nepochs_decay: int, lr: float = 2e-4
           ) -> ml_collections.ConfigDict:
  """One training phase: Adam(beta1 0.5), constant `nepochs` then linear decay to 0."""
  p = ml_collections.ConfigDict()
  p.batch_size = batch_size
  p.nepochs = nepochs
  p.nepochs_decay = nepochs_decay
  p.lr = lr
  p.lr_d = 0.0  # discriminator learning rate; 0 = same as lr
  p.beta1 = 0.5
  p.beta2 = 0.999
  return p


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.task = "pix2pix"  # 'pix2pix' (paired) | 'cyclegan' (unpaired) | 'gaugan' (label maps)
  c.seed = 0
  c.dtype = "float32"  # compute dtype of every network ('bfloat16' on accelerators)
  c.depthwise_impl = "shifts"  # mobile generators' depthwise convs: 'shifts' | 'conv' (XLA's)

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"  # 'synthetic' | 'folder:/path' | 'tfds:cycle_gan/NAME'
  c.data.tfds_data_dir = ""  # ArrayRecord copies / prepared tfds data ('' = <workdir>/tfds)
  c.data.direction = "AtoB"
  c.data.preprocess = "resize_and_crop"  # or 'none' (sizes rounded to multiples of 4)
  c.data.load_size = 286  # training: resize (bicubic) then random crop + flip
  c.data.crop_size = 256  # training crop; test images are resized to it
  c.data.flip = True
  c.data.holdout = 120  # training images held out to score search candidates (train2)
  c.data.seed = 0  # of the split and of the synthetic task
  c.data.synthetic_size = 64
  c.data.synthetic_train = 1000
  c.data.synthetic_test = 100

  c.teacher = ml_collections.ConfigDict()
  c.teacher.kind = "resnet"  # 'resnet' (original) | 'mobile_resnet'
  c.teacher.ngf = 64
  c.teacher.n_blocks = 9
  c.teacher.dropout_rate = 0.0

  c.student = ml_collections.ConfigDict()
  c.student.ngf = 64  # super-network width: channel config (ngf,) * 8
  c.student.search_space = "channels-64-pix2pix"  # a reference space, or "48,32|48,32|..."
  c.student.dropout_rate = 0.0
  # 'scratch' | 'pruned_teacher': the L1-pruned mobile teacher (the original pipeline; needs
  # teacher.kind='mobile_resnet').
  c.student.init = "scratch"

  c.discriminator = ml_collections.ConfigDict()
  c.discriminator.ndf = 128
  c.discriminator.n_layers = 3
  c.discriminator.norm = "instance"

  c.teacher_train = _phase(1, 100, 100)
  c.teacher_loss = ml_collections.ConfigDict()
  c.teacher_loss.gan_mode = "hinge"
  c.teacher_loss.lambda_recon = 100.0  # pix2pix L1
  c.teacher_loss.lambda_cycle = 10.0  # CycleGAN
  c.teacher_loss.lambda_identity = 0.5
  c.teacher_loss.pool_size = 50

  # The original pipeline's fixed student at student.ngf, distilled before the super-network
  # (which then starts from it); 0 epochs skips it, as Fast GAN Compression does.
  c.student_train = _phase(1, 0, 0)
  c.distill = _phase(1, 200, 200)
  c.distill.restore_discriminator = False  # Fast GAN Compression trains D from scratch
  c.distill_loss = ml_collections.ConfigDict()
  c.distill_loss.gan_mode = "hinge"
  c.distill_loss.lambda_gan = 1.0
  c.distill_loss.lambda_recon = 100.0
  c.distill_loss.lambda_distill = 1.0

  c.search = ml_collections.ConfigDict()
  c.search.method = "evolution"  # 'evolution' | 'exhaustive'
  c.search.metric = "fid"  # 'fid' (needs eval.fid_weights) | 'l1'
  c.search.budget_macs = 3e9
  c.search.population_size = 100
  c.search.generations = 500
  c.search.parent_ratio = 0.25
  c.search.mutation_ratio = 0.5
  c.search.mutate_prob = 0.2
  c.search.batch_size = 16
  c.search.num_images = 0  # score on the first N held-out images (0 = all)

  c.finetune = _phase(1, 0, 0)  # no epochs: the searched slice is exported as it is

  c.subnet = ml_collections.ConfigDict()
  c.subnet.channels = ""  # '16_16_24_...' picks the sub-network instead of the search result

  # The intervals of every phase's loop; with `steps_per_run` a phase stops after that many
  # steps (and a checkpoint), and the next phases wait for the rerun that finishes it.
  c.train = train_config(log_every_steps=100, checkpoint_every_steps=2000, keep_checkpoints=2)

  c.mesh = mesh_config()  # data parallel: batches split over devices

  # The export phase always writes `compressed.jaxexport` and `teacher.jaxexport` (plain-JAX
  # artifacts); `onnx` adds `compressed.onnx` and `teacher.onnx` (needs the optional
  # requirements-export.txt).
  c.export = ml_collections.ConfigDict()
  c.export.onnx = False

  c.eval = ml_collections.ConfigDict()
  c.eval.fid_weights = ""  # path to pt_inception-2015-12-05-6726825d.pth (or its .npz)
  c.eval.batch_size = 16
  c.eval.plot_examples = 6
  return c


def _cyclegan_horse2zebra(c):
  c.task, c.data.holdout = "cyclegan", 120
  c.discriminator.ndf = 64
  c.teacher_train = _phase(1, 100, 100)
  c.teacher_loss.gan_mode = "lsgan"
  c.student.search_space = "channels-64-cycleGAN"
  c.distill = _phase(1, 200, 200)
  c.distill.restore_discriminator = False
  c.distill_loss.gan_mode = "lsgan"
  c.distill_loss.lambda_recon, c.distill_loss.lambda_distill = 10.0, 0.01
  c.search.budget_macs, c.search.mutate_prob = 3e9, 0.3


def _pix2pix(c, *, holdout, direction, teacher, distill, finetune, recon, distill_weight,
             budget, mutate_prob):
  c.task, c.data.holdout, c.data.direction = "pix2pix", holdout, direction
  c.teacher_train, c.distill, c.finetune = _phase(*teacher), _phase(*distill), _phase(*finetune)
  c.distill.restore_discriminator = False
  c.distill_loss.lambda_recon, c.distill_loss.lambda_distill = recon, distill_weight
  c.teacher_loss.lambda_recon = recon
  c.search.budget_macs, c.search.mutate_prob = budget, mutate_prob


def _synthetic(c, tiny: bool):
  """Synthetic paired shapes at 32x32 (16x16 for tests) with a narrow teacher."""
  c.task = "pix2pix"
  c.data.source = "synthetic"
  c.data.synthetic_size = 16 if tiny else 32
  c.data.preprocess = "none"  # made at their final size
  c.data.load_size = c.data.crop_size = c.data.synthetic_size
  c.data.synthetic_train, c.data.synthetic_test = (48, 16) if tiny else (1200, 64)
  c.data.holdout = 16 if tiny else 64
  c.teacher.ngf = 8 if tiny else 16
  c.student.ngf = 8 if tiny else 16
  # Residual blocks of the teacher and the student (one per block group, each distilled): a
  # GAN step's compile time grows with them, and compiling is most of a test's time.
  c.teacher.n_blocks = 3 if tiny else 9
  c.student.search_space = ("8,4|8,4|8,4|8,4|8,4|8,4|8,4|8,4" if tiny else
                            "16,12,8|16,12,8|16,12,8|16,8|16,8|16,8|16,12,8|16,12,8")
  c.discriminator.ndf = 8 if tiny else 16
  c.discriminator.n_layers = 2 if tiny else 3  # the logits map stays at least 2x2
  for phase in ("teacher_train", "student_train", "distill", "finetune"):
    c[phase].batch_size = 8 if tiny else 16
  c.train.log_every_steps = 2 if tiny else 25
  c.train.checkpoint_every_steps = 4 if tiny else 200
  c.teacher_train.nepochs, c.teacher_train.nepochs_decay = (1, 1) if tiny else (4, 4)
  c.distill.nepochs, c.distill.nepochs_decay = (1, 1) if tiny else (4, 4)
  c.finetune.nepochs, c.finetune.nepochs_decay = 0, 0
  c.teacher_train.lr = c.distill.lr = 1e-3 if not tiny else 2e-4
  c.teacher_loss.lambda_recon = c.distill_loss.lambda_recon = 100.0
  c.search.metric = "l1"
  # Teacher 59.2M / 2.2M MACs (tiny), super-network 22.2M / 1.5M: about 6x / 2.2x compression.
  c.search.budget_macs = 1.0e6 if tiny else 10e6
  c.search.population_size, c.search.generations = (6, 2) if tiny else (24, 8)
  c.search.batch_size = c.eval.batch_size = 8 if tiny else 32


def _gaugan_phase(nepochs: int, nepochs_decay: int) -> ml_collections.ConfigDict:
  """SPADE's TTUR optimisation: G lr 1e-4, D lr 4e-4, Adam (0, 0.9), batch 16."""
  p = _phase(16, nepochs, nepochs_decay, lr=1e-4)
  p.lr_d = 4e-4
  p.beta1, p.beta2 = 0.0, 0.9
  return p


def _gaugan(c):
  """GauGAN on Cityscapes, the Fast GAN Compression recipe (`scripts/gaugan/cityscapes_fast`)."""
  c.task = "gaugan"
  c.data.source = "cityscapes:"  # cityscapes:/path/to/cityscapes, or 'synthetic'
  c.data.crop_size = 512  # width; height = crop_size / aspect_ratio
  c.data.holdout = 200  # the reference's train2.meta
  c.gaugan = ml_collections.ConfigDict()
  c.gaugan.aspect_ratio = 2.0
  c.gaugan.label_nc = 35
  c.gaugan.contain_dontcare = False
  c.gaugan.instance_edge = True
  c.gaugan.num_upsampling_layers = "more"
  c.gaugan.ngf = 64  # teacher width
  c.gaugan.teacher = "spade"  # 'spade' (Fast: the original) | 'mobile_spade' (GAN Compression)
  c.gaugan.vgg_weights = ""  # path to torchvision's vgg19-dcbb9e9d.pth (or its .npz)
  c.gaugan.load_size = 0  # training resize before a random crop (COCO: 286); 0 = no crop
  c.gaugan.teacher_spectral_norm = True  # as the reference trains its teacher G
  c.student.ngf = 64  # Fast trains a ngf-64 super-network from scratch (GAN Compression: 48)
  c.student.search_space = "channels-64"
  c.discriminator.ndf = 64
  c.discriminator.n_layers = 4  # GauGAN's n_layers_D
  c.discriminator.norm = "spectral_instance"
  c.discriminator.num_d = 2
  c.teacher_train = _gaugan_phase(100, 100)
  c.teacher_loss = ml_collections.ConfigDict()
  c.teacher_loss.gan_mode = "hinge"
  c.teacher_loss.lambda_gan = 1.0
  c.teacher_loss.lambda_feat = 10.0
  c.teacher_loss.lambda_vgg = 10.0
  c.distill = _gaugan_phase(200, 200)
  c.distill.restore_discriminator = False  # Fast trains D from scratch
  c.distill_loss = ml_collections.ConfigDict(c.teacher_loss.to_dict())
  c.distill_loss.lambda_distill = 10.0
  c.search.metric = "fid"  # the reference searches by mIoU (DRN-D-105, not implemented)
  c.search.budget_macs = 32e9  # Fast evolution (brute force: 35e9)
  c.search.calibration_images = 512  # BN re-calibration on the last batch of these
  # Off: the reference's (optional) cityscapes_fast/finetune.sh trains 100 + 100 epochs.
  c.finetune = _gaugan_phase(0, 0)


def _gaugan_coco(c):
  """GauGAN on COCO-Stuff at 256x256, Fast GAN Compression: the SPADE data options of
  `data/coco_dataset.py` and the reference's COCO search (`channels-64-coco`, 36e9 MACs, 500
  held-out images, batch 32). The epochs are the cityscapes recipe's: the reference's
  coco_fast scripts were not available to check theirs."""
  _gaugan(c)
  c.data.source = "coco:"  # coco:/path/to/cocostuff
  c.data.crop_size = 256
  c.data.holdout = 500
  c.gaugan.aspect_ratio = 1.0
  c.gaugan.label_nc = 182
  c.gaugan.contain_dontcare = True
  c.gaugan.num_upsampling_layers = "normal"
  c.gaugan.load_size = 286
  c.student.search_space = "channels-64-coco"
  for phase in (c.teacher_train, c.distill, c.finetune):
    phase.batch_size = 32
  c.search.budget_macs = 36e9


def _gaugan_synthetic(c, tiny: bool):
  """Synthetic label maps (4 classes + instance edges) at 64x32 with a narrow teacher."""
  _gaugan(c)
  c.data.source = "synthetic"
  c.data.crop_size = 64  # 64x32: bottom 2x1 after 'normal' upsampling's 5 steps
  c.data.synthetic_train, c.data.synthetic_test = (24, 8) if tiny else (400, 64)
  c.data.holdout = 8 if tiny else 64
  c.gaugan.label_nc = 4
  c.gaugan.num_upsampling_layers = "normal"  # sides divisible by 32
  c.gaugan.ngf = c.student.ngf = 4 if tiny else 8
  if tiny:  # XLA's grouped conv compiles the tiny SPADE steps faster; the ResNet tests use shifts
    c.depthwise_impl = "conv"
  c.student.search_space = "4,2|4,2|4,2|4,2|4,2|4,2|4,2|4,2" if tiny else (
      "8,6,4|8,6,4|8,6,4|8,6,4|8,6,4|8,6,4|8,6,4|8,6,4")
  c.discriminator.ndf = 8 if tiny else 16
  c.discriminator.n_layers = 3
  c.discriminator.num_d = 1 if tiny else 2  # tiny: one scale, half the discriminator to compile
  c.teacher_loss.lambda_vgg = c.distill_loss.lambda_vgg = 0.0  # needs the VGG19 weights
  c.teacher_train = _gaugan_phase(*((1, 1) if tiny else (5, 5)))
  c.distill = _gaugan_phase(*((2, 2) if tiny else (5, 5)))
  c.distill.restore_discriminator = False
  c.finetune = _gaugan_phase(0, 0)  # off: e.g. --config.finetune.nepochs=1 turns it on
  for phase in (c.teacher_train, c.distill, c.finetune):
    phase.batch_size = 8
  c.train.log_every_steps = 2 if tiny else 20
  c.train.checkpoint_every_steps = 4 if tiny else 200
  if not tiny:  # Short runs want larger steps than the reference's 1e-4 / 4e-4.
    c.teacher_train.lr, c.teacher_train.lr_d = 2e-4, 4e-4
    for phase in (c.distill, c.finetune):
      phase.lr, phase.lr_d = 5e-4, 1e-3
  c.search.metric = "l1"
  # Teacher 19.8M / 72.6M MACs, super-network 11.0M / 34.7M: budgets 3.3x / 4.8x below it.
  c.search.budget_macs = 6e6 if tiny else 15e6
  c.search.population_size, c.search.generations = (4, 1) if tiny else (16, 6)
  c.search.batch_size = c.eval.batch_size = 8 if tiny else 32
  c.search.calibration_images = 8 if tiny else 64


def _original_pipeline(c, *, teacher_ngf: int, student_ngf: int, student_epochs, space: str):
  """The original GAN Compression pipeline over a Fast preset's task settings: a mobile
  teacher, a fixed student at `student_ngf` initialised as the teacher's L1-pruned copy and
  distilled (`student_epochs`, D from the teacher's), then the super-network from the student
  (the reference's per-task scripts, `_ORIGINAL`)."""
  c.teacher.kind, c.teacher.ngf = "mobile_resnet", teacher_ngf
  c.student.ngf, c.student.search_space, c.student.init = student_ngf, space, "pruned_teacher"
  c.student_train = _phase(c.distill.batch_size, *student_epochs)
  c.distill.restore_discriminator = True  # the student's D starts as the teacher's


# The original pipeline per task: teacher ngf, student ngf, epochs of teacher / student /
# super-network / fine-tuning, and the search space (the reference's per-task scripts).
_ORIGINAL = {
    "cyclegan_horse2zebra": (64, 32, (100, 100), (100, 100), (200, 200), (0, 0), "channels-32"),
    "pix2pix_edges2shoes": (64, 48, (5, 15), (5, 15), (10, 30), (5, 15), "channels-48"),
    "pix2pix_cityscapes": (96, 48, (100, 150), (100, 150), (200, 300), (100, 150),
                           "channels-48"),
    "pix2pix_map2aerial": (96, 48, (100, 200), (100, 200), (200, 400), (100, 200),
                           "channels-48"),
}


def presets() -> tuple[str, ...]:
  return ("demo", "tiny", "cyclegan_horse2zebra", "pix2pix_edges2shoes", "pix2pix_cityscapes",
          "pix2pix_map2aerial", *(f"{name}_gc" for name in _ORIGINAL), "gaugan_cityscapes",
          "gaugan_coco", "gaugan_demo", "gaugan_tiny")


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  """The config of `preset` (see the module docstring for each preset's paper setting)."""
  if preset not in presets():
    raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(presets())}.")
  c = _base()
  if preset in ("demo", "tiny"):
    _synthetic(c, tiny=preset == "tiny")
  elif preset == "cyclegan_horse2zebra":
    _cyclegan_horse2zebra(c)
  elif preset == "pix2pix_edges2shoes":  # edges2shoes-r, batch 4
    _pix2pix(c, holdout=2048, direction="AtoB", teacher=(4, 5, 15), distill=(4, 10, 30),
             finetune=(4, 5, 15), recon=100.0, distill_weight=1.0, budget=4.9e9,
             mutate_prob=0.2)
  elif preset == "pix2pix_cityscapes":
    _pix2pix(c, holdout=200, direction="BtoA", teacher=(1, 100, 150), distill=(1, 200, 300),
             finetune=(1, 0, 0), recon=100.0, distill_weight=1.0, budget=5.7e9,
             mutate_prob=0.2)
  elif preset == "pix2pix_map2aerial":
    _pix2pix(c, holdout=300, direction="BtoA", teacher=(1, 100, 200), distill=(1, 200, 400),
             finetune=(1, 100, 200), recon=10.0, distill_weight=0.01, budget=4.6e9,
             mutate_prob=0.4)
  elif preset.endswith("_gc"):
    c = get_config(preset[:-3])
    teacher_ngf, student_ngf, teacher, student, supernet, finetune, space = _ORIGINAL[
        preset[:-3]]
    _original_pipeline(c, teacher_ngf=teacher_ngf, student_ngf=student_ngf,
                       student_epochs=student, space=space)
    for name, epochs in (("teacher_train", teacher), ("distill", supernet),
                         ("finetune", finetune)):
      c[name].nepochs, c[name].nepochs_decay = epochs
  elif preset == "gaugan_cityscapes":
    _gaugan(c)
  elif preset == "gaugan_coco":
    _gaugan_coco(c)
  else:
    _gaugan_synthetic(c, tiny=preset == "gaugan_tiny")
  c.preset = preset
  return c
