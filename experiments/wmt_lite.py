r"""Lite Transformer translation: train, evaluate, translate, profile.

    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=eval
    echo "the small dog sees a red cat ." | python -m experiments.wmt_lite \
        --flagfile=experiments/flags/wmt_lite_demo.flags --mode=translate
    python -m experiments.wmt_lite --config=experiments/configs/wmt_lite.py:wmt14_enfr_lite_d496 \
        --mode=profile

Every mode ends by printing one JSON line of its results.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from lite_jax import lite_transformer
from lite_jax.core import errors, metrics, mesh

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/wmt_lite.py:demo", "Config file and preset (path:preset).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/wmt_lite_demo",
                               "Checkpoints, metrics, data caches and outputs go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "translate", "profile"],
                          "train: train then evaluate on the test split; eval: evaluate the "
                          "workdir's checkpoint; translate: stdin or --input to stdout; "
                          "profile: parameters and Mult-Adds.")
_INPUT = flags.DEFINE_string("input", "-", "translate mode: file of source sentences, '-' = "
                             "stdin.")


@errors.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  mesh.initialize_distributed(config.mesh.distributed)
  if _MODE.value == "train":
    result = lite_transformer.train_and_evaluate(config, _WORKDIR.value)
  elif _MODE.value == "eval":
    result = lite_transformer.evaluate(config, _WORKDIR.value)
  elif _MODE.value == "translate":
    stream = sys.stdin if _INPUT.value == "-" else open(_INPUT.value, encoding="utf-8")
    with stream:
      lines = [line.rstrip("\n") for line in stream]
    translations = lite_transformer.translate(config, _WORKDIR.value, lines)
    for line in translations:
      print(line)
    result = {"sentences": len(translations)}
  else:
    result = lite_transformer.profile(config)
  metrics.print_result(result)


if __name__ == "__main__":
  # Progress bars and the result line carry the news; --verbosity=0 shows library INFO logs.
  # (Assigned, not `set_default`: `app.run` raises a verbosity still at its default to INFO.)
  flags.FLAGS.verbosity = -1
  app.run(main, flags_parser=errors.parse_flags)
