"""Checkpointing with orbax: train state, data-iterator position and config in one step dir.

A killed run resumes exactly where it stopped: `restore_latest` returns the train state and
the data iterator's state saved with it, so the next batch and the next step are the same as
if the run had never stopped.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lite_jax.core.errors import UserError


def _flat_by_name(tree: Any) -> dict[str, Any]:
  """Leaves keyed 'params/dense/kernel', the same for orbax metadata and live pytrees."""
  def part(key):
    for attr in ("key", "idx", "name"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  leaves = jax.tree_util.tree_flatten_with_path(flax.serialization.to_state_dict(tree))[0]
  return {"/".join(part(k) for k in path): leaf for path, leaf in leaves}


def _shape_mismatches(saved: Any, target: Any) -> list[str]:
  """'path: saved [..] vs model [..]' for every leaf whose shape differs (or is missing)."""
  saved_flat = _flat_by_name(saved)
  problems = []
  for name, leaf in _flat_by_name(target).items():
    if name not in saved_flat:
      problems.append(f"{name}: missing from the checkpoint")
    elif tuple(saved_flat[name].shape) != tuple(leaf.shape):
      problems.append(f"{name}: checkpoint {list(saved_flat[name].shape)} vs model "
                      f"{list(leaf.shape)}")
  return problems


class Checkpointer:
  """Saves and restores `(state, data_state, config)` under `directory/<step>/`.

  Args:
    directory: where step folders live (created if missing).
    max_to_keep: how many of the latest checkpoints survive (`None` keeps all).
    save_interval_steps: `save` is a no-op unless `step` is a multiple of this (or forced).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 5,
               save_interval_steps: int = 1, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
        enable_async_checkpointing=async_save,
        create=True)
    # Handlers are named up front so that a fresh process can read metadata and restore.
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, data_state: Mapping[str, Any] | None = None,
           config: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Saves asynchronously; returns whether a checkpoint was started at this step."""
    return self._manager.save(
        int(step), force=force,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(dict(data_state or {})),
            config=ocp.args.JsonSave(dict(config or {}))))

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises `UserError` if the checkpoint at `step` was written by a differently shaped model."""
    saved = self._manager.item_metadata(step)["state"]
    problems = _shape_mismatches(saved, abstract_state)
    if problems:
      shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3
                                         else "")
      raise UserError(f"the checkpoint at {self.directory}/{step} does not fit this model "
                      f"({shown}); use a fresh workdir or the config it was trained with.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """`(state, data_state)` at `step`; `abstract_state` gives shapes, dtypes and shardings."""
    self.check_compatible(step, abstract_state)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["data"] or {})

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """The latest `(state, data_state)`, or `None` when the directory holds no checkpoint."""
    step = self.latest_step
    return None if step is None else self.restore(step, abstract_state)

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    """The config saved with a checkpoint (the latest when `step` is None)."""
    step = self.latest_step if step is None else step
    if step is None:
      raise UserError(f"no checkpoint in {self.directory}; train first or pass a workdir "
                      f"that holds one.")
    return dict(self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"] or {})

  def average_params(self, abstract_state: Any, last_n: int,
                     params_of=lambda state: state.params) -> Any:
    """Mean of `params_of(state)` over the last `last_n` checkpoints (fairseq averaging)."""
    steps = self.all_steps()[-last_n:]
    if not steps:
      raise UserError(f"no checkpoint in {self.directory} to average.")
    total = None
    for step in steps:
      params = params_of(self.restore(step, abstract_state)[0])
      params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
      total = params if total is None else jax.tree.map(jnp.add, total, params)
    reference = params_of(abstract_state)
    return jax.tree.map(lambda s, ref: (s / len(steps)).astype(ref.dtype), total, reference)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """`ShapeDtypeStruct`s (with shardings, where the leaves have them) for a concrete tree."""
  def leaf(x):
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree)
