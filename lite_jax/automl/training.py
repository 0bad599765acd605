"""Training and evaluating the classifiers that HAQ, AMC and ProxylessNAS compress or search.

Every phase of the three pipelines (the fp32 model, a quantized or pruned model's fine-tune, a
derived network's training) is a classifier trained on the shared loop (`core.loop`) from a
state its caller builds; this module holds what they share:

- `ClassifierState`: `core.TrainState` plus BatchNorm statistics and HAQ's quantizer inputs.
- `make_step` / `make_predict`: cross-entropy step and logits, quantized when the state carries
  bits (`lite_jax.nn.quant`), plain otherwise.
- `train_phase`: one resumable phase in its own directory; `accuracy`: top-k over padded
  evaluation batches, every example counted once.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import image_classification as image_data
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.nn import losses, quant, weight_sharing


class ClassifierState(core.TrainState):
  """`core.TrainState` of a classifier: params are `{"model": ..., "clips": ...}` (the
  quantizers' trainable ranges, empty unless quantized), plus BatchNorm statistics, a policy's
  bits (`{path: int32 [w_bits, a_bits]}`, None unquantized) and k-means codebooks (None
  otherwise)."""
  batch_stats: Any = None
  bits: Any = None
  codebooks: Any = None


def num_classes_of(config: ml_collections.ConfigDict) -> int:
  """The classes of `config.data`, known without loading it (for profiles)."""
  if config.data.get("subset", "") == "imagenet100":
    return 100
  if config.data.source in ("digits", "synthetic", "tfds:cifar10"):
    return 10
  return 1000


def load_data(config: ml_collections.ConfigDict, workdir: str
              ) -> image_data.ClassificationData:
  """`config.data` loaded (`data/image_classification.py`): `source`, `subset` (if any),
  `image_size`, `holdout_size` (held out from train), `data_dir` (default `<workdir>/data`)."""
  return image_data.load_classification(
      config.data.source, subset=config.data.get("subset", "") or None,
      image_size=config.data.image_size, holdout_size=config.data.holdout_size,
      data_dir=config.data.data_dir or os.path.join(workdir, "data"), seed=config.seed)


def image_shape(image_size: int, batch_size: int = 1) -> tuple[int, int, int, int]:
  return (batch_size, image_size, image_size, 3)


def init_variables(model: nn.Module, image_size: int, key: jax.Array) -> dict[str, Any]:
  """`model`'s params and BatchNorm statistics for `image_size`^2 RGB images."""
  return model.init({"params": key}, jnp.zeros(image_shape(image_size), jnp.float32),
                    train=False)


def fresh_state(model: nn.Module, image_size: int, seed: int,
                tx: optax.GradientTransformation) -> ClassifierState:
  """A newly initialized, unquantized state of `model` (params from `seed`)."""
  variables = init_variables(model, image_size, core.init_key(seed))
  return ClassifierState.create({"model": variables["params"], "clips": {}}, tx,
                                core.stream_key(seed, 1)).replace(
                                    batch_stats=variables["batch_stats"])


def state_from_variables(variables: Any, tx: optax.GradientTransformation,
                         dropout_key: jax.Array) -> ClassifierState:
  """An unquantized state at step 0 holding copies of `variables` (params, batch_stats)."""
  trainable = jax.tree.map(jnp.array, {"model": variables["params"], "clips": {}})
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=trainable, tx=tx,
                         opt_state=core.init_optimizer(tx, trainable),
                         dropout_key=jnp.array(dropout_key),
                         batch_stats=jax.tree.map(jnp.array, variables["batch_stats"]))


def make_step(model: nn.Module, signed_inputs: frozenset[str] = frozenset(), *,
              label_smoothing: float = 0.0) -> Callable:
  """`(state, batch) -> (state, metrics)`: cross-entropy (optionally label-smoothed) on
  `batch["image"]: [B, H, W, 3]`, `batch["label"]: [B]`; quantized when `state.bits` is set,
  k-means clusters snapped back to their means after the update when `state.codebooks` is;
  dropout keyed by `state.step_key()`."""
  qapply = quant.quantized_apply(model, signed_inputs=signed_inputs)

  def step(state: ClassifierState, batch: dict[str, jax.Array]):
    def loss_fn(params):
      variables = {"params": params["model"], "batch_stats": state.batch_stats}
      # Dropout (classifiers with `dropout_rate` > 0) draws from the step's own key.
      kwargs = dict(train=True, mutable=["batch_stats"], rngs={"dropout": state.step_key()})
      if state.bits is None:
        logits, updates = model.apply(variables, batch["image"], **kwargs)
      else:
        logits, updates = qapply(variables, params["clips"], state.bits, batch["image"],
                                 **kwargs)
      loss = losses.mean_cross_entropy(logits, batch["label"], label_smoothing)
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads).replace(batch_stats=batch_stats)
    if state.codebooks is not None:  # k-means: each cluster back to its members' mean
      state = state.replace(params={
          **state.params,
          "model": weight_sharing.snap_to_centroids(state.params["model"], state.codebooks)})
    accuracy_ = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return state, {"loss": loss, "accuracy": accuracy_}

  return step


def make_predict(model: nn.Module, signed_inputs: frozenset[str] = frozenset()) -> Callable:
  """`(state, images [B, H, W, 3]) -> logits [B, classes]`, jitted once (bits are data)."""
  qapply = quant.quantized_apply(model, signed_inputs=signed_inputs)

  @compiler.jit
  def predict(state: ClassifierState, images: jax.Array) -> jax.Array:
    variables = {"params": state.params["model"], "batch_stats": state.batch_stats}
    if state.bits is None:
      return model.apply(variables, images, train=False)
    return qapply(variables, state.params["clips"], state.bits, images, train=False)

  return predict


