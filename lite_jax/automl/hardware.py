"""Hardware cost models for design automation, and latency tables measured on this device.

HAQ searches bit widths under a latency, energy or size budget, ProxylessNAS adds an expected
latency to its loss; both need "what does this layer cost at these bits on that hardware".
The reference released one opaque table ([53, 8, 8] int64 cloud latencies for MobileNetV2,
batch 16) and no way to build another, and users asked how latency was measured (HAQ issues
#15, #17; ProxylessNAS never released CPU/GPU tables). So every cost here says what it models,
with which assumptions, in which unit, behind one interface (`CostModel.layer_costs(layers,
policy) -> [L]`, `cost = sum`):

- `LookupTableCost`: the reference's released table, read from the user's `.npy` file.
- `BitSerialCost`, `BitFusionCost`, `SizeCost`: analytic models with their formulas and
  constants stated (the paper's BISMO and BitFusion simulators were never released, so these
  are stand-ins with declared assumptions, not reproductions of its numbers).
- `LatencyTable`: per-layer times measured on *this* device by `build_latency_table`, at the
  precisions XLA really executes here (f32, bf16, int8 x int8 -> int32), saved as JSON with the
  device and versions, plus the measured cost of everything that is not a conv or dense layer.
  `measure_model_latency` runs a whole model with each layer at its chosen precision, and
  `check_latency_table` times a table and whole models in the same interleaved rounds, which is
  how a table's prediction is checked (`benchmarks/latency_table.py`).

The timing machinery is public for other tables measured on this device (ProxylessNAS's block
tables, `automl.proxyless_net`): `interleaved_median_ms` (compile, warm up, time every call in
interleaved rounds, median), `chained` (`CHAIN_LENGTH` dependent calls in one executable) and
`stand_in` (a layer's output shape, materialized, nothing computed).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import math
import os
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from lite_jax.core.errors import UserError
from lite_jax.nn import depthwise
from lite_jax.nn.introspect import LayerInfo, list_layers
from lite_jax.nn.quant import FULL_PRECISION

Policy = Sequence[tuple[int, int]]

# What each precision of a latency table executes through XLA.
PRECISIONS: dict[str, str] = {
    "f32": "float32 x float32 -> float32",
    "bf16": "bfloat16 x bfloat16 -> bfloat16",
    "int8": "int8 x int8 -> int32",
}
_OPERAND_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "int8": jnp.int8}
# Activations entering an int8 layer are quantized on this fixed symmetric range: the time of a
# layer does not depend on the values; accuracy work calibrates ranges with `nn.quant`.
_INT8_ACTIVATION_RANGE = 6.0
_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _check_policy(layers: Sequence[LayerInfo], policy: Policy, max_bits: int) -> None:
  if len(policy) != len(layers):
    raise UserError(f"the policy has {len(policy)} (w_bits, a_bits) pairs but the model has "
                    f"{len(layers)} conv/dense layers.")
  for layer, bits in zip(layers, policy):
    for b in bits:
      if not (b == FULL_PRECISION or 1 <= b <= max_bits):
        raise UserError(f"layer {layer.path!r} asks for {b} bits; this cost model takes 1.."
                        f"{max_bits} or FULL_PRECISION ({FULL_PRECISION}).")


def _accelerator_bits(bits: int) -> int:
  """Integer accelerators have no float mode: an operand left unquantized (`FULL_PRECISION`,
  in HAQ the first layer's input image) runs in their widest mode, 8 bits. The reference's
  released table does alike: its a = -1 for the first layer reads the 7-bit column."""
  return 8 if bits == FULL_PRECISION else bits


def _gemm_shape(layer: LayerInfo, batch_size: int) -> tuple[int, int, int]:
  """(M, K, N) of one group of `layer` as a matrix multiply (im2col for convs).

  M = output positions of the batch, K = reduction length (kernel^2 * c_in / groups for a conv),
  N = output features per group. A conv repeats this multiply `groups` times.
  """
  if layer.kind == "dense":
    return batch_size * layer.macs // layer.n_weights, layer.c_in, layer.c_out
  return (batch_size * layer.out_hw, layer.kernel ** 2 * layer.c_in // layer.groups,
          layer.c_out // layer.groups)


def _bytes_moved(layer: LayerInfo, w_bits: int, a_bits: int, batch_size: int) -> float:
  """DRAM bytes of one layer: inputs and outputs at a_bits, weights at w_bits, each once.

  Assumes on-chip buffers big enough that every input, weight and output element crosses DRAM
  exactly once (no im2col duplication, no refetch), and that outputs are requantized to this
  layer's activation width before they are written.
  """
  rows = batch_size * (layer.macs // layer.n_weights if layer.kind == "dense" else 1)
  in_elems = rows * layer.c_in * (layer.in_hw if layer.kind == "conv" else 1)
  out_elems = rows * layer.c_out * (layer.out_hw if layer.kind == "conv" else 1)
  return ((in_elems + out_elems) * a_bits + layer.n_weights * w_bits) / 8


class CostModel(abc.ABC):
  """A per-layer hardware cost of a bit-width policy.

  Attributes:
    name: what is modelled, e.g. "bit_serial_edge_latency".
    unit: the unit of every cost: "ms", "mJ", "bytes" (or the table's own unit).
  """
  name: str
  unit: str

  @abc.abstractmethod
  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    """The cost of each layer.

    Args:
      layers: the model's conv/dense layers in call order (`nn.introspect.list_layers`).
      policy: one `(w_bits, a_bits)` per layer, in the same order; `FULL_PRECISION` (32) means
        not quantized.

    Returns:
      costs: [L] float64, in `self.unit`.
    """

  def cost(self, layers: Sequence[LayerInfo], policy: Policy) -> float:
    """The model's cost: the sum of `layer_costs`."""
    return float(np.sum(self.layer_costs(layers, policy)))


# ---------------------------------------------------------------------------------------------
# The reference's released table.


class LookupTableCost(CostModel):
  """HAQ's released per-layer table, indexed `table[layer, w_bits - 1, a_bits - 1]`.

  The reference ships `qmobilenetv2_imagenet100_batch16_latency_table.npy`: int64 [53, 8, 8],
  "cloud latency" at batch 16, summed over layers. It never states the unit, so `unit` is
  "table units" unless you know better. The reference marks a layer's unquantized input with
  a = -1 and indexes `a - 1 = -2`, which numpy reads as the second-to-last column, i.e. the 7-bit
  column; `FULL_PRECISION` here maps to that same column (for w_bits too), so policies cost
  exactly what they cost in the reference.
  """

  def __init__(self, table: np.ndarray, *, name: str = "haq_lookup_table",
               unit: str = "table units"):
    """table: [L, 8, 8] per-layer costs indexed [layer, w_bits - 1, a_bits - 1]."""
    self.table = np.asarray(table)
    self.name = name
    self.unit = unit

  @classmethod
  def from_npy(cls, path: str | os.PathLike, layers: Sequence[LayerInfo], **kwargs
               ) -> LookupTableCost:
    """Reads a user-provided `.npy` table and checks it has one [8, 8] slice per layer."""
    table = np.load(path)
    expected = (len(layers), 8, 8)
    if table.shape != expected:
      raise UserError(f"lookup table {os.fspath(path)!r} has shape {list(table.shape)}, "
                      f"expected [L, 8, 8] = {list(expected)} for this model's {len(layers)} "
                      f"conv/dense layers.")
    return cls(table, **kwargs)

  @staticmethod
  def _column(bits: int) -> int:
    # The reference's a = -1 indexes -2: the 7-bit column.
    return -2 if bits == FULL_PRECISION else bits - 1

  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    if len(layers) != self.table.shape[0]:
      raise UserError(f"the lookup table has {self.table.shape[0]} layers but the model has "
                      f"{len(layers)}.")
    _check_policy(layers, policy, max_bits=8)
    return np.array([self.table[i, self._column(w), self._column(a)]
                     for i, (w, a) in enumerate(policy)], np.float64)


# ---------------------------------------------------------------------------------------------
# Analytic accelerator models.


@dataclasses.dataclass(frozen=True)
class BitSerialHardware:
  """A BISMO-style bit-serial matrix-multiply array and its memory system.

  Attributes:
    dm, dk, dn: the array: dm x dn dot-product units, each ANDing and popcounting dk bit pairs
      per cycle (one binary dm x dk x dn matrix-multiply tile per cycle).
    clock_hz: array clock.
    dram_bytes_per_s: off-chip bandwidth.
    batch_size: images per inference.
  """
  dm: int
  dk: int
  dn: int
  clock_hz: float
  dram_bytes_per_s: float
  batch_size: int


# ASSUMPTIONS, not measurements (the HAQ paper's BISMO configurations were not released):
# edge: an 8 x 256 x 8 array at 200 MHz (2 * 16384 bit-ops * 200 MHz = 6.5 binary TOPS, BISMO's
#   reported PYNQ-Z1 / Zynq-7020 peak) on the board's 32-bit DDR3-1066 (4.26 GB/s), batch 1;
# cloud: a VU9P (~22x the Zynq-7020's LUTs) holding a 16 x 1024 x 16 array at 250 MHz, with four
#   64-bit DDR4-2400 channels (76.8 GB/s), batch 16 (the released table's batch).
BIT_SERIAL_CONFIGS: dict[str, BitSerialHardware] = {
    "edge": BitSerialHardware(dm=8, dk=256, dn=8, clock_hz=200e6, dram_bytes_per_s=4.26e9,
                              batch_size=1),
    "cloud": BitSerialHardware(dm=16, dk=1024, dn=16, clock_hz=250e6, dram_bytes_per_s=76.8e9,
                               batch_size=16),
}


class BitSerialCost(CostModel):
  """Latency (ms) of a BISMO-like bit-serial matrix-multiply overlay, roofline-bounded.

  Source: Umuroglu, Rasnayake, Sjalander, "BISMO: A Scalable Bit-Serial Matrix Multiplication
  Overlay for Reconfigurable Computing", FPL 2018: a w-bit x a-bit product is computed as
  w * a binary matrix products, so time scales with w_bits * a_bits. Each layer is the matrix
  multiply `_gemm_shape` (M, K, N), repeated `groups` times, tiled onto the array:

    cycles  = groups * ceil(M / dm) * ceil(K / dk) * ceil(N / dn) * w_bits * a_bits
    compute = cycles / clock
    memory  = bytes / bandwidth,  bytes = (inputs + outputs) * a_bits / 8 + weights * w_bits / 8
    latency = max(compute, memory)                                           (roofline)

  The tiling ceilings are why depthwise layers (N = 1 per group) use 1/dn of the array.
  `FULL_PRECISION` is costed as 8 bits (`_accelerator_bits`). The hardware constants are
  assumptions (`BIT_SERIAL_CONFIGS`).
  """
  unit = "ms"

  def __init__(self, config: str = "edge", *, batch_size: int | None = None):
    """config: "edge" (Zynq-7020-class) or "cloud" (VU9P-class); batch_size overrides its."""
    if config not in BIT_SERIAL_CONFIGS:
      raise UserError(f"bit-serial config {config!r} is unknown; choose one of "
                      f"{sorted(BIT_SERIAL_CONFIGS)}.")
    hw = BIT_SERIAL_CONFIGS[config]
    self.hardware = hw if batch_size is None else dataclasses.replace(hw, batch_size=batch_size)
    self.name = f"bit_serial_{config}_latency"

  def compute_ms(self, layer: LayerInfo, w_bits: int, a_bits: int) -> float:
    hw = self.hardware
    m, k, n = _gemm_shape(layer, hw.batch_size)
    cycles = (layer.groups * math.ceil(m / hw.dm) * math.ceil(k / hw.dk) * math.ceil(n / hw.dn)
              * w_bits * a_bits)
    return 1e3 * cycles / hw.clock_hz

  def memory_ms(self, layer: LayerInfo, w_bits: int, a_bits: int) -> float:
    hw = self.hardware
    return 1e3 * _bytes_moved(layer, w_bits, a_bits, hw.batch_size) / hw.dram_bytes_per_s

  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    _check_policy(layers, policy, max_bits=FULL_PRECISION)
    policy = [(_accelerator_bits(w), _accelerator_bits(a)) for w, a in policy]
    return np.array([max(self.compute_ms(l, w, a), self.memory_ms(l, w, a))
                     for l, (w, a) in zip(layers, policy)], np.float64)


class BitFusionCost(CostModel):
  """Latency (ms) or energy (mJ) of a Bit Fusion accelerator (fused 2-bit bricks).

  Source: Sharma et al., "Bit Fusion: Bit-Level Dynamically Composable Architecture for
  Accelerating Deep Neural Networks", ISCA 2018: each Fusion Unit holds 16 BitBricks (2-bit x
  2-bit multipliers) that fuse into one 8x8, four 4x4 or sixteen 2x2 MACs per cycle, so a
  w-bit x a-bit MAC occupies `bricks = ceil(w/2) * ceil(a/2)` brick-cycles (16-bit and wider
  operands are fused over several cycles). With `_bytes_moved` as in `BitSerialCost`:

    latency = max(batch * MACs * bricks / (16 * fusion_units * clock), bytes / bandwidth)
    energy  = batch * MACs * bricks * E_BRICK + bytes * E_DRAM_BYTE

  ASSUMED constants: 512 Fusion Units at 500 MHz (the paper's 45 nm configuration, recalled,
  not checked against the PDF), 16 GB/s DRAM; E_BRICK = 0.23 pJ / 16 (a 45 nm 8-bit multiply
  0.2 pJ plus 8-bit add 0.03 pJ, split over the 16 bricks of one 8x8 MAC) and E_DRAM_BYTE =
  160 pJ (640 pJ per 32-bit DRAM access), both from Horowitz, "Computing's Energy Problem",
  ISSCC 2014. On-chip SRAM energy is ignored. `FULL_PRECISION` is costed as 8 bits
  (`_accelerator_bits`: the accelerator has no float path).
  """
  FUSION_UNITS = 512
  BRICKS_PER_UNIT = 16
  CLOCK_HZ = 500e6
  DRAM_BYTES_PER_S = 16e9
  E_BRICK_PJ = 0.23 / 16
  E_DRAM_BYTE_PJ = 160.0

  def __init__(self, metric: str = "latency", *, batch_size: int = 16):
    """metric: "latency" (ms) or "energy" (mJ); batch_size: images per inference."""
    if metric not in ("latency", "energy"):
      raise UserError(f"Bit Fusion metric {metric!r} is unknown; choose 'latency' or 'energy'.")
    self.metric = metric
    self.batch_size = batch_size
    self.name = f"bit_fusion_{metric}"
    self.unit = "ms" if metric == "latency" else "mJ"

  def _layer(self, layer: LayerInfo, w_bits: int, a_bits: int) -> float:
    brick_ops = self.batch_size * layer.macs * math.ceil(w_bits / 2) * math.ceil(a_bits / 2)
    dram_bytes = _bytes_moved(layer, w_bits, a_bits, self.batch_size)
    if self.metric == "energy":
      return 1e-9 * (brick_ops * self.E_BRICK_PJ + dram_bytes * self.E_DRAM_BYTE_PJ)
    compute_s = brick_ops / (self.BRICKS_PER_UNIT * self.FUSION_UNITS * self.CLOCK_HZ)
    return 1e3 * max(compute_s, dram_bytes / self.DRAM_BYTES_PER_S)

  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    _check_policy(layers, policy, max_bits=FULL_PRECISION)
    return np.array([self._layer(l, _accelerator_bits(w), _accelerator_bits(a))
                     for l, (w, a) in zip(layers, policy)], np.float64)


class SizeCost(CostModel):
  """Weight storage in bytes: `n_weights * w_bits / 8` per layer (biases and BN not counted),
  the budget of HAQ's k-means mode. `FULL_PRECISION` is 32 bits, 4 bytes a weight."""
  name = "weight_size"
  unit = "bytes"

  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    _check_policy(layers, policy, max_bits=FULL_PRECISION)
    return np.array([l.n_weights * w / 8 for l, (w, _) in zip(layers, policy)], np.float64)


# ---------------------------------------------------------------------------------------------
# The ops as this device runs them.


def _is_depthwise(groups: int, c_in: int, c_out: int) -> bool:
  return 1 < groups == c_in == c_out


def _conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Any,
          dilation: Sequence[int], groups: int) -> jax.Array:
  """NHWC conv at the operands' precision (int8 operands accumulate in int32), as the library
  runs it on this device.

  Depthwise convs go through `lite_jax.nn.depthwise.conv_general_dilated`, the implementation
  the classifiers run (on CPU: shifted multiply-adds, far faster than XLA:CPU's grouped conv;
  elsewhere the grouped conv). The shifted form accumulates in its operands' type, so there
  int8 operands are widened to int32 first: int8 x int8 -> int32 like every other int8 layer.
  """
  integer = x.dtype == jnp.int8
  if _is_depthwise(groups, x.shape[-1], kernel.shape[-1]):
    if integer and jax.default_backend() == "cpu":
      x, kernel, integer = x.astype(jnp.int32), kernel.astype(jnp.int32), False
    conv = depthwise.conv_general_dilated
  else:
    conv = lax.conv_general_dilated
  return conv(x, kernel, tuple(strides), padding, rhs_dilation=tuple(dilation),
              dimension_numbers=_CONV_DIMENSIONS, feature_group_count=groups,
              preferred_element_type=jnp.int32 if integer else None)


def _dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x: [..., c_in] @ kernel: [c_in, c_out] at the operands' precision."""
  integer = x.dtype == jnp.int8
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                         preferred_element_type=jnp.int32 if integer else None)


