"""The conv and dense layers of any Flax model, in the order they run, with their shapes.

Design automation walks a model layer by layer (HAQ's bit widths, AMC's channel counts, the
hardware cost models' per-layer latencies), so it needs each `nn.Conv` / `nn.Dense` call as the
model executes it: its parameter path, geometry, input resolution and MACs. `list_layers`
records them with `flax.linen.intercept_methods` while the model is traced abstractly
(`jax.eval_shape`: nothing is computed or compiled), so it works for any Flax model built from
`nn.Conv` and `nn.Dense` without the model knowing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerInfo:
  """One conv or dense layer as the model calls it.

  Attributes:
    path: the layer's parameter path joined by "/", e.g. "features/block3/expand/conv"; the key
      of quantization policies and latency tables.
    kind: "conv" or "dense".
    c_in, c_out: input and output features (channels).
    kernel: spatial kernel size (square kernels; 1 for dense layers).
    stride: spatial stride (0 for dense layers, as HAQ's state has it).
    groups: `feature_group_count`; `depthwise` is groups == c_in == c_out > 1.
    in_hw, out_hw: input and output spatial size (height * width; 1 for dense layers).
    n_weights: kernel elements (no bias).
    macs: multiply-adds of one example (kernel elements * output positions).
    index: the call position, 0 first.
  """
  path: str
  kind: str
  c_in: int
  c_out: int
  kernel: int
  stride: int
  groups: int
  in_hw: int
  out_hw: int
  n_weights: int
  macs: int
  index: int

  @property
  def depthwise(self) -> bool:
    return self.groups > 1 and self.groups == self.c_in == self.c_out


def _spatial(shape: Sequence[int], dims: int) -> int:
  """The number of positions in the `dims` spatial axes before the channel axis."""
  return math.prod(shape[-1 - dims:-1])


def _is_array(leaf: Any) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def list_layers(model: nn.Module, variables: Any, *args, method: Any = None,
                **kwargs) -> list[LayerInfo]:
  """The `nn.Conv` and `nn.Dense` layers that `model.apply(variables, *args, **kwargs)` calls.

  Args:
    model: any Flax linen module.
    variables: its variables (or their `jax.ShapeDtypeStruct`s).
    *args, **kwargs: the call's inputs for ONE example or a batch: `in_hw`, `macs` are per
      example (the leading axis is the batch), e.g. images `[batch, height, width, channels]`.
      Arrays are traced abstractly; anything else (`train=False`, `mutable=[...]`) is passed
      as it is.
    method: the module method to call (default `__call__`).

  Returns:
    One `LayerInfo` per call, in call order (a layer called twice appears twice).
  """
  calls: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

  def record(next_fun, call_args, call_kwargs, context):
    out = next_fun(*call_args, **call_kwargs)
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
      calls.append((context.module, tuple(call_args[0].shape), tuple(out.shape)))
    return out

  # Only arrays are traced: flags such as `train=False` or `mutable=[...]` stay Python values.
  leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
  arrays = [leaf for leaf in leaves if _is_array(leaf)]

  def run(v, traced):
    queue = iter(traced)
    call_args, call_kwargs = jax.tree_util.tree_unflatten(
        treedef, [next(queue) if _is_array(leaf) else leaf for leaf in leaves])
    return model.apply(v, *call_args, method=method, **call_kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(run, variables, arrays)

  layers = []
  for index, (module, in_shape, out_shape) in enumerate(calls):
    path = "/".join(module.path)
    c_in, c_out = in_shape[-1], out_shape[-1]
    if isinstance(module, nn.Dense):
      # A dense layer on [batch, ..., features] runs once per leading position.
      positions = math.prod(out_shape[1:-1]) if len(out_shape) > 2 else 1
      layers.append(LayerInfo(path, "dense", c_in, c_out, 1, 0, 1, 1, 1, c_in * c_out,
                              c_in * c_out * positions, index))
      continue
    kernel_size = ((module.kernel_size,) if isinstance(module.kernel_size, int)
                   else tuple(module.kernel_size))
    if len(set(kernel_size)) != 1:
      raise ValueError(f"layer {path!r} has a non-square kernel {kernel_size}; LayerInfo "
                       f"describes square kernels only.")
    strides = module.strides if module.strides is not None else 1
    stride = strides if isinstance(strides, int) else strides[0]
    groups = module.feature_group_count
    n_weights = math.prod(kernel_size) * (c_in // groups) * c_out
    out_hw = _spatial(out_shape, len(kernel_size))
    layers.append(LayerInfo(path, "conv", c_in, c_out, kernel_size[0], int(stride), groups,
                            _spatial(in_shape, len(kernel_size)), out_hw, n_weights,
                            n_weights * out_hw, index))
  return layers
