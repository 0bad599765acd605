"""GauGAN (SPADE) compression: teacher -> once-for-all distillation -> search -> fine-tune ->
export -> evaluate, each phase resumable in its own folder of one workdir (as `train`'s ResNet
pipeline):

    <workdir>/teacher/     the SPADE teacher with its multi-scale discriminator
    <workdir>/supernet/    once-for-all distillation: a new sub-network sampled every step
    <workdir>/search.json  the chosen sub-network and every scored candidate (+ search.png)
    <workdir>/finetune/    the chosen sub-network trained on with the distillation losses
                           (only when `finetune.nepochs + finetune.nepochs_decay > 0`)
    <workdir>/export/      the compact generator: sliced (or fine-tuned) weights, calibrated
                           batch norm
    <workdir>/compare.png  label map | teacher | compressed | real on test images

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
  both (as `train`'s steps); the reference steps G first and shows D a fake from the updated G
  (regenerated, so its G batch-norm statistics also update twice per step).
- Weights start N(0, 0.02) (`layers.weight_init`) rather than the reference's xavier-normal
  with gain 0.02, drawn in numpy from the shapes of `init` (compiling `init` of a full SPADE
  takes minutes on CPU).
- Cityscapes is scored by FID (or L1), not mIoU: the reference's DRN-D-105 segmenter is not
  implemented. The evolution samples configs uniformly (no `--weighted_sample`). Calibration
  and scoring use test preprocessing (no flips), so the search is deterministic.
- Fine-tuning trains on train1 (the training set less the held-out search images; the
  reference's finetune script passes no meta file, so it reads all of it), starts fresh Adam
  states, and slices the super-network's 1x1 distillation convs too, as `train`'s ResNet
  fine-tuning does (the script restores only the student G and D).
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from data import label_maps
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import (layers, models, phases, resnet, spade, standalone,
                                      subnet_search, vgg)

# ---------------------------------------------------------------------------------------------
# Config, data and networks.
# ---------------------------------------------------------------------------------------------


def _check_task(config: ml_collections.ConfigDict) -> None:
  if config.task != "gaugan" or "gaugan" not in config:
    raise UserError(f"GauGAN training needs a GauGAN preset (gaugan_cityscapes, gaugan_demo, "
                    f"gaugan_tiny), got task {config.task!r} from preset {config.preset!r}.")
  if config.student.init != "scratch" or phases.has_epochs(config.student_train):
    raise UserError("the original pipeline's pruned, separately distilled student "
                    "(student.init, student_train) exists for ResNet generators only; GauGAN "
                    "follows Fast GAN Compression.")


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


def load_task(config: ml_collections.ConfigDict, workdir: str) -> label_maps.LabelMapTask:
  _check_task(config)
  d = config.data
  height, width = image_size(config)
  task = label_maps.load_label_map_task(
      d.source, height=height, width=width,
      data_dir=d.tfds_data_dir or os.path.join(workdir, "tfds"), flip=d.flip,
      holdout=d.holdout, seed=d.seed, synthetic_train=d.synthetic_train,
      synthetic_test=d.synthetic_test, load_size=config.gaugan.load_size)
  if config.gaugan.label_nc < task.num_labels:
    raise UserError(f"gaugan.label_nc is {config.gaugan.label_nc} but {d.source} has "
                    f"{task.num_labels} label ids; set it to {task.num_labels}.")
  return task


class DistillSpade(nn.Module):
  """A SPADE generator and, for a student, the learnable 1x1 convs that map its
  `spade.DISTILL_LAYERS` outputs to the teacher's widths (the teacher trains it without).

  With the super-network as `generator`, call it with `active=` a sub-network: the masked
  channels make the 1x1 convs input-sliced. Parameters: `generator` and `distill0..2`.
  """
  generator: spade.SpadeGenerator
  distill_widths: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, seg: jax.Array, active=None, *, train: bool = False):
    """`seg: [batch, h, w, semantic_nc]` -> (`[batch, h, w, 3]`, one map per distillation
    width, `[batch, h', w', distill_widths[i]]` float32)."""
    out, features = self.generator(seg, active, train=train, return_features=True)
    mapped = [layers.Conv(width, 1, dtype=self.generator.dtype, name=f"distill{i}")(
        features[name]).astype(jnp.float32)
              for i, (width, name) in enumerate(zip(self.distill_widths, spade.DISTILL_LAYERS))]
    return out, mapped


def teacher_generator(config, training: bool = False) -> spade.SpadeGenerator:
  """`gaugan.teacher`: `spade` (the original, Fast GAN Compression) or `mobile_spade`; while
  `training`, with spectral norm if `gaugan.teacher_spectral_norm` (removed afterwards:
  `trained_teacher`)."""
  g = config.gaugan
  if g.teacher not in ("spade", "mobile_spade"):
    raise UserError(f"gaugan.teacher must be 'spade' or 'mobile_spade', got {g.teacher!r}.")
  return spade.SpadeGenerator((g.ngf,) * 8, separable=g.teacher == "mobile_spade",
                              num_upsampling_layers=g.num_upsampling_layers,
                              dtype=models.compute_dtype(config.dtype),
                              depthwise_impl=config.depthwise_impl,
                              spectral=training and g.teacher_spectral_norm)


def compact_generator(config, channels: Sequence[int] | None = None) -> spade.SpadeGenerator:
  """The mobile generator at `channels` (default: the super-network, `student.ngf`)."""
  widest = (config.student.ngf,) * 8
  channels = widest if channels is None else spade.check_subnet(channels, widest)
  return spade.SpadeGenerator(tuple(channels), separable=True,
                              num_upsampling_layers=config.gaugan.num_upsampling_layers,
                              dtype=models.compute_dtype(config.dtype),
                              depthwise_impl=config.depthwise_impl)


def _block_width(generator: spade.SpadeGenerator, name: str) -> int:
  """Output channels of a block of `generator` (`fc`, `head_0`, `G_middle_*`: the trunk)."""
  widths = generator.widths()
  return widths[4 + int(name[-1])] if name.startswith("up_") else widths[0]


def student(config, channels: Sequence[int] | None = None) -> DistillSpade:
  """The mobile generator at `channels` (default: the super-network) with its distillation
  convs to the teacher's widths."""
  teacher = teacher_generator(config)
  return DistillSpade(compact_generator(config, channels),
                      tuple(_block_width(teacher, n) for n in spade.DISTILL_LAYERS))


