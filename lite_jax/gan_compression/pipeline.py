"""The GAN Compression pipeline, written once over a generator family's recipe (`recipe`):
teacher -> (fixed student ->) once-for-all distillation -> search -> fine-tune -> export ->
evaluate, each phase resumable in its own folder of one workdir.

    <workdir>/teacher/     the teacher: pix2pix (G + conditional D), CycleGAN (G_A, G_B, D_A,
                           D_B) or GauGAN (SPADE G + multi-scale D)
    <workdir>/student/     (the original pipeline only, ResNet) a fixed student distilled from
                           the teacher before the super-network, which then starts from it
    <workdir>/supernet/    once-for-all distillation: a new sub-network sampled every step
    <workdir>/search.json  the chosen sub-network and every scored candidate (+ search.png)
    <workdir>/finetune/    the chosen sub-network trained on with the same losses (only when
                           `finetune.nepochs + finetune.nepochs_decay > 0`)
    <workdir>/export/      the compact generator: sliced (or fine-tuned) weights + generator.json;
                           `compressed.jaxexport` and `teacher.jaxexport` (+ `.json`,
                           `run_exported.py`) to run both with plain JAX; with `export.onnx`,
                           `compressed.onnx` and `teacher.onnx`
    <workdir>/compare.png  input | teacher | compressed (| target) on test images

Every phase trains on `core.loop.run` with the intervals of `config.train` and its own batch
size, epochs and Adam settings (`config.teacher_train`, `student_train`, `distill`,
`finetune`); its step is `(state, batch, frozen) -> (state, metrics)`, `frozen` holding the
fixed networks (the trained teacher, a loss network). A phase that needs an earlier one
restores that phase's final checkpoint into shapes evaluated from the recipe
(`jax.eval_shape`), never re-running or re-initialising it, and restores the teacher at most
once. `config.task` picks the recipe: `pix2pix` and `cyclegan` the ResNet family, `gaugan`
the SPADE family.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from data import gan_images
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.core import export as portable
from lite_jax.gan_compression import layers, onnx_export, standalone, subnet_search
from lite_jax.gan_compression.recipe import (GanState, Recipe, Teacher, abstract_variables,
                                             compact_variables, has_epochs, lr_schedule,
                                             state_maker)
from lite_jax.gan_compression.resnet_recipe import ResnetRecipe
from lite_jax.gan_compression.spade_recipe import SpadeRecipe

RECIPES = {"pix2pix": ResnetRecipe, "cyclegan": ResnetRecipe, "gaugan": SpadeRecipe}


def recipe_for(config: ml_collections.ConfigDict) -> Recipe:
  """The recipe of `config.task`'s generator family."""
  if config.task not in RECIPES:
    raise UserError(f"task must be 'pix2pix', 'cyclegan' or 'gaugan', got {config.task!r}.")
  return RECIPES[config.task](config)


# ---------------------------------------------------------------------------------------------
# Phases: training and restoring.
# ---------------------------------------------------------------------------------------------

# Each phase's optimisation settings in the config, its random stream (`core.stream_key`)
# and what to run when its checkpoint is missing.
HPARAMS = {"teacher": "teacher_train", "student": "student_train", "supernet": "distill",
           "finetune": "finetune"}
STREAMS = {"teacher": 0, "supernet": 1, "finetune": 1, "student": 3}
FIRST = {"teacher": "train the teacher (--mode=train_teacher)",
         "student": "distill the student (--mode=distill)",
         "supernet": "distill the super-network (--mode=distill)",
         "finetune": "fine-tune the sub-network (--mode=finetune)"}


