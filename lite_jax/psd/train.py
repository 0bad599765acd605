"""Two-stage PSD training on the shared loop, evaluation on the test split, pictures, profile.

The pipeline of one workdir, each step resumable and skipped when already done:

1. `stage1/`: the conditional VAE without the structural descriptor (`dimensions=None`).
2. `dimensions.json`: the active latent dimensions, picked from stage 1's posterior statistics
   (`metrics.select_active_dimensions`) over `active.num_examples` *training* scenes (a model
   selection step, not a validation metric), or given by `--dimensions` (as the reference's
   flag). A resumed run reuses the file; `posterior.npz` keeps the statistics (the bank that
   aggregate-posterior samples and traversal ranges are drawn from).
3. `stage2/`: initialized from stage 1's final parameters and BatchNorm statistics, trained
   with the structural descriptor over the chosen dimensions. The motion encoder is frozen:
   the model stops the gradient at `mean`/`log_var` when `dimensions` is given, its parameters
   are mapped to `optax.set_to_zero` (so no optimizer state and no update, even with weight
   decay), and the model runs it in eval mode, keeping stage 1's BatchNorm running statistics
   (so the posterior bank and the chosen dimensions stay valid for the stage-2 model). Stage
   1 likewise freezes the structure matrix, which it does not use.
4. `evaluate`: on the test split (never the training split), in eval mode with the posterior
   mean (`sample=False`): part IoU of the active dimensions' masks against the ground-truth
   objects (Hungarian), the one-mask foreground baseline, hierarchy recovery, flow EPE (px) and
   the zero-flow EPE, the image L1 and the copy-frame-1 L1; written to `evaluation.json`.

Training batches are a pure function of (seed, step) (`grain.MapDataset`), so each stage
resumes bit-exactly; `train.steps_per_run` counts the steps of both stages in one run.

`model.layers` other than `image` (a diagnostic, ours) replaces the image encoder's layers by
the true objects' maps (`model.object_layers`) everywhere the model runs: training, the
posterior, evaluation and pictures. The JSON line then says what the decoders and the
structure step reach with perfect parts, next to the model's own.
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
from absl import logging

from data import generated, shapes_motion
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.psd import losses, metrics
from lite_jax.psd import visualize as pictures
from lite_jax.psd.model import (OBJECT_LAYERS, PSD, aggregate_posterior_sample, object_layers,
                                structure_mask)

STAGES = ("stage1", "stage2")
OBJECT_NAMES = ("circle", "square", "triangle")
# `model.layers`: the image encoder's (the model), or the true objects' (a diagnostic);
# `objects_staged` is each stage's ideal: `objects_shared` in stage 1, `objects` in stage 2.
LAYER_SOURCES = ("image",) + OBJECT_LAYERS + ("objects_staged",)
# Top-level parameter collections frozen in each stage (see the module docstring).
STRUCTURE = "structure"
MOTION_ENCODER = "motion_encoder"


class TrainState(core.TrainState):
  """`core.TrainState` plus the BatchNorm running statistics."""
  batch_stats: Any = None


# ---------------------------------------------------------------------------------------------
# Model, data and optimizer of a config.
# ---------------------------------------------------------------------------------------------


def build_model(config: ml_collections.ConfigDict) -> PSD:
  m = config.model
  if m.layers not in LAYER_SOURCES:
    raise UserError(f"--config.model.layers must be one of {', '.join(LAYER_SOURCES)}, got "
                    f"{m.layers!r}.")
  return PSD(num_latents=m.num_latents, image_size=config.data.image_size,
             unet_features=m.unet_features, unet_levels=m.unet_levels,
             width_scale=m.width_scale, layer_stride=m.layer_stride,
             motion_kernels=tuple(m.motion_kernels), depthwise_impl=m.depthwise_impl,
             mask_eps=m.mask_eps)


def loss_weights(config: ml_collections.ConfigDict) -> Any:
  """`losses.LossWeights` with the config's overrides."""
  return losses.loss_weights(config.loss)


