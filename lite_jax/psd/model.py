"""PSD (Xu et al., "Unsupervised Discovery of Parts, Structure, and Dynamics", ICLR 2019).

A conditional VAE over optical flow, conditioned on frame 1 (NHWC throughout; facts tagged as in
`specs/psd_ppd.md`: [code] = the public reference zhenjia-xu/psd, [unverified] = recalled):

  flow [B, H, W, 2] --motion encoder--> mean, log_var [B, L] --sample--> z [B, L]
  z_k --kernel decoder k (one MLP per latent)--> kernel_k [5, 5]
  image1 [B, H, W, 3] --image encoder--> layers [B, H/s, W/s, L]   (s = layer_stride, 4 [code])
  layers (*) kernels (per-sample depthwise cross-correlation) --nearest x s--> [B, H, W, L]
  --motion decoders x / y (depthwise)--> motions [B, L, H, W, 2] (one local flow per layer)
  --structural descriptor (stage 2 only)--> flow = sum_k motions_k [B, H, W, 2] (100x units)
  concat(image1, stop_gradient(flow)) --U-Net--> image = image1 + unet(.) [B, H, W, 3]

The U-Net's flow input is the predicted flow in 100x units, detached: the reference feeds
`flow_outputs.detach()`, which its data code trains against `flow_targets = 100 * flow` [code]
(the spec's "flow.detach()" is this tensor). Part masks divide by max|m_k| + 1e-4 (the
reference's eps), not by max|m_k| alone.

Choices beyond the reference [code], each ours:
- Sizes other than 128: the motion encoder has log2(image_size) stride-2 convs (1x1 output);
  its hidden widths are the *last* ones of the paper's 16, 16, 32, 32, 64, 64 (32 px: 32, 32,
  64, 64), padded at the front with 16 above 128 px. `width_scale` multiplies every hidden width
  of the encoders, kernel decoder and U-Net (`unet_features` is scaled too); widths tied to the
  latent count (2L encoder output, the L image-encoder maps, the L motion channels) are not.
- `layer_stride` (4, the reference's; 2 or 1) and `motion_kernels` (reference 9, 9, 5, 5) let a
  small image keep the reference's proportions of layer cell, cross-convolution kernel and
  local motion to the image; at 32 px they did not help (`lite_jax/psd/README.md`, run s1).
- `mask_eps` (the reference's 1e-4 by default) in the part masks: with perfect parts, the
  structure is learned with 1 and not with 1e-4, because a still or absent child's mask is its
  residual motion over its own tiny maximum, i.e. the whole frame (`lite_jax/psd/README.md`,
  "Diagnostic").
- `decode(layers=...)` and `object_layers`: the true objects' maps in place of the image
  encoder's layers, a diagnostic of the decoders and the structure step with perfect parts.
- The U-Net has `unet_levels` levels with inner widths ngf * min(2^i, 8), which is the
  reference's layout at 7 levels (it has at least 5 whatever `num_layers` says; ours has exactly
  `unet_levels`, so reduced presets may use 3).
- The x and y motion decoders run as one depthwise stack over 2L channels (the upsampled maps
  twice): channel c < L is the x branch, L + c the y branch. Depthwise convolutions and
  per-channel BatchNorm keep the channels independent, so this is the reference's two branches
  in one op.
- The 32 kernel-decoder MLPs are batched einsums over the latent axis with parameters
  `[L, in, out]` and BatchNorm statistics per (latent, feature): independent by construction.
- Stage 2 (`dimensions` given) freezes the motion encoder completely: `mean`/`log_var` are
  stop-gradient'ed as in the reference, and its BatchNorm also runs on (and keeps) its running
  statistics, so the posterior stays the function the active dimensions were picked from.

Initialisation [code]: conv and linear weights `kaiming_normal_` with PyTorch's defaults (a=0,
mode fan_in, nonlinearity leaky_relu, i.e. std sqrt(2 / fan_in), untruncated; fan_in = k*k*in /
groups), zero biases, BatchNorm scale ~ N(1, 1) and bias 0. The U-Net's transposed convs are
not `nn.Conv2d` in PyTorch, so the reference's `init_weights` skips them: they keep PyTorch's
default U(+-1/sqrt(fan)) (fan = out * k * k for `ConvTranspose2d`'s weight layout) for weight
and bias, as here. BatchNorm: eps 1e-5, PyTorch momentum 0.1 (flax momentum 0.9); flax keeps
the biased batch variance in its running average where PyTorch keeps the unbiased one.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.nn import depthwise

KERNEL_SIZE = 5  # the cross-convolution kernels decoded from each latent [code]
STRUCTURE_INIT = -10.0  # sigmoid(-10) ~ 4.54e-5: no structure at the start of stage 2 [code]
MASK_EPS = 1e-4  # the reference's `masks = |m| / (max|m|.detach() + eps)` [code]
LEAKY_SLOPE = 0.01  # PyTorch's LeakyReLU default, used by every Conv2dLayer [code]
UNET_LEAKY_SLOPE = 0.2  # pix2pix down path [code]
PAPER_MOTION_WIDTHS = (16, 16, 32, 32, 64, 64)  # the hidden convs at 128 px [code]
KERNEL_DECODER_WIDTHS = (64, 128, 64)  # each latent's MLP 1 -> 64 -> 128 -> 64 -> 25 [code]
MOTION_DECODER_KERNELS = (9, 9, 5, 5)  # depthwise, per branch [code]

# PyTorch `kaiming_normal_` defaults: std = sqrt(2 / fan_in), a plain (untruncated) normal.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def bn_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """BatchNorm scale ~ N(1, 1): the reference's (unusually wide) `normal_(weight, 1, 1.0)`."""
  return (1.0 + jax.random.normal(key, shape)).astype(dtype)


