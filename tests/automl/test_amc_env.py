"""AMC's environment on a hand-made network: the clamp, the budget, states, rewards, episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lite_jax.automl import amc_env, ddpg
from lite_jax.automl.pruning import PrunableLayer
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo


def _conv(path, c_in, c_out, hw, index, k=3, depthwise=False):
  groups = c_in if depthwise else 1
  n = k * k * (c_in // groups) * c_out
  return LayerInfo(path, "conv", c_in, c_out, k, 1, groups, hw, hw, n, n * hw, index)


@pytest.fixture(scope="module")
def net():
  """image -> a (3->32) -> b (32->32) -> depthwise d (32) -> c 1x1 (32->32) -> fc (32->10)."""
  layers = [_conv("a/conv", 3, 32, 64, 0), _conv("b/conv", 32, 32, 64, 1),
            _conv("d/conv", 32, 32, 64, 2, depthwise=True), _conv("c/conv", 32, 32, 64, 3, k=1),
            LayerInfo("fc", "dense", 32, 10, 1, 0, 1, 1, 1, 320, 320, 4)]
  plan = [PrunableLayer(layers[0], None), PrunableLayer(layers[1], "a"),
          PrunableLayer(layers[3], "b", ("d",)), PrunableLayer(layers[4], "c")]
  return amc_env.FlopsModel(layers, plan)


def _macs_by_hand(widths):
  """MACs of the hand-made net with kept inputs (3, wb, wc, wf), a numpy-free reference."""
  _, wb, wc, wf = widths
  return (9 * 3 * wb * 64 + 9 * wb * wc * 64 + 9 * wc * 64 + wc * wf * 64 + wf * 10)


def test_flops_follow_producers_and_depthwise(net):
  for widths in ([3, 32, 32, 32], [3, 16, 8, 24], [3, 8, 32, 16]):
    assert net(widths) == pytest.approx(_macs_by_hand(widths))
  assert net.original == pytest.approx(_macs_by_hand([3, 32, 32, 32]))


def test_clamp_rounds_to_multiples_of_8_and_respects_bounds(net):
  bounds = amc_env.Bounds(0.2, 1.0, 8)
  loose = net.original
  assert amc_env.clamp_width(net, [3], 0.5, loose, bounds) == 16  # a = 0.5 on 32 -> 16
  assert amc_env.clamp_width(net, [3], 0.45, loose, bounds) == 16  # ceil(14.4 / 8) * 8
  assert amc_env.clamp_width(net, [3], 0.0, loose, bounds) == 8  # lbound 0.2 -> ceil(6.4)
  assert amc_env.clamp_width(net, [], 0.1, loose, bounds) == 3  # the image keeps 3 channels
  # A tight budget: later layers are counted at their lower bound (8 of 32), and the widest
  # multiple of 8 that still fits is kept.
  budget = 0.3 * net.original
  width = amc_env.clamp_width(net, [3], 1.0, budget, bounds)
  assert _macs_by_hand([3, width, 8, 8]) <= budget < _macs_by_hand([3, width + 8, 8, 8])


def test_every_episode_meets_the_budget(net):
  bounds = amc_env.Bounds()
  rng = np.random.default_rng(0)
  for ratio in (0.25, 0.5, 0.8):
    budget = ratio * net.original
    for _ in range(50):
      widths = [3]
      for _ in range(3):
        widths.append(amc_env.clamp_width(net, widths, rng.uniform(), budget, bounds))
      assert net(widths) <= budget
      assert all(w % 8 == 0 and w >= 8 for w in widths[1:])
  with pytest.raises(UserError, match="cannot be met"):
    amc_env.check_budget(net, bounds, 0.05 * net.original)


def test_states_rewards_and_uniform(net):
  states = amc_env.amc_states(net)
  assert states.shape == (4, 10)
  assert states[:, :7].min() >= 0 and states[:, :7].max() <= 1
  np.testing.assert_array_equal(states[:, 0], [0, 1 / 3, 2 / 3, 1])
  np.testing.assert_array_equal(states[:, 1], [0, 0, 0, 1])  # the FC is the dense one
  assert amc_env.reward_value("acc", 0.7, 1e6) == pytest.approx(0.7)
  assert amc_env.reward_value("acc_flops", 0.7, 1e6) == pytest.approx(-0.3 * math.log(1e6))
  widths, ratio = amc_env.uniform_widths(net, 0.5 * net.original, amc_env.Bounds())
  assert net(widths) <= 0.5 * net.original and len(set(widths[1:])) == 1
  assert net([3] + [widths[1] + 8] * 3) > 0.5 * net.original


def test_an_episode_fills_the_running_columns_and_learns(net):
  agent = ddpg.DDPG(ddpg.DDPGConfig.amc(4, warmup_episodes=1, batch_size=4), 10)
  state = agent.init()
  seen = []

  def evaluate(widths):
    seen.append(list(widths))
    return sum(widths) / 100

  budget = 0.5 * net.original
  for episode in range(2):
    state, record = amc_env.run_episode(state, agent, net, amc_env.amc_states(net), evaluate,
                                        episode, budget=budget, bounds=amc_env.Bounds())
    assert record.flops <= budget and list(record.widths) == seen[-1]
    assert record.reward == pytest.approx(sum(record.widths) / 100)
  assert record.sigma == pytest.approx(0.5) and "critic_loss" in record.metrics
  assert int(state.replay.count) == 8
  obs = np.asarray(state.replay.obs[4:8])
  assert obs[0, 9] == 1.0 and obs[1, 9] == pytest.approx(record.widths[0] / 3)
  assert obs[2, 9] == pytest.approx(record.widths[1] / 32)
  assert obs[0, 7] == 0.0 and obs[2, 7] > 0  # FLOPs reduced so far
