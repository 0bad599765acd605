"""The SPADE family of the GAN Compression pipeline: GauGAN, label map -> image.

What matches the reference (`models/spade_model.py`, `distillers/base_spade_distiller.py`,
`supernets/spade_supernet.py`, `models/modules/spade_modules/*`, `evolution_search.py`,
`scripts/gaugan/cityscapes_fast/*`):
- The generator's loss is `lambda_gan * hinge + lambda_feat * feature matching + lambda_vgg *
  VGG (+ lambda_distill * distillation)`: the multi-scale D sees the label map concatenated
  with the image, fakes and reals in one batch; feature matching is the L1 between D's
  intermediate features of fake and real (no gradient through the real), summed over layers
  and averaged over scales; VGG is `vgg.vgg_loss`. The D loss is hinge(real) + hinge(fake)
  (summed, not halved as in the ResNet pipeline). Every D forward advances its spectral-norm
  power iteration (two per step), and G's batch-norm statistics update in training.
- Distillation: each of the student's `spade.DISTILL_LAYERS` outputs (head_0, G_middle_1,
  up_1) goes through a learnable 1x1 conv (trained with G's Adam) to the teacher's width and
  is compared with the teacher's (in eval mode) by MSE; the three terms are summed and
  weighted by `lambda_distill`. The super-network is a mobile SPADE generator at
  `student.ngf`; each step samples a sub-network uniformly from the search space
  (`resnet.sample_configs`, jitted), whose masked channels make the 1x1 convs input-sliced
  (`layers`).
- Sub-networks are scored after BN re-calibration on the held-out split with momentum 1 (the
  last batch's statistics win, `spade.calibrate`), over at most `search.calibration_images`
  images; the exported generator is calibrated the same way. Search: evolution or exhaustive
  under `search.budget_macs` with `spade.generator_macs` (the reference's counter).
- TTUR optimisation: G lr 1e-4, D lr 4e-4, Adam (0, 0.9), linear decay after `nepochs`.
- The teacher G trains with spectral norm on its residual blocks' convs
  (`gaugan.teacher_spectral_norm`, the reference's `spectralspadesyncbatch3x3`), one power
  iteration per step; `trained_teacher` folds it into the weights (`remove_spectral_norm.py`),
  so distillation, search and evaluation see a plain generator.
- Fine-tuning (`scripts/gaugan/cityscapes_fast/finetune.sh`, optional in the reference's
  tutorial): the chosen sub-network, its weights and batch-norm statistics sliced from the
  super-network and D continued from the super-network's, trains on with the distillation
  losses at its own width (no sampling); the exported generator is then its weights.

Differences, on purpose:
- One jitted step computes G's and D's gradients at the current parameters and then updates
  both (as the ResNet steps do); the reference steps G first and shows D a fake from the
  updated G (regenerated, so its G batch-norm statistics also update twice per step).
- Weights start N(0, 0.02) (`layers.weight_init`) rather than the reference's xavier-normal
  with gain 0.02, drawn in numpy from the shapes of `init` (compiling `init` of a full SPADE
  takes minutes on CPU).
- Cityscapes is scored by FID (or L1), not mIoU: the reference's DRN-D-105 segmenter is not
  implemented. The evolution samples configs uniformly (no `--weighted_sample`). Calibration
  and scoring use test preprocessing (no flips), so the search is deterministic.
- Fine-tuning trains on train1 (the training set less the held-out search images; the
  reference's finetune script passes no meta file, so it reads all of it), starts fresh Adam
  states, and slices the super-network's 1x1 distillation convs too, as the ResNet fine-tuning
  does (the script restores only the student G and D).
- No original (non-Fast) pipeline: GauGAN has no fixed, pruned student.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from data import label_maps
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.core.export import Spec
from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import layers, recipe, resnet, spade, vgg
from lite_jax.gan_compression.recipe import GanState, Teacher


def image_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`(height, width)`: width `data.crop_size`, height `crop_size / gaugan.aspect_ratio`."""
  width = config.data.crop_size
  return int(round(width / config.gaugan.aspect_ratio)), width