def phase_steps(hparams: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """`(steps_per_epoch, total_steps)` of a phase over `num_examples` training examples."""
  if num_examples < hparams.batch_size:
    raise UserError(f"the training set ({num_examples} images) is smaller than one batch "
                    f"({hparams.batch_size}).")
  steps_per_epoch = num_examples // hparams.batch_size
  return steps_per_epoch, steps_per_epoch * (hparams.nepochs + hparams.nepochs_decay)


def _state_fn(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int
              ) -> Callable[..., GanState]:
  """`(G, D, aux) -> ` phase `name`'s first state."""
  return state_maker(config[HPARAMS[name]], steps_per_epoch,
                     core.stream_key(config.seed, STREAMS[name]))


def _template(recipe: Recipe, name: str, mesh: jax.sharding.Mesh, steps_per_epoch: int,
              channels: Sequence[int] | None = None) -> GanState:
  """The shapes of phase `name`'s state (students at `channels`), replicated over `mesh`;
  the very pytree of the trained state (optimizers included), so what the training compiled
  for it (the checkpoint's finite check) serves its restores too."""
  parts = (recipe.init_teacher(abstract=True) if name == "teacher" else
           recipe.state_parts(*recipe.init_student(channels, abstract=True)))
  abstract = jax.eval_shape(_state_fn(recipe.config, name, steps_per_epoch), *parts)
  replicated = core.mesh.replicated(mesh)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                      abstract)


def finished_state(recipe: Recipe, workdir: str, task, name: str,
                   channels: Sequence[int] | None = None) -> GanState:
  """The final state of phase `name` (students at `channels`), which must have run on
  `task`'s data."""
  steps_per_epoch, _ = phase_steps(recipe.config[HPARAMS[name]], len(task.train1))
  template = _template(recipe, name, core.mesh.from_config(recipe.config.mesh),
                       steps_per_epoch, channels)
  return core.restore_finished(os.path.join(workdir, name, "checkpoints"), template,
                               FIRST[name])


def trained_teacher(recipe: Recipe, workdir: str, task) -> Teacher:
  return recipe.trained_teacher(finished_state(recipe, workdir, task, "teacher"))


def _train(recipe: Recipe, workdir: str, task, name: str, init: Callable[[], tuple],
           step_fn: Callable, frozen: dict[str, Any], channels: Sequence[int] | None = None
           ) -> tuple[GanState, int]:
  """Trains phase `name` (resuming) from `init()`'s `(G, D, aux)`; returns its final state
  and step count."""
  config = recipe.config
  hparams = config[HPARAMS[name]]
  steps_per_epoch, total_steps = phase_steps(hparams, len(task.train1))
  schedule = lr_schedule(hparams.lr, hparams.nepochs, hparams.nepochs_decay, steps_per_epoch)
  mesh = core.mesh.from_config(config.mesh)
  loop = core.TrainLoop(
      directory=os.path.join(workdir, name), step_fn=step_fn,
      batches=recipe.train_batches(task, hparams), total_steps=total_steps,
      intervals=config.train, mesh=mesh, rules=core.mesh.rules_from_config(config.mesh),
      config=config, step_args=(frozen,), name=name,
      learning_rate=lambda step: schedule(step - 1))
  make_state = _state_fn(config, name, steps_per_epoch)
  result = core.loop.run(loop, _template(recipe, name, mesh, steps_per_epoch, channels),
                         lambda: make_state(*init()))
  if result.step < total_steps:  # `train.steps_per_run`: later phases need this one finished
    raise core.loop.StoppedEarly(name, result.step, total_steps)
  return result.state, total_steps


def initial_student(recipe: Recipe, channels: Sequence[int] | None, teacher: Teacher,
                    source: Callable[[], GanState] | None) -> tuple[Any, Any, Any]:
  """`(G, D, aux)` a student phase starts from.

  With a `source` (the previous phase's finished state) its generator, 1x1 convs and
  batch-norm statistics are sliced to `channels` and its D continues. Without one the
  generator starts random or, with `student.init='pruned_teacher'`, as the L1-pruned mobile
  teacher, and D random or the teacher's (`distill.restore_discriminator`, the reference's
  `--restore_D_path`).
  """
  if source is not None:
    previous = source()
    like, _ = recipe.init_student(channels, abstract=True)
    return recipe.state_parts(layers.slice_params(recipe.generator_variables(previous), like),
                              recipe.discriminator_variables(previous))
  g, d = recipe.init_student(channels)
  if recipe.config.student.init == "pruned_teacher":
    g = recipe.pruned_student(g, teacher)
  if recipe.config.distill.restore_discriminator:
    d = teacher.discriminator
  return recipe.state_parts(g, d)


