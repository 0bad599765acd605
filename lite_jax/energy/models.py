"""Tabular regressors for the energy / indoor-environment papers: ANN, ELM, GRNN and SVR.

Every regressor has one interface, numpy in and out:

  model.fit(x, y) -> model          x: [n, d] float, y: [n] float
  model.predict(x) -> [m]           float64, the mean over ensemble members
  model.predict_members(x) -> [k, m]  one row per member (k = 1 where there is no ensemble)
  model.name, model.config          the registry name and every hyper-parameter as a plain dict
  model.save(path_dir); load_regressor(path_dir)

Scaling: `fit` standardizes x with the statistics of the rows it is given (`x_scaler`), and
y as well for the ANN, ELM and SVR (`y_scaler`, inverted on predict). Nothing else ever fits
a scaler, so cross-validation that calls `fit` on a training fold never sees its test rows.

Models (the papers leave every hyper-parameter unstated; the defaults below are ours):
  - `ANN`: Dense(hidden) -> activation -> Dense(1) in Flax, `members` networks trained at once
    with `jax.vmap` in one jitted program (L-BFGS or full-batch Adam, early stopping on a
    seeded per-member validation split, optional bootstrap resampling).
  - `ELM`: fixed random hidden layer, ridge / least-squares readout solved in JAX.
  - `GRNN`: Nadaraya-Watson kernel regression with sigma chosen by leave-one-out.
  - `SVR`: scikit-learn's `sklearn.svm.SVR`, the spec's reference baseline.

Files: `save` writes `model.json` (name + config) and `arrays.npz` (every fitted array,
scalers included); the SVR writes `model.json` and `model.pkl` (a pickle of the fitted
scikit-learn estimator and the scalers -- load pickles only from trusted directories).
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from lite_jax.core.errors import UserError

REGRESSORS = ("ann", "elm", "grnn", "svr")
ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
}
SOLVERS = ("lbfgs", "adam")
SVR_KERNELS = ("rbf", "linear", "poly", "sigmoid")
DEFAULT_SIGMA_GRID = tuple(float(s) for s in np.logspace(-2, 1, 30))
DEFAULT_RIDGE_GRID = tuple(float(r) for r in np.logspace(-4, 2, 13))


def row_bucket(n: int) -> int:
  """The padded row count of an n-row array: n rounded up to a multiple of 128 (of 2048 above
  8192 rows). Cross-validation folds, bootstrap fits and queries of nearby sizes then share
  one compiled program instead of compiling one per size; padded rows carry zero weight."""
  step = 128 if n <= 8192 else 2048
  return -(-n // step) * step


def _padded(a: np.ndarray, rows: int) -> np.ndarray:
  return np.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


# ----------------------------------------------------------------------------------------
# Input checks and scaling.
# ----------------------------------------------------------------------------------------


def _as_matrix(x: Any, name: str = "x") -> np.ndarray:
  """x: [n, d] finite numbers, n >= 1, d >= 1 -> float64 array; else one-sentence UserError."""
  try:
    arr = np.asarray(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise UserError(f"{name} must be a numeric array of shape [n, d] ({e}).") from None
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
    raise UserError(f"{name} must be a 2-D array of shape [n, d] with n, d >= 1, "
                    f"got shape {arr.shape}.")
  if not np.all(np.isfinite(arr)):
    raise UserError(f"{name} of shape {arr.shape} contains non-finite values (NaN or inf).")
  return arr


def _as_targets(y: Any, n: int) -> np.ndarray:
  """y: [n] finite numbers -> float64 array; else one-sentence UserError."""
  try:
    arr = np.asarray(y, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise UserError(f"y must be a numeric array of shape [n] ({e}).") from None
  if arr.ndim != 1 or arr.shape[0] != n:
    raise UserError(f"y must be a 1-D array of shape [{n}] (one target per row of x), "
                    f"got shape {arr.shape}.")
  if not np.all(np.isfinite(arr)):
    raise UserError(f"y of shape {arr.shape} contains non-finite values (NaN or inf).")
  return arr


class Standardizer:
  """Per-column standardization, z = (v - mean) / std, with statistics over axis 0.

  A column whose std is below 1e-8 (1 + |mean|) is only centred (std set to 1): a constant
  training column carries no information, and dividing by a tiny floor would blow up any
  test row that differs from it.

  Attributes (after `fit`): mean, std: [d] (or scalars for 1-D data), float64.
  """

  def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    self.mean = None if mean is None else np.asarray(mean, np.float64)
    self.std = None if std is None else np.asarray(std, np.float64)

  def fit(self, v: np.ndarray) -> "Standardizer":
    """v: [n] or [n, d]."""
    v = np.asarray(v, np.float64)
    mean = v.mean(axis=0)
    std = v.std(axis=0)
    self.mean = mean
    self.std = np.where(std > 1e-8 * (1.0 + np.abs(mean)), std, 1.0)
    return self

  def transform(self, v: np.ndarray) -> np.ndarray:
    return (np.asarray(v, np.float64) - self.mean) / self.std

  def inverse(self, z: np.ndarray) -> np.ndarray:
    return np.asarray(z, np.float64) * self.std + self.mean


def _check_int(name: str, value: Any, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise UserError(f"{name} must be an integer >= {low}, got {value!r}.")
  return int(value)


def _check_float(name: str, value: Any, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
  ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
  if ok:
    value = float(value)
    ok = (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
  if not ok:
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    raise UserError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}.")
  return value


def _check_grid(name: str, values: Any) -> list[float]:
  """A non-empty list of positive finite floats, or a one-sentence UserError."""
  try:
    grid = [float(v) for v in values]
  except (TypeError, ValueError):
    grid = []
  if not grid or not all(math.isfinite(v) and v > 0 for v in grid):
    raise UserError(f"{name} must be a non-empty list of positive numbers, got {values!r}.")
  return grid


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
  return value


# ----------------------------------------------------------------------------------------
# The shared interface.
# ----------------------------------------------------------------------------------------


class Regressor:
  """Base class: validation, scaling, the member mean, save/load of fitted arrays.

  Subclasses set `name`, build `config` in `__init__`, and implement `_fit(xs, y)` (xs the
  standardized [n, d] inputs, y the raw [n] targets) and `_predict_members(xs) -> [k, m]` in
  the original units of y, plus `_arrays()` / `_set_arrays(arrays)` for saving.
  """

  name = ""

  def __init__(self, config: dict[str, Any]):
    self.config = config
    self.x_scaler: Standardizer | None = None
    self.n_features_: int | None = None

  def fit(self, x: Any, y: Any) -> "Regressor":
    """x: [n, d], y: [n]; returns self."""
    x = _as_matrix(x, "x")
    y = _as_targets(y, x.shape[0])
    self.x_scaler = Standardizer().fit(x)
    self.n_features_ = x.shape[1]
    self._fit(self.x_scaler.transform(x), y)
    return self

  def _check_fitted_input(self, x: Any) -> np.ndarray:
    if self.x_scaler is None:
      raise UserError(f"the {self.name} regressor must be fitted before predict is called.")
    x = _as_matrix(x, "x")
    if x.shape[1] != self.n_features_:
      raise UserError(f"x must have shape [m, {self.n_features_}] like the data passed to fit, "
                      f"got shape {x.shape}.")
    return self.x_scaler.transform(x)

  def predict_members(self, x: Any) -> np.ndarray:
    """x: [m, d] -> [k, m] float64, one prediction per ensemble member."""
    return np.asarray(self._predict_members(self._check_fitted_input(x)), np.float64)

  def predict(self, x: Any) -> np.ndarray:
    """x: [m, d] -> [m] float64, the mean over ensemble members."""
    return self.predict_members(x).mean(axis=0)

  # Saving ------------------------------------------------------------------------------

  def _write_json(self, path_dir: str) -> None:
    if self.x_scaler is None:
      raise UserError(f"the {self.name} regressor must be fitted before it is saved.")
    os.makedirs(path_dir, exist_ok=True)
    with open(os.path.join(path_dir, "model.json"), "w") as f:
      json.dump({"name": self.name, "config": self.config}, f, indent=1)

  def save(self, path_dir: str) -> None:
    """Writes `model.json` (name + config) and `arrays.npz` (every fitted array)."""
    self._write_json(path_dir)
    arrays = {"x_mean": self.x_scaler.mean, "x_std": self.x_scaler.std, **self._arrays()}
    np.savez(os.path.join(path_dir, "arrays.npz"), **arrays)

  def _load(self, path_dir: str) -> None:
    with np.load(os.path.join(path_dir, "arrays.npz")) as f:
      arrays = {k: f[k] for k in f.files}
    self.x_scaler = Standardizer(arrays.pop("x_mean"), arrays.pop("x_std"))
    self.n_features_ = int(self.x_scaler.mean.shape[0])
    self._set_arrays(arrays)

  def _fit(self, xs: np.ndarray, y: np.ndarray) -> None:
    raise NotImplementedError

  def _predict_members(self, xs: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def _arrays(self) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
    raise NotImplementedError


def _y_scaler_arrays(scaler: Standardizer) -> dict[str, np.ndarray]:
  return {"y_mean": scaler.mean, "y_std": scaler.std}


def _y_scaler_from(arrays: dict[str, np.ndarray]) -> Standardizer:
  return Standardizer(arrays.pop("y_mean"), arrays.pop("y_std"))


# ----------------------------------------------------------------------------------------
# ANN: one hidden layer, `members` networks vmapped in one program.
# ----------------------------------------------------------------------------------------


class OneHiddenLayerMLP(nn.Module):
  """Dense(hidden) -> activation -> Dense(1); x: [n, d] -> [n]."""

  hidden: int
  activation: str

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.hidden, dtype=jnp.float32, param_dtype=jnp.float32)(x)
    h = ACTIVATIONS[self.activation](h)
    return nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32)(h)[:, 0]


def _sum_squared_kernels(params) -> jax.Array:
  """l2 acts on the weight matrices, not on the biases."""
  flat = traverse_util.flatten_dict(params)
  return sum(jnp.sum(jnp.square(v)) for k, v in flat.items() if k[-1] == "kernel")


def _ann_member_masks(key, n: int, n_rows, n_val, bootstrap):
  """Per-member row weights: (train_weight [n], val_mask [n]); n_rows, n_val, bootstrap
  traced.

  The first `n_rows` of the n rows are data, the rest padding (`row_bucket`). A seeded
  permutation of the data rows puts its first `n_val` in the validation set; the training
  weight is 1 on the other data rows, or, with `bootstrap`, the count of each in
  n_train = n_rows - n_val draws with replacement from them (weights instead of gathered
  copies: the members share one x in memory). Padding gets weight 0 everywhere. Only n is
  static, so changing these settings does not recompile.
  """
  split_key, boot_key = jax.random.split(key)
  real = jnp.arange(n) < n_rows
  perm = jnp.argsort(jnp.where(real, jax.random.uniform(split_key, (n,)), 2.0))
  val_mask = jnp.zeros((n,), jnp.float32).at[perm].set(
      (jnp.arange(n) < n_val).astype(jnp.float32))
  n_train = n_rows - n_val
  draws = n_val + jax.random.randint(boot_key, (n,), 0, n_train)
  counts = jnp.zeros((n,), jnp.float32).at[perm[draws]].add(
      (jnp.arange(n) < n_train).astype(jnp.float32))
  weight = jnp.where(bootstrap, counts, real * (1.0 - val_mask))
  return weight, val_mask


def row_block(n: int) -> int:
  """Rows per block of the ANN's loss: all of them up to 2048, else the largest of
  1024/512/256/128 dividing n (a `row_bucket` is a multiple of 128)."""
  if n <= 2048:
    return n
  return next(b for b in (1024, 512, 256, 128) if n % b == 0)


def _blocked_sums(predict, x, y, weight, val_weight):
  """(sum weight * (predict(x) - y)^2, sum val_weight * (...)^2), x: [n, d], the rest [n].

  Above 2048 rows the sums run over row blocks (`row_block`) in a scan whose blocks are
  rematerialized in the backward pass: the activations of a block stay in cache instead of
  writing [members, n, hidden] to memory and reading it back (on a 2-core CPU, 64 members on
  10^5 rows: a fit+grad pass 4x faster than over all rows at once).
  """
  def block(xb, yb, wb, vb):
    err = predict(xb) - yb
    err2 = err * err
    return jnp.sum(wb * err2), jnp.sum(vb * err2)

  n, d = x.shape
  size = row_block(n)
  if size == n:
    return block(x, y, weight, val_weight)
  block = jax.checkpoint(block)

  def body(carry, rows):
    train, val = block(*rows)
    return (carry[0] + train, carry[1] + val), None

  (train, val), _ = jax.lax.scan(
      body, (jnp.float32(0.0), jnp.float32(0.0)),
      (x.reshape(-1, size, d), y.reshape(-1, size), weight.reshape(-1, size),
       val_weight.reshape(-1, size)))
  return train, val


@functools.partial(jax.jit, static_argnames=(
    "hidden", "activation", "solver", "max_iter", "validate"))
def _ann_train(keys, x, y, n_rows, l2, learning_rate, patience, n_val, bootstrap, *, hidden,
               activation, solver, max_iter, validate):
  """Trains len(keys) networks at once.

  keys: [k, 2] uint32, x: [n, d] f32 (standardized), y: [n] f32 (standardized), of which
  the first `n_rows` are data and the rest zero padding.
  Returns (params with a leading [k] axis, n_iter [k] int32, best_val_loss [k] f32,
  val_history [k, max_iter] f32 -- the validation loss after each iteration, NaN after a
  member stopped -- and val_mask [k, n] bool); without validation the losses are NaN.
  """
  n = x.shape[0]
  model = OneHiddenLayerMLP(hidden, activation)
  if solver == "lbfgs":
    opt = optax.lbfgs()
  else:
    opt = optax.adam(learning_rate)

  def train_one(key):
    init_key, split_key = jax.random.split(key)
    weight, val_mask = _ann_member_masks(split_key, n, n_rows, n_val, bootstrap)
    weight = weight / jnp.sum(weight)

    def squared_error_sums(p):
      """(sum of weight * err^2, sum of val_mask * err^2) over the rows."""
      return _blocked_sums(lambda xb: model.apply({"params": p}, xb), x, y, weight, val_mask)

    def train_loss(p):
      return squared_error_sums(p)[0] + l2 * _sum_squared_kernels(p)

    def val_loss(p):
      return squared_error_sums(p)[1] / jnp.sum(val_mask)

    if solver == "lbfgs":
      value_and_grad = optax.value_and_grad_from_state(train_loss)
    else:
      value_and_grad = jax.value_and_grad(train_loss)

    def step(params, opt_state):
      if solver == "lbfgs":
        value, grad = value_and_grad(params, state=opt_state)
        updates, opt_state = opt.update(grad, opt_state, params, value=value, grad=grad,
                                        value_fn=train_loss)
      else:
        _, grad = value_and_grad(params)
        updates, opt_state = opt.update(grad, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    params = model.init(init_key, x[:1])["params"]
    best_val = val_loss(params) if validate else jnp.float32(jnp.nan)

    def cond(carry):
      it, _, _, _, _, _, done, _ = carry
      return jnp.logical_and(it < max_iter, jnp.logical_not(done))

    def body(carry):
      it, params, opt_state, best_params, best_val, since_best, _, history = carry
      new_params, new_state = step(params, opt_state)
      # A non-finite step (e.g. L-BFGS at an exact optimum) ends training with the last
      # finite parameters instead of poisoning them.
      finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(v))
                                  for v in jax.tree_util.tree_leaves(new_params)]))
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda a, b: jnp.where(finite, a, b), new, old)
      params, opt_state = keep(new_params, params), keep(new_state, opt_state)
      if validate:
        val = val_loss(params)
        improved = jnp.logical_and(finite, val < best_val)
        best_params = jax.tree_util.tree_map(
            lambda a, b: jnp.where(improved, a, b), params, best_params)
        best_val = jnp.where(improved, val, best_val)
        since_best = jnp.where(improved, 0, since_best + 1)
        done = jnp.logical_or(jnp.logical_not(finite), since_best >= patience)
        history = history.at[it].set(val)
      else:
        best_params = params
        done = jnp.logical_not(finite)
      return it + 1, params, opt_state, best_params, best_val, since_best, done, history

    carry = (jnp.int32(0), params, opt.init(params), params, best_val, jnp.int32(0),
             jnp.bool_(False), jnp.full((max_iter,), jnp.nan, jnp.float32))
    it, _, _, best_params, best_val, _, _, history = jax.lax.while_loop(cond, body, carry)
    return best_params, it, best_val, history, val_mask > 0

  # vmap turns each member's while_loop into one loop that runs until every member is done,
  # freezing finished members: all members train in this single compiled program.
  return jax.vmap(train_one)(keys)


@functools.partial(jax.jit, static_argnames=("hidden", "activation"))
def _ann_apply_members(params, x, *, hidden, activation):
  """params: leading [k] axis, x: [m, d] f32 -> [k, m]."""
  model = OneHiddenLayerMLP(hidden, activation)
  return jax.vmap(lambda p: model.apply({"params": p}, x))(params)


class ANN(Regressor):
  """One-hidden-layer perceptron ensemble; `members` networks share one jitted program.

  Each member has its own init key, its own seeded validation split of `validation_fraction`
  of the fit rows (early stopping: the best-validation parameters are kept, and a member
  stops after `patience` iterations without improvement; 0 disables it and trains
  `max_iter` iterations), and with `bootstrap` its own resample of the training rows.
  Loss: MSE on standardized y + l2 * (sum of squared weight matrices). Solvers: "lbfgs"
  (optax.lbfgs with its zoom line search; one iteration = one L-BFGS step) or "adam" (full
  batch, `learning_rate`). Float32 throughout.

  After fit: `n_iter_` [members] iterations run, `best_val_loss_` [members] (validation MSE
  in standardized units at the kept parameters), `val_history_` [members, max_iter] (that
  loss after each iteration, NaN once a member stopped), `validation_mask_` [members, n]
  (each member's held-out rows); the losses are NaN without validation.
  """

  name = "ann"

  def __init__(self, hidden: int = 10, activation: str = "tanh", solver: str = "lbfgs",
               members: int = 1, l2: float = 1e-4, max_iter: int = 500,
               learning_rate: float = 1e-2, validation_fraction: float = 0.15,
               patience: int = 30, bootstrap: bool = False, seed: int = 0):
    if not isinstance(bootstrap, bool):
      raise UserError(f"bootstrap must be true or false, got {bootstrap!r}.")
    super().__init__(dict(
        hidden=_check_int("hidden", hidden, 1),
        activation=_check_choice("activation", activation, tuple(ACTIVATIONS)),
        solver=_check_choice("solver", solver, SOLVERS),
        members=_check_int("members", members, 1),
        l2=_check_float("l2", l2, 0.0),
        max_iter=_check_int("max_iter", max_iter, 1),
        learning_rate=_check_float("learning_rate", learning_rate, 0.0, low_open=True),
        validation_fraction=_check_float("validation_fraction", validation_fraction, 0.0, 1.0,
                                         high_open=True),
        patience=_check_int("patience", patience, 1),
        bootstrap=bootstrap,
        seed=_check_int("seed", seed, 0)))
    self.params = None
    self.y_scaler: Standardizer | None = None

  def _static(self) -> dict[str, Any]:
    return dict(hidden=self.config["hidden"], activation=self.config["activation"])

  def _fit(self, xs, y):
    c = self.config
    n = xs.shape[0]
    n_val = int(round(c["validation_fraction"] * n))
    if c["validation_fraction"] > 0:
      n_val = max(n_val, 1)
      if n - n_val < 1:
        raise UserError(f"validation_fraction={c['validation_fraction']} leaves no training "
                        f"rows out of {n}.")
    self.y_scaler = Standardizer().fit(y)
    keys = jax.random.split(jax.random.PRNGKey(c["seed"]), c["members"])
    rows = row_bucket(n)
    params, n_iter, best_val, history, val_mask = _ann_train(
        keys, jnp.asarray(_padded(xs, rows), jnp.float32),
        jnp.asarray(_padded(self.y_scaler.transform(y), rows), jnp.float32), jnp.int32(n),
        jnp.float32(c["l2"]), jnp.float32(c["learning_rate"]), jnp.int32(c["patience"]),
        jnp.int32(n_val), jnp.bool_(c["bootstrap"]), solver=c["solver"],
        max_iter=c["max_iter"], validate=n_val > 0, **self._static())
    self.params = jax.tree_util.tree_map(np.asarray, params)
    self.n_iter_ = np.asarray(n_iter)
    self.best_val_loss_ = np.asarray(best_val)
    self.val_history_ = np.asarray(history)
    self.validation_mask_ = np.asarray(val_mask)[:, :n]

  def _predict_members(self, xs):
    z = _ann_apply_members(self.params, jnp.asarray(_padded(xs, row_bucket(len(xs))),
                                                    jnp.float32), **self._static())
    return self.y_scaler.inverse(np.asarray(z)[:, :len(xs)])

  def _arrays(self):
    flat = traverse_util.flatten_dict(self.params, sep="/")
    return {**{"params/" + k: v for k, v in flat.items()}, **_y_scaler_arrays(self.y_scaler),
            "n_iter": self.n_iter_, "best_val_loss": self.best_val_loss_,
            "val_history": self.val_history_, "validation_mask": self.validation_mask_}

  def _set_arrays(self, arrays):
    self.y_scaler = _y_scaler_from(arrays)
    self.n_iter_ = arrays.pop("n_iter")
    self.best_val_loss_ = arrays.pop("best_val_loss")
    self.val_history_ = arrays.pop("val_history")
    self.validation_mask_ = arrays.pop("validation_mask")
    self.params = traverse_util.unflatten_dict(
        {k[len("params/"):]: v for k, v in arrays.items()}, sep="/")


# ----------------------------------------------------------------------------------------
# ELM: random hidden layer, least-squares readout.
# ----------------------------------------------------------------------------------------


def _elm_hidden(w, b, x, activation):
  """w: [d, h], b: [h], x: [n, d] -> H: [n, h]."""
  return ACTIVATIONS[activation](x @ w + b)


@functools.partial(jax.jit, static_argnames=("hidden", "activation", "use_lstsq"))
def _elm_fit(keys, x, y, rows, ridges, *, hidden, activation, use_lstsq):
  """keys: [k, 2], x: [n, d] f32, y: [n] f32, rows: [n] 1 for data, 0 for padding,
  ridges: [r] candidate penalties -> (w [k, d, h], b [k, h], beta [k, h], ridge [k],
  loo_rmse [k, r]).

  Padding rows of H and y are zero, which leaves the least-squares solution unchanged. With
  several candidates, each member keeps the one of lowest leave-one-out RMSE, exact and in
  closed form for ridge regression: the LOO residual of row i is e_i / (1 - h_ii), h_ii the
  diagonal of the hat matrix U diag(s^2 / (s^2 + ridge)) U^T.
  """
  d = x.shape[1]
  count = jnp.sum(rows)

  def fit_one(key):
    w_key, b_key = jax.random.split(key)
    w = jax.random.normal(w_key, (d, hidden), jnp.float32) / math.sqrt(d)
    b = jax.random.uniform(b_key, (hidden,), jnp.float32, -1.0, 1.0)
    h = _elm_hidden(w, b, x, activation) * rows[:, None]
    target = y * rows
    if use_lstsq:
      beta = jnp.linalg.lstsq(h, target)[0]
      return w, b, beta, jnp.float32(0.0), jnp.full(ridges.shape, jnp.nan, jnp.float32)
    # The SVD form of (H^T H + ridge I)^-1 H^T y: valid for hidden > n as well, and in f32
    # it works with cond(H) rather than the squared condition of the normal equations.
    u, s, vt = jnp.linalg.svd(h, full_matrices=False)
    uty = u.T @ target

    def loo_rmse(ridge):
      shrink = s * s / (s * s + ridge)
      residual = target - u @ (shrink * uty)
      leverage = (u * u) @ shrink
      loo = residual / jnp.maximum(1.0 - leverage, 1e-6)
      return jnp.sqrt(jnp.sum(rows * loo * loo) / count)

    errors = jax.vmap(loo_rmse)(ridges)
    ridge = ridges[jnp.argmin(errors)]
    beta = vt.T @ ((s / (s * s + ridge)) * uty)
    return w, b, beta, ridge, errors

  return jax.vmap(fit_one)(keys)


@functools.partial(jax.jit, static_argnames=("activation",))
def _elm_hidden_members(w, b, x, *, activation):
  """w: [k, d, h], b: [k, h], x: [m, d] -> [k, m, h]."""
  return jax.vmap(lambda wi, bi: _elm_hidden(wi, bi, x, activation))(w, b)


@functools.partial(jax.jit, static_argnames=("activation",))
def _elm_predict_members(w, b, beta, x, *, activation):
  """w: [k, d, h], b: [k, h], beta: [k, h], x: [m, d] -> [k, m] (standardized y)."""
  return jnp.einsum("kmh,kh->km", _elm_hidden_members(w, b, x, activation=activation), beta)


class ELM(Regressor):
  """Extreme learning machine: H = act(x W + b) with fixed random W, b; y ~ H beta.

  W ~ N(0, 1) / sqrt(d) and b ~ U(-1, 1) (seeded; d the number of inputs), so that on
  standardized inputs the pre-activations are O(1) for any d. The readout has no bias (y is
  standardized). beta = argmin ||H beta - y||^2 + ridge ||beta||^2, solved in JAX: through
  the SVD of H when ridge > 0, with `jnp.linalg.lstsq` (minimum norm) when ridge == 0.
  `ridge=None` (the default) picks each member's penalty from `ridge_grid` by exact
  leave-one-out on the fit data (closed form, one SVD): the papers do not state theirs, and a
  fixed tiny penalty overfits a few hundred rows with 100 hidden nodes.
  `members` independent random layers are fitted at once with vmap.

  After fit: `w_` [k, d, hidden], `b_` [k, hidden], `beta_` [k, hidden], `ridge_` [k] and
  `loo_rmse_` [k, len(ridge_grid)] (standardized units; NaN for a fixed penalty).
  """

  name = "elm"

  def __init__(self, hidden: int = 100, activation: str = "sigmoid",
               ridge: float | None = None, ridge_grid=DEFAULT_RIDGE_GRID, members: int = 1,
               seed: int = 0):
    grid = _check_grid("ridge_grid", ridge_grid)
    super().__init__(dict(
        hidden=_check_int("hidden", hidden, 1),
        activation=_check_choice("activation", activation, tuple(ACTIVATIONS)),
        ridge=None if ridge is None else _check_float("ridge", ridge, 0.0),
        ridge_grid=grid,
        members=_check_int("members", members, 1),
        seed=_check_int("seed", seed, 0)))
    self.y_scaler: Standardizer | None = None

  def _fit(self, xs, y):
    c = self.config
    self.y_scaler = Standardizer().fit(y)
    keys = jax.random.split(jax.random.PRNGKey(c["seed"]), c["members"])
    n, rows = xs.shape[0], row_bucket(xs.shape[0])
    ridges = c["ridge_grid"] if c["ridge"] is None else [c["ridge"]]
    w, b, beta, ridge, loo = _elm_fit(
        keys, jnp.asarray(_padded(xs, rows), jnp.float32),
        jnp.asarray(_padded(self.y_scaler.transform(y), rows), jnp.float32),
        jnp.asarray(np.arange(rows) < n, jnp.float32), jnp.asarray(ridges, jnp.float32),
        hidden=c["hidden"], activation=c["activation"], use_lstsq=c["ridge"] == 0)
    self.w_, self.b_, self.beta_ = np.asarray(w), np.asarray(b), np.asarray(beta)
    self.ridge_ = np.asarray(ridge)
    self.loo_rmse_ = np.asarray(loo) if c["ridge"] is None else np.full(
        (c["members"], len(c["ridge_grid"])), np.nan)

  def hidden_features(self, x: Any) -> np.ndarray:
    """x: [m, d] raw inputs -> H: [k, m, hidden], the random layer of each member."""
    xs = self._check_fitted_input(x)
    h = _elm_hidden_members(self.w_, self.b_, jnp.asarray(_padded(xs, row_bucket(len(xs))),
                                                          jnp.float32),
                            activation=self.config["activation"])
    return np.asarray(h)[:, :len(xs)]

  def _predict_members(self, xs):
    z = _elm_predict_members(self.w_, self.b_, self.beta_,
                             jnp.asarray(_padded(xs, row_bucket(len(xs))), jnp.float32),
                             activation=self.config["activation"])
    return self.y_scaler.inverse(np.asarray(z)[:, :len(xs)])

  def _arrays(self):
    return {"w": self.w_, "b": self.b_, "beta": self.beta_, "ridge": self.ridge_,
            "loo_rmse": self.loo_rmse_, **_y_scaler_arrays(self.y_scaler)}

  def _set_arrays(self, arrays):
    self.y_scaler = _y_scaler_from(arrays)
    self.w_, self.b_, self.beta_ = arrays["w"], arrays["b"], arrays["beta"]
    self.ridge_, self.loo_rmse_ = arrays["ridge"], arrays["loo_rmse"]


# ----------------------------------------------------------------------------------------
# GRNN: Nadaraya-Watson, streamed in chunks with a running log-sum-exp.
# ----------------------------------------------------------------------------------------


def _pad_rows(a: np.ndarray, multiple: int, value: float = 0.0) -> np.ndarray:
  pad = (-a.shape[0]) % multiple
  return np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=value)


@functools.partial(jax.jit, static_argnames=("q_chunk", "t_chunk"))
def _nw_predict(xq, q_index, xt, yt, t_index, sigmas, *, q_chunk, t_chunk):
  """Nadaraya-Watson predictions for several sigmas, never holding more than
  [q_chunk, t_chunk] kernel values.

  xq: [mq, d] (mq a multiple of q_chunk), q_index: [mq] int32 -- the query's own training row
  to exclude (leave-one-out) or -1; xt: [nt, d] (nt a multiple of t_chunk), yt: [nt],
  t_index: [nt] int32 -- the row's index, or -2 for padding; sigmas: [s].
  Returns [s, mq]. log w = -||xq - xt||^2 / (2 sigma^2), combined with a running max so that
  tiny sigmas neither underflow to 0/0 nor overflow.
  """
  d = xq.shape[1]
  xt_c = xt.reshape(-1, t_chunk, d)
  yt_c = yt.reshape(-1, t_chunk)
  ti_c = t_index.reshape(-1, t_chunk)
  sq_t = jnp.sum(xt_c * xt_c, axis=-1)

  def one_sigma(sigma):
    scale = 1.0 / (2.0 * sigma * sigma)

    def one_query_chunk(args):
      q, qi = args
      sq_q = jnp.sum(q * q, axis=-1)

      def scan_train(carry, chunk):
        m, s, t = carry
        xc, yc, ic, sqc = chunk
        d2 = jnp.maximum(sq_q[:, None] + sqc[None, :] - 2.0 * q @ xc.T, 0.0)
        logw = -d2 * scale
        excluded = (ic[None, :] == -2) | (ic[None, :] == qi[:, None])
        logw = jnp.where(excluded, -jnp.inf, logw)
        m_new = jnp.maximum(m, jnp.max(logw, axis=1))
        # Padding sits only at the end and never fills a chunk, so m_new is finite from the
        # first chunk on unless a query excluded every row seen so far.
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        decay = jnp.exp(m - m_safe)
        w = jnp.exp(logw - m_safe[:, None])
        return (m_new, s * decay + jnp.sum(w, axis=1), t * decay + w @ yc), None

      init = (jnp.full(q.shape[:1], -jnp.inf), jnp.zeros(q.shape[:1]), jnp.zeros(q.shape[:1]))
      (_, s, t), _ = jax.lax.scan(scan_train, init, (xt_c, yt_c, ti_c, sq_t))
      return t / s

    out = jax.lax.map(one_query_chunk, (xq.reshape(-1, q_chunk, d), q_index.reshape(-1, q_chunk)))
    return out.reshape(-1)

  return jax.lax.map(one_sigma, sigmas)


class GRNN(Regressor):
  """General regression neural network (Nadaraya-Watson kernel regression) on standardized x.

  prediction(x) = sum_i y_i w_i / sum_i w_i, w_i = exp(-||x - x_i||^2 / (2 sigma^2)), with
  sigma in standardized-x units. Queries and training rows are both processed in chunks of
  `chunk_rows` (a running log-sum-exp), so memory is O(chunk_rows^2) for any data size.

  `sigma=None`: sigma is the value of `sigma_grid` with the lowest leave-one-out RMSE. The
  LOO queries are at most `max_loo_rows` training rows (a `seed`ed subset when there are more),
  each predicted from all other training rows (its own row excluded). After fit: `sigma_`,
  `loo_rmse_` [len(sigma_grid)] (NaN when sigma was given), `loo_rows_` (the query rows).
  """

  name = "grnn"

  def __init__(self, sigma: float | None = None, sigma_grid=DEFAULT_SIGMA_GRID,
               max_loo_rows: int = 2000, chunk_rows: int = 4096, seed: int = 0):
    if sigma is not None:
      sigma = _check_float("sigma", sigma, 0.0, low_open=True)
    grid = _check_grid("sigma_grid", sigma_grid)
    super().__init__(dict(
        sigma=sigma, sigma_grid=grid, max_loo_rows=_check_int("max_loo_rows", max_loo_rows, 2),
        chunk_rows=_check_int("chunk_rows", chunk_rows, 1), seed=_check_int("seed", seed, 0)))

  def _kernel_predict(self, xq, q_index, sigmas):
    """xq: [m, d] standardized, q_index: [m] (own training row or -1) -> [len(sigmas), m]."""
    xt, yt = self.x_train_, self.y_train_
    m, nt = xq.shape[0], xt.shape[0]
    q_chunk = min(self.config["chunk_rows"], row_bucket(m))
    t_chunk = min(self.config["chunk_rows"], row_bucket(nt))
    out = _nw_predict(
        jnp.asarray(_pad_rows(xq, q_chunk), jnp.float32),
        jnp.asarray(_pad_rows(q_index, q_chunk, -1), jnp.int32),
        jnp.asarray(_pad_rows(xt, t_chunk), jnp.float32),
        jnp.asarray(_pad_rows(yt, t_chunk), jnp.float32),
        jnp.asarray(_pad_rows(np.arange(nt), t_chunk, -2), jnp.int32),
        jnp.asarray(sigmas, jnp.float32), q_chunk=q_chunk, t_chunk=t_chunk)
    return np.asarray(out)[:, :m]

  def _fit(self, xs, y):
    c = self.config
    self.x_train_, self.y_train_ = xs, y
    n = xs.shape[0]
    grid = np.asarray(c["sigma_grid"], np.float64)
    if c["sigma"] is not None:
      self.sigma_ = c["sigma"]
      self.loo_rmse_ = np.full(grid.shape, np.nan)
      self.loo_rows_ = np.zeros((0,), np.int64)
      return
    if n < 2:
      raise UserError(f"choosing sigma by leave-one-out needs at least 2 rows, got {n}.")
    rows = np.arange(n)
    if n > c["max_loo_rows"]:
      rows = np.sort(np.random.default_rng(c["seed"]).choice(n, c["max_loo_rows"],
                                                              replace=False))
    pred = self._kernel_predict(xs[rows], rows, grid)
    self.loo_rmse_ = np.sqrt(np.mean((pred - y[rows]) ** 2, axis=1))
    self.loo_rows_ = rows
    self.sigma_ = float(grid[int(np.nanargmin(self.loo_rmse_))])

  def _predict_members(self, xs):
    return self._kernel_predict(xs, np.full(xs.shape[0], -1), [self.sigma_])

  def _arrays(self):
    return {"x_train": self.x_train_, "y_train": self.y_train_, "sigma": np.float64(self.sigma_),
            "loo_rmse": self.loo_rmse_, "loo_rows": self.loo_rows_}

  def _set_arrays(self, arrays):
    self.x_train_, self.y_train_ = arrays["x_train"], arrays["y_train"]
    self.sigma_ = float(arrays["sigma"])
    self.loo_rmse_, self.loo_rows_ = arrays["loo_rmse"], arrays["loo_rows"]


# ----------------------------------------------------------------------------------------
# SVR: scikit-learn's, the reference baseline.
# ----------------------------------------------------------------------------------------


class SVR(Regressor):
  """scikit-learn's `sklearn.svm.SVR` on standardized x and y (epsilon in standardized-y
  units). `gamma` is "scale", "auto" or a positive number. `save` pickles the fitted
  estimator and both scalers to `model.pkl`.
  """

  name = "svr"

  def __init__(self, C: float = 10.0, epsilon: float = 0.1, gamma: Any = "scale",
               kernel: str = "rbf"):
    if gamma not in ("scale", "auto"):
      gamma = _check_float("gamma", gamma, 0.0, low_open=True)
    super().__init__(dict(C=_check_float("C", C, 0.0, low_open=True),
                          epsilon=_check_float("epsilon", epsilon, 0.0),
                          gamma=gamma, kernel=_check_choice("kernel", kernel, SVR_KERNELS)))
    self.estimator = None

  def _fit(self, xs, y):
    from sklearn import svm  # scikit-learn is needed only by this baseline.
    self.y_scaler = Standardizer().fit(y)
    self.estimator = svm.SVR(**self.config).fit(xs, self.y_scaler.transform(y))

  def _predict_members(self, xs):
    return self.y_scaler.inverse(self.estimator.predict(xs))[None, :]

  def save(self, path_dir: str) -> None:
    """Writes `model.json` and `model.pkl` (pickled estimator + scalers)."""
    self._write_json(path_dir)
    with open(os.path.join(path_dir, "model.pkl"), "wb") as f:
      pickle.dump({"estimator": self.estimator, "x_scaler": self.x_scaler,
                   "y_scaler": self.y_scaler}, f)

  def _load(self, path_dir: str) -> None:
    with open(os.path.join(path_dir, "model.pkl"), "rb") as f:
      state = pickle.load(f)
    self.estimator, self.x_scaler, self.y_scaler = (
        state["estimator"], state["x_scaler"], state["y_scaler"])
    self.n_features_ = int(self.x_scaler.mean.shape[0])


# ----------------------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------------------

_CLASSES = {"ann": ANN, "elm": ELM, "grnn": GRNN, "svr": SVR}


def config_keys(name: str) -> tuple[str, ...]:
  """The hyper-parameter names `make_regressor(name, ...)` accepts."""
  return tuple(_CLASSES[name]().config)


def make_regressor(name: str, config: Mapping[str, Any] | None = None) -> Regressor:
  """A fresh, unfitted regressor `name` (one of REGRESSORS) with `config` overriding defaults."""
  if name not in _CLASSES:
    raise UserError(f"unknown regressor {name!r}; valid ones are {', '.join(REGRESSORS)}.")
  config = dict(config or {})
  valid = config_keys(name)
  unknown = sorted(set(config) - set(valid))
  if unknown:
    raise UserError(f"unknown {name} config key(s) {', '.join(unknown)}; valid ones are "
                    f"{', '.join(valid)}.")
  return _CLASSES[name](**config)


def load_regressor(path_dir: str) -> Regressor:
  """Loads what `Regressor.save(path_dir)` wrote (any model, the SVR's pickle included)."""
  path = os.path.join(path_dir, "model.json")
  if not os.path.exists(path):
    raise UserError(f"no saved regressor in {path_dir} (model.json is missing).")
  with open(path) as f:
    meta = json.load(f)
  model = make_regressor(meta["name"], meta["config"])
  model._load(path_dir)
  return model
