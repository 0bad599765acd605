"""PPD training on the shared loop, the test metrics, pictures.

One workdir holds up to two runs of the same recipe, each resumable (`core.loop`):

* `model/`: the model as configured (`model.use_trajectory`, True by default: image, voxels
  and trajectories);
* `appearance_only/`: with `train.ablation` (and `model.use_trajectory`), the same model and
  recipe without the trajectory encoder, trained after the first by the same `train`
  command; its test metrics are reported beside the first's with the prefix `appearance_`.

Training batches are a pure function of (seed, step) (`grain.MapDataset`), so a resumed run is
bit-identical to an uninterrupted one; `train.steps_per_run` counts the steps of both runs.
The loop's validation hook reports the loss terms on the validation split. `evaluate` scores
the test split only (`metrics.evaluate_scenes`), with and, with `eval.refine`, after the
physics refinement, and writes `evaluation.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import generated, block_towers
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry, metrics, physics, refine
from lite_jax.ppd.model import (ATTENTION_OUTPUTS, PPD, check_inputs, loss_weights,
                                 num_primitives, ppd_loss)

RUNS = {"model": "", "appearance_only": "appearance_"}  # folder -> prefix of its test metrics
INPUTS = ("image", "voxels", "trajectory", "ball_trajectory")
# The last logged training numbers a `train` run reports per model.
SUMMARY = ("loss", "density_loss", "validation_loss", "validation_density_loss",
           "validation_density_top1")
TARGETS = ("shape", "size", "position", "quaternion", "density_bin", "valid", "count")


def build_model(config: ml_collections.ConfigDict, use_trajectory: bool | None = None) -> PPD:
  m = config.model
  return PPD(max_primitives=block_towers.MAX_BLOCKS,
             use_trajectory=m.use_trajectory if use_trajectory is None else use_trajectory,
             voxel_resolution=m.voxel_resolution, code_features=m.code_features,
             hidden=m.hidden, encoder_features=m.encoder_features,
             voxel_widths=tuple(m.voxel_widths), image_widths=tuple(m.image_widths),
             trajectory_widths=tuple(m.trajectory_widths), slot_features=m.slot_features,
             readout=m.readout, camera=block_towers.CAMERA, max_points=m.max_points)


def runs_of(config: ml_collections.ConfigDict) -> dict[str, bool]:
  """`{folder: use_trajectory}` of the runs a config trains (module docstring)."""
  runs = {"model": bool(config.model.use_trajectory)}
  if config.model.use_trajectory and config.train.ablation:
    runs["appearance_only"] = False
  return runs


def data_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The data module's settings, the ArrayRecord cache under the workdir by default."""
  return generated.under_workdir(block_towers.default_data_config(**config.data.to_dict()), workdir)


def load_split(config: ml_collections.ConfigDict, workdir: str, split: str) -> Sequence[dict]:
  return block_towers.load_split(data_config(config, workdir), split)


def generate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, int]:
  """Builds the three splits' ArrayRecord files (skipped when built); returns their sizes."""
  return {f"num_{split}": len(load_split(config, workdir, split))
          for split in block_towers.SPLITS}


def _fields(example: dict[str, np.ndarray], max_points: int | None = None
            ) -> dict[str, np.ndarray]:
  """The model's inputs and targets of one scene; with `max_points`, a `UserError` for a voxel
  grid with more occupied voxels than the attention readout takes (it would drop some)."""
  if max_points is not None and (occupied := int(np.sum(example["voxels"] > 0.5))) > max_points:
    raise UserError(f"a scene's voxel grid has {occupied} occupied voxels, more than "
                    f"model.max_points={max_points}; raise model.max_points.")
  return {k: example[k] for k in INPUTS + TARGETS}


def _max_points(config: ml_collections.ConfigDict) -> int | None:
  return config.model.max_points if config.model.readout == "attention" else None