def _train_student(recipe: Recipe, workdir: str, task, name: str, teacher: Teacher,
                   channels: Sequence[int] | None = None,
                   source: Callable[[], GanState] | None = None) -> tuple[GanState, int]:
  """Distills `teacher` into a student phase (`student`, `supernet` or `finetune`)."""
  space = recipe.search_space() if name == "supernet" else None
  frozen = {"teacher": teacher.variables, **recipe.loss_networks(recipe.config.distill_loss)}
  return _train(recipe, workdir, task, name,
                lambda: initial_student(recipe, channels, teacher, source),
                recipe.distill_step(recipe.student(channels), space), frozen, channels)


def last_losses(directory: str) -> dict[str, float]:
  """The last log record of a phase (losses averaged over its window, learning rate)."""
  records = core.read_metrics(directory)
  skip = ("step", "time", "steps_per_s")
  return {k: v for k, v in records[-1].items() if k not in skip} if records else {}


# ---------------------------------------------------------------------------------------------
# Modes.
# ---------------------------------------------------------------------------------------------


def train_teacher(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming) the teacher; returns its size and final losses."""
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  _, steps = _train(recipe, workdir, task, "teacher", recipe.init_teacher,
                    recipe.teacher_step(), recipe.loss_networks(config.teacher_loss))
  return {"phase": "train_teacher", "steps": steps,
          **last_losses(os.path.join(workdir, "teacher")),
          **recipe.profile(recipe.teacher_generator())}


def distill(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Once-for-all distillation of the teacher into the super-network (resuming), after the
  original pipeline's fixed student when `student_train` has epochs."""
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  teacher = trained_teacher(recipe, workdir, task)
  result, source = {"phase": "distill"}, None
  if has_epochs(config.student_train):
    student, steps = _train_student(recipe, workdir, task, "student", teacher)
    result["student_steps"], source = steps, lambda: student
  _, steps = _train_student(recipe, workdir, task, "supernet", teacher, source=source)
  return {**result, "steps": steps,
          "search_space_size": subnet_search.space_size(recipe.search_space()),
          **last_losses(os.path.join(workdir, "supernet")),
          **recipe.profile(recipe.compact_generator())}


