"""Gradient leakage: DLG / iDLG / Inverting Gradients attacks, text attack, defense sweep.

  python -m experiments.dlg --flagfile=experiments/flags/dlg_lenet.flags
  python -m experiments.dlg --flagfile=experiments/flags/dlg_lenet.flags --num_attacks=10
  python -m experiments.dlg --flagfile=experiments/flags/dlg_defense_sweep.flags \
      --mode=defense_sweep
  python -m experiments.dlg --flagfile=experiments/flags/dlg_batch_resolution_sweep.flags

The last stdout line is one JSON object of final metrics (mse, psnr, label_acc, ...).
"""

from lite_jax import leakage
from lite_jax.core import app

MODES = {"attack": leakage.attack, "defense_sweep": leakage.sweep,
         "batch_resolution_sweep": leakage.batch_sweep}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/dlg.py:lenet",
          aliases={"num_attacks": ("num_attacks", "Independent attacks (images x seeds) run in "
                                                  "one vmapped program")})
