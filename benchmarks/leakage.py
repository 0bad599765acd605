"""DLG speed: one attack's wall time at the reference budget, and attacks/second when vmapped.

  python -m benchmarks.leakage            # LeNet, 32x32, 300 L-BFGS steps x 20 iterations
  python -m benchmarks.leakage --smoke    # tiny shapes and budget, for CPU tests
  python -m benchmarks.leakage --steps=10 --num_attacks=1,16   # a quick CPU measurement

Prints one JSON line per measurement with the device and backend. The safeguard's early exit
is off (`converged_fraction=0`, no restarts) so every attack runs the full budget and the
numbers measure throughput, not convergence luck.
"""

import json
import time

import jax
import numpy as np
from absl import app, flags

from lite_jax import leakage

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes and budget (CPU tests).")
_BATCHES = flags.DEFINE_list("num_attacks", ["1", "16", "64", "256"],
                             "Attacks vmapped in one program, one measurement each.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per measurement (after compiling).")
_STEPS = flags.DEFINE_integer("steps", 300, "L-BFGS outer steps of 20 iterations (reference: "
                              "300); fewer for a quick CPU measurement.")


def _measure(victim, grads, keys, config) -> tuple[float, float]:
  """(compile seconds, best run seconds) for `len(keys)` attacks in one jitted vmap."""
  run = jax.jit(jax.vmap(lambda g, k: leakage.dlg(victim, g, k, config=config),
                         in_axes=(None, 0)))
  start = time.perf_counter()
  compiled = run.lower(grads, keys).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(compiled(grads, keys))
    times.append(time.perf_counter() - start)
  return compile_s, min(times)


def main(argv):
  del argv
  size, steps, max_iter, counts = 32, _STEPS.value, 20, [int(n) for n in _BATCHES.value]
  if _SMOKE.value:
    size, steps, max_iter = 8, 2, 3
  victim = leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=(size, size, 3),
                               num_classes=100)
  x = jax.random.uniform(jax.random.PRNGKey(1), (size * size * 3,)).reshape(1, size, size, 3)
  grads = victim.gradient(x, victim.one_hot(np.array([7])))
  config = leakage.LBFGSConfig(steps=steps, max_iter=max_iter, converged_fraction=0.0,
                               patience=0)
  device = jax.devices()[0]
  for count in counts:
    keys = jax.random.split(jax.random.PRNGKey(2), count)
    compile_s, seconds = _measure(victim, grads, keys, config)
    print(json.dumps({
        "benchmark": "dlg_lenet", "image_size": size, "lbfgs_iterations": steps * max_iter,
        "num_attacks": count, "seconds": round(seconds, 4),
        "attacks_per_second": round(count / seconds, 3),
        "ms_per_iteration": round(1e3 * seconds / (steps * max_iter), 4),
        "compile_seconds": round(compile_s, 2), "device": device.device_kind,
        "backend": jax.default_backend()}), flush=True)


if __name__ == "__main__":
  app.run(main)