def search(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Searches (`search.method`) the sub-network with the best held-out score within
  `search.budget_macs`; writes `<workdir>/search.json` (the choice and every scored
  candidate) and `search.png`; returns the summary."""
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  space = recipe.search_space()
  macs_fn = functools.lru_cache(maxsize=None)(recipe.subnet_macs)  # called for every candidate
  score_fn = _Scoring(recipe, workdir, task, finished_state(recipe, workdir, task, "supernet"))
  s = config.search
  if s.method == "exhaustive":
    result = subnet_search.exhaustive_search(space, score_fn, macs_fn, s.budget_macs)
  elif s.method == "evolution":
    result = subnet_search.evolution_search(
        space, score_fn, macs_fn, s.budget_macs, rng=np.random.default_rng(config.seed),
        population_size=s.population_size, generations=s.generations,
        parent_ratio=s.parent_ratio, mutation_ratio=s.mutation_ratio,
        mutate_prob=s.mutate_prob)
  else:
    raise UserError(f"search.method must be 'exhaustive' or 'evolution', got {s.method!r}.")
  summary = {"phase": "search", "channels": layers.format_channels(result.best),
             "score": result.best_score, "metric": s.metric, "macs": macs_fn(result.best),
             "params": recipe.subnet_params(result.best), "budget_macs": s.budget_macs,
             "num_evaluated": len(result.evaluated),
             "search_space_size": subnet_search.space_size(space)}
  record = {**summary, "evaluated": [
      {"channels": layers.format_channels(c), "macs": m, "score": v}
      for c, m, v in result.evaluated]}
  with open(os.path.join(workdir, "search.json"), "w") as f:
    json.dump(record, f, indent=1)
  summary["plot"] = plot_search(result, s, os.path.join(workdir, "search.png"))
  return summary


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the chosen sub-network on with the distillation losses (resuming), from the
  super-network's slice."""
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  channels = chosen_channels(recipe, workdir)
  _, steps = _train_student(recipe, workdir, task, "finetune",
                            trained_teacher(recipe, workdir, task), channels,
                            lambda: finished_state(recipe, workdir, task, "supernet"))
  return {"phase": "finetune", "channels": layers.format_channels(channels), "steps": steps,
          **last_losses(os.path.join(workdir, "finetune"))}


def export(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Writes the compact generator at the chosen config: `<workdir>/export/` holds
  `generator.json` (the generator's fields) and its variables, the fine-tuned ones when
  `finetune` has epochs, else the super-network's sliced to it (then, for SPADE, batch norm
  re-calibrated); `standalone.load_generator` reads it back without the super-network.

  Beside them, the compressed generator and the teacher as portable artifacts
  (`lite_jax.core.export`, symbolic batch): `compressed.jaxexport` and `teacher.jaxexport`
  with their `.json` signatures and `run_exported.py` (plain JAX, no `lite_jax`); with
  `export.onnx`, also `compressed.onnx` and `teacher.onnx` (`onnx_export`, needs jax2onnx).
  The artifacts' inputs are the recipe's `portable_inputs`.
  """
  if config.export.onnx:
    onnx_export.require_converter()  # before restoring anything
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  channels = chosen_channels(recipe, workdir)
  generator = recipe.compact_generator(channels)
  source = (finished_state(recipe, workdir, task, "finetune", channels)
            if has_epochs(config.finetune) else finished_state(recipe, workdir, task, "supernet"))
  variables = layers.slice_params(compact_variables(recipe.generator_variables(source)),
                                  abstract_variables(generator, recipe.input_shape))
  directory = os.path.join(workdir, "export")
  variables = recipe.export_variables(generator, variables, task)
  standalone.save_generator(directory, generator, variables)
  teacher = trained_teacher(recipe, workdir, task)
  result = {"phase": "export", "path": directory, "channels": layers.format_channels(channels),
            **recipe.profile(generator)}
  for name, module, params, what in (
      ("compressed", generator, variables, f"compressed generator {result['channels']}"),
      ("teacher", teacher.generator, teacher.variables, "teacher generator")):
    fn, inputs = recipe.portable_inputs(module, params)
    profile = recipe.profile(module)
    result[f"{name}_jaxexport"] = portable.export(
        fn, inputs, directory, name, description=f"GAN Compression {config.task} {what}",
        metadata={"task": config.task, "channels": layers.format_channels(module.channels),
                  "separable": module.separable, **profile})
    if config.export.onnx:  # ONNX models take the generator's own input (GauGAN: the map)
      _, height, width, channels = recipe.input_shape
      result[f"{name}_onnx"] = onnx_export.export_onnx(
          module, params, os.path.join(directory, f"{name}.onnx"), height=height,
          width=width, input_channels=channels)
  return result


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Teacher vs exported generator on the test split; writes `<workdir>/compare.png`.

  Metrics: MACs and parameters of both and their ratio; `l1_to_teacher` of the compressed
  outputs; with targets, `l1` and `psnr` of both; with `eval.fid_weights`, FID and KID (mean
  and std over subsets) of both against the real test images.
  """
  recipe = recipe_for(config)
  task = recipe.load_task(workdir)
  teacher = trained_teacher(recipe, workdir, task)
  compressed = standalone.load_generator(os.path.join(workdir, "export"))
  num_images, metrics, columns, fid_sets = recipe.evaluate_outputs(task, teacher, compressed)
  result: dict[str, Any] = {"phase": "evaluate", "num_images": num_images,
                            "channels": layers.format_channels(compressed[0].channels),
                            **recipe.profile(teacher.generator, "teacher_"),
                            **recipe.profile(compressed[0])}
  result["macs_ratio"] = result["teacher_macs"] / result["macs"]
  result.update(metrics)
  if fid_sets is not None:
    result.update(fid_and_kid(config, *fid_sets))
  result["plot"] = plot_comparison(columns, os.path.join(workdir, "compare.png"),
                                   config.eval.plot_examples)
  return result


def profile(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """MACs and parameters (the reference's counter, one image) of the teacher, the
  super-network and, when `subnet.channels` is set, that sub-network (`macs`/`params`; else
  the teacher's). Needs no data."""
  recipe = recipe_for(config)
  result = {"task": config.task, **recipe.input_description(),
            **recipe.profile(recipe.teacher_generator(), "teacher_"),
            **recipe.profile(recipe.compact_generator(), "supernet_")}
  if config.subnet.channels:
    channels = recipe.check_channels(config.subnet.channels)
    result["channels"] = layers.format_channels(channels)
    result.update(recipe.profile(recipe.compact_generator(channels)))
    result["macs_ratio"] = result["teacher_macs"] / result["macs"]
  else:
    result.update(macs=result["teacher_macs"], params=result["teacher_params"])
  return result


def pipeline(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Every phase in order, each resuming or skipped when already done: teacher, distillation,
  search (unless `subnet.channels` picks the sub-network), fine-tuning (when `finetune` has
  epochs), export, evaluation.

  Returns:
    The evaluation, plus the search's score, metric and candidate count when it searched.
  """
  check_weight_files(config)
  MODES["train_teacher"](config, workdir)
  MODES["distill"](config, workdir)
  searched = None if config.subnet.channels else MODES["search"](config, workdir)
  if has_epochs(config.finetune):
    MODES["finetune"](config, workdir)
  MODES["export"](config, workdir)
  result = MODES["evaluate"](config, workdir)
  if searched is not None:
    result.update(search_score=searched["score"], search_metric=searched["metric"],
                  search_evaluated=searched["num_evaluated"])
  return result


# The launcher's table (`core.app.run`); the first mode is the default.
MODES = {"pipeline": pipeline, "train_teacher": train_teacher, "distill": distill,
         "search": search, "finetune": finetune, "export": export, "evaluate": evaluate,
         "profile": lambda config, workdir: profile(config)}


def run(mode: str, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs one mode of `MODES` (what `--mode=` runs in `experiments.gan_compress`)."""
  if mode not in MODES:
    raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
  return MODES[mode](config, workdir)


# ---------------------------------------------------------------------------------------------
# Search and reporting.
# ---------------------------------------------------------------------------------------------


def check_weight_files(config: ml_collections.ConfigDict) -> None:
  """Fails before hours of training, not after: the FID Inception weights the search or the
  evaluation will need must exist."""
  path = config.eval.fid_weights
  if path and not os.path.isfile(path):
    raise UserError(f"eval.fid_weights={path!r} is not a file; pass the path of "
                    f"pt_inception-2015-12-05-6726825d.pth.")
  if config.search.metric == "fid" and not config.subnet.channels and not path:
    raise UserError("search.metric='fid' needs the FID Inception weights "
                    "(pt_inception-2015-12-05-6726825d.pth): set eval.fid_weights, or use "
                    "search.metric='l1'.")


class _Scoring:
  """Scores sub-networks of one trained super-network on the held-out split (the first
  `search.num_images`, 0 = all).

  Metrics (lower is better): `l1` — mean |G(x) - target| over images, the target being the
  recipe's (`search_targets`: the real image, or the teacher's output for unpaired data);
  `fid` — FID of the outputs against the recipe's real images (`search_reals`), with the
  Inception weights of `eval.fid_weights`.
  """

  def __init__(self, recipe: Recipe, workdir: str, task, supernet: GanState):
    config = recipe.config
    self.metric = config.search.metric
    if self.metric not in ("l1", "fid"):
      raise UserError(f"search.metric must be 'l1' or 'fid', got {self.metric!r}.")
    held_out = task.train2
    if config.search.num_images:
      held_out = gan_images.Subset(held_out,
                                   np.arange(min(config.search.num_images, len(held_out))))
    self.batches = list(recipe.eval_batches(task, held_out, config.search.batch_size))
    if not self.batches:
      raise UserError("the held-out search split is empty; raise data.holdout.")
    self.run = recipe.subnet_runner(supernet, task)
    self.targets = recipe.search_targets(task, self.batches,
                                         lambda: trained_teacher(recipe, workdir, task))
    self.fid = None
    if self.metric == "fid":
      from lite_jax.gan_compression import fid  # Inception only when FID is asked for
      self.fid = fid.FidEvaluator(config.eval.fid_weights, batch_size=config.eval.batch_size)
      self.real_stats = self.fid.statistics(recipe.search_reals(task, held_out))

  def __call__(self, channels: Sequence[int]) -> float:
    run = self.run(channels)
    outputs = [(np.asarray(run(batch)), n) for batch, n in self.batches]
    if self.fid is not None:
      return float(self.fid.fid(np.concatenate([o[:n] for o, n in outputs]), self.real_stats))
    total = sum(float(np.abs(o[:n] - np.asarray(t)[:n]).mean(axis=(1, 2, 3)).sum())
                for (o, n), t in zip(outputs, self.targets))
    return total / sum(n for _, n in outputs)


def chosen_channels(recipe: Recipe, workdir: str) -> tuple[int, ...]:
  """`subnet.channels` when set, else the searched sub-network of `<workdir>/search.json`,
  validated against the super-network."""
  if recipe.config.subnet.channels:
    return recipe.check_channels(recipe.config.subnet.channels)
  path = os.path.join(workdir, "search.json")
  if not os.path.exists(path):
    raise UserError(f"no sub-network chosen: pass --channels=... (or subnet.channels) or run "
                    f"the search first ({path} is missing).")
  with open(path) as f:
    return recipe.check_channels(json.load(f)["channels"])


def fid_and_kid(config: ml_collections.ConfigDict, real_images: np.ndarray,
                outputs: dict[str, np.ndarray]) -> dict[str, float]:
  """FID and KID (mean, std) of each `{prefix: images}` against `real_images`, with the
  Inception weights of `eval.fid_weights`; every image set goes through Inception once.

  Args:
    real_images, outputs: `[n, h, w, 3]`, generator range [-1, 1] or already uint8.
  """
  from lite_jax.gan_compression import fid  # Inception only when FID is asked for
  evaluator = fid.FidEvaluator(config.eval.fid_weights, batch_size=config.eval.batch_size)
  real = evaluator.features(real_images)
  real_stats = fid.feature_statistics(real)
  result = {}
  for prefix, images in outputs.items():
    fake = evaluator.features(images)
    result[f"{prefix}fid"] = float(fid.frechet_distance(*real_stats,
                                                        *fid.feature_statistics(fake)))
    result[f"{prefix}kid"], result[f"{prefix}kid_std"] = (
        float(v) for v in fid.kernel_inception_distance(real, fake, seed=config.seed))
  return result


def plot_comparison(columns: Sequence[np.ndarray], path: str, count: int) -> str:
  """The first `count` rows of `columns` (`[n, h, w, 3]` in [-1, 1] each, e.g. input | teacher
  | compressed | target) side by side as one PNG."""
  from PIL import Image
  rows = [np.concatenate([c[i] for c in columns], axis=1)
          for i in range(min(count, len(columns[0])))]
  grid = np.concatenate(rows, axis=0)
  pixels = ((np.clip(grid, -1, 1) + 1) * 127.5).astype(np.uint8)
  scale = max(1, 256 // columns[0].shape[1])  # small synthetic images are enlarged to be seen
  image = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale),
                                         Image.NEAREST)
  image.save(path)
  return path


def plot_search(result: subnet_search.SearchResult, s: ml_collections.ConfigDict,
                path: str) -> str:
  """Every scored candidate's held-out score against its GMACs, the chosen one and the
  budget, as one PNG."""
  macs = np.array([m for _, m, _ in result.evaluated]) / 1e9
  scores = np.array([v for _, _, v in result.evaluated])
  fig, ax = core.plots.subplots(figsize=(5, 3.5))
  ax.scatter(macs, scores, s=8, alpha=0.6, label="candidates")
  ax.scatter([result.best_macs / 1e9], [result.best_score], c="red", marker="*", s=120,
             label="chosen")
  ax.axvline(s.budget_macs / 1e9, color="grey", linestyle="--", label="budget")
  ax.set_xlabel("GMACs")
  ax.set_ylabel(f"held-out {s.metric} (lower is better)")
  ax.legend()
  return core.plots.save(fig, path)
