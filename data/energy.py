"""Tabular data for the energy and indoor-environment papers: schemas, CSV files, generators.

No dataset of these papers is public (`specs/energy.md` §3), so every pipeline runs on a
documented generator and reads the user's own measurements from CSV with the same columns.

Schemas (`SCHEMAS`), one per dataset; a CSV file has a header row naming at least the
schema's input columns (and its targets, to fit or evaluate); other columns are ignored:

* `fungi` (Liu et al. 2018, Environ. Sci. Pollut. Res.): indoor PM2.5, indoor PM10, outdoor
  PM2.5, outdoor PM10 (ug/m3), indoor temperature (degC), relative humidity (%), CO2 (ppm) ->
  indoor airborne culturable fungi (CFU/m3). Optional `building` column: splits keep a
  building's rows together.
* `bacteria` (Liu, Li, Cao 2017, IJERPH): the five indoor inputs (PM2.5, PM10, temperature,
  RH, CO2) -> culturable bacteria (CFU/m3); the same 249 groups, so one file holds both.
* `swh` (water-in-glass evacuated-tube solar water heaters, Liu et al. 2015, Energies): tube
  length, number of tubes, tube centre distance, tank water mass (the four inputs the paper
  names), then the collector's gross area, its tilt, and the test day's ambient temperature and
  irradiation on the collector plane (our choice for the inputs the abstract leaves unnamed;
  `specs/energy.md` lists area and tilt as plausible) -> daily heat collection per unit area
  (MJ/m2) and the tank's heat loss coefficient (W/(m3 K)), as China's GB/T 19141 test reports
  them.

Generators (deterministic by seed; never presented as the papers' data):

* `generate_swh(n=915, seed)`: designs drawn from the ranges of domestic products, each run
  through a one-day energy balance (below) with hidden manufacturing variation and
  measurement noise.
* `generate_indoor(seed)`: 249 samples from 85 residential buildings measured between
  2016-11-15 and 2017-03-15 (the fungi study's campaign), with building-level effects.

Every table is a `Table` of float64 columns, with `groups` (building ids) where the data has
them. TensorFlow Datasets is not used here: a few hundred rows of CSV need no ArrayRecord.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from lite_jax.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  unit: str
  description: str


@dataclasses.dataclass(frozen=True)
class Schema:
  """The columns of one dataset: model inputs, targets, and the column that groups rows."""
  name: str
  inputs: tuple[Column, ...]
  targets: tuple[Column, ...]
  group: str | None = None

  @property
  def input_names(self) -> list[str]:
    return [c.name for c in self.inputs]

  @property
  def target_names(self) -> list[str]:
    return [c.name for c in self.targets]

  def column(self, name: str) -> Column:
    for c in self.inputs + self.targets:
      if c.name == name:
        return c
    raise UserError(f"the {self.name} schema has no column {name!r}; its columns are "
                    f"{', '.join(self.input_names + self.target_names)}.")


_PM = "ug/m3"
INDOOR_INPUTS = (
    Column("indoor_pm25", _PM, "indoor PM2.5 mass concentration"),
    Column("indoor_pm10", _PM, "indoor PM10 mass concentration"),
    Column("outdoor_pm25", _PM, "outdoor PM2.5 mass concentration"),
    Column("outdoor_pm10", _PM, "outdoor PM10 mass concentration"),
    Column("indoor_temperature", "degC", "indoor air temperature"),
    Column("indoor_rh", "%", "indoor relative humidity"),
    Column("indoor_co2", "ppm", "indoor CO2 concentration"),
)
SWH_INPUTS = (
    Column("tube_length", "m", "evacuated tube length"),
    Column("tube_count", "-", "number of tubes"),
    Column("tube_spacing", "mm", "distance between tube centres"),
    Column("tank_mass", "kg", "mass of water in the tank"),
    Column("collector_area", "m2", "gross collector area, measured"),
    Column("tilt", "deg", "angle between the tubes and the ground"),
    Column("ambient_temperature", "degC", "mean ambient temperature of the test day"),
    Column("irradiation", "MJ/m2", "daily solar irradiation on the collector plane"),
)
SWH_TARGETS = (
    Column("heat_collection", "MJ/m2", "daily useful heat per m2 of gross collector area"),
    Column("heat_loss_coefficient", "W/(m3 K)", "tank's overnight heat loss per volume and K"),
)

SCHEMAS: dict[str, Schema] = {
    "fungi": Schema("fungi", INDOOR_INPUTS,
                    (Column("fungi", "CFU/m3", "indoor airborne culturable fungi"),),
                    group="building"),
    "bacteria": Schema("bacteria",
                       tuple(c for c in INDOOR_INPUTS if not c.name.startswith("outdoor")),
                       (Column("bacteria", "CFU/m3", "indoor airborne culturable bacteria"),),
                       group="building"),
    "swh": Schema("swh", SWH_INPUTS, SWH_TARGETS),
}


def schema(name: str) -> Schema:
  if name not in SCHEMAS:
    raise UserError(f"unknown dataset schema {name!r}; choose one of {', '.join(SCHEMAS)}.")
  return SCHEMAS[name]


@dataclasses.dataclass
class Table:
  """Named float64 columns of equal length, plus optional row groups.

  `columns`: name -> [n]; `groups`: [n] ints (e.g. building ids) or None.
  """
  columns: dict[str, np.ndarray]
  groups: np.ndarray | None = None

  def __len__(self) -> int:
    return len(next(iter(self.columns.values()))) if self.columns else 0

  def matrix(self, names: Sequence[str]) -> np.ndarray:
    """[n, len(names)] float64."""
    return np.stack([self.columns[n] for n in names], axis=1).astype(np.float64)

  def rows(self, index: np.ndarray) -> "Table":
    return Table({k: v[index] for k, v in self.columns.items()},
                 None if self.groups is None else self.groups[index])


# ---------------------------------------------------------------------------------------------
# CSV.
# ---------------------------------------------------------------------------------------------


def read_csv(path: str, schema_: Schema, *, need_targets: bool = True,
             min_rows: int = 1) -> Table:
  """The schema's columns of the CSV file at `path` (plus the group column where present).

  Raises a one-sentence `UserError` for a missing file, a missing column, an empty cell or a
  non-numeric value (naming its line and column), or fewer than `min_rows` rows.
  """
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = next(reader, None)
      body = list(reader)
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror}).") from None
  if not header:
    raise UserError(f"{path} is empty; it needs a header row naming the columns "
                    f"{', '.join(schema_.input_names)}.")
  header = [h.strip() for h in header]
  wanted = schema_.input_names + (schema_.target_names if need_targets else [])
  missing = [name for name in wanted if name not in header]
  if missing:
    raise UserError(f"{path} has no column {', '.join(missing)} (the {schema_.name} schema "
                    f"needs {', '.join(wanted)}).")
  body = [row for row in body if any(cell.strip() for cell in row)]
  if len(body) < min_rows:
    raise UserError(f"{path} has {len(body)} data rows; at least {min_rows} are needed.")
  columns = {}
  for name in wanted:
    j = header.index(name)
    values = np.empty(len(body))
    for i, row in enumerate(body):
      cell = row[j].strip() if j < len(row) else ""
      try:
        values[i] = float(cell)
      except ValueError:
        raise UserError(f"{path} line {i + 2}, column {name}: {cell!r} is not a number."
                        ) from None
      if not math.isfinite(values[i]):
        raise UserError(f"{path} line {i + 2}, column {name}: {cell!r} is not finite.")
    columns[name] = values
  groups = None
  if schema_.group and schema_.group in header:
    j = header.index(schema_.group)
    labels = [row[j].strip() if j < len(row) else "" for row in body]
    _, groups = np.unique(labels, return_inverse=True)
  return Table(columns, groups)


def write_csv(path: str, table: Table, *, group_column: str | None = None,
              extra: Mapping[str, Sequence] | None = None) -> None:
  """Writes `table` (and `extra` columns, e.g. dates or predictions) with a header row."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  names = list(table.columns)
  extra = dict(extra or {})
  if group_column and table.groups is not None:
    extra = {group_column: [f"B{g:03d}" for g in table.groups], **extra}
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(list(extra) + names)
    for i in range(len(table)):
      writer.writerow([extra[k][i] for k in extra] +
                      [f"{table.columns[n][i]:.6g}" for n in names])