def discriminator(config) -> disc.MultiscaleDiscriminator:
  d = config.discriminator
  return disc.MultiscaleDiscriminator(num_d=d.num_d, ndf=d.ndf, n_layers=d.n_layers,
                                      norm=d.norm, dtype=models.compute_dtype(config.dtype))


def search_space(config) -> tuple[tuple[int, ...], ...]:
  """`student.search_space`: a SPADE space name (`spade.SEARCH_SPACES`) or explicit choices
  `"8,6|8,6|..."` (parsed and checked by `models.search_space`)."""
  name = config.student.search_space
  if "|" in name:
    return models.search_space(config)
  space = spade.search_space(name)
  if any(max(choices) > config.student.ngf for choices in space):
    raise UserError(f"search space {name!r} offers {max(map(max, space))} channels but the "
                    f"super-network (student.ngf={config.student.ngf}) has {config.student.ngf}.")
  return space


def _label_shape(config, batch: int = 1) -> tuple[int, ...]:
  return (batch, *image_size(config), semantic_nc(config))


def abstract_variables(module: nn.Module, *shapes: Sequence[int]) -> dict[str, Any]:
  """The `jax.ShapeDtypeStruct`s of `module`'s variables for inputs of `shapes` (no compile)."""
  return dict(jax.eval_shape(lambda: module.init(
      jax.random.key(0), *(jnp.zeros(s, jnp.float32) for s in shapes))))


