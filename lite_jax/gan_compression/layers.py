"""Layers shared by the GAN Compression generators and discriminators (NHWC throughout).

Once-for-all super-networks. A sub-network of the reference's super-network uses the leading
`n` channels of every layer (`weight[:out, :in]`). Slicing at call time would compile one
program per sampled sub-network, so the super-network here always runs at its full width and
*masks* channels beyond the active width to zero instead: a zero input channel contributes
nothing to a convolution, instance norm maps an all-zero channel to zero, and ReLU keeps it
zero, so the masked network computes exactly the sliced one (tested against standalone
generators built at the sub-network's widths with `slice_params`-ed weights). Training then
samples a new sub-network every step inside one compiled step.

MACs follow the reference's counter (torchprofile 0.0.1): instance norm and SPADE's modulation
multiply are charged one MAC per output element, which is why they are `counted_call`s.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from lite_jax.core import macs
from lite_jax.core.errors import UserError
from lite_jax.nn.conv2d import tap_sum_conv2d
from lite_jax.nn.depthwise import depthwise_conv2d

# The reference's `init_weights(init_type="normal", gain=0.02)`; biases start at zero.
weight_init = nn.initializers.normal(0.02)

GAN_COMPRESSION = macs.MacsConvention(
    "gan_compression", counted_calls=(("instance_norm", 1), ("modulate", 1)))


@macs.counted_call
def instance_norm(x: jax.Array) -> jax.Array:
  """Affine-free instance norm (eps 1e-5, biased variance), statistics in f32.

  Args:
    x: `[batch, height, width, channels]`.
  """
  # Statistics over one merged spatial axis: XLA:CPU reduces `[b, h*w, c]` over its middle
  # axis about twice as fast as `[b, h, w, c]` over two (47 vs 22 ms at 256x256x64).
  _, h, w, c = x.shape  # -1 for the batch: it may be symbolic (exports)
  x32 = x.astype(jnp.float32).reshape(-1, h * w, c)
  mean = x32.mean(axis=1, keepdims=True)
  var = jnp.square(x32 - mean).mean(axis=1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype).reshape(-1, h, w, c)


@macs.counted_call
def modulate(x: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
  """SPADE's `x * (1 + gamma) + beta`, charged one MAC per element like the reference."""
  return x * (1 + gamma) + beta


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """`nn.ReflectionPad2d(pad)` on `[batch, height, width, channels]`."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def width_mask(active: jax.Array | int | None, width: int, dtype=jnp.float32
               ) -> jax.Array | None:
  """`[width]` ones on the leading `active` channels, zeros after; None when not masking."""
  if active is None:
    return None
  return (jnp.arange(width) < active).astype(dtype)


def apply_mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return x if mask is None else x * mask.astype(x.dtype)


def _unit(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`F.normalize`: `v / max(|v|, eps)`."""
  return v / jnp.maximum(jnp.linalg.norm(v), eps)


def _spectral_matrix(kernel: jax.Array) -> jax.Array:
  """A conv kernel `[k, k, in, out]` as spectral norm's matrix `[out, k * k * in]`."""
  return kernel.reshape(-1, kernel.shape[-1]).T


