"""Multiply-accumulate (MAC) and parameter counting by walking the jaxpr of a function.

Each paper counts a little differently, so the counter takes a `MacsConvention`. The default
counts what every convention shares: one MAC per multiply-add of `dot_general` (linear layers,
attention matmuls, einsums) and `conv_general_dilated` (at output resolution, so transposed
convolutions — dilated inputs — are counted at their output size). What is not traced is not
counted: profile the part of a model the paper counts (e.g. without the output projection).

Conventions that charge elementwise layers (GAN Compression charges instance norm and SPADE's
modulation one MAC per element) name them: the layer is a `jax.jit`-ed function with that
name (`counted_call`), which shows up in the jaxpr as one named call, so the counter charges
it per output element instead of guessing from the primitives inside it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jex_core


@dataclasses.dataclass(frozen=True)
class MacsConvention:
  """What one paper's tables count.

  Attributes:
    name: the paper / convention name, for reports.
    counted_calls: `(name, macs per output element)` of the `counted_call` functions this
      convention charges (e.g. `(("instance_norm", 1),)`); other named calls are looked into.
    depthwise_conv: count convolutions with one input channel per group.
  """
  name: str
  counted_calls: tuple[tuple[str, int], ...] = ()
  depthwise_conv: bool = True


# Lite Transformer §3: linear layers + attention QK^T and AV; not the depthwise (lightweight or
# dynamic) convolutions, nothing elementwise. Reproduces the paper's 90M / 360M / 527M.
LITE_TRANSFORMER = MacsConvention("lite_transformer", depthwise_conv=False)
MATMUL_AND_CONV = MacsConvention("matmul_and_conv")


# `counted_call` names of convolutions written without `conv_general_dilated`, called as
# `(x, kernel [k, k, in, out], ...)` and charged like the conv, k*k*in per output element:
# `nn.depthwise_conv2d` (in = 1; counted where the convention counts depthwise convs) and
# `nn.tap_sum_conv2d`.
DEPTHWISE_CALL = "depthwise_conv2d"
TAP_SUM_CALL = "tap_sum_conv2d"


def counted_call(fn: Callable) -> Callable:
  """`jax.jit(fn)`, visible to conventions that charge calls by name (`fn.__name__`).

  Nested jit is inlined by XLA, so this changes what the counter sees, not what runs.
  """
  return jax.jit(fn)


def _dot_general_macs(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return math.prod(lhs) * math.prod(rhs_free)


def _is_depthwise(eqn) -> bool:
  kernel = eqn.invars[1].aval.shape
  return kernel[eqn.params["dimension_numbers"].rhs_spec[1]] == 1 and (
      eqn.params["feature_group_count"] > 1)


def _conv_macs(eqn) -> int:
  out = eqn.outvars[0].aval.shape
  kernel = eqn.invars[1].aval.shape
  out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  per_output = math.prod(kernel) // kernel[out_feature_dim]
  return math.prod(out) * per_output // eqn.params.get("batch_group_count", 1)


def _sub_jaxprs(value: Any):
  if isinstance(value, jex_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def _jaxpr_macs(jaxpr, convention: MacsConvention) -> int:
  per_element = dict(convention.counted_calls)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_general_macs(eqn)
    elif name == "conv_general_dilated":
      if convention.depthwise_conv or not _is_depthwise(eqn):
        total += _conv_macs(eqn)
    elif name in ("jit", "pjit") and eqn.params.get("name") in (DEPTHWISE_CALL, TAP_SUM_CALL):
      if convention.depthwise_conv or eqn.params["name"] != DEPTHWISE_CALL:
        kernel = eqn.invars[1].aval.shape
        total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel[:3])
      continue
    elif name in ("jit", "pjit") and eqn.params.get("name") in per_element:
      total += per_element[eqn.params["name"]] * sum(
          math.prod(v.aval.shape) for v in eqn.outvars)
      continue
    subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
    if not subs:
      continue
    counts = [_jaxpr_macs(j, convention) for j in subs]
    if name == "cond":  # Only one branch runs; count the most expensive.
      total += max(counts)
    elif name == "scan":
      total += eqn.params["length"] * sum(counts)
    else:  # jit, remat, custom_jvp/vjp (primal only), while (one iteration: trip count unknown).
      total += sum(counts) if name != "custom_vjp_call" else counts[0]
  return total


def count_macs(fn: Callable, *args, convention: MacsConvention = MATMUL_AND_CONV,
               **kwargs) -> int:
  """MACs of one call `fn(*args, **kwargs)`; args may be arrays or `jax.ShapeDtypeStruct`s."""
  closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
  return _jaxpr_macs(closed.jaxpr, convention)


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or `ShapeDtypeStruct`s."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
