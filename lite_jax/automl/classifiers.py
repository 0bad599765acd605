"""Image classifiers that HAQ, AMC and ProxylessNAS search over: MobileNetV1/V2, ResNet-50.

Design automation walks a network layer by layer, so every layer here is a plain
`flax.linen.Conv` (depthwise: `feature_group_count=channels`) or `flax.linen.Dense` with a
stable, readable name, created in the reference's execution order. Quantizers and pruners then
find the layers with `lite_jax.nn.introspect.list_layers` and intercept them by path
(`stem/conv`, `blocks_3/expand/conv`, `blocks_3/depthwise/conv`, `head/conv`, `classifier`)
without the models knowing about them.

Layer orders, widths and rounding follow the reference code the papers searched:
- `MobileNetV1`: AMC's `models/mobilenet.py` (3x3 stem, 13 depthwise-separable blocks, ReLU).
- `MobileNetV2`: HAQ's `models/mobilenetv2.py` (ReLU6, linear bottlenecks, 53 conv + FC
  layers). Widths: the stem keeps 32 channels at every width multiplier ("first channel is
  always 32"), block widths are `make_divisible(c * width)` (rounded *up* to a multiple of 8),
  expansions `int(c_in * t)`, and the 1280-channel head is scaled only for width > 1.
- `ResNet50`: torchvision's ResNet-50, i.e. bottleneck v1.5 (the stride-2 sits on the 3x3
  conv, not on the first 1x1), which is the 25.6M-parameter, 4.1G-MAC model.
- `TinyMobileNetV2`: the MobileNetV2 layout shrunk for CPU demos on 32x32 images.

Convolutions pad by `kernel // 2` on every side, as PyTorch's `padding=k // 2` does (Flax's
"SAME" pads stride-2 convs asymmetrically, which would shift every feature map by half a
pixel relative to the reference). Initializers follow the references too: convs normal with
variance 2 / (k * k * c_out), BatchNorm gamma 1 and beta 0 (momentum 0.9, epsilon 1e-5, i.e.
PyTorch's 0.1 / 1e-5), the classifier normal(0.01) with a zero bias.

MACs convention of `profile_classifier`: the multiply-adds of every conv (depthwise included)
and of the FC layer for one image; BatchNorm, activations, residual additions and pooling are
not counted. This is the convention of the papers' MobileNet/ResNet tables (MobileNetV2 300M,
MobileNetV1 569M, ResNet-50 4.1G at 224x224).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lite_jax.core.errors import UserError
from lite_jax.core.macs import MATMUL_AND_CONV, count_macs, count_params
from lite_jax.nn.introspect import list_layers
from lite_jax.nn import depthwise

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
    (6, 320, 1, 1))
# Few, narrow blocks for 32x32 images: 14 conv + FC layers, 1.8M MACs per image. The first
# block already strides (32 -> 16 -> 8 -> 4): keeping it at 32x32 costs 3x the MACs and 6x the
# CPU training time (depthwise gradients are slow on XLA:CPU) for no accuracy gain on the
# upsampled 8x8 digits (98.7% vs 99.0% test accuracy after 6 epochs).
TINY_MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 2), (6, 24, 1, 2), (6, 32, 2, 2))
# (output channels, stride) of MobileNetV1's 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
    (512, 1), (512, 1), (1024, 2), (1024, 1))
# (bottleneck width, repeats, first stride) of ResNet-50's four stages; outputs are 4x wider.
RESNET50_STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                     (512, 3, 2))
RESNET_EXPANSION = 4

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_classifier_init = nn.initializers.normal(0.01)


def make_divisible(value: float, divisor: int = 8) -> int:
  """`value` rounded up to a multiple of `divisor`, as the references round scaled widths."""
  return int(math.ceil(value / divisor) * divisor)


def _check_images(x: jax.Array) -> None:
  if x.ndim != 4:
    raise UserError(f"images must be [batch, height, width, channels], got shape {x.shape}.")


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional activation; the conv is named `conv`.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    strides: spatial stride.
    depthwise: one filter per input channel (`feature_group_count` = input channels; then
      `features` must equal the input channels).
    activation: applied after BatchNorm; None for linear outputs (MobileNetV2's bottlenecks).
  """
  features: int
  kernel_size: int = 1
  strides: int = 1
  depthwise: bool = False
  activation: Callable[[jax.Array], jax.Array] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [batch, height, width, c_in] -> [batch, height / strides, width / strides, features]."""
    pad = self.kernel_size // 2
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                strides=(self.strides, self.strides), padding=((pad, pad), (pad, pad)),
                feature_group_count=x.shape[-1] if self.depthwise else 1, use_bias=False,
                kernel_init=_conv_init, dtype=self.dtype, param_dtype=self.param_dtype,
                # XLA:CPU runs grouped convs slowly; shifted multiply-adds there.
                conv_general_dilated=depthwise.conv_general_dilated if self.depthwise else None,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x)
    return x if self.activation is None else self.activation(x)


def classify_pooled(x: jax.Array, num_classes: int, dropout_rate: float, train: bool,
                    dtype: Any, param_dtype: Any) -> jax.Array:
  """Global average pool, dropout and the FC `classifier`, inside the calling module.

  Args:
    x: [batch, height, width, channels] features.

  Returns:
    [batch, num_classes] logits in float32 (losses stay accurate under bfloat16 compute).
  """
  x = jnp.mean(x, axis=(1, 2))
  x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  x = nn.Dense(num_classes, kernel_init=_classifier_init, dtype=dtype,
               param_dtype=param_dtype, name="classifier")(x)
  return x.astype(jnp.float32)


class _Block(nn.Module):
  """The fields MobileNetV1's and ResNet's blocks share: output width, stride, dtypes."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32


