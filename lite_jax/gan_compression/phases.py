"""What every GAN Compression pipeline shares (ResNet pix2pix/CycleGAN in `train`, GauGAN in
`spade_train`): the two-network train state, the reference's learning-rate policy, the
resumable phase loop, the data-parallel mesh, the search runner and the plots.

A phase is one training run in its own folder (`<workdir>/teacher`, `supernet`, `finetune`)
with orbax checkpoints that record the next batch, so a killed run resumes bit-exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers, subnet_search


# ---------------------------------------------------------------------------------------------
# State and optimisation.
# ---------------------------------------------------------------------------------------------


class GanState(flax.struct.PyTreeNode):
  """Generator(s) and discriminator(s) with their Adam states; `aux` holds state that is not
  trained by gradients (CycleGAN's image history buffers; batch-norm statistics). Random keys
  are `fold_in(key, step)`."""
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


def lr_schedule(phase: ml_collections.ConfigDict, lr: float, steps_per_epoch: int
                ) -> optax.Schedule:
  """The reference's `linear` policy: constant for `nepochs`, then linear decay to 0 over
  `nepochs_decay`, stepped once per epoch."""
  def schedule(count):
    epoch = jnp.asarray(count, jnp.int32) // steps_per_epoch
    return lr * (1.0 - jnp.maximum(0, epoch + 1 - phase.nepochs) / (phase.nepochs_decay + 1.0))
  return schedule


def _adam(phase, lr: float, steps_per_epoch: int) -> optax.GradientTransformation:
  return optax.adam(lr_schedule(phase, lr, steps_per_epoch), b1=phase.beta1, b2=phase.beta2)


def new_state(generator, discriminator, phase, steps_per_epoch, key, aux=None) -> GanState:
  tx_g = _adam(phase, phase.lr, steps_per_epoch)
  tx_d = _adam(phase, phase.lr_d or phase.lr, steps_per_epoch)
  return GanState(step=jnp.zeros((), jnp.int32), generator=generator,
                  discriminator=discriminator, g_opt=tx_g.init(generator),
                  d_opt=tx_d.init(discriminator), key=key, aux=aux or {}, tx_g=tx_g,
                  tx_d=tx_d)


def state_key(config, phase: int) -> jax.Array:
  """A raw uint32 key (checkpointable as a plain array) for a phase's per-step randomness."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), phase)


def phase_steps(phase: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """`(steps_per_epoch, total_steps)` of a phase over `num_examples` training examples."""
  steps_per_epoch = max(1, num_examples // phase.batch_size)
  if num_examples < phase.batch_size:
    raise UserError(f"the training set ({num_examples} images) is smaller than one batch "
                    f"({phase.batch_size}).")
  return steps_per_epoch, steps_per_epoch * (phase.nepochs + phase.nepochs_decay)


# ---------------------------------------------------------------------------------------------
# The resumable phase loop.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
  """One resumable training phase: its folder, fresh state, step and batch stream."""
  name: str
  directory: str
  state: GanState
  step_fn: Callable
  batches: grain.MapDataset
  steps_per_epoch: int
  total_steps: int
  config: ml_collections.ConfigDict
  step_args: tuple = ()


def data_parallel_mesh(config):
  """Data-parallel mesh over `mesh.num_devices` devices (0 = all), after joining a multi-host
  job when `mesh.distributed`."""
  core.initialize_distributed(config.mesh.distributed and not jax.distributed.is_initialized())
  devices = jax.devices()
  if config.mesh.num_devices:
    if config.mesh.num_devices > len(devices):
      raise UserError(f"mesh.num_devices={config.mesh.num_devices} but only {len(devices)} "
                      f"devices are visible.")
    devices = devices[:config.mesh.num_devices]
  return core.make_mesh(devices=devices)


def replicate(tree, mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _restore(directory: str, like: GanState) -> tuple[GanState, int] | None:
  checkpointer = core.Checkpointer(os.path.join(directory, "checkpoints"))
  restored = checkpointer.restore_latest(core.abstract_like(like))
  checkpointer.close()
  if restored is None:
    return None
  state, data_state = restored
  return state, int(data_state["next_batch"])


def finished_state(directory: str, like: GanState, what: str) -> GanState:
  """The final checkpoint of a phase that must already have run."""
  restored = _restore(directory, like)
  if restored is None:
    raise UserError(f"no {what} checkpoint in {directory}; run that phase first (or "
                    f"--mode=pipeline).")
  return restored[0]


def run_phase(phase: Phase, mesh) -> GanState:
  """Trains `phase` to its last step, resuming from its latest checkpoint; returns the state."""
  state, start = phase.state, 0
  restored = _restore(phase.directory, state)
  if restored is not None:
    state, start = restored
    logging.info("%s: resuming at step %d", phase.name, start)
  if start >= phase.total_steps:
    return state
  state, args = replicate(state, mesh), replicate(phase.step_args, mesh)
  checkpointer = core.Checkpointer(os.path.join(phase.directory, "checkpoints"),
                                   max_to_keep=phase.config.keep_checkpoints)
  writer = core.MetricWriter(phase.directory)
  batches = iter(phase.batches.slice(slice(start, phase.total_steps)).to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
  with core.progress(total=phase.total_steps, initial=start, desc=phase.name) as bar:
    for step in range(start + 1, phase.total_steps + 1):
      state, metrics = phase.step_fn(state, core.shard_batch(next(batches), mesh), *args)
      last = step == phase.total_steps
      if step % phase.config.log_every_steps == 0 or last:
        metrics = jax.device_get(metrics)
        core.check_finite(float(metrics["loss"]), step)
        core.check_finite(float(metrics["d_loss"]), step, "discriminator loss")
        lr = lr_schedule(phase.config, phase.config.lr, phase.steps_per_epoch)(step - 1)
        writer.write(step, {**metrics, "learning_rate": lr})
        bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
      if step % phase.config.checkpoint_every_steps == 0 or last:
        checkpointer.save(step, state, data_state={"next_batch": step})
      bar.update(1)
  checkpointer.close()
  writer.close()
  return state


# ---------------------------------------------------------------------------------------------
# Search and reporting.
# ---------------------------------------------------------------------------------------------


def check_weight_files(config) -> None:
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


def run_search(config, workdir: str, space: Sequence[Sequence[int]],
               score_fn: Callable[[tuple[int, ...]], float],
               macs_fn: Callable[[tuple[int, ...]], int],
               profile_fn: Callable[[tuple[int, ...]], dict[str, Any]]) -> dict[str, Any]:
  """Runs `search.method` under `search.budget_macs`; writes `<workdir>/search.json` (the
  choice and every scored candidate) and `search.png`; returns the summary.

  Args:
    score_fn: held-out score of a config (lower is better).
    macs_fn: MACs of a config (called for every candidate: make it cheap).
    profile_fn: `{"macs", "params"}` of the chosen config, for the summary.
  """
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
             "score": result.best_score, "metric": s.metric, **profile_fn(result.best),
             "budget_macs": s.budget_macs, "num_evaluated": len(result.evaluated),
             "search_space_size": subnet_search.space_size(space)}
  record = {**summary, "evaluated": [
      {"channels": layers.format_channels(c), "macs": m, "score": v}
      for c, m, v in result.evaluated]}
  with open(os.path.join(workdir, "search.json"), "w") as f:
    json.dump(record, f, indent=1)
  summary["plot"] = plot_search(result, s, os.path.join(workdir, "search.png"))
  return summary


def chosen_channels(config, workdir: str, check: Callable[[str], tuple[int, ...]]
                    ) -> tuple[int, ...]:
  """`subnet.channels` when set, else the searched sub-network of `<workdir>/search.json`;
  `check` parses a config string and validates it against the super-network."""
  if config.subnet.channels:
    return check(config.subnet.channels)
  path = os.path.join(workdir, "search.json")
  if not os.path.exists(path):
    raise UserError(f"no sub-network chosen: pass --channels=... (or subnet.channels) or run "
                    f"the search first ({path} is missing).")
  with open(path) as f:
    return check(json.load(f)["channels"])


def has_epochs(phase: ml_collections.ConfigDict) -> bool:
  """Whether a phase config trains at all (`nepochs + nepochs_decay > 0`)."""
  return phase.nepochs + phase.nepochs_decay > 0


def run_pipeline(config, workdir: str, modes: dict[str, Callable]) -> dict[str, Any]:
  """Every phase of a pipeline in order, each resuming or skipped when already done: teacher,
  distillation, search (unless `subnet.channels` picks the sub-network), fine-tuning (when
  `finetune` has epochs), export, evaluation.

  Args:
    modes: the pipeline's phase functions by mode name (`train.MODES`, `spade_train.MODES`).

  Returns:
    The evaluation, plus the search's score, metric and candidate count when it searched.
  """
  check_weight_files(config)
  modes["train_teacher"](config, workdir)
  modes["distill"](config, workdir)
  searched = None if config.subnet.channels else modes["search"](config, workdir)
  if has_epochs(config.finetune):
    modes["finetune"](config, workdir)
  modes["export"](config, workdir)
  result = modes["evaluate"](config, workdir)
  if searched is not None:
    result.update(search_score=searched["score"], search_metric=searched["metric"],
                  search_evaluated=searched["num_evaluated"])
  return result


def fid_and_kid(config, real_images: np.ndarray, outputs: dict[str, np.ndarray]
                ) -> dict[str, float]:
  """FID and KID (mean, std) of each `{prefix: images}` against `real_images`, with the
  Inception weights of `eval.fid_weights`; every image set goes through Inception once.

  Args:
    real_images, outputs: `[n, h, w, 3]`, generator range [-1, 1] or already uint8.
  """
  from lite_jax.gan_compression import fid  # Inception is only built when FID is asked for
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


def last_losses(directory: str) -> dict[str, float]:
  records = core.read_metrics(directory)
  return {k: v for k, v in records[-1].items() if k not in ("step", "time")} if records else {}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR (dB) of `[n, h, w, c]` images in [-1, 1]."""
  mse = np.square((a - b) / 2.0).mean(axis=(1, 2, 3))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def plot_comparison(inputs, teacher, student, targets, path: str, count: int) -> str:
  """Rows of input | teacher | compressed (| target) as one PNG."""
  from PIL import Image
  columns = [inputs, teacher, student] + ([targets] if targets is not None else [])
  rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(min(count, len(inputs)))]
  grid = np.concatenate(rows, axis=0)
  pixels = ((np.clip(grid, -1, 1) + 1) * 127.5).astype(np.uint8)
  scale = max(1, 256 // inputs.shape[1])  # small synthetic images are enlarged to be seen
  image = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale),
                                         Image.NEAREST)
  image.save(path)
  return path


def plot_search(result: subnet_search.SearchResult, s, path: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  macs = np.array([m for _, m, _ in result.evaluated]) / 1e9
  scores = np.array([v for _, _, v in result.evaluated])
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.scatter(macs, scores, s=8, alpha=0.6, label="candidates")
  ax.scatter([result.best_macs / 1e9], [result.best_score], c="red", marker="*", s=120,
             label="chosen")
  ax.axvline(s.budget_macs / 1e9, color="grey", linestyle="--", label="budget")
  ax.set_xlabel("GMACs")
  ax.set_ylabel(f"held-out {s.metric} (lower is better)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
