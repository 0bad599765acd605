"""Energy regressors against independent references: numpy least squares for the ELM, a
numpy Nadaraya-Watson double loop (and LOO) for the GRNN, a known smooth function for the
ANN, plus the limits, the one-program ensemble, save/load and the input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.energy import models


def smooth(x):
  """x: [n, 2] -> [n], the function the ANN must learn."""
  return np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2


@pytest.fixture(scope="module")
def smooth_data():
  rng = np.random.default_rng(0)
  x = rng.uniform(-2, 2, size=(400, 2))
  y = smooth(x)
  return x[:300], y[:300], x[300:], y[300:]


def rmse(a, b):
  return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def standardize_like_numpy(x_train, x):
  return (x - x_train.mean(0)) / x_train.std(0)


# ----------------------------------------------------------------------------------------
# ELM
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def elm_data():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(60, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
  y = np.tanh(x[:, 0]) + 0.1 * x[:, 1] + rng.normal(scale=0.05, size=60)
  return x, y


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_elm_readout_equals_numpy_least_squares(elm_data, ridge):
  x, y = elm_data
  model = models.ELM(hidden=10, ridge=ridge, members=2, seed=3).fit(x, y)
  h = model.hidden_features(x)[1].astype(np.float64)  # [n, hidden]
  ys = (y - y.mean()) / y.std()
  if ridge == 0:
    beta = np.linalg.lstsq(h, ys, rcond=None)[0]
  else:
    beta = np.linalg.solve(h.T @ h + ridge * np.eye(h.shape[1]), h.T @ ys)
  np.testing.assert_allclose(model.beta_[1], beta, rtol=2e-3, atol=2e-3)
  np.testing.assert_allclose(model.predict_members(x)[1], h @ beta * y.std() + y.mean(),
                             atol=1e-3)


def test_elm_ridge_by_leave_one_out_equals_numpy_refits(elm_data):
  x, y = elm_data
  grid = [1e-3, 1e-1, 1.0, 10.0, 100.0]
  model = models.ELM(hidden=40, ridge_grid=grid, members=2, seed=3).fit(x, y)
  h = model.hidden_features(x)[1].astype(np.float64)
  ys = (y - y.mean()) / y.std()
  expected = []
  for ridge in grid:  # an explicit refit without each row
    errors = []
    for i in range(len(x)):
      keep = np.arange(len(x)) != i
      beta = np.linalg.solve(h[keep].T @ h[keep] + ridge * np.eye(40), h[keep].T @ ys[keep])
      errors.append(h[i] @ beta - ys[i])
    expected.append(np.sqrt(np.mean(np.square(errors))))
  np.testing.assert_allclose(model.loo_rmse_[1], expected, rtol=2e-2)
  assert model.ridge_[1] == pytest.approx(grid[int(np.argmin(expected))])
  # The chosen penalty is used: the readout equals the ridge solution at it.
  beta = np.linalg.solve(h.T @ h + model.ridge_[1] * np.eye(40), h.T @ ys)
  np.testing.assert_allclose(model.beta_[1], beta, rtol=5e-3, atol=5e-3)


def test_elm_hidden_layer_is_the_documented_random_layer(elm_data):
  x, y = elm_data
  model = models.ELM(hidden=10, ridge=0.1, members=2, seed=3).fit(x, y)
  h = 1 / (1 + np.exp(-(standardize_like_numpy(x, x) @ model.w_[1] + model.b_[1])))
  np.testing.assert_allclose(model.hidden_features(x)[1], h, atol=1e-5)
  assert np.all(np.abs(model.b_) <= 1.0)
  assert not np.allclose(model.w_[0], model.w_[1])


def test_elm_interpolates_with_as_many_hidden_nodes_as_rows(elm_data):
  x, y = elm_data
  x, y = x[:30], y[:30]
  model = models.ELM(hidden=60, ridge=0.0).fit(x, y)
  assert rmse(model.predict(x), y) < 1e-2 * y.std()
  # With fewer hidden nodes than rows it cannot interpolate: the check above can fail.
  x, y = elm_data
  fewer = models.ELM(hidden=10, ridge=0.0, members=2, seed=3).fit(x, y)  # compiled above
  assert rmse(fewer.predict(x), y) > 0.05 * y.std()


# ----------------------------------------------------------------------------------------
# GRNN
# ----------------------------------------------------------------------------------------


def numpy_nadaraya_watson(xt, yt, xq, sigma, exclude_self=False):
  """A plain double loop in float64: xt [n, d], xq [m, d] (both standardized) -> [m]."""
  out = np.empty(len(xq))
  for j, q in enumerate(xq):
    num = den = 0.0
    for i, (p, target) in enumerate(zip(xt, yt)):
      if exclude_self and i == j:
        continue
      w = np.exp(-np.sum((q - p) ** 2) / (2 * sigma ** 2))
      num += w * target
      den += w
    out[j] = num / den
  return out


@pytest.fixture(scope="module")
def grnn_data():
  rng = np.random.default_rng(2)
  x = rng.uniform(0, 4, size=(40, 2)) * [1.0, 100.0]
  y = np.sin(x[:, 0]) + 0.01 * x[:, 1] + rng.normal(scale=0.1, size=40)
  xq = rng.uniform(0, 4, size=(23, 2)) * [1.0, 100.0]
  return x, y, xq


@pytest.mark.parametrize("chunk_rows", [7, 4096])
def test_grnn_equals_numpy_double_loop(grnn_data, chunk_rows):
  x, y, xq = grnn_data
  model = models.GRNN(sigma=0.4, chunk_rows=chunk_rows).fit(x, y)
  want = numpy_nadaraya_watson(standardize_like_numpy(x, x), y, standardize_like_numpy(x, xq),
                               0.4)
  np.testing.assert_allclose(model.predict(xq), want, rtol=1e-4, atol=1e-5)


def test_grnn_limits(grnn_data):
  x, y, xq = grnn_data
  np.testing.assert_allclose(models.GRNN(sigma=1e-3, chunk_rows=7).fit(x, y).predict(x), y,
                             atol=1e-5)
  np.testing.assert_allclose(models.GRNN(sigma=1e4, chunk_rows=7).fit(x, y).predict(xq),
                             np.full(len(xq), y.mean()), atol=1e-5)


def test_grnn_leave_one_out_choice_equals_numpy(grnn_data):
  x, y, _ = grnn_data
  grid = (0.03, 0.1, 0.2, 0.4, 0.8, 3.0)
  model = models.GRNN(sigma_grid=grid, chunk_rows=16).fit(x, y)
  xs = standardize_like_numpy(x, x)
  curve = [rmse(numpy_nadaraya_watson(xs, y, xs, s, exclude_self=True), y) for s in grid]
  np.testing.assert_allclose(model.loo_rmse_, curve, rtol=1e-4)
  assert model.sigma_ == grid[int(np.argmin(curve))]
  assert 0 < int(np.argmin(curve)) < len(grid) - 1  # an interior minimum, not a grid edge


def test_grnn_loo_subsample_is_seeded_and_bounded(grnn_data):
  x, y, _ = grnn_data
  a = models.GRNN(max_loo_rows=10, seed=1, sigma_grid=(0.1, 0.3)).fit(x, y)
  b = models.GRNN(max_loo_rows=10, seed=1, sigma_grid=(0.1, 0.3)).fit(x, y)
  assert len(a.loo_rows_) == 10 and np.array_equal(a.loo_rows_, b.loo_rows_)
  xs = standardize_like_numpy(x, x)
  # Each LOO query row is predicted from all other training rows, not only the subset.
  pred = numpy_nadaraya_watson(xs, y, xs, 0.3, exclude_self=True)[a.loo_rows_]
  np.testing.assert_allclose(a.loo_rmse_[1], rmse(pred, y[a.loo_rows_]), rtol=1e-4)


# ----------------------------------------------------------------------------------------
# ANN
# ----------------------------------------------------------------------------------------


# All L-BFGS fits below share one compiled program: the ensemble size, the data shape and
# the static settings (hidden, activation, solver, max_iter) are the same; patience, l2,
# the validation size and bootstrap are traced.
ANN_SHARED = dict(hidden=10, solver="lbfgs", members=4, max_iter=300)


@pytest.fixture(scope="module")
def ann_ensemble(smooth_data):
  """A bootstrap ensemble of 4, with the number of calls / compiles of the training program."""
  x, y, _, _ = smooth_data
  calls = []
  train = models._ann_train

  def counting_train(*args, **kwargs):
    calls.append(args[0].shape)
    return train(*args, **kwargs)

  before = train._cache_size()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(models, "_ann_train", counting_train)
    model = models.ANN(bootstrap=True, **ANN_SHARED).fit(x, y)
  return model, calls, train._cache_size() - before


@pytest.fixture(scope="module")
def ann_adam(smooth_data):
  x, y, _, _ = smooth_data
  return models.ANN(hidden=10, solver="adam", learning_rate=0.03, max_iter=1500,
                    validation_fraction=0.0).fit(x, y)


def test_ann_lbfgs_ensemble_fits_a_known_smooth_function(smooth_data, ann_ensemble):
  _, _, x_test, y_test = smooth_data
  model = ann_ensemble[0]
  assert rmse(model.predict(x_test), y_test) < 0.15 * y_test.std()


def test_ann_adam_fits_a_known_smooth_function(smooth_data, ann_adam):
  _, _, x_test, y_test = smooth_data
  assert rmse(ann_adam.predict(x_test), y_test) < 0.15 * y_test.std()
  assert ann_adam.predict_members(x_test).shape == (1, len(x_test))


def test_ann_without_validation_trains_max_iter(ann_adam):
  assert ann_adam.n_iter_.tolist() == [1500]
  assert np.isnan(ann_adam.best_val_loss_).all()


def test_ann_members_train_in_one_program(smooth_data, ann_ensemble):
  _, _, x_test, _ = smooth_data
  model, calls, compiles = ann_ensemble
  assert calls == [(4, 2)]  # one call for all members ...
  assert compiles == 1  # ... compiled once
  members = model.predict_members(x_test)
  assert members.shape == (4, len(x_test))
  assert members.std(axis=0).mean() > 1e-3
  np.testing.assert_allclose(model.predict(x_test), members.mean(axis=0))
  # Each member has its own validation split of round(0.15 * 300) rows.
  assert model.validation_mask_.sum(axis=1).tolist() == [45] * 4
  assert len({m.tobytes() for m in model.validation_mask_}) == 4


def test_ann_early_stopping_keeps_best_validation_params(ann_ensemble):
  rng = np.random.default_rng(4)
  x = rng.uniform(-2, 2, size=(300, 2))
  y = smooth(x) + rng.normal(scale=1.0, size=300)
  patience = 10
  before = models._ann_train._cache_size()
  model = models.ANN(l2=0.0, patience=patience, validation_fraction=0.25, seed=1,
                     **ANN_SHARED).fit(x, y)
  assert models._ann_train._cache_size() == before  # patience etc. are traced
  ys = (y - y.mean()) / y.std()
  for k in range(4):
    n_iter = int(model.n_iter_[k])
    history = model.val_history_[k]
    assert n_iter < ANN_SHARED["max_iter"]  # stopped early on noisy data
    assert np.isfinite(history[:n_iter]).all() and np.isnan(history[n_iter:]).all()
    best = int(np.argmin(history[:n_iter]))
    assert best == n_iter - patience - 1  # stopped `patience` iterations after the best
    assert history[n_iter - 1] > history[best]
    # The kept parameters are the best ones: their validation MSE, recomputed from member
    # k's predictions on its held-out rows, is the minimum of the history, not the last value.
    val = model.validation_mask_[k]
    assert val.sum() == 75
    pred_s = (model.predict_members(x)[k] - y.mean()) / y.std()
    np.testing.assert_allclose(np.mean((pred_s[val] - ys[val]) ** 2), history[best],
                               rtol=1e-4)
    np.testing.assert_allclose(model.best_val_loss_[k], history[best], rtol=1e-6)


def test_x_scaler_holds_the_fit_data_statistics(ann_ensemble, smooth_data):
  x, _, _, _ = smooth_data
  np.testing.assert_allclose(ann_ensemble[0].x_scaler.mean, x.mean(0))
  np.testing.assert_allclose(ann_ensemble[0].x_scaler.std, x.std(0))


# ----------------------------------------------------------------------------------------
# SVR, save/load, registry and errors.
# ----------------------------------------------------------------------------------------


def test_svr_smoke(smooth_data):
  x, y, x_test, y_test = smooth_data
  model = models.SVR().fit(x[:150], y[:150])
  assert rmse(model.predict(x_test), y_test) < 0.3 * y_test.std()
  assert model.predict_members(x_test).shape == (1, len(x_test))


@pytest.mark.parametrize("name,config", [
    ("ann", None),  # the fitted ensemble fixture
    ("elm", {"hidden": 10, "ridge": 0.1, "members": 2}),
    ("grnn", {"sigma_grid": [0.1, 0.5]}),
    ("svr", {"C": 3.0}),
])
def test_save_load_round_trip(smooth_data, ann_ensemble, tmp_path, name, config):
  x, y, x_test, _ = smooth_data
  if config is None:
    model = ann_ensemble[0]
  else:
    model = models.make_regressor(name, config).fit(x[:80], y[:80])
  model.save(str(tmp_path))
  loaded = models.load_regressor(str(tmp_path))
  assert loaded.name == name and loaded.config == model.config
  np.testing.assert_array_equal(loaded.predict_members(x_test), model.predict_members(x_test))


def test_config_is_explicit_and_registry_complete():
  assert models.REGRESSORS == ("ann", "elm", "grnn", "svr")
  assert models.make_regressor("ann", {}).config == dict(
      hidden=10, activation="tanh", solver="lbfgs", members=1, l2=1e-4, max_iter=500,
      learning_rate=1e-2, validation_fraction=0.15, patience=30, bootstrap=False, seed=0)
  assert models.make_regressor("elm", {}).config == dict(
      hidden=100, activation="sigmoid", ridge=None, ridge_grid=list(models.DEFAULT_RIDGE_GRID),
      members=1, seed=0)
  grnn = models.make_regressor("grnn", {}).config
  assert grnn["sigma"] is None and len(grnn["sigma_grid"]) == 30
  assert models.make_regressor("svr", {}).config == dict(C=10.0, epsilon=0.1, gamma="scale",
                                                         kernel="rbf")


@pytest.mark.parametrize("call,match", [
    (lambda: models.make_regressor("mlp", {}), "valid ones are ann, elm, grnn, svr"),
    (lambda: models.make_regressor("ann", {"hiden": 3}), "unknown ann config key.*hidden"),
    (lambda: models.ANN(activation="swish"), "activation must be one of tanh"),
    (lambda: models.ANN(solver="sgd"), "solver must be one of lbfgs, adam"),
    (lambda: models.ELM(ridge=-1.0), "ridge must be"),
    (lambda: models.GRNN().predict(np.zeros((2, 2))), "must be fitted before predict"),
    (lambda: models.GRNN(sigma=1.0).fit(np.zeros(5), np.zeros(5)), r"x must be a 2-D.*\(5,\)"),
    (lambda: models.GRNN(sigma=1.0).fit(np.zeros((5, 2)), np.zeros(4)), r"shape \[5\].*\(4,\)"),
    (lambda: models.GRNN(sigma=1.0).fit(np.full((3, 2), np.nan), np.zeros(3)), "non-finite"),
    (lambda: models.GRNN(sigma=1.0).fit(np.ones((3, 2)), [0, 1, np.inf]), "y of shape"),
    (lambda: models.GRNN(sigma=1.0).fit(np.eye(3), np.arange(3.0)).predict(np.eye(2)),
     r"shape \[m, 3\]"),
])
def test_user_errors(call, match):
  with pytest.raises(UserError, match=match):
    call()


def test_blocked_loss_sums_and_gradients_equal_the_whole_sum():
  # Above 2048 rows the ANN's losses run over rematerialized row blocks; same value and grad.
  rng = np.random.default_rng(0)
  n = 4096 + 512  # blocks of 512
  assert models.row_block(n) == 512 and models.row_block(300) == 300
  x = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=n), jnp.float32)
  w = jnp.asarray(rng.uniform(size=n), jnp.float32)
  v = jnp.asarray(rng.uniform(size=n) < 0.2, jnp.float32)

  def sums(theta):
    return models._blocked_sums(lambda xb: jnp.tanh(xb @ theta), x, y, w, v)

  def whole(theta):
    err = jnp.tanh(x @ theta) - y
    return jnp.sum(w * err * err), jnp.sum(v * err * err)

  theta = jnp.asarray([0.3, -0.2, 0.5], jnp.float32)
  np.testing.assert_allclose(sums(theta), whole(theta), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda t: sums(t)[0])(theta),
                             jax.grad(lambda t: whole(t)[0])(theta), rtol=1e-4)
