"""XLA compiler options the library sets on its compiled programs, and `jit` that applies them.

On the CPU, jaxlib 0.10 hands convolutions, reductions and element-wise ops to YNNPACK
("__ynn_fusion") by default. On the 2-core AMD EPYC VM the library is developed on, that path
is several times slower than XLA's own (Eigen) convolutions and loop emitters for the
convolutional networks here, and about as fast for matrix products (issue #20; numbers from
one process, each variant timed alternately, `benchmarks/RESULTS.md`):

* ResNet-9 generator (ngf 64) at 256x256, batch 1: 3941 ms with the defaults, 1363 ms with
  YNNPACK kept for dot products only; the horse2zebra sub-network 411 vs 210 ms.
* A 3x3 convolution 256->256 on 64x64 after reflection padding: 328-366 vs 122-138 ms (a
  convolution with zero padding inside it never took the YNNPACK path: 72-116 ms).
* Instance norm + ReLU on 256x256x64: 220-268 vs 47 ms.
* Transformer train steps (d 496 Lite, d 512 base, 8x40 tokens): 1778 vs 1609 ms and 2907 vs
  2739 ms; matrix products alone: within 5% either way (YNNPACK's are kept).

So the library keeps YNNPACK for dot products only (`CPU_OPTIONS`). The option is
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
