"""The networks each pipeline phase trains, built from a config: teacher, distillation student
(super-network or sub-network, with its 1x1 distillation convs) and discriminator."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import layers, resnet
from lite_jax.gan_compression.discriminators import PatchDiscriminator

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  if name not in DTYPES:
    raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}.")
  return DTYPES[name]


class DistillStudent(nn.Module):
  """A mobile ResNet generator plus the learnable 1x1 convs that map its 4 distillation taps
  to the teacher's trunk width (on the student side, as the reference does, issue #57).

  At `channels` = the super-network's widths this is the once-for-all super-network (call it
  with `active=`); at a searched config it is that sub-network, whose parameters are
  `layers.slice_params` of the super-network's (1x1 convs included: their input is sliced).
  """
  channels: tuple[int, ...]
  teacher_width: int
  n_blocks: int = 9
  output_nc: int = 3
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  depthwise_impl: str = "shifts"

  @nn.compact
  def __call__(self, x: jax.Array, active=None, *, train: bool = False):
    """`x: [batch, h, w, 3]` -> (`[batch, h, w, output_nc]`, 4 distillation maps
    `[batch, h/4, w/4, teacher_width]`)."""
    out, taps = resnet.ResnetGenerator(self.channels, separable=True, n_blocks=self.n_blocks,
                                       output_nc=self.output_nc,
                                       dropout_rate=self.dropout_rate, dtype=self.dtype,
                                       depthwise_impl=self.depthwise_impl,
                                       name="generator")(x, active, train=train,
                                                         return_features=True)
    mapped = [layers.Conv(self.teacher_width, 1, dtype=self.dtype, name=f"distill{i}")(t)
              for i, t in enumerate(taps)]
    return out, [m.astype(jnp.float32) for m in mapped]


def teacher_generator(config: ml_collections.ConfigDict) -> resnet.ResnetGenerator:
  """`teacher.kind`: `resnet` (the original generator) or `mobile_resnet` (the reference's
  GAN Compression pipeline distills from a mobile teacher)."""
  t = config.teacher
  if t.kind not in ("resnet", "mobile_resnet"):
    raise UserError(f"teacher.kind must be 'resnet' or 'mobile_resnet', got {t.kind!r}.")
  return resnet.ResnetGenerator((t.ngf,) * 8, separable=t.kind == "mobile_resnet",
                                n_blocks=t.n_blocks, dropout_rate=t.dropout_rate,
                                dtype=compute_dtype(config.dtype),
                                depthwise_impl=config.depthwise_impl)


def teacher_width(config: ml_collections.ConfigDict) -> int:
  """Channels of the teacher's distillation taps (its residual trunk)."""
  return 4 * config.teacher.ngf


def super_channels(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  return (config.student.ngf,) * 8


def student(config: ml_collections.ConfigDict,
            channels: Sequence[int] | None = None) -> DistillStudent:
  """The super-network (`channels=None`) or the sub-network at `channels`."""
  widest = super_channels(config)
  channels = widest if channels is None else resnet.check_subnet(channels, widest)
  return DistillStudent(tuple(channels), teacher_width(config),
                        n_blocks=config.teacher.n_blocks,
                        dropout_rate=config.student.dropout_rate,
                        dtype=compute_dtype(config.dtype), depthwise_impl=config.depthwise_impl)


def compact_generator(config: ml_collections.ConfigDict,
                      channels: Sequence[int] | None = None) -> resnet.ResnetGenerator:
  """The student's generator alone (what `export` writes) at `channels` (default: widest);
  its parameters are the student's `params["generator"]`."""
  widest = super_channels(config)
  channels = widest if channels is None else resnet.check_subnet(channels, widest)
  return resnet.ResnetGenerator(tuple(channels), separable=True,
                                n_blocks=config.teacher.n_blocks,
                                dropout_rate=config.student.dropout_rate,
                                dtype=compute_dtype(config.dtype),
                                depthwise_impl=config.depthwise_impl)


def search_space(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], ...]:
  """`student.search_space`: a reference space name, or explicit choices `"32,24|32,16|..."`."""
  name = config.student.search_space
  if "|" in name:
    space = tuple(layers.parse_channels(part, tuple(range(1, 65)), "search-space entry")
                  for part in name.split("|"))
    if len(space) != 8:
      raise UserError(f"an explicit search space needs 8 '|'-separated entries, got "
                      f"{len(space)}.")
  else:
    space = resnet.search_space(name)
  widest = super_channels(config)
  for i, choices in enumerate(space):
    if max(choices) > widest[i]:
      raise UserError(f"search space entry {i} offers {max(choices)} channels but the "
                      f"super-network (student.ngf={config.student.ngf}) has {widest[i]}.")
  return space


def discriminator(config: ml_collections.ConfigDict) -> PatchDiscriminator:
  d = config.discriminator
  return PatchDiscriminator(ndf=d.ndf, n_layers=d.n_layers, norm=d.norm,
                            dtype=compute_dtype(config.dtype))