def parse_dimensions(text: str, num_latents: int) -> tuple[int, ...] | None:
  """`'18,9,0'` -> `(18, 9, 0)`; '' -> None (picked automatically).

  Raises:
    UserError: a value that is not an integer, out of 0..num_latents-1, repeated, or fewer
      than two values (a structure needs a parent and a child).
  """
  text = (text or "").strip()
  if not text:
    return None
  try:
    dims = tuple(int(v) for v in text.split(","))
  except ValueError:
    raise UserError(f"--dimensions={text} must be comma-separated integers, e.g. 18,9,0."
                    ) from None
  bad = [d for d in dims if not 0 <= d < num_latents]
  if bad:
    raise UserError(f"--dimensions={text}: {bad[0]} is out of range; the model has "
                    f"{num_latents} latent dimensions (0..{num_latents - 1}).")
  if len(set(dims)) != len(dims):
    raise UserError(f"--dimensions={text} repeats a dimension; list each one once.")
  if len(dims) < 2:
    raise UserError(f"--dimensions={text} names {len(dims)} dimension; the structure needs at "
                    f"least two (a parent and a child).")
  return dims


def data_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The data module's settings, with the ArrayRecord cache under the workdir by default."""
  return generated.under_workdir(shapes_motion.default_data_config(**config.data.to_dict()), workdir)


def load_split(config: ml_collections.ConfigDict, workdir: str, split: str) -> Sequence[dict]:
  examples = shapes_motion.load_split(data_config(config, workdir), split)
  if len(examples) == 0:
    raise UserError(f"the {split} split is empty; raise config.data.num_{split}.")
  return examples


def given_layers(config: ml_collections.ConfigDict, batch: dict[str, np.ndarray], stage: int
                 ) -> np.ndarray | None:
  """The part maps to decode instead of the image encoder's (`model.layers`), or None.

  Args:
    batch: with `object_ids` `[B, H, W]`.
    stage: 1 or 2 (`objects_staged` differs between them).
  """
  source = config.model.layers
  if source == "image":
    return None
  if source == "objects_staged":
    source = "objects_shared" if stage == 1 else "objects"
  ids = np.asarray(batch["object_ids"])
  if np.any(ids < 0):
    raise UserError(f"--config.model.layers={config.model.layers} needs per-pixel object "
                    f"ids, which only the generated Shapes data has "
                    f"(config.data.source='shapes').")
  return object_layers(ids, config.model.num_latents, config.model.layer_stride, source)


