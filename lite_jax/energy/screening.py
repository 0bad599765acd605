"""High-throughput screening of solar water heater designs (Li, Liu et al. 2017).

The papers rank candidate designs by predicted performance, but state neither the grid nor the
ranking rule (`specs/energy.md` §3), so both are explicit here and recorded with every result:

* **Designs**: the Cartesian product of `grid` values (tube length, tube count, tube spacing,
  tank water per tube-metre, tilt), or `samples` uniform draws over the same ranges. The tank
  is sized per tube-metre (kg per tube per metre of tube) so that every candidate is a heater
  a manufacturer would build; the model inputs follow from `data.energy.swh_design_inputs`
  (gross area from the geometry, the standard GB/T 19141 test day).
* **Uncertainty**: each target is predicted by an ensemble (an ANN's or ELM's vmapped members,
  or bootstrap refits of any other model); the spread is the members' standard deviation.
* **Ranking** (`rule`):
  - `constrained`: maximize `collection - risk * collection_std` among designs whose
    `loss + risk * loss_std <= max_heat_loss` (risk = 0 ranks by the means alone);
  - `weighted`: maximize `z(collection) - weight * z(loss)`, standardized over the designs,
    the same risk adjustment applied to each mean first.

Arrays: `designs[name]`: [n]; `mean[target]`, `std[target]`: [n].
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from data import energy as energy_data
from lite_jax.core import plots
from lite_jax.core.errors import UserError

COLLECTION, LOSS = "heat_collection", "heat_loss_coefficient"
DESIGN_VARIABLES = ("tube_length", "tube_count", "tube_spacing", "tank_mass_per_tube_metre",
                    "tilt")
RULES = ("constrained", "weighted")


def design_grid(grid: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
  """Every combination of the `DESIGN_VARIABLES` values in `grid`, plus `tank_mass` (kg)."""
  missing = [v for v in DESIGN_VARIABLES if v not in grid or not len(grid[v])]
  if missing:
    raise UserError(f"the screening grid needs values for {', '.join(missing)}.")
  product = np.array(list(itertools.product(*(np.asarray(grid[v], np.float64)
                                              for v in DESIGN_VARIABLES))))
  designs = {v: product[:, i] for i, v in enumerate(DESIGN_VARIABLES)}
  return _with_tank_mass(designs)


def sample_designs(n: int, seed: int,
                   ranges: Mapping[str, tuple[float, float]] = energy_data.SWH_DESIGN_RANGES
                   ) -> dict[str, np.ndarray]:
  """`n` uniform draws over `ranges` (tube counts rounded to integers)."""
  if n < 1:
    raise UserError(f"screen.samples must be positive, got {n}.")
  rng = np.random.default_rng(seed)
  designs = {v: rng.uniform(*ranges[v], n) for v in DESIGN_VARIABLES}
  designs["tube_count"] = np.round(designs["tube_count"])
  return _with_tank_mass(designs)


def _with_tank_mass(designs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  designs["tank_mass"] = np.round(designs["tank_mass_per_tube_metre"] *
                                  designs["tube_count"] * designs["tube_length"])
  return designs


@dataclasses.dataclass
class Screened:
  """Designs with their predictions, score and rank (`order[0]` is the best feasible)."""
  designs: dict[str, np.ndarray]
  mean: dict[str, np.ndarray]
  std: dict[str, np.ndarray]
  score: np.ndarray
  feasible: np.ndarray
  order: np.ndarray
  rule: str

  def row(self, i: int) -> dict[str, float]:
    out = {k: float(v[i]) for k, v in self.designs.items()}
    for t in self.mean:
      out[t] = float(self.mean[t][i])
      out[f"{t}_std"] = float(self.std[t][i])
    out["score"] = float(self.score[i])
    return out

  def top(self, k: int) -> list[dict[str, float]]:
    return [self.row(i) for i in self.order[:k]]


def rank(mean: Mapping[str, np.ndarray], std: Mapping[str, np.ndarray], *, rule: str,
         max_heat_loss: float, weight: float, risk: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(score [n], feasible [n] bool, order [n_feasible]): feasible designs by falling score."""
  if rule not in RULES:
    raise UserError(f"unknown screening rule {rule!r}; choose one of {', '.join(RULES)}.")
  collection = mean[COLLECTION] - risk * std[COLLECTION]
  loss = mean[LOSS] + risk * std[LOSS]
  if rule == "constrained":
    score = collection
    feasible = loss <= max_heat_loss
  else:
    def z(v):
      return (v - v.mean()) / max(v.std(), 1e-12)
    score = z(collection) - weight * z(loss)
    feasible = np.ones_like(score, bool)
  candidates = np.flatnonzero(feasible)
  order = candidates[np.argsort(-score[candidates], kind="stable")]
  return score, feasible, order


