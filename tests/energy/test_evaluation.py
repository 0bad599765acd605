"""Energy evaluation: metrics against hand computations and invariants, seeded (grouped)
splits, cross-validation without scaling leaks, and the hidden-size sweep."""

import numpy as np
import pytest
from scipy import stats

from lite_jax.core.errors import UserError
from lite_jax.energy import evaluation, models

# ----------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------


def test_metrics_against_hand_values():
  y = np.array([1.0, 2.0, 0.0, 4.0])
  p = np.array([1.5, 2.0, 1.0, 2.0])
  m = evaluation.regression_metrics(y, p)
  err = np.array([0.5, 0.0, 1.0, -2.0])
  assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)))
  assert m["mae"] == pytest.approx(0.875)
  assert m["r2"] == pytest.approx(1 - 5.25 / np.sum((y - 1.75) ** 2))
  # The zero target is left out of MAPE: (50% + 0% + 50%) / 3.
  assert m["mape"] == pytest.approx(100.0 / 3)
  # Within 30%: 2.0 exactly and nothing else (|0.5| > 0.3, |1| > 0, |2| > 1.2).
  assert m["within_30"] == pytest.approx(0.25)
  assert all(type(v) is float for v in m.values())


def test_metric_invariants():
  rng = np.random.default_rng(0)
  y = rng.uniform(1, 10, size=50)
  p = y * rng.uniform(0.6, 1.4, size=50)
  assert evaluation.regression_metrics(y, y)["within_30"] == 1.0
  base = evaluation.regression_metrics(y, p)
  scaled = evaluation.regression_metrics(123.0 * y, 123.0 * p)
  for name in ("within_30", "r2", "mape"):
    assert scaled[name] == pytest.approx(base[name])
  assert 0.0 < base["within_30"] < 1.0
  assert evaluation.regression_metrics(y, np.full_like(y, y.mean()))["r2"] == pytest.approx(
      0.0, abs=1e-12)


def test_metrics_reject_mismatched_shapes():
  with pytest.raises(UserError, match=r"shapes \(3,\) and \(2,\)"):
    evaluation.regression_metrics(np.zeros(3), np.zeros(2))


# ----------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------


def assert_partition(splits, n):
  tests = np.concatenate([te for _, te in splits])
  assert np.array_equal(np.sort(tests), np.arange(n))  # every row tested exactly once
  for tr, te in splits:
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(n))
    assert np.intersect1d(tr, te).size == 0


def test_kfold_partitions_rows_deterministically():
  splits = evaluation.kfold_splits(23, 5, seed=3)
  assert_partition(splits, 23)
  assert sorted(len(te) for _, te in splits) == [4, 4, 5, 5, 5]
  again = evaluation.kfold_splits(23, 5, seed=3)
  assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
  other = evaluation.kfold_splits(23, 5, seed=4)
  assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other))


def test_grouped_kfold_never_splits_a_group():
  rng = np.random.default_rng(1)
  groups = np.repeat(np.arange(30), rng.integers(1, 6, size=30))  # 30 buildings
  groups = rng.permutation(groups)
  n = len(groups)
  splits = evaluation.kfold_splits(n, 5, seed=0, groups=groups)
  assert_partition(splits, n)
  for tr, te in splits:
    assert not set(groups[tr]) & set(groups[te])
  sizes = [len(te) for _, te in splits]
  assert max(sizes) - min(sizes) <= 5  # balanced up to one group's size
  again = evaluation.kfold_splits(n, 5, seed=0, groups=groups)
  assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_holdout_splits():
  splits = evaluation.holdout_splits(40, 0.25, repeats=3, seed=0)
  assert len(splits) == 3
  for tr, te in splits:
    assert len(te) == 10 and len(tr) == 30 and np.intersect1d(tr, te).size == 0
  assert not np.array_equal(splits[0][1], splits[1][1])
  groups = np.repeat(np.arange(10), 4)
  for tr, te in evaluation.holdout_splits(40, 0.25, repeats=4, seed=1, groups=groups):
    assert not set(groups[tr]) & set(groups[te])
    assert len(te) == 12  # groups are added until the test rows reach 10
  a = evaluation.holdout_splits(40, 0.25, repeats=2, seed=5, groups=groups)
  b = evaluation.holdout_splits(40, 0.25, repeats=2, seed=5, groups=groups)
  assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("call,match", [
    (lambda: evaluation.kfold_splits(4, 5, 0), r"too few rows \(4\) for 5 folds"),
    (lambda: evaluation.kfold_splits(10, 1, 0), "k must be an integer >= 2"),
    (lambda: evaluation.kfold_splits(10, 4, 0, groups=[0, 1, 2] * 3 + [0]),
     r"too few groups \(3\) for 4 folds"),
    (lambda: evaluation.kfold_splits(10, 2, 0, groups=[0, 1]), r"groups must have shape \[10\]"),
    (lambda: evaluation.holdout_splits(10, 1.5, 2, 0), r"test_fraction must be in \(0, 1\)"),
    (lambda: evaluation.holdout_splits(10, 0.2, 0, 0), "repeats must be"),
    (lambda: evaluation.holdout_splits(10, 0.2, 1, 0, groups=[7] * 10), "too few groups"),
])
def test_split_errors(call, match):
  with pytest.raises(UserError, match=match):
    call()


