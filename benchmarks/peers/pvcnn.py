"""PyTorch peers of PVCNN's voxel ops (`kernels/voxelize.py`, `kernels/devoxelize.py`) and of
the ShapeNet part-segmentation network (`lite_jax.pvcnn.models.PartSegmentationNet`).

The voxel ops in plain PyTorch, as a user without PVCNN's CUDA extension writes them:
average voxelization with `index_add_` of the point features and counts into the flat grid,
trilinear devoxelization with 8 `gather`s of the corner voxels. Same semantics as ours
(per-sample centring, unit-sphere or normalized scale, `torch.round` half to even, corners
clipped to the grid), channel-last `[batch, points, C]` like ours. The network follows PVCNN
`models/shapenet/pvcnn.py`: PVConv blocks (voxelize -> 2 x (Conv3d + BatchNorm3d eps 1e-4 +
LeakyReLU 0.1) -> squeeze-excitation -> devoxelize, plus a shared point MLP), shared MLPs, the
global max, the part head; inference mode (BatchNorm on running statistics, no dropout).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import peers
from lite_jax.pvcnn import models


def normalize_coords(coords: torch.Tensor, resolution: int, normalize: bool,
                     eps: float = 0.0) -> torch.Tensor:
  """`[batch, points, 3]` xyz -> grid coordinates in `[0, r - 1]` (no NaN handling)."""
  centred = coords - coords.mean(dim=1, keepdim=True)
  if normalize:
    radius = 2.0 * centred.norm(dim=-1).amax(dim=1)[:, None, None] + eps
    unit = centred / torch.where(radius > 0, radius, torch.ones_like(radius)) + 0.5
  else:
    unit = (centred + 1.0) / 2.0
  return (unit * resolution).clamp(0.0, resolution - 1.0)


def _flat_ids(x, y, z, resolution: int) -> torch.Tensor:
  return (x * resolution + y) * resolution + z


def _batch_offsets(batch: int, resolution: int, device) -> torch.Tensor:
  return (torch.arange(batch, device=device) * resolution ** 3)[:, None]


def voxelize(features: torch.Tensor, coords: torch.Tensor, resolution: int, *,
             normalize: bool, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
  """Average voxelization: `features [B, N, C]`, `coords [B, N, 3]` ->
  (`voxels [B, r, r, r, C]`, `norm_coords [B, N, 3]`)."""
  batch, _, channels = features.shape
  norm_coords = normalize_coords(coords.detach(), resolution, normalize, eps)
  xyz = torch.round(norm_coords).long().clamp(0, resolution - 1)
  ids = (_flat_ids(xyz[..., 0], xyz[..., 1], xyz[..., 2], resolution)
         + _batch_offsets(batch, resolution, features.device)).reshape(-1)
  rows = batch * resolution ** 3
  sums = features.new_zeros(rows, channels).index_add_(0, ids, features.reshape(-1, channels))
  counts = features.new_zeros(rows).index_add_(0, ids, features.new_ones(ids.shape))
  voxels = sums / counts.clamp(min=1)[:, None]
  return voxels.reshape(batch, resolution, resolution, resolution, channels), norm_coords


def devoxelize(voxels: torch.Tensor, norm_coords: torch.Tensor) -> torch.Tensor:
  """Trilinear interpolation: `voxels [B, r, r, r, C]`, `norm_coords [B, N, 3]` -> `[B, N, C]`."""
  batch, resolution, channels = voxels.shape[0], voxels.shape[1], voxels.shape[-1]
  flat = voxels.reshape(batch, -1, channels)
  lo_f = torch.floor(norm_coords)
  frac = norm_coords - lo_f
  lo = lo_f.long().clamp(0, resolution - 1)
  hi = torch.clamp(lo + (frac > 0).long(), max=resolution - 1)
  ends = ((lo, 1.0 - frac), (hi, frac))
  out = 0
  for bx in (0, 1):
    for by in (0, 1):
      for bz in (0, 1):
        (ix, wx), (iy, wy), (iz, wz) = (ends[b] for b in (bx, by, bz))
        ids = _flat_ids(ix[..., 0], iy[..., 1], iz[..., 2], resolution)
        corner = torch.gather(flat, 1, ids[..., None].expand(-1, -1, channels))
        out = out + (wx[..., 0] * wy[..., 1] * wz[..., 2])[..., None] * corner
  return out


class SharedMLP(nn.Module):
  """Linear + BatchNorm (eps 1e-5) + ReLU on `[..., C_in]` (PVCNN's Conv1d k=1 + BN1d)."""

  def __init__(self, in_channels: int, out_channels: int):
    super().__init__()
    self.linear = nn.Linear(in_channels, out_channels)
    self.norm = nn.BatchNorm1d(out_channels, eps=1e-5)

  def forward(self, x):
    shape = x.shape
    y = self.norm(self.linear(x).reshape(-1, self.linear.out_features))
    return F.relu(y).reshape(*shape[:-1], -1)


class PVConv(nn.Module):
  """`features [B, N, C_in]`, `coords [B, N, 3]` -> `[B, N, C_out]`."""

  def __init__(self, in_channels: int, out_channels: int, resolution: int, normalize: bool):
    super().__init__()
    self.resolution, self.normalize = resolution, normalize
    self.voxel_layers = nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm3d(out_channels, eps=1e-4), nn.LeakyReLU(0.1),
        nn.Conv3d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm3d(out_channels, eps=1e-4), nn.LeakyReLU(0.1))
    self.se = nn.Sequential(nn.Linear(out_channels, out_channels // 8, bias=False), nn.ReLU(),
                            nn.Linear(out_channels // 8, out_channels, bias=False),
                            nn.Sigmoid())
    self.point = SharedMLP(in_channels, out_channels)

  def forward(self, features, coords):
    voxels, norm_coords = voxelize(features, coords, self.resolution, normalize=self.normalize)
    voxels = self.voxel_layers(voxels.permute(0, 4, 1, 2, 3))  # NCDHW for Conv3d
    voxels = voxels * self.se(voxels.mean(dim=(2, 3, 4)))[:, :, None, None, None]
    return devoxelize(voxels.permute(0, 2, 3, 4, 1), norm_coords) + self.point(features)


class PartSegmentationNet(nn.Module):
  """`points [B, N, C_in]` (xyz first), `category [B]` -> logits `[B, N, num_classes]`."""

  def __init__(self, in_channels: int, blocks: Sequence[models.Block], num_classes: int,
               num_categories: int, width_multiplier: float, resolution_multiplier: float,
               normalize: bool = False):
    super().__init__()
    self.num_categories = num_categories
    self.trunk = nn.ModuleList()
    channels, concat = in_channels, num_categories
    for out_channels, num_blocks, resolution in blocks:
      out_channels = int(width_multiplier * out_channels)
      for _ in range(num_blocks):
        self.trunk.append(SharedMLP(channels, out_channels) if resolution is None else
                          PVConv(channels, out_channels,
                                 int(resolution_multiplier * resolution), normalize))
        channels = out_channels
        concat += out_channels
    head = []
    width = concat + channels
    for spec in models.PART_HEAD:
      if spec < 1:
        head.append(nn.Dropout(spec))
      else:
        head.append(SharedMLP(width, int(width_multiplier * spec)))
        width = int(width_multiplier * spec)
    self.head = nn.Sequential(*head, nn.Linear(width, num_classes))

  def forward(self, points, category):
    coords, x, outputs = points[..., :3], points, []
    for layer in self.trunk:
      x = layer(x, coords) if isinstance(layer, PVConv) else layer(x)
      outputs.append(x)
    num_points = points.shape[1]
    one_hot = F.one_hot(category, self.num_categories).to(x.dtype)
    pooled = x.amax(dim=1)
    x = torch.cat([one_hot[:, None].expand(-1, num_points, -1), *outputs,
                   pooled[:, None].expand(-1, num_points, -1)], dim=-1)
    return self.head(x)


def from_jax(module: models.PartSegmentationNet, in_channels: int) -> PartSegmentationNet:
  return PartSegmentationNet(in_channels, module.blocks, module.num_classes,
                             module.num_categories, module.width_multiplier,
                             module.voxel_resolution_multiplier, module.normalize)


def _copy(tensor: torch.Tensor, value: Any, transpose: Sequence[int] | None = None) -> None:
  array = np.asarray(value)
  tensor.copy_(peers.host(array if transpose is None else array.transpose(transpose)))


def _load_linear(linear: nn.Linear, params: Any) -> None:
  _copy(linear.weight, params["kernel"], (1, 0))
  if linear.bias is not None:
    _copy(linear.bias, params["bias"])


def _load_norm(norm: nn.Module, params: Any, stats: Any) -> None:
  _copy(norm.weight, params["scale"])
  _copy(norm.bias, params["bias"])
  _copy(norm.running_mean, stats["mean"])
  _copy(norm.running_var, stats["var"])


def _load_mlp(mlp: SharedMLP, params: Any, stats: Any) -> None:
  _load_linear(mlp.linear, params["Dense_0"])
  _load_norm(mlp.norm, params["BatchNorm_0"], stats["BatchNorm_0"])


@torch.no_grad()
def load_variables(peer: PartSegmentationNet, variables: Any) -> PartSegmentationNet:
  """Copies a JAX `PartSegmentationNet`'s `params` and `batch_stats` into `peer`."""
  params, stats = variables["params"], variables["batch_stats"]
  trunk_params, trunk_stats = params["PointBlocks_0"], stats["PointBlocks_0"]
  counts = {"SharedMLP": 0, "PVConv": 0}
  for layer in peer.trunk:
    kind = "PVConv" if isinstance(layer, PVConv) else "SharedMLP"
    name = f"{kind}_{counts[kind]}"
    counts[kind] += 1
    p, s = trunk_params[name], trunk_stats[name]
    if kind == "SharedMLP":
      _load_mlp(layer, p, s)
      continue
    for i, (conv, norm) in enumerate(((layer.voxel_layers[0], layer.voxel_layers[1]),
                                      (layer.voxel_layers[3], layer.voxel_layers[4]))):
      block = f"ConvBNLeaky3D_{i}"
      # Flax `[kd, kh, kw, in, out]` -> torch `[out, in, kd, kh, kw]`.
      _copy(conv.weight, p[block]["Conv_0"]["kernel"], (4, 3, 0, 1, 2))
      _copy(conv.bias, p[block]["Conv_0"]["bias"])
      _load_norm(norm, p[block]["BatchNorm_0"], s[block]["BatchNorm_0"])
    _load_linear(layer.se[0], p["SqueezeExcite3D_0"]["Dense_0"])
    _load_linear(layer.se[2], p["SqueezeExcite3D_0"]["Dense_1"])
    _load_mlp(layer.point, p["SharedMLP_0"], s["SharedMLP_0"])
  mlps = [m for m in peer.head if isinstance(m, SharedMLP)]
  for i, mlp in enumerate(mlps):
    _load_mlp(mlp, params["Head_0"][f"SharedMLP_{i}"], stats["Head_0"][f"SharedMLP_{i}"])
  _load_linear(peer.head[-1], params["Head_0"]["Dense_0"])
  return peer


def count_params(peer: nn.Module) -> int:
  """Trainable parameters (BatchNorm running statistics are buffers, as in Flax)."""
  return sum(p.numel() for p in peer.parameters())


def forward_fn(peer: PartSegmentationNet, points: Any, category: Any):
  """`() -> logits` of `peer` in inference mode on the given (JAX / numpy) inputs."""
  points, category = peers.tensor(points), peers.tensor(category).long()
  peer = peer.to(points.device).eval()

  def run():
    with torch.inference_mode():
      return peer(points, category)
  return run


def kernel_fns(op: str, x: Any, coords: Any, resolution: int, normalize: bool = True,
               dtype: str = "float32"):
  """`(forward, backward)` of one voxel op on the same inputs as our kernel benchmark.

  `x` is the features `[B, N, C]` (voxelize) or the voxels `[B, r, r, r, C]` (devoxelize), in
  `dtype` (`float32` or `bfloat16`); `backward` is the VJP w.r.t. `x` of a ones cotangent
  through the saved graph of one forward (autograd keeps its residuals, as our benchmark's
  `jax.vjp` does).
  """
  torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  x = peers.tensor(np.asarray(x, np.float32)).to(torch_dtype).requires_grad_()
  coords = peers.tensor(coords)
  if op == "voxelize":
    fn = lambda v: voxelize(v, coords, resolution, normalize=normalize)[0]
  else:
    norm_coords = normalize_coords(coords, resolution, normalize)
    fn = lambda v: devoxelize(v, norm_coords)

  def forward():
    with torch.inference_mode():
      return fn(x)

  out = fn(x)
  cotangent = torch.ones_like(out)
  return forward, lambda: torch.autograd.grad(out, x, cotangent, retain_graph=True)