def pareto_front(collection: np.ndarray, loss: np.ndarray) -> np.ndarray:
  """Mask [n] of the designs no other design beats on both targets (more collection, less
  loss)."""
  order = np.lexsort((loss, -collection))  # by collection falling, ties by loss rising
  front = np.zeros(len(collection), bool)
  best_loss = np.inf
  for i in order:
    if loss[i] < best_loss:
      front[i] = True
      best_loss = loss[i]
  return front


Predictor = Callable[[np.ndarray], np.ndarray]  # [n, d] -> members [k, n]


def screen(designs: dict[str, np.ndarray], predict_members: Mapping[str, Predictor], *,
           rule: str, max_heat_loss: float, weight: float, risk: float) -> Screened:
  """Predicts both targets of every design (ensemble mean and spread) and ranks them."""
  x = _model_inputs(designs)
  mean, std = {}, {}
  for target in (COLLECTION, LOSS):
    members = np.asarray(predict_members[target](x))
    mean[target] = members.mean(axis=0)
    std[target] = members.std(axis=0)
  score, feasible, order = rank(mean, std, rule=rule, max_heat_loss=max_heat_loss,
                                weight=weight, risk=risk)
  if not len(order):
    raise UserError(f"no screened design meets heat_loss_coefficient <= {max_heat_loss}; "
                    f"raise screen.max_heat_loss (the lowest predicted is "
                    f"{loss_floor(mean, std, risk):.3g}).")
  return Screened(designs, mean, std, score, feasible, order, rule)


def loss_floor(mean, std, risk) -> float:
  return float(np.min(mean[LOSS] + risk * std[LOSS]))


def _model_inputs(designs: Mapping[str, np.ndarray]) -> np.ndarray:
  inputs = energy_data.swh_design_inputs(designs)
  return np.stack([inputs[c.name] for c in energy_data.SWH_INPUTS], axis=1)


def response_curves(best: Mapping[str, float], predict_members: Mapping[str, Predictor],
                    ranges: Mapping[str, tuple[float, float]] = energy_data.SWH_DESIGN_RANGES,
                    points: int = 25) -> dict[str, dict[str, np.ndarray]]:
  """Each design variable swept over its range with the others held at `best`:
  variable -> {"values": [points], target: [k, points] members}."""
  curves = {}
  for variable in DESIGN_VARIABLES:
    values = np.linspace(*ranges[variable], points)
    designs = {v: np.full(points, best[v]) for v in DESIGN_VARIABLES}
    designs[variable] = values
    x = _model_inputs(_with_tank_mass(designs))
    curves[variable] = {"values": values,
                        **{t: np.asarray(p(x)) for t, p in predict_members.items()}}
  return curves


def plot_screening(path: str, result: Screened, k: int, max_heat_loss: float) -> str:
  """Predicted collection vs heat loss of every design: the Pareto front, the constraint and
  the top `k`."""
  collection, loss = result.mean[COLLECTION], result.mean[LOSS]
  front = pareto_front(collection, loss)
  figure, ax = plots.subplots(figsize=(6, 4.5))
  ax.scatter(loss, collection, s=3, c="0.75", label=f"{len(loss)} designs")
  f = np.flatnonzero(front)
  f = f[np.argsort(loss[f])]
  ax.plot(loss[f], collection[f], "-o", ms=3, c="tab:blue", label="Pareto front")
  top = result.order[:k]
  ax.errorbar(loss[top], collection[top], xerr=result.std[LOSS][top],
              yerr=result.std[COLLECTION][top], fmt="*", c="tab:red", ms=8,
              label=f"top {len(top)} ({result.rule})")
  if result.rule == "constrained":
    ax.axvline(max_heat_loss, ls="--", c="k", lw=1, label="max heat loss")
  ax.set_xlabel("heat loss coefficient, W/(m$^3$ K)")
  ax.set_ylabel("heat collection, MJ/m$^2$")
  ax.legend(fontsize=8)
  return plots.save(figure, path)


def plot_response(path: str, curves: Mapping[str, Mapping[str, np.ndarray]]) -> str:
  """One column per design variable, one row per target: ensemble mean +- std."""
  targets = [t for t in next(iter(curves.values())) if t != "values"]
  figure, axes = plots.subplots(len(targets), len(curves),
                                figsize=(3 * len(curves), 2.6 * len(targets)), squeeze=False)
  for j, (variable, curve) in enumerate(curves.items()):
    for i, target in enumerate(targets):
      mean, std = curve[target].mean(0), curve[target].std(0)
      ax = axes[i, j]
      ax.plot(curve["values"], mean, c="tab:blue")
      ax.fill_between(curve["values"], mean - std, mean + std, alpha=0.3)
      ax.set_xlabel(variable, fontsize=8)
      if j == 0:
        ax.set_ylabel(target, fontsize=8)
  return plots.save(figure, path)
