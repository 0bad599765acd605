"""AMC's layer-by-layer environment: states, the FLOPs clamp, rewards, one episode.

AMC (mit-han-lab/amc `env/channel_pruning_env.py`, spec §3) walks the prunable layers first
to last; at each the shared DDPG agent proposes the fraction of input channels to keep, and
the *action wall* clamps it so that the whole network can still meet the FLOPs budget:

- a >= lbound (0.2), and a <= the largest ratio for which the FLOPs of the layers chosen so
  far, this layer, and every later layer at its lower bound fit the budget;
- d' = ceil(c a / 8) * 8 kept channels (`pruning.round_width`).

We clamp on channel counts rather than ratios: later layers are counted at their *rounded*
lower-bound widths and the kept count is the largest multiple of 8 that fits, so the budget
holds exactly after rounding (the reference clamps the ratio, then rounds up, which can pass
the budget by up to 7 channels a layer). The first layer reads the image and keeps its 3
channels (the reference's strategy starts at 1.0 there). FLOPs are the multiply-adds of every
conv and dense layer, each scaled by its kept input and output fractions (a depthwise conv by
its one fraction), so `flops(widths)` is exact for the exported model.

Rewards (`env/rewards.py`): `acc` = accuracy (the reference's 0.01 * acc in percent; the budget
is enforced by the clamp) and `acc_flops` = -error * log(FLOPs).

This module is plain numpy/Python: the model, its pruning and its evaluation come in as
callbacks, so tests run it on hand-made networks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from lite_jax.automl.ddpg import DDPG, DDPGState
from lite_jax.automl.pruning import PrunableLayer, round_width
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo

# Columns of a state row (spec §3): 7 static ones, min-max normalised across the layers, then
# the running FLOPs reduced so far and FLOPs still ahead (fractions of the original) and the
# previous action.
STATE_FEATURES = ("index", "type", "c_in", "c_out", "stride", "kernel", "n_weights", "reduced",
                  "rest", "last_action")
REWARDS = ("acc", "acc_flops")


class FlopsModel:
  """Multiply-adds of a network as a function of the kept input widths of its prunable layers.

  Args:
    layers: every conv/dense layer (`list_layers`).
    plan: the prunable layers (`pruning.pruning_plan`).
  """

  def __init__(self, layers: Sequence[LayerInfo], plan: Sequence[PrunableLayer]):
    self.layers, self.plan = list(layers), list(plan)
    self.channels = np.array([unit.channels for unit in plan], np.float64)
    index = {layer.path: i for i, layer in enumerate(layers)}
    self._in = np.full(len(layers), -1)
    self._out = np.full(len(layers), -1)
    for u, unit in enumerate(plan):
      self._in[index[unit.path]] = u
      for module in (unit.producer, *unit.followers):
        if module is not None:
          j = index[f"{module}/conv"]
          self._out[j] = u
          if layers[j].depthwise:
            self._in[j] = u
    self._depthwise = np.array([layer.depthwise for layer in layers])
    self._macs = np.array([layer.macs for layer in layers], np.float64)
    self.original = float(self._macs.sum())

  def layer_macs(self, widths: Sequence[float]) -> np.ndarray:
    """`[layers]` MACs of each layer at `widths` (one per plan entry)."""
    ratio = np.append(np.asarray(widths, np.float64) / self.channels, 1.0)  # [-1] -> 1
    r_in, r_out = ratio[self._in], ratio[self._out]
    return self._macs * np.where(self._depthwise, r_in, r_in * r_out)

  def __call__(self, widths: Sequence[float]) -> float:
    return float(self.layer_macs(widths).sum())

  def after(self, unit: int) -> float:
    """Original MACs of the layers called after prunable layer `unit`."""
    position = next(i for i, layer in enumerate(self.layers) if layer.path ==
                    self.plan[unit].path)
    return float(self._macs[position + 1:].sum())


@dataclasses.dataclass(frozen=True)
class Bounds:
  """The action range and rounding: `lbound <= a <= rbound`, widths multiples of `multiple`."""
  lbound: float = 0.2
  rbound: float = 1.0
  multiple: int = 8

  def __post_init__(self):
    if not 0.0 < self.lbound <= self.rbound <= 1.0:
      raise UserError(f"the action bounds need 0 < lbound <= rbound <= 1, got {self.lbound} "
                      f"and {self.rbound}.")
    if self.multiple < 1:
      raise UserError(f"channels round to a positive multiple, got {self.multiple}.")


def lower_widths(plan: Sequence[PrunableLayer], bounds: Bounds) -> list[int]:
  """Every layer at its lower bound (the first keeps the image's channels)."""
  return [plan[0].channels] + [round_width(u.channels, bounds.lbound, bounds.multiple)
                               for u in plan[1:]]


def check_budget(flops: FlopsModel, bounds: Bounds, budget: float) -> None:
  """A `UserError` when even every layer at its lower bound exceeds `budget`."""
  smallest = flops(lower_widths(flops.plan, bounds))
  if smallest > budget:
    raise UserError(f"the FLOPs budget {budget / flops.original:.3f} of the original cannot be "
                    f"met: every layer at its lower bound {bounds.lbound} still keeps "
                    f"{smallest / flops.original:.3f}; raise the preserve ratio or lower lbound.")


def clamp_width(flops: FlopsModel, chosen: Sequence[int], action: float, budget: float,
                bounds: Bounds) -> int:
  """The kept input channels of layer `len(chosen)` for `action` (the action wall).

  Args:
    flops: the network's FLOPs model.
    chosen: the widths of the layers before this one.
    action: the agent's fraction of input channels to keep.
    budget: the FLOPs budget (MACs).
    bounds: lbound, rbound and rounding.

  Returns:
    d' = round_width(c, clip(action, lbound, rbound)), lowered to the widest multiple that
    keeps `chosen + [d'] + later layers at their lower bounds` within the budget (never below
    this layer's lower bound).
  """
  t, plan = len(chosen), flops.plan
  unit = plan[t]
  if t == 0:
    return unit.channels
  lower = lower_widths(plan, bounds)
  wanted = round_width(unit.channels, float(np.clip(action, bounds.lbound, bounds.rbound)),
                       bounds.multiple)
  width = lower[t]
  for candidate in range(wanted, lower[t], -1):
    if candidate % bounds.multiple and candidate != unit.channels:
      continue
    if flops([*chosen, candidate, *lower[t + 1:]]) <= budget:
      width = candidate
      break
  return width


def amc_states(flops: FlopsModel) -> np.ndarray:
  """`[L, 10]` static rows (columns `STATE_FEATURES`): index, type (0 conv, 1 dense), c_in,
  c_out, stride, kernel, #weights, each min-max normalised across the layers (a constant
  column is left as is, as in the reference), then reduced 0, rest 0 and last action 1 (the
  reference's reset values; `run_episode` fills them in before the agent sees a row)."""
  static = np.array([[i, float(u.layer.kind == "dense"), u.layer.c_in, u.layer.c_out,
                      u.layer.stride, u.layer.kernel, u.layer.n_weights]
                     for i, u in enumerate(flops.plan)], np.float64)
  low, high = static.min(axis=0), static.max(axis=0)
  spread = high - low
  static = np.where(spread > 0, (static - low) / np.where(spread > 0, spread, 1.0), static)
  dynamic = np.tile([0.0, 0.0, 1.0], (len(flops.plan), 1))
  return np.concatenate([static, dynamic], axis=1)


def reward_value(kind: str, accuracy: float, macs: float) -> float:
  """`acc`: accuracy (a fraction; the reference's 0.01 * percent); `acc_flops`:
  -(1 - accuracy) * log(MACs)."""
  if kind == "acc":
    return float(accuracy)
  if kind == "acc_flops":
    return float(-(1.0 - accuracy) * math.log(macs))
  raise UserError(f"unknown AMC reward {kind!r}; choose one of {REWARDS}.")


@dataclasses.dataclass(frozen=True)
class AmcEpisode:
  """What one search episode chose and scored.

  Attributes:
    episode: its index.
    actions: the agent's raw actions, one per prunable layer.
    widths: the kept input channels after the clamp.
    flops: MACs of the pruned network; `flops_ratio` of the original.
    accuracy: `evaluate(widths)` (held-out, without fine-tuning).
    reward: `reward_value(kind, accuracy, flops)`.
    sigma: the exploration width, None during warm-up.
    metrics: the agent's mean losses over this episode's updates.
  """
  episode: int
  actions: tuple[float, ...]
  widths: tuple[int, ...]
  flops: float
  flops_ratio: float
  accuracy: float
  reward: float
  sigma: float | None
  metrics: dict[str, float]


def run_episode(agent_state: DDPGState, agent: DDPG, flops: FlopsModel, states: np.ndarray,
                evaluate: Callable[[list[int]], float], episode: int, *, budget: float,
                bounds: Bounds, reward: str = "acc") -> tuple[DDPGState, AmcEpisode]:
  """One AMC episode: act layer by layer through the clamp, prune, score, store, learn.

  Before the agent sees row t, its running columns get the FLOPs reduced by the widths chosen
  so far (later layers at full width), the original FLOPs after layer t, and the previous
  (clamped) keep ratio. The agent's raw actions are stored, every transition with the final
  reward; past warm-up one update runs per layer.

  Args:
    agent_state: donated; use the returned one.
    agent: the DDPG agent (`obs_dim = 10`).
    flops: the FLOPs model; `states`: `amc_states(flops)`.
    evaluate: widths -> accuracy of the pruned (not fine-tuned) network.
    episode: its index.
    budget: FLOPs budget in MACs.
    bounds: action bounds and rounding.
    reward: "acc" or "acc_flops".
  """
  num = len(flops.plan)
  if np.shape(states) != (num, len(STATE_FEATURES)):
    raise UserError(f"states must have shape [{num}, {len(STATE_FEATURES)}], got "
                    f"{list(np.shape(states))}; build them with amc_states.")
  observations = np.array(states, np.float32)
  actions: list[float] = []
  widths: list[int] = []
  full = [u.channels for u in flops.plan]
  for t in range(num):
    observations[t, 7] = (flops.original - flops([*widths, *full[t:]])) / flops.original
    observations[t, 8] = flops.after(t) / flops.original
    observations[t, 9] = widths[-1] / full[t - 1] if t else 1.0
    action, agent_state = agent.select_action(agent_state, observations[t], episode)
    actions.append(action)
    widths.append(clamp_width(flops, widths, action, budget, bounds))
  macs = flops(widths)
  accuracy = float(evaluate(widths))
  value = reward_value(reward, accuracy, macs)
  agent_state = agent.store_episode(agent_state, observations, np.asarray(actions), value,
                                    episode=episode)
  warm = episode < agent.config.warmup_episodes
  metrics: dict[str, float] = {}
  if not warm:
    agent_state, metrics = agent.update_n(agent_state, num)
  return agent_state, AmcEpisode(
      episode=episode, actions=tuple(actions), widths=tuple(widths), flops=macs,
      flops_ratio=macs / flops.original, accuracy=accuracy, reward=value,
      sigma=None if warm else agent.sigma(episode), metrics=metrics)


def uniform_widths(flops: FlopsModel, budget: float, bounds: Bounds, multiple: int = 1
                   ) -> tuple[list[int], float]:
  """The widest uniform keep ratio within `budget` (the hand-crafted peer): every prunable
  layer but the first at `round_width(c, r, multiple)`; `(widths, r)`.

  `multiple` is 1 by default, not the search's 8: the peer then comes as close to the budget as
  whole channels allow. On a small network, steps of 8 channels are coarse (the demo's widest
  uniform width in multiples of 8 keeps only 0.42x of a 0.5x budget), and a peer with fewer
  FLOPs than the searched network would flatter the search.
  """
  plan = flops.plan
  for r in np.linspace(1.0, bounds.lbound, 801):
    widths = [plan[0].channels] + [round_width(u.channels, r, multiple) for u in plan[1:]]
    if flops(widths) <= budget:
      return widths, float(r)
  check_budget(flops, bounds, budget)
  return lower_widths(plan, bounds), bounds.lbound