def semantic_nc(config: ml_collections.ConfigDict) -> int:
  g = config.gaugan
  return g.label_nc + int(g.contain_dontcare) + int(g.instance_edge)


def semantic_input(label: jax.Array, edge: jax.Array, config: ml_collections.ConfigDict
                   ) -> jax.Array:
  """The reference's `preprocess_input` on the device: one-hot labels (+ dontcare) + edges.

  Args:
    label: `[batch, h, w]` label ids; 255 is the dontcare label `label_nc`. Ids beyond the
      channels get an all-zero one-hot row (the reference would fail).
    edge: `[batch, h, w]` instance edge map (`label_maps.instance_edges`).

  Returns:
    `[batch, h, w, semantic_nc]` float32.
  """
  g = config.gaugan
  label = jnp.where(label == 255, g.label_nc, label)
  one_hot = jax.nn.one_hot(label, g.label_nc + int(g.contain_dontcare), dtype=jnp.float32)
  if not g.instance_edge:
    return one_hot
  return jnp.concatenate([one_hot, edge[..., None].astype(jnp.float32)], axis=-1)


def init_variables(module: nn.Module, seed: Sequence[int], *shapes: Sequence[int]) -> Any:
  """Variables of `module` for inputs of `shapes`, drawn in numpy from the shapes of its `init`
  (nothing is compiled): kernels N(0, 0.02) as `layers.weight_init`, biases and batch-norm
  means 0, variances 1, spectral-norm vectors random unit vectors."""
  abstract = recipe.abstract_variables(module, *shapes)
  rng = np.random.default_rng(list(seed))

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
    if name in ("u", "v"):
      vector = rng.standard_normal(leaf.shape)
      return (vector / np.linalg.norm(vector)).astype(leaf.dtype)
    return (np.ones if name == "var" else np.zeros)(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


# ---------------------------------------------------------------------------------------------
# The training step.
# ---------------------------------------------------------------------------------------------


def feature_matching(fake_outputs, real_outputs) -> jax.Array:
  """GauGAN's GAN feature loss (unweighted): `sum_layers L1(D_l(fake), D_l(real))` averaged
  over D's scales, no gradient through the real features."""
  total = sum(jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
              for (_, fakes), (_, reals) in zip(fake_outputs, real_outputs)
              for f, r in zip(fakes, reals))
  return total / len(fake_outputs)


def make_step(generator: layers.DistillStudent, discriminator: disc.MultiscaleDiscriminator,
              loss: ml_collections.ConfigDict, config: ml_collections.ConfigDict, *,
              teacher: spade.SpadeGenerator | None = None,
              space: tuple[tuple[int, ...], ...] | None = None) -> Callable:
  """One GauGAN step `(state, batch, frozen) -> (state, metrics)`: the teacher's (no `teacher`)
  or a distillation step (`teacher` given; with `space`, a sub-network sampled every step).

  `frozen` holds `vgg` (VGG19 params, when `loss.lambda_vgg`) and, distilling, `teacher` (the
  teacher's variables). `state.aux` holds `{"generator": G's batch_stats,
  "generator_spectral": G's spectral-norm vectors (a teacher's; else empty), "discriminator":
  D's}`; `batch` is `{"label", "edge", "image"}` (`label_maps.train_batches`).
  """
  weights = {"g_gan": loss.lambda_gan, "g_feat": loss.lambda_feat, "g_vgg": loss.lambda_vgg,
             "g_distill": loss.get("lambda_distill", 0.0)}
  dtype = recipe.compute_dtype(config.dtype)

  def discriminate(d, stats, seg, fake, real):
    """D on the (label map, image) pairs of the fakes and reals in one batch; returns the
    per-scale `(logits, features)` of each half and the advanced spectral-norm vectors."""
    pairs = jnp.concatenate([jnp.concatenate([seg, seg]), jnp.concatenate([fake, real])], -1)
    outputs, updates = discriminator.apply({"params": d, "spectral": stats}, pairs,
                                           update_stats=True, mutable=["spectral"])
    n = fake.shape[0]
    return (jax.tree.map(lambda x: x[:n], outputs), jax.tree.map(lambda x: x[n:], outputs),
            updates.get("spectral", stats))

  def step(state: GanState, batch, frozen):
    seg, real = semantic_input(batch["label"], batch["edge"], config), batch["image"]
    active = None if space is None else resnet.sample_configs(space, state.step_key())
    targets = []
    if teacher is not None:
      _, features = teacher.apply(frozen["teacher"], seg, return_features=True)
      targets = [jax.lax.stop_gradient(features[n].astype(jnp.float32))
                 for n in spade.DISTILL_LAYERS]

    g_spectral = state.aux["generator_spectral"]

    def g_loss_fn(g):
      variables = {"params": g, "batch_stats": state.aux["generator"]}
      if g_spectral:  # a teacher trained with spectral norm
        variables["spectral"] = g_spectral
      (fake, mapped), updates = generator.apply(variables, seg, active, train=True,
                                                mutable=["batch_stats", "spectral"])
      fake_out, real_out, d_stats = discriminate(state.discriminator, state.aux["discriminator"],
                                                 seg, fake, real)
      parts = {"g_gan": disc.generator_gan_loss(loss.gan_mode, [l for l, _ in fake_out]),
               "g_feat": feature_matching(fake_out, real_out)}
      if "vgg" in frozen:
        parts["g_vgg"] = vgg.vgg_loss(frozen["vgg"], fake, real, dtype)
      if targets:
        parts["g_distill"] = sum(jnp.mean(jnp.square(m - t)) for m, t in zip(mapped, targets))
      total = sum(weights[k] * v for k, v in parts.items())
      return total, (fake, updates["batch_stats"], updates.get("spectral", g_spectral), d_stats,
                     parts)

    (g_total, (fake, batch_stats, g_spectral, d_stats, parts)), g_grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.generator)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d):
      fake_out, real_out, stats = discriminate(d, d_stats, seg, fake, real)
      hinge = disc.discriminator_loss(loss.gan_mode, [l for l, _ in real_out],
                                      [l for l, _ in fake_out])
      return 2.0 * hinge, stats  # GauGAN sums the real and fake terms.

    (d_total, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.discriminator)
    state = state.apply_gradients(g_grads, d_grads).replace(
        aux={"generator": batch_stats, "generator_spectral": g_spectral,
             "discriminator": d_stats})
    return state, {"loss": g_total, "d_loss": d_total, **parts}

  return step


