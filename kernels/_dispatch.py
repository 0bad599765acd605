"""Backend dispatch shared by the kernels: Pallas on GPU, the XLA reference elsewhere.

Every public kernel op takes `backend=` ('auto' | 'pallas' | 'xla') and `interpret=` and asks
`select_path` which implementation runs. The choice is made at trace time, logged once per
(op, path, platform) with absl, and never falls back silently: forcing `backend='pallas'` where
no GPU kernel exists is an error that says what to pass instead.
"""

from __future__ import annotations

import threading

import jax
from absl import logging

BACKENDS = ("auto", "pallas", "xla")
PALLAS = "pallas"                      # compiled Pallas (Triton) kernel on a GPU
PALLAS_INTERPRET = "pallas_interpret"  # the same kernel body evaluated as XLA ops (any platform)
XLA = "xla"                            # the plain-jnp reference, compiled by XLA

# Platforms with a compiled Pallas kernel. TPU runs the reference until a Mosaic kernel exists.
_KERNEL_PLATFORMS = ("gpu",)

_logged: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


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
  platform = jax.default_backend()
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


def _log_once(op: str, path: str, platform: str) -> None:
  key = (op, path, platform)
  with _lock:
    if key in _logged:
      return
    _logged.add(key)
  how = {PALLAS: "compiled Pallas (Triton) kernel",
         PALLAS_INTERPRET: "Pallas kernel in interpret mode",
         XLA: "XLA reference"}[path]
  logging.info("%s runs the %s on %s.", op, how, platform)