def _torch_transpose_init(key: jax.Array, shape: Sequence[int], dtype: Any,
                          fan: int) -> jax.Array:
  bound = 1.0 / math.sqrt(fan)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def batch_norm(train: bool, dtype: Any, param_dtype: Any, axis: int | tuple[int, ...] = -1,
               name: str | None = None) -> nn.BatchNorm:
  """PyTorch's BatchNorm{1,2}d (momentum 0.1, eps 1e-5) with the reference's scale init."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis=axis,
                      scale_init=bn_scale_init, use_fast_variance=False, dtype=dtype,
                      param_dtype=param_dtype, name=name)


def _scaled(width: int, scale: float) -> int:
  return max(1, int(round(width * scale)))


class ConvLayer(nn.Module):
  """The reference's `Conv2dLayer`: conv (zero padding (k - 1) // 2 each side, as PyTorch) ->
  BatchNorm -> LeakyReLU(0.01), or a plain conv with bias when `norm` is False.

  Depthwise layers (`groups` == channels) run as shifted multiply-adds on CPU
  (`lite_jax.nn.depthwise`) with `depthwise_impl="auto"`, as XLA's grouped convolution with
  `"conv"`; their parameters are `nn.Conv`'s either way.
  """
  features: int
  kernel_size: int
  strides: int = 1
  groups: int = 1
  norm: bool = True
  depthwise_impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [B, H, W, in]` -> `[B, ceil(H / strides), ceil(W / strides), features]`."""
    pad = (self.kernel_size - 1) // 2
    conv_fn = (depthwise.conv_general_dilated if self.depthwise_impl == "auto"
               else jax.lax.conv_general_dilated)
    y = nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.strides,
                padding=((pad, pad), (pad, pad)), feature_group_count=self.groups,
                use_bias=not self.norm, kernel_init=kaiming_normal,
                bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype,
                conv_general_dilated=conv_fn, name="conv")(x)
    if not self.norm:
      return y
    y = batch_norm(train, self.dtype, self.param_dtype, name="bn")(y)
    return nn.leaky_relu(y, LEAKY_SLOPE)


