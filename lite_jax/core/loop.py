"""The one training loop: every trainer (each paper, each GAN phase) runs on `loop.run`.

A trainer brings its state, its step and its batches; the loop does the rest, the same way
for all of them:

* **Resume.** The newest good checkpoint under `<directory>/checkpoints` is restored into the
  abstract state's shapes, dtypes and shardings (nothing is initialized first); the batch
  stream continues where that checkpoint stopped, so an interrupted and resumed run is
  bit-identical to an uninterrupted one. Without a checkpoint the state is initialized.
* **One compiled step.** The step is jitted once, the state donated and kept in its
  shardings, batches sharded over the mesh's `data` axis.
* **Intervals** from one set of keys: `log_every_steps` (summed metrics -> metrics.jsonl,
  TensorBoard, the progress bar), `eval_every_steps` (the validation hook, also at the last
  step; 0 = only there) and `checkpoint_every_steps` (also at the last step), keeping
  `keep_checkpoints`; `steps_per_run` (0 = all) stops a run after that many steps and a
  checkpoint, for schedulers that limit a job's time: rerun to continue.
* **Never a broken checkpoint.** Before anything is saved the window's metrics and the state
  itself are checked to be finite; a NaN stops training with one sentence and the earlier
  checkpoints intact.
* **Interruptions.** SIGINT (Ctrl-C) or SIGTERM finishes the running step, saves it, waits for
  the save and raises `Interrupted`, which the launcher (`core.app`) turns into one line and
  exit status 130 / 143. A second Ctrl-C stops without saving the step reached (a save
  already under way is finished); the last complete checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lite_jax.core import mesh as mesh_lib
from lite_jax.core.checkpoint import Checkpointer, all_finite
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import MetricWriter, progress

Metrics = Mapping[str, float]


def train_config(*, log_every_steps: int = 100, checkpoint_every_steps: int = 1000,
                 keep_checkpoints: int = 3, eval_every_steps: int | None = None
                 ) -> ml_collections.ConfigDict:
  """The `config.train` section every experiment config starts from: the loop's intervals.

  `eval_every_steps` (only for trainers with a validation hook; 0 = at the end only);
  `steps_per_run` > 0 stops a run after that many steps and their checkpoint (a time-limited
  job), and rerunning the same command continues. A paper adds its own keys (batch size,
  epochs) to the section.
  """
  c = ml_collections.ConfigDict(dict(
      log_every_steps=log_every_steps, checkpoint_every_steps=checkpoint_every_steps,
      keep_checkpoints=keep_checkpoints, steps_per_run=0))
  if eval_every_steps is not None:
    c.eval_every_steps = eval_every_steps
  return c


class NonFiniteError(UserError):
  """Training produced NaN/inf; the checkpoints written before it are kept."""


class Interrupted(Exception):
  """SIGINT or SIGTERM stopped a run; `step` is the last step saved (None: none this run)."""

  def __init__(self, signum: int, step: int | None = None):
    self.signum, self.step = signum, step
    where = f" at step {step}" if step is not None else ""
    super().__init__(f"interrupted{where}; rerun the same command to resume.")

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StoppedEarly(Exception):
  """A run stopped after `train.steps_per_run` steps (and their checkpoint) short of its last
  step, so what needs the finished state (a later phase, the test metrics) must wait."""

  def __init__(self, name: str, step: int, total_steps: int):
    self.step, self.total_steps = step, total_steps
    super().__init__(f"{name} stopped at step {step} of {total_steps} (train.steps_per_run); "
                     f"rerun the same command to continue.")


def check_finite(value: float, step: int, what: str = "loss") -> None:
  if not math.isfinite(value):
    raise NonFiniteError(
        f"the {what} became {value} at step {step}; lower the learning rate or check the data "
        f"(checkpoints written before this step are kept).")


def mean_over_steps(sums: Metrics, steps: int) -> dict[str, float]:
  """The default summary of a log window: each step metric's mean over the window's steps."""
  return {k: v / steps for k, v in sums.items()}


@dataclasses.dataclass
class TrainLoop:
  """One training run (a paper's training, or one phase of a pipeline).

  Attributes:
    directory: the run's folder: `checkpoints/` (orbax) and `metrics.jsonl` go here.
    step_fn: `(state, batch, *step_args) -> (state, metrics)`, not jitted (the loop jits it);
      `metrics` is a dict of scalars, summed over each log window and given to `summarize`.
    batches: a `grain.MapDataset` whose item i is batch i (resumed by position), or a
      `grain.IterDataset` whose iterator is checkpointable (`get_state`/`set_state`).
    total_steps: the step number training ends at.
    intervals: the fields of `train_config()`: `log_every_steps`, `checkpoint_every_steps`,
      `keep_checkpoints`, `steps_per_run` and, with `evaluate`, `eval_every_steps` (usually
      `config.train`).
    mesh: the device mesh; `rules`: the logical-axis rules active while stepping.
    config: the experiment config, saved with every checkpoint.
    step_args: fixed arguments after the batch (a frozen teacher, loss-network weights),
      placed replicated on the mesh once.
    summarize: `(window sums, window steps) -> record` written at each log step.
    learning_rate: `step -> learning rate` used by that step, logged with the record.
    evaluate: `state -> validation metrics`, run every `eval_every_steps` and at the end.
    per_process_batches: batches already hold only this process's rows (else every process
      loads the global batch and keeps its slice).
    name: the progress bar's label.
  """
  directory: str
  step_fn: Callable[..., tuple[Any, dict[str, jax.Array]]]
  batches: grain.MapDataset | grain.IterDataset
  total_steps: int
  intervals: Any
  mesh: jax.sharding.Mesh
  rules: mesh_lib.Rules = ()
  config: Any = None
  step_args: tuple = ()
  summarize: Callable[[Metrics, int], dict[str, float]] = mean_over_steps
  learning_rate: Callable[[int], Any] | None = None
  evaluate: Callable[[Any], dict[str, Any]] | None = None
  per_process_batches: bool = False
  name: str = "train"

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.directory, "checkpoints")


@dataclasses.dataclass
class LoopResult:
  """What a run leaves: the final state and step, where this run started, the last log
  record and validation, the metric totals over all logged steps and the training time."""
  state: Any
  step: int
  first_step: int
  record: dict[str, Any]
  validation: dict[str, Any]
  totals: dict[str, float]
  elapsed_s: float


class _Batches:
  """A loop's batch stream at a step, and the data state that resumes it there."""

  def __init__(self, batches, start: int, total: int, data_state: Mapping[str, Any] | None):
    self._step_indexed = isinstance(batches, grain.MapDataset)
    if self._step_indexed:
      start = int(data_state["next_batch"]) if data_state else start
      self._iterator = iter(batches.slice(slice(start, total)).to_iter_dataset(
          grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
    else:
      self._iterator = iter(batches)
      if data_state:
        self._iterator.set_state(data_state["iterator"])

  def __next__(self):
    return next(self._iterator)

  def state(self, step: int) -> dict[str, Any]:
    if self._step_indexed:
      return {"next_batch": step}
    return {"iterator": self._iterator.get_state()}


class _StopSignals:
  """While active, SIGINT/SIGTERM only record a stop request; a second one stops at once."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    if self.signum is not None:  # asked twice: give up on a clean stop
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      raise Interrupted(signum)
    self.signum = signum
    logging.warning("stopping after this step (signal %d); send it again to stop at once.",
                    signum)

  def __enter__(self) -> "_StopSignals":
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _shardings(abstract: Any, mesh: jax.sharding.Mesh) -> Any:
  fallback = mesh_lib.replicated(mesh)
  return jax.tree.map(lambda a: getattr(a, "sharding", None) or fallback, abstract)


_accumulate = jax.jit(lambda sums, metrics: jax.tree.map(jnp.add, sums, metrics))


def _restore_or_init(checkpointer: Checkpointer, abstract_state: Any,
                    init_state: Callable[[], Any], shardings: Any
                    ) -> tuple[Any, dict[str, Any] | None]:
  """`(state, data_state)` of the newest good checkpoint, or `(init_state(), None)`."""
  restored = checkpointer.restore_latest(abstract_state)
  if restored is not None:
    return restored
  return jax.device_put(init_state(), shardings), None


def run(loop: TrainLoop, abstract_state: Any, init_state: Callable[[], Any], *,
        stop_after: int | None = None) -> LoopResult:
  """Runs `loop` to `loop.total_steps`, resuming from its latest good checkpoint.

  Args:
    loop: what to train.
    abstract_state: the state's `jax.ShapeDtypeStruct`s, e.g. from
      `core.mesh.abstract_sharded_state` or `jax.eval_shape`; leaves without a sharding are
      replicated over the mesh.
    init_state: builds the initial state; called only when there is no checkpoint.
    stop_after: stop (after a checkpoint) once this run has taken that many steps, as a
      preempted job would (default: `intervals.steps_per_run`, 0 = never).

  Returns:
    The final state and what was logged (`LoopResult`).

  Raises:
    NonFiniteError: a metric or the state became NaN/inf (nothing non-finite was saved).
    Interrupted: SIGINT/SIGTERM; the step reached was saved.
  """
  stop_after = stop_after or loop.intervals.steps_per_run or None
  shardings = _shardings(abstract_state, loop.mesh)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
  start_time = time.time()
  with Checkpointer(loop.checkpoint_dir, max_to_keep=loop.intervals.keep_checkpoints) as ckpt, \
       mesh_lib.activate(loop.mesh, loop.rules):
    state, data_state = _restore_or_init(ckpt, abstract_state, init_state, shardings)
    first_step = int(jax.device_get(_step_of(state, data_state)))
    if data_state is not None and first_step < loop.total_steps:
      logging.warning("%s: resuming from step %d of %s (use a fresh --workdir to start over)",
                      loop.name, first_step, ckpt.directory)
    last_step = loop.total_steps if stop_after is None else min(loop.total_steps,
                                                                first_step + stop_after)
    result = LoopResult(state, first_step, first_step, {}, {}, {}, 0.0)
    if first_step >= last_step:
      return result
    with MetricWriter(loop.directory) as writer, _StopSignals() as stop:
      _run_steps(loop, result, ckpt, writer, stop, shardings,
                 _Batches(loop.batches, first_step, loop.total_steps, data_state), last_step)
  result.elapsed_s = time.time() - start_time
  return result


def _step_of(state: Any, data_state: Mapping[str, Any] | None) -> Any:
  """The step a state is at: its `step` field, else the saved batch position."""
  if hasattr(state, "step"):
    return state.step
  return int(data_state["next_batch"]) if data_state else 0


def _run_steps(loop: TrainLoop, result: LoopResult, ckpt: Checkpointer, writer: MetricWriter,
               stop: _StopSignals, shardings: Any, batches: _Batches, last_step: int) -> None:
  intervals = loop.intervals
  eval_every = intervals.get("eval_every_steps", 0)
  replicated = mesh_lib.replicated(loop.mesh)
  step_fn = jax.jit(loop.step_fn, out_shardings=(shardings, replicated), donate_argnums=0)
  step_args = jax.device_put(loop.step_args, replicated)
  # One compiled schedule, not an eager dispatch (and compile) of each of its jnp ops.
  learning_rate = jax.jit(loop.learning_rate) if loop.learning_rate is not None else None
  state, sums, window = result.state, None, 0
  window_start = time.time()

  def fetch_sums(step: int) -> dict[str, float]:
    host = {k: float(v) for k, v in jax.device_get(sums).items()}
    for name, value in host.items():
      check_finite(value, step, name)
    return host

  def save(step: int) -> None:
    if not all_finite(state):
      raise NonFiniteError(f"the train state holds NaN or inf after step {step}; lower the "
                           f"learning rate or check the data (checkpoints written before this "
                           f"step are kept).")
    ckpt.save(step, state, data_state=batches.state(step),
              config=loop.config.to_dict() if loop.config is not None else None)

  with progress(total=loop.total_steps, initial=result.first_step, desc=loop.name) as bar:
    for step in range(result.first_step + 1, last_step + 1):
      batch = next(batches)
      if not loop.per_process_batches:
        batch = mesh_lib.process_rows(batch)
      state, metrics = step_fn(state, mesh_lib.shard_batch(batch, loop.mesh), *step_args)
      sums = metrics if sums is None else _accumulate(sums, metrics)
      window += 1
      bar.update()
      last = step == last_step
      log = step % intervals.log_every_steps == 0 or last
      checkpoint = step % intervals.checkpoint_every_steps == 0 or last
      record = {}
      if log:
        host = fetch_sums(step)
        now = time.time()
        record.update(loop.summarize(host, window))
        record["steps_per_s"] = window / max(now - window_start, 1e-9)
        if learning_rate is not None:
          record["learning_rate"] = float(learning_rate(step))
        for k, v in host.items():
          result.totals[k] = result.totals.get(k, 0.0) + v
        sums, window, window_start = None, 0, now
        loss_key = next((k for k in record if "loss" in k), None)
        if loss_key:
          bar.set_postfix({loss_key: f"{record[loss_key]:.3f}"})
      if loop.evaluate is not None and ((eval_every and step % eval_every == 0)
                                        or step == loop.total_steps):
        result.validation = loop.evaluate(state)
        record.update(result.validation)
      if record:
        writer.write(step, record)
        result.record = record
      stop_now = _stop_requested(stop, log or checkpoint)
      if checkpoint or stop_now:
        if sums is not None:
          fetch_sums(step)  # the window so far must be finite before its state is saved
        save(step)
      if stop_now:
        ckpt.wait()
        raise Interrupted(stop_now, step)
  result.state, result.step = state, last_step


def _stop_requested(stop: _StopSignals, sync_point: bool) -> int:
  """The signal asking to stop, or 0. With several processes all must stop at the same step,
  so the request is shared at log and checkpoint steps only."""
  if jax.process_count() == 1:
    return stop.signum or 0
  if not sync_point:
    return 0
  signums = multihost_utils.process_allgather(np.int32(stop.signum or 0))
  return int(np.max(signums))
