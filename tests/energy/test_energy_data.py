"""data/energy.py: schemas, generators (against closed forms and an independent integration),
CSV reading and its one-sentence errors."""

import datetime
import math

import numpy as np
import pytest

from data import energy
from lite_jax.core.errors import UserError


@pytest.fixture(scope="module")
def indoor():
  return energy.generate_indoor(seed=0)


def test_indoor_campaign_matches_the_fungi_study_schema(indoor):
  table, dates = indoor
  assert len(table) == 249
  assert len(np.unique(table.groups)) == 85
  counts = np.bincount(table.groups)
  assert counts.min() >= 2 and counts.max() <= 4
  days = [datetime.date.fromisoformat(d) for d in dates]
  assert min(days) >= datetime.date(2016, 11, 15) and max(days) <= datetime.date(2017, 3, 15)
  assert len(energy.SCHEMAS["fungi"].inputs) == 7
  assert energy.SCHEMAS["bacteria"].input_names == [
      "indoor_pm25", "indoor_pm10", "indoor_temperature", "indoor_rh", "indoor_co2"]
  for name in energy.SCHEMAS["fungi"].input_names + ["fungi", "bacteria"]:
    assert np.all(np.isfinite(table.columns[name])) and np.all(table.columns[name] > 0)


def test_indoor_fungi_follow_humidity_and_particles(indoor):
  table, _ = indoor
  log_fungi = np.log(table.columns["fungi"])
  assert np.corrcoef(table.columns["indoor_rh"], log_fungi)[0, 1] > 0.2
  assert np.corrcoef(np.log(table.columns["indoor_pm10"]), log_fungi)[0, 1] > 0.2
  assert np.corrcoef(np.log(table.columns["indoor_co2"]),
                     np.log(table.columns["bacteria"]))[0, 1] > 0.3


def test_generators_are_deterministic_by_seed():
  a, b, c = energy.generate_swh(50, seed=3), energy.generate_swh(50, seed=3), \
      energy.generate_swh(50, seed=4)
  for name in a.columns:
    np.testing.assert_array_equal(a.columns[name], b.columns[name])
  assert not np.allclose(a.columns["heat_collection"], c.columns["heat_collection"])
  assert len(energy.generate_swh()) == 915


def _one_heater(**hidden):
  design = {k: np.array([v]) for k, v in dict(
      tube_length=1.8, tube_count=30.0, tube_spacing=75.0, tank_mass=250.0,
      collector_area=float(energy.gross_area(1.8, 30, 75.0)), tilt=40.0,
      ambient_temperature=20.0, irradiation=17.0).items()}
  base = dict(tau_alpha=0.7, absorber_loss=0.9, insulation=0.05, tube_loss=0.03,
              tank_diameter=0.4, initial_temperature=20.0)
  base.update(hidden)
  return design, {k: np.array([v]) for k, v in base.items()}


def test_lossless_heater_collects_the_intercepted_irradiation():
  design, hidden = _one_heater(absorber_loss=0.0, insulation=1e9)
  collection, _ = energy.simulate_swh(design, hidden)
  intercept = min(1.0, energy.ACCEPTANCE_WIDTH / 0.075)
  # tilt == latitude: no incidence loss.
  np.testing.assert_allclose(collection, 17.0 * 0.7 * intercept, rtol=1e-6)


