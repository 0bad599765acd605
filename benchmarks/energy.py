"""Tabular regressors at scale: fit + predict time on 10^5 rows, ours beside scikit-learn's.

  python -m benchmarks.energy                      # 10^5 rows, 64-member ANN ensembles
  python -m benchmarks.energy --rows=20000 --svr_rows=5000 --members=8   # quick
  python -m benchmarks.energy --only=svr --svr_rows=80000   # SVR on 10^5 rows (~30 min)
  python -m benchmarks.energy --smoke              # tiny, for the tests

Data: the solar-water-heater generator (`data/energy.py`, 8 inputs, heat collection), so every
model fits the same smooth, noisy target. Each measurement is one JSON line with the device,
the model, rows, fit and predict seconds (the first fit includes compilation: a second fit is
timed, `compile_s` is the difference) and held-out RMSE on 20% of the rows.

Peers, measured in the same run on the same rows:
* the ANN ensemble (`members` networks, one vmapped program; Adam full batch for a fixed number
  of iterations, no early stopping, so both sides do the same work) against
  `sklearn.neural_network.MLPRegressor` with the same layer, activation, solver, iterations and
  full batch, fitted `members` times in a loop (`--sk_members` of them timed, scaled to
  `members`, stated in the line as `peer_networks_timed`);
* the L-BFGS ANN against MLPRegressor's L-BFGS, one network each;
* SVR (scikit-learn: the spec's baseline) on `svr_rows` rows: its training is quadratic to
  cubic in the rows (10^5 takes hours on 2 cores), so it is measured on a subset and says so.
ELM and GRNN have no scikit-learn counterpart; their times are reported alone.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags
from sklearn.neural_network import MLPRegressor

from data import energy as energy_data
from lite_jax.energy import evaluation, models

_ROWS = flags.DEFINE_integer("rows", 100_000, "Generated rows (80% fit, 20% held out).")
_MEMBERS = flags.DEFINE_integer("members", 64, "ANN ensemble members.")
_ITERS = flags.DEFINE_integer("iterations", 200, "Full-batch Adam / L-BFGS iterations.")
_SK_MEMBERS = flags.DEFINE_integer("sk_members", 8, "MLPRegressor fits timed (scaled to "
                                   "--members).")
_SVR_ROWS = flags.DEFINE_integer("svr_rows", 10_000, "Rows SVR is fitted on.")
_ONLY = flags.DEFINE_list("only", ["ann_adam", "ann_lbfgs", "elm", "grnn", "svr"],
                          "Measurements to run.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes (tests).")


def _data(rows: int):
  table = energy_data.generate_swh(rows, seed=0)
  x = table.matrix(energy_data.SCHEMAS["swh"].input_names)
  y = table.columns["heat_collection"]
  cut = int(0.8 * rows)
  return x[:cut], y[:cut], x[cut:], y[cut:]


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _measure(make, x, y, xt, yt, *, repeat_fit=True) -> dict:
  """Fit (twice where the first compiles) and predict `make()`; seconds and test RMSE."""
  model, first = _timed(lambda: make().fit(x, y))
  fit_s = first
  if repeat_fit:
    model, fit_s = _timed(lambda: make().fit(x, y))
  model.predict(xt[:8])
  pred, predict_s = _timed(lambda: model.predict(xt))
  return {"fit_s": round(fit_s, 4), "compile_s": round(max(first - fit_s, 0.0), 3),
          "predict_s": round(predict_s, 4),
          "test_rmse": round(evaluation.regression_metrics(yt, pred)["rmse"], 4)}


def _sklearn_mlp(solver, iterations, seed):
  return MLPRegressor(hidden_layer_sizes=(10,), activation="tanh", solver=solver,
                      alpha=1e-4, batch_size=10**9, learning_rate_init=1e-2,
                      max_iter=iterations, tol=0.0, n_iter_no_change=10**9,
                      early_stopping=False, random_state=seed)


class _ScaledSklearn:
  """Standardizes x and y as our regressors do, so the peers solve the same problem."""

  def __init__(self, estimator):
    self.estimator = estimator

  def fit(self, x, y):
    self.xm, self.xs = x.mean(0), x.std(0)
    self.ym, self.ys = y.mean(), y.std()
    self.estimator.fit((x - self.xm) / self.xs, (y - self.ym) / self.ys)
    return self

  def predict(self, x):
    return self.estimator.predict((x - self.xm) / self.xs) * self.ys + self.ym


def main(_):
  rows, members, iters = _ROWS.value, _MEMBERS.value, _ITERS.value
  svr_rows, sk_members = _SVR_ROWS.value, _SK_MEMBERS.value
  if _SMOKE.value:
    rows, members, iters, svr_rows, sk_members = 400, 4, 20, 200, 2
  x, y, xt, yt = _data(rows)
  device = str(jax.devices()[0].device_kind)
  base = {"benchmark": "energy", "device": device, "rows": rows, "features": x.shape[1]}

  def emit(**line):
    print(json.dumps({**base, **line}), flush=True)

  def ann(solver, k):
    return lambda: models.ANN(hidden=10, activation="tanh", solver=solver, members=k,
                              max_iter=iters, validation_fraction=0.0, learning_rate=1e-2)

  only = set(_ONLY.value)
  if "ann_adam" in only:
    _ann_adam(x, y, xt, yt, ann, members, iters, sk_members, emit)
  if "ann_lbfgs" in only:
    _ann_lbfgs(x, y, xt, yt, ann, iters, emit)
  if "elm" in only:
    emit(model="elm", hidden=100, **_measure(lambda: models.ELM(hidden=100), x, y, xt, yt))
  if "grnn" in only:
    emit(model="grnn", **_measure(lambda: models.GRNN(), x, y, xt, yt))
  if "svr" in only:
    xs, ys = x[:svr_rows], y[:svr_rows]
    emit(model="svr", svr_rows=len(xs),
         **_measure(lambda: models.SVR(), xs, ys, xt, yt, repeat_fit=False))


def _ann_adam(x, y, xt, yt, ann, members, iters, sk_members, emit):
  """Adam ensembles: ours vmapped vs MLPRegressor in a loop."""
  ours = _measure(ann("adam", members), x, y, xt, yt)
  one = _measure(ann("adam", 1), x, y, xt, yt)
  sk_fit = []
  for seed in range(sk_members):
    _, s = _timed(lambda seed=seed: _ScaledSklearn(_sklearn_mlp("adam", iters, seed)).fit(x, y))
    sk_fit.append(s)
  peer_fit = float(np.mean(sk_fit)) * members
  sk_model = _ScaledSklearn(_sklearn_mlp("adam", iters, 0)).fit(x, y)
  pred, sk_predict = _timed(lambda: sk_model.predict(xt))
  emit(model="ann_ensemble_adam", members=members, iterations=iters, **ours,
       single_network_fit_s=one["fit_s"], peer="sklearn MLPRegressor x members",
       peer_fit_s=round(peer_fit, 3), peer_networks_timed=sk_members,
       peer_predict_s=round(sk_predict * members, 4),
       peer_test_rmse=round(evaluation.regression_metrics(yt, pred)["rmse"], 4),
       peer_ratio=round(peer_fit / ours["fit_s"], 2))


def _ann_lbfgs(x, y, xt, yt, ann, iters, emit):
  """L-BFGS, one network each."""
  ours = _measure(ann("lbfgs", 1), x, y, xt, yt)
  peer = _measure(lambda: _ScaledSklearn(_sklearn_mlp("lbfgs", iters, 0)), x, y, xt, yt,
                  repeat_fit=False)
  emit(model="ann_lbfgs", members=1, iterations=iters, **ours, peer="sklearn MLPRegressor "
       "lbfgs", peer_fit_s=peer["fit_s"], peer_predict_s=peer["predict_s"],
       peer_test_rmse=peer["test_rmse"], peer_ratio=round(peer["fit_s"] / ours["fit_s"], 2))


if __name__ == "__main__":
  app.run(main)