def init_variables(module: nn.Module, seed: Sequence[int], *shapes: Sequence[int]) -> Any:
  """Variables of `module` for inputs of `shapes`, drawn in numpy from the shapes of its `init`
  (nothing is compiled): kernels N(0, 0.02) as `layers.weight_init`, biases and batch-norm
  means 0, variances 1, spectral-norm vectors random unit vectors."""
  abstract = abstract_variables(module, *shapes)
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


def _vgg_params(config, loss) -> Any:
  """VGG19 params when `loss.lambda_vgg > 0` (else None), from `gaugan.vgg_weights`."""
  if not loss.lambda_vgg:
    return None
  path = config.gaugan.vgg_weights
  if not path or not os.path.isfile(path):
    raise UserError(f"lambda_vgg > 0 needs torchvision's VGG19 weights ({vgg.WEIGHTS_FILE}); "
                    f"set config.gaugan.vgg_weights to their path (got {path!r}).")
  return vgg.load_vgg19(path)


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


def make_step(generator: DistillSpade, discriminator: disc.MultiscaleDiscriminator,
              loss: ml_collections.ConfigDict, config: ml_collections.ConfigDict, *,
              teacher: spade.SpadeGenerator | None = None,
              space: tuple[tuple[int, ...], ...] | None = None) -> Callable:
  """One jitted GauGAN step `(state, batch, vgg_params[, teacher_variables]) -> (state,
  metrics)`: the teacher's (no `teacher`) or a distillation step (`teacher` given; with
  `space`, a sub-network sampled every step).

  `state.aux` holds `{"generator": G's batch_stats, "generator_spectral": G's spectral-norm
  vectors (a teacher's; else empty), "discriminator": D's}`;
  `batch` is `{"label", "edge", "image"}` (`label_maps.train_batches`).
  """
  weights = {"g_gan": loss.lambda_gan, "g_feat": loss.lambda_feat, "g_vgg": loss.lambda_vgg,
             "g_distill": loss.get("lambda_distill", 0.0)}
  dtype = models.compute_dtype(config.dtype)

  def discriminate(d, stats, seg, fake, real):
    """D on the (label map, image) pairs of the fakes and reals in one batch; returns the
    per-scale `(logits, features)` of each half and the advanced spectral-norm vectors."""
    pairs = jnp.concatenate([jnp.concatenate([seg, seg]), jnp.concatenate([fake, real])], -1)
    outputs, updates = discriminator.apply({"params": d, "spectral": stats}, pairs,
                                           update_stats=True, mutable=["spectral"])
    n = fake.shape[0]
    return (jax.tree.map(lambda x: x[:n], outputs), jax.tree.map(lambda x: x[n:], outputs),
            updates.get("spectral", stats))

  def step(state: phases.GanState, batch, vgg_params, teacher_variables=None):
    seg, real = semantic_input(batch["label"], batch["edge"], config), batch["image"]
    active = None if space is None else resnet.sample_configs(space, state.step_key())
    targets = []
    if teacher is not None:
      _, features = teacher.apply(teacher_variables, seg, return_features=True)
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
      if vgg_params is not None:
        parts["g_vgg"] = vgg.vgg_loss(vgg_params, fake, real, dtype)
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

  return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# Teacher and once-for-all distillation.
# ---------------------------------------------------------------------------------------------


def _stream(task, phase, config):
  return label_maps.train_batches(task.train1, task.preprocess, batch_size=phase.batch_size,
                                  seed=config.seed)


