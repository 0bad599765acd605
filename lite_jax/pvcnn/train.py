"""Train, evaluate and profile PVCNN-family models on part (ShapeNet) and scene (S3DIS)
segmentation with the reference recipes and evaluation protocols.

One linear trainer serves both tasks; what differs is the data (`load_data`), the model inputs
(`model_inputs`) and the protocol (`_evaluate_parts` / `_evaluate_scenes`). Training batches
are a pure function of (seed, step), so a killed run resumes at its last checkpoint with the
same batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from data import pointclouds
from kernels.devoxelize import devoxelize_path
from kernels.voxelize import voxelize_path
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.pvcnn import evaluation
from lite_jax.pvcnn.models import build_model
from lite_jax.pvcnn.visualize import plot_segmentations

TASKS = ("shapenet", "s3dis")


class TrainState(core.TrainState):
  """`core.TrainState` plus the BatchNorm running statistics."""
  batch_stats: Any = None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What the model and the protocol need to know about a task's data."""
  task: str
  num_classes: int
  in_channels: int
  class_names: tuple[str, ...]  # parts' categories (ShapeNet) or classes (S3DIS)
  part_ranges: tuple[tuple[int, int], ...] | None = None  # ShapeNet: labels of each category

  @property
  def num_categories(self) -> int:
    return len(self.part_ranges) if self.part_ranges else 0


def task_spec(config: ml_collections.ConfigDict) -> TaskSpec:
  if config.task not in TASKS:
    raise UserError(f"unknown task {config.task!r}; choose one of {TASKS}.")
  if config.data.source not in ("synthetic", "local"):
    raise UserError(f"unknown data source {config.data.source!r}; choose synthetic or local.")
  if config.task == "s3dis":
    return TaskSpec("s3dis", len(pointclouds.S3DIS_CLASSES), 9, pointclouds.S3DIS_CLASSES)
  taxonomy = (pointclouds.SYNTHETIC_PARTS if config.data.source == "synthetic"
              else pointclouds.SHAPENET_PARTS)
  return TaskSpec("shapenet", taxonomy.num_classes, 6 if config.data.with_normals else 3,
                  taxonomy.categories, taxonomy.part_ranges)


def load_data(config: ml_collections.ConfigDict, workdir: str
              ) -> tuple[Sequence[dict], Sequence[dict]]:
  """Random-access `(train, test)` example sources (see `data/pointclouds.py`).

  The user's files are built once into an ArrayRecord copy under the workdir, which records
  the settings it was built from: a later run naming another folder is a `UserError` unless
  `data.rebuild` asks to build it again.
  """
  d = config.data
  if d.source == "synthetic" and d.manual_dir:
    raise UserError(f"config.data.manual_dir={d.manual_dir!r} is set but data.source is "
                    f"'synthetic'; pass --config.data.source=local to train on your files.")
  if d.source == "synthetic" and config.task == "shapenet":
    points = tuple(d.synthetic_points)
    return (pointclouds.SyntheticPartShapes(d.synthetic_train, d.seed, points),
            pointclouds.SyntheticPartShapes(d.synthetic_test, d.seed + 1, points))
  if d.source == "synthetic":
    rooms = lambda n, seed: pointclouds.synthetic_room_windows(
        n, seed, points_per_m2=d.synthetic_density, max_points=d.window_points)
    return rooms(d.synthetic_train, d.seed), rooms(d.synthetic_test, d.seed + 1)
  if config.task == "s3dis" and d.holdout_area not in range(1, 7):
    raise UserError(f"data.holdout_area must be 1..6, got {d.holdout_area}.")
  data_dir = d.tfds_data_dir or os.path.join(workdir, "data", "tfds")
  core.workdir.check_data_settings(
      os.path.join(workdir, "data"),
      {"task": config.task, "data.manual_dir": os.path.abspath(d.manual_dir or "."),
       "data.tfds_data_dir": d.tfds_data_dir}, rebuild=d.rebuild)
  builder_cls = pointclouds.ShapeNetPart if config.task == "shapenet" else pointclouds.S3DIS
  core.workdir.on_first_process("point clouds prepared", pointclouds.prepare, builder_cls,
                                d.manual_dir, data_dir)
  builder = pointclouds.prepare(builder_cls, d.manual_dir, data_dir)
  if config.task == "shapenet":
    return builder.as_data_source("train"), builder.as_data_source("test")
  train_areas = "+".join(f"area_{a}" for a in range(1, 7) if a != d.holdout_area)
  return builder.as_data_source(train_areas), builder.as_data_source(f"area_{d.holdout_area}")


