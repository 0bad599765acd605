"""Backend dispatch shared by the kernels: Pallas on GPU, the XLA reference elsewhere.

Every public kernel op takes `backend=` ('auto' | 'pallas' | 'xla') and `interpret=` and asks
`select_path` which implementation runs. The choice is made at trace time, logged once per
(op, path, platform) with absl, and never falls back silently: forcing `backend='pallas'` where
no GPU kernel exists is an error that says what to pass instead.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import jax
from absl import logging
from jax.sharding import PartitionSpec as P

BACKENDS = ("auto", "pallas", "xla")
PALLAS = "pallas"                      # compiled Pallas (Triton) kernel on a GPU
PALLAS_INTERPRET = "pallas_interpret"  # the same kernel body evaluated as XLA ops (any platform)
XLA = "xla"                            # the plain-jnp reference, compiled by XLA

# The mesh axis batches are split over (`lite_jax.core.mesh`): the Pallas paths run per shard.
BATCH_AXIS = "data"

# Platforms with a compiled Pallas kernel. TPU runs the reference until a Mosaic kernel exists.
_KERNEL_PLATFORMS = ("gpu",)

_logged: set[tuple] = set()
_lock = threading.Lock()
_target = threading.local()  # `target_platform`'s override, per thread


@contextlib.contextmanager
def target_platform(platform: str) -> Iterator[None]:
  """Selects paths for `platform` instead of the local backend while tracing inside the block.

  For ahead-of-time lowering to another platform (`kernels.compile_check` lowers the GPU
  kernels on a CPU-only host with `.lower(lowering_platforms=("cuda",))`).

  Args:
    platform: a JAX backend name: 'gpu', 'tpu' or 'cpu'.
  """
  if platform not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"target_platform must be 'cpu', 'gpu' or 'tpu', got {platform!r}.")
  previous = getattr(_target, "platform", None)
  _target.platform = platform
  try:
    yield
  finally:
    _target.platform = previous


def current_platform() -> str:
  """The platform paths are selected for: `target_platform`'s, else `jax.default_backend()`."""
  return getattr(_target, "platform", None) or jax.default_backend()


def select_path(op: str, backend: str = "auto", interpret: bool = False) -> str:
  """Which implementation of `op` runs: `'pallas'`, `'pallas_interpret'` or `'xla'`.

  Args:
    op: the op's name, for the log line and error messages.
    backend: `'auto'` (Pallas where a kernel exists, else XLA), `'pallas'` (kernel or error) or
      `'xla'` (always the reference).
    interpret: run the Pallas kernel body in interpret mode (CPU testing); needs a Pallas backend.

  Raises:
    ValueError: unknown backend, `interpret` with `backend='xla'`, or `backend='pallas'` without
      interpret mode on a platform that has no compiled kernel.
  """
  if backend not in BACKENDS:
    raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}.")
  platform = current_platform()
  if backend == "xla":
    if interpret:
      raise ValueError(f"{op}: interpret=True runs the Pallas kernel, so it needs "
                       f"backend='auto' or 'pallas', not 'xla'.")
    path = XLA
  elif interpret:
    path = PALLAS_INTERPRET
  elif platform in _KERNEL_PLATFORMS:
    path = PALLAS
  elif backend == "pallas":
    raise ValueError(f"{op}: backend='pallas' needs a GPU but JAX runs on {platform!r}; use "
                     f"backend='auto' (XLA reference here) or interpret=True to run the kernel "
                     f"in interpret mode.")
  else:
    path = XLA
  _log_once(op, path, platform)
  return path


def _first_time(key: tuple) -> bool:
  """True the first time `key` is seen in this process (thread-safe): for once-only logs."""
  with _lock:
    if key in _logged:
      return False
    _logged.add(key)
    return True


def _log_once(op: str, path: str, platform: str) -> None:
  if not _first_time((op, path, platform)):
    return
  how = {PALLAS: "compiled Pallas (Triton) kernel",
         PALLAS_INTERPRET: "Pallas kernel in interpret mode",
         XLA: "XLA reference"}[path]
  logging.info("%s runs the %s on %s.", op, how, platform)


def map_batch_shards(fn: Callable[..., Any], *args: jax.Array) -> Any:
  """`fn(*args)`, run per shard of the ambient mesh's `data` axis when there is one.

  XLA cannot partition a Pallas custom call: under a data-parallel `jit` it would gather the
  whole batch onto every device and run the kernel there. Inside `jax.set_mesh(mesh)` with a
  `data` axis that divides the batch, `fn` runs under `jax.shard_map` on each device's own
  samples instead (every sample is independent, so the result is the same). Without such a mesh
  `fn` runs as it is.

  Args:
    fn: maps arrays with a leading batch axis to arrays (or a tuple of them) with one.
    *args: the arrays, batch first.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or BATCH_AXIS not in mesh.axis_names or mesh.shape[BATCH_AXIS] == 1:
    return fn(*args)
  shards, batch = mesh.shape[BATCH_AXIS], args[0].shape[0]
  if batch % shards:
    if _first_time(("map_batch_shards", batch, shards)):
      logging.warning("batch %d does not split over %d '%s' shards: the Pallas kernel runs on "
                      "the whole batch on every device.", batch, shards, BATCH_AXIS)
    return fn(*args)
  return jax.shard_map(fn, in_specs=P(BATCH_AXIS), out_specs=P(BATCH_AXIS), check_vma=False
                       )(*args)