def _new_state(config, generator: DistillSpade, phase, steps_per_epoch: int, index: int,
               d_variables: Any = None, g_variables: Any = None) -> phases.GanState:
  """A fresh phase state (new Adam states, step 0). G's and D's variables start random unless
  given (`{"params", "batch_stats"}` of `generator`, `{"params", "spectral"}` of D)."""
  seed = (config.seed, index)
  if g_variables is None:
    g_variables = init_variables(generator, (*seed, 0), _label_shape(config))
  if d_variables is None:
    d_shape = _label_shape(config)[:-1] + (semantic_nc(config) + 3,)
    d_variables = init_variables(discriminator(config), (*seed, 1), d_shape)
  aux = {"generator": g_variables["batch_stats"],
         "generator_spectral": g_variables.get("spectral", {}),
         "discriminator": d_variables.get("spectral", {})}
  return phases.new_state(g_variables["params"], d_variables["params"], phase, steps_per_epoch,
                          phases.state_key(config, index), aux)


def _generator_variables(state: phases.GanState) -> dict[str, Any]:
  """The SPADE generator's `{"params", "batch_stats"}` in a phase state (no 1x1 convs)."""
  return {"params": state.generator["generator"],
          "batch_stats": state.aux["generator"]["generator"]}


def _teacher_phase(config, workdir: str, task) -> phases.Phase:
  generator = DistillSpade(teacher_generator(config, training=True))
  phase = config.teacher_train
  steps_per_epoch, total = phases.phase_steps(phase, len(task.train1))
  state = _new_state(config, generator, phase, steps_per_epoch, 0)
  step_fn = make_step(generator, discriminator(config), config.teacher_loss, config)
  return phases.Phase("teacher", os.path.join(workdir, "teacher"), state, step_fn,
                      _stream(task, phase, config), steps_per_epoch, total, phase)


def trained_teacher(config, workdir: str, task) -> tuple[spade.SpadeGenerator, Any, Any]:
  """`(generator, {"params", "batch_stats"}, D's {"params", "spectral"})` of the teacher, its
  spectral norm (if it trained with one) folded into the weights, as the reference's
  `remove_spectral_norm.py` does before distillation."""
  phase = _teacher_phase(config, workdir, task)
  state = phases.finished_state(phase.directory, phase.state, "teacher")
  variables = _generator_variables(state)
  if state.aux["generator_spectral"]:
    variables["spectral"] = state.aux["generator_spectral"]["generator"]
  return (teacher_generator(config), layers.remove_spectral_norm(variables),
          {"params": state.discriminator, "spectral": state.aux["discriminator"]})


def _supernet_phase(config, workdir: str, task) -> phases.Phase:
  teacher, teacher_variables, teacher_d = trained_teacher(config, workdir, task)
  phase = config.distill
  steps_per_epoch, total = phases.phase_steps(phase, len(task.train1))
  # The reference (GAN Compression) starts D from the teacher's; Fast trains it from scratch.
  state = _new_state(config, student(config), phase, steps_per_epoch, 1,
                     teacher_d if phase.restore_discriminator else None)
  step_fn = make_step(student(config), discriminator(config), config.distill_loss, config,
                      teacher=teacher, space=search_space(config))
  return phases.Phase("supernet", os.path.join(workdir, "supernet"), state, step_fn,
                      _stream(task, phase, config), steps_per_epoch, total, phase,
                      step_args=(teacher_variables,))


def _profile(generator: spade.SpadeGenerator, config, prefix: str = "") -> dict[str, int]:
  """MACs (the reference's counter, one image) and parameters of a SPADE generator."""
  height, width = image_size(config)
  kwargs = dict(separable=generator.separable,
                num_upsampling_layers=generator.num_upsampling_layers)
  return {f"{prefix}macs": spade.generator_macs(generator.channels, height, width,
                                                semantic_nc(config), **kwargs),
          f"{prefix}params": spade.generator_params(generator.channels, semantic_nc(config),
                                                    **kwargs)}


def _run(phase: phases.Phase, config, loss) -> None:
  """Trains `phase` (resuming) with the VGG weights as the step's first argument."""
  phase.step_args = (_vgg_params(config, loss), *phase.step_args)
  phases.run_phase(phase, phases.data_parallel_mesh(config))


