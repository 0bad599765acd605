"""Tests for lite_jax.core.optimizer_config: the shared optimizer section of every config."""

import math

import numpy as np
import pytest

from lite_jax import core
from lite_jax.core.errors import UserError


def test_defaults_feed_make_optimizer_as_adam_with_cosine():
  config = core.optimizer_config()
  assert set(config) == {"learning_rate", "schedule", "warmup_steps", "warmup_init_lr",
                         "min_lr", "b1", "b2", "eps", "weight_decay", "clip_norm",
                         "grad_accum_steps"}
  config.total_updates = 4  # what a trainer sets from its step count: the section is unlocked
  tx, schedule = core.make_optimizer(config)
  params = np.array([1.0, -2.0, 0.5], np.float32)
  grads = [np.array([0.3, -1.0, 2.0]), np.array([-0.5, 0.2, 1.0]), np.array([1.0, 1.0, -3.0])]
  state = tx.init(params)
  m, v = np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads, start=1):  # Adam (b1 0.9, b2 0.999, eps 1e-8), numpy
    updates, state = tx.update(g.astype(np.float32), state, params)
    m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
    lr = 0.5 * 1e-3 * (1.0 + math.cos(math.pi * (t - 1) / 4))  # cosine from 1e-3 to 0
    expected = -lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(updates, expected, rtol=1e-5)
    assert float(schedule(t - 1)) == pytest.approx(lr, rel=1e-6)


def test_overrides_sgd_fields_and_extra_keys():
  config = core.optimizer_config(optimizer="sgd", learning_rate=1, nesterov=True,
                                 total_updates=10, extra={"label_smoothing": 0.1})
  # SGD gets momentum, not Adam's b1/b2/eps; an int learning rate is stored as a float.
  assert "b1" not in config and config.momentum == 0.9 and config.nesterov is True
  assert isinstance(config.learning_rate, float) and config.label_smoothing == 0.1
  config.learning_rate = 0.5  # a flag override after creation type-checks
  _, schedule = core.make_optimizer(config)
  assert float(schedule(0)) == pytest.approx(0.5)
  assert core.optimizer_config(optimizer="sgd", b2=0.98).b2 == 0.98  # explicit: kept


@pytest.mark.parametrize("kwargs, message", [
    (dict(learnig_rate=0.1), "optimizer_config has no field 'learnig_rate' (did you mean "
                             "'learning_rate'?); pass paper-specific keys in extra=."),
    (dict(extra={"b1": 0.5}), "optimizer_config's extra key 'b1' is an optimizer field; "
                              "pass it as b1= instead."),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; choose adam or sgd."),
])
def test_bad_keys_are_one_sentence_user_errors(kwargs, message):
  with pytest.raises(UserError) as error:
    core.optimizer_config(**kwargs)
  assert str(error.value) == message