class MotionEncoder(nn.Module):
  """Flow -> posterior statistics: `num_convs` 5x5 stride-2 `ConvLayer`s, the last plain with
  2L channels, at 1x1 spatially.
  """
  num_latents: int
  num_convs: int
  width_scale: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def widths(self) -> tuple[int, ...]:
    """Output channels of every conv (the last is 2L)."""
    hidden = self.num_convs - 1
    paper = (16,) * max(0, hidden - len(PAPER_MOTION_WIDTHS)) + PAPER_MOTION_WIDTHS
    chosen = paper[len(paper) - hidden:] if hidden else ()
    return tuple(_scaled(w, self.width_scale) for w in chosen) + (2 * self.num_latents,)

  @nn.compact
  def __call__(self, flow: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """`flow: [B, H, W, 2]` (H = W = 2^num_convs) -> `mean, log_var: [B, L]`."""
    x = flow
    widths = self.widths()
    for i, width in enumerate(widths):
      x = ConvLayer(width, 5, strides=2, norm=i < len(widths) - 1, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f"conv{i}")(x, train)
    x = x.reshape(x.shape[0], -1)
    return x[:, :self.num_latents], x[:, self.num_latents:]


class ImageEncoder(nn.Module):
  """Frame 1 -> L feature maps (the "layers") at 1 / `stride` of the resolution: the reference's
  stride 4 [code] has stride-2 first and third convs; stride 2 keeps the first, 1 neither."""
  num_latents: int
  width_scale: float = 1.0
  stride: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, train: bool) -> jax.Array:
    """`image: [B, H, W, 3]` -> `[B, H / stride, W / stride, L]`."""
    scale = lambda w: _scaled(w, self.width_scale)
    first, third = {4: (2, 2), 2: (2, 1), 1: (1, 1)}[self.stride]
    specs = ((scale(32), first), (scale(32), 1), (scale(64), third), (scale(64), 1),
             (self.num_latents, 1))
    x = image
    for i, (width, stride) in enumerate(specs):
      x = ConvLayer(width, 5, strides=stride, dtype=self.dtype, param_dtype=self.param_dtype,
                    name=f"conv{i}")(x, train)
    return ConvLayer(self.num_latents, 5, norm=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"conv{len(specs)}")(x, train)


class KernelDecoder(nn.Module):
  """L independent MLPs, latent k -> kernel k: 1 -> 64 -> 128 -> 64 -> 25, Linear (no bias)
  -> BatchNorm1d -> ReLU on the hidden layers, a plain Linear with bias last [code].

  Parameters `dense{i}: [L, in, out]` (one slice per latent) and `bias: [L, k*k]`; BatchNorm
  statistics per (latent, feature). Latent k only ever meets slice k.
  """
  num_latents: int
  kernel_size: int = KERNEL_SIZE
  width_scale: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool) -> jax.Array:
    """`z: [B, L]` -> kernels `[B, L, k, k]`."""
    # Kaiming fan_in per latent's matrix: the latent axis is a batch of independent layers.
    init = nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=-2, out_axis=-1,
                                            batch_axis=(0,))
    widths = [_scaled(w, self.width_scale) for w in KERNEL_DECODER_WIDTHS]
    h = z.astype(self.dtype)[:, :, None]
    for i, width in enumerate(widths + [self.kernel_size ** 2]):
      w = self.param(f"dense{i}", init, (self.num_latents, h.shape[-1], width), self.param_dtype)
      h = jnp.einsum("bli,lio->blo", h, w.astype(self.dtype))
      if i < len(widths):
        h = batch_norm(train, self.dtype, self.param_dtype, axis=(-2, -1), name=f"bn{i}")(h)
        h = nn.relu(h)
    bias = self.param("bias", nn.initializers.zeros, (self.num_latents, self.kernel_size ** 2),
                      self.param_dtype)
    h = h + bias.astype(self.dtype)
    return h.reshape(z.shape[0], self.num_latents, self.kernel_size, self.kernel_size)


