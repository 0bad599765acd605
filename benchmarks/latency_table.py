r"""How well does a device latency table predict a whole model's measured latency?

    python -m benchmarks.latency_table            # the models below, ~3 minutes on 2 CPU cores
    python -m benchmarks.latency_table --smoke    # tiny and fast (checks the script runs)

For each model, `automl.hardware.build_latency_table` times every conv/dense layer standalone
at f32, bf16 and int8 plus the model without them (`other_ms`); the table predicts each policy
as `LatencyTable.cost`, and `measure_model_latency` runs the whole jitted model with every layer
at its policy's precision. A table entry times exactly the function the model substitutes for
the layer (f32 activations in, cast or quantized, the op, cast or rescaled, f32 out; depthwise
convs through the library's shifted multiply-adds), in a chain of calls inside one executable.
Nothing is fitted to the measured numbers.

Policies (bit widths, mapped to precisions by `LatencyTable.precision_for`): all f32, all bf16,
all int8, and two mixed HAQ-like policies (first layer w8 with unquantized input, i.e. f32;
last layer w8a8; the others drawn from 4..16 bits, so a mix of int8, bf16 and f32 layers).

On a shared machine the load changes over seconds, and a table built during a quiet minute
would not predict a model timed during a busy one. So `hardware.check_latency_table` times the
table's layers and the whole models in the same interleaved rounds, and the check runs
`--rounds` times (the last one re-measures everything at the end); a case reports the median
over rounds of the prediction and of the measurement, and every round's.

Prints one JSON line per table and per (model, policy).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags

from lite_jax.automl import classifiers, hardware
from lite_jax.nn.introspect import list_layers
from lite_jax.nn.quant import FULL_PRECISION

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny model, one round, few repeats (CPU tests).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved table-and-model checks per model.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed interleaved runs per measurement.")

# (name, classifier, width, image size, batch): the tiny demo model and a narrow MobileNetV2
# (53 layers; batch 4 keeps the run within minutes on 2 shared cores).
_MODELS = (("tiny_mobilenet_v2_32px_b16", "tiny_mobilenet_v2", 1.0, 32, 16),
           ("mobilenet_v2_w0.35_96px_b4", "mobilenet_v2", 0.35, 96, 4))
_SMOKE_MODELS = (("tiny_mobilenet_v2_16px_b2", "tiny_mobilenet_v2", 1.0, 16, 2),)


def _policies(num_layers: int) -> dict[str, list[tuple[int, int]]]:
  rng = np.random.default_rng(0)
  policies = {"all_f32": [(FULL_PRECISION, FULL_PRECISION)] * num_layers,
              "all_bf16": [(16, 16)] * num_layers,
              "all_int8": [(8, 8)] * num_layers}
  for i in range(2):
    middle = [tuple(int(b) for b in rng.choice([4, 6, 8, 12, 16, FULL_PRECISION], 2))
              for _ in range(num_layers - 2)]
    policies[f"mixed_{i}"] = [(8, FULL_PRECISION)] + middle + [(8, 8)]
  return policies


def _emit(record: dict[str, Any]) -> None:
  print(json.dumps(record), flush=True)


def main(argv: list[str]) -> None:
  del argv
  rounds, repeats = (1, 2) if _SMOKE.value else (_ROUNDS.value, _REPEATS.value)
  device = jax.devices()[0].device_kind
  for name, classifier, width, size, batch in _SMOKE_MODELS if _SMOKE.value else _MODELS:
    model = classifiers.build_classifier(classifier, num_classes=10, width=width)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    variables = model.init(jax.random.key(1), x)
    layers = list_layers(model, variables, x)
    policies = _policies(len(layers))
    predicted = {p: [] for p in policies}
    measured = {p: [] for p in policies}
    for r in range(rounds):
      start = time.perf_counter()
      table, predictions, times = hardware.check_latency_table(
          model, variables, x, list(policies.values()), repeats=repeats)
      _emit(dict(benchmark="latency_table", device=device, model=name, round=r,
                 layers=len(layers), other_ms=round(table.other_ms, 3),
                 seconds=round(time.perf_counter() - start, 1)))
      for policy, pred, ms in zip(policies, predictions, times):
        predicted[policy].append(pred)
        measured[policy].append(ms)
    for policy, bits in policies.items():
      counts = {p: 0 for p in hardware.PRECISIONS}
      for w, a in bits:
        counts[hardware.LatencyTable.precision_for(w, a)] += 1
      pred, meas = statistics.median(predicted[policy]), statistics.median(measured[policy])
      _emit(dict(benchmark="latency_table", device=device, model=name, policy=policy,
                 layers_by_precision=counts, predicted_ms=round(pred, 3),
                 measured_ms=round(meas, 3), rel_error=round(pred / meas - 1, 4),
                 predicted_ms_rounds=[round(t, 3) for t in predicted[policy]],
                 measured_ms_rounds=[round(t, 3) for t in measured[policy]]))


if __name__ == "__main__":
  app.run(main)
