"""ResNet generators (CycleGAN / pix2pix), their mobile version and their super-network.

One module, `ResnetGenerator`, covers the reference's `ResnetGenerator` (conv blocks at
`channels = (ngf,) * 8`), `MobileResnetGenerator` / `SubMobileResnetGenerator` (separable
blocks at any channel config) and `SuperMobileResnetGenerator` (the same module at the
largest config, called with `active=` the sampled sub-network; see `layers` for why masking
equals slicing).

Channel config `(c0, ..., c7)` as the reference's config strings give it: widths c0 (first
conv), 2 c1 (down 1), 4 c2 (down 2 and the residual trunk), 4 c3 / 4 c4 / 4 c5 (the hidden
width of residual blocks in the first / second / third third), 2 c6 (up 1), c7 (up 2).
Legacy 6-entry configs `(c0, c1, c2, c3, c4, c5)` mean `(c0, c1, c2, c3, c3, c3, c4, c5)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers

# Width of each config entry, in units of its channel number (see the module docstring).
WIDTH_MULTIPLIERS = (1, 2, 4, 4, 4, 4, 2, 1)

# The reference's search spaces (`configs/resnet_configs.py`): choices per config entry.
SEARCH_SPACES = {
    "channels-48": ((48, 32), (48, 32), (48, 40, 32), (48, 40, 32), (48, 40, 32),
                    (48, 40, 32), (48, 32, 24, 16), (48, 32, 24, 16)),
    "channels-32": ((32, 24, 16),) * 8,
    "channels-64-cycleGAN": ((64, 48, 32, 24, 16),) * 8,
    "channels-64-pix2pix": ((64, 56, 48, 40, 32, 24, 16),) * 8,
}


def expand_legacy(channels: Sequence[int]) -> tuple[int, ...]:
  """A 6-entry (paper-era) config as the equivalent 8-entry one."""
  channels = tuple(int(c) for c in channels)
  if len(channels) == 6:
    c0, c1, c2, c3, c4, c5 = channels
    return (c0, c1, c2, c3, c3, c3, c4, c5)
  return channels


def block_group(index: int, n_blocks: int) -> int:
  """Which third (0, 1, 2) of the residual blocks block `index` is in (the reference's split)."""
  third = n_blocks // 3
  return min(index // third, 2) if third else 2


class ResnetBlock(nn.Module):
  """Residual block: [reflect-pad, conv 3x3, IN, ReLU, dropout, reflect-pad, conv 3x3, IN] + x.

  `separable` uses the mobile block (each conv a depthwise-separable conv). `hidden` is the
  first conv's output width; the second returns to the trunk width.
  """
  hidden: int
  separable: bool
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"

  @nn.compact
  def __call__(self, x: jax.Array, trunk_mask=None, hidden_mask=None, *, train: bool = False):
    """`x: [batch, h, w, trunk]` -> same shape."""
    dim = x.shape[-1]
    if self.separable:
      y = layers.SeparableConv(self.hidden, self.dtype, self.depthwise_impl, name="conv1")(
          layers.reflect_pad(x, 1), trunk_mask, hidden_mask)
    else:
      y = layers.Conv(self.hidden, 3, dtype=self.dtype, name="conv1")(
          layers.reflect_pad(x, 1), hidden_mask)
    y = nn.relu(layers.instance_norm(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    if self.separable:
      y = layers.SeparableConv(dim, self.dtype, self.depthwise_impl, name="conv2")(
          layers.reflect_pad(y, 1), hidden_mask, trunk_mask)
    else:
      y = layers.Conv(dim, 3, dtype=self.dtype, name="conv2")(layers.reflect_pad(y, 1),
                                                               trunk_mask)
    return x + layers.instance_norm(y)


class ResnetGenerator(nn.Module):
  """ResNet image-to-image generator (reference `resnet_9blocks`), optionally mobile / super.

  Attributes:
    channels: the 8-entry channel config (`(ngf,) * 8` is the reference ResNet at `ngf`).
    separable: depthwise-separable residual blocks (MobileResNet).
    n_blocks: residual blocks (9 in every reference setting).
    output_nc: output channels.
    dropout_rate: dropout inside the residual blocks (0 in the reference scripts).
    dtype: compute dtype; instance-norm statistics are always f32.
    depthwise_impl: how separable blocks run their depthwise convs (`layers.DepthwiseConv`).
  """
  channels: tuple[int, ...]
  separable: bool = False
  n_blocks: int = 9
  output_nc: int = 3
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"

  def widths(self) -> tuple[int, ...]:
    return tuple(m * c for m, c in zip(WIDTH_MULTIPLIERS, expand_legacy(self.channels)))

  @nn.compact
  def __call__(self, x: jax.Array, active: jax.Array | Sequence[int] | None = None, *,
               train: bool = False, return_features: bool = False):
    """Translates images.

    Args:
      x: `[batch, height, width, input_nc]` in [-1, 1] (clamped), height and width divisible
        by 4.
      active: for a super-network, the sub-network to run: an 8-entry config (`[8]` int
        array, may be traced) no wider than `channels`. None runs the whole network.
      train: enables dropout (needs a `dropout` rng).
      return_features: also return the distillation taps.

    Returns:
      `[batch, height, width, output_nc]` in [-1, 1]; with `return_features`, also the list of
      the 4 feature maps the reference distills (`model.9/.12/.15/.18`): after the second
      down-sampling and after each third of the residual blocks, `[batch, h/4, w/4, 4 c2]`.
    """
    if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
      raise UserError(f"generator input must be [batch, height, width, channels] with height "
                      f"and width divisible by 4, got shape {tuple(x.shape)}.")
    widths = self.widths()
    masks = [None] * 8
    if active is not None:
      active = jnp.asarray(active, jnp.int32)
      if active.shape != (8,):
        raise UserError(f"active sub-network config must have 8 entries, got {active.shape}.")
      masks = [layers.width_mask(active[i] * m, w, self.dtype)
               for i, (m, w) in enumerate(zip(WIDTH_MULTIPLIERS, widths))]
    x = jnp.clip(x, -1, 1).astype(self.dtype)
    conv = lambda features, k, name, **kw: layers.Conv(features, k, dtype=self.dtype, name=name,
                                                       **kw)
    h = nn.relu(layers.instance_norm(conv(widths[0], 7, "stem")(layers.reflect_pad(x, 3),
                                                                   masks[0])))
    h = nn.relu(layers.instance_norm(conv(widths[1], 3, "down1", strides=2, padding=1)(
        h, masks[1])))
    h = nn.relu(layers.instance_norm(conv(widths[2], 3, "down2", strides=2, padding=1)(
        h, masks[2])))
    features = [h]
    third = self.n_blocks // 3
    taps = {third, 2 * third, self.n_blocks}
    for i in range(self.n_blocks):
      group = 3 + block_group(i, self.n_blocks)
      h = ResnetBlock(widths[group], self.separable, self.dropout_rate, self.dtype,
                      self.depthwise_impl, name=f"block{i}")(h, masks[2], masks[group],
                                                             train=train)
      if i + 1 in taps:
        features.append(h)
    h = nn.relu(layers.instance_norm(layers.UpConv(widths[6], self.dtype, name="up1")(
        h, masks[6])))
    h = nn.relu(layers.instance_norm(layers.UpConv(widths[7], self.dtype, name="up2")(
        h, masks[7])))
    out = jnp.tanh(conv(self.output_nc, 7, "head")(layers.reflect_pad(h, 3))).astype(jnp.float32)
    return (out, features) if return_features else out


def resnet_generator(ngf: int = 64, **kwargs) -> ResnetGenerator:
  """The reference's `ResnetGenerator` (`resnet_9blocks`) at width `ngf`."""
  return ResnetGenerator((ngf,) * 8, separable=False, **kwargs)


def mobile_resnet_generator(channels: int | str | Sequence[int], **kwargs) -> ResnetGenerator:
  """`MobileResnetGenerator(ngf)` for an int, else the sub-network at a channel config."""
  if isinstance(channels, int):
    channels = (channels,) * 8
  return ResnetGenerator(parse_config(channels), separable=True, **kwargs)


def parse_config(channels: str | Sequence[int]) -> tuple[int, ...]:
  """A ResNet channel config (`"16_16_32_16_32_32_16_16"`, or legacy 6 entries) as 8 ints."""
  return expand_legacy(layers.parse_channels(channels, (8, 6), "ResNet channel config"))


# ---------------------------------------------------------------------------------------------
# Search spaces and sub-network MACs.
# ---------------------------------------------------------------------------------------------


def check_subnet(channels: str | Sequence[int], super_channels: Sequence[int]
                 ) -> tuple[int, ...]:
  """Validates a sub-network config against a super-network's; returns the 8-entry config."""
  return layers.check_subnet(parse_config(channels), super_channels)


def search_space(name: str) -> tuple[tuple[int, ...], ...]:
  return layers.named_search_space(SEARCH_SPACES, name, "ResNet")


def generator_macs(channels: Sequence[int], height: int, width: int, *, separable: bool = True,
                   n_blocks: int = 9, input_nc: int = 3, output_nc: int = 3) -> int:
  """MACs of `ResnetGenerator` at `channels` on one `height x width` image, in closed form.

  The reference's counter (`layers.GAN_COMPRESSION`): convs by `out_elements * in/groups *
  k^2` (transposed convs at their output resolution), instance norm one per element. Search
  profiles thousands of configs, so this formula replaces tracing; the tests check it equals
  `count_macs` of the traced generator.
  """
  c = [m * v for m, v in zip(WIDTH_MULTIPLIERS, expand_legacy(channels))]
  full, half, quarter = height * width, height * width // 4, height * width // 16
  total = full * c[0] * (input_nc * 49 + 1) + half * c[1] * (c[0] * 9 + 1)
  total += quarter * c[2] * (c[1] * 9 + 1)
  for i in range(n_blocks):
    hidden, trunk = c[3 + block_group(i, n_blocks)], c[2]
    if separable:  # depthwise 9 + IN 1 + pointwise, twice; then the block's IN.
      total += quarter * (trunk * 10 + hidden * trunk + hidden)
      total += quarter * (hidden * 10 + trunk * hidden + trunk)
    else:
      total += quarter * (hidden * (trunk * 9 + 1) + trunk * (hidden * 9 + 1))
  total += half * c[6] * (c[2] * 9 + 1) + full * c[7] * (c[6] * 9 + 1)
  return int(total + full * output_nc * c[7] * 49)


def generator_params(channels: Sequence[int], *, separable: bool = True, n_blocks: int = 9,
                     input_nc: int = 3, output_nc: int = 3) -> int:
  """Parameters of `ResnetGenerator` at `channels`, in closed form (checked by the tests)."""
  c = [m * v for m, v in zip(WIDTH_MULTIPLIERS, expand_legacy(channels))]
  conv = lambda i, o, k: i * o * k * k + o
  total = conv(input_nc, c[0], 7) + conv(c[0], c[1], 3) + conv(c[1], c[2], 3)
  for i in range(n_blocks):
    hidden, trunk = c[3 + block_group(i, n_blocks)], c[2]
    if separable:
      total += trunk * 10 + conv(trunk, hidden, 1) + hidden * 10 + conv(hidden, trunk, 1)
    else:
      total += conv(trunk, hidden, 3) + conv(hidden, trunk, 3)
  total += conv(c[2], c[6], 3) + conv(c[6], c[7], 3) + conv(c[7], output_nc, 7)
  return int(total)


def sample_configs(space: Sequence[Sequence[int]], key: jax.Array) -> jax.Array:
  """A jittable uniform sample of any search space: `[len(space)]` int32 config."""
  keys = jax.random.split(key, len(space))
  return jnp.stack([jnp.asarray(choices, jnp.int32)[jax.random.randint(k, (), 0, len(choices))]
                    for k, choices in zip(keys, space)])