def accuracy(predict: Callable, state: Any, batches: Iterable, *, top_k: int = 1) -> float:
  """Top-k accuracy of `predict(state, images)` over padded batches (`image`, `label`,
  `mask`), every real example counted once."""
  correct = total = 0.0
  for batch in batches:
    logits = np.asarray(predict(state, batch["image"]))
    if top_k == 1:
      hits = np.argmax(logits, -1) == batch["label"]
    else:
      top = np.argpartition(-logits, top_k - 1, axis=-1)[:, :top_k]
      hits = np.any(top == np.asarray(batch["label"])[:, None], axis=-1)
    correct += float(np.sum(hits * batch["mask"]))
    total += float(np.sum(batch["mask"]))
  return correct / max(total, 1.0)


def num_steps(num_examples: int, phase: ml_collections.ConfigDict) -> int:
  """Steps of `phase.num_epochs` epochs of `phase.batch_size` over `num_examples` (>= 1)."""
  steps_per_epoch = num_examples // phase.batch_size
  if steps_per_epoch < 1:
    raise UserError(f"the training split ({num_examples} examples) is smaller than one batch "
                    f"({phase.batch_size}).")
  return max(1, round(phase.num_epochs * steps_per_epoch))


def phase_optimizer(phase: ml_collections.ConfigDict, total_steps: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`phase.optim` over `total_steps` (`core.make_optimizer`), weight decay on the model's
  weights only, not on quantizers' clipping ranges."""
  optim = ml_collections.ConfigDict(phase.optim.to_dict())
  optim.total_updates = total_steps
  decay_mask = lambda params: {"model": jax.tree.map(lambda _: True, params["model"]),
                               "clips": jax.tree.map(lambda _: False, params["clips"])}
  return core.make_optimizer(optim, decay_mask=decay_mask)


def shapes(state: Any) -> Any:
  """Shapes and dtypes only (no device placement): the loop replicates them over the mesh."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), state)


def train_phase(*, model: nn.Module, data: image_data.ClassificationData,
                config: ml_collections.ConfigDict, phase: ml_collections.ConfigDict,
                directory: str, name: str,
                make_state: Callable[[optax.GradientTransformation], ClassifierState],
                mesh: Any, signed_inputs: frozenset[str] = frozenset(),
                step_fn: Callable | None = None) -> ClassifierState:
  """Trains one phase on the shared loop (resuming from `directory`); the finished state.

  Args:
    model: the classifier.
    data: its data; trains on `data.train` with `data.augment`.
    config: reads `seed` and `data.image_size`.
    phase: `num_epochs`, `batch_size`, `optim` and the loop's intervals.
    directory: the phase's checkpoints and metrics.
    name: the phase's name in logs and errors.
    make_state: `tx -> initial state`, called once, eagerly (HAQ calibrates on the host).
    mesh: the device mesh.
    signed_inputs: quantized layers whose inputs are signed (`make_step`).
    step_fn: a step other than `make_step(model, signed_inputs)`.

  Raises:
    core.StoppedEarly: when the loop stops before the phase's last step.
  """
  total_steps = num_steps(len(data.train), phase)
  tx, schedule = phase_optimizer(phase, total_steps)
  initial = make_state(tx)
  return run_phase(
      config=config, phase=phase, directory=directory, name=name,
      step_fn=step_fn or make_step(model, signed_inputs),
      batches=image_data.train_batches(
          data.train, batch_size=phase.batch_size, num_steps=total_steps, seed=config.seed,
          augment=data.augment, image_size=config.data.image_size),
      total_steps=total_steps, initial=lambda: initial, schedule=schedule, mesh=mesh)


def run_phase(*, config: ml_collections.ConfigDict, phase: ml_collections.ConfigDict,
              directory: str, name: str, step_fn: Callable, batches: Any, total_steps: int,
              initial: Callable[[], Any], schedule: optax.Schedule, mesh: Any,
              summarize: Callable = core.loop.mean_over_steps, step_args: tuple = ()) -> Any:
  """Runs (or resumes, or finds finished) one phase of `total_steps` on the shared loop; its
  final state. `initial()` is called once, for the state's shapes and a fresh start;
  `phase` gives the loop's intervals; `schedule` is logged as the learning rate.

  Raises:
    core.StoppedEarly: when the loop stops before the phase's last step.
  """
  first = initial()
  loop = core.TrainLoop(directory=directory, step_fn=step_fn, batches=batches,
                        step_args=step_args, total_steps=total_steps, intervals=phase,
                        mesh=mesh, config=config,
                        learning_rate=lambda step: schedule(step - 1), summarize=summarize,
                        name=name)
  result = core.loop.run(loop, shapes(first), lambda: first)
  if result.step < total_steps:
    raise core.StoppedEarly(name, result.step, total_steps)
  return result.state


def eval_batches(data: image_data.ClassificationData, config: ml_collections.ConfigDict,
                 split: str) -> Iterable:
  """Padded evaluation batches of `data.<split>` ("test" or "holdout")."""
  return image_data.eval_batches(getattr(data, split), batch_size=config.data.eval_batch_size,
                                 image_size=config.data.image_size)


class CachedBatches:
  """A list of batches kept in memory when they fit `limit` bytes, else re-made every pass."""

  def __init__(self, make: Callable[[], Iterable], num_bytes: int, limit: int = 512 << 20):
    self._make = make
    self._items = list(make()) if num_bytes <= limit else None

  def __iter__(self):
    return iter(self._items if self._items is not None else self._make())


def split_bytes(split: Sequence, image_size: int) -> int:
  """float32 bytes of a split's images at `image_size`."""
  return len(split) * image_size * image_size * 3 * 4
