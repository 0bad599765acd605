r"""ProxylessNAS: the whole pipeline or one phase of it.

    python -m experiments.proxyless_nas --flagfile=experiments/flags/proxyless_demo.flags
    python -m experiments.proxyless_nas --flagfile=experiments/flags/proxyless_gpu.flags \
        --config.data.source=folder:/path/to/imagenet --mode=train

all: latency table, search per target, derive, measure, train, evaluate (the demo);
build_latency_table: time every candidate block on this device and check the table against
whole networks; search: warm-up, then one search per latency target (resumable); derive: the
argmax architectures with the super-network's weights; train / evaluate / profile: the derived
networks, or `--arch` (a released network or 'op,op,...').
"""

from lite_jax.automl import proxyless
from lite_jax.core import app

MODES = {"all": proxyless.run_all, "build_latency_table": proxyless.build_latency_table,
         "search": proxyless.search, "derive": proxyless.derive, "train": proxyless.train,
         "evaluate": proxyless.evaluate, "profile": proxyless.profile}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/proxyless_nas.py:demo",
          aliases={"arch": ("train.arch", "proxyless_gpu | proxyless_cpu | proxyless_mobile or "
                                          "one op per searchable block, 'op,op,...'")})
