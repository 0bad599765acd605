"""The shared DDPG agent against numpy forward passes, closed forms and a 1-D bandit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lite_jax.automl.ddpg import DDPG, DDPGConfig
from lite_jax.core.errors import UserError

OBS_DIM = 3
SMALL = DDPGConfig(warmup_episodes=2, total_episodes=10, sigma_decay=0.9, replay_size=10,
                   seed=0, extra_last_transition=True, hidden=16, batch_size=8)


@pytest.fixture(scope="module")
def agent() -> DDPG:
  return DDPG(SMALL, OBS_DIM)


def copy(tree):
  """Host copies (np.array, not np.asarray: donated device buffers get reused)."""
  return jax.tree.map(np.array, tree)


def dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_actor(params, obs):
  p = params["params"]
  x = np.maximum(dense(p["fc1"], obs), 0)
  x = np.maximum(dense(p["fc2"], x), 0)
  return 1 / (1 + np.exp(-dense(p["out"], x)[..., 0]))


def np_critic(params, obs, action):
  p = params["params"]
  x = np.maximum(dense(p["obs_in"], obs) + dense(p["action_in"], action[..., None]), 0)
  x = np.maximum(dense(p["fc2"], x), 0)
  return dense(p["out"], x)[..., 0]


def test_paper_configs():
  haq, amc = DDPGConfig.haq(53), DDPGConfig.amc(15)
  assert (haq.warmup_episodes, haq.total_episodes, haq.sigma_decay, haq.replay_size, haq.seed,
          haq.extra_last_transition) == (20, 600, 0.99, 128 * 53, 234, True)
  assert (amc.warmup_episodes, amc.total_episodes, amc.sigma_decay, amc.replay_size, amc.seed,
          amc.extra_last_transition) == (100, 800, 0.95, 100 * 15, 2018, False)
  for cfg in (haq, amc):
    assert (cfg.hidden, cfg.actor_lr, cfg.critic_lr, cfg.batch_size, cfg.tau, cfg.gamma,
            cfg.sigma0) == (300, 1e-4, 1e-3, 64, 0.01, 1.0, 0.5)
  with pytest.raises(UserError, match="tau"):
    DDPGConfig.haq(4, tau=0.0)


def test_init_is_pytorch_default_and_targets_equal(agent):
  state = agent.init()
  for params in (state.actor, state.critic):
    for layer in params["params"].values():
      bound = 1 / np.sqrt(layer["kernel"].shape[0])
      for leaf in (layer["kernel"], layer["bias"]):
        assert np.abs(leaf).max() <= bound
      # Uniform over the whole range, not a narrower init.
      assert np.abs(layer["kernel"]).max() > 0.5 * bound
  assert np.abs(state.critic["params"]["action_in"]["kernel"]).max() > 0.5  # fan_in 1: U(-1, 1)
  jax.tree.map(np.testing.assert_array_equal, state.actor, state.actor_target)
  jax.tree.map(np.testing.assert_array_equal, state.critic, state.critic_target)


def test_sigma_schedule(agent):
  assert agent.sigma(SMALL.warmup_episodes) == pytest.approx(0.5)
  assert agent.sigma(SMALL.warmup_episodes + 3) == pytest.approx(0.5 * 0.9**3)


def test_actions_uniform_in_warmup_then_truncated_normal(agent):
  state = agent.init()
  obs = np.array([0.2, -0.4, 0.9], np.float32)
  warm = []
  for _ in range(200):
    a, state = agent.select_action(state, obs, 0)
    warm.append(a)
  assert 0 <= min(warm) and max(warm) <= 1
  assert stats.kstest(warm, "uniform").pvalue > 1e-3
  mean = float(np_actor(copy(state.actor), obs.astype(np.float64)))
  for episode in (SMALL.warmup_episodes, SMALL.warmup_episodes + 20):
    sigma = agent.sigma(episode)
    drawn = []
    for _ in range(300):
      a, state = agent.select_action(state, obs, episode)
      drawn.append(a)
    drawn = np.array(drawn)
    assert drawn.min() > 0 and drawn.max() < 1  # truncated, not clipped: no mass on the edges
    law = stats.truncnorm(-mean / sigma, (1 - mean) / sigma, loc=mean, scale=sigma)
    assert stats.kstest(drawn, law.cdf).pvalue > 1e-3


def test_store_broadcasts_the_final_reward_and_wraps(agent):
  state = agent.init()
  episodes = [np.full((3, OBS_DIM), 10.0 * e, np.float32) + np.arange(3)[:, None]
              for e in range(3)]
  for e, obs in enumerate(episodes):
    state = agent.store_episode(state, obs, np.array([0.1, 0.2, 0.3]), float(e + 1), episode=e)
  replay = copy(state.replay)
  # 3 episodes x (3 + 1 extra) = 12 writes into 10 slots: episode 0's first two are gone.
  assert (int(replay.count), int(replay.position)) == (10, 2)
  expected_obs = np.concatenate([np.concatenate([obs, obs[-1:]]) for obs in episodes])
  order = (np.arange(12) % 10)[2:]  # slot of writes 2..11
  np.testing.assert_array_equal(replay.obs[order], expected_obs[2:])
  np.testing.assert_allclose(replay.reward[order], [1, 0] + [2, 2, 2, 0] + [3, 3, 3, 0])
  np.testing.assert_array_equal(replay.done[order], [1, 0] + [0, 0, 1, 0] * 2)
  np.testing.assert_array_equal(replay.sample_weight[order], [1, 0] + [1, 1, 1, 0] * 2)
  last = episodes[2]
  np.testing.assert_array_equal(replay.next_obs[order][-4:-2], last[1:])
  extra_action = replay.action[order][-1]
  assert 0 <= extra_action <= 1
  np.testing.assert_allclose(replay.action[order][-4:-1], [0.1, 0.2, 0.3], rtol=1e-6)
  with pytest.raises(UserError, match="does not fit"):
    agent.store_episode(state, np.zeros((10, OBS_DIM)), np.zeros(10), 0.0, episode=3)
  with pytest.raises(UserError, match="episode index"):
    agent.store_episode(state, np.zeros((2, OBS_DIM)), np.zeros(2), 0.0)


def test_one_update_matches_numpy(agent):
  """With exactly batch_size sampleable transitions the batch is all of them, in some order;
  the losses and the baseline do not depend on the order."""
  rng = np.random.default_rng(0)
  state = agent.init()
  obs = rng.normal(size=(2, 4, OBS_DIM)).astype(np.float32)
  actions = rng.uniform(size=(2, 4)).astype(np.float32)
  rewards = (0.7, -0.3)
  for e in range(2):
    state = agent.store_episode(state, obs[e], actions[e], rewards[e], episode=e)
  assert float(state.replay.sample_weight.sum()) == SMALL.batch_size  # 2 extras carry weight 0
  before = copy(state)
  s = obs.reshape(8, OBS_DIM).astype(np.float64)
  a = actions.reshape(8).astype(np.float64)
  r = np.repeat(rewards, 4)
  s_next = np.concatenate([np.concatenate([o[1:], o[-1:]]) for o in obs]).astype(np.float64)
  done = np.tile([0, 0, 0, 1], 2)

  def expected_critic_loss(baseline):
    target = (r - baseline) + (1 - done) * np_critic(
        before.critic_target, s_next, np_actor(before.actor_target, s_next))
    return np.mean((np_critic(before.critic, s, a) - target) ** 2)

  state, metrics = agent.update(state)
  assert metrics["baseline"] == pytest.approx(r.mean(), rel=1e-5)  # the first batch sets it
  assert metrics["critic_loss"] == pytest.approx(expected_critic_loss(r.mean()), rel=1e-4)
  after = copy(state)
  # The actor ascends the critic *after* its step.
  assert metrics["actor_loss"] == pytest.approx(
      -np.mean(np_critic(after.critic, s, np_actor(before.actor, s))), rel=1e-4)
  # Adam's first step moves every parameter by at most lr.
  step = jax.tree.map(lambda x, y: np.abs(x - y).max(), after.critic, before.critic)
  assert max(jax.tree.leaves(step)) <= SMALL.critic_lr * (1 + 1e-3)
  assert max(jax.tree.leaves(step)) > 0.5 * SMALL.critic_lr
  # Soft targets: tau * new + (1 - tau) * old.
  jax.tree.map(lambda t, new, old: np.testing.assert_allclose(
      t, SMALL.tau * new + (1 - SMALL.tau) * old, rtol=1e-5, atol=1e-7),
      after.actor_target, after.actor, before.actor_target)

  # Later updates: b <- b + 0.5 (batch mean - b), from a baseline we set.
  again = jax.tree.map(jnp.asarray, before)
  again = again.replace(baseline=jnp.float32(2.0), num_updates=jnp.int32(5))
  _, metrics = agent.update(again)
  b = 2.0 + 0.5 * (r.mean() - 2.0)
  assert metrics["baseline"] == pytest.approx(b, rel=1e-5)
  assert metrics["critic_loss"] == pytest.approx(expected_critic_loss(b), rel=1e-4)


def test_updates_compile_once_and_state_round_trips(agent):
  state = agent.init()
  with pytest.raises(UserError, match="no transition"):
    agent.update(state)
  rng = np.random.default_rng(1)
  for e in range(3):
    state = agent.store_episode(state, rng.normal(size=(3, OBS_DIM)), rng.uniform(size=3),
                                float(e), episode=e)
  state, _ = agent.update(state)
  state, _ = agent.update_n(state, 3)
  state, _ = agent.update_n(state, 2)
  assert agent._update_n._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.num_updates) == 6

  # A host copy (what a checkpoint holds) resumes exactly.
  host = jax.tree.map(np.asarray, state)
  assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(host))
  resumed = jax.tree.map(jnp.asarray, copy(host))
  obs = np.ones(OBS_DIM, np.float32)
  a1, state = agent.select_action(state, obs, 5)
  a2, resumed = agent.select_action(resumed, obs, 5)
  assert a1 == a2
  state, m1 = agent.update_n(state, 2)
  resumed, m2 = agent.update_n(resumed, 2)
  assert m1 == m2
  jax.tree.map(np.testing.assert_array_equal, copy(state), copy(resumed))


def test_learns_a_bandit():
  """One step per episode, reward -(a - 0.7)^2: the actor's mean ends near 0.7."""
  cfg = DDPGConfig(warmup_episodes=15, total_episodes=120, sigma_decay=0.96, replay_size=256,
                   seed=0, extra_last_transition=False, hidden=32, batch_size=32,
                   actor_lr=1e-3, critic_lr=1e-2)
  bandit = DDPG(cfg, 1)
  state = bandit.init()
  obs = np.ones((1, 1), np.float32)
  start = float(bandit.mean_action(state, obs[0]))
  for episode in range(cfg.total_episodes):
    a, state = bandit.select_action(state, obs[0], episode)
    state = bandit.store_episode(state, obs, [a], -(a - 0.7) ** 2)
    if episode >= cfg.warmup_episodes:
      state, _ = bandit.update_n(state, 6)
  assert abs(start - 0.7) > 0.15
  assert float(bandit.mean_action(state, obs[0])) == pytest.approx(0.7, abs=0.1)