def train_teacher(config, workdir: str) -> dict[str, Any]:
  """Trains (resuming) the GauGAN teacher; returns its size and final losses."""
  task = load_task(config, workdir)
  phase = _teacher_phase(config, workdir, task)
  _run(phase, config, config.teacher_loss)
  return {"phase": "train_teacher", "steps": phase.total_steps,
          **phases.last_losses(phase.directory), **_profile(teacher_generator(config), config)}


def distill(config, workdir: str) -> dict[str, Any]:
  """Once-for-all distillation of the teacher into the super-network (resuming)."""
  task = load_task(config, workdir)
  phase = _supernet_phase(config, workdir, task)
  _run(phase, config, config.distill_loss)
  return {"phase": "distill", "steps": phase.total_steps,
          "search_space_size": subnet_search.space_size(search_space(config)),
          **phases.last_losses(phase.directory), **_profile(compact_generator(config), config)}


def _supernet_state(config, workdir: str, task) -> phases.GanState:
  phase = _supernet_phase(config, workdir, task)
  return phases.finished_state(phase.directory, phase.state, "super-network (distill)")


def _distill_variables(state: phases.GanState) -> dict[str, Any]:
  """G's `{"params", "batch_stats"}` in a phase state, the 1x1 distillation convs included."""
  return {"params": state.generator, "batch_stats": state.aux["generator"]}


# ---------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------


def _eval_batches(task, source, batch_size: int) -> Iterator[tuple[dict, int]]:
  """`(batch, n)`: fixed-size test-preprocessed batches whose first `n` rows are real."""
  for batch in label_maps.eval_batches(source, task.preprocess, batch_size):
    yield batch, int(batch.pop("mask").sum())


def calibration_labels(config, task) -> jax.Array:
  """The batch that re-calibrates batch norm: with momentum 1 only the last batch of the
  reference's calibration loop matters, here the last `search.batch_size` of the first
  `search.calibration_images` held-out images. `[batch, h, w, semantic_nc]`."""
  count = min(config.search.calibration_images, len(task.train2))
  if count < 1:
    raise UserError("BN re-calibration needs held-out images; raise data.holdout and "
                    "search.calibration_images.")
  start = max(0, count - config.search.batch_size)
  batch = next(label_maps.eval_batches(label_maps.subset(task.train2, range(start, count)),
                                       task.preprocess, count - start))
  return semantic_input(batch["label"], batch["edge"], config)


class _Scoring:
  """Scores sub-networks of the trained super-network on the held-out split, each after BN
  re-calibration. Metrics (lower is better): `l1` — mean |G(x) - real image|; `fid` — FID
  against the held-out real images, with the Inception weights of `eval.fid_weights`."""

  def __init__(self, config, task, supernet: phases.GanState):
    self.metric = config.search.metric
    if self.metric not in ("l1", "fid"):
      raise UserError(f"search.metric must be 'l1' or 'fid', got {self.metric!r}.")
    self.generator = compact_generator(config)
    self.variables = _generator_variables(supernet)
    held_out = task.train2
    if config.search.num_images:
      held_out = label_maps.subset(held_out, range(min(config.search.num_images, len(held_out))))
    self.batches = list(_eval_batches(task, held_out, config.search.batch_size))
    self.calibration = calibration_labels(config, task)
    self.predict = jax.jit(lambda v, label, edge, active: self.generator.apply(
        v, semantic_input(label, edge, config), active))
    self.fid = None
    if self.metric == "fid":
      from lite_jax.gan_compression import fid
      self.fid = fid.FidEvaluator(config.eval.fid_weights, batch_size=config.eval.batch_size)
      self.real_stats = self.fid.statistics(np.concatenate(
          [b["image"][:n] for b, n in self.batches]))

  def __call__(self, channels) -> float:
    active = jnp.asarray(channels, jnp.int32)
    variables = spade.calibrate(self.generator, self.variables, [self.calibration], active)
    outputs = [(np.asarray(self.predict(variables, b["label"], b["edge"], active)), b, n)
               for b, n in self.batches]
    if self.fid is not None:
      return float(self.fid.fid(np.concatenate([o[:n] for o, _, n in outputs]),
                                self.real_stats))
    total = sum(float(np.abs(o[:n] - b["image"][:n]).mean(axis=(1, 2, 3)).sum())
                for o, b, n in outputs)
    return total / sum(n for _, _, n in outputs)


