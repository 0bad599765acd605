"""Energy and indoor-environment prediction (ANN, ELM, GRNN, SVR) and SWH design screening.

  python -m experiments.energy --flagfile=experiments/flags/energy_demo.flags
  python -m experiments.energy --flagfile=experiments/flags/energy_fungi.flags      # compare
  python -m experiments.energy --flagfile=experiments/flags/energy_swh.flags --mode=fit
  python -m experiments.energy --flagfile=experiments/flags/energy_swh.flags --mode=predict \
      --input=heaters.csv
  python -m experiments.energy --flagfile=experiments/flags/energy_swh.flags --mode=screen

The last stdout line is one JSON object of the mode's results.
"""

from lite_jax.core import app
from lite_jax.energy import pipeline

MODES = {"compare": pipeline.compare, "fit": pipeline.fit, "predict": pipeline.predict,
         "screen": pipeline.screen, "demo": pipeline.demo}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/energy.py:demo",
          aliases={"input": ("predict.input", "CSV file with the dataset's input columns"),
                   "output": ("predict.output", "Where --mode=predict writes its CSV")})
