"""lite_jax.energy.pipeline and screening: compare, fit -> predict, screen (ranking consistent
with the models' predictions), and the launcher's command line."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import energy as energy_data
from experiments.configs import energy as energy_configs
from lite_jax.core.errors import UserError
from lite_jax.energy import models, pipeline, screening


def _config(**overrides):
  c = energy_configs.get_config("tiny")
  c.data.rows = 120
  c.compare.models = "elm,grnn"
  c.models.elm.members = 4
  c.screen.members = 3
  return pipeline.overridden(c, **overrides)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("energy"))


@pytest.fixture(scope="module")
def compared(workdir):
  return pipeline.compare(_config(), workdir)


def test_compare_reports_every_model_and_target(compared, workdir):
  assert compared["rows"] == 120 and compared["cv"] == "3-fold"
  for target in ("heat_collection", "heat_loss_coefficient"):
    for name in ("elm", "grnn"):
      metrics = compared[target][name]
      assert set(metrics) == set(pipeline.REPORTED)
      assert 0 <= metrics["within_30"] <= 1
  # The generated heaters' collection is mostly explained by the inputs.
  assert compared["heat_collection"]["elm"]["r2"] > 0.6
  table = open(os.path.join(workdir, "swh_compare.md")).read()
  assert "| elm |" in table and "±" in table
  assert os.path.getsize(os.path.join(workdir, "swh_predicted_vs_measured.png")) > 5000
  saved = json.load(open(os.path.join(workdir, "swh_compare.json")))
  assert saved["heat_collection"]["grnn"]["n_splits"] == 3


def test_fungi_folds_are_grouped_by_building(tmp_path):
  c = _config(dataset="fungi", target_transform="log", **{"compare.models": "grnn"})
  out = pipeline.compare(c, str(tmp_path))
  assert out["rows"] == 249 and out["cv"] == "3-fold grouped by building"
  assert out["fungi"]["grnn"]["r2"] > 0.2


def test_repeated_holdout_and_too_few_rows_for_the_folds(tmp_path):
  c = _config(**{"compare.models": "grnn", "cv.method": "holdout", "cv.repeats": 3})
  out = pipeline.compare(c, str(tmp_path))
  assert out["cv"] == "3 x 20% hold-out"
  path = tmp_path / "three.csv"
  energy_data.write_csv(str(path), energy_data.generate_swh(3, seed=1))
  c = _config(**{"compare.models": "grnn", "data.source": f"csv:{path}", "cv.folds": 5})
  with pytest.raises(UserError, match=r"too few rows \(3\) for 5 folds"):
    pipeline.compare(c, str(tmp_path))


def test_fit_then_predict_from_csv_reproduces_the_model(workdir, tmp_path):
  c = _config(model="elm")
  fitted = pipeline.fit(c, workdir)
  assert fitted["rows"] == 120 and fitted["heat_collection"]["train_r2"] > 0.8
  inputs = energy_data.generate_swh(7, seed=9)
  path = tmp_path / "heaters.csv"
  energy_data.write_csv(str(path), energy_data.Table(
      {k: inputs.columns[k] for k in energy_data.SCHEMAS["swh"].input_names}))
  c.predict.input = str(path)
  c.predict.output = str(tmp_path / "out.csv")
  out = pipeline.predict(c, workdir)
  assert out["rows"] == 7
  rows = list(csv.DictReader(open(c.predict.output)))
  predicted = np.array([float(r["heat_collection"]) for r in rows])
  model = models.load_regressor(pipeline.model_dir(workdir, "swh", "heat_collection"))
  x = inputs.matrix(energy_data.SCHEMAS["swh"].input_names)
  np.testing.assert_allclose(predicted, model.predict(x), rtol=1e-5)
  assert all(float(r["heat_collection_std"]) > 0 for r in rows)  # 4 ELM members


def test_predict_errors_are_one_sentence(tmp_path):
  c = _config()
  with pytest.raises(UserError, match="needs --input"):
    pipeline.predict(c, str(tmp_path))
  path = tmp_path / "x.csv"
  path.write_text("tube_length\n1.8\n")
  c.predict.input = str(path)
  with pytest.raises(UserError, match="has no column tube_count"):
    pipeline.predict(c, str(tmp_path))


def test_log_target_fits_concentrations_and_refuses_nonpositive(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 3))
  y = np.exp(0.5 * x[:, 0] + 3.0)
  model = pipeline.LogTarget(models.make_regressor("grnn", {})).fit(x, y)
  assert np.all(model.predict(x) > 0)
  np.testing.assert_allclose(np.log(model.predict(x)), model.model.predict(x), rtol=1e-12)
  model.save(str(tmp_path / "m"))
  np.testing.assert_array_equal(pipeline.load_model(str(tmp_path / "m")).predict(x),
                                model.predict(x))
  with pytest.raises(UserError, match="positive targets"):
    pipeline.LogTarget(models.make_regressor("grnn", {})).fit(x, y - 100)


@pytest.fixture(scope="module")
def screened(workdir):
  c = _config(model="elm")
  return c, pipeline.screen(c, workdir)


def test_screening_writes_the_ranking_and_its_rule(screened, workdir):
  c, out = screened
  grid = c.screen.grid
  assert out["designs"] == np.prod([len(grid[v]) for v in screening.DESIGN_VARIABLES])
  record = json.load(open(os.path.join(workdir, "screening.json")))
  assert record["rule"] == "constrained" and record["grid"]["tilt"] == list(grid.tilt)
  rows = list(csv.DictReader(open(out["top_designs"])))
  assert len(rows) == c.screen.top_k
  for name in ("screening_pareto.png", "screening_response.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 5000


def test_screening_ranking_is_consistent_with_the_predictions(screened):
  c, out = screened
  top = out["top_design"]
  # Refit the same ensembles and predict the top design and all designs again.
  table = pipeline.load_table(c, "swh")
  x = table.matrix(energy_data.SCHEMAS["swh"].input_names)
  predictors = {t: pipeline.ensemble(c, "elm").fit(x, table.columns[t]).predict_members
                for t in energy_data.SCHEMAS["swh"].target_names}
  designs = screening.design_grid({v: c.screen.grid[v] for v in screening.DESIGN_VARIABLES})
  result = screening.screen(designs, predictors, rule="constrained",
                            max_heat_loss=c.screen.max_heat_loss, weight=1.0, risk=c.screen.risk)
  collection = result.mean["heat_collection"] - c.screen.risk * result.std["heat_collection"]
  loss = result.mean["heat_loss_coefficient"] + c.screen.risk * result.std[
      "heat_loss_coefficient"]
  feasible = loss <= c.screen.max_heat_loss
  best = np.flatnonzero(feasible)[np.argmax(collection[feasible])]
  assert result.order[0] == best
  np.testing.assert_allclose(top["heat_collection"], result.mean["heat_collection"][best],
                             atol=2e-3)
  assert np.all(np.diff(result.score[result.order]) <= 0)


def test_screened_designs_are_near_the_generators_true_optimum(screened):
  # Ground truth on generated data: the typical heater's noise-free physics. Even fitted on
  # 120 heaters, the top design must truly meet the heat-loss ceiling, collect within 5% of the
  # grid's best feasible design and beat three quarters of the feasible designs (whose median
  # collects 28% less than the best).
  c, out = screened
  designs = screening.design_grid({v: c.screen.grid[v] for v in screening.DESIGN_VARIABLES})
  collection, loss = energy_data.simulate_typical_swh(energy_data.swh_design_inputs(designs))
  feasible = collection[loss <= c.screen.max_heat_loss]
  top = energy_data.swh_design_inputs({k: [out["top_design"][k]] for k in designs})
  top_collection, top_loss = energy_data.simulate_typical_swh(top)
  assert top_loss[0] <= c.screen.max_heat_loss
  assert top_collection[0] >= 0.95 * feasible.max()
  assert top_collection[0] >= np.percentile(feasible, 75)


def test_rank_rules_and_pareto_front():
  mean = {"heat_collection": np.array([5.0, 8.0, 9.0, 7.0]),
          "heat_loss_coefficient": np.array([9.0, 10.0, 14.0, 12.0])}
  std = {k: np.zeros(4) for k in mean}
  _, feasible, order = screening.rank(mean, std, rule="constrained", max_heat_loss=12.0,
                                      weight=1.0, risk=0.0)
  assert list(feasible) == [True, True, False, True] and list(order) == [1, 3, 0]
  _, _, order = screening.rank(mean, std, rule="weighted", max_heat_loss=0, weight=0.0, risk=0)
  assert order[0] == 2
  front = screening.pareto_front(mean["heat_collection"], mean["heat_loss_coefficient"])
  assert list(front) == [True, True, True, False]  # design 3 is beaten by design 1
  with pytest.raises(UserError, match="unknown screening rule"):
    screening.rank(mean, std, rule="best", max_heat_loss=1, weight=1, risk=0)


def test_screening_needs_the_swh_dataset(tmp_path):
  with pytest.raises(UserError, match="set --config.dataset=swh"):
    pipeline.screen(_config(dataset="fungi"), str(tmp_path))


def test_launcher_prints_one_json_line_and_rejects_a_bad_dataset(tmp_path):
  base = [sys.executable, "-m", "experiments.energy",
          "--config=experiments/configs/energy.py:tiny", f"--workdir={tmp_path}"]
  ok = subprocess.run(base + ["--mode=compare", "--config.compare.models=svr",
                              "--config.data.rows=90"],
                      capture_output=True, text=True, check=False, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  result = json.loads(ok.stdout.strip().splitlines()[-1])
  assert result["dataset"] == "swh" and "svr" in result["heat_loss_coefficient"]
  bad = subprocess.run(base + ["--config.dataset=solar"], capture_output=True, text=True,
                       check=False, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown dataset schema")