def cross_convolution(layers: jax.Array, kernels: jax.Array, *, impl: str = "auto") -> jax.Array:
  """Each sample's maps cross-correlated with its own kernels, one kernel per map (depthwise,
  zero padding (k - 1) // 2, no flip: PyTorch's `conv2d(groups=L)` per sample [code]).

  Args:
    layers: `[B, h, w, L]`.
    kernels: `[B, L, k, k]`, `kernels[b, l, i, j]` multiplies `layers[b, y + i - p, x + j - p, l]`.
    impl: `shifts` (k^2 fused multiply-adds over the whole batch), `conv` (`jax.vmap` over the
      batch of a grouped `lax.conv_general_dilated`), or `auto` (shifts on CPU, where it is
      faster, conv elsewhere).

  Returns:
    `[B, h, w, L]`.
  """
  batch, height, width, channels = layers.shape
  size = kernels.shape[-1]
  if kernels.shape != (batch, channels, size, size):
    raise ValueError(f"kernels must be [{batch}, {channels}, k, k], got {kernels.shape}.")
  pad = (size - 1) // 2
  if impl == "auto":
    impl = "shifts" if jax.default_backend() == "cpu" else "conv"
  kernels = kernels.astype(layers.dtype)
  if impl == "shifts":
    x = jnp.pad(layers, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(size):
      for j in range(size):
        term = x[:, i:i + height, j:j + width, :] * kernels[:, None, None, :, i, j]
        out = term if out is None else out + term
    return out
  if impl == "conv":
    def one(x, k):  # x: [h, w, L], k: [L, k, k] -> HWIO [k, k, 1, L]
      return jax.lax.conv_general_dilated(
          x[None], k.transpose(1, 2, 0)[:, :, None, :], (1, 1), ((pad, pad), (pad, pad)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)[0]
    return jax.vmap(one)(layers, kernels)
  raise ValueError(f"cross_convolution impl must be 'auto', 'shifts' or 'conv', got {impl!r}.")


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  """`[B, h, w, C]` -> `[B, h * factor, w * factor, C]`, PyTorch `interpolate(mode='nearest')`
  for an integer factor."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class MotionDecoder(nn.Module):
  """Per-layer local flows: x and y branches of depthwise convs (the reference's 9, 9, 5, 5
  [code] by default), `ConvLayer`s but the last (plain, with bias), run as one 2L-channel stack
  (module docstring)."""
  num_latents: int
  depthwise_impl: str = "auto"
  kernels: tuple[int, ...] = MOTION_DECODER_KERNELS
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> jax.Array:
    """`features: [B, H, W, L]` -> motions `[B, L, H, W, 2]` (channel 0 x, 1 y)."""
    channels = 2 * self.num_latents
    x = jnp.concatenate([features, features], axis=-1)
    for i, size in enumerate(self.kernels):
      x = ConvLayer(channels, size, groups=channels, norm=i < len(self.kernels) - 1,
                    depthwise_impl=self.depthwise_impl, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f"conv{i}")(x, train)
    b, h, w, _ = x.shape
    return x.reshape(b, h, w, 2, self.num_latents).transpose(0, 4, 1, 2, 3)


TAPS = ((3, 1), (2, 0))  # the 4x4 kernel rows (columns) met by output parity 0 and 1


def conv_transpose_4x4_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """PyTorch `conv_transpose2d(x, weight, stride=2, padding=1)` for a 4x4 kernel, computed on
  the undilated input, one 2x2 sub-kernel per output phase (row and column parity).

  Output row 2y + a gathers input rows y - 1 + a and y + a through kernel rows 3 - a and
  1 - a (`TAPS`); columns likewise. The usual form, a 4x4 convolution of the stride-dilated
  input, spends three quarters of its multiply-adds on inserted zeros; on 2 CPU cores its
  forward + backward took 1315-1960 ms at 4x32x32x256 -> 64 channels against 157-180 ms here.
  Wide outputs run four 2x2 convolutions; narrow ones (< 16 channels, the RGB head) one 3x3
  convolution with 4x the output channels and zeros in the unused taps, since a matrix product
  only 3 columns wide runs far below speed (4x64x64x128 -> 3: 175 ms dilated, 270 ms as four
  convolutions, 34 ms as one).

  Args:
    x: `[B, h, w, in]`.
    kernel: `[4, 4, out, in]`, PyTorch's `weight[in, out, kh, kw]` transposed.

  Returns:
    `[B, 2h, 2w, out]`.
  """
  b, h, w, _ = x.shape
  out_c = kernel.shape[2]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = lambda lhs, rhs: jax.lax.conv_general_dilated(
      lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  hwio = kernel.transpose(0, 1, 3, 2)
  if out_c < 16:
    merged = jnp.zeros((3, 3, x.shape[-1], 2, 2, out_c), kernel.dtype)
    for a in range(2):
      for c in range(2):
        for u in range(2):
          for v in range(2):
            merged = merged.at[a + u, c + v, :, a, c, :].set(hwio[TAPS[a][u], TAPS[c][v]])
    y = conv(xp, merged.reshape(3, 3, -1, 4 * out_c)).reshape(b, h, w, 2, 2, out_c)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, out_c)
  rows = []
  for a in range(2):
    cols = [conv(xp[:, a:a + h + 1, c:c + w + 1], hwio[np.array(TAPS[a])][:, np.array(TAPS[c])])
            for c in range(2)]
    rows.append(jnp.stack(cols, axis=3))  # [B, h, w, 2 (c), out]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, out_c)  # [B, h, 2 (a), w, 2 (c), .]


class TransposedConv(nn.Module):
  """PyTorch `ConvTranspose2d(in, features, 4, stride=2, padding=1)` with its default init
  (`conv_transpose_4x4_stride2`): doubles height and width.

  Parameters: `kernel: [4, 4, features, in]` (PyTorch's `weight[in, out, kh, kw]` transposed),
  `bias: [features]` when `use_bias`.
  """
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [B, h, w, in]` -> `[B, 2h, 2w, features]`."""
    fan = self.features * 16  # PyTorch's fan_in of a [in, out, 4, 4] weight
    init = lambda key, shape, dtype: _torch_transpose_init(key, shape, dtype, fan)
    kernel = self.param("kernel", init, (4, 4, self.features, x.shape[-1]), self.param_dtype)
    y = conv_transpose_4x4_stride2(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", init, (self.features,), self.param_dtype).astype(self.dtype)
    return y


class UNet(nn.Module):
  """pix2pix U-Net generator with BatchNorm [code]: `levels` 4x4 stride-2 convs down (no bias;
  LeakyReLU 0.2 before all but the first, BatchNorm after all but the first and the innermost),
  4x4 stride-2 transposed convs up (ReLU before; BatchNorm after all but the outermost, which
  has a bias and a Tanh), skips concatenated at every level.

  As in pix2pix, the down path's in-place LeakyReLU also rewrites the tensor that is
  concatenated as the skip, so the skips carry the activated features.
  """
  features: int = 64
  levels: int = 7
  out_channels: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x: [B, H, W, C]` (H, W divisible by 2^levels) -> `[B, H, W, out_channels]` in (-1, 1)."""
    inner = [self.features * min(2 ** i, 8) for i in range(self.levels)]
    conv = lambda width, name: nn.Conv(
        width, (4, 4), strides=2, padding=((1, 1), (1, 1)), use_bias=False,
        kernel_init=kaiming_normal, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    bn = lambda name: batch_norm(train, self.dtype, self.param_dtype, name=name)
    h = conv(inner[0], "down0")(x)
    skips = []
    for i in range(1, self.levels):
      h = nn.leaky_relu(h, UNET_LEAKY_SLOPE)
      skips.append(h)
      h = conv(inner[i], f"down{i}")(h)
      if i < self.levels - 1:
        h = bn(f"down_bn{i}")(h)
    for i in range(self.levels - 1, 0, -1):
      h = TransposedConv(inner[i - 1], use_bias=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"up{i}")(nn.relu(h))
      h = jnp.concatenate([skips[i - 1], bn(f"up_bn{i}")(h)], axis=-1)
    h = TransposedConv(self.out_channels, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="up0")(nn.relu(h))
    return jnp.tanh(h)


def structure_mask(dimensions: Sequence[int] | None, num_latents: int) -> np.ndarray:
  """Allowed structure entries: 1 at (i, j) for active dims i != j, 0 elsewhere [code].

  Args:
    dimensions: the active latent dimensions (None or empty: no structure at all).
    num_latents: L.

  Returns:
    `[L, L]` float32.
  """
  mask = np.zeros((num_latents, num_latents), np.float32)
  dims = validate_dimensions(dimensions, num_latents)
  for i in dims:
    for j in dims:
      mask[i, j] = float(i != j)
  return mask


def validate_dimensions(dimensions: Sequence[int] | None, num_latents: int) -> tuple[int, ...]:
  """`dimensions` as a tuple of distinct ints in [0, L); `UserError` otherwise."""
  if dimensions is None:
    return ()
  dims = tuple(int(d) for d in dimensions)
  bad = [d for d in dims if not 0 <= d < num_latents]
  if bad:
    raise UserError(f"dimensions {bad} are out of range: each must be in [0, {num_latents}).")
  if len(set(dims)) != len(dims):
    raise UserError(f"dimensions {list(dims)} repeat a dimension: list each one once.")
  return dims


def _safe_norm(v: jax.Array) -> jax.Array:
  """`|v|` over the last axis with a zero (not NaN) gradient at v = 0."""
  sq = jnp.sum(jnp.square(v), axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def part_masks(motions: jax.Array, eps: float = MASK_EPS) -> jax.Array:
  """Soft part masks `|m_k| / (max |m_k| + eps)`, the maximum over pixels detached [code].

  Args:
    motions: `[B, L, H, W, 2]`.
    eps: the reference's 1e-4 by default.

  Returns:
    `[B, L, H, W]` in [0, 1).
  """
  norm = _safe_norm(motions)
  peak = jax.lax.stop_gradient(jnp.max(norm, axis=(2, 3), keepdims=True))
  return norm / (peak + eps)


OBJECT_LAYERS = ("objects", "objects_shared")


def object_layers(object_ids: np.ndarray, num_latents: int, stride: int, source: str
                  ) -> np.ndarray:
  """Ground-truth part maps of Shapes scenes, to decode in place of the image encoder's
  layers (`PSD.decode(layers=...)`): a diagnostic of the decoders with perfect parts (ours).

  Args:
    object_ids: int `[B, H, W]`, 0 background, 1 circle, 2 square, 3 triangle (topmost).
    num_latents: L >= 3; layers 3.. are zero.
    stride: the model's `layer_stride`; each map is averaged over stride x stride cells.
    source: `objects`: layer k is object k + 1 (circle, square, triangle), what stage 2's
      structure composes; `objects_shared`: layer 0 is every object (the children move with
      the circle, so without a structure one layer carries that shared motion), 1 the square,
      2 the triangle: the ideal stage-1 decomposition.

  Returns:
    float32 `[B, H / stride, W / stride, L]`.
  """
  ids = np.asarray(object_ids)
  if source not in OBJECT_LAYERS:
    raise UserError(f"object layers are 'objects' or 'objects_shared', got {source!r}.")
  if num_latents < 3:
    raise UserError(f"object layers need num_latents >= 3 (one per object), got "
                    f"{num_latents}.")
  first = ids > 0 if source == "objects_shared" else ids == 1
  maps = np.stack([first, ids == 2, ids == 3], -1).astype(np.float32)
  b, h, w, _ = maps.shape
  maps = maps.reshape(b, h // stride, stride, w // stride, stride, 3).mean(axis=(2, 4))
  zeros = np.zeros(maps.shape[:3] + (num_latents - 3,), np.float32)
  return np.concatenate([maps, zeros], axis=-1)


def signed_max(motions: jax.Array) -> jax.Array:
  """Per layer and axis, the signed value of largest magnitude (detached) [code].

  Args:
    motions: `[B, L, H, W, 2]`.

  Returns:
    `[B, L, 2]`.
  """
  b, l, h, w, c = motions.shape
  flat = motions.reshape(b, l, h * w, c)
  index = jnp.argmax(jnp.abs(flat), axis=2)
  return jax.lax.stop_gradient(jnp.take_along_axis(flat, index[:, :, None, :], axis=2)[:, :, 0])


def compose_structure(motions: jax.Array, masks: jax.Array, weights: jax.Array) -> jax.Array:
  """One level of parent -> child composition [code]:
  `after_i = motions_i + flow_max_i * sum_j weights[i, j] * mask_j` (not iterated, so a chain
  i -> j -> k moves k only by j's own motion).

  Args:
    motions: `[B, L, H, W, 2]` local flows before the structure step.
    masks: `[B, L, H, W]` (`part_masks`).
    weights: `[L, L]`, `structure_mask * sigmoid(S)`; `weights[i, j]` = "i is j's parent".

  Returns:
    `[B, L, H, W, 2]` motions after the structure step.
  """
  painted = jnp.einsum("ij,bjhw->bihw", weights.astype(masks.dtype), masks)
  flow_max = signed_max(motions)
  return motions + painted[..., None] * flow_max[:, :, None, None, :]


def aggregate_posterior_sample(mean_bank: jax.Array, log_var_bank: jax.Array, rng: jax.Array,
                               n: int) -> jax.Array:
  """Latents from the aggregate posterior, as the reference's demo samples them [code]: each
  sample takes the posterior statistics of a uniformly drawn dataset item (with replacement)
  and draws z = mean + eps * exp(log_var / 2).

  Args:
    mean_bank, log_var_bank: `[N, L]` posterior statistics over a dataset.
    rng: a `jax.random` key.
    n: how many latents.

  Returns:
    z `[n, L]`.
  """
  if mean_bank.shape != log_var_bank.shape or mean_bank.ndim != 2:
    raise ValueError(f"mean_bank and log_var_bank must both be [N, L], got {mean_bank.shape} "
                     f"and {log_var_bank.shape}.")
  pick, noise = jax.random.split(rng)
  index = jax.random.randint(pick, (n,), 0, mean_bank.shape[0])
  eps = jax.random.normal(noise, (n, mean_bank.shape[1]), mean_bank.dtype)
  return mean_bank[index] + eps * jnp.exp(log_var_bank[index] / 2)


class PSD(nn.Module):
  """The PSD model (module docstring). Paper size by default: 128 px, 32 latents.

  Attributes:
    num_latents: L, latent dimensions = part layers = kernel decoders.
    image_size: H = W, a power of two >= 4 and a multiple of 2^unet_levels.
    unet_features: the U-Net's ngf (before `width_scale`).
    unet_levels: the U-Net's depth.
    width_scale: multiplies every hidden width (reduced presets).
    layer_stride: the layers' downsampling, 4 (the reference's), 2 or 1. With `motion_kernels`
      it sets how many pixels a layer cell, a cross-convolution kernel and a local motion span:
      a small image keeps the reference's proportions with a smaller stride (ours).
    motion_kernels: the motion decoders' depthwise kernel sizes (odd), reference 9, 9, 5, 5.
    depthwise_impl: the motion decoders' depthwise convs and the cross convolution: `auto`
      (shifted multiply-adds on CPU, XLA's grouped convolution elsewhere) or `conv` (XLA's
      grouped convolution everywhere). Same parameters, same function.
    mask_eps: the part masks' `|m_k| / (max |m_k| + mask_eps)`, 100x flow units (reference
      1e-4).
    dtype, param_dtype: compute and storage dtypes.

  Variables: `params` (with `params["structure"]: [L, L]`, S, init -10) and `batch_stats`
  (mutable when `train`). Randomness: the `"latent"` rng stream (posterior sampling).
  """
  num_latents: int = 32
  image_size: int = 128
  unet_features: int = 64
  unet_levels: int = 7
  width_scale: float = 1.0
  layer_stride: int = 4
  motion_kernels: tuple[int, ...] = MOTION_DECODER_KERNELS
  depthwise_impl: str = "auto"
  mask_eps: float = MASK_EPS
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    size = self.image_size
    if size < 4 or size & (size - 1):
      raise UserError(f"image_size must be a power of two >= 4, got {size}.")
    if size % (2 ** self.unet_levels):
      raise UserError(f"image_size {size} must be divisible by 2^unet_levels = "
                      f"{2 ** self.unet_levels}.")
    if self.layer_stride not in (1, 2, 4):
      raise UserError(f"layer_stride must be 1, 2 or 4, got {self.layer_stride}.")
    kernels = tuple(self.motion_kernels)
    if not kernels or any(int(k) != k or k < 1 or k % 2 == 0 for k in kernels):
      raise UserError(f"motion_kernels must be odd sizes >= 1, got {kernels}.")
    if self.depthwise_impl not in ("auto", "conv"):
      raise UserError(f"depthwise_impl must be 'auto' or 'conv', got {self.depthwise_impl!r}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.motion_encoder = MotionEncoder(self.num_latents, int(math.log2(size)), self.width_scale,
                                        **kw)
    self.image_encoder = ImageEncoder(self.num_latents, self.width_scale, self.layer_stride,
                                      **kw)
    self.kernel_decoder = KernelDecoder(self.num_latents, width_scale=self.width_scale, **kw)
    self.motion_decoder = MotionDecoder(self.num_latents, self.depthwise_impl,
                                        tuple(int(k) for k in kernels), **kw)
    self.image_decoder = UNet(_scaled(self.unet_features, self.width_scale), self.unet_levels,
                              **kw)
    self.structure = self.param("structure", nn.initializers.constant(STRUCTURE_INIT),
                                (self.num_latents, self.num_latents), self.param_dtype)

  def _check_image(self, image1: jax.Array) -> None:
    expected = (self.image_size, self.image_size, 3)
    if image1.ndim != 4 or image1.shape[1:] != expected:
      raise UserError(f"image1 must be [batch, {self.image_size}, {self.image_size}, 3], "
                      f"got {tuple(image1.shape)}.")

  def __call__(self, image1: jax.Array, flow: jax.Array, *,
               dimensions: Sequence[int] | None = None, train: bool,
               sample: bool = True, layers: jax.Array | None = None) -> dict[str, jax.Array]:
    """Encode the flow, decode it back through the parts.

    Args:
      image1: `[B, H, W, 3]` in [0, 1].
      flow: `[B, H, W, 2]` in image-width units (the raw data flow).
      layers: as in `decode` (given layers instead of the image encoder's).
      dimensions: active latent dims; given, the structural descriptor runs and the motion
        encoder is frozen (stage 2).
      train: BatchNorm on batch statistics (updating `batch_stats`) rather than running ones.
      sample: z = mean + eps * exp(log_var / 2) (eps from the `"latent"` stream), else z = mean.

    Returns:
      `mean, log_var, z: [B, L]` and `decode`'s outputs.
    """
    self._check_image(image1)
    validate_dimensions(dimensions, self.num_latents)
    if flow.shape != image1.shape[:3] + (2,):
      raise UserError(f"flow must be [batch, height, width, 2] matching image1 "
                      f"{tuple(image1.shape)}, got {tuple(flow.shape)}.")
    frozen = dimensions is not None
    mean, log_var = self.motion_encoder(flow.astype(self.dtype), train and not frozen)
    if frozen:
      mean, log_var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(log_var)
    z = mean
    if sample:
      eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
      z = mean + eps * jnp.exp(log_var / 2)
    return {"mean": mean, "log_var": log_var, "z": z,
            **self.decode(image1, z, dimensions=dimensions, train=train, layers=layers)}

  def decode(self, image1: jax.Array, z: jax.Array, *, dimensions: Sequence[int] | None = None,
             train: bool = False, layers: jax.Array | None = None) -> dict[str, jax.Array]:
    """Decode given latents (traversals, aggregate-posterior samples).

    Args:
      image1: `[B, H, W, 3]`.
      z: `[B, L]`.
      dimensions: active dims for the structural descriptor (None: flow = sum of motions).
      train: as in `__call__`.
      layers: `[B, H/s, W/s, L]` part maps to use instead of the image encoder's (None: the
        encoder's), e.g. `object_layers` of the true objects, which bounds what the kernel and
        motion decoders and the structure step can do with perfect parts (the encoder does
        not run; the U-Net still sees image1).

    Returns:
      `z: [B, L]`, `kernels: [B, L, 5, 5]`, `layers: [B, H/s, W/s, L]` (image encoder maps,
      s = `layer_stride`),
      `motions: [B, L, H, W, 2]` (local flows before the structure step, 100x units),
      `masks: [B, L, H, W]` (`part_masks`), `flow: [B, H, W, 2]` (100x units),
      `image: [B, H, W, 3]` (predicted frame 2).
    """
    self._check_image(image1)
    if z.shape != (image1.shape[0], self.num_latents):
      raise UserError(f"z must be [{image1.shape[0]}, {self.num_latents}], got {tuple(z.shape)}.")
    allowed = structure_mask(dimensions, self.num_latents)  # validates before tracing further
    image1 = image1.astype(self.dtype)
    kernels = self.kernel_decoder(z, train)
    if layers is None:
      layers = self.image_encoder(image1, train)
    else:
      cells = self.image_size // self.layer_stride
      expected = (image1.shape[0], cells, cells, self.num_latents)
      if layers.shape != expected:
        raise UserError(f"layers must be {list(expected)} (batch, image_size / layer_stride "
                        f"twice, num_latents), got {list(layers.shape)}.")
      layers = layers.astype(self.dtype)
    moved = cross_convolution(layers, kernels, impl=self.depthwise_impl)
    moved = upsample_nearest(moved, self.image_size // layers.shape[1])
    motions = self.motion_decoder(moved, train)
    masks = part_masks(motions, self.mask_eps)
    if dimensions is None:
      flow = jnp.sum(motions, axis=1)
    else:
      weights = jnp.asarray(allowed) * jax.nn.sigmoid(self.structure)
      flow = jnp.sum(compose_structure(motions, masks, weights), axis=1)
    unet_in = jnp.concatenate([image1, jax.lax.stop_gradient(flow)], axis=-1)
    image = image1 + self.image_decoder(unet_in, train)
    return {"z": z, "kernels": kernels, "layers": layers, "motions": motions, "masks": masks,
            "flow": flow, "image": image}
