"""PyTorch (eager, CPU or CUDA) peers of the benchmarks' workloads, for `--peer=torch`.

Each module mirrors one lite_jax model in architecture, shapes, dtypes and parameter count,
and copies the JAX parameters into its torch module (`tests/benchmarks/test_peers.py` checks
both: the peers compute the same functions, so the timings compare the same work). Torch is
optional (`requirements-bench.txt`); `available()` says whether it is installed, and the
benchmarks print one line and skip the peer when it is not.

Threads: `torch.set_num_threads` is left at torch's default (one per physical core), as a
user's first run would have it.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from typing import Any, Callable

PEERS = ("none", "torch")
MISSING = "torch is not installed (pip install -r requirements-bench.txt): peer skipped."


def available() -> bool:
  return importlib.util.find_spec("torch") is not None


def requested(peer: str) -> bool:
  """Whether to time the `--peer` flag's peer: True for `torch` when it is installed; when it
  is not, prints one line (stderr) and the benchmark runs without the peer."""
  if peer == "none":
    return False
  if not available():
    print(MISSING, file=sys.stderr, flush=True)
    return False
  return True


def define_flag() -> Any:
  """The benchmarks' `--peer` flag."""
  from absl import flags
  return flags.DEFINE_enum("peer", "none", PEERS, "`torch`: also time the PyTorch eager peer "
                           "(benchmarks/peers/) on the same shapes in the same process and add "
                           "peer_ms and peer_ratio (peer time / ours) to the JSON line.")


def device() -> Any:
  """The torch device a peer runs on: CUDA when torch sees a GPU, else the CPU."""
  import torch
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
  import torch
  if torch.cuda.is_available():
    return torch.cuda.get_device_name(0)
  return f"cpu ({torch.get_num_threads()} torch threads)"


def _synchronize() -> None:
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], *, repeats: int, warmup: int = 2) -> float:
  """Median wall time in ms of `fn()` over `repeats` synchronized runs after `warmup` runs.

  `fn` runs under whatever grad mode its caller set: an inference peer wraps itself in
  `torch.inference_mode()`, a training step needs autograd.
  """
  for _ in range(warmup):
    fn()
  _synchronize()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    _synchronize()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def host(value: Any) -> Any:
  """A JAX / numpy array as a CPU torch tensor (a copy: JAX's buffers are read-only)."""
  import numpy as np
  import torch
  return torch.from_numpy(np.array(value))


def tensor(value: Any, dtype: Any = None) -> Any:
  """A JAX / numpy array as a torch tensor on the peer's device (a copy, in `dtype` if
  given)."""
  out = host(value).to(device())
  return out if dtype is None else out.to(dtype)


def record(peer_ms: float, our_ms: float) -> dict[str, Any]:
  """The fields a benchmark adds to its JSON line: `peer_ratio` > 1 when we are faster."""
  return {"peer": "torch", "peer_device": device_name(), "peer_ms": round(peer_ms, 3),
          "peer_ratio": round(peer_ms / our_ms, 3)}
