"""Design-automation speed: AMC's pruned networks against the full ones, and ProxylessNAS's
super-network training step against its derived network's step.

  python -m benchmarks.automl                  # CPU-sized: batches 1 and 64 at 224 px (pruned vs
                                               # full MobileNetV1), the demo space's steps
  python -m benchmarks.automl --image_size=224 --search_batch=64 --space=imagenet   # GPU
  python -m benchmarks.automl --smoke          # small shapes, for a quick check

One JSON line per measurement with the device. Latencies are the median of interleaved rounds
(`hardware.interleaved_median_ms`): the pruned and the full model alternate, so a change in the
machine's load hits both alike and their ratio is the measured speed-up, printed next to the
FLOPs ratio it is meant to follow.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from lite_jax.automl import classifiers, hardware, proxyless, proxyless_net, training

_SIZE = flags.DEFINE_integer("image_size", 224, "Image side of the latency comparison.")
_BATCHES = flags.DEFINE_list("batches", ["1", "64"], "Batch sizes of the latency comparison.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed rounds per measurement.")
_SPACE = flags.DEFINE_enum("space", "demo", ["demo", "imagenet"],
                           "ProxylessNAS space of the step comparison: the CPU demo's (32 px) "
                           "or the paper's 21 blocks (224 px).")
_SEARCH_BATCH = flags.DEFINE_integer("search_batch", 64, "Batch of the training steps.")
_SMOKE = flags.DEFINE_bool("smoke", False, "64 px images, batch 1 and 4, 3 rounds; the demo "
                           "space at batch 8.")

# AMC's released MobileNetV1 at 50% FLOPs (the reference's export channels, input's 3 dropped).
AMC_MOBILENET_V1_0P5 = (24, 48, 96, 80, 192, 200, 328, 352, 368, 360, 328, 400, 736, 752)


def _emit(record: dict) -> None:
  print(json.dumps({"device": jax.devices()[0].device_kind, **record}), flush=True)


def pruned_latency(name: str, full: classifiers.MobileNetV1, pruned: classifiers.MobileNetV1,
                   size: int, batches: list[int], repeats: int) -> None:
  """Latency of `pruned` vs `full` at each batch size (eval mode, jitted), with their MACs."""
  macs = {k: classifiers.profile_classifier(m, size)["macs"]
          for k, m in (("full", full), ("pruned", pruned))}
  for batch in batches:
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)
    calls = []
    for model in (full, pruned):
      variables = model.init(jax.random.key(1), x[:1], train=False)
      calls.append((lambda v, x, model=model: model.apply(v, x, train=False), (variables, x)))
    full_ms, pruned_ms = hardware.interleaved_median_ms(calls, repeats=repeats, warmup=2)
    _emit({"measure": "pruned_vs_full", "model": name, "image_size": size, "batch": batch,
           "full_ms": full_ms, "pruned_ms": pruned_ms, "speedup": full_ms / pruned_ms,
           "full_macs": macs["full"], "pruned_macs": macs["pruned"],
           "flops_ratio": macs["pruned"] / macs["full"]})


def supernet_vs_derived_step(space: proxyless_net.SearchSpace, batch: int, repeats: int
                             ) -> None:
  """The super-network's training step (one sampled path per block; with and without the
  architecture update it runs every 5th step) against its derived network's step, for the
  derived network of the same random choices, on the same batch.

  The super-network's weight step differs from the derived network's only by the switch over
  candidates and the gate plumbing; the architecture update adds a forward and backward pass
  over the held-out batch (and, in `two` mode, recomputes two candidates per block).
  """
  num_classes, size = 1000 if space.image_size == 224 else 10, space.image_size
  supernet = proxyless.SuperNet(space, num_classes)
  lut = proxyless.LatencyLUT(np.where(supernet.mask, 1.0, 0.0).astype(np.float32), 1.0)
  images = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)
  labels = jnp.zeros((batch,), jnp.int32)
  batch_dict = {"image": images, "label": labels, "arch_image": images, "arch_label": labels}
  tx = optax.sgd(0.01, momentum=0.9, nesterov=True)
  step = proxyless.make_search_step(supernet, proxyless.SearchSettings(lut=lut, mode="two"))
  variables = jax.jit(supernet.init, static_argnums=1)(jax.random.key(1), size)
  states = {}
  for name, start, searching in (("weights_only", 0, False), ("with_arch_update", 4, True)):
    state = proxyless.search_state(supernet, variables, tx, proxyless.arch_optimizer(1e-3),
                                   jax.random.key(2), ref_ms=10.0, searching=searching)
    states[name] = state.replace(step=jnp.int32(start))  # the next step is (not) the 5th
  choices = space.sample(np.random.default_rng(0))
  derived = space.derive(choices, num_classes)
  derived_state = training.fresh_state(derived, size, 0, tx)
  derived_step = training.make_step(derived, label_smoothing=0.1)
  calls = [(step, (states["weights_only"], batch_dict)),
           (step, (states["with_arch_update"], batch_dict)),
           (derived_step, (derived_state, {"image": images, "label": labels}))]
  weights_ms, arch_ms, derived_ms = hardware.interleaved_median_ms(calls, repeats=repeats,
                                                                   warmup=2)
  every = 5
  _emit({"measure": "supernet_vs_derived_step", "space": "imagenet" if size == 224 else "demo",
         "image_size": size, "batch": batch, "blocks": len(space.blocks()),
         "candidates": len(space.candidates), "derived_arch": ",".join(choices),
         "supernet_weight_step_ms": weights_ms, "supernet_arch_step_ms": arch_ms,
         "derived_step_ms": derived_ms, "weight_step_ratio": weights_ms / derived_ms,
         "mean_search_step_ratio": ((every - 1) * weights_ms + arch_ms) / every / derived_ms})


def main(argv):
  del argv
  size, batches, repeats = _SIZE.value, [int(b) for b in _BATCHES.value], _REPEATS.value
  if _SMOKE.value:
    size, batches, repeats = 64, [1, 4], 3
  pruned_latency("mobilenet_v1_amc_0.5flops", classifiers.MobileNetV1(),
                 classifiers.MobileNetV1(channels=AMC_MOBILENET_V1_0P5), size, batches, repeats)
  space = (proxyless_net.SearchSpace() if _SPACE.value == "imagenet"
           else proxyless_net.SearchSpace.demo())
  supernet_vs_derived_step(space, 8 if _SMOKE.value else _SEARCH_BATCH.value, repeats)


if __name__ == "__main__":
  app.run(main)
