"""The DDPG agent that HAQ and AMC share: one continuous action in [0, 1] per layer.

Both papers search a per-layer setting (bits, kept-channel ratio) with the same small DDPG
(mit-han-lab `lib/rl/ddpg.py` / `lib/agent.py`): an episode is one pass over the layers, the
only informative reward comes at its end and is given to every transition of the episode, a
moving-average baseline is subtracted from the rewards of each batch, and exploration is a
normal truncated to [0, 1] whose width decays per episode. Environments differ (HAQ appends
one extra transition per episode, AMC does not), so the agent knows nothing about layers.

The agent's whole state (networks, targets, Adam states, baseline, replay buffer as
fixed-size arrays, rng key) is one `DDPGState` pytree of arrays, so a search checkpoints it
with orbax between episodes and resumes bit-for-bit. The functions that change it are jitted
once: the episode index and the number of updates are traced, never static.

Conventions carried over from the reference code:
  - PyTorch's default `nn.Linear` init (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
  - The critic is updated first, then the actor ascends the *updated* critic, then both
    targets move by tau.
  - The baseline starts at the first batch's mean reward, then b <- b + 0.5 (mean - b).
  - The reference's keras-rl memory never samples an entry that follows a terminal one, so
    HAQ's extra transition (stored right after the episode's terminal transition) takes a
    replay slot but is never trained on; we keep both facts with a zero sampling weight.
    (The same rule also silently drops the first transition of every AMC episode after the
    first; we do not reproduce that.)

Deliberate differences: warm-up is episodes `0 .. warmup-1` (the reference draws uniform
actions for `episode <= warmup`, so its first exploiting episode has sigma 0.5 * decay); an
episode's updates run after the whole episode is stored, not interleaved with storing it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lite_jax import core
from lite_jax.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class DDPGConfig:
  """DDPG hyper-parameters (spec §1); `haq(...)` and `amc(...)` give the papers' settings.

  Attributes:
    warmup_episodes: episodes `0 .. warmup_episodes - 1` take U(0, 1) actions and train nothing.
    total_episodes: the length of the search (the agent itself does not stop).
    sigma_decay: sigma = sigma0 * sigma_decay ** (episode - warmup_episodes) after warm-up.
    replay_size: replay capacity in transitions (the oldest are overwritten).
    seed: seeds the networks' init and every random draw of the agent.
    extra_last_transition: HAQ stores (s_last, noisy action, 0, not done) after every episode.
    hidden, actor_lr, critic_lr, batch_size, tau, gamma, sigma0: as in the reference.
  """
  warmup_episodes: int
  total_episodes: int
  sigma_decay: float
  replay_size: int
  seed: int
  extra_last_transition: bool
  hidden: int = 300
  actor_lr: float = 1e-4
  critic_lr: float = 1e-3
  batch_size: int = 64
  tau: float = 0.01
  gamma: float = 1.0
  sigma0: float = 0.5

  def __post_init__(self):
    for name in ("warmup_episodes", "total_episodes", "replay_size", "hidden", "batch_size"):
      value, least = getattr(self, name), 0 if name == "warmup_episodes" else 1
      if not isinstance(value, (int, np.integer)) or value < least:
        raise UserError(f"DDPGConfig.{name} must be an integer >= {least}, got {value!r}.")
    if not 0.0 < self.tau <= 1.0:
      raise UserError(f"DDPGConfig.tau must be in (0, 1], got {self.tau}.")
    if not (self.sigma0 > 0.0 and 0.0 < self.sigma_decay <= 1.0):
      raise UserError(f"DDPGConfig needs sigma0 > 0 and sigma_decay in (0, 1], got "
                      f"{self.sigma0} and {self.sigma_decay}.")

  @classmethod
  def haq(cls, num_layers: int, **overrides: Any) -> DDPGConfig:
    """HAQ (`rl_quantize.py`): warm-up 20 of 600 episodes, decay 0.99, seed 234, the extra
    transition, and a replay of 128 transitions per *layer* (the reference's
    `rmsize * len(quantizable_idx)`, also in the linear env whose episodes have 2L steps)."""
    return cls(**{**dict(warmup_episodes=20, total_episodes=600, sigma_decay=0.99,
                         replay_size=128 * num_layers, seed=234, extra_last_transition=True),
                  **overrides})

  @classmethod
  def amc(cls, num_layers: int, **overrides: Any) -> DDPGConfig:
    """AMC (`amc_search.py`): warm-up 100 of 800 episodes, decay 0.95, seed 2018, replay of 100
    transitions per layer, no extra transition (removed in the reference's PR #8)."""
    return cls(**{**dict(warmup_episodes=100, total_episodes=800, sigma_decay=0.95,
                         replay_size=100 * num_layers, seed=2018, extra_last_transition=False),
                  **overrides})


class _TorchDense(nn.Module):
  """`x @ kernel + bias` with PyTorch's default `nn.Linear` init: both U(-1/sqrt(fan_in), ..)."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape):
      return jax.random.uniform(key, shape, jnp.float32, -bound, bound)

    kernel = self.param("kernel", init, (fan_in, self.features))
    bias = self.param("bias", init, (self.features,))
    return x @ kernel + bias


class Actor(nn.Module):
  """mu(s): s -> FC -> ReLU -> FC -> ReLU -> FC1 -> sigmoid. `obs: [..., D]` -> `[...]`."""
  hidden: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    x = nn.relu(_TorchDense(self.hidden, name="fc1")(obs))
    x = nn.relu(_TorchDense(self.hidden, name="fc2")(x))
    return nn.sigmoid(_TorchDense(1, name="out")(x))[..., 0]


class Critic(nn.Module):
  """Q(s, a) = FC1(ReLU(FC(ReLU(FC(s) + FC(a))))). `obs: [..., D], action: [...]` -> `[...]`."""
  hidden: int

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = _TorchDense(self.hidden, name="obs_in")(obs)
    x = nn.relu(x + _TorchDense(self.hidden, name="action_in")(action[..., None]))
    x = nn.relu(_TorchDense(self.hidden, name="fc2")(x))
    return _TorchDense(1, name="out")(x)[..., 0]


@flax.struct.dataclass
class Replay:
  """A ring buffer of transitions as fixed-size arrays (N = replay_size, D = obs dim).

  Attributes:
    obs, next_obs: `[N, D]` float32.
    action, reward: `[N]` float32.
    done: `[N]` float32, 1 on an episode's last transition.
    sample_weight: `[N]` float32, 1 for a transition that updates may sample, 0 for an empty
      slot or HAQ's extra transition.
    count: `[]` int32, filled slots (at most N).
    position: `[]` int32, the slot the next transition goes to.
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  done: jax.Array
  sample_weight: jax.Array
  count: jax.Array
  position: jax.Array


@flax.struct.dataclass
class DDPGState:
  """Everything a search needs to resume exactly; a pytree of arrays only.

  Attributes:
    actor, critic, actor_target, critic_target: flax parameter trees.
    actor_opt, critic_opt: optax Adam states.
    baseline: `[]` float32, the moving-average reward baseline.
    num_updates: `[]` int32, updates run so far (the first one sets the baseline).
    replay: the replay buffer.
    key: `[2]` uint32, a raw PRNG key, split on every draw.
  """
  actor: Any
  critic: Any
  actor_target: Any
  critic_target: Any
  actor_opt: Any
  critic_opt: Any
  baseline: jax.Array
  num_updates: jax.Array
  replay: Replay
  key: jax.Array


class DDPG:
  """The agent's functions for one config and observation size; the state travels apart.

  Typical episode: `select_action` per step, then `store_episode` with the final reward, then
  (past warm-up) `update_n(state, steps)`. `store_episode`, `update` and `update_n` donate the
  state passed in: use the returned one.

  Args:
    config: the hyper-parameters.
    obs_dim: D, the length of one observation.
  """

  def __init__(self, config: DDPGConfig, obs_dim: int):
    if obs_dim < 1:
      raise UserError(f"obs_dim must be positive, got {obs_dim}.")
    self.config = config
    self.obs_dim = int(obs_dim)
    self.actor = Actor(config.hidden)
    self.critic = Critic(config.hidden)
    self._actor_tx = optax.adam(config.actor_lr)
    self._critic_tx = optax.adam(config.critic_lr)
    self._init = jax.jit(self._init_impl)  # one compile instead of one per eager op
    self._select = jax.jit(self._select_impl)
    self._mean = jax.jit(self.actor.apply)
    self._store = jax.jit(self._store_impl, donate_argnums=0)
    self._update_n = jax.jit(self._update_n_impl, donate_argnums=0)

  def init(self) -> DDPGState:
    """A fresh agent: networks from `config.seed`, targets equal to them, empty replay."""
    return self._init()

  def _init_impl(self) -> DDPGState:
    cfg, d, n = self.config, self.obs_dim, self.config.replay_size
    key, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    actor = self.actor.init(actor_key, jnp.zeros((d,), jnp.float32))
    critic = self.critic.init(critic_key, jnp.zeros((d,), jnp.float32), jnp.zeros((), jnp.float32))
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    replay = Replay(obs=zeros(n, d), action=zeros(n), reward=zeros(n), next_obs=zeros(n, d),
                    done=zeros(n), sample_weight=zeros(n), count=jnp.zeros((), jnp.int32),
                    position=jnp.zeros((), jnp.int32))
    return DDPGState(
        actor=actor, critic=critic,
        actor_target=actor, critic_target=critic,
        actor_opt=core.init_optimizer(self._actor_tx, actor),
        critic_opt=core.init_optimizer(self._critic_tx, critic),
        baseline=jnp.zeros((), jnp.float32), num_updates=jnp.zeros((), jnp.int32),
        replay=replay, key=key)

  def sigma(self, episode: int) -> float:
    """The exploration width sigma0 * decay ** (episode - warmup) of a post-warm-up episode."""
    cfg = self.config
    return cfg.sigma0 * cfg.sigma_decay ** (episode - cfg.warmup_episodes)

  # ----------------------------------------------------------------------------------------
  # Acting.

  def _sigma_traced(self, episode: jax.Array) -> jax.Array:
    cfg = self.config
    steps = (episode - cfg.warmup_episodes).astype(jnp.float32)
    return cfg.sigma0 * jnp.power(jnp.float32(cfg.sigma_decay), steps)

  def _noisy_action(self, actor, key, obs, episode):
    """A draw from N(mu(s), sigma^2) truncated to [0, 1]."""
    mean = self.actor.apply(actor, obs)
    sigma = self._sigma_traced(episode)
    z = jax.random.truncated_normal(key, -mean / sigma, (1.0 - mean) / sigma, mean.shape)
    return jnp.clip(mean + sigma * z, 0.0, 1.0)

  def _select_impl(self, actor, key, obs, episode):
    key, uniform_key, noise_key = jax.random.split(key, 3)
    noisy = self._noisy_action(actor, noise_key, obs, episode)
    uniform = jax.random.uniform(uniform_key, ())
    return jnp.where(episode < self.config.warmup_episodes, uniform, noisy), key

  def _check_obs(self, obs: np.ndarray, what: str, rank: int) -> None:
    if obs.ndim != rank or obs.shape[-1] != self.obs_dim:
      shape = "[steps, " if rank == 2 else "["
      raise UserError(f"{what} must have shape {shape}{self.obs_dim}], got {list(obs.shape)}.")

  def select_action(self, state: DDPGState, obs: Any, episode: int) -> tuple[float, DDPGState]:
    """One exploring action: U(0, 1) during warm-up, else the truncated normal around mu(s).

    Args:
      state: the agent state (not donated).
      obs: `[D]`, the current observation.
      episode: the episode index, 0 first.

    Returns:
      `(action in [0, 1], state with a new key)`.
    """
    obs = np.asarray(obs, np.float32)
    self._check_obs(obs, "obs", 1)
    action, key = self._select(state.actor, state.key, obs, jnp.int32(episode))
    return float(action), state.replace(key=key)

  def mean_action(self, state: DDPGState, obs: Any) -> np.ndarray:
    """mu(s) without noise. `obs: [..., D]` -> `[...]` in [0, 1]."""
    obs = np.asarray(obs, np.float32)
    if obs.shape[-1:] != (self.obs_dim,):
      raise UserError(f"obs must end in {self.obs_dim} features, got shape {list(obs.shape)}.")
    return np.asarray(self._mean(state.actor, obs))

  # ----------------------------------------------------------------------------------------
  # Storing.

  def _store_impl(self, state, observations, actions, final_reward, episode):
    steps = observations.shape[0]
    next_obs = jnp.concatenate([observations[1:], observations[-1:]])  # the last is terminal
    rewards = jnp.full((steps,), final_reward, jnp.float32)
    done = jnp.zeros((steps,), jnp.float32).at[-1].set(1.0)
    weight = jnp.ones((steps,), jnp.float32)
    key = state.key
    if self.config.extra_last_transition:
      key, noise_key = jax.random.split(key)
      last = observations[-1]
      # The reference calls `select_action` here even during warm-up: the actor's action with
      # that episode's sigma (wider than sigma0 before warm-up ends).
      extra = self._noisy_action(state.actor, noise_key, last, episode)
      next_obs = jnp.concatenate([next_obs, last[None]])
      observations = jnp.concatenate([observations, last[None]])
      actions = jnp.concatenate([actions, extra[None]])
      rewards = jnp.concatenate([rewards, jnp.zeros((1,), jnp.float32)])
      done = jnp.concatenate([done, jnp.zeros((1,), jnp.float32)])
      weight = jnp.concatenate([weight, jnp.zeros((1,), jnp.float32)])
    replay = state.replay
    size = replay.action.shape[0]
    written = observations.shape[0]
    slots = (replay.position + jnp.arange(written)) % size
    replay = Replay(
        obs=replay.obs.at[slots].set(observations), action=replay.action.at[slots].set(actions),
        reward=replay.reward.at[slots].set(rewards),
        next_obs=replay.next_obs.at[slots].set(next_obs), done=replay.done.at[slots].set(done),
        sample_weight=replay.sample_weight.at[slots].set(weight),
        count=jnp.minimum(replay.count + written, size),
        position=(replay.position + written) % size)
    return state.replace(replay=replay, key=key)

  def store_episode(self, state: DDPGState, observations: Any, actions: Any, final_reward: float,
                    *, episode: int | None = None) -> DDPGState:
    """Stores one episode, every transition rewarded with the episode's final reward.

    Transition t is (observations[t], actions[t], final_reward, observations[t + 1], done on
    the last). With `config.extra_last_transition`, (observations[-1], a noisy action, 0, not
    done) follows, never sampled (see the module docstring).

    Args:
      state: the agent state (donated).
      observations: `[T, D]`, what the agent saw at each step.
      actions: `[T]`, the actions it took.
      final_reward: the episode's reward.
      episode: the episode index; needed with `config.extra_last_transition` (the extra
        transition's sigma).

    Returns:
      The state with the transitions written over the oldest ones.
    """
    observations = np.asarray(observations, np.float32)
    actions = np.asarray(actions, np.float32)
    self._check_obs(observations, "observations", 2)
    steps = observations.shape[0]
    if steps < 1 or actions.shape != (steps,):
      raise UserError(f"actions must have shape [{steps}] to match observations, got "
                      f"{list(actions.shape)}.")
    written = steps + int(self.config.extra_last_transition)
    if written > self.config.replay_size:
      raise UserError(f"an episode of {written} transitions does not fit a replay of "
                      f"{self.config.replay_size}; raise DDPGConfig.replay_size.")
    if not math.isfinite(final_reward):
      raise UserError(f"final_reward must be finite, got {final_reward}.")
    if episode is None and self.config.extra_last_transition:
      raise UserError("store_episode needs the episode index when the config adds HAQ's extra "
                      "last transition.")
    return self._store(state, observations, actions, jnp.float32(final_reward),
                       jnp.int32(episode or 0))

  # ----------------------------------------------------------------------------------------
  # Learning.

  def _sample(self, key, weight):
    """`batch_size` slot indices among those with weight 1: without replacement when there
    are enough (Gumbel top-k), with replacement otherwise, as keras-rl's memory does."""
    batch = self.config.batch_size
    log_weight = jnp.log(weight)
    gumbel_key, categorical_key = jax.random.split(key)
    distinct = jax.lax.top_k(log_weight + jax.random.gumbel(gumbel_key, weight.shape), batch)[1]
    repeated = jax.random.categorical(categorical_key, log_weight, shape=(batch,))
    return jnp.where(weight.sum() >= batch, distinct, repeated)

  def _update_once(self, state: DDPGState):
    cfg = self.config
    key, sample_key = jax.random.split(state.key)
    idx = self._sample(sample_key, state.replay.sample_weight)
    replay = state.replay
    obs, action, reward = replay.obs[idx], replay.action[idx], replay.reward[idx]
    next_obs, done = replay.next_obs[idx], replay.done[idx]

    batch_mean = reward.mean()
    baseline = jnp.where(state.num_updates == 0, batch_mean,
                         state.baseline + 0.5 * (batch_mean - state.baseline))
    next_q = self.critic.apply(state.critic_target, next_obs,
                               self.actor.apply(state.actor_target, next_obs))
    target_q = (reward - baseline) + cfg.gamma * (1.0 - done) * next_q

    def critic_loss_fn(critic):
      return jnp.mean(jnp.square(self.critic.apply(critic, obs, action) - target_q))

    critic_loss, critic_grads = jax.value_and_grad(critic_loss_fn)(state.critic)
    updates, critic_opt = self._critic_tx.update(critic_grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)

    def actor_loss_fn(actor):
      return -jnp.mean(self.critic.apply(critic, obs, self.actor.apply(actor, obs)))

    actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor)
    updates, actor_opt = self._actor_tx.update(actor_grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    state = state.replace(
        actor=actor, critic=critic, actor_opt=actor_opt, critic_opt=critic_opt,
        actor_target=optax.incremental_update(actor, state.actor_target, cfg.tau),
        critic_target=optax.incremental_update(critic, state.critic_target, cfg.tau),
        baseline=baseline, num_updates=state.num_updates + 1, key=key)
    return state, jnp.stack([critic_loss, actor_loss])

  def _update_n_impl(self, state, n):
    def body(_, carry):
      state, total = carry
      state, losses = self._update_once(state)
      return state, total + losses

    state, total = jax.lax.fori_loop(0, n, body, (state, jnp.zeros((2,), jnp.float32)))
    mean = total / jnp.maximum(n, 1).astype(jnp.float32)
    return state, {"critic_loss": mean[0], "actor_loss": mean[1], "baseline": state.baseline}

  def update_n(self, state: DDPGState, n: int) -> tuple[DDPGState, dict[str, float]]:
    """`n` DDPG updates in one compiled call (`n` is traced: no recompilation per value).

    Each samples `batch_size` transitions, moves the baseline, takes one Adam step on the
    critic (MSE to (r - b) + gamma (1 - done) Q'(s', mu'(s'))) and then on the actor
    (-mean Q(s, mu(s)) with the updated critic), and moves the targets by tau.

    Args:
      state: the agent state (donated); its replay must hold a sampleable transition.
      n: how many updates, >= 1.

    Returns:
      `(state, metrics)`: mean critic and actor loss over the `n` updates, final baseline.
    """
    if n < 1:
      raise UserError(f"update_n needs n >= 1, got {n}.")
    # Every stored episode writes at least one sampleable transition, and the newest episode is
    # never overwritten, so a non-empty replay has one.
    if int(state.replay.count) == 0:
      raise UserError("the replay buffer holds no transition to learn from; store an episode "
                      "before updating.")
    state, metrics = self._update_n(state, jnp.int32(n))
    return state, {name: float(value) for name, value in metrics.items()}

  def update(self, state: DDPGState) -> tuple[DDPGState, dict[str, float]]:
    """One DDPG update (the same compiled program as `update_n`)."""
    return self.update_n(state, 1)


def run_search(directory: str, agent: DDPG, num_episodes: int,
               episode_fn: Callable[[DDPGState, int], tuple[DDPGState, dict[str, Any]]], *,
               checkpoint_every: int, config: Mapping[str, Any],
               hidden: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Runs, or resumes, a search of `num_episodes` episodes (HAQ's and AMC's outer loop).

  `episode_fn(agent_state, episode) -> (agent_state, record)` plays one episode (act, score,
  store, learn) and describes it as a JSON-able dict. The agent's state and every record so far
  are checkpointed in `<directory>/checkpoints` every `checkpoint_every` episodes and after the
  last, so a killed search continues after its last saved episode with the same agent; each
  record is one metrics line (`core.MetricWriter`, step = episode), its `hidden` keys left out
  (long lists such as a policy).

  Returns:
    The records of every episode, first to last.
  """
  agent_state = agent.init()
  records: list[dict[str, Any]] = []
  with core.Checkpointer(os.path.join(directory, "checkpoints"), max_to_keep=2) as ckpt:
    restored = ckpt.restore_latest(core.abstract_like(agent_state))
    if restored is not None:
      agent_state, data_state = restored
      records = list(data_state["records"])
      logging.warning("search: resuming after episode %d of %s", len(records), ckpt.directory)
    with core.MetricWriter(directory) as writer:
      for episode in core.progress(range(len(records), num_episodes),
                                   total=num_episodes - len(records), desc="search"):
        agent_state, record = episode_fn(agent_state, episode)
        records.append(record)
        writer.write(episode, {k: v for k, v in record.items() if k not in hidden})
        if (episode + 1) % checkpoint_every == 0 or episode + 1 == num_episodes:
          ckpt.save(episode + 1, agent_state, data_state={"records": records}, config=config)
  return records
