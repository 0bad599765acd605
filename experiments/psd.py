r"""PSD (Parts, Structure, and Dynamics) on Shapes motion: train, evaluate, visualize, profile.

    python -m experiments.psd --flagfile=experiments/flags/psd_demo.flags
    python -m experiments.psd --flagfile=experiments/flags/psd_demo.flags --mode=evaluate
    python -m experiments.psd --flagfile=experiments/flags/psd_demo.flags --mode=visualize
    python -m experiments.psd --flagfile=experiments/flags/psd_shapes.flags --mode=profile
    python -m experiments.psd --flagfile=experiments/flags/psd_shapes.flags --dimensions=18,9,0

train: stage 1, the active dimensions, stage 2 (each resuming), then the test metrics;
evaluate: the test metrics of the workdir's finished model; visualize: latent traversals,
aggregate-posterior samples, masks, the structure tree and an HTML page in
`<workdir>/pictures/`; profile: parameters and Mult-Adds at the preset's size. Every mode
ends by printing one JSON line of its results (`lite_jax/psd/train.py`).
"""

from lite_jax.core import app
from lite_jax.psd import train

MODES = {"train": train.train_and_evaluate, "evaluate": train.evaluate,
         "visualize": train.visualize, "profile": lambda config, workdir: train.profile(config)}
ALIASES = {"dimensions": ("dimensions", "Stage 2's active latent dimensions, e.g. 18,9,0 "
                          "(default: picked from stage 1's posterior statistics)")}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/psd.py:demo", aliases=ALIASES)