def model_inputs(task: str, batch: dict[str, Any]) -> tuple:
  return (batch["points"], batch["category"]) if task == "shapenet" else (batch["points"],)


def training_batches(train: Sequence[dict], spec: TaskSpec, config: ml_collections.ConfigDict
                     ) -> grain.MapDataset:
  """Batch `i` of an endless, per-epoch reshuffled stream, random-access by step."""
  n = config.data.num_points
  if spec.task == "shapenet":
    with_normals = config.data.with_normals
    sample = lambda example, rng: pointclouds.part_example(example, n, rng, with_normals,
                                                           augment=config.data.jitter)
  else:
    sample = lambda example, rng: pointclouds.scene_example(example, n, rng)
  return (grain.MapDataset.source(train).seed(config.seed).shuffle().repeat(None)
          .random_map(sample).batch(config.train.batch_size, drop_remainder=True))


def _sample_inputs(spec: TaskSpec, config, batch: int) -> dict[str, np.ndarray]:
  inputs = {"points": np.zeros((batch, config.data.num_points, spec.in_channels), np.float32)}
  if spec.task == "shapenet":
    inputs["category"] = np.zeros((batch,), np.int32)
  return inputs


def make_train_step(model: nn.Module, task: str) -> Callable:
  """The step: mean cross-entropy over all points and classes (the reference loss)."""

  def step(state: TrainState, batch: dict[str, jax.Array]):
    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, *model_inputs(task, batch),
          train=True, rngs={"dropout": state.step_key()}, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads).replace(batch_stats=batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return state, {"loss": loss, "accuracy": accuracy}

  return step


@dataclasses.dataclass
class _Run:
  """Everything `train_and_evaluate` and `evaluate` build from a config."""
  spec: TaskSpec
  train: Sequence[dict] | None
  test: Sequence[dict] | None
  total_steps: int
  model: nn.Module
  mesh: Any
  rules: Any
  abstract: TrainState  # shapes, dtypes and shardings only
  init: Callable[[], TrainState]
  schedule: optax.Schedule


def _setup(config: ml_collections.ConfigDict, workdir: str, with_data: bool = True) -> _Run:
  """Data, model, mesh and train state of a config; without data (`train`/`test` None), the
  state's shapes still match a checkpoint: the optimizer's state does not depend on how many
  steps its schedule spans."""
  spec = task_spec(config)
  train, test, total_steps = None, None, 1
  if with_data:
    train, test = load_data(config, workdir)
    steps_per_epoch = len(train) // config.train.batch_size
    if steps_per_epoch < 1:
      raise UserError(f"the training set ({len(train)} examples) is smaller than one batch "
                      f"({config.train.batch_size}).")
    total_steps = max(1, round(config.train.num_epochs * steps_per_epoch))
  model = build_model(spec.task, config.model, spec.num_classes, spec.num_categories)
  mesh = core.mesh.from_config(config.mesh)
  rules = core.mesh.rules_from_config(config.mesh)
  optim = ml_collections.ConfigDict(config.optim.to_dict())
  optim.total_updates = total_steps
  tx, schedule = core.make_optimizer(optim)
  dropout_key = core.stream_key(config.seed, 1)
  inputs = model_inputs(spec.task, _sample_inputs(spec, config, 1))

  def init_fn(key):
    variables = model.init({"params": key}, *inputs, train=False)
    state = TrainState.create(variables["params"], tx, dropout_key)
    return state.replace(batch_stats=variables["batch_stats"])

  key = core.init_key(config.seed)
  abstract, shardings = core.abstract_sharded_state(init_fn, key, mesh, rules)
  return _Run(spec, train, test, total_steps, model, mesh, rules, abstract,
              lambda: core.init_sharded(init_fn, key, shardings), schedule)


def kernel_paths(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Which implementation the voxel ops run with this config on this machine."""
  backend = config.model.kernel_backend
  return {"voxelize_path": voxelize_path(backend), "devoxelize_path": devoxelize_path(backend)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the workdir's latest checkpoint), then evaluates on the test split.

  Returns:
    The test metrics (`miou`, ...), the final `step`, the kernel paths and the PNG path.
  """
  run = _setup(config, workdir)
  logging.info("%s: %d training examples, %d steps of %d; kernels %s", run.spec.task,
               len(run.train), run.total_steps, config.train.batch_size, kernel_paths(config))
  loop = core.TrainLoop(
      directory=workdir, step_fn=make_train_step(run.model, run.spec.task),
      batches=training_batches(run.train, run.spec, config), total_steps=run.total_steps,
      intervals=config.train, mesh=run.mesh, rules=run.rules, config=config,
      learning_rate=lambda step: run.schedule(step - 1))
  trained = core.loop.run(loop, run.abstract, run.init)
  if trained.step < run.total_steps:  # `train.steps_per_run`: evaluate the finished model only
    raise core.StoppedEarly("training", trained.step, run.total_steps)
  state = trained.state
  # Under the mesh, the Pallas voxel kernels run per batch shard (`kernels._dispatch`).
  with core.mesh.activate(run.mesh, run.rules):
    result = evaluate_state(run.model, state, run.spec, run.test, config, run.mesh, workdir)
  with core.MetricWriter(workdir) as writer:
    writer.write(run.total_steps, result)
  return {**result, "step": run.total_steps, **kernel_paths(config)}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the workdir's latest checkpoint on the test split."""
  run = _setup(config, workdir)
  state = core.restore_finished(os.path.join(workdir, "checkpoints"), run.abstract,
                                "train (--mode=train)")
  with core.mesh.activate(run.mesh, run.rules):
    result = evaluate_state(run.model, state, run.spec, run.test, config, run.mesh, workdir)
  return {**result, "step": int(state.step), **kernel_paths(config)}


def trained_variables(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, int]:
  """`({"params", "batch_stats"}, step)` of the workdir's latest checkpoint, on the host (no
  data is loaded)."""
  run = _setup(config, workdir, with_data=False)
  state = core.restore_finished(os.path.join(workdir, "checkpoints"), run.abstract,
                                "train (--mode=train)")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return jax.device_get(variables), int(state.step)


# ---------------------------------------------------------------------------------------------
# Evaluation protocols.
# ---------------------------------------------------------------------------------------------


def _make_predict(model: nn.Module, spec: TaskSpec, variables: dict) -> Callable:
  """`batch -> (confidence [B, N], prediction [B, N])`: the softmax probability of the best
  class, restricted to the category's parts for part segmentation."""
  allowed = None
  if spec.part_ranges:
    allowed = np.zeros((spec.num_categories, spec.num_classes), bool)
    for c, (start, end) in enumerate(spec.part_ranges):
      allowed[c, start:end] = True

  @jax.jit
  def predict(variables, batch):
    logits = model.apply(variables, *model_inputs(spec.task, batch), train=False)
    probs = jax.nn.softmax(logits, axis=-1)
    if allowed is not None:
      probs = jnp.where(jnp.asarray(allowed)[batch["category"]][:, None, :], probs, -1.0)
    return jnp.max(probs, -1), jnp.argmax(probs, -1)

  return lambda batch: jax.device_get(predict(variables, batch))


def _predict_votes(run: Callable, jobs: Iterable[tuple[Any, dict[str, np.ndarray]]],
                   batch_size: int) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
  """Runs vote samples of many jobs through `run` in full batches of `batch_size`.

  Args:
    run: `batch -> (confidence, prediction)` for a dict of `[batch_size, ...]` arrays.
    jobs: `(key, inputs)` with inputs a dict of `[k, ...]` arrays (k samples of one job).
    batch_size: samples per call; the last batch is padded by repeating a sample.

  Yields:
    `(key, confidence [k, N], prediction [k, N])` per job, in order.
  """
  samples = lambda inputs: len(next(iter(inputs.values())))
  waiting: list[dict[str, np.ndarray]] = []  # inputs not yet run
  owners: list[tuple[Any, int]] = []  # jobs whose results are not all out yet
  done_conf, done_pred = [], []  # results not yet handed out, in sample order
  jobs = iter(jobs)
  exhausted = False
  while not exhausted or waiting:
    job = next(jobs, None)
    if job is None:
      exhausted = True
    else:
      waiting.append(job[1])
      owners.append((job[0], samples(job[1])))
    pending = sum(samples(w) for w in waiting)
    while pending >= batch_size or (exhausted and pending):
      inputs = {k: np.concatenate([w[k] for w in waiting]) for k in waiting[0]}
      take = min(batch_size, pending)
      batch = {k: np.concatenate([v[:take], np.repeat(v[:1], batch_size - take, 0)])
               for k, v in inputs.items()}
      confidence, prediction = run(batch)
      done_conf.append(confidence[:take])
      done_pred.append(prediction[:take])
      waiting = [{k: v[take:] for k, v in inputs.items()}] if pending > take else []
      pending -= take
    done = sum(len(c) for c in done_conf)
    while owners and owners[0][1] <= done:
      key, k = owners.pop(0)
      confidence, prediction = np.concatenate(done_conf), np.concatenate(done_pred)
      yield key, confidence[:k], prediction[:k]
      done_conf, done_pred = [confidence[k:]], [prediction[k:]]
      done -= k


def evaluate_state(model: nn.Module, state: TrainState, spec: TaskSpec, test: Sequence[dict],
                   config: ml_collections.ConfigDict, mesh, workdir: str) -> dict[str, Any]:
  """Runs the task's protocol on `test` and writes `<workdir>/segmentation.png`."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  predict = _make_predict(model, spec, variables)
  run = lambda batch: predict(core.shard_batch(batch, mesh))
  protocol = _evaluate_parts if spec.task == "shapenet" else _evaluate_scenes
  result, clouds = protocol(run, spec, test, config)
  os.makedirs(workdir, exist_ok=True)
  png = plot_segmentations(clouds, os.path.join(workdir, "segmentation.png"), spec.num_classes,
                           up_axis=1 if spec.task == "shapenet" else 2)
  return {**result, "png": png}


def _evaluate_parts(run, spec: TaskSpec, test, config):
  """ShapeNet protocol: votes cover every point; instance and class mIoU."""
  n, votes = config.data.num_points, config.eval.num_votes
  rng = np.random.default_rng(config.seed)

  def jobs():
    for i in core.progress(range(len(test)), desc="eval"):
      example = test[i]
      features = pointclouds.part_features(example, config.data.with_normals)
      num_samples = evaluation.part_vote_samples(len(features), n, votes)
      indices = evaluation.vote_indices(len(features), n, num_samples, rng)
      inputs = {"points": features[indices],
                "category": np.full(num_samples, example["category"], np.int32)}
      yield (example, features, indices), inputs

  ious, categories, clouds = [], [], []
  for (example, features, indices), confidence, prediction in _predict_votes(
      run, jobs(), config.eval.batch_size):
    votes_of = evaluation.VoteAccumulator(len(features))
    votes_of.add(indices, confidence, prediction)
    category = int(example["category"])
    ious.append(evaluation.shape_iou(example["labels"], votes_of.prediction,
                                     spec.part_ranges[category]))
    categories.append(category)
    if len(clouds) < config.eval.plot_examples:
      clouds.append((f"{spec.class_names[category]} (IoU {ious[-1]:.2f})", features[:, :3],
                     example["labels"], votes_of.prediction))
  return evaluation.part_segmentation_miou(ious, categories, spec.class_names), clouds


def _evaluate_scenes(run, spec: TaskSpec, test, config):
  """S3DIS protocol: windows tiled with votes, merged per room; OA and class mIoU."""
  n = config.data.num_points
  num_samples = config.eval.num_votes * math.ceil(config.data.window_points / n)
  rng = np.random.default_rng(config.seed)

  def jobs():
    for i in core.progress(range(len(test)), desc="eval"):
      window = test[i]
      indices = evaluation.vote_indices(len(window["labels"]), n, num_samples, rng)
      yield (window, indices), {"points": window["points"][indices]}

  confusion = evaluation.SceneConfusion(spec.num_classes)
  clouds = []
  room = room_labels = room_votes = room_xyz = None

  def finish_room():
    confusion.update(room_labels, room_votes.prediction)
    if len(clouds) < config.eval.plot_examples:
      clouds.append((room, room_xyz, room_labels, room_votes.prediction))

  for (window, indices), confidence, prediction in _predict_votes(run, jobs(),
                                                                  config.eval.batch_size):
    name = window["room"].decode() if isinstance(window["room"], bytes) else window["room"]
    if name != room:
      if room is not None:
        finish_room()
      if not len(window["room_labels"]):
        raise UserError(f"the windows of room {name} are out of order (its first window, "
                        f"which carries the room's labels, must come first); rebuild the "
                        f"dataset with the builder in data/pointclouds.py.")
      room, room_labels = name, window["room_labels"]
      room_votes = evaluation.VoteAccumulator(len(room_labels))
      room_xyz = np.zeros((len(room_labels), 3), np.float32)
    room_xyz[window["indices"]] = window["points"][:, 6:9]  # Room-normalized xyz, for the plot.
    room_votes.add(window["indices"][indices], confidence, prediction)
  if room is not None:
    finish_room()
  return confusion.result(spec.class_names), clouds


def profile(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Parameters and multiply-accumulates of one sample of `data.num_points` points."""
  spec = task_spec(config)
  model = build_model(spec.task, config.model, spec.num_classes, spec.num_categories)
  inputs = model_inputs(spec.task, _sample_inputs(spec, config, 1))
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, *inputs,
                                                train=False))
  macs = core.count_macs(lambda v, *x: model.apply(v, *x, train=False), variables, *inputs)
  return {"model": config.model.name, "width_multiplier": config.model.width_multiplier,
          "params": core.count_params(variables["params"]), "macs": macs,
          "num_points": config.data.num_points, **kernel_paths(config)}