# ---------------------------------------------------------------------------------------------
# Solar water heaters: a one-day energy balance.
# ---------------------------------------------------------------------------------------------

WATER_HEAT_CAPACITY = 4186.0   # J/(kg K)
WATER_DENSITY = 1000.0         # kg/m3
ABSORBER_DIAMETER = 0.047      # m, the inner (absorber) tube of a 58 mm evacuated tube
# A cylindrical absorber sees the sun from every azimuth: over a test day it intercepts the
# beam of a strip about 1.2x its diameter (capped by the tube pitch).
ACCEPTANCE_WIDTH = 1.2 * ABSORBER_DIAMETER
TEST_HOURS = 8                 # 8:00-16:00, GB/T 19141's daily test
INITIAL_TEMPERATURE = 20.0     # degC, the standard test's starting water temperature
LATITUDE = 40.0                # deg, northern China's test sites

# Design ranges of domestic water-in-glass products, used by the generator and by screening.
SWH_DESIGN_RANGES = {
    "tube_length": (1.5, 2.1),     # m (1.5, 1.8, 2.1 m are common)
    "tube_count": (10, 50),
    "tube_spacing": (55.0, 95.0),  # mm
    "tank_mass_per_tube_metre": (3.6, 5.6),  # kg, the tank sized to the tubes
    "tilt": (25.0, 60.0),          # deg
}
SWH_TEST_CONDITIONS = {"ambient_temperature": 20.0, "irradiation": 17.0}  # GB/T 19141