class SpectralConv(nn.Module):
  """`torch.nn.utils.spectral_norm(nn.Conv2d(...))`: the kernel, seen as the matrix
  `W = [out, k * k * in]`, is divided by `sigma = u^T W v`, where the unit vectors `u` and `v`
  live in the `spectral` collection and advance by one power iteration per call with
  `update_stats=True` (PyTorch iterates on every forward in training mode). `W` is PyTorch's
  `weight.view(out, -1)` up to a column permutation, which leaves its singular values (and `u`)
  unchanged.

  Variables: `params/kernel: [k, k, in, features]` (and `params/bias: [features]`), as
  `nn.Conv`'s; `spectral/u: [features]` and `spectral/v: [k * k * in]`, random unit vectors
  at init (as PyTorch's). `remove_spectral_norm` folds `1 / sigma` into the kernel.
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    """`x: [batch, h, w, in]` -> `[batch, h', w', features]`; `update_stats` runs one power
    iteration first (call with `mutable=["spectral"]`)."""
    k = self.kernel_size
    kernel = self.param("kernel", weight_init, (k, k, x.shape[-1], self.features))
    matrix = _spectral_matrix(kernel)
    draw = lambda size: _unit(jax.random.normal(self.make_rng("params"), (size,)))
    u = self.variable("spectral", "u", draw, self.features)
    v = self.variable("spectral", "v", draw, matrix.shape[1])
    if update_stats and not self.is_initializing():
      w = jax.lax.stop_gradient(matrix)
      v.value = _unit(w.T @ u.value)
      u.value = _unit(w @ v.value)
    sigma = u.value @ matrix @ v.value
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), (kernel / sigma).astype(self.dtype), (self.strides,) * 2,
        [(self.padding, self.padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


@jax.jit  # one program for all kernels (eagerly: a few XLA ops per kernel shape)
def remove_spectral_norm(variables: dict[str, Any]) -> dict[str, Any]:
  """`torch.nn.utils.remove_spectral_norm` on every `SpectralConv` of a variables dict: each
  kernel divided by its `sigma` (from the stored `u`, `v`, no further iteration), and the
  `spectral` collection dropped, so the module built with `spectral=False` runs the same
  function."""
  if not variables.get("spectral"):
    return variables
  params = traverse_util.flatten_dict(variables["params"])
  vectors = traverse_util.flatten_dict(variables["spectral"])
  for path, u in vectors.items():
    if path[-1] == "u":
      kernel = params[path[:-1] + ("kernel",)]
      params[path[:-1] + ("kernel",)] = kernel / (
          u @ _spectral_matrix(kernel) @ vectors[path[:-1] + ("v",)])
  return {k: v for k, v in variables.items() if k != "spectral"} | {
      "params": traverse_util.unflatten_dict(params)}


class Conv(nn.Module):
  """`nn.Conv2d` with PyTorch's zero padding convention and the reference's init.

  Attributes:
    features: output channels (the maximum width in a super-network).
    kernel_size: square kernel side.
    strides: stride.
    padding: symmetric zero padding.
    groups: `feature_group_count` (input channels for a depthwise convolution).
    spectral: spectral norm (`SpectralConv`, same parameters): `spectral_norm(nn.Conv2d)`.
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  groups: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  spectral: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, out_mask: jax.Array | None = None, *,
               update_stats: bool = False) -> jax.Array:
    """`x: [batch, height, width, in]` -> `[batch, height', width', features]`;
    `update_stats`: one power iteration of the spectral norm (with `spectral`)."""
    if self.spectral:
      if self.groups != 1:
        raise ValueError("spectral norm of a grouped conv is not supported")
      y = SpectralConv(self.features, self.kernel_size, self.strides, self.padding,
                       self.use_bias, self.dtype, name="conv")(x, update_stats)
    elif (self.groups == 1 and self.strides == 1 and self.padding == 0
          and self.kernel_size >= 5 and 8 * self.features <= x.shape[-1]):
      y = TapSumConv(self.features, self.kernel_size, self.use_bias, self.dtype, name="conv")(x)
    else:
      y = nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.strides,
                  padding=[(self.padding, self.padding)] * 2, feature_group_count=self.groups,
                  use_bias=self.use_bias, kernel_init=weight_init, dtype=self.dtype,
                  name="conv")(x)
    return apply_mask(y, out_mask)