# ----------------------------------------------------------------------------------------
# Cross-validation
# ----------------------------------------------------------------------------------------


class NumpyLinear:
  """Least squares with intercept, numpy only: lets the CV bookkeeping be checked exactly."""

  def fit(self, x, y):
    a = np.c_[x, np.ones(len(x))]
    self.coef = np.linalg.lstsq(a, y, rcond=None)[0]
    return self

  def predict(self, x):
    return np.c_[x, np.ones(len(x))] @ self.coef


@pytest.fixture(scope="module")
def cv_data():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(50, 3)) * [1.0, 10.0, 0.1] + [5.0, -2.0, 0.0]
  y = x @ np.array([1.0, 0.2, 3.0]) + 10.0 + rng.normal(scale=0.5, size=50)
  return x, y


def test_cross_validate_bookkeeping(cv_data):
  x, y = cv_data
  splits = evaluation.kfold_splits(50, 5, seed=0)
  result = evaluation.cross_validate(NumpyLinear, x, y, splits)
  assert len(result.per_split) == 5
  oof = np.empty(50)
  for tr, te in splits:
    oof[te] = NumpyLinear().fit(x[tr], y[tr]).predict(x[te])
  np.testing.assert_allclose(result.oof, oof)
  rmses = [np.sqrt(np.mean((oof[te] - y[te]) ** 2)) for _, te in splits]
  assert result.mean["rmse"] == pytest.approx(np.mean(rmses))
  low, _ = stats.t.interval(0.95, 4, loc=np.mean(rmses), scale=stats.sem(rmses))
  assert result.ci95["rmse"] == pytest.approx(np.mean(rmses) - low)
  summary = result.summary()
  assert summary["rmse"] == result.mean["rmse"] and summary["n_splits"] == 5
  assert set(summary) >= {"mae_ci95", "r2", "within_30", "mape_ci95"}


def test_cross_validate_oof_averages_repeats_and_leaves_untested_nan(cv_data):
  x, y = cv_data
  splits = [(np.arange(10, 50), np.arange(0, 10)), (np.arange(5, 50), np.arange(0, 5))]
  result = evaluation.cross_validate(NumpyLinear, x, y, splits)
  first = NumpyLinear().fit(x[10:], y[10:]).predict(x[:5])
  second = NumpyLinear().fit(x[5:], y[5:]).predict(x[:5])
  np.testing.assert_allclose(result.oof[:5], (first + second) / 2)
  assert np.isnan(result.oof[10:]).all()


def test_cross_validation_never_leaks_scaling(cv_data):
  x, y = cv_data
  fitted = []

  def make_model():
    fitted.append(models.GRNN(sigma=0.5))
    return fitted[-1]

  splits = evaluation.kfold_splits(50, 5, seed=1)
  result = evaluation.cross_validate(make_model, x, y, splits)
  assert len(fitted) == 5 and len({id(m) for m in fitted}) == 5  # a fresh model per split
  for model, (tr, _) in zip(fitted, splits):
    np.testing.assert_allclose(model.x_scaler.mean, x[tr].mean(0))
    np.testing.assert_allclose(model.x_scaler.std, x[tr].std(0))
    assert not np.allclose(model.x_scaler.mean, x.mean(0))
  assert np.isfinite(result.oof).all()


def test_hidden_size_sweep_picks_the_best_size(cv_data):
  x, y = cv_data[0][:48], cv_data[1][:48]  # equal fold sizes: one compile per hidden size
  splits = evaluation.kfold_splits(48, 3, seed=0)
  sweep = evaluation.hidden_size_sweep(
      lambda h: models.ELM(hidden=h, ridge=1e-3), [1, 20], x, y, splits)
  assert set(sweep["by_size"]) == {1, 20}
  rmse = {s: sweep["by_size"][s]["rmse"] for s in (1, 20)}
  assert sweep["best_size"] == min(rmse, key=rmse.get) == 20
  direct = evaluation.cross_validate(lambda: models.ELM(hidden=1, ridge=1e-3), x, y, splits)
  assert rmse[1] == pytest.approx(direct.mean["rmse"])
