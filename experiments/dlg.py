"""Gradient leakage: DLG / iDLG / Inverting Gradients attacks, text attack, defense sweep.

  python -m experiments.dlg --flagfile=experiments/flags/dlg_lenet.flags
  python -m experiments.dlg --flagfile=experiments/flags/dlg_lenet.flags --num_attacks=10
  python -m experiments.dlg --flagfile=experiments/flags/dlg_defense_sweep.flags \
      --mode=defense_sweep

The last stdout line is one JSON object of final metrics (mse, psnr, label_acc, ...).
"""

from absl import app, flags
from ml_collections import config_flags

from data import images as image_data
from lite_jax import leakage
from lite_jax.core import errors, metrics

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/dlg.py:lenet", "Config file with :preset.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/dlg", "Output directory.")
_MODE = flags.DEFINE_enum("mode", "attack", ["attack", "defense_sweep"], "What to run.")
_NUM_ATTACKS = flags.DEFINE_integer(
    "num_attacks", None, "Independent attacks (images x seeds) run in one vmapped program; "
    "overrides config.num_attacks.")


@errors.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if _NUM_ATTACKS.value is not None:
    config.num_attacks = _NUM_ATTACKS.value
  if config.num_attacks < 1:
    raise errors.UserError(f"num_attacks must be at least 1, not {config.num_attacks}.")
  if config.attack == "text":
    if _MODE.value != "attack":
      raise errors.UserError("the defense sweep attacks images; use an image preset.")
    metrics.print_result(leakage.run_text_attack(config, _WORKDIR.value))
    return
  images, labels = image_data.load_images(
      config.data.source, size=config.image_size, channels=config.channels,
      count=config.num_attacks * config.batch_size, num_classes=config.num_classes,
      data_dir=config.data.data_dir or None, seed=config.data.seed)
  if _MODE.value == "attack":
    result = leakage.run_attack(config, images, labels, _WORKDIR.value)
  else:
    task = image_data.load_digits_task()
    result = leakage.defense_sweep(config, images, labels, task, _WORKDIR.value)
  metrics.print_result(result)


if __name__ == "__main__":
  # Progress bars and the result line carry the news; --verbosity=0 shows library INFO logs.
  # (Assigned, not `set_default`: `app.run` raises a verbosity still at its default to INFO.)
  flags.FLAGS.verbosity = -1
  app.run(main, flags_parser=errors.parse_flags)
