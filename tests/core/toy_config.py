"""Config of the toy trainer the core tests run (`tests/core/toy_app.py`)."""

import ml_collections

from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0
  c.learning_rate = 0.05
  c.total_steps = 12
  c.step_sleep_s = 0.0  # host time per batch, so a test can signal a run mid-training
  c.iterator = False  # batches from a checkpointable iterator instead of by step index
  c.train = train_config(log_every_steps=4, checkpoint_every_steps=3, eval_every_steps=0,
                         keep_checkpoints=10)
  c.mesh = mesh_config()
  return c
