"""The ResNet family of the GAN Compression pipeline: pix2pix (paired) and CycleGAN (unpaired).

* Teacher: pix2pix trains G with a conditional PatchGAN D (`L_GAN + lambda_recon * L1`);
  CycleGAN trains G_A: A->B, G_B: B->A and their D_A, D_B with image pools, cycle and identity
  losses. `teacher.kind` picks the original ResNet generator or the MobileResNet one (the
  original pipeline distills from a mobile teacher).
* Each training step computes the discriminator's and the generator's gradients at the current
  parameters and then updates both, as the reference's distillers do. The distillation loss is
  `lambda_gan * L_GAN + lambda_recon * L1 + lambda_distill * sum_i MSE(conv1x1_i(student_i),
  teacher_i)` over the 4 taps (after the second down-sampling and after each third of the
  residual blocks); the L1 target is the real image for paired data and the teacher's output
  for unpaired data (compressing A->B only, as the reference does for CycleGAN).
* The original (non-Fast) pipeline's fixed student may start as the teacher's L1-pruned copy
  (`student.init='pruned_teacher'`, `pruning.prune_mobile_resnet`).
* MACs and parameters follow the reference's counter (`layers.GAN_COMPRESSION`) on one
  `crop_size`^2 image; the search uses the closed forms `resnet.generator_macs/params`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from data import gan_images
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import layers, pruning, recipe, resnet
from lite_jax.gan_compression.recipe import GanState, Teacher

# ---------------------------------------------------------------------------------------------
# Training steps.
# ---------------------------------------------------------------------------------------------


def _l1(a, b):
  return jnp.mean(jnp.abs(a - b))


def _conditional(x, y, paired: bool):
  """pix2pix's D sees (input, output) stacked on channels; CycleGAN's D sees the output only."""
  return jnp.concatenate([x, y], axis=-1) if paired else y


def _d_apply(discriminator: nn.Module) -> Callable:
  return lambda d, img: discriminator.apply({"params": d}, img)[0]


def image_pool_query(pool: dict, images: jax.Array, key: jax.Array) -> tuple[dict, jax.Array]:
  """CycleGAN's `ImagePool`: until full, store and return each image; afterwards, with
  probability 1/2 return a random stored image and store the new one in its place.

  Args:
    pool: `{"images": [size, h, w, c], "count": []}`.
    images: `[batch, h, w, c]`.
  """
  size = pool["images"].shape[0]

  def one(carry, inputs):
    stored, count = carry
    image, k = inputs
    k_swap, k_index = jax.random.split(k)
    full = count >= size
    swap = full & jax.random.bernoulli(k_swap)
    slot = jnp.where(full, jax.random.randint(k_index, (), 0, size), count)
    out = jnp.where(swap, stored[slot], image)
    stored = stored.at[slot].set(jnp.where(full & ~swap, stored[slot], image))
    return (stored, jnp.minimum(count + 1, size)), out

  keys = jax.random.split(key, images.shape[0])
  (stored, count), out = jax.lax.scan(one, (pool["images"], pool["count"]), (images, keys))
  return {"images": stored, "count": count}, out


def make_cyclegan_teacher_step(generator: nn.Module, discriminator: nn.Module,
                               loss: ml_collections.ConfigDict) -> Callable:
  """CycleGAN: G_A: A->B judged by D_A, G_B: B->A judged by D_B; LSGAN (or `gan_mode`),
  cycle `lambda_cycle * (|G_B(G_A(a)) - a| + |G_A(G_B(b)) - b|)`, identity
  `lambda_identity * lambda_cycle * (|G_A(b) - b| + |G_B(a) - a|)`; D sees pooled fakes."""
  g_apply = lambda g, img, k: generator.apply({"params": g}, img, train=True,
                                              rngs={"dropout": k})
  d_apply = _d_apply(discriminator)

  def step(state: GanState, batch, frozen):
    del frozen  # the teacher's losses need no fixed network
    a, b = batch["A"], batch["B"]
    keys = jax.random.split(state.step_key(), 8)

    def g_loss_fn(g):
      fake_b, fake_a = g_apply(g["A"], a, keys[0]), g_apply(g["B"], b, keys[1])
      cycle = _l1(g_apply(g["B"], fake_b, keys[2]), a) + _l1(g_apply(g["A"], fake_a, keys[3]), b)
      identity = 0.0
      if loss.lambda_identity:
        identity = _l1(g_apply(g["A"], b, keys[4]), b) + _l1(g_apply(g["B"], a, keys[5]), a)
      gan = (disc.generator_gan_loss(loss.gan_mode, d_apply(state.discriminator["A"], fake_b))
             + disc.generator_gan_loss(loss.gan_mode, d_apply(state.discriminator["B"], fake_a)))
      total = gan + loss.lambda_cycle * (cycle + loss.lambda_identity * identity)
      return total, ((fake_b, fake_a), {"g_gan": gan, "cycle": cycle, "identity": identity})

    (g_total, ((fake_b, fake_a), parts)), g_grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.generator)
    pool_b, fake_b = image_pool_query(state.aux["B"], jax.lax.stop_gradient(fake_b), keys[6])
    pool_a, fake_a = image_pool_query(state.aux["A"], jax.lax.stop_gradient(fake_a), keys[7])

    def d_loss_fn(d):
      return (disc.discriminator_loss(loss.gan_mode, d_apply(d["A"], b), d_apply(d["A"], fake_b))
              + disc.discriminator_loss(loss.gan_mode, d_apply(d["B"], a),
                                        d_apply(d["B"], fake_a)))

    d_total, d_grads = jax.value_and_grad(d_loss_fn)(state.discriminator)
    state = state.apply_gradients(g_grads, d_grads).replace(aux={"A": pool_a, "B": pool_b})
    return state, {"loss": g_total, "d_loss": d_total, **parts}

  return step


def make_step(generator: nn.Module, discriminator: nn.Module, loss: ml_collections.ConfigDict,
              paired: bool, *, teacher: nn.Module | None = None,
              space: tuple[tuple[int, ...], ...] | None = None) -> Callable:
  """A pix2pix teacher's step (no `teacher`) or a distillation step (`teacher` given, and
  `frozen = {"teacher": its variables}`): `L_G = lambda_gan * L_GAN(D(x, G(x))) + lambda_recon
  * |G(x) - target| (+ lambda_distill * sum_i MSE(conv1x1_i(student_i), teacher_i))`, D
  conditional for paired data. With `space`, a sub-network is sampled uniformly from it every
  step (once-for-all training); without, the student trains at its own width (the fixed
  student, fine-tuning)."""
  d_apply = _d_apply(discriminator)

  def step(state: GanState, batch, frozen):
    x, key = batch["A"], state.step_key()
    if teacher is None:  # the pix2pix teacher: its dropout draws from the step's key itself
      active, k_dropout, teacher_taps, target = None, key, [], batch["B"]
    else:
      k_config, k_dropout = jax.random.split(key)
      active = None if space is None else resnet.sample_configs(space, k_config)
      teacher_out, teacher_taps = teacher.apply(frozen["teacher"], x, return_features=True)
      teacher_out = jax.lax.stop_gradient(teacher_out)
      teacher_taps = [jax.lax.stop_gradient(t.astype(jnp.float32)) for t in teacher_taps]
      target = batch["B"] if paired else teacher_out
    real = _conditional(x, batch["B"], paired)

    def g_loss_fn(g):
      fake = generator.apply({"params": g}, x, active, train=True, rngs={"dropout": k_dropout})
      fake, taps = (fake, []) if teacher is None else fake
      gan = disc.generator_gan_loss(loss.gan_mode, d_apply(state.discriminator,
                                                           _conditional(x, fake, paired)))
      recon = _l1(fake, target)
      parts = {"g_gan": gan, "g_recon": recon}
      total = loss.get("lambda_gan", 1.0) * gan + loss.lambda_recon * recon
      if teacher is not None:
        parts["g_distill"] = sum(jnp.mean(jnp.square(s - t)) for s, t in zip(taps, teacher_taps))
        total = total + loss.lambda_distill * parts["g_distill"]
      return total, (fake, parts)

    (g_total, (fake, parts)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.generator)
    fake = _conditional(x, jax.lax.stop_gradient(fake), paired)
    d_total, d_grads = jax.value_and_grad(
        lambda d: disc.discriminator_loss(loss.gan_mode, d_apply(d, real), d_apply(d, fake)))(
            state.discriminator)
    return state.apply_gradients(g_grads, d_grads), {"loss": g_total, "d_loss": d_total, **parts}

  return step


# ---------------------------------------------------------------------------------------------
# The recipe.
# ---------------------------------------------------------------------------------------------


class ResnetRecipe(recipe.Recipe):
  """pix2pix and CycleGAN with ResNet / MobileResNet generators and a PatchGAN D."""
  family, target_key = resnet, "B"

  def __init__(self, config: ml_collections.ConfigDict):
    if config.task not in ("pix2pix", "cyclegan"):
      raise UserError(f"task must be 'pix2pix', 'cyclegan' or 'gaugan', got {config.task!r}.")
    if config.student.init not in ("scratch", "pruned_teacher"):
      raise UserError(f"student.init must be 'scratch' or 'pruned_teacher', got "
                      f"{config.student.init!r}.")
    super().__init__(config)
    self.paired = config.task == "pix2pix"
    self.dtype = recipe.compute_dtype(config.dtype)
    self.input_shape = (1, config.data.crop_size, config.data.crop_size, 3)
    self._d_input_shape = self.input_shape[:-1] + (6 if self.paired else 3,)

  # Data. -------------------------------------------------------------------------------------

  def load_task(self, workdir: str) -> gan_images.ImageTask:
    d = self.config.data
    preprocess = gan_images.Preprocess(mode=d.preprocess, load_size=d.load_size,
                                       crop_size=d.crop_size, flip=d.flip)
    return gan_images.load_image_task(
        d.source, paired=self.paired,
        data_dir=d.tfds_data_dir or os.path.join(workdir, "tfds"), direction=d.direction,
        preprocess=preprocess, holdout=d.holdout, seed=d.seed, synthetic_size=d.synthetic_size,
        synthetic_train=d.synthetic_train, synthetic_test=d.synthetic_test)

  def train_batches(self, task: gan_images.ImageTask, hparams: ml_collections.ConfigDict):
    return gan_images.train_batches(task.train1, task.preprocess, batch_size=hparams.batch_size,
                                    seed=self.config.seed, examples_B=task.train_B)

  def eval_batches(self, task: gan_images.ImageTask, source, batch_size: int):
    return recipe.counted(gan_images.eval_batches(source, task.preprocess, batch_size))

  # Networks. ---------------------------------------------------------------------------------

  def teacher_generator(self) -> resnet.ResnetGenerator:
    """`teacher.kind`: `resnet` (the original generator) or `mobile_resnet` (the reference's
    GAN Compression pipeline distills from a mobile teacher)."""
    t = self.config.teacher
    if t.kind not in ("resnet", "mobile_resnet"):
      raise UserError(f"teacher.kind must be 'resnet' or 'mobile_resnet', got {t.kind!r}.")
    return resnet.ResnetGenerator((t.ngf,) * 8, separable=t.kind == "mobile_resnet",
                                  n_blocks=t.n_blocks, dropout_rate=t.dropout_rate,
                                  dtype=self.dtype, depthwise_impl=self.config.depthwise_impl)

  def compact_generator(self, channels: Sequence[int] | None = None) -> resnet.ResnetGenerator:
    """The mobile generator at `channels` (default: the super-network's widths)."""
    channels = self.super_channels() if channels is None else self.check_channels(channels)
    return resnet.ResnetGenerator(tuple(channels), separable=True,
                                  n_blocks=self.config.teacher.n_blocks,
                                  dropout_rate=self.config.student.dropout_rate,
                                  dtype=self.dtype, depthwise_impl=self.config.depthwise_impl)

  def student(self, channels: Sequence[int] | None = None) -> layers.DistillStudent:
    """The compact generator and 1x1 convs from its 4 taps to the teacher's trunk width."""
    return layers.DistillStudent(self.compact_generator(channels),
                                 (4 * self.config.teacher.ngf,) * 4)

  def discriminator(self) -> disc.PatchDiscriminator:
    d = self.config.discriminator
    return disc.PatchDiscriminator(ndf=d.ndf, n_layers=d.n_layers, norm=d.norm, dtype=self.dtype)

  # States. -----------------------------------------------------------------------------------

  def _params(self, module: nn.Module, key: jax.Array, shape: Sequence[int], abstract: bool):
    if abstract:
      return recipe.abstract_variables(module, shape)["params"]
    inputs = jnp.zeros(shape, jnp.float32)
    return jax.jit(lambda k: module.init(k, inputs)["params"])(key)

  def init_teacher(self, abstract: bool = False) -> tuple[Any, Any, Any]:
    """`(G, D, aux)` of a fresh teacher: CycleGAN's are `{"A": ..., "B": ...}` with empty
    image pools as `aux`."""
    keys = jax.random.split(core.init_key(self.config.seed), 4)
    generator, discriminator = self.teacher_generator(), self.discriminator()
    g = functools.partial(self._params, generator, shape=self.input_shape, abstract=abstract)
    d = functools.partial(self._params, discriminator, shape=self._d_input_shape,
                          abstract=abstract)
    if self.paired:
      return g(keys[0]), d(keys[1]), {}
    pool = lambda: {"images": jnp.zeros((self.config.teacher_loss.pool_size,)
                                        + self.input_shape[1:]),
                    "count": jnp.zeros((), jnp.int32)}  # separate buffers: the step donates
    return ({"A": g(keys[0]), "B": g(keys[2])}, {"A": d(keys[1]), "B": d(keys[3])},
            {"A": pool(), "B": pool()})

  def init_student(self, channels: Sequence[int] | None = None, abstract: bool = False
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = jax.random.split(core.init_key(self.config.seed), 2)
    return ({"params": self._params(self.student(channels), keys[0], self.input_shape,
                                    abstract)},
            {"params": self._params(self.discriminator(), keys[1], self._d_input_shape,
                                    abstract)})

  def pruned_student(self, variables: dict[str, Any], teacher: Teacher) -> dict[str, Any]:
    """`variables` of the super-network-wide student with its generator replaced by the
    L1-pruned mobile teacher (the 1x1 convs stay as they are)."""
    pruned = pruning.prune_mobile_resnet(teacher.variables["params"], teacher.generator,
                                         self.compact_generator())
    return {"params": {**variables["params"], "generator": pruned}}

  def state_parts(self, g: dict[str, Any], d: dict[str, Any]) -> tuple[Any, Any, Any]:
    return g["params"], d["params"], {}

  def generator_variables(self, state: GanState) -> dict[str, Any]:
    return {"params": state.generator}

  def discriminator_variables(self, state: GanState) -> dict[str, Any]:
    return {"params": state.discriminator}

  def trained_teacher(self, state: GanState) -> Teacher:
    """The A->B generator and the D judging B images."""
    g, d = (state.generator, state.discriminator) if self.paired else (
        state.generator["A"], state.discriminator["A"])
    return Teacher(self.teacher_generator(), {"params": g}, {"params": d})

  # Steps. ------------------------------------------------------------------------------------

  def teacher_step(self) -> Callable:
    if self.paired:
      return make_step(self.teacher_generator(), self.discriminator(), self.config.teacher_loss,
                       paired=True)
    return make_cyclegan_teacher_step(self.teacher_generator(), self.discriminator(),
                                      self.config.teacher_loss)

  def distill_step(self, student: nn.Module, space=None) -> Callable:
    return make_step(student, self.discriminator(), self.config.distill_loss, self.paired,
                     teacher=self.teacher_generator(), space=space)

  # Search, export, evaluation. ---------------------------------------------------------------

  def subnet_runner(self, supernet: GanState, task) -> Callable:
    """`channels -> (batch -> outputs)`: the super-network run at a sub-network."""
    student = self.student()
    predict = compiler.jit(lambda p, x, active: student.apply({"params": p}, x, active)[0])

    def run(channels):
      active = jnp.asarray(channels, jnp.int32)
      return lambda batch: predict(supernet.generator, batch["A"], active)

    return run

  def search_targets(self, task, batches, teacher):
    """The real B images for paired data, else the teacher's translations of the inputs."""
    if task.paired:
      return super().search_targets(task, batches, teacher)
    teacher = teacher()
    translate = compiler.jit(teacher.generator.apply)
    return [translate(teacher.variables, batch["A"]) for batch, _ in batches]

  def search_reals(self, task, held_out):
    """Unpaired held-out inputs have no targets: FID compares with every training B image."""
    return super().search_reals(task, held_out if task.paired else task.train_B)

  def subnet_macs(self, channels: Sequence[int], separable: bool = True) -> int:
    """MACs on one `crop_size`^2 image."""
    size = self.config.data.crop_size
    return resnet.generator_macs(channels, size, size, separable=separable,
                                 n_blocks=self.config.teacher.n_blocks)

  def subnet_params(self, channels: Sequence[int], separable: bool = True) -> int:
    return resnet.generator_params(channels, separable=separable,
                                   n_blocks=self.config.teacher.n_blocks)

  def input_description(self) -> dict[str, Any]:
    return {"image_size": self.config.data.crop_size}

  def evaluate_outputs(self, task, teacher: Teacher, compressed: tuple[nn.Module, Any]):
    """`(num_images, metrics, columns, fid_sets)` over the test split.

    Metrics: `l1_to_teacher` and, with targets (paired data, or the synthetic task's known
    translations), `l1` and `psnr` of both (means over all pixels / images). Columns: the
    plot's input | teacher | compressed (| target), `[n, h, w, 3]` each. FID's image sets:
    `(real B images, {"teacher_": ..., "": ...})`, None without `eval.fid_weights`.
    """
    generator, variables = compressed
    run_teacher = functools.partial(compiler.jit(teacher.generator.apply), teacher.variables)
    run_student = functools.partial(compiler.jit(generator.apply), variables)
    inputs, targets, outs_t, outs_s = [], [], [], []
    for batch, n in self.eval_batches(task, task.test, self.config.eval.batch_size):
      inputs.append(np.asarray(batch["A"])[:n])
      if "B" in batch:
        targets.append(np.asarray(batch["B"])[:n])
      outs_t.append(np.asarray(run_teacher(batch["A"]))[:n])
      outs_s.append(np.asarray(run_student(batch["A"]))[:n])
    inputs, outs_t, outs_s = (np.concatenate(v) for v in (inputs, outs_t, outs_s))
    metrics = {"l1_to_teacher": float(np.abs(outs_s - outs_t).mean())}
    columns = [inputs, outs_t, outs_s]
    if targets:
      columns.append(np.concatenate(targets))
      for name, outs in (("teacher_", outs_t), ("", outs_s)):
        metrics[f"{name}l1"] = float(np.abs(outs - columns[-1]).mean())
        metrics[f"{name}psnr"] = float(recipe.psnr(outs, columns[-1]).mean())
    fid_sets = None
    if self.config.eval.fid_weights:
      reals = self.real_images(task, task.test if task.paired else task.test_B,
                               self.config.eval.batch_size)
      fid_sets = (reals, {"teacher_": outs_t, "": outs_s})
    return len(inputs), metrics, columns, fid_sets