# ---------------------------------------------------------------------------------------------
# The recipe.
# ---------------------------------------------------------------------------------------------


class SpadeRecipe(recipe.Recipe):
  """GauGAN: SPADE / mobile SPADE generators and a multi-scale spectral-instance D."""
  family, target_key = spade, "image"

  def __init__(self, config: ml_collections.ConfigDict):
    if config.task != "gaugan" or "gaugan" not in config:
      raise UserError(f"GauGAN training needs a GauGAN preset (gaugan_cityscapes, "
                      f"gaugan_demo, gaugan_tiny), got task {config.task!r} from preset "
                      f"{config.preset!r}.")
    if config.student.init != "scratch" or recipe.has_epochs(config.student_train):
      raise UserError("the original pipeline's pruned, separately distilled student "
                      "(student.init, student_train) exists for ResNet generators only; GauGAN "
                      "follows Fast GAN Compression.")
    super().__init__(config)
    self.dtype = recipe.compute_dtype(config.dtype)
    self.input_shape = (1, *image_size(config), semantic_nc(config))
    self._d_input_shape = self.input_shape[:-1] + (semantic_nc(config) + 3,)

  # Data. -------------------------------------------------------------------------------------

  def load_task(self, workdir: str) -> label_maps.LabelMapTask:
    d, g = self.config.data, self.config.gaugan
    height, width = image_size(self.config)
    task = label_maps.load_label_map_task(
        d.source, height=height, width=width,
        data_dir=d.tfds_data_dir or os.path.join(workdir, "tfds"), flip=d.flip,
        holdout=d.holdout, seed=d.seed, synthetic_train=d.synthetic_train,
        synthetic_test=d.synthetic_test, load_size=g.load_size)
    if g.label_nc < task.num_labels:
      raise UserError(f"gaugan.label_nc is {g.label_nc} but {d.source} has "
                      f"{task.num_labels} label ids; set it to {task.num_labels}.")
    return task

  def train_batches(self, task: label_maps.LabelMapTask, hparams: ml_collections.ConfigDict):
    return label_maps.train_batches(task.train1, task.preprocess, batch_size=hparams.batch_size,
                                    seed=self.config.seed)

  def eval_batches(self, task: label_maps.LabelMapTask, source, batch_size: int):
    return recipe.counted(label_maps.eval_batches(source, task.preprocess, batch_size))

  def calibration_labels(self, task: label_maps.LabelMapTask) -> jax.Array:
    """The batch that re-calibrates batch norm: with momentum 1 only the last batch of the
    reference's calibration loop matters, here the last `search.batch_size` of the first
    `search.calibration_images` held-out images. `[batch, h, w, semantic_nc]`."""
    s = self.config.search
    count = min(s.calibration_images, len(task.train2))
    if count < 1:
      raise UserError("BN re-calibration needs held-out images; raise data.holdout and "
                      "search.calibration_images.")
    start = max(0, count - s.batch_size)
    batch = next(label_maps.eval_batches(label_maps.subset(task.train2, range(start, count)),
                                         task.preprocess, count - start))
    return semantic_input(batch["label"], batch["edge"], self.config)

  # Networks. ---------------------------------------------------------------------------------

  def teacher_generator(self, training: bool = False) -> spade.SpadeGenerator:
    """`gaugan.teacher`: `spade` (the original, Fast GAN Compression) or `mobile_spade`; while
    `training`, with spectral norm if `gaugan.teacher_spectral_norm` (removed afterwards:
    `trained_teacher`)."""
    g = self.config.gaugan
    if g.teacher not in ("spade", "mobile_spade"):
      raise UserError(f"gaugan.teacher must be 'spade' or 'mobile_spade', got {g.teacher!r}.")
    return spade.SpadeGenerator((g.ngf,) * 8, separable=g.teacher == "mobile_spade",
                                num_upsampling_layers=g.num_upsampling_layers, dtype=self.dtype,
                                depthwise_impl=self.config.depthwise_impl,
                                spectral=training and g.teacher_spectral_norm)

  def compact_generator(self, channels: Sequence[int] | None = None) -> spade.SpadeGenerator:
    """The mobile generator at `channels` (default: the super-network, `student.ngf`)."""
    channels = self.super_channels() if channels is None else self.check_channels(channels)
    return spade.SpadeGenerator(tuple(channels), separable=True,
                                num_upsampling_layers=self.config.gaugan.num_upsampling_layers,
                                dtype=self.dtype, depthwise_impl=self.config.depthwise_impl)

  def student(self, channels: Sequence[int] | None = None) -> layers.DistillStudent:
    """The compact generator and 1x1 convs from its `spade.DISTILL_LAYERS` outputs to the
    teacher's widths there (`fc`, `head_0`, `G_middle_*`: the trunk; `up_i`: that block's)."""
    widths = self.teacher_generator().widths()
    return layers.DistillStudent(
        self.compact_generator(channels),
        tuple(widths[4 + int(n[-1])] if n.startswith("up_") else widths[0]
              for n in spade.DISTILL_LAYERS), spade.DISTILL_LAYERS)

  def discriminator(self) -> disc.MultiscaleDiscriminator:
    d = self.config.discriminator
    return disc.MultiscaleDiscriminator(num_d=d.num_d, ndf=d.ndf, n_layers=d.n_layers,
                                        norm=d.norm, dtype=self.dtype)

  # States. -----------------------------------------------------------------------------------

  def _variables(self, module: nn.Module, seed: tuple[int, ...], shape: Sequence[int],
                 abstract: bool) -> dict[str, Any]:
    if abstract:
      return recipe.abstract_variables(module, shape)
    return init_variables(module, (self.config.seed, *seed), shape)

  def init_teacher(self, abstract: bool = False) -> tuple[Any, Any, Any]:
    """The teacher G (with spectral norm while training) and D, from the seeds `(seed, 0, 0)`
    and `(seed, 0, 1)`."""
    generator = layers.DistillStudent(self.teacher_generator(training=True))
    return self.state_parts(
        self._variables(generator, (0, 0), self.input_shape, abstract),
        self._variables(self.discriminator(), (0, 1), self._d_input_shape, abstract))

  def init_student(self, channels: Sequence[int] | None = None, abstract: bool = False
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A student and D from the seeds `(seed, 1, 0)` and `(seed, 1, 1)`."""
    return (self._variables(self.student(channels), (1, 0), self.input_shape, abstract),
            self._variables(self.discriminator(), (1, 1), self._d_input_shape, abstract))

  def state_parts(self, g: dict[str, Any], d: dict[str, Any]) -> tuple[Any, Any, Any]:
    """G's params, D's params and `aux`: G's batch-norm statistics, G's spectral-norm vectors
    (a training teacher's) and D's."""
    aux = {"generator": g["batch_stats"], "generator_spectral": g.get("spectral", {}),
           "discriminator": d.get("spectral", {})}
    return g["params"], d["params"], aux

  def generator_variables(self, state: GanState) -> dict[str, Any]:
    return {"params": state.generator, "batch_stats": state.aux["generator"]}

  def discriminator_variables(self, state: GanState) -> dict[str, Any]:
    return {"params": state.discriminator, "spectral": state.aux["discriminator"]}

  def trained_teacher(self, state: GanState) -> Teacher:
    """The teacher with its spectral norm (if it trained with one) folded into the weights, as
    the reference's `remove_spectral_norm.py` does before distillation."""
    variables = recipe.compact_variables(self.generator_variables(state))
    if state.aux["generator_spectral"]:
      variables["spectral"] = state.aux["generator_spectral"]["generator"]
    return Teacher(self.teacher_generator(), layers.remove_spectral_norm(variables),
                   self.discriminator_variables(state))

  # Steps. ------------------------------------------------------------------------------------

  def loss_networks(self, loss: ml_collections.ConfigDict) -> dict[str, Any]:
    """VGG19 params when `loss.lambda_vgg > 0`, from `gaugan.vgg_weights`."""
    if not loss.lambda_vgg:
      return {}
    path = self.config.gaugan.vgg_weights
    if not path or not os.path.isfile(path):
      raise UserError(f"lambda_vgg > 0 needs torchvision's VGG19 weights ({vgg.WEIGHTS_FILE}); "
                      f"set config.gaugan.vgg_weights to their path (got {path!r}).")
    return {"vgg": vgg.load_vgg19(path)}

  def teacher_step(self) -> Callable:
    return make_step(layers.DistillStudent(self.teacher_generator(training=True)),
                     self.discriminator(), self.config.teacher_loss, self.config)

  def distill_step(self, student: nn.Module, space=None) -> Callable:
    return make_step(student, self.discriminator(), self.config.distill_loss, self.config,
                     teacher=self.teacher_generator(), space=space)

  # Search, export, evaluation. ---------------------------------------------------------------

  def subnet_runner(self, supernet: GanState, task: label_maps.LabelMapTask) -> Callable:
    """`channels -> (batch -> outputs)`: the super-network at a sub-network, its batch norm
    re-calibrated first."""
    generator = self.compact_generator()
    variables = recipe.compact_variables(self.generator_variables(supernet))
    calibration = self.calibration_labels(task)
    predict = compiler.jit(lambda v, label, edge, active: generator.apply(
        v, semantic_input(label, edge, self.config), active))

    def run(channels):
      active = jnp.asarray(channels, jnp.int32)
      calibrated = spade.calibrate(generator, variables, [calibration], active)
      return lambda batch: predict(calibrated, batch["label"], batch["edge"], active)

    return run

  def export_variables(self, generator: spade.SpadeGenerator, variables: dict[str, Any],
                       task: label_maps.LabelMapTask) -> dict[str, Any]:
    """Batch norm re-calibrated on the held-out images, as the reference does before it scores
    a generator."""
    return spade.calibrate(generator, variables, [self.calibration_labels(task)])

  def portable_inputs(self, generator: spade.SpadeGenerator, variables: dict[str, Any]
                      ) -> tuple[Callable[..., jax.Array], dict[str, Any]]:
    """What the batches hold, `label: int32 [batch, h, w]` (class ids, 255 = dontcare) and
    `edge: float32 [batch, h, w]` (instance edges), made into the one-hot map inside."""
    height, width = image_size(self.config)
    return (lambda label, edge: generator.apply(
        variables, semantic_input(label, edge, self.config)),
            {"label": Spec(("batch", height, width), "int32"),
             "edge": Spec(("batch", height, width), "float32")})

  def subnet_macs(self, channels: Sequence[int], separable: bool = True) -> int:
    """MACs on one label map."""
    return spade.generator_macs(channels, *image_size(self.config), semantic_nc(self.config),
                                separable=separable,
                                num_upsampling_layers=self.config.gaugan.num_upsampling_layers)

  def subnet_params(self, channels: Sequence[int], separable: bool = True) -> int:
    return spade.generator_params(
        channels, semantic_nc(self.config), separable=separable,
        num_upsampling_layers=self.config.gaugan.num_upsampling_layers)

  def input_description(self) -> dict[str, Any]:
    height, width = image_size(self.config)
    return {"height": height, "width": width, "semantic_nc": semantic_nc(self.config)}

  def evaluate_outputs(self, task, teacher: Teacher, compressed: tuple[nn.Module, Any]):
    """`(num_images, metrics, columns, fid_sets)` over the test split.

    Metrics: `l1` and `psnr` of both to the real images and `l1_to_teacher` (means over
    images). Columns: the plot's label map | teacher | compressed | real, `[n, h, w, 3]` each,
    of the first batches, enough for `eval.plot_examples` rows. FID's image sets: `(real
    images, {"teacher_": ..., "": ...})` in uint8, so that a large test split stays small in
    memory; None without `eval.fid_weights`.
    """
    nets = {"teacher_": (teacher.generator, teacher.variables), "": compressed}
    predict = compiler.jit(lambda model, variables, label, edge: model.apply(
        variables, semantic_input(label, edge, self.config)), static_argnums=0)
    fid_lib = None
    if self.config.eval.fid_weights:
      from lite_jax.gan_compression import fid as fid_lib  # Inception only when FID is asked for
    num_classes = self.config.gaugan.label_nc + int(self.config.gaugan.contain_dontcare)
    sums: dict[str, float] = collections.defaultdict(float)
    shown: list[list[np.ndarray]] = []
    uint8: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for batch, n in self.eval_batches(task, task.test, self.config.eval.batch_size):
      real = batch["image"][:n]
      outs = {p: np.asarray(predict(*net, batch["label"], batch["edge"]))[:n]
              for p, net in nets.items()}
      for prefix, out in outs.items():
        sums[f"{prefix}l1"] += float(np.abs(out - real).mean(axis=(1, 2, 3)).sum())
        sums[f"{prefix}psnr"] += float(recipe.psnr(out, real).sum())
      l1_to_teacher = np.abs(outs[""] - outs["teacher_"]).mean(axis=(1, 2, 3))
      sums["l1_to_teacher"] += float(l1_to_teacher.sum())
      sums["num_images"] += n
      if sum(len(c[0]) for c in shown) < self.config.eval.plot_examples:
        shown.append([label_maps.colorize(batch["label"][:n], batch["edge"][:n], num_classes),
                      outs["teacher_"], outs[""], real])
      if fid_lib is not None:
        for key, images in (("real", real), *outs.items()):
          uint8[key].append(np.asarray(fid_lib.images_to_uint8(images)))
    num = sums.pop("num_images")
    fid_sets = None
    if fid_lib is not None:
      fid_sets = (np.concatenate(uint8.pop("real")),
                  {k: np.concatenate(v) for k, v in uint8.items()})
    return (int(num), {k: v / num for k, v in sums.items()},
            [np.concatenate(c) for c in zip(*shown)], fid_sets)