class DepthwiseSeparable(_Block):
  """MobileNetV1's block: `depthwise` 3x3 + BN + ReLU, then `pointwise` 1x1 + BN + ReLU."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [batch, height, width, c_in] -> [batch, height / strides, width / strides, features]."""
    kw = dict(activation=nn.relu, dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBN(x.shape[-1], 3, self.strides, depthwise=True, name="depthwise", **kw)(x, train)
    return ConvBN(self.features, 1, name="pointwise", **kw)(x, train)


class MobileNetV1(nn.Module):
  """MobileNetV1 in AMC's layer order: 28 quantizable layers (27 convs + FC).

  Attributes:
    num_classes: logits per image.
    width: width multiplier; channels are `make_divisible(c * width)` (exact for the paper's
      0.25 / 0.5 / 0.75 / 1.0).
    channels: explicit widths instead of `width`: 14 numbers, the stem's and then each block's
      output channels (AMC exports its pruned 0.5-FLOPs MobileNetV1 as 24, 48, 96, 80, 192,
      200, 328, 352, 368, 360, 328, 400, 736, 752).
    dtype: compute dtype; logits are float32.
    param_dtype: parameter storage dtype.
  """
  num_classes: int = 1000
  width: float = 1.0
  channels: Sequence[int] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def widths(self) -> tuple[int, ...]:
    """The stem's and the 13 blocks' output channels."""
    if self.channels is None:
      return tuple(make_divisible(c * self.width)
                   for c in (32, *(c for c, _ in MOBILENET_V1_BLOCKS)))
    if len(self.channels) != 1 + len(MOBILENET_V1_BLOCKS):
      raise UserError(f"MobileNetV1 channels must list the stem's and the 13 blocks' widths "
                      f"(14 numbers), got {len(self.channels)}.")
    return tuple(int(c) for c in self.channels)

  def signed_input_layers(self) -> frozenset[str]:
    """Paths of layers whose input can be negative: none, every conv follows a ReLU.

    (The stem sees the images; quantizers treat the first layer's input on their own.)
    """
    return frozenset()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [batch, height, width, channels] images -> logits [batch, num_classes]."""
    _check_images(x)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    stem, *blocks = self.widths()
    x = ConvBN(stem, 3, 2, activation=nn.relu, name="stem", **kw)(x, train)
    for i, (features, (_, stride)) in enumerate(zip(blocks, MOBILENET_V1_BLOCKS)):
      x = DepthwiseSeparable(features, stride, name=f"blocks_{i}", **kw)(x, train)
    return classify_pooled(x, self.num_classes, 0.0, train, **kw)


class InvertedResidual(nn.Module):
  """MobileNetV2's block: `expand` 1x1 (skipped when hidden == c_in), `depthwise` kxk, both
  with BN + ReLU6, then the linear `project` 1x1 + BN; identity shortcut when the shapes match.

  Attributes:
    hidden: expanded channels, `int(c_in * expansion)`.
    features: output channels.
    strides: the depthwise conv's stride.
    expand: whether the block has the expansion 1x1 (expansion ratio != 1).
    kernel_size: the depthwise conv's kernel (MobileNetV2: 3; ProxylessNAS searches 3/5/7).
  """
  hidden: int
  features: int
  strides: int = 1
  expand: bool = True
  kernel_size: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [batch, height, width, c_in] -> [batch, height / strides, width / strides, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = x
    if self.expand:
      y = ConvBN(self.hidden, 1, activation=jax.nn.relu6, name="expand", **kw)(y, train)
    y = ConvBN(self.hidden, self.kernel_size, self.strides, depthwise=True,
               activation=jax.nn.relu6, name="depthwise", **kw)(y, train)
    y = ConvBN(self.features, 1, name="project", **kw)(y, train)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  """MobileNetV2 in HAQ's layer order: 53 quantizable layers (52 convs + FC) at any width.

  `stem` 3x3 + BN + ReLU6, 17 `blocks_{i}` (`InvertedResidual`), `head` 1x1 + BN + ReLU6,
  global average pool, dropout, FC `classifier`.

  Attributes:
    num_classes: logits per image.
    width: width multiplier, applied as HAQ does: blocks `make_divisible(c * width)`, the stem
      unscaled, the head scaled only above 1.
    stages: (expansion, channels, repeats, first stride) per stage.
    stem_channels: the stem's output channels.
    stem_stride: the stem's stride (2 for ImageNet; 1 for 32x32 images).
    last_channels: the head's output channels at width <= 1.
    hidden_channels: explicit hidden (expanded) widths, one per block, instead of
      `int(c_in * expansion)` (AMC's pruned MobileNetV2; a block without expansion keeps its
      input's width, so its entry must equal `stem_channels`).
    dropout_rate: before the FC; HAQ's reference has none (0), torchvision's uses 0.2. A
      nonzero rate needs a "dropout" rng when `train=True`.
    dtype: compute dtype; logits are float32.
    param_dtype: parameter storage dtype.
  """
  num_classes: int = 1000
  width: float = 1.0
  stages: Sequence[tuple[int, int, int, int]] = MOBILENET_V2_STAGES
  stem_channels: int = 32
  stem_stride: int = 2
  last_channels: int = 1280
  dropout_rate: float = 0.0
  hidden_channels: Sequence[int] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def block_specs(self) -> list[tuple[int, int, int, int]]:
    """(hidden, features, stride, expansion) of each block, in order."""
    specs = []
    c_in = self.stem_channels
    for expansion, channels, repeats, stride in self.stages:
      features = make_divisible(channels * self.width)
      for i in range(repeats):
        specs.append((int(c_in * expansion), features, stride if i == 0 else 1, expansion))
        c_in = features
    if self.hidden_channels is not None:
      if len(self.hidden_channels) != len(specs):
        raise UserError(f"MobileNetV2 hidden_channels must list one width per block "
                        f"({len(specs)}), got {len(self.hidden_channels)}.")
      if specs[0][3] == 1 and int(self.hidden_channels[0]) != self.stem_channels:
        raise UserError(f"the first block has no expansion, so its hidden width "
                        f"{self.hidden_channels[0]} must equal stem_channels "
                        f"{self.stem_channels}.")
      specs = [(int(h), f, s, e) for h, (_, f, s, e) in zip(self.hidden_channels, specs)]
    return specs

  def head_channels(self) -> int:
    """The head 1x1's output channels."""
    if self.width > 1.0:
      return make_divisible(self.last_channels * self.width)
    return self.last_channels

  def signed_input_layers(self) -> frozenset[str]:
    """Paths of the layers whose input can be negative: HAQ's `half_wave=False` layers.

    A block's output is the linear bottleneck (BN without activation, plus the shortcut), so
    the layer that reads it sees signed values: the `expand` 1x1 of every block with expansion
    != 1, and the `head` 1x1 after the last block. The depthwise, project and FC layers read
    ReLU6 outputs (or their average), the first block's depthwise conv reads the stem's ReLU6,
    and the stem reads the images, which quantizers handle as the first layer.
    """
    expands = {f"blocks_{i}/expand/conv"
               for i, (_, _, _, expansion) in enumerate(self.block_specs()) if expansion != 1}
    return frozenset(expands | {"head/conv"})

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [batch, height, width, channels] images -> logits [batch, num_classes]."""
    _check_images(x)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBN(self.stem_channels, 3, self.stem_stride, activation=jax.nn.relu6, name="stem",
               **kw)(x, train)
    for i, (hidden, features, stride, expansion) in enumerate(self.block_specs()):
      x = InvertedResidual(hidden, features, stride, expand=expansion != 1, name=f"blocks_{i}",
                           **kw)(x, train)
    x = ConvBN(self.head_channels(), 1, activation=jax.nn.relu6, name="head", **kw)(x, train)
    return classify_pooled(x, self.num_classes, self.dropout_rate, train, **kw)


class TinyMobileNetV2(MobileNetV2):
  """MobileNetV2's layout for CPU demos on 32x32 images: 16-channel stride-1 stem, 4 blocks
  (16, 24, 32, 32 channels, each stage striding 2), 256-channel head; 14 quantizable layers,
  42k parameters, 1.8M MACs per image.

  On scikit-learn's digits (8x8, upsampled to 32x32, 1400 training images) AdamW with a
  cosine-decayed lr 3e-3 reaches ~99% test accuracy in 5 epochs of batch 64: 93 s, compile
  included, on 2 CPU cores shared with other jobs (load average 7).
  """
  num_classes: int = 10
  stages: Sequence[tuple[int, int, int, int]] = TINY_MOBILENET_V2_STAGES
  stem_channels: int = 16
  stem_stride: int = 1
  last_channels: int = 256


class Bottleneck(_Block):
  """ResNet v1.5 bottleneck: `conv1` 1x1, `conv2` 3x3 (carries the stride), `conv3` 1x1 to
  4x the width, each with BN (ReLU after the first two); a `downsample` 1x1 + BN shortcut when
  the shape changes (run after `conv3`, as torchvision does); ReLU after the sum.

  Attributes:
    features: bottleneck width; the output has `RESNET_EXPANSION * features` channels.
    strides: spatial stride of `conv2` and `downsample`.
    inner: `(conv1, conv2)` output widths instead of `features` for both (AMC prunes them);
      the output keeps `RESNET_EXPANSION * features` channels.
  """
  inner: tuple[int, int] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [batch, height, width, c_in] -> [batch, height / strides, width / strides, 4 features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out_channels = RESNET_EXPANSION * self.features
    width1, width2 = self.inner or (self.features, self.features)
    y = ConvBN(width1, 1, activation=nn.relu, name="conv1", **kw)(x, train)
    y = ConvBN(width2, 3, self.strides, activation=nn.relu, name="conv2", **kw)(y, train)
    y = ConvBN(out_channels, 1, name="conv3", **kw)(y, train)
    if self.strides != 1 or x.shape[-1] != out_channels:
      x = ConvBN(out_channels, 1, self.strides, name="downsample", **kw)(x, train)
    return nn.relu(x + y)


class ResNet50(nn.Module):
  """torchvision's ResNet-50 (bottleneck v1.5): 54 quantizable layers (53 convs + FC).

  `stem` 7x7 stride 2 + BN + ReLU, 3x3 stride-2 max pool, blocks `layer{1..4}_{j}`
  (`Bottleneck`, named after torchvision's `layer1.0` ...), global average pool, FC
  `classifier`.

  Attributes:
    num_classes: logits per image.
    width: width multiplier on the stem and the bottleneck widths (`make_divisible`).
    inner_channels: explicit `(conv1, conv2)` widths of the 16 bottlenecks, in order (AMC's
      pruned ResNet-50); block outputs keep their widths.
    dtype: compute dtype; logits are float32.
    param_dtype: parameter storage dtype.
  """
  num_classes: int = 1000
  width: float = 1.0
  inner_channels: Sequence[tuple[int, int]] | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def signed_input_layers(self) -> frozenset[str]:
    """Paths of layers whose input can be negative: none, every block input is post-ReLU."""
    return frozenset()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [batch, height, width, channels] images -> logits [batch, num_classes]."""
    _check_images(x)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBN(make_divisible(64 * self.width), 7, 2, activation=nn.relu, name="stem",
               **kw)(x, train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    blocks = sum(repeats for _, repeats, _ in RESNET50_STAGES)
    if self.inner_channels is not None and len(self.inner_channels) != blocks:
      raise UserError(f"ResNet50 inner_channels must give (conv1, conv2) widths for the "
                      f"{blocks} bottlenecks, got {len(self.inner_channels)}.")
    index = 0
    for stage, (features, repeats, stride) in enumerate(RESNET50_STAGES, start=1):
      for j in range(repeats):
        inner = (None if self.inner_channels is None
                 else tuple(int(c) for c in self.inner_channels[index]))
        x = Bottleneck(make_divisible(features * self.width), stride if j == 0 else 1,
                       inner=inner, name=f"layer{stage}_{j}", **kw)(x, train)
        index += 1
    return classify_pooled(x, self.num_classes, 0.0, train, **kw)


class PlainCNN(nn.Module):
  """A plain stack of 3x3 `ConvBN` + ReLU layers (`conv_{i}`), global average pool and the FC
  `classifier`: the small CNN of AMC's CPU demo, whose 3x3 convs exercise im2col
  reconstruction. Default: 32, 64, 64, 128, 128 channels at strides 2, 1, 2, 1, 2 (32x32
  images -> 4x4 features), 5 conv + FC layers, 279k parameters, 14.4M MACs per 32x32 image
  (wide enough that widths rounded to multiples of 8 leave the search real choices).

  Attributes:
    num_classes: logits per image.
    width: width multiplier on `channels` (`make_divisible`).
    channels: each conv's output channels (a pruned model lists its own).
    strides: each conv's stride (as many as `channels`).
    dtype: compute dtype; logits are float32.
    param_dtype: parameter storage dtype.
  """
  num_classes: int = 10
  width: float = 1.0
  channels: Sequence[int] = (32, 64, 64, 128, 128)
  strides: Sequence[int] = (2, 1, 2, 1, 2)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def widths(self) -> tuple[int, ...]:
    """Each conv's output channels."""
    if len(self.channels) != len(self.strides):
      raise UserError(f"PlainCNN needs one stride per conv: {len(self.channels)} channels, "
                      f"{len(self.strides)} strides.")
    if self.width == 1.0:
      return tuple(int(c) for c in self.channels)
    return tuple(make_divisible(c * self.width) for c in self.channels)

  def signed_input_layers(self) -> frozenset[str]:
    """None: every conv after the first reads a ReLU."""
    return frozenset()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x: [batch, height, width, channels] images -> logits [batch, num_classes]."""
    _check_images(x)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i, (features, stride) in enumerate(zip(self.widths(), self.strides)):
      x = ConvBN(features, 3, stride, activation=nn.relu, name=f"conv_{i}", **kw)(x, train)
    return classify_pooled(x, self.num_classes, 0.0, train, **kw)


CLASSIFIERS: dict[str, type[nn.Module]] = {
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "resnet50": ResNet50,
    "tiny_mobilenet_v2": TinyMobileNetV2,
    "plain_cnn": PlainCNN,
}


def build_classifier(name: str, *, num_classes: int, width: float = 1.0,
                     **kwargs: Any) -> nn.Module:
  """The classifier called `name` (a key of `CLASSIFIERS`).

  Args:
    name: "mobilenet_v1", "mobilenet_v2", "resnet50", "tiny_mobilenet_v2" or "plain_cnn".
    num_classes: logits per image.
    width: width multiplier.
    **kwargs: further attributes of the model class (`dtype`, `param_dtype`, ...).

  Raises:
    UserError: for an unknown name or a nonpositive width or class count.
  """
  if name not in CLASSIFIERS:
    raise UserError(f"unknown classifier {name!r}; valid names: {', '.join(CLASSIFIERS)}.")
  if num_classes < 1 or width <= 0:
    raise UserError(f"classifier needs num_classes >= 1 and width > 0, got num_classes="
                    f"{num_classes} and width={width}.")
  return CLASSIFIERS[name](num_classes=num_classes, width=width, **kwargs)


def profile_classifier(model: nn.Module, image_size: int) -> dict[str, int]:
  """Parameters, MACs and quantizable layers of `model` on one `image_size`^2 RGB image.

  Everything is traced abstractly (`jax.eval_shape`, `jax.make_jaxpr`): nothing is computed
  or compiled, so ResNet-50 at 224 takes about a second.

  Args:
    model: a classifier taking `[batch, height, width, 3]` images.
    image_size: height and width of the image.

  Returns:
    `params`: trainable parameters (BatchNorm statistics excluded); `macs`: multiply-adds of
    the convs (depthwise included) and the FC for one image, BatchNorm, activations, shortcut
    additions and pooling not counted; `quantizable_layers`: conv and dense layer calls.
  """
  if image_size < 1:
    raise UserError(f"image_size must be a positive number of pixels, got {image_size}.")
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  return dict(
      params=count_params(variables["params"]),
      macs=count_macs(model.apply, variables, images, convention=MATMUL_AND_CONV),
      quantizable_layers=len(list_layers(model, variables, images)),
  )
