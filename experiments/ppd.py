r"""PPD (Physical Primitive Decomposition) on block towers: generate, train, evaluate, visualize.

    python -m experiments.ppd --flagfile=experiments/flags/ppd_demo.flags
    python -m experiments.ppd --flagfile=experiments/flags/ppd_demo.flags --mode=evaluate
    python -m experiments.ppd --flagfile=experiments/flags/ppd_demo.flags --mode=visualize
    python -m experiments.ppd --flagfile=experiments/flags/ppd_towers.flags

train (the default): the model, then the appearance-only ablation (each resuming), then the
test metrics of both; generate: build the data's ArrayRecord files only; evaluate: the test
metrics of the workdir's trained models (with the physics refinement when
`eval.refine`); visualize: true vs predicted primitives and trajectories in
`<workdir>/pictures/`. Every mode ends by printing one JSON line (`lite_jax/ppd/train.py`).
"""

from lite_jax.core import app
from lite_jax.ppd import train

MODES = {"train": train.train_and_evaluate, "generate": train.generate, "evaluate": train.evaluate,
         "visualize": train.visualize}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/ppd.py:demo")