def training_batches(train: Sequence[dict], config: ml_collections.ConfigDict, seed: int
                     ) -> grain.MapDataset:
  """Batch `i` of an endless, per-epoch reshuffled stream, random-access by step."""
  if len(train) < config.train.batch_size:
    raise UserError(f"the training split ({len(train)} scenes) is smaller than one batch "
                    f"({config.train.batch_size}); raise config.data.num_train.")
  fields = functools.partial(_fields, max_points=_max_points(config))
  data = grain.MapDataset.source(train).seed(seed).shuffle().repeat(None).map(fields)
  if config.train.mirror:  # half the scenes reflected in x = 0 (`block_towers.mirror_x`)
    data = data.random_map(lambda e, rng: block_towers.mirror_x(e) if rng.random() < 0.5
                           else e)
  return data.batch(config.train.batch_size, drop_remainder=True)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  optim = ml_collections.ConfigDict(config.optim.to_dict())
  optim.total_updates = config.train.num_steps
  return core.make_optimizer(optim)


@dataclasses.dataclass
class Setup:
  """One run's model, mesh, optimizer and state shapes (nothing initialized)."""
  config: ml_collections.ConfigDict
  model: PPD
  mesh: Any
  rules: Any
  key: jax.Array
  schedule: optax.Schedule
  abstract: core.TrainState
  shardings: Any
  init_state: Callable[[], core.TrainState]


def setup(config: ml_collections.ConfigDict, use_trajectory: bool) -> Setup:
  model = build_model(config, use_trajectory)
  size, r = config.data.image_size, config.model.voxel_resolution
  frames, slots = block_towers.FRAMES, block_towers.MAX_BLOCKS
  dummy = (jnp.zeros((1, size, size, 3)), jnp.zeros((1, r, r, r)),
           jnp.zeros((1, frames, slots, 7)), jnp.zeros((1, frames, 3)))
  tx, schedule = make_optimizer(config)
  # The ablation starts from the same key as the full model: the shared encoders start alike.
  key = core.init_key(config.seed)

  def init(key):
    return core.TrainState.create(model.init(key, *dummy)["params"], tx,
                                  core.stream_key(config.seed, 1))

  mesh, rules = core.mesh.from_config(config.mesh), core.mesh.rules_from_config(config.mesh)
  abstract, shardings = core.abstract_sharded_state(init, key, mesh, rules)
  return Setup(config, model, mesh, rules, key, schedule, abstract, shardings,
               lambda: core.init_sharded(init, key, shardings))


@functools.cache
def make_train_step(model: PPD, weights: Any) -> Callable:
  """`(state, batch) -> (state, metrics)`: one Adam step of `model.ppd_loss`."""

  def step(state: core.TrainState, batch: dict[str, jax.Array]):
    def loss_fn(params):
      outputs = model.apply({"params": params}, batch["image"], batch["voxels"],
                            batch["trajectory"], batch["ball_trajectory"])
      return ppd_loss(outputs, batch, weights)

    (_, step_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads), dict(step_metrics)

  return step


@functools.cache
def _jitted(model: PPD, weights: Any, what: str) -> Callable:
  """The eval-mode forward pass, or the loss terms of a batch."""
  if what == "loss":
    return jax.jit(lambda params, b: ppd_loss(model.apply(
        {"params": params}, b["image"], b["voxels"], b["trajectory"], b["ball_trajectory"]),
        b, weights)[1])
  return jax.jit(lambda params, b: model.apply(
      {"params": params}, b["image"], b["voxels"], b["trajectory"], b["ball_trajectory"]))


