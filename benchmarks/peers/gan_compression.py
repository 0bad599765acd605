"""PyTorch peer of `lite_jax.gan_compression.resnet.ResnetGenerator` (teacher and mobile).

The CycleGAN / GAN Compression ResNet generator as PyTorch users write it (NCHW): reflection
pad + 7x7 conv stem, two stride-2 convs, 9 residual blocks (plain 3x3 convs, or the mobile
depthwise-separable ones: depthwise 3x3 with bias -> instance norm -> 1x1), two transposed convs
(k 3, stride 2, padding 1, output padding 1), reflection pad + 7x7 conv + tanh; affine-free
instance norm (eps 1e-5) after every conv. Widths come from the same 8-entry channel config.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from benchmarks import peers
from lite_jax.gan_compression import resnet

_WIDTH_MULTIPLIERS = resnet.WIDTH_MULTIPLIERS


def _norm_relu(channels: int) -> list[nn.Module]:
  return [nn.InstanceNorm2d(channels, eps=1e-5), nn.ReLU()]


class SeparableConv(nn.Module):
  """Depthwise 3x3 (bias) -> instance norm -> 1x1: `[b, in, h, w]` -> `[b, out, h-2, w-2]`."""

  def __init__(self, in_channels: int, out_channels: int):
    super().__init__()
    self.depthwise = nn.Conv2d(in_channels, in_channels, 3, groups=in_channels)
    self.norm = nn.InstanceNorm2d(in_channels, eps=1e-5)
    self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

  def forward(self, x):
    return self.pointwise(self.norm(self.depthwise(x)))


class ResnetBlock(nn.Module):
  """`x + IN(conv(pad(relu(IN(conv(pad(x)))))))`, convs 3x3 or separable: `[b, trunk, h, w]`."""

  def __init__(self, trunk: int, hidden: int, separable: bool):
    super().__init__()
    conv = SeparableConv if separable else (lambda i, o: nn.Conv2d(i, o, 3))
    self.conv1 = conv(trunk, hidden)
    self.conv2 = conv(hidden, trunk)
    self.body = nn.Sequential(nn.ReflectionPad2d(1), self.conv1, *_norm_relu(hidden),
                              nn.ReflectionPad2d(1), self.conv2,
                              nn.InstanceNorm2d(trunk, eps=1e-5))

  def forward(self, x):
    return x + self.body(x)


class ResnetGenerator(nn.Module):
  """`ResnetGenerator(channels, separable)`: `[b, 3, h, w]` in [-1, 1] -> `[b, 3, h, w]`."""

  def __init__(self, channels: Sequence[int], separable: bool, n_blocks: int = 9,
               input_nc: int = 3, output_nc: int = 3):
    super().__init__()
    c = [m * v for m, v in zip(_WIDTH_MULTIPLIERS, resnet.expand_legacy(channels))]
    self.stem = nn.Conv2d(input_nc, c[0], 7)
    self.down1 = nn.Conv2d(c[0], c[1], 3, stride=2, padding=1)
    self.down2 = nn.Conv2d(c[1], c[2], 3, stride=2, padding=1)
    self.blocks = nn.ModuleList(
        ResnetBlock(c[2], c[3 + resnet.block_group(i, n_blocks)], separable)
        for i in range(n_blocks))
    self.up1 = nn.ConvTranspose2d(c[2], c[6], 3, stride=2, padding=1, output_padding=1)
    self.up2 = nn.ConvTranspose2d(c[6], c[7], 3, stride=2, padding=1, output_padding=1)
    self.head = nn.Conv2d(c[7], output_nc, 7)
    self.model = nn.Sequential(
        nn.ReflectionPad2d(3), self.stem, *_norm_relu(c[0]), self.down1, *_norm_relu(c[1]),
        self.down2, *_norm_relu(c[2]), *self.blocks, self.up1, *_norm_relu(c[6]), self.up2,
        *_norm_relu(c[7]), nn.ReflectionPad2d(3), self.head, nn.Tanh())

  def forward(self, x):
    return self.model(x.clamp(-1, 1))


def from_jax(module: resnet.ResnetGenerator) -> ResnetGenerator:
  """The peer of a JAX generator, with fresh (PyTorch-initialised) weights."""
  return ResnetGenerator(module.channels, module.separable, module.n_blocks, 3,
                         module.output_nc)


def _conv(layer: nn.Module, params: Any) -> None:
  """Flax `[kh, kw, in, out]` (depthwise: `[kh, kw, 1, c]`) -> torch `[out, in, kh, kw]`; the
  same transpose maps `TransposedConv`'s `[kh, kw, out, in]` to `ConvTranspose2d`'s
  `[in, out, kh, kw]` (no spatial flip: both use `transpose_kernel` semantics)."""
  layer.weight.copy_(peers.host(np.asarray(params["kernel"]).transpose(3, 2, 0, 1)))
  layer.bias.copy_(peers.host(params["bias"]))


@torch.no_grad()
def load_params(peer: ResnetGenerator, params: Any) -> ResnetGenerator:
  """Copies a JAX generator's variables (`{"params": ...}` or the params) into `peer`."""
  params = params.get("params", params)
  for name in ("stem", "down1", "down2", "up1", "up2", "head"):
    _conv(getattr(peer, name), params[name]["conv"])
  for i, block in enumerate(peer.blocks):
    for name in ("conv1", "conv2"):
      jax_conv, torch_conv = params[f"block{i}"][name], getattr(block, name)
      if isinstance(torch_conv, SeparableConv):
        _conv(torch_conv.depthwise, jax_conv["depthwise"])
        _conv(torch_conv.pointwise, jax_conv["pointwise"]["conv"])
      else:
        _conv(torch_conv, jax_conv["conv"])
  return peer


def count_params(peer: nn.Module) -> int:
  return sum(p.numel() for p in peer.parameters())


def forward_fn(peer: ResnetGenerator, images_nhwc: Any, dtype: str = "float32"):
  """`() -> output` of `peer` on the NHWC images (moved to NCHW once, outside the timing),
  weights and activations in `dtype` (`float32` or `bfloat16`)."""
  torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  x = peers.tensor(np.asarray(images_nhwc, np.float32)).permute(0, 3, 1, 2).contiguous()
  x = x.to(torch_dtype)
  peer = peer.to(device=x.device, dtype=torch_dtype).eval()

  def run():
    with torch.inference_mode():
      return peer(x)
  return run
