"""DLG speed: one attack's wall time at the reference budget, and attacks/second when vmapped.

  python -m benchmarks.leakage            # LeNet, 32x32, 300 L-BFGS steps x 20 iterations
  python -m benchmarks.leakage --smoke    # tiny shapes and budget, for CPU tests
  python -m benchmarks.leakage --steps=10 --num_attacks=1,16   # a quick CPU measurement
  python -m benchmarks.leakage --steps=10 --num_attacks=1 --batch_size=0 --peer=torch  # vs PyTorch

Then the batched attack: a batch of `--batch_size` (8) images behind one gradient, iDLG labels,
joint and per-sample schedules, `--batch_seeds` (16) seeds vmapped (`benchmark:
dlg_lenet_batch`; `--smoke` runs it only when `--batch_size` is given). Prints one JSON line
per measurement with the device and backend. The safeguard's early exit is off
(`converged_fraction=0`, no restarts) so every attack runs the full budget and the numbers
measure throughput, not convergence luck.

With `--peer=torch` the single-attack line (`dlg_lenet`, one attack) also times the DLG
reference's loop in PyTorch eager (`benchmarks/peers/leakage.py`: the same LeNet weights and
observed gradient, `torch.optim.LBFGS` for `--steps` steps of 20 iterations after one warm-up
step) and adds `peer_ms` (median per iteration) and `peer_ratio` (peer / our
`ms_per_iteration`, above 1 when we are faster).
"""

import json
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import peers
from lite_jax import leakage

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes and budget (CPU tests).")
_BATCHES = flags.DEFINE_list("num_attacks", ["1", "16", "64", "256"],
                             "Attacks vmapped in one program, one measurement each.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per measurement (after compiling).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images behind the batched attack's gradient "
                                   "(0 skips it).")
_BATCH_SEEDS = flags.DEFINE_integer("batch_seeds", 16, "Batched attacks (seeds) vmapped.")
_STEPS = flags.DEFINE_integer("steps", 300, "L-BFGS outer steps of 20 iterations (reference: "
                              "300); fewer for a quick CPU measurement.")
_PEER = peers.define_flag()


def _measure(victim, grads, keys, config, batch_size: int = 1,
             schedule: str = "joint") -> tuple[float, float]:
  """(compile seconds, best run seconds) for `len(keys)` attacks in one jitted vmap.

  Batch 1: DLG (soft label). Larger batches: iDLG labels and the given schedule.
  """
  if batch_size == 1:
    attack = lambda g, k: leakage.dlg(victim, g, k, config=config)
  else:
    attack = lambda g, k: leakage.idlg(victim, g, k, batch_size=batch_size, config=config,
                                       schedule=schedule)
  run = jax.jit(jax.vmap(attack, in_axes=(None, 0)))
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
  config = leakage.LBFGSConfig(steps=steps, max_iter=max_iter, converged_fraction=0.0,
                               patience=0)
  device = jax.devices()[0]
  with_peer = peers.requested(_PEER.value)
  runs = [("dlg_lenet", 1, count, "joint") for count in counts]
  # The smoke run measures the batched attack only when asked (`--batch_size`).
  if _BATCH_SIZE.value > 1 and (not _SMOKE.value or flags.FLAGS["batch_size"].present):
    runs += [("dlg_lenet_batch", _BATCH_SIZE.value, _BATCH_SEEDS.value, schedule)
             for schedule in ("joint", "per_sample")]
  for name, batch_size, count, schedule in runs:
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch_size * size * size * 3,)).reshape(
        batch_size, size, size, 3)
    grads = victim.gradient(x, victim.one_hot((np.arange(batch_size) * 13 + 7) % 100))
    keys = jax.random.split(jax.random.PRNGKey(2), count)
    compile_s, seconds = _measure(victim, grads, keys, config, batch_size, schedule)
    record = {
        "benchmark": name, "image_size": size, "batch_size": batch_size,
        "batch_schedule": schedule,
        "lbfgs_iterations": steps * max_iter, "num_attacks": count,
        "seconds": round(seconds, 4), "attacks_per_second": round(count / seconds, 3),
        "ms_per_iteration": round(1e3 * seconds / (steps * max_iter), 4),
        "compile_seconds": round(compile_s, 2), "device": device.device_kind,
        "backend": jax.default_backend()}
    if with_peer and name == "dlg_lenet" and count == 1:
      from benchmarks.peers import leakage as peer_lib
      peer = peer_lib.from_jax(victim.params)
      peer_ms = peer_lib.iteration_ms(peer, peer_lib.gradients_from_jax(peer, grads), batch_size,
                                      size, steps, max_iter)
      record.update(peers.record(peer_ms, 1e3 * seconds / (steps * max_iter)))
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
