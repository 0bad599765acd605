r"""HAQ mixed-precision quantization: the whole pipeline or one phase of it.

    python -m experiments.haq --flagfile=experiments/flags/haq_demo.flags
    python -m experiments.haq --flagfile=experiments/flags/haq_demo.flags --mode=profile
    python -m experiments.haq --flagfile=experiments/flags/haq_mobilenetv2_latency0p6.flags \
        --config.data.source=folder:/path/to/imagenet --mode=search

all: pretrain, search, fine-tune the searched and the uniform policy, compare (the demo);
pretrain: the fp32 model; search: the DDPG search (resumable); finetune: fine-tune the searched
policy or `--policy='w,a;w,a;...'`; evaluate: test accuracy of the fine-tuned policy; profile:
params, MACs, quantizable layers (and the policy's cost); build_latency_table: time each layer
on this device at f32 / bf16 / int8 and save the table (`--config.cost.kind=device` uses it).
"""

from lite_jax.automl import haq
from lite_jax.core import app

MODES = {"all": haq.run_all, "pretrain": haq.pretrain, "search": haq.search,
         "finetune": haq.finetune, "evaluate": haq.evaluate, "profile": haq.profile,
         "build_latency_table": haq.build_latency_table}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/haq.py:demo",
          aliases={"policy": ("finetune.policy", "per-layer bits 'w,a;w,a;...' or a JSON file "
                                               "{layer path: [w, a]}")})
