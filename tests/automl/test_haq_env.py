"""HAQ's environment logic on hand-made layers and cost tables, walked through by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lite_jax.automl.ddpg import DDPG, DDPGConfig
from lite_jax.automl.haq_env import (LAST_ACTION_COLUMN, action_to_bits, budget_walk, haq_states,
                                     run_episode)
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.quant import FULL_PRECISION as FP

LAYERS = [
    # path, kind, c_in, c_out, kernel, stride, groups, in_hw, out_hw, n_weights, macs, index
    LayerInfo("stem", "conv", 3, 32, 3, 2, 1, 64, 16, 864, 864 * 16, 0),
    LayerInfo("dw", "conv", 32, 32, 3, 1, 32, 16, 16, 288, 288 * 16, 1),
    LayerInfo("fc", "dense", 32, 10, 1, 0, 1, 1, 1, 320, 320, 2),
]


def test_action_to_bits():
  assert [action_to_bits(a, 2, 8) for a in (0.0, 0.5, 1.0)] == [2, 5, 8]
  # Seven bins of equal width 1/7 on [2, 8].
  grid = (np.arange(7000) + 0.5) / 7000
  counts = np.bincount([action_to_bits(a, 2, 8) for a in grid], minlength=9)[2:]
  np.testing.assert_array_equal(counts, [1000] * 7)
  assert action_to_bits(1 / 7 - 1e-9, 2, 8) == 2 and action_to_bits(1 / 7 + 1e-9, 2, 8) == 3
  assert action_to_bits(0.0, 1, 8) == 1  # 0.5 rounds to even 0: clipped to min_bits
  with pytest.raises(UserError, match=r"\[0, 1\]"):
    action_to_bits(1.5, 2, 8)


def test_haq_states_linear_and_kmeans():
  states = haq_states(LAYERS, linear=True)
  assert states.shape == (6, 10)
  static = states[:, :LAST_ACTION_COLUMN]
  np.testing.assert_array_equal(static[0::2], static[1::2])  # a layer's two steps
  # is_depthwise, c_in, c_out, stride, kernel, #weights, in H*W, position; min-max per column.
  raw = np.array([[0, 3, 32, 2, 3, 864, 64, 0], [1, 32, 32, 1, 3, 288, 16, 1],
                  [0, 32, 10, 0, 1, 320, 1, 2]], float)
  expected = (raw - raw.min(0)) / (raw.max(0) - raw.min(0))
  np.testing.assert_allclose(static[0::2], expected)
  assert static.min() == 0 and static.max() == 1
  np.testing.assert_array_equal(states[:, LAST_ACTION_COLUMN], 1.0)
  np.testing.assert_array_equal(states[:, -1], [1, 0, 1, 0, 1, 0])
  kmeans = haq_states(LAYERS, linear=False)
  assert kmeans.shape == (3, 9)
  np.testing.assert_allclose(kmeans, states[0::2, :9])
  # A constant column stays as it is (the reference divides only when max > min).
  same = haq_states(LAYERS[:1] * 2, linear=False)
  np.testing.assert_array_equal(same[:, 1:7], np.tile(raw[0, 1:7], (2, 1)))


def bits_cost(policy):
  """1 per weight or activation bit; an unquantised activation costs as 8 bits."""
  return float(sum(w + min(a, 8) for w, a in policy))


def test_budget_walk_order_and_forced_layers():
  policy = [(6, 6)] * 4  # costs 48
  # The first removal forces (8, FP) / (8, 8): 56. Pass 1: layer 3 stays forced; layer 2 a, w
  # -> 54; layer 1 a, w -> 52; layer 0 stays forced. Pass 2: 51, 50, 49, 48. Pass 3: layer 2
  # a -> 47, w -> 46.
  assert budget_walk(policy, bits_cost, 47, min_bits=2) == [(8, FP), (4, 4), (4, 3), (8, 8)]
  assert budget_walk(policy, bits_cost, 46, min_bits=2) == [(8, FP), (4, 4), (3, 3), (8, 8)]
  assert policy == [(6, 6)] * 4  # not modified
  # A policy that fits keeps its own first and last layers.
  fits = [(2, 3), (6, 6), (6, 6), (4, 2)]
  assert budget_walk(fits, bits_cost, bits_cost(fits), min_bits=2) == fits
  # Never below min_bits; the smallest reachable policy is exactly the budget.
  assert budget_walk(policy, bits_cost, 40, min_bits=2) == [(8, FP), (2, 2), (2, 2), (8, 8)]
  with pytest.raises(UserError, match=r"budget 39 cannot be met: the smallest policy costs 40"):
    budget_walk(policy, bits_cost, 39, min_bits=2)


def test_budget_walk_weights_only_and_a_latency_table():
  sizes = np.array([1.0, 2.0, 4.0])
  size = lambda p: float(sum(n * w for n, (w, _) in zip(sizes, p)))  # noqa: E731
  policy = [(6, FP)] * 3
  # 42 -> layer 2: 38, layer 1: 36, layer 0: 35; layer 2: 31 <= 32.
  assert budget_walk(policy, size, 32, min_bits=1, first_last_fixed=False,
                     weights_only=True) == [(5, FP), (5, FP), (4, FP)]
  with pytest.raises(UserError, match="costs 7"):
    budget_walk(policy, size, 6, min_bits=1, first_last_fixed=False, weights_only=True)

  # A random latency table [layer, w - 1, a - 1], increasing in both bit widths; the first
  # layer's unquantised input reads the 8-bit column.
  rng = np.random.default_rng(0)
  table = np.cumsum(np.cumsum(rng.uniform(0.1, 1, (8, 8, 8)), axis=1), axis=2)
  latency = lambda p: float(sum(table[i, w - 1, min(a, 8) - 1]  # noqa: E731
                                for i, (w, a) in enumerate(p)))
  chosen = [(7, 6), (8, 5), (6, 7), (5, 8), (7, 7), (6, 6), (8, 7), (7, 8)]
  floor = [(8, FP)] + [(2, 2)] * 6 + [(8, 8)]
  assert latency(floor) < 0.6 * latency(chosen)
  for ratio in (0.6, 0.75, 0.9):
    target = ratio * latency(chosen)
    walked = budget_walk(chosen, latency, target, min_bits=2)
    assert latency(walked) <= target
    assert all(2 <= w <= 8 and 2 <= a <= 8 for w, a in walked[1:-1])
    assert all(w <= w0 and a <= a0 for (w, a), (w0, a0) in zip(walked[1:-1], chosen[1:-1]))
    assert walked[0] == (8, FP) and walked[-1] == (8, 8)


def test_run_episode():
  states = haq_states(LAYERS, linear=True)
  cfg = DDPGConfig(warmup_episodes=1, total_episodes=3, sigma_decay=0.99, replay_size=32,
                   seed=3, extra_last_transition=True, hidden=16, batch_size=8)
  agent = DDPG(cfg, states.shape[1])
  agent_state = agent.init()
  seen = []

  def reward_fn(policy):
    seen.append(policy)
    return 70.0 + len(seen)

  target = 0.8 * bits_cost([(8, 8)] * 3)  # the floor costs 36 of 48
  records = []
  for episode in range(2):
    agent_state, record = run_episode(agent_state, agent, LAYERS, states, reward_fn, bits_cost,
                                      target, episode, acc_orig=72.0, min_bits=2, max_bits=8)
    records.append(record)
    assert record.policy == seen[-1] and len(record.policy) == 3
    assert record.cost == bits_cost(record.policy) <= target
    assert record.reward == pytest.approx(0.1 * (70.0 + episode + 1 - 72.0))
    assert len(record.actions) == 6
  assert records[0].sigma is None and records[0].metrics == {}
  assert records[1].sigma == pytest.approx(0.5) and "critic_loss" in records[1].metrics
  replay = agent_state.replay
  assert int(replay.count) == 2 * 7 and int(agent_state.num_updates) == 6
  # The agent saw the previous step's bits / max_bits in the last-action column.
  obs = np.asarray(replay.obs)[7:13]
  bits = [action_to_bits(a, 2, 8) for a in records[1].actions]
  np.testing.assert_allclose(obs[1:, LAST_ACTION_COLUMN], np.array(bits[:-1]) / 8, rtol=1e-6)
  assert obs[0, LAST_ACTION_COLUMN] == 1.0
  np.testing.assert_allclose(np.delete(obs, LAST_ACTION_COLUMN, 1),
                             np.delete(states, LAST_ACTION_COLUMN, 1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(replay.reward)[7:14], [records[1].reward] * 6 + [0],
                             rtol=1e-6)
  with pytest.raises(UserError, match="states must have shape"):
    run_episode(agent_state, agent, LAYERS, states[:, :9], reward_fn, bits_cost, target, 2,
                acc_orig=72.0, min_bits=2, max_bits=8)