class TapSumConv(nn.Module):
  """`nn.Conv` (valid, stride 1) with few output channels, computed by `nn.tap_sum_conv2d`:
  the generators' 7x7 RGB heads run 1.3-2.2x faster on XLA:CPU. The parameters are
  `nn.Conv`'s (`kernel: [k, k, in, features]`, `bias: [features]`, same initializers), so
  `Conv` picks this form by shape alone and checkpoints do not change.
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [batch, height, width, in]` -> `[batch, height - k + 1, width - k + 1, features]`."""
    k = self.kernel_size
    kernel = self.param("kernel", weight_init, (k, k, x.shape[-1], self.features))
    y = tap_sum_conv2d(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class TransposedConv(nn.Module):
  """The parameters and arithmetic of `UpConv` (kernel 3, stride 2, PyTorch padding 1 and
  output padding 1), written on `lax.conv_transpose` rather than `nn.ConvTranspose` because
  ONNX converters (jax2onnx) replace flax's layer and reject its `transpose_kernel=True`; the
  lax primitive converts. Parameters are `nn.ConvTranspose(transpose_kernel=True)`'s, so
  checkpoints and `pruning` see the same tree: `kernel: [3, 3, features, in]` (PyTorch's
  `weight[in, out, kh, kw]` transposed), `bias: [features]`.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [batch, h, w, in]` -> `[batch, 2h, 2w, features]`."""
    kernel = self.param("kernel", weight_init, (3, 3, self.features, x.shape[-1]))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    y = jax.lax.conv_transpose(x.astype(self.dtype), kernel.astype(self.dtype), (2, 2),
                               ((1, 2), (1, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                               transpose_kernel=True)
    return y + bias.astype(self.dtype)


class UpConv(nn.Module):
  """`nn.ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`: doubles height/width.

  PyTorch's transposed convolution is a convolution over the stride-dilated input padded by
  `k - 1 - padding` before and `k - 1 - padding + output_padding` after, with the kernel
  flipped (`transpose_kernel=True`); checked against a scatter-form numpy loop in the tests.
  Parameters: `conv/kernel: [3, 3, features, in]`, `conv/bias: [features]`.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, out_mask: jax.Array | None = None) -> jax.Array:
    """`x: [batch, h, w, in]` -> `[batch, 2h, 2w, features]`."""
    y = TransposedConv(self.features, self.dtype, name="conv")(x)
    return apply_mask(y, out_mask)


class DepthwiseConv(nn.Module):
  """Depthwise `k x k` conv with bias on pre-padded input (`lite_jax.nn.depthwise_conv2d`).

  Attributes:
    impl: `shifts` (fused shifted multiply-adds; far faster on CPU) or `conv` (XLA's grouped
      convolution). Both compute the same function with the same parameters.
  """
  kernel_size: int = 3
  impl: str = "shifts"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, out_mask: jax.Array | None = None) -> jax.Array:
    """`x: [batch, h, w, c]` -> `[batch, h - k + 1, w - k + 1, c]`."""
    channels = x.shape[-1]
    kernel = self.param("kernel", weight_init, (self.kernel_size, self.kernel_size, 1, channels))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    y = depthwise_conv2d(x.astype(self.dtype), kernel, impl=self.impl) + bias.astype(self.dtype)
    return apply_mask(y, out_mask)


class SeparableConv(nn.Module):
  """The reference's `SeparableConv2d`: depthwise 3x3 (bias) -> instance norm -> 1x1."""
  features: int
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"

  @nn.compact
  def __call__(self, x: jax.Array, in_mask: jax.Array | None = None,
               out_mask: jax.Array | None = None) -> jax.Array:
    """`x: [batch, h, w, in]` (already padded by 1) -> `[batch, h - 2, w - 2, features]`."""
    y = DepthwiseConv(3, self.depthwise_impl, self.dtype, name="depthwise")(x, in_mask)
    y = instance_norm(y)
    return Conv(self.features, 1, dtype=self.dtype, name="pointwise")(y, out_mask)


class DistillStudent(nn.Module):
  """A generator plus the learnable 1x1 convs that map its distillation taps to the teacher's
  widths (on the student side, as the reference does). Parameters: `generator`, `distill0..`.

  With a super-network as `generator`, call it with `active=` a sub-network: the masked
  channels make the 1x1 convs input-sliced, so a sub-network's student has the
  `slice_params` of the super-network's (1x1 convs included). Without `widths` it is the
  generator alone in the same parameter layout (how a GauGAN teacher trains).

  Attributes:
    generator: a `ResnetGenerator` or `SpadeGenerator`.
    widths: the teacher's width at each tap.
    taps: the names of the generator's features to distill (a SPADE generator returns them by
      block name); empty when the generator returns the list of its taps (ResNet).
  """
  generator: nn.Module
  widths: tuple[int, ...] = ()
  taps: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, active=None, *, train: bool = False):
    """`x: [batch, h, w, c]` -> (the generator's output, one map per tap, `[batch, h', w',
    widths[i]]` float32)."""
    out, features = self.generator(x, active, train=train, return_features=True)
    if self.taps:
      features = [features[name] for name in self.taps]
    mapped = [Conv(width, 1, dtype=self.generator.dtype, name=f"distill{i}")(f)
              for i, (width, f) in enumerate(zip(self.widths, features))]
    return out, [m.astype(jnp.float32) for m in mapped]


def parse_channels(text: str | Sequence[int], lengths: Sequence[int],
                   what: str = "channel config") -> tuple[int, ...]:
  """`"16_16_32_..."` (or a sequence) -> a tuple of positive ints, as many as one of `lengths`."""
  if isinstance(text, str):
    try:
      values = tuple(int(v) for v in text.replace(",", "_").split("_") if v)
    except ValueError:
      raise UserError(f"{what} {text!r} must be integers joined by '_', "
                      "e.g. 16_16_32_16_32_32_16_16.") from None
  else:
    values = tuple(int(v) for v in text)
  if len(values) not in lengths or min(values, default=0) <= 0:
    expected = " or ".join(str(n) for n in lengths)
    raise UserError(f"{what} {text!r} must have {expected} positive entries, "
                    f"got {len(values)}.")
  return values


def format_channels(channels: Sequence[int]) -> str:
  return "_".join(str(int(c)) for c in channels)


def check_subnet(channels: Sequence[int], super_channels: Sequence[int]) -> tuple[int, ...]:
  """`channels` (a parsed config) if no entry is wider than the super-network's, else a
  `UserError` naming the first wider entry."""
  wider = [i for i, (c, s) in enumerate(zip(channels, super_channels)) if c > s]
  if wider:
    raise UserError(f"channel config {format_channels(channels)} is wider than the "
                    f"super-network ({format_channels(super_channels)}) at entry {wider[0]}.")
  return tuple(channels)


def named_search_space(spaces: Mapping[str, tuple[tuple[int, ...], ...]], name: str,
                       family: str) -> tuple[tuple[int, ...], ...]:
  """`spaces[name]`, or a `UserError` listing the `family`'s space names."""
  if name not in spaces:
    raise UserError(f"unknown {family} search space {name!r}; choose one of "
                    f"{', '.join(sorted(spaces))}.")
  return spaces[name]


def slice_params(params: Any, target: Any) -> Any:
  """The leading-channel slice of super-network `params` shaped like `target` (a sub-network).

  Args:
    params: the super-network's parameters.
    target: the sub-network's parameters, or their `jax.ShapeDtypeStruct`s (same tree).
  """
  def take(path, value, like):
    if len(value.shape) != len(like.shape) or any(
        t > s for t, s in zip(like.shape, value.shape)):
      raise UserError(f"parameter {jax.tree_util.keystr(path)} of shape {tuple(like.shape)} "
                      f"does not fit inside the super-network's {tuple(value.shape)}.")
    return value[tuple(slice(0, t) for t in like.shape)]

  try:
    return jax.tree_util.tree_map_with_path(take, params, target)
  except ValueError as e:  # Different tree structures.
    raise UserError(f"the sub-network's parameters do not match the super-network's: {e}"
                    ) from None
