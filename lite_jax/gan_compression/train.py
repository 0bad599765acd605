"""The GAN Compression pipeline: teacher -> once-for-all distillation -> search -> fine-tune ->
export -> evaluate, each phase resumable in its own folder of one workdir.

    <workdir>/teacher/     pix2pix (G + conditional D) or CycleGAN (G_A, G_B, D_A, D_B) training
    <workdir>/student/     (original pipeline only) a fixed student distilled from the teacher
    <workdir>/supernet/    once-for-all distillation: a new sub-network sampled every step
    <workdir>/search.json  the chosen sub-network and every scored candidate (+ search.png)
    <workdir>/finetune/    the chosen sub-network trained on with the same losses
    <workdir>/export/      the compact generator: sliced weights + generator.json
    <workdir>/compare.png  inputs | teacher | compressed (| target) on test images

Each training step computes the discriminator's and the generator's gradients at the current
parameters and then updates both, as the reference's distillers do. The distillation loss is
`lambda_gan * L_GAN + lambda_recon * L1 + lambda_distill * sum_i MSE(conv1x1_i(student_i),
teacher_i)`; the L1 target is the real image for paired data and the teacher's output for
unpaired data (compressing A->B only, as the reference does for CycleGAN).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import discriminators as disc
from lite_jax.gan_compression import (layers, models, phases, pruning, resnet, spade,
                                      spade_train, standalone, subnet_search)
from data import gan_images

# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------


def load_task(config: ml_collections.ConfigDict, workdir: str) -> gan_images.ImageTask:
  paired = _paired(config)
  d = config.data
  preprocess = gan_images.Preprocess(mode=d.preprocess, load_size=d.load_size,
                                     crop_size=d.crop_size, flip=d.flip)
  return gan_images.load_image_task(
      d.source, paired=paired,
      data_dir=d.tfds_data_dir or os.path.join(workdir, "tfds"), direction=d.direction,
      preprocess=preprocess, holdout=d.holdout, seed=d.seed, synthetic_size=d.synthetic_size,
      synthetic_train=d.synthetic_train, synthetic_test=d.synthetic_test)


def _image_shape(config) -> tuple[int, int, int, int]:
  return (1, config.data.crop_size, config.data.crop_size, 3)


# ---------------------------------------------------------------------------------------------
# Training steps.
# ---------------------------------------------------------------------------------------------


def _l1(a, b):
  return jnp.mean(jnp.abs(a - b))


def _conditional(x, y, paired: bool):
  """pix2pix's D sees (input, output) stacked on channels; CycleGAN's D sees the output only."""
  return jnp.concatenate([x, y], axis=-1) if paired else y


def make_pix2pix_teacher_step(generator: nn.Module, discriminator: nn.Module,
                              loss: ml_collections.ConfigDict) -> Callable:
  """pix2pix: `L_G = L_GAN(D(x, G(x))) + lambda_recon * |G(x) - y|`, conditional D."""
  d_apply = lambda d, img: discriminator.apply({"params": d}, img)[0]

  def step(state: phases.GanState, batch):
    x, y = batch["A"], batch["B"]
    key = state.step_key()

    def g_loss_fn(g):
      fake = generator.apply({"params": g}, x, train=True, rngs={"dropout": key})
      gan = disc.generator_gan_loss(loss.gan_mode, d_apply(state.discriminator,
                                                           _conditional(x, fake, True)))
      recon = _l1(fake, y)
      return gan + loss.lambda_recon * recon, (fake, {"g_gan": gan, "g_recon": recon})

    (g_total, (fake, parts)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.generator)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d):
      return disc.discriminator_loss(loss.gan_mode, d_apply(d, _conditional(x, y, True)),
                                     d_apply(d, _conditional(x, fake, True)))

    d_total, d_grads = jax.value_and_grad(d_loss_fn)(state.discriminator)
    return state.apply_gradients(g_grads, d_grads), {"loss": g_total, "d_loss": d_total, **parts}

  return jax.jit(step, donate_argnums=0)


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
  d_apply = lambda d, img: discriminator.apply({"params": d}, img)[0]

  def step(state: phases.GanState, batch):
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

  return jax.jit(step, donate_argnums=0)


def make_distill_step(student: nn.Module, teacher: nn.Module, discriminator: nn.Module,
                      loss: ml_collections.ConfigDict, paired: bool,
                      space: tuple[tuple[int, ...], ...] | None) -> Callable:
  """One distillation step. With `space`, a sub-network is sampled uniformly from it every step
  (once-for-all training); without, the student trains at its own width (fine-tuning)."""
  d_apply = lambda d, img: discriminator.apply({"params": d}, img)[0]

  def step(state: phases.GanState, batch, teacher_params):
    x = batch["A"]
    key = state.step_key()
    k_config, k_dropout = jax.random.split(key)
    active = None if space is None else resnet.sample_configs(space, k_config)
    teacher_out, teacher_taps = teacher.apply({"params": teacher_params}, x,
                                              return_features=True)
    teacher_out = jax.lax.stop_gradient(teacher_out)
    teacher_taps = [jax.lax.stop_gradient(t.astype(jnp.float32)) for t in teacher_taps]
    target = batch["B"] if paired else teacher_out
    real = _conditional(x, batch["B"], paired)

    def g_loss_fn(g):
      fake, taps = student.apply({"params": g}, x, active, train=True,
                                 rngs={"dropout": k_dropout})
      gan = disc.generator_gan_loss(loss.gan_mode, d_apply(state.discriminator,
                                                           _conditional(x, fake, paired)))
      recon = _l1(fake, target)
      distill = sum(jnp.mean(jnp.square(s - t)) for s, t in zip(taps, teacher_taps))
      total = (loss.lambda_gan * gan + loss.lambda_recon * recon
               + loss.lambda_distill * distill)
      return total, (fake, {"g_gan": gan, "g_recon": recon, "g_distill": distill})

    (g_total, (fake, parts)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.generator)
    fake = _conditional(x, jax.lax.stop_gradient(fake), paired)
    d_total, d_grads = jax.value_and_grad(
        lambda d: disc.discriminator_loss(loss.gan_mode, d_apply(d, real), d_apply(d, fake)))(
            state.discriminator)
    return state.apply_gradients(g_grads, d_grads), {"loss": g_total, "d_loss": d_total, **parts}

  return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# Phases.
# ---------------------------------------------------------------------------------------------


def _paired(config) -> bool:
  if config.task == "gaugan":
    raise UserError("task 'gaugan' trains through lite_jax.gan_compression.spade_train (the "
                    "launcher routes it there).")
  if config.task not in ("pix2pix", "cyclegan"):
    raise UserError(f"task must be 'pix2pix', 'cyclegan' or 'gaugan', got {config.task!r}.")
  return config.task == "pix2pix"


def _keys(config, n: int):
  # RBG keys: as reproducible as threefry, and XLA:CPU compiles inits about twice as fast.
  return jax.random.split(jax.random.key(config.seed, impl="rbg"), n)


def _init(module: nn.Module, key, *shapes) -> Any:
  inputs = [jnp.zeros(s, jnp.float32) for s in shapes]
  return jax.jit(lambda k: module.init(k, *inputs)["params"])(key)


def _d_input_shape(config) -> tuple[int, ...]:
  n, h, w, c = _image_shape(config)
  return (n, h, w, 2 * c if _paired(config) else c)


def _teacher_phase(config, workdir: str, task) -> phases.Phase:
  generator, discriminator = models.teacher_generator(config), models.discriminator(config)
  phase = config.teacher_train
  steps_per_epoch, total = phases.phase_steps(phase, len(task.train1))
  keys = _keys(config, 4)
  image, d_shape = _image_shape(config), _d_input_shape(config)
  if _paired(config):
    g, d, pool = _init(generator, keys[0], image), _init(discriminator, keys[1], d_shape), {}
    step_fn = make_pix2pix_teacher_step(generator, discriminator, config.teacher_loss)
  else:
    g = {"A": _init(generator, keys[0], image), "B": _init(generator, keys[2], image)}
    d = {"A": _init(discriminator, keys[1], d_shape), "B": _init(discriminator, keys[3], d_shape)}
    empty = lambda: {"images": jnp.zeros((config.teacher_loss.pool_size,) + image[1:]),
                     "count": jnp.zeros((), jnp.int32)}  # separate buffers: the step donates
    pool = {"A": empty(), "B": empty()}
    step_fn = make_cyclegan_teacher_step(generator, discriminator, config.teacher_loss)
  state = phases.new_state(g, d, phase, steps_per_epoch, phases.state_key(config, 0), pool)
  return phases.Phase("teacher", os.path.join(workdir, "teacher"), state, step_fn,
                      _stream(task, phase, config), steps_per_epoch, total, phase)


def _stream(task, phase, config) -> grain.MapDataset:
  return gan_images.train_batches(task.train1, task.preprocess, batch_size=phase.batch_size,
                                  seed=config.seed, examples_B=task.train_B)


def trained_teacher(config, workdir: str, task) -> tuple[nn.Module, Any, Any]:
  """`(generator, A->B generator params, the D judging B images)` of the finished teacher."""
  phase = _teacher_phase(config, workdir, task)
  state = phases.finished_state(phase.directory, phase.state, "teacher")
  if _paired(config):
    return models.teacher_generator(config), state.generator, state.discriminator
  return models.teacher_generator(config), state.generator["A"], state.discriminator["A"]


STUDENT_PHASES = ("student", "supernet", "finetune")


def _student_phase(config, workdir: str, task, name: str, channels=None,
                   init_from: phases.GanState | None = None, teacher=None) -> phases.Phase:
  """One distillation phase of a mobile student (`STUDENT_PHASES`):

  * `student`: the original pipeline's fixed student at the super-network's width, distilled
    from the teacher before the super-network (`student_train`; skipped at 0 epochs, as in
    Fast GAN Compression);
  * `supernet`: once-for-all distillation (`distill`), sampling a sub-network every step,
    from the trained student when there is one;
  * `finetune`: the chosen sub-network at `channels`, from the super-network's slice.

  `init_from` is the previous phase's finished state, whose generator (1x1 convs included) is
  sliced to this phase's widths and whose D is continued. Without it, the generator starts
  random or, with `student.init='pruned_teacher'`, as the L1-pruned mobile teacher
  (`pruning`), and D random or the teacher's (`distill.restore_discriminator`). `teacher` is
  `trained_teacher`'s result when the caller has it (restoring it reads a checkpoint).
  """
  if name not in STUDENT_PHASES:
    raise ValueError(f"unknown student phase {name!r}")
  if name != "finetune":
    channels = None if name == "supernet" else models.super_channels(config)
  student = models.student(config, channels)
  teacher, teacher_params, teacher_d = teacher or trained_teacher(config, workdir, task)
  discriminator = models.discriminator(config)
  phase = {"student": config.student_train, "supernet": config.distill,
           "finetune": config.finetune}[name]
  steps_per_epoch, total = phases.phase_steps(phase, len(task.train1))
  keys = _keys(config, 2)
  g = _init(student, keys[0], _image_shape(config))
  if init_from is not None:
    g = layers.slice_params(init_from.generator, g)
    d = init_from.discriminator
  else:
    if config.student.init == "pruned_teacher":
      g = {**g, "generator": pruning.prune_mobile_resnet(
          teacher_params, teacher, models.compact_generator(config, channels))}
    elif config.student.init != "scratch":
      raise UserError(f"student.init must be 'scratch' or 'pruned_teacher', got "
                      f"{config.student.init!r}.")
    if config.distill.restore_discriminator:
      d = teacher_d  # The reference starts D from the teacher's (`--restore_D_path`).
    else:
      d = _init(discriminator, keys[1], _d_input_shape(config))
  space = models.search_space(config) if name == "supernet" else None
  step_fn = make_distill_step(student, teacher, discriminator, config.distill_loss,
                              _paired(config), space)
  state = phases.new_state(g, d, phase, steps_per_epoch,
                           phases.state_key(config, 3 if name == "student" else 1))
  return phases.Phase(name, os.path.join(workdir, name), state, step_fn,
                      _stream(task, phase, config), steps_per_epoch, total, phase,
                      step_args=(teacher_params,))


def _supernet_phase(config, workdir: str, task, teacher=None,
                    student: phases.Phase | None = None) -> phases.Phase:
  """The super-network's phase, started from the trained fixed student when there is one.
  `teacher` (`trained_teacher`'s result) and the `student` phase are reused when given."""
  teacher = teacher or trained_teacher(config, workdir, task)
  init_from = None
  if phases.has_epochs(config.student_train):
    student = student or _student_phase(config, workdir, task, "student", teacher=teacher)
    init_from = phases.finished_state(student.directory, student.state, "student (distill)")
  return _student_phase(config, workdir, task, "supernet", init_from=init_from, teacher=teacher)


def train_teacher(config, workdir: str) -> dict[str, Any]:
  """Trains (resuming) the teacher; returns its size and final losses."""
  task = load_task(config, workdir)
  mesh = phases.data_parallel_mesh(config)
  phase = _teacher_phase(config, workdir, task)
  phases.run_phase(phase, mesh)
  return {"phase": "train_teacher", "steps": phase.total_steps,
          **phases.last_losses(phase.directory),
          **_profile(models.teacher_generator(config), config)}


def distill(config, workdir: str) -> dict[str, Any]:
  """Once-for-all distillation of the teacher into the super-network (resuming)."""
  task = load_task(config, workdir)
  mesh = phases.data_parallel_mesh(config)
  result, teacher, student = {"phase": "distill"}, trained_teacher(config, workdir, task), None
  if phases.has_epochs(config.student_train):  # the original pipeline: a fixed student first
    student = _student_phase(config, workdir, task, "student", teacher=teacher)
    phases.run_phase(student, mesh)
    result["student_steps"] = student.total_steps
  phase = _supernet_phase(config, workdir, task, teacher, student)
  phases.run_phase(phase, mesh)
  return {**result, "steps": phase.total_steps,
          "search_space_size": subnet_search.space_size(models.search_space(config)),
          **phases.last_losses(phase.directory), **_profile(models.compact_generator(config),
                                                            config)}


def _profile(generator: resnet.ResnetGenerator, config, prefix: str = "") -> dict[str, Any]:
  """MACs (the reference's counter, one crop_size^2 image) and parameters of a generator."""
  shape = jax.ShapeDtypeStruct(_image_shape(config), jnp.float32)
  params = jax.eval_shape(generator.init, jax.random.key(0), shape)
  macs = core.count_macs(lambda v, x: generator.apply(v, x), params, shape,
                         convention=layers.GAN_COMPRESSION)
  return {f"{prefix}macs": macs, f"{prefix}params": core.count_params(params)}


# ---------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------


def _eval_batches(task, source, batch_size: int) -> Iterator[tuple[dict, int]]:
  """`(batch, n)`: fixed-size test-preprocessed batches whose first `n` rows are real."""
  for batch in gan_images.eval_batches(source, task.preprocess, batch_size):
    yield batch, int(batch.pop("mask").sum())


class _Scoring:
  """Scores sub-networks of one trained super-network on a held-out set.

  Metrics (lower is better): `l1` — mean |G(x) - target| with the real target for paired data
  and the teacher's output for unpaired data; `fid` — FID of the outputs against the held-out
  real B images, with the Inception weights of `eval.fid_weights`.
  """

  def __init__(self, config, workdir: str, task, supernet: phases.GanState):
    self.config, self.paired = config, _paired(config)
    self.student = models.student(config)
    teacher, teacher_params, _ = trained_teacher(config, workdir, task)
    self.params = supernet.generator
    self.metric = config.search.metric
    if self.metric not in ("l1", "fid"):
      raise UserError(f"search.metric must be 'l1' or 'fid', got {self.metric!r}.")
    predict = lambda p, x, active: self.student.apply({"params": p}, x, active)[0]
    self.predict = jax.jit(predict)
    held_out = task.train2
    if config.search.num_images:
      held_out = [held_out[i] for i in range(min(config.search.num_images, len(held_out)))]
    self.batches = list(_eval_batches(task, held_out, config.search.batch_size))
    if not self.batches:
      raise UserError("the held-out search split is empty; raise data.holdout.")
    teach = jax.jit(teacher.apply)  # weights as arguments, not baked-in constants
    self.targets = [b["B"] if self.paired else teach({"params": teacher_params}, b["A"])
                    for b, _ in self.batches]
    self.fid = None
    if self.metric == "fid":
      from lite_jax.gan_compression import fid
      self.fid = fid.FidEvaluator(config.eval.fid_weights, batch_size=config.eval.batch_size)
      self.real_stats = self.fid.statistics(_real_b(task, held_out if task.paired else task.train_B,
                                                    config.search.batch_size))

  def __call__(self, channels) -> float:
    active = jnp.asarray(channels, jnp.int32)
    outputs = [(np.asarray(self.predict(self.params, b["A"], active)), n)
               for b, n in self.batches]
    if self.metric == "fid":
      fakes = np.concatenate([o[:n] for o, n in outputs])
      return float(self.fid.fid(fakes, self.real_stats))
    total = sum(float(np.abs(o[:n] - np.asarray(t)[:n]).mean(axis=(1, 2, 3)).sum())
                for (o, n), t in zip(outputs, self.targets))
    return total / sum(n for _, n in outputs)


def _real_b(task, source, batch_size: int) -> np.ndarray:
  """The test-preprocessed B images of `source`, `[n, h, w, 3]` in [-1, 1]."""
  return np.concatenate([b["B"][:n] for b, n in _eval_batches(task, source, batch_size)])


def _supernet_state(config, workdir: str, task, teacher=None) -> phases.GanState:
  phase = _supernet_phase(config, workdir, task, teacher)
  return phases.finished_state(phase.directory, phase.state, "super-network (distill)")


def search(config, workdir: str) -> dict[str, Any]:
  """Searches the sub-network with the best held-out score within `search.budget_macs`."""
  task = load_task(config, workdir)
  space = models.search_space(config)
  size = config.data.crop_size
  macs_fn = functools.lru_cache(maxsize=None)(
      lambda c: resnet.generator_macs(c, size, size, n_blocks=config.teacher.n_blocks))
  score_fn = _Scoring(config, workdir, task, _supernet_state(config, workdir, task))
  return phases.run_search(
      config, workdir, space, score_fn, macs_fn,
      lambda c: {"macs": macs_fn(c),
                 "params": resnet.generator_params(c, n_blocks=config.teacher.n_blocks)})


def chosen_channels(config, workdir: str) -> tuple[int, ...]:
  """`subnet.channels` when set, else the searched sub-network of `<workdir>/search.json`."""
  return phases.chosen_channels(config, workdir, lambda text: resnet.check_subnet(
      resnet.parse_config(text), models.super_channels(config)))


# ---------------------------------------------------------------------------------------------
# Fine-tuning and export.
# ---------------------------------------------------------------------------------------------


def _finetune_phase(config, workdir, task, channels) -> phases.Phase:
  teacher = trained_teacher(config, workdir, task)
  supernet = _supernet_state(config, workdir, task, teacher)
  return _student_phase(config, workdir, task, "finetune", channels, init_from=supernet,
                        teacher=teacher)


def finetune(config, workdir: str) -> dict[str, Any]:
  """Trains the chosen sub-network on with the distillation losses (resuming)."""
  task = load_task(config, workdir)
  channels = chosen_channels(config, workdir)
  mesh = phases.data_parallel_mesh(config)
  phase = _finetune_phase(config, workdir, task, channels)
  phases.run_phase(phase, mesh)
  return {"phase": "finetune", "channels": layers.format_channels(channels),
          "steps": phase.total_steps, **phases.last_losses(phase.directory)}


def export(config, workdir: str) -> dict[str, Any]:
  """Writes the compact generator at the chosen config: `<workdir>/export/` holds
  `generator.json` (the generator's fields) and the sliced weights;
  `standalone.load_generator` reads it back without the super-network."""
  task = load_task(config, workdir)
  channels = chosen_channels(config, workdir)
  if phases.has_epochs(config.finetune):
    source = phases.finished_state(os.path.join(workdir, "finetune"),
                            _finetune_phase(config, workdir, task, channels).state, "finetune")
    params = source.generator["generator"]
  else:
    supernet = _supernet_state(config, workdir, task)
    generator = models.compact_generator(config, channels)
    target = jax.eval_shape(lambda: generator.init(jax.random.key(0),
                                                   jnp.zeros(_image_shape(config))))["params"]
    params = layers.slice_params(supernet.generator["generator"], target)
  generator = models.compact_generator(config, channels)
  directory = os.path.join(workdir, "export")
  standalone.save_generator(directory, generator, {"params": params})
  return {"phase": "export", "path": directory, "channels": layers.format_channels(channels),
          **_profile(generator, config)}


# ---------------------------------------------------------------------------------------------
# Evaluation, profile and the whole pipeline.
# ---------------------------------------------------------------------------------------------


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Teacher vs exported generator on the test split; writes `<workdir>/compare.png`.

  Metrics: MACs and parameters of both and their ratio; `l1_to_teacher` of the compressed
  outputs; with targets (paired data, or the synthetic task's known translations) `l1` and
  `psnr` of both; with `eval.fid_weights`, FID and KID (mean and std over subsets) of both
  against the test B images.
  """
  task = load_task(config, workdir)
  teacher, teacher_params, _ = trained_teacher(config, workdir, task)
  student, student_variables = standalone.load_generator(os.path.join(workdir, "export"))
  teacher_variables = {"params": teacher_params}
  run_teacher = functools.partial(jax.jit(teacher.apply), teacher_variables)
  run_student = functools.partial(jax.jit(student.apply), student_variables)
  inputs, targets, outs_t, outs_s = [], [], [], []
  for batch, n in _eval_batches(task, task.test, config.eval.batch_size):
    inputs.append(np.asarray(batch["A"])[:n])
    if "B" in batch:
      targets.append(np.asarray(batch["B"])[:n])
    outs_t.append(np.asarray(run_teacher(batch["A"]))[:n])
    outs_s.append(np.asarray(run_student(batch["A"]))[:n])
  inputs, outs_t, outs_s = (np.concatenate(v) for v in (inputs, outs_t, outs_s))
  targets = np.concatenate(targets) if targets else None
  result: dict[str, Any] = {"phase": "evaluate", "num_images": len(inputs),
                            "channels": layers.format_channels(student.channels)}
  result.update(_profile(teacher, config, "teacher_"))
  result.update(_profile(student, config))
  result["macs_ratio"] = result["teacher_macs"] / result["macs"]
  result["l1_to_teacher"] = float(np.abs(outs_s - outs_t).mean())
  if targets is not None:
    for name, outs in (("teacher_", outs_t), ("", outs_s)):
      result[f"{name}l1"] = float(np.abs(outs - targets).mean())
      result[f"{name}psnr"] = float(phases.psnr(outs, targets).mean())
  if config.eval.fid_weights:
    real = _real_b(task, task.test if task.paired else task.test_B, config.eval.batch_size)
    result.update(phases.fid_and_kid(config, real, {"teacher_": outs_t, "": outs_s}))
  result["plot"] = phases.plot_comparison(inputs, outs_t, outs_s, targets,
                                    os.path.join(workdir, "compare.png"),
                                    config.eval.plot_examples)
  return result


def profile(config) -> dict[str, Any]:
  """MACs and parameters (the reference's counter, one `crop_size`^2 image) of the teacher, the
  super-network and, when `subnet.channels` is set, that sub-network (`macs`/`params`)."""
  if config.task == "gaugan":
    return _profile_gaugan(config)
  result = {"task": config.task, "image_size": config.data.crop_size}
  result.update(_profile(models.teacher_generator(config), config, "teacher_"))
  result.update(_profile(models.compact_generator(config), config, "supernet_"))
  if config.subnet.channels:
    channels = resnet.parse_config(config.subnet.channels)
    result["channels"] = layers.format_channels(channels)
    result.update(_profile(models.compact_generator(config, channels), config))
    result["macs_ratio"] = result["teacher_macs"] / result["macs"]
  else:
    result.update(macs=result["teacher_macs"], params=result["teacher_params"])
  return result


def _profile_gaugan(config) -> dict[str, Any]:
  """GauGAN: the SPADE teacher on one `crop_size x crop_size / aspect_ratio` label map."""
  g = config.gaugan
  width, height = config.data.crop_size, int(round(config.data.crop_size / g.aspect_ratio))
  semantic_nc = g.label_nc + int(g.contain_dontcare) + int(g.instance_edge)
  teacher = spade.spade_generator(g.ngf, num_upsampling_layers=g.num_upsampling_layers)
  macs, params = spade.profile(teacher, height, width, semantic_nc)
  result = {"task": "gaugan", "height": height, "width": width, "semantic_nc": semantic_nc,
            "teacher_macs": macs, "teacher_params": params, "macs": macs, "params": params}
  if config.subnet.channels:
    channels = spade.parse_config(config.subnet.channels)
    sub = spade.mobile_spade_generator(
        spade.check_subnet(channels, (g.ngf,) * 8),
        num_upsampling_layers=g.num_upsampling_layers)
    result["macs"], result["params"] = spade.profile(sub, height, width, semantic_nc)
    result.update(channels=layers.format_channels(channels),
                  macs_ratio=result["teacher_macs"] / result["macs"])
  return result


def pipeline(config, workdir: str) -> dict[str, Any]:
  """Every phase in order (`phases.run_pipeline`); returns the evaluation with the search's
  score."""
  return phases.run_pipeline(config, workdir, MODES)


MODES = {"train_teacher": train_teacher, "distill": distill, "search": search,
         "finetune": finetune, "export": export, "evaluate": evaluate, "pipeline": pipeline}


def run(mode: str, config, workdir: str) -> dict[str, Any]:
  """The launcher's entry: `profile`, or a phase of `config.task`'s pipeline (pix2pix and
  CycleGAN here, GauGAN in `spade_train`)."""
  if mode == "profile":
    return profile(config)
  modes = spade_train.MODES if config.task == "gaugan" else MODES
  if mode not in modes:
    raise UserError(f"mode {mode!r} is not available for task {config.task!r}; choose one of "
                    f"{', '.join(modes)} or profile.")
  return modes[mode](config, workdir)