def _quantize_activations(x: jax.Array, precision: str) -> jax.Array:
  if precision != "int8":
    return x.astype(_OPERAND_DTYPES[precision])
  scale = 127 / _INT8_ACTIVATION_RANGE
  return jnp.clip(jnp.round(x * scale), -127, 127).astype(jnp.int8)


def _layer_op(x: jax.Array, kernel: jax.Array, kernel_scale: jax.Array | None, *,
              precision: str, op: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """One conv/dense layer at `precision`, bias excluded: what a table entry times and what
  `measure_model_latency` substitutes for the layer, the same function on both sides.

  Convention: the layer takes the model's activations and returns their dtype (f32 in, f32
  out), so every layer pays its own entry cast (int8: quantize) and exit cast (int8: rescale)
  and consecutive layers at one precision still hand each other f32. A layer's cost then does
  not depend on its neighbours' precisions, which a per-layer table needs.
  """
  y = op(_quantize_activations(x, precision), kernel).astype(x.dtype)
  if precision == "int8":
    y = y * (kernel_scale * (_INT8_ACTIVATION_RANGE / 127)).astype(x.dtype)
  return y


def _quantize_kernel(kernel: np.ndarray, precision: str) -> dict[str, np.ndarray]:
  """The stored weights of a layer at `precision`: int8 with a per-output-channel scale."""
  if precision != "int8":
    return {"kernel": jnp.asarray(kernel, _OPERAND_DTYPES[precision])}
  kernel = np.asarray(kernel, np.float32)
  scale = np.maximum(np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0), 1e-12) / 127
  return {"kernel": jnp.asarray(np.round(kernel / scale), jnp.int8),
          "kernel_scale": jnp.asarray(scale, jnp.float32)}