def _model_inputs(config: ml_collections.ConfigDict, stage: int, example: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
  inputs = {k: example[k] for k in ("image1", "image2", "flow")}
  layers = given_layers(config, {"object_ids": np.asarray(example["object_ids"])[None]}, stage)
  if layers is not None:
    inputs["layers"] = layers[0]
  return inputs


def training_batches(train: Sequence[dict], config: ml_collections.ConfigDict, stage: int
                     ) -> grain.MapDataset:
  """Batch `i` of an endless, per-epoch reshuffled stream, random-access by step (so a
  resumed stage sees the batches an uninterrupted one would)."""
  if len(train) < config.train.batch_size:
    raise UserError(f"the training split ({len(train)} scenes) is smaller than one batch "
                    f"({config.train.batch_size}); raise config.data.num_train.")
  return (grain.MapDataset.source(train).seed(config.seed * 2 + stage).shuffle().repeat(None)
          .map(functools.partial(_model_inputs, config, stage))
          .batch(config.train.batch_size, drop_remainder=True))


def _labels(params: Any, stage: int) -> Any:
  """The optimizer group of every parameter leaf, by top-level module: stage 1 freezes the
  structure matrix (unused there), stage 2 the motion encoder and gives the structure its own
  learning rate."""
  def label(name: str) -> str:
    if name == STRUCTURE:
      return "frozen" if stage == 1 else "structure"
    return "frozen" if stage == 2 and name == MOTION_ENCODER else "train"
  return {name: jax.tree.map(lambda _, name=name: label(name), sub)
          for name, sub in params.items()}


def make_optimizer(config: ml_collections.ConfigDict, stage: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam (`core.make_optimizer`) on what the stage trains, `set_to_zero` on what it freezes
  (`_labels`); in stage 2 the structure logits S get Adam at `optim.structure_learning_rate`:
  from their init -10, Adam moves each logit by about its learning rate per step, so at the
  other weights' rate S could not reach 0 (sigmoid 0.5) in fewer than 10 / lr steps."""
  optim = ml_collections.ConfigDict(config.optim.to_dict())
  optim.total_updates = config.train.stage1_steps if stage == 1 else config.train.stage2_steps
  if stage == 2:
    optim.learning_rate = config.optim.stage2_learning_rate
  tx, schedule = core.make_optimizer(optim)
  groups = {"train": tx, "frozen": optax.set_to_zero()}
  if stage == 2:
    optim.learning_rate = config.optim.structure_learning_rate
    groups["structure"] = core.make_optimizer(optim)[0]
  tx = optax.multi_transform(groups, lambda params: _labels(params, stage))
  return tx, schedule


@dataclasses.dataclass
class Setup:
  """The model, the mesh, and both stages' optimizers and state shapes for a config."""
  config: ml_collections.ConfigDict
  model: PSD
  mesh: Any
  rules: Any
  key: jax.Array
  txs: tuple[optax.GradientTransformation, ...]
  schedules: tuple[optax.Schedule, ...]
  abstracts: tuple[TrainState, ...]
  shardings: tuple[Any, ...]
  init_variables: Callable[[jax.Array], dict[str, Any]]

  @property
  def num_latents(self) -> int:
    return self.config.model.num_latents

  def new_state(self, variables: dict[str, Any], stage: int) -> TrainState:
    """Stage `stage`'s first state from model variables: a fresh optimizer and step count."""
    state = TrainState.create(variables["params"], self.txs[stage - 1],
                              core.stream_key(self.config.seed, stage))
    return state.replace(batch_stats=variables["batch_stats"])

  def init_stage1(self) -> TrainState:
    return core.init_sharded(lambda key: self.new_state(self.init_variables(key), 1), self.key,
                             self.shardings[0])


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Model, mesh and the shapes of both stages' train states (nothing is initialized)."""
  model = build_model(config)
  size = config.data.image_size
  image = jnp.zeros((1, size, size, 3), jnp.float32)
  flow = jnp.zeros((1, size, size, 2), jnp.float32)

  def init_variables(key: jax.Array) -> dict[str, Any]:
    params_key, latent_key = jax.random.split(key)
    return model.init({"params": params_key, "latent": latent_key}, image, flow, train=False)

  key = core.init_key(config.seed)
  optimizers = [make_optimizer(config, stage) for stage in (1, 2)]
  s = Setup(config, model, core.mesh.from_config(config.mesh),
            core.mesh.rules_from_config(config.mesh), key,
            tuple(tx for tx, _ in optimizers), tuple(schedule for _, schedule in optimizers),
            (), (), init_variables)
  # The model is traced once; both stages' states are built around its variables' shapes.
  shapes = jax.eval_shape(init_variables, key)
  zeros = lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
  built = [core.abstract_sharded_state(lambda _, stage=stage: s.new_state(zeros(), stage), key,
                                       s.mesh, s.rules) for stage in (1, 2)]
  s.abstracts = tuple(abstract for abstract, _ in built)
  s.shardings = tuple(sharding for _, sharding in built)
  return s


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------


# Memoized on (model, weights, dimensions), all hashable: a run that trains both stages, or a
# process that runs several (the tests), traces each program once.
@functools.cache
def make_train_step(model: PSD, weights: Any, dimensions: tuple[int, ...] | None) -> Callable:
  """`(state, batch) -> (state, metrics)`: one step of `losses.psd_loss`, latent noise from
  `fold_in(stream key, step)`. With `dimensions` (stage 2) the model runs its motion encoder
  in eval mode (its BatchNorm statistics stay stage 1's) behind a stop-gradient, and the
  optimizer freezes its parameters."""

  def step(state: TrainState, batch: dict[str, jax.Array]):
    def loss_fn(params):
      outputs, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, batch["image1"], batch["flow"],
          layers=batch.get("layers"), dimensions=dimensions, train=True, sample=True,
          rngs={"latent": state.step_key()}, mutable=["batch_stats"])
      loss, step_metrics = losses.psd_loss(outputs, batch, params, weights,
                                           dimensions=dimensions)
      return loss, (step_metrics, updates["batch_stats"])

    (_, (step_metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads).replace(batch_stats=batch_stats)
    return state, dict(step_metrics)

  return step


def _run_stage(s: Setup, stage: int, workdir: str, train: Sequence[dict],
               dimensions: tuple[int, ...] | None, init: Callable[[], TrainState],
               stop_after: int | None, validation: Callable | None) -> core.LoopResult:
  config = s.config
  total = config.train.stage1_steps if stage == 1 else config.train.stage2_steps
  schedule = s.schedules[stage - 1]
  loop = core.TrainLoop(
      directory=os.path.join(workdir, STAGES[stage - 1]),
      step_fn=make_train_step(s.model, loss_weights(config), dimensions),
      batches=training_batches(train, config, stage), total_steps=total,
      intervals=config.train, mesh=s.mesh, rules=s.rules, config=config,
      learning_rate=lambda step: schedule(step - 1), evaluate=validation,
      name=f"stage {stage}")
  return core.loop.run(loop, s.abstracts[stage - 1], init, stop_after=stop_after)


def _stage_dir(workdir: str, stage: int) -> str:
  return os.path.join(workdir, STAGES[stage - 1], "checkpoints")


def restore_stage(s: Setup, workdir: str, stage: int) -> TrainState:
  """The final state of a finished stage (a `UserError` when it has not run)."""
  return core.restore_finished(_stage_dir(workdir, stage), s.abstracts[stage - 1],
                               "train (--mode=train)")


def _variables(state: TrainState) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Stage 1, the active dimensions, stage 2 (each resuming), then `evaluate_state` on the
  test split.

  Returns:
    The test metrics (see `evaluate_state`), each stage's last logged losses and steps.

  Raises:
    core.StoppedEarly: `train.steps_per_run` steps were taken (over both stages) before the
      end; rerun to continue.
  """
  s = setup(config)
  given = parse_dimensions(config.dimensions, s.num_latents)
  _check_dimensions_file(workdir, given)
  train = load_split(config, workdir, "train")
  validation = load_split(config, workdir, "validation")
  budget = config.train.steps_per_run or None

  first = _run_stage(s, 1, workdir, train, None, s.init_stage1, budget,
                     _validation_hook(s, validation, None))
  if first.step < config.train.stage1_steps:
    raise core.StoppedEarly("stage 1", first.step, config.train.stage1_steps)
  taken = first.step - first.first_step
  stage1 = first.state if taken else restore_stage(s, workdir, 1)
  dims = choose_dimensions(s, workdir, stage1, train, given)
  if budget is not None and taken >= budget:
    raise core.StoppedEarly("stage 2", 0, config.train.stage2_steps)

  second = _run_stage(s, 2, workdir, train, dims,
                      lambda: jax.device_put(s.new_state(_variables(stage1), 2), s.shardings[1]),
                      None if budget is None else budget - taken,
                      _validation_hook(s, validation, dims))
  if second.step < config.train.stage2_steps:
    raise core.StoppedEarly("stage 2", second.step, config.train.stage2_steps)
  state = second.state if second.step > second.first_step else restore_stage(s, workdir, 2)
  result = evaluate_state(s, state, dims, load_split(config, workdir, "test"), workdir)
  return {**result, **last_losses(workdir), "stage1_steps": config.train.stage1_steps,
          "stage2_steps": config.train.stage2_steps}


def last_losses(workdir: str) -> dict[str, float]:
  """Each stage's last logged loss terms (`stage1_loss`, `stage2_kl`, ...): the means over
  its last log window, read from its metrics (so a resumed run reports the same)."""
  summary = {}
  for stage, name in enumerate(STAGES, 1):
    records = [r for r in core.read_metrics(os.path.join(workdir, name)) if "loss" in r]
    if records:
      summary.update({f"stage{stage}_{k}": v for k, v in records[-1].items()
                      if "loss" in k or k == "kl" or k == "validation_flow_epe"})
  return summary


def _check_dimensions_file(workdir: str, given: tuple[int, ...] | None) -> None:
  """A `UserError` when `--dimensions` differs from the dimensions stage 2 was trained with."""
  saved = read_dimensions(workdir)
  if given is None or saved is None or tuple(saved) == given:
    return
  if os.path.isdir(os.path.join(workdir, STAGES[1], "checkpoints")):
    raise UserError(f"stage 2 in {workdir} was trained with --dimensions="
                    f"{','.join(map(str, saved))}; pass those or a fresh --workdir.")


def read_dimensions(workdir: str) -> tuple[int, ...] | None:
  path = os.path.join(workdir, "dimensions.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return tuple(json.load(f)["dimensions"])


def choose_dimensions(s: Setup, workdir: str, stage1: TrainState, train: Sequence[dict],
                      given: tuple[int, ...] | None) -> tuple[int, ...]:
  """The active dimensions: `given`, else the saved choice, else picked from the posterior
  statistics of stage 1 over the first `active.num_examples` training scenes. Writes
  `dimensions.json` (choice + per-dimension statistics) and `posterior.npz` (the bank)."""
  saved = read_dimensions(workdir)
  bank_path = os.path.join(workdir, "posterior.npz")
  if saved is not None and os.path.exists(bank_path) and (given is None or given == saved):
    return saved
  active = s.config.active
  count = min(active.num_examples, len(train))
  mean, log_var = posterior(s, _variables(stage1), train, count)
  if given is None:
    dims = tuple(int(d) for d in metrics.select_active_dimensions(
        mean, log_var, min_kl=active.min_kl, max_dims=active.max_dims))
    if len(dims) < 2:
      raise UserError(f"only {len(dims)} latent dimension is active after stage 1 (KL >= "
                      f"{active.min_kl}); train stage 1 longer, lower config.active.min_kl, "
                      f"or pass --dimensions.")
  else:
    dims = given
  stats = metrics.dimension_statistics(mean, log_var)
  record = {"dimensions": list(dims), "source": "given" if given else "posterior statistics",
            "num_examples": count, "min_kl": active.min_kl, "max_dims": active.max_dims,
            "statistics": {k: np.asarray(v).round(6).tolist() for k, v in stats.items()}}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    np.savez(bank_path, mean=mean, log_var=log_var)
    with open(os.path.join(workdir, "dimensions.json"), "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
  logging.info("active dimensions %s (%s)", dims, record["source"])
  return dims


# ---------------------------------------------------------------------------------------------
# Inference over a split.
# ---------------------------------------------------------------------------------------------


def _batches(examples: Sequence[dict], count: int, batch_size: int
             ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """`(rows, batch)` over the first `count` examples, every batch `batch_size` rows (the
  last padded by repeating its first row, so one program serves all)."""
  for start in range(0, count, batch_size):
    rows = [examples[i] for i in range(start, min(start + batch_size, count))]
    rows += [rows[0]] * (batch_size - len(rows))
    yield min(batch_size, count - start), {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _forward(s: Setup, dimensions: tuple[int, ...] | None) -> Callable:
  """`(variables, batch) -> outputs` in eval mode with the posterior mean, from the batch's
  `image1` and `flow` (and its `object_ids` when `model.layers` asks for them)."""
  apply = _jitted_apply(s.model, dimensions, "forward")
  stage = 1 if dimensions is None else 2
  return lambda variables, batch: apply(variables, batch["image1"], batch["flow"],
                                        given_layers(s.config, batch, stage))


@functools.cache
def _jitted_apply(model: PSD, dimensions: tuple[int, ...] | None, what: str) -> Callable:
  """One jitted eval-mode program per (model, dimensions): the forward pass with the
  posterior mean, or `PSD.decode` of given latents."""
  if what == "decode":
    return jax.jit(lambda v, image1, z, layers: model.apply(
        v, image1, z, dimensions=dimensions, train=False, layers=layers, method=PSD.decode))
  return jax.jit(lambda v, image1, flow, layers: model.apply(
      v, image1, flow, dimensions=dimensions, train=False, sample=False, layers=layers))


def posterior(s: Setup, variables: dict, examples: Sequence[dict], count: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """`(mean, log_var)`, each `[count, L]`, of the first `count` examples (eval mode)."""
  forward = _forward(s, None)
  means, log_vars = [], []
  for rows, batch in _batches(examples, count, s.config.eval.batch_size):
    out = forward(variables, batch)
    means.append(np.asarray(out["mean"])[:rows])
    log_vars.append(np.asarray(out["log_var"])[:rows])
  return np.concatenate(means), np.concatenate(log_vars)


def _validation_hook(s: Setup, validation: Sequence[dict], dimensions: tuple[int, ...] | None
                     ) -> Callable[[TrainState], dict[str, float]]:
  """The loop's validation: flow EPE (px) on the validation split, eval mode."""
  def hook(state: TrainState) -> dict[str, float]:
    forward = _forward(s, dimensions)
    errors, count = [], min(len(validation), s.config.eval.num_examples)
    for rows, batch in _batches(validation, count, s.config.eval.batch_size):
      out = forward(_variables(state), batch)
      errors.append(_epe_per_scene(np.asarray(out["flow"])[:rows] / 100.0,
                                   batch["flow"][:rows], s.config.data.image_size))
    return {"validation_flow_epe": float(np.mean(np.concatenate(errors)))}
  return hook


def _epe_per_scene(pred: np.ndarray, true: np.ndarray, image_size: int) -> np.ndarray:
  """`[N]` mean end-point error (px) per scene of flows `[N, H, W, 2]` in image widths."""
  return np.stack([metrics.flow_epe(p[None], t[None], image_size) for p, t in zip(pred, true)])


def structure_probabilities(params: Any, dimensions: tuple[int, ...]) -> np.ndarray:
  """`[L, L]` sigmoid(S) where the structure mask allows it, 0 elsewhere."""
  structure = np.asarray(params[STRUCTURE], np.float32)
  allowed = np.asarray(structure_mask(dimensions, structure.shape[0]), np.float32)
  return allowed / (1.0 + np.exp(-structure))


def evaluate_state(s: Setup, state: TrainState, dimensions: tuple[int, ...],
                   test: Sequence[dict], workdir: str) -> dict[str, Any]:
  """The test metrics of a stage-2 state over the first `eval.num_examples` test scenes.

  Returns:
    `part_iou` (mean over objects), `part_iou_per_object`, `assignment` (object name ->
    dimension), `foreground_baseline_iou`, `hierarchy_correct` (these five only where the
    data has object ids), `edges` ([parent, child, sigmoid(S)] above 0.5), `active_dims`,
    `flow_epe` / `flow_epe_zero` (px; the model and predicting zero flow), `image_l1` /
    `image_l1_copy` (the predicted frame 2 and frame 1 itself against the true frame 2),
    `num_test`. Also written to `evaluation.json`.
  """
  config = s.config
  count = min(config.eval.num_examples, len(test))
  forward = _forward(s, dimensions)
  variables = _variables(state)
  masks, ids, pred_flow, true_flow, image_l1, copy_l1 = [], [], [], [], [], []
  for rows, batch in core.progress(_batches(test, count, config.eval.batch_size),
                                   total=-(-count // config.eval.batch_size), desc="test"):
    out = jax.device_get(forward(variables, batch))
    masks.append(np.asarray(out["masks"])[:rows][:, list(dimensions)])
    ids.append(batch["object_ids"][:rows])
    pred_flow.append(np.asarray(out["flow"])[:rows] / 100.0)  # 100x units -> image widths
    true_flow.append(batch["flow"][:rows])
    image_l1.append(np.abs(out["image"][:rows] - batch["image2"][:rows]).mean((1, 2, 3)))
    copy_l1.append(np.abs(batch["image1"][:rows] - batch["image2"][:rows]).mean((1, 2, 3)))
  masks, ids = np.concatenate(masks), np.concatenate(ids)
  pred_flow, true_flow = np.concatenate(pred_flow), np.concatenate(true_flow)
  size = config.data.image_size
  probs = structure_probabilities(state.params, dimensions)
  result = {}
  if np.any(ids >= 0):
    parts = metrics.part_iou(masks, ids, threshold=config.eval.mask_threshold,
                             num_objects=len(OBJECT_NAMES))
    assignment = {int(k): int(v) for k, v in parts["assignment"].items()}  # id -> dims index
    tree = metrics.hierarchy(probs, dimensions, assignment)
    result.update({
        "part_iou": float(parts["part_iou"]),
        "part_iou_per_object": _per_object(parts["per_object"]),
        "assignment": {_object_name(k): dimensions[v] for k, v in assignment.items()},
        "foreground_baseline_iou": float(metrics.foreground_baseline_iou(ids, true_flow)),
        "hierarchy_correct": bool(tree["hierarchy_correct"]),
        "edges": [[int(p), int(c), round(float(prob), 4)] for p, c, prob in tree["edges"]]})
  else:  # files without object ids (the reference layout, user videos): no part metrics
    logging.warning("the test split has no object ids: part IoU and hierarchy are skipped.")
    result["edges"] = [[int(i), int(j), round(float(probs[i, j]), 4)] for i in dimensions
                       for j in dimensions if probs[i, j] > 0.5]
  result.update({
      "active_dims": list(dimensions),
      "flow_epe": float(metrics.flow_epe(pred_flow, true_flow, size)),
      "flow_epe_zero": float(metrics.flow_epe(np.zeros_like(true_flow), true_flow, size)),
      "image_l1": float(np.mean(np.concatenate(image_l1))),
      "image_l1_copy": float(np.mean(np.concatenate(copy_l1))),
      "num_test": count})
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "evaluation.json"), "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


def _object_name(object_id: int) -> str:
  return OBJECT_NAMES[int(object_id) - 1]


def _per_object(per_object: Sequence[float]) -> dict[str, float | None]:
  """`part_iou`'s per-object list by object name; None for an object in no test scene."""
  return {name: None if np.isnan(v) else float(v) for name, v in zip(OBJECT_NAMES, per_object)}


def _trained(config: ml_collections.ConfigDict, workdir: str
             ) -> tuple[Setup, TrainState, tuple[int, ...]]:
  s = setup(config)
  dims = read_dimensions(workdir)
  given = parse_dimensions(config.dimensions, s.num_latents)
  if dims is None:
    raise UserError(f"no dimensions.json in {workdir}; train (--mode=train) first.")
  if given is not None and given != dims:
    raise UserError(f"{workdir} was trained with --dimensions={','.join(map(str, dims))}, "
                    f"not {config.dimensions}; pass those or train a fresh --workdir.")
  return s, restore_stage(s, workdir, 2), dims


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`evaluate_state` of the workdir's finished stage 2 on the test split."""
  s, state, dims = _trained(config, workdir)
  return evaluate_state(s, state, dims, load_split(config, workdir, "test"), workdir)


# ---------------------------------------------------------------------------------------------
# Pictures.
# ---------------------------------------------------------------------------------------------


def visualize(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pictures of the finished model into `<workdir>/pictures/`.

  * `traversals.png` / `traversals_image.png`: for each active dimension, the predicted flow
    (colour-coded) / frame 2 of the first test scene as that dimension's latent sweeps the
    aggregate posterior's range (min..max of the posterior means in `posterior.npz`), the
    others fixed at the scene's posterior mean.
  * `samples.png`: flows decoded from latents drawn from the aggregate posterior
    (`model.aggregate_posterior_sample`: each dimension's statistics from a random other
    training scene), for the first test scenes.
  * `masks.png`: the test scenes with each active dimension's soft mask.
  * `structure.png`: the learned tree among the active dimensions.
  * `index.html`: the pictures and the test metrics (`evaluation.json`, if evaluated).

  Returns:
    `{"pictures": [paths], "html": path}`.
  """
  s, state, dims = _trained(config, workdir)
  vis, batch_size = config.visualize, config.eval.batch_size
  test = load_split(config, workdir, "test")
  count = min(vis.num_examples, len(test), batch_size)
  # Padded to the evaluation's batch: the programs `evaluate` compiled serve here too.
  _, batch = next(_batches(test, count, batch_size))
  bank = np.load(os.path.join(workdir, "posterior.npz"))
  variables = _variables(state)
  out = jax.device_get(_forward(s, dims)(variables, batch))
  layers = given_layers(config, batch, 2)
  repeat = lambda a, n, times: None if a is None else np.repeat(a[:n], times, 0)
  folder = os.path.join(workdir, "pictures")
  os.makedirs(folder, exist_ok=True)
  decode = _decoder(s, variables, dims)
  evaluation = {}
  eval_path = os.path.join(workdir, "evaluation.json")
  if os.path.exists(eval_path):
    with open(eval_path, encoding="utf-8") as f:
      evaluation = json.load(f)
  # Each dimension named by the object the test metrics matched it to ('' for none).
  matched = {d: name for name, d in evaluation.get("assignment", {}).items()}
  names = [matched.get(d, "") for d in dims] if matched else None

  steps = vis.traversal_steps
  low, high = bank["mean"].min(0), bank["mean"].max(0)
  z = np.repeat(out["mean"][:1], len(dims) * steps, 0).reshape(len(dims), steps, -1)
  for row, d in enumerate(dims):
    z[row, :, d] = np.linspace(low[d], high[d], steps)
  decoded = decode(repeat(batch["image1"], 1, len(dims) * steps),
                   z.reshape(len(dims) * steps, -1), repeat(layers, 1, len(dims) * steps))
  flows = decoded["flow"].reshape(len(dims), steps, *decoded["flow"].shape[1:])
  images = np.clip(decoded["image"], 0.0, 1.0).reshape(flows.shape[:-1] + (3,))
  paths = [
      pictures.save_traversals(os.path.join(folder, "traversals.png"),
                               pictures.flow_to_rgb(flows), dims, names=names),
      pictures.save_traversals(os.path.join(folder, "traversals_image.png"), images, dims,
                               names=names)]

  z = np.asarray(aggregate_posterior_sample(jnp.asarray(bank["mean"]),
                                            jnp.asarray(bank["log_var"]),
                                            jax.random.PRNGKey(config.seed), count * steps))
  decoded = decode(repeat(batch["image1"], count, steps), z, repeat(layers, count, steps))
  sampled = decoded["flow"].reshape(count, steps, *decoded["flow"].shape[1:])
  paths.append(pictures.save_traversals(os.path.join(folder, "samples.png"),
                                        pictures.flow_to_rgb(sampled), tuple(range(count))))

  paths.append(pictures.save_masks(os.path.join(folder, "masks.png"), batch["image1"][:count],
                                   out["masks"][:count][:, list(dims)], dims, names=names))
  paths.append(pictures.save_structure_tree(os.path.join(folder, "structure.png"),
                                            structure_probabilities(state.params, dims), dims,
                                            names=names))
  titles = ("Latent traversals (flow)", "Latent traversals (frame 2)",
            "Aggregate-posterior samples (flow; rows = test scenes)", "Part masks",
            "Structure")
  html = pictures.write_html(
      os.path.join(folder, "index.html"),
      [(title, os.path.basename(path)) for title, path in zip(titles, paths)],
      {"active_dims": list(dims), **{k: v for k, v in evaluation.items()
                                     if k != "active_dims"}})
  return {"pictures": [str(p) for p in paths], "html": str(html or
                                                          os.path.join(folder, "index.html"))}


def _decoder(s: Setup, variables: dict, dims: tuple[int, ...]
             ) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
  """`(image1 [n, H, W, 3], z [n, L], layers [n, h, w, L] or None) -> PSD.decode` outputs
  (eval mode) for any n, run in batches of `eval.batch_size` (one compiled program)."""
  decode = _jitted_apply(s.model, dims, "decode")
  size = s.config.eval.batch_size

  def run(image1: np.ndarray, z: np.ndarray, layers: np.ndarray | None
          ) -> dict[str, np.ndarray]:
    parts = []
    for start in range(0, len(z), size):
      rows = min(size, len(z) - start)
      pad = lambda a: None if a is None else np.concatenate(
          [a[start:start + rows], np.repeat(a[start:start + 1], size - rows, 0)])
      out = jax.device_get(decode(variables, pad(image1), pad(np.asarray(z, np.float32)),
                                  pad(layers)))
      parts.append({k: np.asarray(v)[:rows] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  return run


# ---------------------------------------------------------------------------------------------
# Profile.
# ---------------------------------------------------------------------------------------------


def profile(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Parameters and Mult-Adds (`core.count_macs`: convolutions, matmuls and the depthwise
  shifted convs, at output resolution) of one scene at the preset's size, eval mode with the
  posterior mean: the whole model without (`macs`, stage 1) and with (`macs_stage2`, over the
  first three dimensions) the structure, and each top-level module (`*_by_module`; the cross
  convolution and the structure step are elementwise, so the modules' MACs sum to `macs`)."""
  model = build_model(config)
  size, latents = config.data.image_size, config.model.num_latents
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  flow = jax.ShapeDtypeStruct((1, size, size, 2), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)},
      jnp.zeros(image.shape), jnp.zeros(flow.shape), train=False))
  dims = tuple(range(min(3, latents)))
  macs = {stage: core.count_macs(
      lambda v, i, f, d=d: model.apply(v, i, f, dimensions=d, train=False, sample=False),
      variables, image, flow) for stage, d in (("stage1", None), ("stage2", dims))}
  # Each module on the input it sees in the model.
  inputs = {"motion_encoder": flow, "image_encoder": image,
            "kernel_decoder": jax.ShapeDtypeStruct((1, latents), jnp.float32),
            "motion_decoder": jax.ShapeDtypeStruct((1, size, size, latents), jnp.float32),
            "image_decoder": jax.ShapeDtypeStruct((1, size, size, 5), jnp.float32)}
  by_module = {name: core.count_macs(
      lambda v, x, name=name: model.apply(
          v, x, method=lambda m, x: getattr(m, name)(x, False)), variables, x)
      for name, x in inputs.items()}
  params = variables["params"]
  return {"image_size": size, "num_latents": latents, "params": core.count_params(params),
          "params_by_module": {k: core.count_params(v) for k, v in params.items()},
          "macs": macs["stage1"], "macs_stage2": macs["stage2"], "macs_by_module": by_module}
