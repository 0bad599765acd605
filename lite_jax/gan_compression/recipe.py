"""What a generator family brings to the GAN Compression pipeline, and what the families share.

The pipeline (`pipeline`) is written once; a *recipe* supplies everything that depends on the
generator family. `ResnetRecipe` (`resnet_recipe`: pix2pix, CycleGAN) and `SpadeRecipe`
(`spade_recipe`: GauGAN) are `Recipe`s built from the config that provide:

* data: `load_task(workdir)`, `train_batches(task, hparams)` (a `grain.MapDataset` whose item
  i is batch i), `eval_batches(task, source, batch_size)` (`(batch, real rows)` pairs) and
  `target_key` (the batch entry outputs are compared with);
* networks: `teacher_generator()`, `student(channels)` (a `layers.DistillStudent`: the mobile
  generator at `channels` plus its 1x1 distillation convs), `compact_generator(channels)`,
  `discriminator()`, `input_shape` (one generator input) and `family`, the model module whose
  `check_subnet` and `search_space` the base class uses;
* states: `init_teacher(abstract)` and `init_student(channels, abstract)` (fresh variables, or
  only their shapes), `state_parts(g, d)` from variables to the `GanState` fields and back with
  `generator_variables(state)` / `discriminator_variables(state)`, `trained_teacher(state)`;
* steps: `teacher_step()` and `distill_step(student, space)`, both
  `(state, batch, frozen) -> (state, metrics)` with `loss` and `d_loss` among the metrics, and
  `loss_networks(loss)`, the fixed networks a loss needs (they go into `frozen`);
* search, export and evaluation: `subnet_runner(supernet, task)`, closed-form
  `subnet_macs(channels, separable)` / `subnet_params(...)`, `input_description()` (what
  `profile` reports the size of) and `evaluate_outputs(task, teacher, compressed)`; where the
  base class's defaults do not fit, `search_targets`, `search_reals` and `export_variables`.

`ResnetRecipe` also offers `pruned_student`, the original pipeline's student initialisation.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Iterator, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.core.export import Spec
from lite_jax.core.train import init_optimizer
from lite_jax.gan_compression import layers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  if name not in DTYPES:
    raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}.")
  return DTYPES[name]


# ---------------------------------------------------------------------------------------------
# State and optimisation.
# ---------------------------------------------------------------------------------------------


class GanState(flax.struct.PyTreeNode):
  """Generator(s) and discriminator(s) with their Adam states; `aux` holds state that is not
  trained by gradients (CycleGAN's image history buffers; batch-norm statistics and
  spectral-norm vectors). Random keys are `fold_in(key, step)`."""
  step: jax.Array
  generator: Any
  discriminator: Any
  g_opt: Any
  d_opt: Any
  key: jax.Array
  aux: Any
  tx_g: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  tx_d: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(self.key, self.step)

  def apply_gradients(self, g_grads, d_grads) -> "GanState":
    g_updates, g_opt = self.tx_g.update(g_grads, self.g_opt, self.generator)
    d_updates, d_opt = self.tx_d.update(d_grads, self.d_opt, self.discriminator)
    return self.replace(step=self.step + 1,
                        generator=optax.apply_updates(self.generator, g_updates),
                        discriminator=optax.apply_updates(self.discriminator, d_updates),
                        g_opt=g_opt, d_opt=d_opt)


def lr_schedule(lr: float, nepochs: int, nepochs_decay: int, steps_per_epoch: int
                ) -> optax.Schedule:
  """The reference's `linear` policy: `lr` for `nepochs`, then linear decay to 0 over
  `nepochs_decay`, stepped once per epoch."""
  def schedule(count):
    epoch = jnp.asarray(count, jnp.int32) // steps_per_epoch
    return lr * (1.0 - jnp.maximum(0, epoch + 1 - nepochs) / (nepochs_decay + 1.0))
  return schedule


@functools.lru_cache(maxsize=None)
def _adam(lr: float, b1: float, b2: float, nepochs: int, nepochs_decay: int,
          steps_per_epoch: int) -> optax.GradientTransformation:
  # Memoized: the optimizers are part of a state's pytree structure, and states that share it
  # (a phase's state and the template it is restored into) share jit caches, such as the
  # compiled finite check of every checkpoint save and restore.
  return optax.adam(lr_schedule(lr, nepochs, nepochs_decay, steps_per_epoch), b1=b1, b2=b2)


def state_maker(hparams: ml_collections.ConfigDict, steps_per_epoch: int, key: jax.Array
                ) -> Callable[[Any, Any, Any], GanState]:
  """`(generator, discriminator, aux) -> ` a phase's first state: Adam (`hparams.beta1/beta2`)
  at `hparams.lr` for G and `hparams.lr_d` (0: the same) for D, both on `lr_schedule`."""
  settings = (hparams.beta1, hparams.beta2, hparams.nepochs, hparams.nepochs_decay,
              steps_per_epoch)
  tx_g, tx_d = _adam(hparams.lr, *settings), _adam(hparams.lr_d or hparams.lr, *settings)

  def make_state(generator, discriminator, aux):
    return GanState(
        step=jnp.zeros((), jnp.int32), generator=generator, discriminator=discriminator,
        g_opt=init_optimizer(tx_g, generator),
        d_opt=init_optimizer(tx_d, discriminator), key=key, aux=aux, tx_g=tx_g, tx_d=tx_d)

  return make_state


def has_epochs(hparams: ml_collections.ConfigDict) -> bool:
  """Whether a phase config trains at all (`nepochs + nepochs_decay > 0`)."""
  return hparams.nepochs + hparams.nepochs_decay > 0


# ---------------------------------------------------------------------------------------------
# Variables.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A trained teacher: its generator, the generator's variables and the variables of the
  discriminator that judged it (a student's D may start from them)."""
  generator: nn.Module
  variables: dict[str, Any]
  discriminator: dict[str, Any]