def _batches(examples: Sequence[dict], count: int, batch_size: int,
             max_points: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """`(rows, batch)` over the first `count` examples, each batch `batch_size` rows (the last
  padded with its first row, so one program serves all); `max_points` as `_fields`."""
  for start in range(0, count, batch_size):
    rows = [_fields(examples[i], max_points)
            for i in range(start, min(start + batch_size, count))]
    rows += [rows[0]] * (batch_size - len(rows))
    yield min(batch_size, count - start), {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _validation_hook(s: Setup, validation: Sequence[dict]) -> Callable:
  """The loop's validation: the loss terms and density top-1 on the validation split."""
  def hook(state: core.TrainState) -> dict[str, float]:
    losses = _jitted(s.model, loss_weights(s.config.loss), "loss")
    sums, total = {}, 0
    for rows, batch in _batches(validation, len(validation), s.config.eval.batch_size,
                                _max_points(s.config)):
      # Padding rows repeat a scene; weight each batch by its real rows (close enough for a
      # monitor, exact when the split divides into batches).
      out = jax.device_get(losses(state.params, batch))
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + float(v) * rows
      total += rows
    return {f"validation_{k}": v / total for k, v in sums.items()}
  return hook


def _run(config: ml_collections.ConfigDict, workdir: str, folder: str, use_trajectory: bool,
         train: Sequence[dict], validation: Sequence[dict], stop_after: int | None
         ) -> core.LoopResult:
  s = setup(config, use_trajectory)
  schedule = s.schedule
  loop = core.TrainLoop(
      directory=os.path.join(workdir, folder),
      step_fn=make_train_step(s.model, loss_weights(config.loss)),
      batches=training_batches(train, config, config.seed), total_steps=config.train.num_steps,
      intervals=config.train, mesh=s.mesh, rules=s.rules, config=config,
      learning_rate=lambda step: schedule(step - 1), evaluate=_validation_hook(s, validation),
      name=folder)
  return core.loop.run(loop, s.abstract, s.init_state, stop_after=stop_after)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains every run of `runs_of(config)` in turn, each resuming; returns each run's last
  logged loss and validation numbers (`model_loss`, `appearance_only_validation_loss`...).

  Raises:
    core.StoppedEarly: `train.steps_per_run` steps were taken before the end; rerun.
  """
  train_split = load_split(config, workdir, "train")
  validation = load_split(config, workdir, "validation")
  budget = config.train.steps_per_run or None
  summary = {}
  for folder, use_trajectory in runs_of(config).items():
    if budget is not None and budget <= 0:
      raise core.StoppedEarly(folder, 0, config.train.num_steps)
    result = _run(config, workdir, folder, use_trajectory, train_split, validation, budget)
    if result.step < config.train.num_steps:
      raise core.StoppedEarly(folder, result.step, config.train.num_steps)
    if budget is not None:
      budget -= result.step - result.first_step
    records = [r for r in core.read_metrics(os.path.join(workdir, folder)) if "loss" in r]
    if records:
      summary.update({f"{folder}_{k}": v for k, v in records[-1].items() if k in SUMMARY})
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`train`, then `evaluate` on the test split; one dict of both."""
  summary = train(config, workdir)
  return {**evaluate(config, workdir), **summary, "num_steps": config.train.num_steps}


def restore(config: ml_collections.ConfigDict, workdir: str, folder: str, use_trajectory: bool
            ) -> tuple[Setup, core.TrainState]:
  s = setup(config, use_trajectory)
  return s, core.restore_finished(os.path.join(workdir, folder, "checkpoints"), s.abstract,
                                  "train (--mode=train)")


def predict(s: Setup, params: Any, examples: Sequence[dict], count: int
            ) -> dict[str, np.ndarray]:
  """The model's outputs `[count, P, ...]` (numpy) on the first `count` examples."""
  forward = _jitted(s.model, None, "forward")
  parts = []
  for rows, batch in _batches(examples, count, s.config.eval.batch_size, _max_points(s.config)):
    out = jax.device_get(forward(params, batch))
    parts.append({k: np.asarray(v)[:rows] for k, v in out.items()
                  if k not in ATTENTION_OUTPUTS})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_split(config: ml_collections.ConfigDict, examples: Sequence[dict]) -> None:
  """A one-sentence `UserError` when the data do not fit the model (before any restore)."""
  first = examples[0]
  check_inputs(first["image"][None], geometry.check_voxel_grid(
      first["voxels"], config.model.voxel_resolution)[None], first["trajectory"][None],
      config.model.voxel_resolution, block_towers.MAX_BLOCKS)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The test metrics (`metrics.evaluate_scenes`) of every trained run over the first
  `eval.num_examples` test scenes; the ablation's with the prefix `appearance_`. Written to
  `<workdir>/evaluation.json`."""
  test = load_split(config, workdir, "test")
  _check_split(config, test)
  count = min(config.eval.num_examples, len(test))
  examples = [test[i] for i in range(count)]
  result = {}
  for folder, use_trajectory in runs_of(config).items():
    s, state = restore(config, workdir, folder, use_trajectory)
    outputs = predict(s, state.params, examples, count)
    scores = metrics.evaluate_scenes(
        outputs, examples, top_k=config.eval.top_k, refine_densities=config.eval.refine,
        refine_k=config.eval.refine_k)
    result.update({RUNS[folder] + k: v for k, v in scores.items()})
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "evaluation.json"), "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


# ---------------------------------------------------------------------------------------------
# Pictures.
# ---------------------------------------------------------------------------------------------


def _colors(primitives: geometry.Primitives) -> np.ndarray:
  """`[P, 3]` each primitive's material colour (from its density, as the generator colours)."""
  return np.array([block_towers.MATERIALS[m][2]
                   for m in block_towers.material_of(primitives.density)]).reshape(-1, 3)


def visualize(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """For the first `visualize.num_examples` test scenes and the trained model (`model/`):
  `primitives.png`, the true and the predicted primitives rendered by the dataset's ray caster
  from its camera (colours: the material of each density), and `trajectories.png`, each block's
  observed x and z over time (solid) with the predicted scene re-simulated (dashed). Returns
  `{"pictures": [paths]}`."""
  test = load_split(config, workdir, "test")
  _check_split(config, test)
  count = min(config.visualize.num_examples, len(test))
  examples = [test[i] for i in range(count)]
  s, state = restore(config, workdir, "model", bool(config.model.use_trajectory))
  outputs = predict(s, state.params, examples, count)
  counts = num_primitives(outputs["stop"])
  folder = os.path.join(workdir, "pictures")
  os.makedirs(folder, exist_ok=True)
  size = max(config.data.image_size, 96)
  figure, axes = core.plots.subplots(2, count, figsize=(2.2 * count, 4.6), squeeze=False)
  plot_figure, plot_axes = core.plots.subplots(2, count, figsize=(3 * count, 5), squeeze=False)
  for i, example in enumerate(examples):
    truth = geometry.Primitives.from_example(example)
    row = {k: v[i] for k, v in outputs.items()}
    predicted = refine.physical_primitives(metrics.predicted_primitives(row, int(counts[i])))
    pendulum = block_towers.pendulum_from_example(example)
    for j, (name, prims) in enumerate((("true", truth), ("predicted", predicted))):
      axes[j, i].imshow(block_towers.render(prims, _colors(prims), pendulum, size))
      axes[j, i].set_title(f"{name}: {len(prims)} blocks", fontsize=8)
      axes[j, i].axis("off")
    observed = np.asarray(example["trajectory"])[:, :len(truth)]
    simulated = refine.Simulator(predicted, pendulum, block_towers.STEPS)(
        row["density_logits"][:len(predicted)].argmax(-1)) if len(predicted) else None
    time = np.arange(len(observed)) * physics.FRAME_EVERY * physics.TIMESTEP
    for j, axis_index in enumerate((0, 2)):
      ax = plot_axes[j, i]
      for b in range(len(truth)):
        line, = ax.plot(time, observed[:, b, axis_index], label=f"block {b}")
        if simulated is not None and b < simulated.shape[1]:
          ax.plot(time, simulated[:, b, axis_index], "--", color=line.get_color())
      ax.set_xlabel("t (s)", fontsize=8)
      ax.set_ylabel(f"{'xz'[j]} (m)", fontsize=8)
    plot_axes[0, i].set_title(f"test scene {i}: observed (solid), predicted (dashed)",
                              fontsize=7)
  paths = [core.plots.save(figure, os.path.join(folder, "primitives.png")),
           core.plots.save(plot_figure, os.path.join(folder, "trajectories.png"))]
  return {"pictures": paths}