def test_heat_collection_matches_a_fine_euler_integration():
  design, hidden = _one_heater()
  collection, loss = energy.simulate_swh(design, hidden)
  # Independent reference: the same energy balance, 1-second Euler steps, irradiance read from
  # the continuous sin(pi t / T) profile.
  area, mass = design["collector_area"][0], 250.0
  volume, radius = mass / 1000.0, 0.2
  tank_surface = 2 * math.pi * radius * volume / (math.pi * radius ** 2) + \
      2 * math.pi * radius ** 2
  ua = 0.9 * 30 * 1.8 * energy.ABSORBER_DIAMETER + 0.024 / 0.05 * tank_surface
  gain = 0.7 * min(1.0, energy.ACCEPTANCE_WIDTH / 0.075)
  seconds = energy.TEST_HOURS * 3600
  t = np.arange(seconds) + 0.5
  irradiance = 17e6 * math.pi / (2 * seconds) * np.sin(math.pi * t / seconds)  # W/m2
  temperature = 20.0
  for g in irradiance:
    temperature += (area * g * gain - ua * (temperature - 20.0)) / (mass * 4186.0)
  expected = mass * 4186.0 * (temperature - 20.0) / area / 1e6
  np.testing.assert_allclose(collection, expected, rtol=2e-3)
  np.testing.assert_allclose(loss, (0.024 / 0.05 * tank_surface + 0.03 * 30 * 1.8) / volume,
                             rtol=1e-9)


def test_design_inputs_use_the_gross_area_and_the_standard_test_day():
  inputs = energy.swh_design_inputs({"tube_length": [1.8], "tube_count": [30],
                                     "tube_spacing": [75.0], "tank_mass": [250.0],
                                     "tilt": [40.0]})
  assert list(inputs) == energy.SCHEMAS["swh"].input_names
  np.testing.assert_allclose(inputs["collector_area"], (1.8 + 0.1) * (30 * 0.075 + 0.1))
  assert inputs["irradiation"][0] == 17.0 and inputs["ambient_temperature"][0] == 20.0


def test_csv_round_trip_keeps_columns_and_buildings(tmp_path):
  path = tmp_path / "indoor.csv"
  written = energy.write_generated("fungi", str(path), seed=1)
  read = energy.read_csv(str(path), energy.SCHEMAS["fungi"])
  for name in energy.SCHEMAS["fungi"].input_names + ["fungi"]:
    np.testing.assert_allclose(read.columns[name], written.columns[name], rtol=1e-5)
  # Building labels B000.. come back as the same partition.
  np.testing.assert_array_equal(read.groups, written.groups)
  assert len(energy.load(f"csv:{path}", "bacteria")) == 249


@pytest.mark.parametrize("content, message", [
    ("indoor_pm25,fungi\n1,2\n", "has no column indoor_pm10"),
    ("", "is empty"),
])
def test_csv_structure_errors(tmp_path, content, message):
  path = tmp_path / "bad.csv"
  path.write_text(content)
  with pytest.raises(UserError, match=message):
    energy.read_csv(str(path), energy.SCHEMAS["fungi"])


def test_csv_value_errors_name_the_line_and_column(tmp_path):
  names = energy.SCHEMAS["bacteria"].input_names + ["bacteria"]
  rows = [",".join(names), ",".join(["1"] * len(names)),
          ",".join(["2", "x3"] + ["1"] * (len(names) - 2))]
  path = tmp_path / "bad.csv"
  path.write_text("\n".join(rows) + "\n")
  with pytest.raises(UserError, match=r"line 3, column indoor_pm10: 'x3' is not a number"):
    energy.read_csv(str(path), energy.SCHEMAS["bacteria"])
  with pytest.raises(UserError, match="has 2 data rows; at least 5"):
    energy.load(f"csv:{path}", "bacteria", min_rows=5)


def test_inputs_only_csv_is_enough_for_prediction(tmp_path):
  path = tmp_path / "in.csv"
  names = energy.SCHEMAS["swh"].input_names
  path.write_text(",".join(names) + "\n" + ",".join(["1"] * len(names)) + "\n")
  assert len(energy.read_csv(str(path), energy.SCHEMAS["swh"], need_targets=False)) == 1
  with pytest.raises(UserError, match="heat_collection"):
    energy.read_csv(str(path), energy.SCHEMAS["swh"])


def test_unknown_schema_and_source():
  with pytest.raises(UserError, match="unknown dataset schema"):
    energy.schema("solar")
  with pytest.raises(UserError, match="unknown data source"):
    energy.load("tfds:swh", "swh")
  with pytest.raises(UserError, match="cannot read"):
    energy.read_csv("/nonexistent/x.csv", energy.SCHEMAS["swh"])
