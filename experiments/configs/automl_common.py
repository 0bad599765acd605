"""Config pieces the design-automation presets share (HAQ, AMC, ProxylessNAS): the classifier
data and the SGD training phases of their classifiers."""

from __future__ import annotations

import ml_collections

from lite_jax.core.loop import train_config
from lite_jax.core.train import optimizer_config


def sgd_phase(epochs: float, batch_size: int, learning_rate: float, weight_decay: float
              ) -> ml_collections.ConfigDict:
  """A training phase on core.loop: SGD with momentum 0.9 and a cosine lr to 0 (the
  references' fine-tuning optimizer; `core.make_optimizer` fields)."""
  c = train_config(log_every_steps=100, checkpoint_every_steps=1000, keep_checkpoints=2)
  c.num_epochs = epochs
  c.batch_size = batch_size
  c.optim = optimizer_config(optimizer="sgd", learning_rate=learning_rate,
                             weight_decay=weight_decay)
  return c


def data_config(*, holdout_size: int, eval_batch_size: int = 256) -> ml_collections.ConfigDict:
  """`config.data` of an image classifier (read by `lite_jax.automl.training.load_data`),
  ImageNet at 224 px from a local folder until a preset says otherwise."""
  c = ml_collections.ConfigDict()
  # digits | synthetic | tfds:cifar10 | tfds:imagenet2012 | folder:PATH (see
  # data/image_classification.py); `subset` keeps the reference's ImageNet-100 classes.
  c.source = "folder:"
  c.subset = ""
  c.data_dir = ""  # prepared tfds datasets / the ArrayRecord copy ('' = <workdir>/data)
  c.image_size = 224
  c.holdout_size = holdout_size  # held out from train: the search's reward / update data
  c.eval_batch_size = eval_batch_size
  return c
