"""A toy trainer on the shared loop and launcher: least squares by SGD on 8-row batches.

The core tests use it in-process (`train`) and as a launcher (`python -m tests.core.toy_app`
from the repository root), so resume, interruption, corrupt checkpoints and user errors are
tested on the same code every paper's trainer runs on, in seconds.
"""

from __future__ import annotations

import os
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lite_jax import core
from lite_jax.core import app

TRUE_W = np.array([1.0, -2.0, 0.5, 3.0], np.float32)


def batch_at(index: int, sleep_s: float = 0.0) -> dict[str, np.ndarray]:
  """Batch `index`: x [8, 4] standard normal, y = x @ TRUE_W + noise [8]."""
  if sleep_s:
    time.sleep(sleep_s)
  rng = np.random.default_rng(index)
  x = rng.standard_normal((8, 4)).astype(np.float32)
  return {"x": x, "y": (x @ TRUE_W + 0.1 * rng.standard_normal(8)).astype(np.float32)}


def step_fn(state: core.TrainState, batch):
  def loss_fn(params):
    return jnp.mean(jnp.square(batch["x"] @ params["w"] - batch["y"]))
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads), {"loss": loss}


def make_loop(config, workdir: str) -> tuple[core.TrainLoop, object, object]:
  """`(loop, abstract state, init thunk)` of the toy run."""
  mesh = core.mesh.from_config(config.mesh)
  tx = optax.sgd(config.learning_rate)
  init = lambda: core.TrainState.create({"w": jnp.zeros(4)}, tx, core.stream_key(config.seed, 1))
  dataset = grain.MapDataset.range(10**6).map(lambda i: batch_at(i, config.step_sleep_s))
  if config.iterator:
    dataset = dataset.to_iter_dataset()
  loop = core.TrainLoop(directory=workdir, step_fn=step_fn, batches=dataset,
                        total_steps=config.total_steps, intervals=config.train, mesh=mesh,
                        config=config, name="toy")
  return loop, jax.eval_shape(init), init


def train(config, workdir: str, stop_after: int | None = None) -> dict:
  loop, abstract, init = make_loop(config, workdir)
  result = core.loop.run(loop, abstract, init, stop_after=stop_after)
  if stop_after is None and result.step < loop.total_steps:  # `train.steps_per_run`
    raise core.StoppedEarly("toy", result.step, loop.total_steps)
  return {"step": result.step, "w": np.asarray(result.state.params["w"]).tolist()}


if __name__ == "__main__":
  app.run({"train": train}, config=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "toy_config.py"))
