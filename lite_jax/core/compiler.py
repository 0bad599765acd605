"""XLA compiler options the library sets on its compiled programs, and `jit` that applies them.

On the CPU, jaxlib 0.10 hands convolutions, reductions and element-wise ops to YNNPACK
("__ynn_fusion") by default. On the 2-core AMD EPYC VM the library is developed on, its
convolutions are several times slower than XLA's own (Eigen) for the networks here, while its
matrix products are as fast or a little faster (issue #20; `benchmarks/RESULTS.md`, "XLA:CPU
options"):

* ResNet-9 generator (ngf 64) at 256x256, batch 1, idle machine: 619 ms with YNNPACK kept for
  dot products only, 1695 ms with the defaults (PyTorch eager beside them: 591 and 566 ms);
  timed alternately in one process, 1240 vs 3491 ms.
* A 3x3 convolution 256 -> 256 on 64x64 after reflection padding: 122-138 vs 328-366 ms (a
  convolution with zero padding inside it never took the YNNPACK path: 72-116 ms).
* The horse2zebra sub-network: 205 vs 170 ms at batch 1 (YNNPACK's fused element-wise and
  reduction passes help it there) but 2534 vs 2963 ms at batch 16.
* Transformer train steps (d 496 Lite, d 512 base, 8x40 tokens): 1609 vs 1778 ms and 2739 vs
  2907 ms; matrix products alone: within 5% either way.
* With other processes on the cores YNNPACK's own threads degrade far more than Eigen's
  (instance norm + ReLU on 256x256x64 at load 7: 220-268 vs 47 ms).

So the library keeps YNNPACK for dot products only (`CPU_OPTIONS`), for the generators'
inference, the classifiers' steps and Lite Transformer decoding. Not (yet) for the shared
training loop: under XLA's optimization level 0 (the tests' setting, `tests/conftest.py`)
the tiny PVCNN ShapeNet training step reached NaN at step 2 with these options and never
without them, at the default level it trained with both; until that is understood, training
steps compile with XLA's defaults. The option is
experimental in XLA: where a jaxlib rejects it (renamed or removed), `compiler_options()` finds
that once with a tiny compile, logs one line and returns None, and programs compile with
XLA's defaults. Setting the environment variable `LITE_JAX_XLA_DEFAULTS=1` does the same on
purpose (to compare, or to rule the option out when debugging). The option concerns only the
CPU backend; on GPU and TPU it is accepted and has no effect.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
DEFAULTS_ENV = "LITE_JAX_XLA_DEFAULTS"


@functools.cache
def compiler_options() -> dict[str, Any] | None:
  """`CPU_OPTIONS` when this jaxlib accepts them and `LITE_JAX_XLA_DEFAULTS` is unset, else
  None (XLA's defaults)."""
  if os.environ.get(DEFAULTS_ENV, "") not in ("", "0"):
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception as e:  # pylint: disable=broad-except  (any rejection means: not here)
    logging.info("XLA compiler options %s not accepted by jaxlib %s (%s); using XLA's "
                 "defaults.", CPU_OPTIONS, jax.__version__, str(e).splitlines()[0][:200])
    return None
  return dict(CPU_OPTIONS)


def jit(fun: Callable, **kwargs) -> Callable:
  """`jax.jit(fun, **kwargs)` with the library's compiler options (`compiler_options()`).

  Options apply to a top-level compilation only (jax refuses them on a jit inside another
  trace), so a call with traced arguments -- from inside a caller's `jax.jit`, `vmap` or
  `grad` -- runs the plain `jax.jit(fun, **kwargs)`, and the caller's compilation decides.
  The jitted function is built on first use, so a module may decorate at import time without
  initializing a jax backend then (`jax.distributed.initialize` must come first on a pod).
  Attributes of the jitted function (`lower`, `eval_shape`, ...) are forwarded.
  """
  return _LazyJit(fun, kwargs)


class _LazyJit:

  def __init__(self, fun: Callable, kwargs: dict[str, Any]):
    functools.update_wrapper(self, fun)
    self._fun, self._kwargs = fun, kwargs

  @functools.cached_property
  def _jitted(self) -> Callable:
    return jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)

  @functools.cached_property
  def _nested(self) -> Callable:
    return jax.jit(self._fun, **self._kwargs)

  def __call__(self, *args, **kwargs):
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
    return (self._nested if traced else self._jitted)(*args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    if name.startswith("_"):  # not forwarded: keeps copy/pickle probes and recursion away
      raise AttributeError(name)
    return getattr(self._jitted, name)
