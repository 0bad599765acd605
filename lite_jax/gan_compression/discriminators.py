"""PatchGAN and multi-scale discriminators (NHWC), and the GAN losses the reference uses.

GauGAN's discriminators use `norm="spectral_instance"` (the reference's `spectralinstance`):
every normalized conv is spectrally normalized, loses its bias (instance norm cancels it) and
is followed by an affine-free instance norm; the first conv and the logits conv are plain.
Spectral norm is `layers.SpectralConv` (`torch.nn.utils.spectral_norm`); D advances its power
iteration on every call with `update_stats=True` (GauGAN's D never leaves training mode).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers

GAN_MODES = ("lsgan", "hinge", "vanilla")
NORMS = ("instance", "none", "spectral_instance")


SpectralConv = layers.SpectralConv  # GauGAN's D convs (no bias: instance norm follows)


class PatchDiscriminator(nn.Module):
  """The reference's `NLayerDiscriminator` (70x70 PatchGAN at `n_layers=3`).

  conv 4x4/2 + LeakyReLU(0.2), then `n_layers - 1` [conv 4x4/2, norm, LeakyReLU], one
  [conv 4x4/1, norm, LeakyReLU] and a conv 4x4/1 to one logit per patch; widths
  `ndf * min(2^n, 8)`; zero padding `padding` (1 in pix2pix/CycleGAN, 2 in GauGAN).

  Attributes:
    ndf: first layer's width (64 for CycleGAN, 128 for the reference's pix2pix).
    n_layers: down-sampling layers.
    norm: `instance` (affine-free, as the reference's `--norm instance`), `none`, or
      `spectral_instance` (GauGAN's `spectralinstance`: spectral norm, no bias, instance norm).
    padding: zero padding of every conv.
  """
  ndf: int = 64
  n_layers: int = 3
  norm: str = "instance"
  padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False
               ) -> tuple[jax.Array, list[jax.Array]]:
    """`x: [batch, h, w, c]` -> (logits `[batch, h', w', 1]` f32, intermediate features).

    `update_stats`: with spectral norm, advance its power iteration (`mutable=["spectral"]`).
    """
    if self.norm not in NORMS:
      raise UserError(f"discriminator norm must be one of {', '.join(NORMS)}, got "
                      f"{self.norm!r}.")
    side = min(x.shape[1:3])
    for stride in [2] * self.n_layers + [1, 1]:
      side = (side + 2 * self.padding - 4) // stride + 1
    if side < 1:
      raise UserError(f"images of {x.shape[1]}x{x.shape[2]} are too small for a "
                      f"{self.n_layers}-layer PatchGAN; lower discriminator.n_layers.")
    norm = (lambda h: h) if self.norm == "none" else layers.instance_norm
    conv = lambda f, s, name: layers.Conv(f, 4, strides=s, padding=self.padding,
                                          dtype=self.dtype, name=name)

    def normed_conv(h, features, stride, name):
      if self.norm == "spectral_instance":
        return SpectralConv(features, 4, stride, self.padding, dtype=self.dtype, name=name)(
            h, update_stats)
      return conv(features, stride, name)(h)

    h = nn.leaky_relu(conv(self.ndf, 2, "conv0")(x.astype(self.dtype)), 0.2)
    features = [h]
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      h = nn.leaky_relu(norm(normed_conv(h, self.ndf * min(2 ** n, 8), stride, f"conv{n}")), 0.2)
      features.append(h)
    logits = conv(1, 1, "logits")(h).astype(jnp.float32)
    return logits, features


class MultiscaleDiscriminator(nn.Module):
  """`num_d` PatchGANs on the input down-sampled by average pooling (3x3/2, pad 1, padding
  excluded from the average) between scales, as GauGAN's `MultiscaleDiscriminator`.

  GauGAN's `n_layers_D` counts the stride-1 conv, so its default 4 is `PatchDiscriminator`'s
  `n_layers=3` (three stride-2 convs) with padding 2.
  """
  num_d: int = 2
  ndf: int = 64
  n_layers: int = 4
  norm: str = "instance"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False
               ) -> list[tuple[jax.Array, list[jax.Array]]]:
    """`x: [batch, h, w, c]` -> one `(logits, features)` per scale, finest first."""
    outputs = []
    for i in range(self.num_d):
      outputs.append(PatchDiscriminator(self.ndf, self.n_layers - 1, self.norm, padding=2,
                                        dtype=self.dtype, name=f"scale{i}")(x, update_stats))
      x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                      count_include_pad=False)
    return outputs


def _as_list(logits: jax.Array | Sequence[jax.Array]) -> list[jax.Array]:
  return [logits] if isinstance(logits, jax.Array) else list(logits)


def discriminator_loss(mode: str, real_logits, fake_logits) -> jax.Array:
  """`0.5 * (loss(real) + loss(fake))`, averaged over the scales of a multi-scale D.

  Args:
    mode: `lsgan` (least squares on 1/0), `hinge` or `vanilla` (BCE with logits).
    real_logits, fake_logits: logits (or a list of them, one per scale).
  """
  total = 0.0
  reals, fakes = _as_list(real_logits), _as_list(fake_logits)
  for real, fake in zip(reals, fakes):
    if mode == "lsgan":
      total += jnp.mean(jnp.square(real - 1)) + jnp.mean(jnp.square(fake))
    elif mode == "hinge":
      total += jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake))
    elif mode == "vanilla":
      total += (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)).mean()
                + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)).mean())
    else:
      raise UserError(f"gan_mode must be one of {', '.join(GAN_MODES)}, got {mode!r}.")
  return 0.5 * total / len(reals)


def generator_gan_loss(mode: str, fake_logits) -> jax.Array:
  """The generator's adversarial loss on D's logits for its outputs (list for multi-scale)."""
  total = 0.0
  fakes = _as_list(fake_logits)
  for fake in fakes:
    if mode == "lsgan":
      total += jnp.mean(jnp.square(fake - 1))
    elif mode == "hinge":
      total += -jnp.mean(fake)
    elif mode == "vanilla":
      total += optax.sigmoid_binary_cross_entropy(fake, jnp.ones_like(fake)).mean()
    else:
      raise UserError(f"gan_mode must be one of {', '.join(GAN_MODES)}, got {mode!r}.")
  return total / len(fakes)
