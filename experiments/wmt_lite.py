r"""Lite Transformer translation: train, evaluate, translate, profile.

    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=eval
    echo "the small dog sees a red cat ." | python -m experiments.wmt_lite \
        --flagfile=experiments/flags/wmt_lite_demo.flags --mode=translate
    python -m experiments.wmt_lite --config=experiments/configs/wmt_lite.py:wmt14_enfr_lite_d496 \
        --mode=profile
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=compress
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=export

train: train then evaluate on the test split; eval: evaluate the workdir's checkpoint;
translate: stdin or --input to stdout; profile: parameters and Mult-Adds; compress: prune +
8-bit quantize the trained model, fine-tune, evaluate and write a size report to
<workdir>/compress; export: the trained (or averaged) model as jax.export artifacts (encoder,
init_cache, decoder_step) that decode with plain JAX, with the vocabulary and a README, to
<workdir>/export. Every mode ends by printing one JSON line of its results.
"""

from absl import flags

from lite_jax import lite_transformer
from lite_jax.core import app

_INPUT = flags.DEFINE_string("input", "-", "translate mode: file of source sentences, '-' = "
                             "stdin.")

MODES = {"train": lite_transformer.train_and_evaluate, "eval": lite_transformer.evaluate,
         "translate": app.lines_mode(lite_transformer.translate, _INPUT),
         "profile": lambda config, workdir: lite_transformer.profile(config),
         "compress": lite_transformer.compress_and_evaluate,
         "export": lite_transformer.export_workdir}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/wmt_lite.py:demo")
