"""Evaluation of the energy regressors: metrics, seeded splits, cross-validation, size sweeps.

- `regression_metrics(y_true, y_pred)`: RMSE, MAE, R^2, MAPE (percent) and `within_30`, the
  fungi paper's share of predictions within +-30% of the measured value.
- `kfold_splits` / `holdout_splits`: deterministic index splits from a seed, optionally
  grouped (e.g. by building, so that no building is in both the training and the test rows).
- `cross_validate(make_model, x, y, splits)`: a fresh model per split, fitted on the training
  rows only (the models fit their scalers in `fit`), per-split metrics, their mean and 95%
  t-interval half-width, and out-of-fold predictions for a predicted-vs-measured plot.
- `hidden_size_sweep`: the cross-validated metrics per hidden size and the best size by mean
  RMSE (the fungi paper selected 10 hidden nodes out of 1-20).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from lite_jax.core.errors import UserError

METRICS = ("rmse", "mae", "r2", "mape", "within_30")
Split = tuple[np.ndarray, np.ndarray]


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
  """y_true, y_pred: [n] -> {rmse, mae, r2, mape, within_30} as Python floats.

  mape is in percent over the rows with y_true != 0 (NaN if there are none); within_30 is
  the share of rows with |pred - true| <= 0.3 |true|; r2 is NaN when y_true is constant.
  """
  y_true = np.asarray(y_true, np.float64)
  y_pred = np.asarray(y_pred, np.float64)
  if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
    raise UserError(f"y_true and y_pred must be non-empty 1-D arrays of one shape [n], got "
                    f"shapes {y_true.shape} and {y_pred.shape}.")
  err = y_pred - y_true
  ss_tot = np.sum((y_true - y_true.mean()) ** 2)
  nonzero = y_true != 0
  return {
      "rmse": float(np.sqrt(np.mean(err ** 2))),
      "mae": float(np.mean(np.abs(err))),
      "r2": float(1.0 - np.sum(err ** 2) / ss_tot) if ss_tot > 0 else float("nan"),
      "mape": (float(100.0 * np.mean(np.abs(err[nonzero] / y_true[nonzero])))
               if nonzero.any() else float("nan")),
      "within_30": float(np.mean(np.abs(err) <= 0.3 * np.abs(y_true))),
  }


# ----------------------------------------------------------------------------------------
# Splits.
# ----------------------------------------------------------------------------------------


def _check_groups(n: int, groups: Any) -> tuple[np.ndarray, np.ndarray]:
  """groups: [n] labels -> (unique labels [g], group index of each row [n])."""
  groups = np.asarray(groups)
  if groups.shape != (n,):
    raise UserError(f"groups must have shape [{n}] (one label per row), got {groups.shape}.")
  return np.unique(groups, return_inverse=True)


def _check_n(n: int) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise UserError(f"n must be a positive number of rows, got {n!r}.")
  return int(n)


def kfold_splits(n: int, k: int, seed: int, groups: Any = None) -> list[Split]:
  """k folds of the rows 0..n-1 as [(train_idx, test_idx)], each array sorted.

  Without groups: a seeded permutation cut into k folds of sizes differing by at most one.
  With groups ([n] labels): whole groups go to one fold; the groups are shuffled with the
  seed, then placed largest first into the fold with the fewest rows so far (ties: the first
  in shuffled order / the lowest fold), so folds are balanced by size.
  """
  n = _check_n(n)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
    raise UserError(f"k must be an integer >= 2 folds, got {k!r}.")
  rng = np.random.default_rng(seed)
  if groups is None:
    if k > n:
      raise UserError(f"too few rows ({n}) for {k} folds.")
    folds = np.array_split(rng.permutation(n), k)
  else:
    labels, inverse = _check_groups(n, groups)
    if k > len(labels):
      raise UserError(f"too few groups ({len(labels)}) for {k} folds.")
    sizes = np.bincount(inverse)
    order = rng.permutation(len(labels))
    # A stable sort keeps the shuffled order among groups of equal size.
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(len(labels), np.int64)
    fold_rows = np.zeros(k, np.int64)
    for g in order:
      f = int(np.argmin(fold_rows))
      fold_of_group[g] = f
      fold_rows[f] += sizes[g]
    fold_of_row = fold_of_group[inverse]
    folds = [np.flatnonzero(fold_of_row == f) for f in range(k)]
  all_rows = np.arange(n)
  return [(np.setdiff1d(all_rows, f), np.sort(f)) for f in folds]


def holdout_splits(n: int, test_fraction: float, repeats: int, seed: int,
                   groups: Any = None) -> list[Split]:
  """`repeats` random hold-out splits [(train_idx, test_idx)], each array sorted.

  Without groups: round(test_fraction * n) test rows (at least 1, at most n - 1) per repeat.
  With groups: whole groups are added in seeded random order until the test rows reach
  test_fraction * n (at least one group, never all of them).
  """
  n = _check_n(n)
  if not 0.0 < float(test_fraction) < 1.0:
    raise UserError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
  if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise UserError(f"repeats must be an integer >= 1, got {repeats!r}.")
  rng = np.random.default_rng(seed)
  all_rows = np.arange(n)
  splits = []
  if groups is None:
    if n < 2:
      raise UserError(f"too few rows ({n}) for a hold-out split.")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    for _ in range(repeats):
      test = np.sort(rng.permutation(n)[:n_test])
      splits.append((np.setdiff1d(all_rows, test), test))
    return splits
  labels, inverse = _check_groups(n, groups)
  if len(labels) < 2:
    raise UserError(f"too few groups ({len(labels)}) for a grouped hold-out split.")
  sizes = np.bincount(inverse)
  for _ in range(repeats):
    order = rng.permutation(len(labels))
    taken = np.cumsum(sizes[order])
    n_groups = int(np.searchsorted(taken, test_fraction * n)) + 1
    n_groups = min(n_groups, len(labels) - 1)
    test = np.flatnonzero(np.isin(inverse, order[:n_groups]))
    splits.append((np.setdiff1d(all_rows, test), test))
  return splits


# ----------------------------------------------------------------------------------------
# Cross-validation.
# ----------------------------------------------------------------------------------------


def _ci95_half_width(values: np.ndarray) -> float:
  """Half-width of the two-sided 95% Student-t interval of the mean (NaN for one value)."""
  values = values[np.isfinite(values)]
  if values.size < 2:
    return float("nan")
  sem = np.std(values, ddof=1) / np.sqrt(values.size)
  return float(stats.t.ppf(0.975, values.size - 1) * sem)


@dataclasses.dataclass
class CVResult:
  """Cross-validation outcome.

  Attributes:
    per_split: one `regression_metrics` dict per split (on that split's test rows).
    mean: metric -> mean over splits.
    ci95: metric -> half-width of the 95% t-interval of that mean.
    oof: [n] out-of-fold predictions (mean over the splits that tested a row; NaN if none).
  """

  per_split: list[dict[str, float]]
  mean: dict[str, float]
  ci95: dict[str, float]
  oof: np.ndarray

  def summary(self) -> dict[str, float]:
    """Flat and JSON-friendly: {rmse, rmse_ci95, mae, mae_ci95, ..., n_splits}."""
    out: dict[str, float] = {}
    for name in METRICS:
      out[name] = self.mean[name]
      out[f"{name}_ci95"] = self.ci95[name]
    out["n_splits"] = len(self.per_split)
    return out


def cross_validate(make_model: Callable[[], Any], x: Any, y: Any,
                   splits: Sequence[Split]) -> CVResult:
  """Fits `make_model()` (a fresh, unfitted regressor per split) on each split's training rows
  and scores it on its test rows.

  x: [n, d], y: [n], splits: [(train_idx, test_idx)] as from `kfold_splits`.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.shape != (x.shape[0],):
    raise UserError(f"x must have shape [n, d] and y shape [n], got {x.shape} and {y.shape}.")
  if not splits:
    raise UserError("splits must hold at least one (train_idx, test_idx) pair.")
  n = x.shape[0]
  pred_sum = np.zeros(n)
  pred_count = np.zeros(n)
  per_split = []
  for train_idx, test_idx in splits:
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    if np.intersect1d(train_idx, test_idx).size:
      raise UserError("a split's training and test rows overlap; test rows must be held out.")
    model = make_model()
    model.fit(x[train_idx], y[train_idx])
    pred = model.predict(x[test_idx])
    per_split.append(regression_metrics(y[test_idx], pred))
    np.add.at(pred_sum, test_idx, pred)
    np.add.at(pred_count, test_idx, 1.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    oof = np.where(pred_count > 0, pred_sum / pred_count, np.nan)
  table = {name: np.array([m[name] for m in per_split]) for name in METRICS}
  # nanmean: r2 / mape may be undefined on a split (constant or all-zero targets).
  mean = {name: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
          for name, v in table.items()}
  ci95 = {name: _ci95_half_width(v) for name, v in table.items()}
  return CVResult(per_split=per_split, mean=mean, ci95=ci95, oof=oof)


def hidden_size_sweep(make_model: Callable[[int], Any], sizes: Sequence[int], x: Any, y: Any,
                      splits: Sequence[Split]) -> dict[str, Any]:
  """Cross-validates `make_model(size)` for every hidden size on the same splits.

  Returns {"by_size": {size: CVResult.summary()}, "best_size": the size with the lowest mean
  RMSE (the smallest such size on a tie)}.
  """
  sizes = [int(s) for s in sizes]
  if not sizes:
    raise UserError("sizes must list at least one hidden size.")
  by_size = {s: cross_validate(lambda s=s: make_model(s), x, y, splits).summary()
             for s in sizes}
  best = min(sizes, key=lambda s: (by_size[s]["rmse"], s))
  return {"by_size": by_size, "best_size": best}
