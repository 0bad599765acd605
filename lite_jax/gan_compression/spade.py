"""GauGAN (SPADE) generators, their mobile version and their super-network (NHWC throughout).

One module, `SpadeGenerator`, covers the reference's `SPADEGenerator` (`channels = (ngf,) *
8`, full 3x3 gamma/beta heads), `MobileSPADEGenerator` / `SubMobileSPADEGenerator`
(depthwise-separable gamma/beta heads, any channel config) and `SuperMobileSPADEGenerator`
(the same module at the largest config, called with `active=` the sampled sub-network; see
`layers` for why masking equals slicing).

Architecture (`models/modules/spade_architecture/`): the label map, nearest-downsampled to the
bottom resolution, goes through `fc` (conv 3x3), then the residual blocks `head_0`,
`G_middle_0`, `G_middle_1`, `up_0` ... `up_3` (`up_4` with `most`) with nearest x2
upsampling before every block after `head_0` (none before `G_middle_1` with `normal`), then
leaky ReLU, `conv_img` (conv 3x3 -> 3) and tanh. A block is 2x [SPADE -> leaky ReLU 0.2 ->
conv 3x3] plus a shortcut, learned (SPADE -> 1x1 conv without bias) in the up blocks. SPADE
is a parameter-free batch norm followed by `x_hat * (1 + gamma) + beta`, with gamma and beta
predicted from the label map (resized to `x`) by a shared conv 3x3 + ReLU and two heads.

Channel config `(c0, ..., c7)` = `[fc, head_0, G_middle_0, G_middle_1, up_0 ... up_3]`, as the
reference's `SubMobileSPADEGenerator` reads it: the trunk (`fc` and the output of `head_0`,
`G_middle_0/1`) is 16 c0 wide; the inner conv of `head_0` / `G_middle_0` / `G_middle_1` is
16 c1 / 16 c2 / 16 c3; `up_0` ... `up_3` output 8 c4, 4 c5, 2 c6, c7; every SPADE inside the
block of entry i has hidden width 2 ci. `most` adds `up_4` with output c7 // 2 and hidden 2 c7
(the reference's super-network does not support `most`; this is the natural extension).

Spectral norm (`spectral=True`) sits on the residual blocks' convs (conv_0, conv_1, conv_s), as
the reference's `norm_G=spectralspadesyncbatch3x3` puts it; the teacher trains with it and
`layers.remove_spectral_norm` folds it into the weights before distillation. Compressed
generators never have it.

Differences from the reference, on purpose:
- No VAE encoder (`use_vae` is false in every GauGAN compression setting).
- Batch norm is `flax.linen.BatchNorm`: batch statistics when `train=True` (then
  `mutable=["batch_stats"]`), running averages otherwise, PyTorch momentum 0.1 (flax 0.9),
  eps 1e-5. Flax stores the biased batch variance in the running average where PyTorch stores
  the unbiased one (a factor n / (n - 1) with n = batch * height * width values per channel,
  0.2% for 16 images at the 8x4 bottom of cityscapes). Synchronised batch norm needs nothing:
  under `jit` with the batch sharded on `data`, the batch statistics are global.

Batch norm in the super-network: statistics are per channel, so the masked (all-zero)
channels never touch the active ones; the normalised output is masked again because running
statistics of an inactive channel (left there by wider sub-networks) would otherwise turn its
zeros into nonzero values. As in the reference, the running statistics of a super-network are
re-calibrated for each sub-network before it is evaluated (`calibrate`).

MACs follow the reference's counter (`layers.GAN_COMPRESSION`): convs, the separable heads'
instance norms and SPADE's `x_hat * (1 + gamma)` count; batch norm, resizing, activations and
additions are free.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lite_jax.core import compiler, macs
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers

# `num_upsampling_layers` -> the number of x2 steps between the bottom map and the output.
UPSAMPLING_STEPS = {"normal": 5, "more": 6, "most": 7}

BLOCK_NAMES = ("head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3")

# Width of each config entry's layer (trunk, inner convs, up outputs) in units of the entry.
WIDTH_MULTIPLIERS = (16, 16, 16, 16, 8, 4, 2, 1)

# SPADE's hidden width (`nhidden`) in units of its block's config entry.
HIDDEN_MULTIPLIER = 2

# The block outputs the reference distils (`mapping_layers` of its SPADE distillers).
DISTILL_LAYERS = ("head_0", "G_middle_1", "up_1")

# The reference's search spaces (`configs/spade_configs.py`): choices per config entry.
SEARCH_SPACES = {
    "channels-48": ((48, 40, 32),) * 5 + ((48, 40, 32, 24),) * 3,
    "channels-64": ((64, 48, 40, 32),) * 5 + ((64, 48, 40, 32, 24),) * 3,
    "channels-64-coco": ((64, 48, 40, 32, 24),) * 8,
}

# Datasets as the reference profiles them: (height, width, semantic_nc, num_upsampling_layers).
# semantic_nc = labels (+ dontcare) + instance edge map.
CITYSCAPES = (256, 512, 35 + 1, "more")
COCO_STUFF = (256, 256, 182 + 1 + 1, "normal")


def upsample_nearest(x: jax.Array) -> jax.Array:
  """`nn.Upsample(scale_factor=2)`: `[batch, h, w, c]` -> `[batch, 2h, 2w, c]`."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
  """`F.interpolate(x, size=(height, width))` (nearest) for integer factors: every f-th pixel."""
  return x[:, ::x.shape[1] // height, ::x.shape[2] // width]


def zero_pad(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


class Spade(nn.Module):
  """SPADE: parameter-free batch norm, then `x_hat * (1 + gamma(seg)) + beta(seg)`.

  Attributes:
    hidden: width of the shared conv on the label map (`nhidden`).
    separable: depthwise-separable gamma/beta heads (`MobileSPADE`: depthwise 3x3 -> instance
      norm -> 1x1), else full 3x3 convs.
    bn_momentum: flax momentum of the running statistics (PyTorch's 1 - momentum).
  """
  hidden: int
  separable: bool
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"

  @nn.compact
  def __call__(self, x: jax.Array, seg: jax.Array, x_mask=None, hidden_mask=None, *,
               train: bool = False) -> jax.Array:
    """`x: [batch, h, w, width]`, `seg: [batch, h, w, semantic_nc]` -> `[batch, h, w, width]`."""
    width = x.shape[-1]
    normalized = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                              epsilon=1e-5, use_scale=False, use_bias=False,
                              use_fast_variance=False, dtype=self.dtype,
                              name="param_free_norm")(x)
    normalized = layers.apply_mask(normalized, x_mask)
    actv = nn.relu(layers.Conv(self.hidden, 3, padding=1, dtype=self.dtype,
                               name="mlp_shared")(seg, hidden_mask))
    if self.separable:
      head = lambda name: layers.SeparableConv(width, self.dtype, self.depthwise_impl,
                                               name=name)(zero_pad(actv, 1), hidden_mask, x_mask)
    else:
      head = lambda name: layers.Conv(width, 3, padding=1, dtype=self.dtype, name=name)(
          actv, x_mask)
    return layers.modulate(normalized, head("mlp_gamma"), head("mlp_beta"))


class SpadeResnetBlock(nn.Module):
  """`SPADEResnetBlock`: 2x [SPADE -> leaky ReLU 0.2 -> conv 3x3] + shortcut.

  Attributes:
    inner: output width of the first conv.
    hidden: SPADE hidden width.
    features: output width of an up block, whose shortcut is learned (SPADE -> 1x1 conv
      without bias); None keeps the input width with an identity shortcut.
    spectral: spectral norm on conv_0, conv_1 and conv_s (the reference's `spectral...`
      `norm_G`), one power iteration per training call.
  """
  inner: int
  hidden: int
  features: int | None = None
  separable: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"
  spectral: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, seg: jax.Array, in_mask=None, inner_mask=None,
               hidden_mask=None, *, train: bool = False) -> jax.Array:
    """`x: [batch, h, w, in]`, `seg: [batch, h, w, semantic_nc]` -> `[batch, h, w, out]`."""
    out_width = x.shape[-1] if self.features is None else self.features
    out_mask = in_mask if self.features is None else inner_mask
    spade = lambda name: Spade(self.hidden, self.separable, self.bn_momentum, self.dtype,
                               self.depthwise_impl, name=name)
    conv = lambda features, name, k=3, **kw: layers.Conv(
        features, k, padding=k // 2, dtype=self.dtype, spectral=self.spectral, name=name, **kw)
    dx = spade("norm_0")(x, seg, in_mask, hidden_mask, train=train)
    dx = conv(self.inner, "conv_0")(nn.leaky_relu(dx, 0.2), inner_mask, update_stats=train)
    dx = spade("norm_1")(dx, seg, inner_mask, hidden_mask, train=train)
    dx = conv(out_width, "conv_1")(nn.leaky_relu(dx, 0.2), out_mask, update_stats=train)
    if self.features is None:
      return x + dx
    shortcut = spade("norm_s")(x, seg, in_mask, hidden_mask, train=train)
    shortcut = conv(self.features, "conv_s", 1, use_bias=False)(shortcut, out_mask,
                                                                update_stats=train)
    return shortcut + dx


class SpadeGenerator(nn.Module):
  """GauGAN generator (reference `SPADEGenerator`, no VAE), optionally mobile / super.

  Attributes:
    channels: the 8-entry channel config (`(ngf,) * 8` is the reference generator at `ngf`).
    separable: depthwise-separable SPADE gamma/beta heads (the mobile generator).
    num_upsampling_layers: `normal` (COCO-Stuff), `more` (cityscapes) or `most`.
    output_nc: output channels.
    bn_momentum: flax momentum of the batch-norm running statistics (0.9 = PyTorch's 0.1;
      `calibrate` uses 0).
    dtype: compute dtype; batch-norm statistics are always f32.
    depthwise_impl: how the mobile heads run their depthwise convs (`layers.DepthwiseConv`).
    spectral: spectral norm in the residual blocks' convs, as the reference trains its teacher
      (`train=True` calls need `mutable=["batch_stats", "spectral"]`);
      `layers.remove_spectral_norm` turns the variables into those of `spectral=False`.
  """
  channels: tuple[int, ...]
  separable: bool = False
  num_upsampling_layers: str = "more"
  output_nc: int = 3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"
  spectral: bool = False

  def widths(self) -> tuple[int, ...]:
    return tuple(m * c for m, c in zip(WIDTH_MULTIPLIERS, self.channels))

  @nn.compact
  def __call__(self, seg: jax.Array, active: jax.Array | Sequence[int] | None = None, *,
               train: bool = False, return_features: bool = False):
    """Synthesises images from label maps.

    Args:
      seg: `[batch, height, width, semantic_nc]` one-hot labels (+ instance edge map), height
        and width divisible by 2^5 (`normal`), 2^6 (`more`) or 2^7 (`most`).
      active: for a super-network, the sub-network to run: an 8-entry config (`[8]` int
        array, may be traced) no wider than `channels`. None runs the whole network.
      train: batch statistics in batch norm (call with `mutable=["batch_stats"]`); else the
        running averages.
      return_features: also return the block outputs.

    Returns:
      `[batch, height, width, output_nc]` in [-1, 1]; with `return_features`, also a dict
      from `fc` and the block names (`BLOCK_NAMES`, `up_4` with `most`) to their outputs,
      e.g. `head_0: [batch, height / 2^n, width / 2^n, 16 c0]` for n upsampling steps.
    """
    if len(self.channels) != 8:
      raise UserError(f"SPADE channel config must have 8 entries, got {self.channels}.")
    if self.num_upsampling_layers not in UPSAMPLING_STEPS:
      raise UserError(f"num_upsampling_layers must be one of {', '.join(UPSAMPLING_STEPS)}, "
                      f"got {self.num_upsampling_layers!r}.")
    steps = UPSAMPLING_STEPS[self.num_upsampling_layers]
    if seg.ndim != 4 or seg.shape[1] % 2**steps or seg.shape[2] % 2**steps:
      raise UserError(f"label map must be [batch, height, width, semantic_nc] with height and "
                      f"width divisible by {2**steps} ({self.num_upsampling_layers!r} "
                      f"upsampling), got shape {tuple(seg.shape)}.")
    widths = self.widths()
    hidden = [HIDDEN_MULTIPLIER * c for c in self.channels]
    width_masks, hidden_masks = [None] * 8, [None] * 8
    if active is not None:
      if not isinstance(active, jax.core.Tracer):
        check_subnet(np.asarray(active).reshape(-1).tolist(), self.channels)
      active = jnp.asarray(active, jnp.int32)
      if active.shape != (8,):
        raise UserError(f"active sub-network config must have 8 entries, got shape "
                        f"{active.shape}.")
      width_masks = [layers.width_mask(active[i] * m, w, self.dtype)
                     for i, (m, w) in enumerate(zip(WIDTH_MULTIPLIERS, widths))]
      hidden_masks = [layers.width_mask(active[i] * HIDDEN_MULTIPLIER, h, self.dtype)
                      for i, h in enumerate(hidden)]
    seg = seg.astype(self.dtype)
    block = lambda i, **kw: SpadeResnetBlock(
        hidden=hidden[i], separable=self.separable, bn_momentum=self.bn_momentum,
        dtype=self.dtype, depthwise_impl=self.depthwise_impl, spectral=self.spectral,
        name=BLOCK_NAMES[i - 1], **kw)
    at = lambda x: downsample_nearest(seg, x.shape[1], x.shape[2])

    x = downsample_nearest(seg, seg.shape[1] // 2**steps, seg.shape[2] // 2**steps)
    x = layers.Conv(widths[0], 3, padding=1, dtype=self.dtype, name="fc")(x, width_masks[0])
    features = {"fc": x}
    trunk_mask = width_masks[0]
    for i in (1, 2, 3):
      if i == 2 or (i == 3 and steps > 5):
        x = upsample_nearest(x)
      x = block(i, inner=widths[i])(x, at(x), trunk_mask, width_masks[i], hidden_masks[i],
                                    train=train)
      features[BLOCK_NAMES[i - 1]] = x
    in_mask = trunk_mask
    for i in (4, 5, 6, 7):
      x = upsample_nearest(x)
      x = block(i, inner=widths[i], features=widths[i])(
          x, at(x), in_mask, width_masks[i], hidden_masks[i], train=train)
      features[BLOCK_NAMES[i - 1]] = x
      in_mask = width_masks[i]
    if steps == 7:
      last_mask = None if active is None else layers.width_mask(
          active[7] // 2, widths[7] // 2, self.dtype)
      x = upsample_nearest(x)
      x = SpadeResnetBlock(widths[7] // 2, hidden[7], widths[7] // 2, self.separable,
                           self.bn_momentum, self.dtype, self.depthwise_impl, self.spectral,
                           name="up_4")(
          x, at(x), in_mask, last_mask, hidden_masks[7], train=train)
      features["up_4"] = x
    out = layers.Conv(self.output_nc, 3, padding=1, dtype=self.dtype, name="conv_img")(
        nn.leaky_relu(x, 0.2))
    out = jnp.tanh(out).astype(jnp.float32)
    return (out, features) if return_features else out


def spade_generator(ngf: int = 64, **kwargs) -> SpadeGenerator:
  """The reference's `SPADEGenerator` (the GauGAN teacher) at width `ngf`."""
  return SpadeGenerator((ngf,) * 8, separable=False, **kwargs)


def mobile_spade_generator(channels: int | str | Sequence[int], **kwargs) -> SpadeGenerator:
  """`MobileSPADEGenerator(ngf)` for an int (also the super-network), else the sub-network."""
  if isinstance(channels, int):
    channels = (channels,) * 8
  return SpadeGenerator(parse_config(channels), separable=True, **kwargs)


def parse_config(channels: str | Sequence[int]) -> tuple[int, ...]:
  """A SPADE channel config (`"32_40_40_32_40_24_32_24"` or a sequence) as 8 ints."""
  return layers.parse_channels(channels, (8,), "SPADE channel config")


# ---------------------------------------------------------------------------------------------
# Batch-norm re-calibration.
# ---------------------------------------------------------------------------------------------


def calibrate(model: SpadeGenerator, variables: Any, label_batches: Iterable[jax.Array],
              active: jax.Array | Sequence[int] | None = None) -> Any:
  """Re-computes the batch-norm running statistics for one (sub-)network, like the reference.

  The reference's `calibrate` runs the training set through the generator in training mode
  with batch-norm momentum 1 and never switches it off, so every batch overwrites the running
  statistics and the **last** batch's statistics win. Batch statistics depend only on the
  batch itself, so running only the last batch gives the same result; this reads the whole
  iterable (as the reference does) and runs the last batch.

  Args:
    model: the generator (a super-network when `active` is given).
    variables: `{"params": ..., "batch_stats": ...}` of `model`.
    label_batches: iterable of label maps `[batch, height, width, semantic_nc]`.
    active: the sub-network to calibrate, as for `SpadeGenerator.__call__`.

  Returns:
    `variables` with `batch_stats` replaced by the last batch's means and (biased) variances.
  """
  last = None
  for last in label_batches:
    pass
  if last is None:
    raise UserError("calibrate needs at least one label batch.")
  return _with_batch_statistics(model.clone(bn_momentum=0.0), variables, last,
                                None if active is None else jnp.asarray(active, jnp.int32))


@functools.partial(compiler.jit, static_argnums=0)
def _with_batch_statistics(model: SpadeGenerator, variables: Any, labels: jax.Array,
                           active: jax.Array | None) -> Any:
  _, updates = model.apply(variables, labels, active, train=True, mutable=["batch_stats"])
  return {**variables, "batch_stats": updates["batch_stats"]}


# ---------------------------------------------------------------------------------------------
# Search spaces, profiling and sub-network MACs.
# ---------------------------------------------------------------------------------------------


def check_subnet(channels: str | Sequence[int], super_channels: Sequence[int]
                 ) -> tuple[int, ...]:
  """Validates a sub-network config against a super-network's; returns the 8-entry config."""
  return layers.check_subnet(parse_config(channels), super_channels)


def search_space(name: str) -> tuple[tuple[int, ...], ...]:
  return layers.named_search_space(SEARCH_SPACES, name, "SPADE")


def profile(model: SpadeGenerator, height: int, width: int, semantic_nc: int
            ) -> tuple[int, int]:
  """(MACs, parameters) of `model` on one `height x width` label map, by tracing.

  The reference's protocol (`TestModel.profile`): one image, `layers.GAN_COMPRESSION` rules.
  Nothing is computed: parameters are `jax.eval_shape`d and the counter walks the jaxpr.
  """
  seg = jax.ShapeDtypeStruct((1, height, width, semantic_nc), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), seg)
  count = macs.count_macs(lambda v, s: model.apply(v, s), variables, seg,
                          convention=layers.GAN_COMPRESSION)
  return count, macs.count_params(variables["params"])


def _blocks(channels: Sequence[int], num_upsampling_layers: str):
  """(input width, inner width, output width or None, hidden width, x2 steps from the bottom)
  of every residual block, as `SpadeGenerator` builds them."""
  c = [m * v for m, v in zip(WIDTH_MULTIPLIERS, channels)]
  hidden = [HIDDEN_MULTIPLIER * v for v in channels]
  steps = UPSAMPLING_STEPS[num_upsampling_layers]
  level = 1 if steps == 5 else 2  # Resolution of G_middle_1.
  blocks = [(c[0], c[1], None, hidden[1], 0), (c[0], c[2], None, hidden[2], 1),
            (c[0], c[3], None, hidden[3], level)]
  width = c[0]
  for i in (4, 5, 6, 7):
    level += 1
    blocks.append((width, c[i], c[i], hidden[i], level))
    width = c[i]
  if steps == 7:
    blocks.append((width, width // 2, width // 2, hidden[7], level + 1))
  return blocks


def _spade_cost(width: int, hidden: int, semantic_nc: int, separable: bool
                ) -> tuple[int, int]:
  """(MACs per pixel, parameters) of one SPADE."""
  pixel_macs = hidden * semantic_nc * 9 + width  # Shared conv, modulation multiply.
  params = hidden * semantic_nc * 9 + hidden
  if separable:  # Depthwise 9 + instance norm 1 + pointwise, for gamma and for beta.
    pixel_macs += 2 * (hidden * 10 + hidden * width)
    params += 2 * (hidden * 10 + hidden * width + width)
  else:
    pixel_macs += 2 * hidden * width * 9
    params += 2 * (hidden * width * 9 + width)
  return pixel_macs, params


def _generator_cost(channels: Sequence[int], height: int, width: int, semantic_nc: int,
                    separable: bool, num_upsampling_layers: str, output_nc: int
                    ) -> tuple[int, int]:
  channels = parse_config(channels)
  if num_upsampling_layers not in UPSAMPLING_STEPS:
    raise UserError(f"num_upsampling_layers must be one of {', '.join(UPSAMPLING_STEPS)}, "
                    f"got {num_upsampling_layers!r}.")
  steps = UPSAMPLING_STEPS[num_upsampling_layers]
  if height % 2**steps or width % 2**steps:
    raise UserError(f"height and width must be divisible by {2**steps} "
                    f"({num_upsampling_layers!r} upsampling), got {height}x{width}.")
  bottom = (height >> steps) * (width >> steps)
  trunk = WIDTH_MULTIPLIERS[0] * channels[0]
  total_macs = bottom * trunk * semantic_nc * 9
  total_params = trunk * semantic_nc * 9 + trunk
  for width_in, inner, out, hidden, level in _blocks(channels, num_upsampling_layers):
    pixels = bottom * 4**level
    out_width = width_in if out is None else out
    spades = [width_in, inner] + ([] if out is None else [width_in])
    for spade_width in spades:
      spade_macs, spade_params = _spade_cost(spade_width, hidden, semantic_nc, separable)
      total_macs += pixels * spade_macs
      total_params += spade_params
    total_macs += pixels * 9 * (inner * width_in + out_width * inner)
    total_params += 9 * (inner * width_in + out_width * inner) + inner + out_width
    if out is not None:  # The learned shortcut's 1x1 conv, no bias.
      total_macs += pixels * out * width_in
      total_params += out * width_in
  total_macs += height * width * output_nc * out_width * 9
  total_params += output_nc * out_width * 9 + output_nc
  return int(total_macs), int(total_params)


def generator_macs(channels: str | Sequence[int], height: int, width: int, semantic_nc: int,
                   *, separable: bool = True, num_upsampling_layers: str = "more",
                   output_nc: int = 3) -> int:
  """MACs of `SpadeGenerator` at `channels` on one `height x width` label map, in closed form.

  The reference's counter (`layers.GAN_COMPRESSION`): convs by `out_elements * in/groups *
  k^2`, instance norm and the modulation multiply one per element, batch norm free. Search
  profiles thousands of configs, so this formula replaces tracing; the tests check it equals
  `profile` (the traced count).
  """
  return _generator_cost(channels, height, width, semantic_nc, separable,
                         num_upsampling_layers, output_nc)[0]


def generator_params(channels: str | Sequence[int], semantic_nc: int, *,
                     separable: bool = True, num_upsampling_layers: str = "more",
                     output_nc: int = 3) -> int:
  """Parameters of `SpadeGenerator` at `channels`, in closed form (checked by the tests)."""
  size = 2 ** max(UPSAMPLING_STEPS.values())  # Parameters do not depend on the resolution.
  return _generator_cost(channels, size, size, semantic_nc, separable, num_upsampling_layers,
                         output_nc)[1]
