r"""AMC channel pruning: the whole pipeline or one phase of it.

    python -m experiments.amc --flagfile=experiments/flags/amc_demo.flags
    python -m experiments.amc --config=experiments/configs/amc.py:mobilenetv1_0p5flops_reference \
        --mode=profile
    python -m experiments.amc --flagfile=experiments/flags/amc_mobilenetv1_0p5flops.flags \
        --config.data.source=folder:/path/to/imagenet --mode=search

all: the full model, search, export and fine-tune the searched and the uniform widths, compare
(the demo); pretrain: the full model; search: the DDPG search (resumable); export: the pruned,
refit smaller model and its accuracy before fine-tuning; finetune: export and fine-tune;
evaluate: test accuracy of the fine-tuned model; profile: params and MACs of the full model and
of `--channels`.
"""

from lite_jax.automl import amc
from lite_jax.core import app

MODES = {"all": amc.run_all, "pretrain": amc.pretrain, "search": amc.search,
         "export": amc.export, "finetune": amc.finetune, "evaluate": amc.evaluate,
         "profile": amc.profile}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/amc.py:demo",
          aliases={"channels": ("channels", "kept input channels per prunable layer, the "
                                            "image's 3 first: '3,24,48,...'")})
