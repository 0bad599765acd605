"""ProxylessNAS: the MBConv search space, the networks derived from it, the released
architectures, and per-block latency tables measured on this device.

The search space (the reference's `search/models/super_nets/super_proxyless.py`): a fixed stem
(3x3 conv, 32 channels, stride 2), a fixed MBConv1 3x3 block to 16 channels, then 21 searchable
blocks in six stages of widths 24/40/80/96/192/320, 4/4/4/4/4/1 blocks, first strides
2/2/2/1/2/1, and a fixed head (1x1 conv to 1280, global average pool, FC). Each searchable block
picks one of six MBConv candidates (depthwise kernel 3/5/7 x expansion 3/6), or "zero" (the
block is skipped: the identity) where the block keeps its shape (stride 1 and c_in == c_out);
exactly those blocks also carry an identity shortcut. Width multipliers round as the reference
does (`round_channels`: to the nearest multiple of 8, never more than 10% down; the head only
grows, above width 1).

`SearchSpace.derive` turns one choice per block into `ProxylessNet`, a plain Flax network built
from the classifiers' `ConvBN` and `InvertedResidual` (layer paths `stem/conv`, `first/...`,
`blocks_{i}/expand/conv`, `blocks_{i}/depthwise/conv`, `blocks_{i}/project/conv`, `head/conv`,
`classifier`, with `i` counting the blocks that remain after zero blocks are dropped).
`RELEASED` holds the reference's ProxylessNAS-GPU, -CPU and -Mobile networks as a space and
its 21 choices, with the parameters, MACs and accuracy their logs report.

Latency (`BlockLatencyTable`): the reference predicts a network's latency as the sum of
per-block entries of `mobile_trim.yaml` (measured on a Pixel 1 and never released for CPU or
GPU). `build_block_latency_table` measures such a table on the device you have, under jit,
with the timing machinery of `automl.hardware`; `BlockLatencyTable.from_mobile_trim_yaml`
reads the reference's file when you have it; `check_block_latency_table` compares a table's
predictions with whole sampled networks timed end to end.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.automl import hardware
from lite_jax.automl.classifiers import ConvBN, InvertedResidual, classify_pooled
from lite_jax.core.errors import UserError

# The reference's candidate names: "{k}x{k}_MBConv{expand}", and "zero" (skip the block).
OPS: tuple[str, ...] = ("3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "5x5_MBConv6",
                        "7x7_MBConv3", "7x7_MBConv6", "zero")
ZERO = "zero"
_OP_PATTERN = re.compile(r"([1-9][0-9]*)x\1_MBConv([1-9][0-9]*)")

# (output channels, blocks, first stride) of the six searchable stages.
PROXYLESS_STAGES: tuple[tuple[int, int, int], ...] = (
    (24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))


def parse_op(name: str) -> tuple[int, int] | None:
  """(kernel, expand) of a candidate name like "5x5_MBConv6"; None for "zero".

  Raises:
    UserError: for any other name.
  """
  if name == ZERO:
    return None
  match = _OP_PATTERN.fullmatch(name) if isinstance(name, str) else None
  if match is None or int(match.group(1)) % 2 == 0:
    raise UserError(f"unknown ProxylessNAS op {name!r}; ops are 'zero' or 'KxK_MBConvE' with "
                    f"an odd kernel K and an expansion E, e.g. {OPS[:-1]}.")
  return int(match.group(1)), int(match.group(2))


def op_name(kernel: int, expand: int) -> str:
  """The candidate name of an MBConv with this depthwise kernel and expansion ratio."""
  return f"{kernel}x{kernel}_MBConv{expand}"


def round_channels(value: float, divisor: int = 8) -> int:
  """The reference's `make_divisible(value, 8)`: `value` rounded to the nearest multiple of
  `divisor` (at least `divisor`), one step up if that lost more than 10%."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def _output_size(size: int, stride: int) -> int:
  # k // 2 padding on odd kernels: floor((size - 1) / stride) + 1.
  return -(-size // stride)


@dataclasses.dataclass(frozen=True)
class SearchableBlock:
  """One searchable MBConv position.

  Attributes:
    index: position among the searchable blocks, 0 first.
    c_in, c_out: input and output channels.
    stride: the depthwise conv's stride.
    in_size: input height == width.
  """
  index: int
  c_in: int
  c_out: int
  stride: int
  in_size: int

  @property
  def zero_allowed(self) -> bool:
    """Whether "zero" is a candidate; exactly the blocks with an identity shortcut."""
    return self.stride == 1 and self.c_in == self.c_out

  @property
  def out_size(self) -> int:
    return _output_size(self.in_size, self.stride)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The ProxylessNAS MBConv space (defaults: the paper's ImageNet space, 21 blocks).

  Attributes:
    image_size: input height == width.
    stem_channels, stem_stride: the 3x3 stem conv (before `width`).
    first_channels: output channels of the fixed MBConv1 3x3 block (before `width`).
    stages: (output channels, blocks, first stride) per stage (channels before `width`).
    last_channels: the head 1x1 conv's output channels (scaled only for width > 1).
    candidates: the ops every block chooses from ("zero" only where allowed).
    width: width multiplier, rounded as the reference does (`round_channels`).
  """
  image_size: int = 224
  stem_channels: int = 32
  stem_stride: int = 2
  first_channels: int = 16
  stages: tuple[tuple[int, int, int], ...] = PROXYLESS_STAGES
  last_channels: int = 1280
  candidates: tuple[str, ...] = OPS
  width: float = 1.0

  def __post_init__(self):
    for op in self.candidates:
      parse_op(op)
    if not [op for op in self.candidates if op != ZERO]:
      raise UserError(f"the search space needs at least one MBConv candidate, got "
                      f"{list(self.candidates)}.")
    if len(set(self.candidates)) != len(self.candidates):
      raise UserError(f"search space candidates repeat: {list(self.candidates)}.")
    if not self.stages or any(len(s) != 3 or min(s) < 1 for s in self.stages):
      raise UserError(f"stages must be (channels, blocks, stride) triples of positive "
                      f"integers, got {self.stages}.")
    if min(self.image_size, self.stem_channels, self.stem_stride, self.first_channels,
           self.last_channels) < 1 or self.width <= 0:
      raise UserError("image_size, stem/first/last channels, stem_stride and width must be "
                      "positive.")

  @classmethod
  def demo(cls) -> SearchSpace:
    """A space for CPU demos on 32x32 images: stride-1 stem of 16, first block to 8, six
    searchable blocks (16/24/32 channels, two per stage, each stage striding 2; zero allowed
    in three), 3x3/5x5 kernels x expansion 3/6 plus zero, 128-channel head."""
    return cls(image_size=32, stem_channels=16, stem_stride=1, first_channels=8,
               stages=((16, 2, 2), (24, 2, 2), (32, 2, 2)), last_channels=128,
               candidates=("3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "5x5_MBConv6", ZERO))

  # Widths after the multiplier.
  @property
  def stem_width(self) -> int:
    return round_channels(self.stem_channels * self.width)

  @property
  def first_width(self) -> int:
    return round_channels(self.first_channels * self.width)

  @property
  def head_width(self) -> int:
    return (round_channels(self.last_channels * self.width) if self.width > 1.0
            else self.last_channels)

  @property
  def first_in_size(self) -> int:
    """Height == width after the stem (the first block's input)."""
    return _output_size(self.image_size, self.stem_stride)

  def blocks(self) -> list[SearchableBlock]:
    """The searchable blocks in order, with their shapes."""
    blocks = []
    c_in, size = self.first_width, self.first_in_size
    for channels, repeats, first_stride in self.stages:
      c_out = round_channels(channels * self.width)
      for i in range(repeats):
        block = SearchableBlock(len(blocks), c_in, c_out, first_stride if i == 0 else 1, size)
        blocks.append(block)
        c_in, size = c_out, block.out_size
    return blocks

  @property
  def final_size(self) -> int:
    """Height == width of the head's input."""
    return self.blocks()[-1].out_size

  def candidates_for(self, block: SearchableBlock) -> tuple[str, ...]:
    """The candidates of `block`: `candidates` without "zero" where the shape changes."""
    return tuple(op for op in self.candidates if op != ZERO or block.zero_allowed)

  def candidate_mask(self) -> np.ndarray:
    """[num_blocks, len(candidates)] bool: whether each candidate is allowed in each block."""
    return np.array([[op != ZERO or b.zero_allowed for op in self.candidates]
                     for b in self.blocks()])

  def check_choices(self, choices: Sequence[str]) -> None:
    """Raises `UserError` unless `choices` holds one allowed candidate per block."""
    blocks = self.blocks()
    if len(choices) != len(blocks):
      raise UserError(f"an architecture of this space has {len(blocks)} choices (one per "
                      f"searchable block), got {len(choices)}.")
    for block, op in zip(blocks, choices):
      parse_op(op)
      if op not in self.candidates_for(block):
        raise UserError(f"block {block.index} ({block.c_in}->{block.c_out}, stride "
                        f"{block.stride}) cannot be {op!r}; its candidates are "
                        f"{list(self.candidates_for(block))}.")

  def block_specs(self, choices: Sequence[str]) -> tuple[tuple[int, int, int, int], ...]:
    """(kernel, expand, out_channels, stride) of each chosen non-zero block, in order."""
    self.check_choices(choices)
    specs = []
    for block, op in zip(self.blocks(), choices):
      if op != ZERO:
        kernel, expand = parse_op(op)
        specs.append((kernel, expand, block.c_out, block.stride))
    return tuple(specs)

  def derive(self, choices: Sequence[str], num_classes: int, **kwargs: Any) -> ProxylessNet:
    """The plain network of one architecture: `choices[i]` for searchable block i, zero
    blocks dropped.

    Args:
      choices: one candidate name per searchable block (`candidates_for`).
      num_classes: logits per image.
      **kwargs: further `ProxylessNet` attributes (`dropout_rate`, `dtype`, `param_dtype`).
    """
    return ProxylessNet(num_classes=num_classes, blocks=self.block_specs(choices),
                        stem_channels=self.stem_width, stem_stride=self.stem_stride,
                        first_channels=self.first_width, last_channels=self.head_width,
                        **kwargs)

  def smallest(self) -> tuple[str, ...]:
    """The architecture with the fewest MACs: zero where allowed, elsewhere the candidate of
    the smallest expansion, then kernel."""
    mbconvs = sorted((op for op in self.candidates if op != ZERO),
                     key=lambda op: parse_op(op)[::-1])
    return tuple(ZERO if b.zero_allowed and ZERO in self.candidates else mbconvs[0]
                 for b in self.blocks())

  def sample(self, rng: np.random.Generator) -> tuple[str, ...]:
    """One architecture drawn uniformly: each block's op uniform among its candidates."""
    return tuple(str(rng.choice(self.candidates_for(b))) for b in self.blocks())


class ProxylessNet(nn.Module):
  """A ProxylessNAS network: `stem` 3x3 ConvBN + ReLU6, `first` MBConv1 3x3 (no expansion),
  `blocks_{i}` MBConvs (`InvertedResidual`: expand 1x1, depthwise kxk, both ReLU6, linear
  project 1x1; identity shortcut when stride 1 and c_in == c_out), `head` 1x1 ConvBN + ReLU6,
  global average pool, dropout, FC `classifier`.

  Attributes:
    num_classes: logits per image.
    blocks: (kernel, expand, out_channels, stride) per MBConv block (zero blocks dropped).
    stem_channels, stem_stride: the stem conv.
    first_channels: the MBConv1 block's output channels.
    last_channels: the head's output channels.
    dropout_rate: before the FC (the reference's released runs use 0); a nonzero rate needs a
      "dropout" rng when `train=True`.
    dtype: compute dtype; logits are float32.
    param_dtype: parameter storage dtype.
  """
  num_classes: int
  blocks: tuple[tuple[int, int, int, int], ...]
  stem_channels: int = 32
  stem_stride: int = 2
  first_channels: int = 16
  last_channels: int = 1280
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def signed_input_layers(self) -> frozenset[str]:
    """Paths of the layers whose input can be negative: the first conv of every block after
    `first` (it reads the previous block's linear bottleneck) and the head. The stem reads the
    images, which quantizers handle as the first layer."""
    firsts = {f"blocks_{i}/{'expand' if expand != 1 else 'depthwise'}/conv"
              for i, (_, expand, _, _) in enumerate(self.blocks)}
    return frozenset(firsts | {"head/conv"})

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [batch, height, width, channels] images -> logits [batch, num_classes]."""
    if x.ndim != 4:
      raise UserError(f"images must be [batch, height, width, channels], got shape {x.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBN(self.stem_channels, 3, self.stem_stride, activation=jax.nn.relu6, name="stem",
               **kw)(x, train)
    x = InvertedResidual(self.stem_channels, self.first_channels, 1, expand=False,
                         kernel_size=3, name="first", **kw)(x, train)
    for i, (kernel, expand, features, stride) in enumerate(self.blocks):
      x = InvertedResidual(x.shape[-1] * expand, features, stride, expand=expand != 1,
                           kernel_size=kernel, name=f"blocks_{i}", **kw)(x, train)
    x = ConvBN(self.last_channels, 1, activation=jax.nn.relu6, name="head", **kw)(x, train)
    return classify_pooled(x, self.num_classes, self.dropout_rate, train, **kw)


# ---------------------------------------------------------------------------------------------
# The released architectures.


def _released_space(stem: int, first: int, widths: Sequence[int], last: int) -> SearchSpace:
  return SearchSpace(stem_channels=stem, first_channels=first,
                     stages=tuple((w, n, s) for w, (_, n, s) in zip(widths, PROXYLESS_STAGES)),
                     last_channels=last)


# The reference's `proxyless_{gpu,cpu,mobile}.config` (downloaded by its `model_zoo.py`; the
# same blocks as osmr/imgclsmob's `proxylessnas.py`), as a space and one op per searchable
# block; params / MACs / top-1 / top-5 from the reference's `logs/imagenet_*_log.txt` ("Total
# training params", "Total FLOPs": conv and FC multiply-adds at 224x224). The released runs
# have no dropout and BatchNorm epsilon 1e-3 (here 1e-5; it changes no size).
RELEASED: dict[str, dict[str, Any]] = {
    "proxyless_gpu": dict(
        space=_released_space(40, 24, (32, 56, 112, 128, 256, 432), 1728),
        choices=("5x5_MBConv3", ZERO, ZERO, ZERO,
                 "7x7_MBConv3", ZERO, ZERO, "3x3_MBConv3",
                 "7x7_MBConv6", ZERO, ZERO, "5x5_MBConv3",
                 "5x5_MBConv6", ZERO, "3x3_MBConv3", "5x5_MBConv3",
                 "7x7_MBConv6", "7x7_MBConv6", "7x7_MBConv6", "5x5_MBConv6",
                 "7x7_MBConv6"),
        params=7.12e6, macs=465.3e6, top1=75.084, top5=92.538),
    "proxyless_cpu": dict(
        space=_released_space(40, 24, (32, 48, 88, 104, 216, 360), 1432),
        choices=("3x3_MBConv6", "3x3_MBConv3", "3x3_MBConv3", "3x3_MBConv3",
                 "3x3_MBConv6", "3x3_MBConv3", "3x3_MBConv3", "5x5_MBConv3",
                 "3x3_MBConv6", ZERO, ZERO, "3x3_MBConv3",
                 "5x5_MBConv6", "3x3_MBConv3", "3x3_MBConv3", "3x3_MBConv3",
                 "5x5_MBConv6", "5x5_MBConv3", "5x5_MBConv3", "3x3_MBConv3",
                 "5x5_MBConv6"),
        params=4.36e6, macs=439.2e6, top1=75.290, top5=92.394),
    "proxyless_mobile": dict(
        space=_released_space(32, 16, (32, 40, 80, 96, 192, 320), 1280),
        choices=("5x5_MBConv3", "3x3_MBConv3", ZERO, ZERO,
                 "7x7_MBConv3", "3x3_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
                 "7x7_MBConv6", "5x5_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
                 "5x5_MBConv6", "5x5_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
                 "7x7_MBConv6", "7x7_MBConv6", "7x7_MBConv3", "7x7_MBConv3",
                 "7x7_MBConv6"),
        params=4.08e6, macs=320.4e6, top1=74.594, top5=92.202),
}


def released(name: str, num_classes: int = 1000, **kwargs: Any) -> ProxylessNet:
  """The released ProxylessNAS network `name` ("proxyless_gpu", "proxyless_cpu",
  "proxyless_mobile"); **kwargs are further `ProxylessNet` attributes."""
  if name not in RELEASED:
    raise UserError(f"unknown released ProxylessNAS network {name!r}; choose one of "
                    f"{sorted(RELEASED)}.")
  preset = RELEASED[name]
  return preset["space"].derive(preset["choices"], num_classes, **kwargs)


# ---------------------------------------------------------------------------------------------
# Latency tables.


def _shape(size: int, channels: int) -> str:
  return f"{size}x{size}x{channels}"


def _mbconv_key(block: SearchableBlock, kernel: int, expand: int, idskip: bool) -> str:
  return (f"expanded_conv-input:{_shape(block.in_size, block.c_in)}-output:"
          f"{_shape(block.out_size, block.c_out)}-expand:{expand}-kernel:{kernel}-stride:"
          f"{block.stride}-idskip:{int(idskip)}")


def block_key(block: SearchableBlock, op: str) -> str:
  """The reference's `mobile_trim.yaml` key of `op` (not "zero") in `block`, e.g.
  "expanded_conv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0"
  (idskip: the block has its identity shortcut)."""
  kernel, expand = parse_op(op)
  return _mbconv_key(block, kernel, expand, block.zero_allowed)


def fixed_keys(space: SearchSpace, num_classes: int) -> tuple[str, ...]:
  """The reference's keys of the fixed part: stem ("Conv"), the MBConv1 first block, head
  ("Conv_1") and pooling + FC ("Logits")."""
  first = SearchableBlock(-1, space.stem_width, space.first_width, 1, space.first_in_size)
  last_in, size = space.blocks()[-1].c_out, space.final_size
  return (f"Conv-input:{_shape(space.image_size, 3)}-output:"
          f"{_shape(space.first_in_size, space.stem_width)}",
          _mbconv_key(first, 3, 1, idskip=False),
          f"Conv_1-input:{_shape(size, last_in)}-output:{_shape(size, space.head_width)}",
          f"Logits-input:{_shape(size, space.head_width)}-output:{num_classes}")


@dataclasses.dataclass(frozen=True)
class BlockLatencyTable:
  """Latency in ms of every candidate block of a space, and of its fixed part.

  A network's latency is predicted as `fixed_ms + sum over blocks of latency(block, op)`
  ("zero": 0), and a super-network's expected latency as `fixed_ms + sum_b sum_op p[b, op] *
  latency(b, op)` (`expected_ms`), the reference's E[latency].

  Attributes:
    entries: {`block_key`: ms} per candidate block (MBConv ops only).
    fixed_ms: stem + first block + head + pooling + FC and the call of the whole network
      (measured: the smallest network of the space minus its blocks' entries).
    fixed: the `fixed_keys` of the space and class count `fixed_ms` belongs to.
    batch_size: images per timed call.
    device: where it was measured (`platform`, `device_kind`, `jax`, `flax` versions), or the
      source file of a table read from the reference's yaml.
  """
  entries: dict[str, float]
  fixed_ms: float
  fixed: tuple[str, ...]
  batch_size: int
  device: dict[str, str]

  def _check_space(self, space: SearchSpace) -> None:
    keys = fixed_keys(space, int(self.fixed[-1].rsplit(":", 1)[1]))
    if tuple(keys) != tuple(self.fixed):
      raise UserError(f"the latency table's fixed part was measured for {list(self.fixed)}, "
                      f"not for this space's {list(keys)}; build a table for this space.")

  def latency(self, block: SearchableBlock, op: str) -> float:
    """ms of `op` in `block`; "zero" (where allowed) is 0.

    Raises:
      UserError: for an unknown op, "zero" where the block changes shape, or an op the table
        has no entry for.
    """
    if parse_op(op) is None:
      if not block.zero_allowed:
        raise UserError(f"block {block.index} changes shape ({block.c_in}->{block.c_out}, "
                        f"stride {block.stride}) and cannot be 'zero'.")
      return 0.0
    key = block_key(block, op)
    if key not in self.entries:
      raise UserError(f"the latency table has no entry {key!r}; build a table for this "
                      f"space.")
    return self.entries[key]

  def matrix(self, space: SearchSpace) -> np.ndarray:
    """[num_blocks, len(space.candidates)] ms per candidate; 0 for "zero" where allowed AND
    where not allowed (`space.candidate_mask()` says which), so p * matrix stays finite."""
    self._check_space(space)
    return np.array([[self.latency(b, op) if op != ZERO or b.zero_allowed else 0.0
                      for op in space.candidates] for b in space.blocks()], np.float64)

  def estimate(self, space: SearchSpace, choices: Sequence[str]) -> float:
    """Predicted ms of the derived network: `fixed_ms` + the chosen ops' entries."""
    self._check_space(space)
    space.check_choices(choices)
    return self.fixed_ms + sum(self.latency(b, op) for b, op in zip(space.blocks(), choices))

  def expected_ms(self, space: SearchSpace, probs: np.ndarray) -> float:
    """E[latency] = fixed_ms + sum_b sum_op probs[b, op] * matrix[b, op].

    Args:
      probs: [num_blocks, len(space.candidates)] probabilities of each candidate (0 where not
        allowed).
    """
    probs = np.asarray(probs, np.float64)
    matrix = self.matrix(space)
    if probs.shape != matrix.shape:
      raise UserError(f"probs must be [num_blocks, num_candidates] = {list(matrix.shape)}, "
                      f"got {list(probs.shape)}.")
    return self.fixed_ms + float(np.sum(probs * matrix))

  def save(self, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
      json.dump(dataclasses.asdict(self), f, indent=1)

  @classmethod
  def load(cls, path: str | os.PathLike) -> BlockLatencyTable:
    """Reads a table written by `save`."""
    try:
      with open(path) as f:
        record = json.load(f)
      record["fixed"] = tuple(record["fixed"])
      return cls(**record)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise UserError(f"{os.fspath(path)!r} is not a block latency table saved by "
                      f"BlockLatencyTable.save ({e}).") from e

  @classmethod
  def from_mobile_trim_yaml(cls, path: str | os.PathLike, space: SearchSpace,
                            num_classes: int = 1000) -> BlockLatencyTable:
    """The reference's latency table (`mobile_trim.yaml`: {key: {"mean": ms, ...}}, Pixel 1
    latencies at batch 1), restricted to `space`'s candidate blocks and fixed part.

    Keys are the reference's (`latency_estimator.py`): "Conv-input:224x224x3-output:112x112x32",
    "expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:I" (idskip 1
    where the block has its identity shortcut), "Conv_1-input:7x7x320-output:7x7x1280",
    "Logits-input:7x7x1280-output:1000".

    Raises:
      UserError: if the file cannot be read or lacks an entry the space needs.
    """
    import yaml  # Only this reader needs it (PyYAML ships with flax).
    try:
      with open(path) as f:
        lut = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
      raise UserError(f"cannot read latency table {os.fspath(path)!r} ({e}).") from e

    def mean(key):
      entry = lut.get(key) if isinstance(lut, dict) else None
      if not isinstance(entry, dict) or "mean" not in entry:
        raise UserError(f"latency table {os.fspath(path)!r} has no mean latency for {key!r}.")
      return float(entry["mean"])

    entries = {block_key(b, op): mean(block_key(b, op))
               for b in space.blocks() for op in space.candidates_for(b) if op != ZERO}
    fixed = fixed_keys(space, num_classes)
    return cls(entries=entries, fixed_ms=sum(mean(k) for k in fixed), fixed=fixed,
               batch_size=1, device={"source": os.fspath(path)})


def _device_record() -> dict[str, str]:
  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "jax": jax.__version__, "flax": flax.__version__}


def _random_variables(module: nn.Module, x_shape: Sequence[int], rng: np.random.Generator
                      ) -> Any:
  """Variables of `module` without running its init (which would compile per shape): kernels
  normal with variance 1 / fan_in, BatchNorm as after init (scale and var 1, bias and mean 0).
  The values do not change the time; they keep activations in a normal range."""
  shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32))

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)
    return jnp.asarray(np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0),
                       leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _block_module(block: SearchableBlock, op: str) -> InvertedResidual:
  kernel, expand = parse_op(op)
  return InvertedResidual(block.c_in * expand, block.c_out, block.stride, expand=expand != 1,
                          kernel_size=kernel)


def _apply_eval(module: nn.Module) -> Any:
  return lambda x, variables: module.apply(variables, x, train=False)


def _network_call(space: SearchSpace, choices: Sequence[str], num_classes: int,
                  batch_size: int, rng: np.random.Generator) -> tuple[Any, tuple]:
  """`(fn, (variables, x))`: one jitted call of the derived network, eval mode."""
  net = space.derive(choices, num_classes)
  shape = (batch_size, space.image_size, space.image_size, 3)
  x = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
  return (lambda variables, x: net.apply(variables, x, train=False),
          (_random_variables(net, shape, rng), x))


def _table_calls(space: SearchSpace, num_classes: int, batch_size: int, seed: int
                 ) -> tuple[list[tuple[Any, tuple]], Any]:
  """The calls a table times, and how their times become the table.

  Each distinct candidate block runs standalone in a chain (`hardware.chained`: one call of
  `CHAIN_LENGTH` dependent blocks inside one executable, as blocks run in a network); its
  entry is its time per call minus that of a chain of identities on the same input (the
  chain's own cost: the dependency and the barrier). The fixed part is the space's smallest
  network (`SearchSpace.smallest`) timed end to end minus the entries of its blocks: what a
  network costs beyond its blocks, measured where it runs.

  Measured on the demo space on a loaded 2-core CPU, batch 1, in paired runs: a standalone
  stem/head with stand-ins for the blocks as the fixed part predicted whole networks 10-30%
  high, the smallest network minus its entries 1-13%; giving each chained call its own weight
  copy (cold weights, as in a network) predicted 14-21% high against 1-13% for shared weights,
  and no better at batch 64.
  """
  rng = np.random.default_rng(seed)
  calls, names, reference_of, identities = [], [], {}, {}
  for block in space.blocks():
    shape = (batch_size, block.in_size, block.in_size, block.c_in)
    if shape not in identities:
      identities[shape] = len(calls)
      calls.append((hardware.chained(lambda x: x, False), (jnp.zeros(shape, jnp.float32),)))
      names.append(None)
    for op in space.candidates_for(block):
      if op == ZERO or block_key(block, op) in reference_of:
        continue
      module = _block_module(block, op)
      fused = parse_op(op)[1] == 1 and jax.default_backend() == "cpu"  # depthwise first
      x = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
      calls.append((hardware.chained(_apply_eval(module), fused),
                    (x, _random_variables(module, shape, rng))))
      names.append(block_key(block, op))
      reference_of[names[-1]] = identities[shape]
  smallest = space.smallest()
  calls.append(_network_call(space, smallest, num_classes, batch_size, rng))

  def assemble(times: Sequence[float]) -> BlockLatencyTable:
    per_call = [t / hardware.CHAIN_LENGTH for t in times]
    entries = {k: max(per_call[i] - per_call[reference_of[k]], 0.0)
               for i, k in enumerate(names) if k is not None}
    blocks_ms = sum(entries[block_key(b, op)]
                    for b, op in zip(space.blocks(), smallest) if op != ZERO)
    return BlockLatencyTable(entries=entries, fixed_ms=max(times[-1] - blocks_ms, 0.0),
                             fixed=fixed_keys(space, num_classes), batch_size=batch_size,
                             device=_device_record())

  return calls, assemble


def build_block_latency_table(space: SearchSpace, *, num_classes: int = 1000,
                              batch_size: int = 1, repeats: int = 20, warmup: int = 2,
                              seed: int = 0) -> BlockLatencyTable:
  """Measures every candidate block of `space` and its fixed part on the default device.

  Each distinct (input shape, output channels, stride, op) block runs as the derived network
  runs it (`InvertedResidual`, eval mode, float32, random weights, batch `batch_size`) under
  jit; its entry is its time per call in a chain of `hardware.CHAIN_LENGTH` dependent calls
  minus that of a chain of identities (`_table_calls`). `fixed_ms` is the smallest network of
  the space timed end to end minus its blocks' entries. Every time is the median of `repeats`
  interleaved rounds after compilation and `warmup` runs (`hardware.interleaved_median_ms`).
  Entries and `fixed_ms` are clamped at 0 (parts cheaper than the noise).

  Args:
    space: the search space.
    num_classes: the FC's outputs (part of the fixed cost).
    batch_size: images per call.
    repeats, warmup: timed and untimed runs of every call.
    seed: for the random inputs and weights.
  """
  calls, assemble = _table_calls(space, num_classes, batch_size, seed)
  return assemble(hardware.interleaved_median_ms(calls, repeats=repeats, warmup=warmup))


def check_block_latency_table(space: SearchSpace, table: BlockLatencyTable | None, *,
                              num_archs: int, seed: int = 0, batch_size: int = 1,
                              num_classes: int = 1000, repeats: int = 20, warmup: int = 2,
                              archs: Sequence[Sequence[str]] | None = None
                              ) -> tuple[BlockLatencyTable, list[float], list[float],
                                         list[tuple[str, ...]]]:
  """A table's predictions against whole sampled networks measured end to end.

  Samples `num_archs` architectures (each block's op uniform among its candidates; or takes
  `archs`), derives each network and times one jitted call of it on the default device, with
  the same timer (`hardware.interleaved_median_ms`). With `table` None the table is built in
  the same interleaved rounds as the networks (`build_block_latency_table`), so a machine whose
  load changes affects predictions and measurements alike.

  Returns:
    (table, predicted ms per architecture, measured ms per architecture, architectures).
  """
  rng = np.random.default_rng(seed)
  if archs is None:
    if num_archs < 1:
      raise UserError(f"num_archs must be >= 1, got {num_archs}.")
    archs = [space.sample(rng) for _ in range(num_archs)]
  archs = [tuple(a) for a in archs]
  for arch in archs:
    space.check_choices(arch)
  if table is not None and table.batch_size != batch_size:
    raise UserError(f"the table was measured at batch {table.batch_size}, not {batch_size}.")
  if table is not None and tuple(table.fixed) != fixed_keys(space, num_classes):
    raise UserError(f"the table's fixed part is {list(table.fixed)}, not this space's with "
                    f"{num_classes} classes; build a table for it.")
  net_calls = [_network_call(space, a, num_classes, batch_size, rng) for a in archs]
  if table is None:
    table_calls, assemble = _table_calls(space, num_classes, batch_size, seed)
    times = hardware.interleaved_median_ms(table_calls + net_calls, repeats=repeats,
                                           warmup=warmup)
    table, measured = assemble(times[:len(table_calls)]), times[len(table_calls):]
  else:
    measured = hardware.interleaved_median_ms(net_calls, repeats=repeats, warmup=warmup)
  return table, [table.estimate(space, a) for a in archs], list(measured), archs