def search(config, workdir: str) -> dict[str, Any]:
  """Searches the sub-network with the best held-out score within `search.budget_macs`."""
  task = load_task(config, workdir)
  space = search_space(config)
  height, width = image_size(config)
  macs_fn = functools.lru_cache(maxsize=None)(lambda c: spade.generator_macs(
      c, height, width, semantic_nc(config),
      num_upsampling_layers=config.gaugan.num_upsampling_layers))
  score_fn = _Scoring(config, task, _supernet_state(config, workdir, task))
  return phases.run_search(config, workdir, space, score_fn, macs_fn,
                           lambda c: _profile(compact_generator(config, c), config))


def chosen_channels(config, workdir: str) -> tuple[int, ...]:
  """`subnet.channels` when set, else the searched sub-network of `<workdir>/search.json`."""
  return phases.chosen_channels(config, workdir, lambda text: spade.check_subnet(
      text, (config.student.ngf,) * 8))


# ---------------------------------------------------------------------------------------------
# Fine-tuning and export.
# ---------------------------------------------------------------------------------------------


def _finetune_phase(config, workdir: str, task, channels: Sequence[int]) -> phases.Phase:
  """The sub-network at `channels` as a distillation student: G (weights, batch-norm
  statistics, 1x1 convs) sliced from the trained super-network, D continued from its D."""
  distilled = _supernet_phase(config, workdir, task)
  supernet = phases.finished_state(distilled.directory, distilled.state,
                                   "super-network (distill)")
  (teacher_variables,) = distilled.step_args  # the trained teacher's, restored once
  generator = student(config, channels)
  g = layers.slice_params(_distill_variables(supernet),
                          abstract_variables(generator, _label_shape(config)))
  d = {"params": supernet.discriminator, "spectral": supernet.aux["discriminator"]}
  phase = config.finetune
  steps_per_epoch, total = phases.phase_steps(phase, len(task.train1))
  state = _new_state(config, generator, phase, steps_per_epoch, 2, d_variables=d, g_variables=g)
  step_fn = make_step(generator, discriminator(config), config.distill_loss, config,
                      teacher=teacher_generator(config))
  return phases.Phase("finetune", os.path.join(workdir, "finetune"), state, step_fn,
                      _stream(task, phase, config), steps_per_epoch, total, phase,
                      step_args=(teacher_variables,))


def finetune(config, workdir: str) -> dict[str, Any]:
  """Trains the chosen sub-network on with the distillation losses (resuming)."""
  task = load_task(config, workdir)
  channels = chosen_channels(config, workdir)
  phase = _finetune_phase(config, workdir, task, channels)
  _run(phase, config, config.distill_loss)
  return {"phase": "finetune", "channels": layers.format_channels(channels),
          "steps": phase.total_steps, **phases.last_losses(phase.directory)}


def export(config, workdir: str) -> dict[str, Any]:
  """Writes the chosen sub-network as a standalone mobile SPADE generator
  (`<workdir>/export/`, read back by `standalone.load_generator`): the fine-tuned weights when
  `finetune` has epochs, else the super-network's sliced to it; either way batch norm is
  re-calibrated on the held-out images, as the reference does before it scores a generator."""
  task = load_task(config, workdir)
  channels = chosen_channels(config, workdir)
  generator = compact_generator(config, channels)
  if phases.has_epochs(config.finetune):
    like = _new_state(config, student(config, channels), config.finetune, 1, 2)  # the tree only
    weights = _generator_variables(phases.finished_state(os.path.join(workdir, "finetune"),
                                                         like, "finetune"))
  else:
    weights = layers.slice_params(_generator_variables(_supernet_state(config, workdir, task)),
                                  abstract_variables(generator, _label_shape(config)))
  variables = spade.calibrate(generator, weights, [calibration_labels(config, task)])
  directory = os.path.join(workdir, "export")
  standalone.save_generator(directory, generator, variables)
  return {"phase": "export", "path": directory, "channels": layers.format_channels(channels),
          **_profile(generator, config)}