def abstract_variables(module: nn.Module, *shapes: tuple[int, ...]) -> dict[str, Any]:
  """The `jax.ShapeDtypeStruct`s of `module`'s variables for inputs of `shapes` (no compile;
  memoized, as every phase asks for its networks' shapes once or twice)."""
  return dict(_abstract_variables(module, *shapes))


@functools.lru_cache(maxsize=None)
def _abstract_variables(module: nn.Module, *shapes: tuple[int, ...]) -> Any:
  return jax.eval_shape(lambda: module.init(
      jax.random.key(0), *(jnp.zeros(s, jnp.float32) for s in shapes)))


def compact_variables(student_variables: dict[str, Any]) -> dict[str, Any]:
  """The generator's own variables inside a `layers.DistillStudent`'s (no 1x1 convs)."""
  return {collection: tree["generator"] for collection, tree in student_variables.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR (dB) of `[n, h, w, c]` images in [-1, 1]."""
  mse = np.square((a - b) / 2.0).mean(axis=(1, 2, 3))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def counted(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[dict, int]]:
  """`(batch, n)` of padded evaluation batches: the first `n` rows are real (the mask goes)."""
  for batch in batches:
    yield batch, int(batch.pop("mask").sum())


class Recipe:
  """The family-independent part of a recipe (see the module docstring for the whole list).

  Attributes:
    config: the experiment config.
    family: the family's model module (`resnet`, `spade`): channel configs, search spaces.
    target_key: the batch entry a generator's outputs are compared with.
  """
  family: types.ModuleType
  target_key: str

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def super_channels(self) -> tuple[int, ...]:
    """The super-network's channel config, `(student.ngf,) * 8`."""
    return (self.config.student.ngf,) * 8

  def check_channels(self, channels: str | Sequence[int]) -> tuple[int, ...]:
    """A sub-network's channel config, parsed and checked against the super-network's."""
    return self.family.check_subnet(channels, self.super_channels())

  def search_space(self) -> tuple[tuple[int, ...], ...]:
    """`student.search_space`: one of the family's named spaces, or explicit choices per entry
    `"32,24|32,16|..."` (8 entries), none wider than the super-network."""
    name, widest = self.config.student.search_space, self.super_channels()
    if "|" in name:
      space = tuple(layers.parse_channels(part, tuple(range(1, 65)), "search-space entry")
                    for part in name.split("|"))
      if len(space) != 8:
        raise UserError(f"an explicit search space needs 8 '|'-separated entries, got "
                        f"{len(space)}.")
    else:
      space = self.family.search_space(name)
    for i, choices in enumerate(space):
      if max(choices) > widest[i]:
        raise UserError(f"search space entry {i} offers {max(choices)} channels but the "
                        f"super-network (student.ngf={widest[i]}) has {widest[i]}.")
    return space

  def profile(self, generator: nn.Module, prefix: str = "") -> dict[str, int]:
    """MACs (the reference's counter, `layers.GAN_COMPRESSION`, on one image of the config's
    size) and parameters of a generator of the family, in closed form (which the tests check
    against the traced count)."""
    return {f"{prefix}macs": self.subnet_macs(generator.channels, generator.separable),
            f"{prefix}params": self.subnet_params(generator.channels, generator.separable)}

  def search_targets(self, task, batches: Sequence[tuple[dict, int]],
                     teacher: Callable[[], Teacher]) -> list[Any]:
    """What each held-out batch's outputs are compared with by the `l1` search metric;
    `teacher` restores the trained teacher for families that need its outputs."""
    return [batch[self.target_key] for batch, _ in batches]

  def search_reals(self, task, held_out: Sequence[dict]) -> np.ndarray:
    """The real images the `fid` search metric compares outputs on `held_out` with."""
    return self.real_images(task, held_out, self.config.search.batch_size)

  def real_images(self, task, source: Sequence[dict], batch_size: int) -> np.ndarray:
    """The test-preprocessed `target_key` images of `source`, `[n, h, w, 3]` in [-1, 1]."""
    return np.concatenate([batch[self.target_key][:n]
                           for batch, n in self.eval_batches(task, source, batch_size)])

  def loss_networks(self, loss: ml_collections.ConfigDict) -> dict[str, Any]:
    """Fixed networks the losses of `loss` need, by name (part of a step's `frozen`)."""
    return {}

  def export_variables(self, generator: nn.Module, variables: dict[str, Any], task
                       ) -> dict[str, Any]:
    """The variables an exported `generator` runs with, from its sliced (or fine-tuned) ones."""
    return variables

  def portable_inputs(self, generator: nn.Module, variables: dict[str, Any]
                      ) -> tuple[Callable[..., jax.Array], dict[str, Any]]:
    """`(fn, inputs)` of a generator as its portable artifact takes it (`lite_jax.core.export`:
    `inputs` maps names to `Spec`s, batch symbolic): here the generator's own input,
    `images: float32 [batch, *input_shape[1:]]` in [-1, 1]; the output is `float32 [batch, h,
    w, 3]` in [-1, 1]."""
    return (lambda images: generator.apply(variables, images),
            {"images": Spec(("batch", *self.input_shape[1:]), "float32")})
