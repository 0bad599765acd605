r"""GAN Compression: teacher, once-for-all distillation, search, fine-tuning, export, evaluation.

    python -m experiments.gan_compress --flagfile=experiments/flags/gan_compress_demo.flags
    python -m experiments.gan_compress --flagfile=experiments/flags/pix2pix_edges2shoes.flags \
        --mode=distill --config.data.source=folder:/data/edges2shoes-r
    python -m experiments.gan_compress --flagfile=experiments/flags/cyclegan_horse2zebra.flags \
        --mode=profile --channels=16_16_24_16_32_64_16_24

Modes: `train_teacher`, `distill`, `search`, `finetune`, `export`, `evaluate`, `profile`, and
`pipeline` (all of them in order; each phase resumes, a finished one is skipped). Tasks
`pix2pix` and `cyclegan` (ResNet generators) and `gaugan` (SPADE). `--channels` picks the
sub-network for finetune/export/evaluate/profile instead of the search result.
Every mode ends by printing one JSON line of its results.
"""

from absl import app, flags
from ml_collections import config_flags

from lite_jax import gan_compression
from lite_jax.core import errors, metrics

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/gan_compress.py:demo", "Config file and preset (path:preset).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/gan_compress_demo",
                               "Every phase's checkpoints, metrics, search result and plots.")
_MODE = flags.DEFINE_enum("mode", "pipeline", list(gan_compression.MODES) + ["profile"],
                          "Which phase to run (see the module docstring).")
_CHANNELS = flags.DEFINE_string(
    "channels", None, "Sub-network channel config, e.g. 16_16_24_16_32_64_16_24 "
    "(sets config.subnet.channels).")


@errors.exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if _CHANNELS.value is not None:
    with config.unlocked():
      config.subnet.channels = _CHANNELS.value
  metrics.print_result(gan_compression.run(_MODE.value, config, _WORKDIR.value))


if __name__ == "__main__":
  flags.FLAGS.verbosity = -1  # progress bars and the result line carry the news
  app.run(main, flags_parser=errors.parse_flags)