def gross_area(tube_length, tube_count, tube_spacing_mm):
  """Gross collector area (m2): the tube field plus a 0.1 m frame and manifold margin."""
  return (np.asarray(tube_length) + 0.1) * (np.asarray(tube_count) *
                                            np.asarray(tube_spacing_mm) / 1000.0 + 0.1)


def simulate_swh(design: Mapping[str, np.ndarray], hidden: Mapping[str, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The two GB/T 19141 results of each heater, noise-free.

  `design`: `SWH_INPUTS` columns (each [n]); `hidden`: `tau_alpha` (optical efficiency),
  `absorber_loss` (W/(m2 K) of projected absorber area), `insulation` (m of polyurethane,
  k = 0.024 W/(m K)), `tube_loss` (W/(m K) per metre of tube at night), `tank_diameter` (m)
  and `initial_temperature` (degC), each [n].

  Heat collection (Hottel-Whillier form, hourly steps over the test day): the water gains
  `A_g H(t) tau_alpha K(tilt) f_int - (U_abs A_abs + UA_tank)(T - T_a)`, where `f_int` =
  min(1, acceptance width / pitch) is the share of the gross area's beam the tubes intercept
  and K(tilt) a mild incidence-angle loss away from the latitude tilt; the result is
  `M c (T_end - T_0) / A_g` in MJ/m2.
  Heat loss coefficient: `(U_wall A_tank + tube_loss N L) / V` in W/(m3 K) (GB/T 19141's
  U_SL, from the tank's overnight cooling).
  Returns (heat_collection [n], heat_loss_coefficient [n]).
  """
  length = np.asarray(design["tube_length"], np.float64)
  count = np.asarray(design["tube_count"], np.float64)
  pitch = np.asarray(design["tube_spacing"], np.float64) / 1000.0
  mass = np.asarray(design["tank_mass"], np.float64)
  area = np.asarray(design["collector_area"], np.float64)
  tilt = np.asarray(design["tilt"], np.float64)
  ambient = np.asarray(design["ambient_temperature"], np.float64)
  irradiation = np.asarray(design["irradiation"], np.float64) * 1e6  # J/m2

  volume = mass / WATER_DENSITY
  radius = np.asarray(hidden["tank_diameter"]) / 2
  tank_length = volume / (math.pi * radius ** 2)
  tank_surface = 2 * math.pi * radius * tank_length + 2 * math.pi * radius ** 2
  ua_tank = 0.024 / np.asarray(hidden["insulation"]) * tank_surface            # W/K
  ua_absorber = np.asarray(hidden["absorber_loss"]) * count * length * ABSORBER_DIAMETER
  intercept = np.minimum(1.0, ACCEPTANCE_WIDTH / pitch)
  incidence = 1.0 - 0.3 * (1.0 - np.cos(np.radians(tilt - LATITUDE))) ** 0.5
  gain_fraction = np.asarray(hidden["tau_alpha"]) * incidence * intercept

  # Irradiance over the day ~ sin(pi t / T), hourly energies summing to `irradiation`.
  edges = np.linspace(0.0, math.pi, TEST_HOURS + 1)
  hourly_share = np.cos(edges[:-1]) - np.cos(edges[1:])
  hourly_share /= hourly_share.sum()
  capacity = mass * WATER_HEAT_CAPACITY
  loss_rate = ua_absorber + ua_tank
  temperature = np.asarray(hidden["initial_temperature"], np.float64).copy()
  start = temperature.copy()
  for share in hourly_share:  # exact solution of dT/dt = (P - UA (T - Ta)) / C over the hour
    power = area * irradiation * share / 3600.0 * gain_fraction
    relaxed = -np.expm1(-loss_rate * 3600.0 / capacity)  # accurate as losses vanish
    temperature = temperature + (ambient + power / loss_rate - temperature) * relaxed
  heat_collection = capacity * (temperature - start) / area / 1e6
  heat_loss = (ua_tank + np.asarray(hidden["tube_loss"]) * count * length) / volume
  return heat_collection, heat_loss


def sample_swh_hidden(rng: np.random.Generator, n: int, tank_mass: np.ndarray
                      ) -> dict[str, np.ndarray]:
  """Manufacturing and test variation that no input measures (see `simulate_swh`)."""
  return {
      "tau_alpha": rng.uniform(0.62, 0.72, n),
      "absorber_loss": rng.uniform(0.6, 1.2, n),
      "insulation": rng.uniform(0.045, 0.055, n),
      "tube_loss": rng.uniform(0.027, 0.033, n),
      "tank_diameter": _tank_diameter(tank_mass) * rng.uniform(0.95, 1.05, n),
      "initial_temperature": INITIAL_TEMPERATURE + rng.uniform(-0.5, 0.5, n),
  }


def simulate_typical_swh(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """`simulate_swh` of the generator's typical heater (every hidden quantity at the middle of
  its range, no noise): the ground truth a screening on generated data can be checked
  against. `inputs`: `SWH_INPUTS` columns, each [n]."""
  mass = np.asarray(inputs["tank_mass"], np.float64)
  n = len(mass)
  hidden = {"tau_alpha": np.full(n, 0.67), "absorber_loss": np.full(n, 0.9),
            "insulation": np.full(n, 0.05), "tube_loss": np.full(n, 0.03),
            "tank_diameter": _tank_diameter(mass),
            "initial_temperature": np.full(n, INITIAL_TEMPERATURE)}
  return simulate_swh(inputs, hidden)


def _tank_diameter(mass: np.ndarray) -> np.ndarray:
  """Longer tanks for larger volumes: the diameter grows slowly with the volume."""
  return np.clip(0.30 + 0.35 * mass / WATER_DENSITY, 0.32, 0.48)


def generate_swh(n: int = 915, seed: int = 0) -> Table:
  """`n` tested heaters (915 as the SpringerPlus dataset), deterministic by `seed`.

  Inputs are drawn from `SWH_DESIGN_RANGES` (tube lengths on a 0.1 m grid, integer tube
  counts), the gross area is measured with 1% error, test days vary (ambient 5-30 degC,
  irradiation 15-25 MJ/m2 on the collector plane); targets are `simulate_swh` with 2% (heat
  collection) and 3% (heat loss) multiplicative measurement noise.
  """
  if n < 1:
    raise UserError(f"the number of generated heaters must be positive, got {n}.")
  rng = np.random.default_rng(np.random.SeedSequence([seed, 915]))
  lo, hi = SWH_DESIGN_RANGES["tube_length"]
  length = np.round(rng.uniform(lo, hi, n), 1)
  count = rng.integers(SWH_DESIGN_RANGES["tube_count"][0],
                       SWH_DESIGN_RANGES["tube_count"][1] + 1, n).astype(np.float64)
  spacing = np.round(rng.uniform(*SWH_DESIGN_RANGES["tube_spacing"], n))
  mass = np.round(count * length * rng.uniform(*SWH_DESIGN_RANGES["tank_mass_per_tube_metre"],
                                               n))
  design = {
      "tube_length": length, "tube_count": count, "tube_spacing": spacing, "tank_mass": mass,
      "collector_area": gross_area(length, count, spacing) * rng.normal(1.0, 0.01, n),
      "tilt": np.round(rng.uniform(*SWH_DESIGN_RANGES["tilt"], n)),
      "ambient_temperature": rng.uniform(5.0, 30.0, n),
      "irradiation": rng.uniform(15.0, 25.0, n),
  }
  hidden = sample_swh_hidden(rng, n, mass)
  collection, loss = simulate_swh(design, hidden)
  columns = dict(design)
  columns["heat_collection"] = collection * rng.normal(1.0, 0.02, n)
  columns["heat_loss_coefficient"] = loss * rng.normal(1.0, 0.03, n)
  return Table({k: np.asarray(v, np.float64) for k, v in columns.items()})


def swh_design_inputs(design: Mapping[str, np.ndarray],
                      conditions: Mapping[str, float] = SWH_TEST_CONDITIONS
                      ) -> dict[str, np.ndarray]:
  """Model inputs of candidate designs (`tube_length`, `tube_count`, `tube_spacing`,
  `tank_mass`, `tilt`; each [n]): the area from the geometry (`gross_area`) and the standard
  test day's conditions."""
  n = len(np.asarray(design["tube_length"]))
  inputs = {k: np.asarray(design[k], np.float64)
            for k in ("tube_length", "tube_count", "tube_spacing", "tank_mass", "tilt")}
  inputs["collector_area"] = gross_area(inputs["tube_length"], inputs["tube_count"],
                                        inputs["tube_spacing"])
  for name, value in conditions.items():
    inputs[name] = np.full(n, float(value))
  return {c.name: inputs[c.name] for c in SWH_INPUTS}


# ---------------------------------------------------------------------------------------------
# Indoor fungi and bacteria: 249 samples from 85 buildings, heating season 2016/17.
# ---------------------------------------------------------------------------------------------

CAMPAIGN = (datetime.date(2016, 11, 15), datetime.date(2017, 3, 15))


def generate_indoor(seed: int = 0, *, buildings: int = 85, samples: int = 249
                    ) -> tuple[Table, list[str]]:
  """The fungi/bacteria campaign: `samples` rows from `buildings` buildings (2-4 each).

  Per building (unobserved): an infiltration factor (indoor/outdoor particle ratio 0.35-0.8),
  an air-change rate, a dampness and an occupancy level. Per visit (a random day of the
  campaign): outdoor PM2.5 log-normal around Baoding's heating-season level (median 110,
  sigma 0.6) with PM10/PM2.5 of 1.3-1.9; indoor PM from infiltration plus indoor sources;
  temperature 17-26 degC from district heating; RH falls with temperature and rises with
  dampness and occupancy; CO2 from occupancy over ventilation. Concentrations are log-linear
  (coefficients in the code, per unit of the named quantity):

    log fungi    = 5.3 + 0.030 (RH - 35) + 0.045 (T - 21) + 0.40 log(PM10_in / 80)
                   + 0.15 log(PM10_out / 160) + 0.20 log(CO2 / 900) + dampness + e
    log bacteria = 6.2 + 0.50 log(CO2 / 900) + 0.30 log(PM2.5_in / 60) + 0.025 (T - 21)
                   + 0.010 (RH - 35) + occupancy + e

  with building effects ~ N(0, 0.25) and N(0, 0.3) and e ~ N(0, 0.18). Returns the table
  (groups = building index) and each row's date (ISO strings).
  """
  if samples < 2 * buildings or samples > 4 * buildings:
    raise UserError(f"{samples} samples cannot be spread as 2-4 visits over {buildings} "
                    f"buildings.")
  rng = np.random.default_rng(np.random.SeedSequence([seed, 249]))
  visits = np.full(buildings, 2)
  while visits.sum() < samples:  # one more visit at a random building with fewer than 4
    visits[rng.choice(np.flatnonzero(visits < 4))] += 1
  groups = np.repeat(np.arange(buildings), visits)
  n = samples

  def per_building(values):
    return np.asarray(values)[groups]

  infiltration = per_building(rng.uniform(0.35, 0.8, buildings))
  air_changes = per_building(rng.lognormal(np.log(0.5), 0.4, buildings))  # 1/h
  dampness = per_building(rng.normal(0.0, 0.25, buildings))
  occupancy = per_building(rng.normal(0.0, 0.3, buildings))
  days = (CAMPAIGN[1] - CAMPAIGN[0]).days
  offsets = np.sort(rng.integers(0, days + 1, n))
  rng.shuffle(offsets)
  dates = [(CAMPAIGN[0] + datetime.timedelta(days=int(d))).isoformat() for d in offsets]

  out_pm25 = rng.lognormal(np.log(110.0), 0.6, n)
  out_pm10 = out_pm25 * rng.uniform(1.3, 1.9, n)
  sources = rng.lognormal(np.log(12.0), 0.7, n)  # cooking, smoking
  in_pm25 = infiltration * out_pm25 + sources
  in_pm10 = in_pm25 * rng.uniform(1.2, 1.6, n) + rng.lognormal(np.log(8.0), 0.5, n)
  temperature = rng.uniform(17.0, 26.0, n)
  occupants = np.exp(occupancy) * rng.uniform(1.0, 4.0, n)
  co2 = 420.0 + 400.0 * occupants / (air_changes * 2.5) * rng.lognormal(0.0, 0.15, n)
  rh = np.clip(35.0 - 1.8 * (temperature - 21.0) + 20.0 * dampness + 2.0 * occupancy +
               rng.normal(0.0, 4.0, n), 15.0, 75.0)
  log_fungi = (5.3 + 0.030 * (rh - 35.0) + 0.045 * (temperature - 21.0) +
               0.40 * np.log(in_pm10 / 80.0) + 0.15 * np.log(out_pm10 / 160.0) +
               0.20 * np.log(co2 / 900.0) + dampness + rng.normal(0.0, 0.18, n))
  log_bacteria = (6.2 + 0.50 * np.log(co2 / 900.0) + 0.30 * np.log(in_pm25 / 60.0) +
                  0.025 * (temperature - 21.0) + 0.010 * (rh - 35.0) + occupancy +
                  rng.normal(0.0, 0.18, n))
  columns = {
      "indoor_pm25": in_pm25, "indoor_pm10": in_pm10, "outdoor_pm25": out_pm25,
      "outdoor_pm10": out_pm10, "indoor_temperature": temperature, "indoor_rh": rh,
      "indoor_co2": co2, "fungi": np.exp(log_fungi), "bacteria": np.exp(log_bacteria),
  }
  return Table({k: np.round(v, 2) for k, v in columns.items()}, groups), dates


def generate(name: str, seed: int = 0, n: int | None = None) -> Table:
  """The generated table of schema `name`: `swh`, `n` heaters (default 915); `fungi` and
  `bacteria`, the 249 samples of the indoor campaign (`n` does not apply)."""
  schema(name)
  if name == "swh":
    return generate_swh(915 if n is None else n, seed)
  return generate_indoor(seed)[0]


def write_generated(name: str, path: str, seed: int = 0, n: int | None = None) -> Table:
  """Writes the generated table of `name` as CSV (indoor: with `building` and `date`)."""
  if name == "swh":
    table = generate(name, seed, n)
    write_csv(path, table)
  else:
    table, dates = generate_indoor(seed)
    write_csv(path, table, group_column="building", extra={"date": dates})
  return table


def load(source: str, schema_name: str, *, seed: int = 0, rows: int | None = None,
         need_targets: bool = True, min_rows: int = 1) -> Table:
  """`source`: `generated` (this module's generator for the schema) or `csv:PATH`."""
  sch = schema(schema_name)
  if source == "generated":
    table = generate(schema_name, seed, rows)
  elif source.startswith("csv:"):
    table = read_csv(source[4:], sch, need_targets=need_targets, min_rows=min_rows)
  else:
    raise UserError(f"unknown data source {source!r}; use 'generated' or 'csv:PATH'.")
  if len(table) < min_rows:
    raise UserError(f"the {schema_name} data has {len(table)} rows; at least {min_rows} are "
                    f"needed.")
  return table