# ---------------------------------------------------------------------------------------------
# Evaluation and the whole pipeline.
# ---------------------------------------------------------------------------------------------


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Teacher vs exported generator on the test split; writes `<workdir>/compare.png`.

  Metrics: MACs and parameters of both and their ratio; `l1` and `psnr` to the real images
  and `l1_to_teacher` (means over images); with `eval.fid_weights`, FID and KID of both
  against the real test images.
  """
  task = load_task(config, workdir)
  teacher, teacher_variables, _ = trained_teacher(config, workdir, task)
  compressed, compressed_variables = standalone.load_generator(os.path.join(workdir, "export"))
  nets = {"teacher_": (teacher, teacher_variables), "": (compressed, compressed_variables)}
  predict = jax.jit(lambda model, variables, label, edge: model.apply(
      variables, semantic_input(label, edge, config)), static_argnums=0)
  fid_lib = None
  if config.eval.fid_weights:
    from lite_jax.gan_compression import fid as fid_lib
  num_classes = config.gaugan.label_nc + int(config.gaugan.contain_dontcare)
  sums: dict[str, float] = collections.defaultdict(float)
  shown: list[list[np.ndarray]] = []
  uint8: dict[str, list[np.ndarray]] = collections.defaultdict(list)  # what FID sees
  for batch, n in _eval_batches(task, task.test, config.eval.batch_size):
    real = batch["image"][:n]
    outs = {p: np.asarray(predict(*net, batch["label"], batch["edge"]))[:n]
            for p, net in nets.items()}
    for prefix, out in outs.items():
      sums[f"{prefix}l1"] += float(np.abs(out - real).mean(axis=(1, 2, 3)).sum())
      sums[f"{prefix}psnr"] += float(phases.psnr(out, real).sum())
    sums["l1_to_teacher"] += float(np.abs(outs[""] - outs["teacher_"]).mean(axis=(1, 2, 3)).sum())
    sums["num_images"] += n
    if sum(len(c[0]) for c in shown) < config.eval.plot_examples:
      shown.append([label_maps.colorize(batch["label"][:n], batch["edge"][:n], num_classes),
                    outs["teacher_"], outs[""], real])
    if fid_lib is not None:
      for key, images in (("real", real), *outs.items()):
        uint8[key].append(np.asarray(fid_lib.images_to_uint8(images)))
  num = sums.pop("num_images")
  result: dict[str, Any] = {"phase": "evaluate", "num_images": int(num),
                            "channels": layers.format_channels(compressed.channels),
                            **_profile(teacher, config, "teacher_"),
                            **_profile(compressed, config),
                            **{k: v / num for k, v in sums.items()}}
  result["macs_ratio"] = result["teacher_macs"] / result["macs"]
  if fid_lib is not None:
    reals = np.concatenate(uint8.pop("real"))
    result.update(phases.fid_and_kid(config, reals,
                                     {k: np.concatenate(v) for k, v in uint8.items()}))
  columns = [np.concatenate(c) for c in zip(*shown)]
  result["plot"] = phases.plot_comparison(*columns, os.path.join(workdir, "compare.png"),
                                          config.eval.plot_examples)
  return result


def pipeline(config, workdir: str) -> dict[str, Any]:
  """Every phase in order (`phases.run_pipeline`); returns the evaluation with the search's
  score."""
  return phases.run_pipeline(config, workdir, MODES)


MODES = {"train_teacher": train_teacher, "distill": distill, "search": search,
         "finetune": finetune, "export": export, "evaluate": evaluate, "pipeline": pipeline}