def _square_side(hw: int, path: str) -> int:
  side = math.isqrt(hw)
  if side * side != hw:
    raise UserError(f"layer {path!r} has {hw} spatial positions, which is not a square image; "
                    f"latency tables take square inputs.")
  return side


def _geometry(layer: LayerInfo) -> dict[str, Any]:
  return {f.name: getattr(layer, f.name) for f in dataclasses.fields(LayerInfo)
          if f.name not in ("path", "index")}


def _layer_shapes(geometry: Mapping[str, Any], path: str, batch_size: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
  """(input, kernel, output) shapes of one layer at `batch_size`."""
  g = geometry
  if g["kind"] == "dense":
    lead = (batch_size,) + ((g["macs"] // g["n_weights"],) if g["macs"] > g["n_weights"] else ())
    return lead + (g["c_in"],), (g["c_in"], g["c_out"]), lead + (g["c_out"],)
  side_in, side_out = _square_side(g["in_hw"], path), _square_side(g["out_hw"], path)
  return ((batch_size, side_in, side_in, g["c_in"]),
          (g["kernel"], g["kernel"], g["c_in"] // g["groups"], g["c_out"]),
          (batch_size, side_out, side_out, g["c_out"]))


def _runs_fused(geometry: Mapping[str, Any]) -> bool:
  """Whether this device runs the layer as elementwise arithmetic that XLA fuses with the
  activations around it (a depthwise conv on CPU: `nn.depthwise`'s shifted multiply-adds)
  rather than as a library call that reads and writes whole buffers (every other conv/dense)."""
  return (geometry["kind"] == "conv" and jax.default_backend() == "cpu"
          and _is_depthwise(geometry["groups"], geometry["c_in"], geometry["c_out"]))


def stand_in(x: jax.Array, out_shape: Sequence[int], fused: bool = False) -> jax.Array:
  """A cheap replacement of a conv/dense layer with its output shape that moves data as the
  layer does in the model but does none of its arithmetic.

  A library-call layer (`fused` False): one element per example broadcast to the output,
  between barriers that make XLA materialize its input and output as the real layer does, so
  the ops around it keep their cost instead of fusing across layers and computing only the
  elements a stand-in reads. A fused layer (`_runs_fused`): its input subsampled at the layer's
  stride (k // 2 padding: out = ceil(in / stride)), without barriers, so it fuses with its
  neighbours like the layer itself and neither side pays a buffer the model never writes.
  """
  if fused:
    stride = -(-x.shape[1] // out_shape[1])
    return x[:, ::stride, ::stride, :][:, :out_shape[1], :out_shape[2], :]
  x = lax.optimization_barrier(x)
  first = x[(slice(None),) + (slice(0, 1),) * (x.ndim - 1)]
  return lax.optimization_barrier(jnp.broadcast_to(first, tuple(out_shape)))


def interleaved_median_ms(calls: Sequence[tuple[Callable, Sequence[Any]]], *, repeats: int,
                           warmup: int) -> list[float]:
  """Median wall time in ms of each `fn(*args)`, measured in interleaved rounds.

  Everything is compiled first (not timed) and run `warmup` times; then each of `repeats`
  rounds runs every call once, synchronized. Interleaving spreads every call's samples over
  the whole measurement, so a machine whose load changes (other processes) shifts all of them
  alike instead of biasing whichever ran during a busy minute.
  """
  if repeats < 1 or warmup < 0:
    raise UserError(f"timing needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}.")
  compiled = [(jax.jit(fn).lower(*args).compile(), args) for fn, args in calls]
  for _ in range(warmup):
    for fn, args in compiled:
      jax.block_until_ready(fn(*args))
  times: list[list[float]] = [[] for _ in compiled]
  for _ in range(repeats):
    for samples, (fn, args) in zip(times, compiled):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      samples.append(time.perf_counter() - start)
  return [1e3 * statistics.median(samples) for samples in times]


def _random_operand(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
  # numpy, not jax.random: a jax.random call compiles a kernel for every new shape.
  return rng.uniform(-1, 1, shape).astype(np.float32)


def _table_padding(kernel: int, side: int, stride: int) -> list[tuple[int, int]]:
  """A table conv's explicit padding: k // 2 on each side for odd kernels (the classifiers'
  padding, same output size as SAME), SAME's split for even ones."""
  if kernel % 2:
    return [(kernel // 2, kernel // 2)] * 2
  return [tuple(p) for p in lax.padtype_to_pads((side, side), (kernel, kernel), (stride, stride),
                                                "SAME")]


# Layer calls per timed executable (`chained`).
CHAIN_LENGTH = 8


def chained(fn: Callable, fused: bool) -> Callable:
  """`(x, *operands) -> y` running `fn` `CHAIN_LENGTH` times, each call after the previous one.

  One call per executable would time what a model never pays per layer: the launch, and on
  CPU waking the thread pool (measured: 0.8 ms for MobileNetV2's stem conv alone, 0.11 ms per
  call in a chain). Inside one executable the calls run back to back as a model's layers do.
  The chain is real: each call's input has one element of the previous output added (XLA:CPU
  runs calls with no buffer dependency concurrently), and each output is materialized (a fused
  layer would otherwise compute only the element the next call reads). For a library-call
  layer the element is added in place; for a fused layer (`_runs_fused`) it is added over the
  whole input, an elementwise producer that fuses into the layer as the model's BatchNorm and
  activation do (XLA recomputes such a producer for every shifted read of a depthwise conv).
  The stand-in is chained the same way, so the dependency's own cost cancels in
  `ms - stand_in_ms`.
  """
  def run(x, *operands):
    y = None
    for _ in range(CHAIN_LENGTH):
      if y is not None:
        previous = (0 * y.ravel()[0]).astype(x.dtype)
        x = x + previous if fused else x.at[(0,) * x.ndim].add(previous)
      y = lax.optimization_barrier(fn(x, *operands))
    return y

  return run


def _layer_call(layer: LayerInfo, precision: str, batch_size: int, dtype: Any,
                rng: np.random.Generator) -> tuple[Callable, tuple]:
  """`(fn, args)` timing `layer` at `precision` standalone: `_layer_op`, the function
  `measure_model_latency` substitutes for it, on random activations of the model's `dtype`
  and a random kernel stored as `measure_model_latency` stores it (`_quantize_kernel`)."""
  in_shape, kernel_shape, _ = _layer_shapes(_geometry(layer), layer.path, batch_size)
  if layer.kind == "dense":
    op = _dense
  else:
    op = functools.partial(_conv, strides=(layer.stride,) * 2,
                           padding=_table_padding(layer.kernel, in_shape[1], layer.stride),
                           dilation=(1, 1), groups=layer.groups)
  stored = _quantize_kernel(_random_operand(rng, kernel_shape), precision)
  x = jnp.asarray(_random_operand(rng, in_shape), dtype)
  return (functools.partial(_layer_op, precision=precision, op=op),
          (x, stored["kernel"], stored.get("kernel_scale")))


# ---------------------------------------------------------------------------------------------
# Latency tables.


@dataclasses.dataclass(frozen=True)
class TableEntry:
  """One layer of a latency table.

  Attributes:
    path: the layer's parameter path.
    geometry: its `LayerInfo` fields but path and index (what the times depend on).
    ms: {precision: median time of one call of the layer in a chain of `CHAIN_LENGTH`
      dependent calls inside one jitted executable (`chained`)}.
    stand_in_ms: the same with the layer replaced by `stand_in` (same input and output
      shapes): the chaining, buffers and data movement that `ms` pays too.
  """
  path: str
  geometry: dict[str, Any]
  ms: dict[str, float]
  stand_in_ms: float


@dataclasses.dataclass(frozen=True)
class LatencyTable(CostModel):
  """Per-layer latencies measured on one device, as a `CostModel` in ms.

  A model's latency is estimated as

    other_ms  +  sum over layers of max(ms[layer][precision_for(w, a)] - stand_in_ms[layer], 0)

  where `other_ms` is the whole model's measured time with every conv/dense replaced by a
  stand-in that computes nothing (so it holds BatchNorm, activations, residual adds, pooling,
  casts, the one dispatch and the buffers), and each layer adds what its computation costs
  over its stand-in, both timed standalone on the same shapes (a standalone call pays a
  dispatch and an output allocation the model pays once; the difference cancels them). A
  layer's time is that of `_layer_op`, the very function `measure_model_latency` substitutes for
  it: activations in, cast or quantized on entry, the op, cast or rescaled back on exit (so
  quantize and rescale steps count), bias outside (it stays in `other_ms`); each standalone
  time is one call of a chain inside one executable (`chained`), as layers run in a model.
  Library-call layers get a stand-in that materializes its input and output like they do; fused
  layers (depthwise on CPU, `_runs_fused`) one that fuses with its neighbours like they do.
  Everything is measured by `build_latency_table`; nothing is fitted. A table built without a
  model has `other_ms` = 0 and estimates the conv/dense layers only. The clamp at 0 keeps
  layers cheaper than the timing noise from costing a negative time.

  Attributes:
    device_kind, platform, jax_version: where and with what it was measured.
    batch_size: the batch every time was measured at.
    dtypes: what each precision executes, e.g. {"int8": "int8 x int8 -> int32"}.
    other_ms: the model's time without its conv/dense computations (see above).
    entries: one `TableEntry` per layer, in call order.
  """
  device_kind: str
  platform: str
  jax_version: str
  batch_size: int
  dtypes: dict[str, str]
  other_ms: float
  entries: tuple[TableEntry, ...]

  unit = "ms"

  @property
  def name(self) -> str:
    return f"latency_table[{self.device_kind}]"

  @staticmethod
  def precision_for(w_bits: int, a_bits: int) -> str:
    """What a `(w_bits, a_bits)` pair runs as on a device with f32, bf16 and int8 units.

    Both <= 8 bits: "int8" (int8 x int8 -> int32; fewer bits run no faster). Both <= 16:
    "bf16", the 16-bit type XLA executes (it keeps 8 significant bits, so this maps storage
    width, not accuracy). Otherwise, `FULL_PRECISION` included: "f32".
    """
    widest = max(w_bits, a_bits)
    return "int8" if widest <= 8 else "bf16" if widest <= 16 else "f32"

  def check_matches(self, layers: Sequence[LayerInfo], source: str = "the latency table"
                    ) -> None:
    """Raises `UserError` unless `layers` are the table's layers (paths and geometry)."""
    if len(layers) != len(self.entries):
      raise UserError(f"{source} has {len(self.entries)} layers but the model has "
                      f"{len(layers)}; build a table for this model.")
    for layer, entry in zip(layers, self.entries):
      if layer.path != entry.path or _geometry(layer) != entry.geometry:
        raise UserError(f"{source} was built for another model: its layer {layer.index} is "
                        f"{entry.path!r} {entry.geometry}, the model's is {layer.path!r} "
                        f"{_geometry(layer)}.")

  def precisions(self, policy: Policy) -> dict[str, str]:
    """{layer path: precision} that `policy` runs at (the input of `measure_model_latency`)."""
    if len(policy) != len(self.entries):
      raise UserError(f"the policy has {len(policy)} (w_bits, a_bits) pairs but the latency "
                      f"table has {len(self.entries)} layers.")
    return {e.path: self._precision(e, w, a) for e, (w, a) in zip(self.entries, policy)}

  def _precision(self, entry: TableEntry, w_bits: int, a_bits: int) -> str:
    precision = self.precision_for(w_bits, a_bits)
    if precision not in entry.ms:
      raise UserError(f"the latency table has no {precision!r} times (it has "
                      f"{sorted(entry.ms)}); rebuild it with that precision.")
    return precision

  def layer_costs(self, layers: Sequence[LayerInfo], policy: Policy) -> np.ndarray:
    """Each layer's time at its policy's precision over its stand-in's (>= 0), in ms."""
    self.check_matches(layers)
    _check_policy(layers, policy, max_bits=FULL_PRECISION)
    return np.array([max(e.ms[self._precision(e, w, a)] - e.stand_in_ms, 0.0)
                     for e, (w, a) in zip(self.entries, policy)], np.float64)

  def cost(self, layers: Sequence[LayerInfo], policy: Policy) -> float:
    """The estimated model latency in ms: `other_ms` plus the summed `layer_costs`."""
    return self.other_ms + float(np.sum(self.layer_costs(layers, policy)))

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def save(self, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=1)

  @classmethod
  def load(cls, path: str | os.PathLike, layers: Sequence[LayerInfo] | None = None
           ) -> LatencyTable:
    """Reads a table saved by `save`; with `layers`, checks it was built for that model."""
    with open(path) as f:
      record = json.load(f)
    try:
      entries = tuple(TableEntry(**e) for e in record.pop("entries"))
      table = cls(entries=entries, **record)
    except (KeyError, TypeError) as e:
      raise UserError(f"{os.fspath(path)!r} is not a latency table saved by "
                      f"LatencyTable.save ({e}).") from e
    if layers is not None:
      table.check_matches(layers, source=f"latency table {os.fspath(path)!r}")
    return table


def _is_layer_call(context: Any) -> bool:
  return context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense))


def _with_stand_ins(model: nn.Module, layers: Sequence[LayerInfo], batch_size: int,
                    apply_kwargs: Mapping[str, Any]) -> Callable:
  """`(variables, x) -> model output` with the i-th conv/dense call's `_layer_op` replaced by a
  stand-in with the i-th layer's output shape (its bias, if any, is still added)."""
  stand_ins = [functools.partial(stand_in, out_shape=_layer_shapes(_geometry(l), l.path,
                                                                    batch_size)[2],
                                  fused=_runs_fused(_geometry(l))) for l in layers]

  def run(variables, x):
    calls = iter(stand_ins)

    def replace(next_fun, args, kwargs, context):
      if _is_layer_call(context):
        return _add_bias(context.module, next(calls)(args[0]))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(replace):
      return model.apply(variables, x, **apply_kwargs)

  return run


def build_latency_table(layers: Sequence[LayerInfo], *, batch_size: int,
                        precisions: Sequence[str] = ("f32", "bf16", "int8"), repeats: int = 20,
                        warmup: int = 2, model: nn.Module | None = None,
                        variables: Any = None, x: jax.Array | None = None,
                        apply_kwargs: Mapping[str, Any] | None = None,
                        seed: int = 0) -> LatencyTable:
  """Times every layer on the default device at every precision.

  Each layer runs standalone as exactly the function `measure_model_latency` substitutes for it
  (`_layer_op`), on its own geometry: input activations [batch_size, s, s, c_in] with s =
  sqrt(in_hw) (dense: [batch_size, (positions,) c_in]) in the model's dtype (f32 without a
  model), cast (int8: quantized) on entry, the layer's kernel stored at the precision (int8
  with per-channel scales; int8 x int8 -> int32, as `precision_for` maps bits), stride and
  groups, k // 2 padding, the result cast (int8: rescaled) back to the input dtype; depthwise
  layers through the library's depthwise implementation (`_conv`); random values. Its
  stand-in runs on the same shapes. Layers of equal geometry are timed once. Each time is the
  median of `repeats` interleaved rounds after compilation and `warmup` runs
  (`interleaved_median_ms`).

  Args:
    layers: the model's conv/dense layers (`nn.introspect.list_layers`).
    batch_size: images per call.
    precisions: any of "f32", "bf16", "int8".
    repeats, warmup: timed and untimed runs per measurement.
    model, variables, x: optional, all or none: the model whose `layers` these are and an input
      [batch_size, ...]; then the table's `other_ms` is measured (see `LatencyTable`).
    apply_kwargs: extra keyword arguments of `model.apply`, e.g. {"train": False}.
    seed: for the random operands.

  Returns:
    The `LatencyTable`.
  """
  if (model is None) != (variables is None) or (model is None) != (x is None):
    raise UserError("pass model, variables and x together (to measure the non-conv/dense "
                    "time) or none of them.")
  if x is not None and x.shape[0] != batch_size:
    raise UserError(f"x has batch {x.shape[0]} but the table is built at batch_size "
                    f"{batch_size}.")
  calls, assemble = _table_calls(layers, batch_size, precisions, model, variables, x,
                                 apply_kwargs or {}, seed)
  return assemble(interleaved_median_ms(calls, repeats=repeats, warmup=warmup))


def _table_calls(layers: Sequence[LayerInfo], batch_size: int, precisions: Sequence[str],
                 model: nn.Module | None, variables: Any, x: jax.Array | None,
                 apply_kwargs: Mapping[str, Any], seed: int
                 ) -> tuple[list[tuple[Callable, tuple]], Callable[[Sequence[float]], Any]]:
  """The calls `build_latency_table` times, and how to turn their times into the table."""
  unknown = [p for p in precisions if p not in PRECISIONS]
  if unknown or not precisions:
    raise UserError(f"precisions {list(precisions)} must be a non-empty subset of "
                    f"{list(PRECISIONS)}.")
  rng = np.random.default_rng(seed)
  geometries = {json.dumps(_geometry(l), sort_keys=True): l for l in layers}
  calls, names = [], []
  dtype = jnp.float32 if x is None else x.dtype
  for name, layer in geometries.items():
    fused = _runs_fused(_geometry(layer))
    for precision in precisions:
      fn, args = _layer_call(layer, precision, batch_size, dtype, rng)
      calls.append((chained(fn, fused), args))
      names.append((name, precision))
    in_shape, _, out_shape = _layer_shapes(_geometry(layer), layer.path, batch_size)
    calls.append((chained(functools.partial(stand_in, out_shape=out_shape, fused=fused),
                           fused),
                  (jnp.zeros(in_shape, dtype),)))
    names.append((name, "stand_in"))
  if model is not None:
    calls.append((_with_stand_ins(model, layers, batch_size, apply_kwargs), (variables, x)))

  def assemble(times: Sequence[float]) -> LatencyTable:
    measured = {name: t / CHAIN_LENGTH for name, t in zip(names, times)}
    entries = []
    for layer in layers:
      name = json.dumps(_geometry(layer), sort_keys=True)
      entries.append(TableEntry(layer.path, _geometry(layer),
                                {p: measured[name, p] for p in precisions},
                                measured[name, "stand_in"]))
    device = jax.devices()[0]
    return LatencyTable(device_kind=device.device_kind, platform=device.platform,
                        jax_version=jax.__version__, batch_size=batch_size,
                        dtypes={p: PRECISIONS[p] for p in precisions},
                        other_ms=times[-1] if model is not None else 0.0,
                        entries=tuple(entries))

  return calls, assemble


def _at_precisions(variables: Any, precisions_by_path: Mapping[str, str]) -> Any:
  """`variables` with each listed layer's kernel stored at its precision (done once, before
  timing: deployed weights are already quantized)."""
  flat = traverse_util.flatten_dict(dict(variables), sep="/")
  for path, precision in precisions_by_path.items():
    name = f"params/{path}/kernel"
    for key, value in _quantize_kernel(np.asarray(flat[name]), precision).items():
      flat[f"params/{path}/{key}"] = value
  return traverse_util.unflatten_dict(flat, sep="/")


def _module_op(module: nn.Module, x: jax.Array
               ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The `op` of `_layer_op` for a `nn.Conv` / `nn.Dense` module called on `x`: its strides,
  dilation, groups and padding, string paddings made explicit (the depthwise fast path takes
  explicit padding only)."""
  if isinstance(module, nn.Dense):
    return _dense
  spatial = x.ndim - 2
  as_tuple = lambda v: (v,) * spatial if isinstance(v, int) else tuple(v)
  strides, dilation = as_tuple(module.strides or 1), as_tuple(module.kernel_dilation or 1)
  padding = module.padding
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise UserError(f"layer {'/'.join(module.path)!r} pads {padding!r}; "
                      f"measure_model_latency runs SAME, VALID and explicit paddings only.")
    window = [(k - 1) * d + 1 for k, d in zip(as_tuple(module.kernel_size), dilation)]
    padding = lax.padtype_to_pads(x.shape[1:-1], window, strides, padding)
  elif isinstance(padding, int):
    padding = [(padding, padding)] * spatial
  padding = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  return functools.partial(_conv, strides=strides, padding=padding, dilation=dilation,
                           groups=module.feature_group_count)


def _add_bias(module: nn.Module, y: jax.Array) -> jax.Array:
  """The layer's bias, if any: outside `_layer_op`, so the model with stand-ins adds it too and
  it counts in `other_ms` (a table built from geometry alone cannot know about it)."""
  if not module.use_bias:
    return y
  return y + module.get_variable("params", "bias").astype(y.dtype)


def _layer_at_precision(module: nn.Module, x: jax.Array, precision: str) -> jax.Array:
  """What `measure_model_latency` runs for a `nn.Conv` / `nn.Dense` call with its stored kernel
  at `precision`: `_layer_op` (input cast or quantize, the op, output cast and rescale), then
  the bias."""
  kernel_scale = (module.get_variable("params", "kernel_scale") if precision == "int8"
                  else None)
  y = _layer_op(x, module.get_variable("params", "kernel"), kernel_scale, precision=precision,
                op=_module_op(module, x))
  return _add_bias(module, y)


def _model_calls(model: nn.Module, variables: Any, x: jax.Array,
                 cases: Sequence[Mapping[str, str]], apply_kwargs: Mapping[str, Any]
                 ) -> list[tuple[Callable, tuple]]:
  """One `(run, (stored variables, x))` per precision assignment (`measure_model_latency`)."""
  paths = {l.path for l in list_layers(model, variables, x, **apply_kwargs)}
  calls = []
  for precisions_by_path in cases:
    bad = {p: v for p, v in precisions_by_path.items() if v not in PRECISIONS}
    if bad:
      raise UserError(f"precisions {bad} are not among {list(PRECISIONS)}.")
    missing = sorted(set(precisions_by_path) - paths)
    if missing:
      raise UserError(f"layers {missing} are not conv/dense layers of the model.")

    def run(variables, x, precisions_by_path=precisions_by_path):
      def at_precision(next_fun, args, kwargs, context):
        path = "/".join(context.module.path)
        if _is_layer_call(context) and path in precisions_by_path:
          return _layer_at_precision(context.module, args[0], precisions_by_path[path])
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(at_precision):
        return model.apply(variables, x, **apply_kwargs)

    calls.append((run, (_at_precisions(variables, precisions_by_path), x)))
  return calls


def measure_model_latencies(model: nn.Module, variables: Any, x: jax.Array,
                            cases: Sequence[Mapping[str, str]], *, repeats: int = 20,
                            warmup: int = 2, apply_kwargs: Mapping[str, Any] | None = None
                            ) -> list[float]:
  """`measure_model_latency` of several precision assignments, timed in interleaved rounds."""
  calls = _model_calls(model, variables, x, cases, apply_kwargs or {})
  return interleaved_median_ms(calls, repeats=repeats, warmup=warmup)


def check_latency_table(model: nn.Module, variables: Any, x: jax.Array,
                        policies: Sequence[Policy], *,
                        precisions: Sequence[str] = ("f32", "bf16", "int8"), repeats: int = 20,
                        warmup: int = 2, apply_kwargs: Mapping[str, Any] | None = None,
                        seed: int = 0) -> tuple[LatencyTable, list[float], list[float]]:
  """Builds a table for `model` and measures each policy end to end, in the same rounds.

  `build_latency_table(list_layers(...), model=model, ...)` and `measure_model_latencies` of
  every policy, with all their samples interleaved (`interleaved_median_ms`): on a machine
  whose load changes, the predictions and the measurements they are checked against then see
  the same conditions. The table is exactly what `build_latency_table` would build.

  Args:
    model, variables, x: the model, its variables and an input [batch, ...].
    policies: `(w_bits, a_bits)` per layer, one list per case.
    precisions, repeats, warmup, apply_kwargs, seed: as in `build_latency_table`.

  Returns:
    (table, predicted ms per policy (`table.cost`), measured ms per policy).
  """
  apply_kwargs = apply_kwargs or {}
  layers = list_layers(model, variables, x, **apply_kwargs)
  table_calls, assemble = _table_calls(layers, x.shape[0], precisions, model, variables, x,
                                       apply_kwargs, seed)
  for policy in policies:
    _check_policy(layers, policy, max_bits=FULL_PRECISION)
  cases = [{l.path: LatencyTable.precision_for(w, a) for l, (w, a) in zip(layers, policy)}
           for policy in policies]
  model_calls = _model_calls(model, variables, x, cases, apply_kwargs)
  times = interleaved_median_ms(table_calls + model_calls, repeats=repeats, warmup=warmup)
  table = assemble(times[:len(table_calls)])
  return table, [table.cost(layers, p) for p in policies], times[len(table_calls):]


def measure_model_latency(model: nn.Module, variables: Any, x: jax.Array,
                          precisions_by_path: Mapping[str, str], *, repeats: int = 20,
                          warmup: int = 2, apply_kwargs: Mapping[str, Any] | None = None
                          ) -> float:
  """Median latency in ms of the whole jitted model with each listed layer at its precision.

  Every `nn.Conv` / `nn.Dense` whose path is listed computes through
  `flax.linen.intercept_methods` with its kernel stored at the precision ("int8": int8 weights
  with per-output-channel scales, activations quantized to int8 on entry, int32 accumulation,
  rescaled; "bf16"/"f32": both operands cast) and returns its input's dtype, then adds its bias
  (`_layer_op`, the function a table entry times; depthwise convs run the library's depthwise
  implementation, `_conv`); layers not listed and everything else run as the model defines
  them.

  Args:
    model, variables: a Flax model and its variables.
    x: its input, e.g. images [batch, height, width, channels].
    precisions_by_path: {layer path: "f32" | "bf16" | "int8"}, e.g. `LatencyTable.precisions`.
    repeats, warmup: timed and untimed runs after compilation.
    apply_kwargs: extra keyword arguments of `model.apply`, e.g. {"train": False}.

  Returns:
    The median time of one call in ms.
  """
  return measure_model_latencies(model, variables, x, [precisions_by_path], repeats=repeats,
                                 warmup=warmup, apply_kwargs=apply_kwargs)[0]
