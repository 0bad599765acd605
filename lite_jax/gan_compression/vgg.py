"""VGG19 features (torchvision layout) and GauGAN's VGG perceptual loss (NHWC).

What matches the reference (`models/modules/loss.py`: `VGG19`, `VGGLoss`): the five taps
relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of torchvision's `vgg19().features` (convs 3x3
with bias and padding 1, ReLU, max-pool 2x2/2), the loss `sum_i w_i * mean|phi_i(x) - phi_i(y)|`
with weights 1/32, 1/16, 1/8, 1/4, 1 and no gradient through the target's features. Inputs are
the generator's images in [-1, 1] fed to VGG as they are: the reference applies no ImageNet
mean/std normalization, and neither do we.

Weights are torchvision's `vgg19-dcbb9e9d.pth` (read without torch by `fid.read_state_dict`),
or an `.npz` with the same keys (`features.<i>.weight` OIHW, `features.<i>.bias`); only the 13
convs up to relu5_1 are read. Stage widths are taken from the file (64, 128, 256, 512, 512 for
the real network), so tests can use a narrow network with the same layout.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import fid

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WIDTHS = (64, 128, 256, 512, 512)  # torchvision's VGG19 stage widths
LOSS_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

# Convs of each stage up to relu5_1 (torchvision's VGG19 has 2, 2, 4, 4, 4); the tap is the
# ReLU after each stage's first conv.
_STAGE_CONVS = (2, 2, 4, 4, 1)


def conv_indices() -> list[list[int]]:
  """Indices in torchvision's `vgg19().features` of the convs of each stage (up to relu5_1)."""
  stages, index = [], 0
  for stage, count in enumerate(_STAGE_CONVS):
    index += stage > 0  # the max-pool before the stage
    stages.append([index + 2 * i for i in range(count)])  # conv, ReLU, conv, ReLU, ...
    index += 2 * count
  return stages


class VGG19(nn.Module):
  """`vgg19().features` up to relu5_1, returning the five taps.

  Attributes:
    widths: output channels of the five stages.
  """
  widths: Sequence[int] = WIDTHS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """`x: [batch, h, w, 3]` (h, w divisible by 16) -> `[batch, h / 2^i, w / 2^i, widths[i]]`
    for i = 0..4 (relu1_1 ... relu5_1), float32."""
    if x.ndim != 4 or x.shape[1] % 16 or x.shape[2] % 16:
      raise UserError(f"VGG inputs must be [batch, height, width, 3] with height and width "
                      f"divisible by 16, got shape {tuple(x.shape)}.")
    taps = []
    x = x.astype(self.dtype)
    for stage, (width, indices) in enumerate(zip(self.widths, conv_indices())):
      if stage:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i, index in enumerate(indices):
        x = nn.relu(nn.Conv(width, (3, 3), padding=1, dtype=self.dtype,
                            name=f"features_{index}")(x))
        if i == 0:
          taps.append(x.astype(jnp.float32))
    return taps


def network(params: Mapping[str, Any], dtype: Any = jnp.float32) -> VGG19:
  """The `VGG19` whose stage widths are those of `params`."""
  return VGG19(tuple(params[f"features_{indices[0]}"]["kernel"].shape[-1]
                     for indices in conv_indices()), dtype)


def vgg_loss(params: Mapping[str, Any], x: jax.Array, y: jax.Array,
             dtype: Any = jnp.float32) -> jax.Array:
  """The reference's `VGGLoss(x, y)`: `sum_i w_i * mean|phi_i(x) - phi_i(y)|`, y a fixed target.

  Args:
    params: VGG19 parameters (`load_vgg19`).
    x, y: `[batch, h, w, 3]` images in [-1, 1] (generated, real).
  """
  model = network(params, dtype)
  fx = model.apply({"params": params}, x)
  fy = jax.lax.stop_gradient(model.apply({"params": params}, y))
  return sum(w * jnp.mean(jnp.abs(a - b)) for w, a, b in zip(LOSS_WEIGHTS, fx, fy))


def params_from_state_dict(state_dict: Mapping[str, np.ndarray],
                           source: str = "the state dict") -> dict[str, Any]:
  """VGG19 params (at the file's widths, conv HWIO) from a torchvision VGG19 state dict."""
  params = {}
  in_channels = 3
  for indices in conv_indices():
    for index in indices:
      keys = (f"features.{index}.weight", f"features.{index}.bias")
      missing = [k for k in keys if k not in state_dict]
      if missing:
        raise UserError(f"{source} lacks the VGG19 weight {missing[0]!r}; expected torchvision's "
                        f"{WEIGHTS_FILE}.")
      weight, bias = (np.asarray(state_dict[k], np.float32) for k in keys)
      width = weight.shape[0]
      if weight.shape != (width, in_channels, 3, 3) or bias.shape != (width,):
        raise UserError(f"{source} has {keys[0]!r} of shape {weight.shape}, which does not fit "
                        f"VGG19 (expected [out, {in_channels}, 3, 3]); expected {WEIGHTS_FILE}.")
      params[f"features_{index}"] = {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}
      in_channels = width
  return params


def state_dict_from_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """VGG19 `params` -> torchvision state-dict keys and layouts (conv OIHW)."""
  state_dict = {}
  for name, leaves in params.items():
    index = name.split("_")[-1]
    state_dict[f"features.{index}.weight"] = np.asarray(leaves["kernel"]).transpose(3, 2, 0, 1)
    state_dict[f"features.{index}.bias"] = np.asarray(leaves["bias"])
  return state_dict


def load_vgg19(path: str | os.PathLike) -> dict[str, Any]:
  """VGG19 params from torchvision's `vgg19-dcbb9e9d.pth` or an `.npz` state dict."""
  if not os.path.isfile(path):
    raise UserError(f"VGG19 weights file {os.fspath(path)!r} does not exist; expected "
                    f"torchvision's {WEIGHTS_FILE}.")
  return params_from_state_dict(fid.read_state_dict(path), source=os.fspath(path))
