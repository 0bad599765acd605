r"""Lite Transformer language model (WikiText-103): train, evaluate, generate, profile.

    python -m experiments.lm_lite --flagfile=experiments/flags/lm_lite_demo.flags
    python -m experiments.lm_lite --flagfile=experiments/flags/lm_lite_demo.flags --mode=eval
    echo "Mary Harris ( born" | python -m experiments.lm_lite \
        --flagfile=experiments/flags/lm_lite_demo.flags --mode=generate
    python -m experiments.lm_lite --flagfile=experiments/flags/wikitext103_lite.flags \
        --mode=profile

train: train, then valid and test perplexity (context window) beside unigram/bigram
baselines; eval: the same for the workdir's checkpoint; generate: continue each line of stdin
or --input; profile: parameters and Mult-Adds by the paper's convention. Every mode ends by
printing one JSON line of its results.
"""

from absl import flags

from lite_jax.core import app
from lite_jax.lite_transformer import lm_train

_INPUT = flags.DEFINE_string("input", "-", "generate mode: file of prompts, '-' = stdin.")

MODES = {"train": lm_train.train_and_evaluate, "eval": lm_train.evaluate,
         "generate": app.lines_mode(lm_train.generate_lines, _INPUT),
         "profile": lambda config, workdir: lm_train.profile(config)}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/lm_lite.py:demo")
