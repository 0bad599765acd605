"""The launcher's modes: compare the models, fit one, predict from CSV, screen designs, demo.

Every mode takes `(config, workdir)` (see `experiments/configs/energy.py` for the fields) and
returns the dict printed as its JSON line. Results on generated data are the generators'
(`data/energy.py`), never the papers' numbers.

Tabular fits take seconds, so these modes are single programs rather than runs of the shared
training loop: there is nothing to checkpoint mid-way, and each mode's outputs (`compare.md`,
`compare.json`, `models/`, `predictions.csv`, `top_designs.csv`, PNGs) are written at its end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import ml_collections
import numpy as np

from data import energy as energy_data
from lite_jax.core import plots
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import progress
from lite_jax.energy import evaluation, models, screening

# ---------------------------------------------------------------------------------------------
# Models from the config.
# ---------------------------------------------------------------------------------------------

TRANSFORMS = ("none", "log")


class LogTarget:
  """Fits `model` to log(y) and predicts exp(.): for concentrations, whose errors are
  multiplicative (the ±30% metric is a ratio). Every y must be positive."""
  name = "log_target"

  def __init__(self, model: models.Regressor):
    self.model = model
    self.config = {"transform": "log", "model": model.name}

  def fit(self, x, y) -> "LogTarget":
    y = np.asarray(y, np.float64)
    if np.any(y <= 0):
      raise UserError(f"target_transform='log' needs positive targets; {np.sum(y <= 0)} are "
                      f"zero or negative.")
    self.model.fit(x, np.log(y))
    return self

  @property
  def x_scaler(self):
    return self.model.x_scaler

  def predict_members(self, x) -> np.ndarray:
    return np.exp(self.model.predict_members(x))

  def predict(self, x) -> np.ndarray:
    # The ensemble's prediction is the mean of its members on the original scale, as
    # `predict_members` reports them.
    return self.predict_members(x).mean(axis=0)

  def save(self, path_dir: str) -> None:
    os.makedirs(path_dir, exist_ok=True)
    self.model.save(os.path.join(path_dir, "log_of"))
    with open(os.path.join(path_dir, "transform.json"), "w") as f:
      json.dump({"transform": "log"}, f)

  @classmethod
  def load(cls, path_dir: str) -> "LogTarget":
    return cls(models.load_regressor(os.path.join(path_dir, "log_of")))


class Bagged:
  """`members` refits of a single-member model on bootstrap resamples: an ensemble spread for
  GRNN, SVR (and one-member ANN/ELM) in screening."""

  def __init__(self, make, members: int, seed: int):
    self.make, self.members, self.seed = make, members, seed
    self.fitted: list = []

  def fit(self, x, y) -> "Bagged":
    rng = np.random.default_rng(self.seed)
    x, y = np.asarray(x), np.asarray(y)
    self.fitted = []
    for _ in range(self.members):
      rows = rng.integers(0, len(x), len(x))
      self.fitted.append(self.make().fit(x[rows], y[rows]))
    return self

  def predict_members(self, x) -> np.ndarray:
    return np.concatenate([m.predict_members(x) for m in self.fitted], axis=0)

  def predict(self, x) -> np.ndarray:
    return self.predict_members(x).mean(axis=0)


def regressor(config: ml_collections.ConfigDict, name: str) -> models.Regressor:
  """A fresh, unfitted `name` model with the config's hyper-parameters (and target
  transform)."""
  if name not in models.REGRESSORS:
    raise UserError(f"unknown model {name!r}; choose from {', '.join(models.REGRESSORS)}.")
  model = models.make_regressor(name, config.models[name].to_dict())
  if config.target_transform not in TRANSFORMS:
    raise UserError(f"target_transform must be one of {', '.join(TRANSFORMS)}, got "
                    f"{config.target_transform!r}.")
  return LogTarget(model) if config.target_transform == "log" else model


def load_model(path_dir: str) -> models.Regressor:
  """A model saved by `fit` (a `LogTarget` where it was fitted to log targets)."""
  if not os.path.isdir(path_dir):
    raise UserError(f"no fitted model in {path_dir}; run --mode=fit with the same --workdir "
                    f"first.")
  if os.path.exists(os.path.join(path_dir, "transform.json")):
    return LogTarget.load(path_dir)
  return models.load_regressor(path_dir)


def overridden(config: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
  """A copy of `config` with `fields` set (dotted paths, e.g. `models.ann.hidden`); the
  original, possibly locked by the launcher, is left alone."""
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    for path, value in fields.items():
      *parents, leaf = path.split(".")
      node = copy
      for name in parents:
        node = node[name]
      node[leaf] = value
  return copy


def model_names(spec: str) -> list[str]:
  names = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in names if n not in models.REGRESSORS]
  if unknown or not names:
    raise UserError(f"compare.models={spec!r}: name models from "
                    f"{', '.join(models.REGRESSORS)}, separated by commas.")
  return names


# ---------------------------------------------------------------------------------------------
# Data and splits.
# ---------------------------------------------------------------------------------------------


def load_table(config, dataset: str, *, need_targets=True, min_rows=1) -> energy_data.Table:
  return energy_data.load(config.data.source, dataset, seed=config.data.seed,
                          rows=config.data.rows or None, need_targets=need_targets,
                          min_rows=min_rows)


def splits(cv: ml_collections.ConfigDict, table: energy_data.Table
           ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
  """The evaluation splits and their description (grouped by building where the data has
  groups and `cv.grouped`)."""
  groups = table.groups if cv.grouped else None
  by = " grouped by building" if groups is not None else ""
  if cv.method == "kfold":
    return (evaluation.kfold_splits(len(table), cv.folds, cv.seed, groups=groups),
            f"{cv.folds}-fold{by}")
  if cv.method == "holdout":
    return (evaluation.holdout_splits(len(table), cv.test_fraction, cv.repeats, cv.seed,
                                      groups=groups),
            f"{cv.repeats} x {cv.test_fraction:.0%} hold-out{by}")
  raise UserError(f"cv.method must be 'kfold' or 'holdout', got {cv.method!r}.")


# ---------------------------------------------------------------------------------------------
# compare.
# ---------------------------------------------------------------------------------------------

REPORTED = ("rmse", "mae", "r2", "mape", "within_30")


def compare_dataset(config, dataset: str, workdir: str) -> dict:
  """Cross-validates every `compare.models` model on each target of `dataset`; writes
  `<dataset>_compare.md` / `.json` and the predicted-vs-measured plot."""
  sch = energy_data.schema(dataset)
  table = load_table(config, dataset, min_rows=2)
  x = table.matrix(sch.input_names)
  folds, described = splits(config.cv, table)
  names = model_names(config.compare.models)
  results: dict[str, dict[str, evaluation.CVResult]] = {}
  bar = progress(total=len(sch.targets) * len(names), desc=f"{dataset}: cross-validation")
  for target in sch.target_names:
    y = table.columns[target]
    results[target] = {}
    for name in names:
      bar.set_postfix_str(f"{target} {name}")
      results[target][name] = evaluation.cross_validate(
          lambda name=name: regressor(config, name), x, y, folds)
      bar.update()
  bar.close()
  sweep = None
  if config.compare.hidden_sizes:
    sizes = parse_sizes(config.compare.hidden_sizes)
    target = sch.target_names[0]

    def ann_of_size(h):
      return regressor(overridden(config, **{"models.ann.hidden": int(h)}), "ann")
    sweep = evaluation.hidden_size_sweep(ann_of_size, sizes, x, table.columns[target], folds)
  summary = {
      "rows": len(table), "inputs": len(sch.inputs), "cv": described,
      **{target: {name: {k: cv.summary()[k] for k in REPORTED}
                  for name, cv in per_model.items()}
         for target, per_model in results.items()},
  }
  if sweep is not None:
    summary["hidden_sweep"] = _sweep_summary(sweep)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{dataset}_compare.json"), "w") as f:
    json.dump({t: {n: cv.summary() for n, cv in m.items()} for t, m in results.items()} |
              {"rows": len(table), "cv": described}, f, indent=1)
  with open(os.path.join(workdir, f"{dataset}_compare.md"), "w") as f:
    f.write(compare_table(dataset, results, described, len(table)))
  plot_predicted(os.path.join(workdir, f"{dataset}_predicted_vs_measured.png"), table,
                 results, sch)
  return summary


def parse_sizes(spec: str) -> list[int]:
  """'1-20' or '5,10,15' -> sizes."""
  try:
    if "-" in spec:
      lo, hi = (int(v) for v in spec.split("-"))
      sizes = list(range(lo, hi + 1))
    else:
      sizes = [int(v) for v in spec.split(",") if v.strip()]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) < 1:
    raise UserError(f"compare.hidden_sizes={spec!r}: give a range like '1-20' or a list like "
                    f"'5,10,20' of positive sizes.")
  return sizes


def _sweep_summary(sweep: Mapping) -> dict:
  return {"best": int(sweep["best_size"]),
          "rmse": {str(h): round(float(m["rmse"]), 4) for h, m in sweep["by_size"].items()},
          "within_30": {str(h): round(float(m["within_30"]), 4)
                        for h, m in sweep["by_size"].items()}}


def compare_table(dataset, results, described, rows) -> str:
  """A markdown table: mean ± 95% CI half-width over the splits."""
  lines = [f"# {dataset}: {rows} rows, {described}", ""]
  for target, per_model in results.items():
    lines += [f"## {target}", "", "| model | " + " | ".join(REPORTED) + " |",
              "|---|" + "---|" * len(REPORTED)]
    for name, cv in per_model.items():
      s = cv.summary()
      lines.append(f"| {name} | " + " | ".join(f"{s[k]:.3g} ± {s[k + '_ci95']:.2g}"
                                              for k in REPORTED) + " |")
    lines.append("")
  return "\n".join(lines)


def plot_predicted(path, table, results, sch) -> str:
  """Out-of-fold predictions against the measurements, one panel per target and model."""
  targets = list(results)
  names = list(results[targets[0]])
  figure, axes = plots.subplots(len(targets), len(names),
                                figsize=(2.8 * len(names), 2.8 * len(targets)), squeeze=False)
  for i, target in enumerate(targets):
    y = table.columns[target]
    lo, hi = float(np.min(y)), float(np.max(y))
    for j, name in enumerate(names):
      cv = results[target][name]
      ax = axes[i, j]
      ax.scatter(y, cv.oof, s=4, alpha=0.6)
      ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
      ax.fill_between([lo, hi], [0.7 * lo, 0.7 * hi], [1.3 * lo, 1.3 * hi], color="0.85",
                      zorder=0)
      ax.set_title(f"{name}: R² {cv.summary()['r2']:.2f}", fontsize=9)
      ax.set_xlabel(f"measured {target} ({sch.column(target).unit})", fontsize=8)
      if j == 0:
        ax.set_ylabel("predicted (out of fold)", fontsize=8)
  return plots.save(figure, path)


def compare(config, workdir: str) -> dict:
  return {"dataset": config.dataset, **compare_dataset(config, config.dataset, workdir)}


# ---------------------------------------------------------------------------------------------
# fit / predict.
# ---------------------------------------------------------------------------------------------


def model_dir(workdir: str, dataset: str, target: str) -> str:
  return os.path.join(workdir, "models", dataset, target)


def fit(config, workdir: str) -> dict:
  """Fits `config.model` on every row, one model per target, saved under `workdir/models`.
  The reported errors are on the training rows (`train_*`); `compare` measures held-out
  error."""
  sch = energy_data.schema(config.dataset)
  table = load_table(config, config.dataset, min_rows=2)
  x = table.matrix(sch.input_names)
  out = {"dataset": config.dataset, "model": config.model, "rows": len(table)}
  for target in sch.target_names:
    model = regressor(config, config.model).fit(x, table.columns[target])
    path = model_dir(workdir, config.dataset, target)
    model.save(path)
    train = evaluation.regression_metrics(table.columns[target], model.predict(x))
    out[target] = {"train_rmse": train["rmse"], "train_r2": train["r2"], "saved": path}
  return out


def predict(config, workdir: str) -> dict:
  """Reads `predict.input` (the schema's input columns), writes each target's prediction
  (and ensemble spread) to `predict.output` (default `workdir/predictions.csv`)."""
  if not config.predict.input:
    raise UserError("--mode=predict needs --input=FILE.csv with the input columns.")
  sch = energy_data.schema(config.dataset)
  table = energy_data.read_csv(config.predict.input, sch, need_targets=False)
  x = table.matrix(sch.input_names)
  extra = {}
  for target in sch.target_names:
    members = load_model(model_dir(workdir, config.dataset, target)).predict_members(x)
    extra[target] = [f"{v:.6g}" for v in members.mean(0)]
    extra[f"{target}_std"] = [f"{v:.3g}" for v in members.std(0)]
  output = config.predict.output or os.path.join(workdir, "predictions.csv")
  energy_data.write_csv(output, table, extra=extra)
  return {"dataset": config.dataset, "rows": len(table), "output": output,
          **{f"mean_{t}": float(np.mean(np.asarray(extra[t], float)))
             for t in sch.target_names}}


# ---------------------------------------------------------------------------------------------
# screen.
# ---------------------------------------------------------------------------------------------


def ensemble(config, name: str) -> models.Regressor | Bagged:
  """The screening ensemble: the model's own vmapped members where it has several, else
  `screen.members` bootstrap refits."""
  model = regressor(config, name)
  inner = model.model if isinstance(model, LogTarget) else model
  if inner.config.get("members", 1) > 1:
    return model
  return Bagged(lambda: regressor(config, name), config.screen.members, config.screen.seed)


def screen(config, workdir: str) -> dict:
  """Fits the ensembles on the swh data, screens the design grid, writes the ranking."""
  if config.dataset != "swh":
    raise UserError(f"screening ranks solar water heater designs; set --config.dataset=swh "
                    f"(got {config.dataset!r}).")
  sch = energy_data.schema("swh")
  table = load_table(config, "swh", min_rows=2)
  x = table.matrix(sch.input_names)
  sc = config.screen
  predictors = {}
  for target in sch.target_names:
    predictors[target] = ensemble(config, config.model).fit(
        x, table.columns[target]).predict_members
  if sc.method == "grid":
    designs = screening.design_grid({v: sc.grid[v] for v in screening.DESIGN_VARIABLES})
  elif sc.method == "sample":
    designs = screening.sample_designs(sc.samples, sc.seed)
  else:
    raise UserError(f"screen.method must be 'grid' or 'sample', got {sc.method!r}.")
  start = time.perf_counter()
  result = screening.screen(designs, predictors, rule=sc.rule, max_heat_loss=sc.max_heat_loss,
                            weight=sc.weight, risk=sc.risk)
  seconds = time.perf_counter() - start
  os.makedirs(workdir, exist_ok=True)
  top = result.top(sc.top_k)
  top_path = os.path.join(workdir, "top_designs.csv")
  _write_rows(top_path, top)
  screening.plot_screening(os.path.join(workdir, "screening_pareto.png"), result, sc.top_k,
                           sc.max_heat_loss)
  curves = screening.response_curves(top[0], predictors)
  screening.plot_response(os.path.join(workdir, "screening_response.png"), curves)
  with open(os.path.join(workdir, "screening.json"), "w") as f:
    json.dump({"rule": sc.rule, "max_heat_loss": sc.max_heat_loss, "weight": sc.weight,
               "risk": sc.risk, "method": sc.method, "model": config.model,
               "grid": {v: list(sc.grid[v]) for v in screening.DESIGN_VARIABLES},
               "designs": len(result.score), "feasible": int(result.feasible.sum()),
               "top": top}, f, indent=1)
  return {"model": config.model, "designs": int(len(result.score)),
          "feasible": int(result.feasible.sum()), "rule": sc.rule,
          "screen_seconds": round(seconds, 2), "top_design": _rounded(top[0]),
          "top_designs": top_path}


def _rounded(row: Mapping[str, float]) -> dict:
  return {k: round(v, 3) for k, v in row.items()}


def _write_rows(path: str, rows: list[dict]) -> None:
  columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
  energy_data.write_csv(path, energy_data.Table(columns),
                        extra={"rank": list(range(1, len(rows) + 1))})


# ---------------------------------------------------------------------------------------------
# demo: every model on every generated dataset, then the screening.
# ---------------------------------------------------------------------------------------------


def demo(config, workdir: str) -> dict:
  """`compare` on each of `demo.datasets`, then `screen` on swh: one JSON line."""
  start = time.perf_counter()
  out = {}
  for dataset in [d.strip() for d in config.demo.datasets.split(",") if d.strip()]:
    per = overridden(config, dataset=dataset,
                     target_transform=config.demo.target_transforms.get(dataset, "none"))
    summary = compare_dataset(per, dataset, workdir)
    out[dataset] = {t: {n: {k: round(m[k], 4) for k in ("rmse", "r2", "within_30")}
                        for n, m in summary[t].items()}
                    for t in energy_data.schema(dataset).target_names}
  screened = screen(overridden(config, dataset="swh", target_transform="none"), workdir)
  out["top_design"] = screened["top_design"]
  out["designs_screened"] = screened["designs"]
  out["seconds"] = round(time.perf_counter() - start, 1)
  return out
