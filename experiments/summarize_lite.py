r"""Lite Transformer summarization (CNN/DailyMail): train, evaluate, summarize, profile.

    python -m experiments.summarize_lite --flagfile=experiments/flags/summarize_lite_demo.flags
    python -m experiments.summarize_lite --flagfile=experiments/flags/summarize_lite_demo.flags \
        --mode=eval
    echo "notably , the small dog sees a red cat . also , a bird sings ." | \
        python -m experiments.summarize_lite \
        --flagfile=experiments/flags/summarize_lite_demo.flags --mode=summarize
    python -m experiments.summarize_lite --flagfile=experiments/flags/cnndm_lite_d496.flags \
        --config.data.story_dir=/path/to/cnn_dm
    python -m experiments.summarize_lite --flagfile=experiments/flags/cnndm_lite_d496.flags \
        --mode=profile

train: train then summarize the test split (ROUGE-1/2/L F1 x 100 and the Lead-k baseline's);
eval: the same for the workdir's checkpoint; summarize: articles from stdin or --input, one a
line, to summaries on stdout; profile: parameters and Mult-Adds at the paper's lengths
(45 + 45 tokens). Every mode ends by printing one JSON line of its results.
"""

from absl import flags

from lite_jax.core import app
from lite_jax.lite_transformer import summarize

_INPUT = flags.DEFINE_string("input", "-", "summarize mode: file of articles, one a line, "
                             "'-' = stdin.")

MODES = {"train": summarize.train_and_evaluate, "eval": summarize.evaluate,
         "summarize": app.lines_mode(summarize.summarize, _INPUT),
         "profile": lambda config, workdir: summarize.profile(config)}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/summarize_lite.py:demo")
