"""HAQ's layer-by-layer environment: states, action-to-bits, the budget walk, one episode.

HAQ (mit-han-lab `lib/env/linear_quantize_env.py`, `quantize_env.py`) lets the shared DDPG
agent pick bit widths one layer at a time, then enforces the resource budget *after* the
episode by walking the policy down bit by bit (`_final_action_wall`). Resources never enter
the reward; the reward is only 0.1 * (accuracy - original accuracy). This module is that
logic in plain numpy/Python: the model, its fine-tuning and the cost model come in as
callbacks, so the same code drives the linear env (weights and activations, latency budget)
and the k-means env (weights only, size budget), and tests run it on hand-made tables.

A policy is a list in layer order of `(w_bits, a_bits)`; `FULL_PRECISION` (32) means "not
quantized" (the reference's a = -1 for the first layer's input, and every a in the k-means
env).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from lite_jax.automl.ddpg import DDPG, DDPGState
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.quant import FULL_PRECISION

Policy = list[tuple[int, int]]

# The reference keeps the first layer at w8 with an unquantised input and the last at w8a8.
FIXED_BITS = 8
# Columns of a state row: 8 static (min-max normalised), then the running ones.
STATIC_FEATURES = ("depthwise", "c_in", "c_out", "stride", "kernel", "n_weights", "in_hw",
                   "position")
LAST_ACTION_COLUMN = len(STATIC_FEATURES)
WEIGHT_STEP_COLUMN = LAST_ACTION_COLUMN + 1


def haq_states(layers: Sequence[LayerInfo], *, linear: bool) -> np.ndarray:
  """The observation rows of one episode, before the running "last action" is filled in.

  Columns (spec §2): is_depthwise, c_in, c_out, stride (0 for dense), kernel (1 for dense),
  #weights, input H*W, layer position, each min-max normalised across the layers (a constant
  column is left as is, as in the reference); then the last action, 1.0 here (the
  reference's start value, max_bit / max_bit): `run_episode` overwrites row t's column with
  the bits chosen at step t - 1 divided by max_bits before the agent sees row t. The linear
  env adds a weight-step flag (1 on the weight step of a layer, 0 on its activation step).

  Args:
    layers: the quantizable layers in order (`lite_jax.nn.introspect.list_layers`).
    linear: the linear env (2 steps per layer) rather than k-means (1 step, weights only).

  Returns:
    `[2L, 10]` float64 for the linear env (rows 2i and 2i + 1 are layer i's weight and
    activation steps), `[L, 9]` for k-means.
  """
  if not layers:
    raise UserError("haq_states needs at least one layer.")
  static = np.array([[float(layer.depthwise), layer.c_in, layer.c_out, layer.stride,
                      layer.kernel, layer.n_weights, layer.in_hw, position]
                     for position, layer in enumerate(layers)], np.float64)
  low, high = static.min(axis=0), static.max(axis=0)
  spread = high - low
  static = np.where(spread > 0, (static - low) / np.where(spread > 0, spread, 1.0), static)
  last_action = np.ones((len(layers), 1))
  if not linear:
    return np.concatenate([static, last_action], axis=1)
  rows = np.concatenate([static, last_action], axis=1).repeat(2, axis=0)
  weight_step = np.tile([1.0, 0.0], len(layers))[:, None]
  return np.concatenate([rows, weight_step], axis=1)


def action_to_bits(a: float, min_bits: int, max_bits: int) -> int:
  """Equal-width bins: round(a (max - min + 1) + min - 0.5), numpy's half-to-even rounding.

  On [2, 8]: a = 0 -> 2, 0.5 -> 5, 1 -> 8. The result is clipped to [min_bits, max_bits],
  which only changes the exact edges the reference lets slip out (a = 0 with an odd min_bits
  rounds down to min_bits - 1, a = 1 with an odd max_bits up to max_bits + 1).
  """
  if not 1 <= min_bits <= max_bits:
    raise UserError(f"the bit range needs 1 <= min_bits <= max_bits, got {min_bits} and "
                    f"{max_bits}.")
  if not 0.0 <= a <= 1.0:
    raise UserError(f"an action must be in [0, 1], got {a}.")
  bits = int(np.round(a * (max_bits - min_bits + 1) + min_bits - 0.5))
  return min(max(bits, min_bits), max_bits)


def _force_first_last(policy: list[list[int]], weights_only: bool) -> None:
  policy[0] = [FIXED_BITS, FULL_PRECISION]
  policy[-1] = [FIXED_BITS, FULL_PRECISION if weights_only else FIXED_BITS]


def budget_walk(policy: Sequence[tuple[int, int]], cost_fn: Callable[[Policy], float],
                target: float, *, min_bits: int, first_last_fixed: bool = True,
                weights_only: bool = False) -> Policy:
  """Walks an over-budget policy down until `cost_fn(policy) <= target` (spec §2 Budget).

  While over budget, layers are visited last -> first; at each, one activation bit goes, then
  (if still over) one weight bit, never below `min_bits` (bits already at or below it, and
  `FULL_PRECISION` ones, are left alone); the budget is checked after every removal. With
  `first_last_fixed`, every removal is followed by forcing the first layer to w8 with an
  unquantised input and the last to w8a8 - only inside this loop: a policy that fits keeps its
  own first and last layers. `weights_only` (the k-means env) walks weight bits only; its
  activations stay `FULL_PRECISION` (so a forced last layer is w8 with a full-precision a).

  Args:
    policy: `(w_bits, a_bits)` per layer, in layer order.
    cost_fn: the cost of a policy (latency, size, energy ...), non-increasing as bits drop.
    target: the budget in `cost_fn`'s unit.
    min_bits: the floor of the walk.
    first_last_fixed: force the first/last layers while walking (the linear env).
    weights_only: leave activation bits alone (the k-means env).

  Returns:
    The walked policy (a new list; the input is not modified).

  Raises:
    UserError: even the smallest policy the walk can reach costs more than `target`.
  """
  walked = [list(bits) for bits in policy]
  if not walked or any(len(bits) != 2 for bits in walked):
    raise UserError("a policy must be a non-empty list of (w_bits, a_bits) pairs.")
  if cost_fn(_as_policy(walked)) <= target:
    return _as_policy(walked)

  def lowered(bits: int) -> int:
    return bits if bits <= min_bits or bits == FULL_PRECISION else min_bits

  floor = [[lowered(w), a if weights_only else lowered(a)] for w, a in walked]
  if first_last_fixed:
    _force_first_last(floor, weights_only)
  smallest = cost_fn(_as_policy(floor))
  if smallest > target:
    raise UserError(
        f"the budget {target:g} cannot be met: the smallest policy costs {smallest:g} "
        f"({min_bits}-bit layers" + (f", first and last at {FIXED_BITS} bits" if
                                     first_last_fixed else "") +
        "), so raise the budget (preserve ratio) or lower min_bits.")

  def remove_bit(layer: int, column: int) -> bool:
    """Takes one bit from walked[layer][column]; True once the policy fits."""
    bits = walked[layer][column]
    if min_bits < bits < FULL_PRECISION:
      walked[layer][column] = bits - 1
    if first_last_fixed:
      _force_first_last(walked, weights_only)
    return cost_fn(_as_policy(walked)) <= target

  # Terminates: each pass removes a bit somewhere until `walked` equals `floor`, which fits.
  while True:
    for layer in reversed(range(len(walked))):
      if not weights_only and remove_bit(layer, 1):
        return _as_policy(walked)
      if remove_bit(layer, 0):
        return _as_policy(walked)


def _as_policy(bits: list[list[int]]) -> Policy:
  return [(int(w), int(a)) for w, a in bits]


@dataclasses.dataclass(frozen=True)
class HaqEpisode:
  """What one search episode chose and scored.

  Attributes:
    episode: its index.
    actions: the agent's raw actions in [0, 1], one per step.
    policy: `(w_bits, a_bits)` per layer after the budget walk.
    cost: `cost_fn(policy)`.
    accuracy: `reward_fn(policy)`, in the unit of `acc_orig` (the reference: percent).
    reward: 0.1 * (accuracy - acc_orig).
    sigma: the exploration width, None during warm-up (uniform actions).
    metrics: the agent's mean losses over this episode's updates (empty during warm-up).
  """
  episode: int
  actions: tuple[float, ...]
  policy: Policy
  cost: float
  accuracy: float
  reward: float
  sigma: float | None
  metrics: dict[str, float]


def run_episode(agent_state: DDPGState, agent_fns: DDPG, layers: Sequence[LayerInfo],
                states: np.ndarray, reward_fn: Callable[[Policy], float],
                cost_fn: Callable[[Policy], float], target: float, episode: int, *,
                acc_orig: float, min_bits: int, max_bits: int,
                linear: bool = True) -> tuple[DDPGState, HaqEpisode]:
  """One HAQ search episode: act per step, walk to the budget, score, store, learn.

  Steps through the rows of `states`, writing the previous step's bits / max_bits into the
  "last action" column before the agent sees a row; maps each action to bits; walks the
  policy down to `target` (forcing first/last layers in the linear env, as the reference
  does; the k-means env never forces them); calls `reward_fn(policy)` (the caller quantizes,
  fine-tunes and evaluates); stores the episode with reward 0.1 * (accuracy - acc_orig); and,
  past warm-up, runs one agent update per step in one call.

  Args:
    agent_state: the agent's state (donated: use the returned one).
    agent_fns: the `DDPG` agent, built with `obs_dim = states.shape[1]`.
    layers: the quantizable layers, in order.
    states: `haq_states(layers, linear=linear)`: `[2L, 10]` (linear) or `[L, 9]` (k-means).
    reward_fn: policy -> accuracy.
    cost_fn: policy -> cost, in the unit of `target`.
    target: the budget.
    episode: the episode index, 0 first.
    acc_orig: the unquantised model's accuracy.
    min_bits, max_bits: the bit range of an action (2-8 linear, 1-8 k-means in the reference).
    linear: the linear env (weight and activation bits) rather than k-means (weights only).

  Returns:
    `(agent_state, record)`.
  """
  steps_per_layer = 2 if linear else 1
  expected = (steps_per_layer * len(layers), LAST_ACTION_COLUMN + steps_per_layer)
  if np.shape(states) != expected:
    raise UserError(f"states must have shape {list(expected)} for {len(layers)} layers in the "
                    f"{'linear' if linear else 'k-means'} env, got {list(np.shape(states))}; "
                    f"build them with haq_states.")
  observations = np.array(states, np.float32)
  actions, bits = [], []
  for step in range(len(observations)):
    if step:
      observations[step, LAST_ACTION_COLUMN] = bits[-1] / max_bits
    action, agent_state = agent_fns.select_action(agent_state, observations[step], episode)
    actions.append(action)
    bits.append(action_to_bits(action, min_bits, max_bits))
  if linear:
    chosen = list(zip(bits[0::2], bits[1::2]))
  else:
    chosen = [(w, FULL_PRECISION) for w in bits]
  policy = budget_walk(chosen, cost_fn, target, min_bits=min_bits, first_last_fixed=linear,
                       weights_only=not linear)
  accuracy = float(reward_fn(policy))
  reward = 0.1 * (accuracy - acc_orig)
  agent_state = agent_fns.store_episode(agent_state, observations, np.asarray(actions), reward,
                                        episode=episode)
  warm = episode < agent_fns.config.warmup_episodes
  metrics: dict[str, float] = {}
  if not warm:
    agent_state, metrics = agent_fns.update_n(agent_state, len(observations))
  record = HaqEpisode(episode=episode, actions=tuple(actions), policy=policy,
                      cost=float(cost_fn(policy)), accuracy=accuracy, reward=reward,
                      sigma=None if warm else agent_fns.sigma(episode), metrics=metrics)
  return agent_state, record
