r"""Energy and indoor-environment prediction: ANN, ELM, GRNN and SVR, and design screening.

No data of these papers is public (`specs/energy.md`): every preset runs on the generators of
`data/energy.py` by default, and on the user's measurements with
`--config.data.source=csv:/path/file.csv` (the schema's columns; see `data/energy.py`).
Numbers on generated data describe the generators, not the papers.

Presets (`--config=experiments/configs/energy.py:PRESET`, or a flagfile naming one):

* `fungi`: indoor culturable fungi from 7 indoor/outdoor measurements (Liu et al. 2018: one
  hidden layer, 10 nodes best, up to 83.33% of test predictions within ±30% on the real 249
  groups). 5-fold CV grouped by building, ANN hidden sizes 1-20 swept, log targets.
    python -m experiments.energy --flagfile=experiments/flags/energy_fungi.flags
* `bacteria`: culturable bacteria from the 5 indoor inputs with a GRNN (Liu, Li, Cao 2017).
    python -m experiments.energy --flagfile=experiments/flags/energy_bacteria.flags
* `swh`: evacuated-tube solar water heaters, heat collection (MJ/m2) and heat loss coefficient
  (W/(m3 K)) on 915 heaters; the papers' ELM reaches heat-loss RMSE 0.67 (and, unverified,
  collection RMSE 0.30) on their data. Then `--mode=screen` ranks a design grid.
    python -m experiments.energy --flagfile=experiments/flags/energy_swh.flags
    python -m experiments.energy --flagfile=experiments/flags/energy_swh.flags --mode=screen
* `demo`: every model on the three generated datasets, then the screening, one JSON line in
  under 2 minutes on 2 CPU cores.
    python -m experiments.energy --flagfile=experiments/flags/energy_demo.flags
* `tiny`: the demo shrunk for tests.

Every hyper-parameter the papers leave unstated is a field here with its default (the spec's
§5): the split, activations, solvers, SVR's C/epsilon/gamma, ELM's hidden size, GRNN's sigma
grid, and the screening grid and ranking rule.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from lite_jax.core.errors import UserError
from lite_jax.energy import models

PRESETS = ("fungi", "bacteria", "swh", "demo", "tiny")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.dataset = "fungi"                # fungi | bacteria | swh (data/energy.py SCHEMAS)
  c.data = ml_collections.ConfigDict(dict(
      source="generated",            # generated | csv:PATH
      seed=0,                        # the generator's seed
      rows=0))                       # swh generator rows (0: 915, the SpringerPlus dataset)
  c.target_transform = "none"        # none | log (fit log y: concentrations)

  c.models = ml_collections.ConfigDict()
  c.models.ann = ml_collections.ConfigDict(dict(
      hidden=10, activation="tanh", solver="lbfgs", members=1, l2=1e-4, max_iter=500,
      learning_rate=1e-2, validation_fraction=0.15, patience=30, bootstrap=False, seed=0))
  c.models.elm = ml_collections.ConfigDict(dict(
      hidden=100, activation="sigmoid",
      ridge=config_dict.placeholder(float),  # None: chosen by leave-one-out over ridge_grid
      ridge_grid=tuple(models.DEFAULT_RIDGE_GRID), members=1, seed=0))
  c.models.grnn = ml_collections.ConfigDict(dict(
      sigma=config_dict.placeholder(float),  # None: chosen by leave-one-out over sigma_grid
      sigma_grid=tuple(models.DEFAULT_SIGMA_GRID), max_loo_rows=2000, chunk_rows=4096,
      seed=0))
  c.models.svr = ml_collections.ConfigDict(dict(C=10.0, epsilon=0.1, gamma="scale",
                                                kernel="rbf"))

  c.compare = ml_collections.ConfigDict(dict(
      models="ann,elm,grnn,svr",     # compared in --mode=compare, comma-separated
      hidden_sizes=""))              # ANN hidden sizes swept on the first target: '1-20'
  c.cv = ml_collections.ConfigDict(dict(
      method="kfold",                # kfold | holdout (repeated random hold-out)
      folds=5, repeats=10, test_fraction=0.2,
      grouped=True,                  # keep a building's rows in one fold (where groups exist)
      seed=0))

  c.model = "ann"                    # the model of --mode=fit / predict / screen
  c.predict = ml_collections.ConfigDict(dict(input="", output=""))

  c.screen = ml_collections.ConfigDict()
  c.screen.method = "grid"           # grid | sample
  c.screen.grid = ml_collections.ConfigDict(dict(
      tube_length=(1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1),              # m
      tube_count=tuple(range(10, 51, 2)),                           # 21 values
      tube_spacing=(55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0),  # mm
      tank_mass_per_tube_metre=(3.6, 4.0, 4.4, 4.8, 5.2, 5.6),      # kg per tube per m
      tilt=(30.0, 40.0, 50.0)))                                     # 23,814 designs
  c.screen.samples = 20_000          # --config.screen.method=sample
  c.screen.rule = "constrained"      # constrained | weighted (lite_jax/energy/screening.py)
  c.screen.max_heat_loss = 11.0      # W/(m3 K), the constrained rule's ceiling
  c.screen.weight = 1.0              # the weighted rule's heat-loss weight
  c.screen.risk = 1.0                # rank mean -/+ risk x ensemble std (0: means only)
  c.screen.members = 16              # bootstrap refits for single-member models
  c.screen.top_k = 10
  c.screen.seed = 0

  c.demo = ml_collections.ConfigDict(dict(
      datasets="fungi,bacteria,swh",
      target_transforms=ml_collections.ConfigDict(dict(fungi="log", bacteria="log",
                                                       swh="none"))))
  return c


def fungi() -> ml_collections.ConfigDict:
  c = base_config()
  c.dataset = "fungi"
  c.target_transform = "log"
  c.compare.hidden_sizes = "1-20"
  return c


def bacteria() -> ml_collections.ConfigDict:
  c = base_config()
  c.dataset = "bacteria"
  c.target_transform = "log"
  c.model = "grnn"
  return c


def swh() -> ml_collections.ConfigDict:
  c = base_config()
  c.dataset = "swh"
  c.model = "ann"
  c.models.ann.members = 16          # the screening's ensemble spread (vmapped members)
  return c


def demo() -> ml_collections.ConfigDict:
  c = swh()
  c.models.ann.members = 8
  c.screen.members = 8
  return c


def tiny() -> ml_collections.ConfigDict:
  c = demo()
  c.data.rows = 200
  c.cv.folds = 3
  c.models.ann.max_iter = 60
  c.models.elm.hidden = 40
  c.demo.datasets = "fungi,swh"
  c.screen.grid.tube_count = (10, 30, 50)
  c.screen.grid.tube_spacing = (55.0, 75.0, 95.0)
  c.screen.grid.tank_mass_per_tube_metre = (3.6, 5.6)
  c.screen.members = 3
  return c


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise UserError(f"unknown energy preset {preset!r}; choose one of {', '.join(PRESETS)}.")
  c = globals()[preset]()
  c.preset = preset
  return c
