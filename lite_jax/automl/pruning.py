"""AMC's channel pruning: which channels go, least-squares reconstruction, and export.

AMC (mit-han-lab/amc `env/channel_pruning_env.py`, spec §3) prunes a layer by keeping a
fraction of its *input* channels. Removing input channel j of layer t removes output channel j
of the layer that produces it (with its BatchNorm) and of any depthwise conv in between, whose
channels follow the mask. The kept channels are the top-d' by the sum of |W| over the layer's
other axes; the layer is then refit by least squares (no intercept) from the kept input
channels to the *unpruned* model's output, on features sampled once from the original model.

Pieces:

- `PrunableLayer` / `pruning_plan`: the layers an agent acts on, each with its producer and the
  depthwise convs between them, for MobileNetV1 and `PlainCNN` (chains), MobileNetV2 (the
  project 1x1 of each block: its input is the block's hidden width, produced by the expand 1x1
  or, in the first block, the stem) and ResNet-50 (each bottleneck's `conv2` and `conv3`: their
  inputs are `conv1`'s and `conv2`'s outputs). The first entry is always the layer reading the
  image, whose 3 input channels are never pruned (the reference's channel lists start with 3).
- `sample_features`: inputs and pre-BatchNorm outputs of every prunable layer on calibration
  images, at `positions` random output positions per image. A 1x1 conv or an FC layer keeps the
  input vector at each position; a kxk conv keeps the im2col patch `[k, k, c_in]` that produced
  that output (padding and stride as the layer applies them), which is what lets 3x3 convs be
  reconstructed (the reference raises `NotImplementedError` there, users asked for it: #3).
- `select_channels`, `reconstruct`: magnitude selection and the least-squares refit.
- `Pruner`: the pruned-and-refit weights of any widths (cached per layer and width: features
  come from the original model, so a layer's refit depends on its own width only), as a
  *masked* variable tree of the original shapes (zero weights on removed inputs: one compiled
  predict serves every search episode) or *exported*: the sliced variables of a smaller module
  (`pruned_model`) that compute the same function.

Dense layers are fit to their output minus their bias (the reference fits the output with the
bias in it and then keeps the bias, counting it twice).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lite_jax.automl import classifiers
from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo


@dataclasses.dataclass(frozen=True)
class PrunableLayer:
  """A layer whose input channels an AMC action keeps.

  Attributes:
    layer: the conv or dense layer (its `c_in` is what is pruned).
    producer: the `ConvBN` module (path without `/conv`) whose output channels are this
      layer's inputs; None for the layer reading the image (never pruned).
    followers: depthwise `ConvBN` modules between producer and layer, following the mask.
  """
  layer: LayerInfo
  producer: str | None
  followers: tuple[str, ...] = ()

  @property
  def path(self) -> str:
    return self.layer.path

  @property
  def channels(self) -> int:
    return self.layer.c_in


def _module_of(path: str) -> str:
  if not path.endswith("/conv"):
    raise UserError(f"layer {path!r} is not the conv of a ConvBN module; AMC cannot prune "
                    f"its outputs.")
  return path[:-len("/conv")]


def pruning_plan(model: nn.Module, layers: Sequence[LayerInfo]) -> list[PrunableLayer]:
  """The layers AMC acts on, in call order (see the module docstring for each model).

  Args:
    model: a `classifiers` model: MobileNetV1, PlainCNN, MobileNetV2 (or its tiny version),
      ResNet50.
    layers: `list_layers(model, ...)`.

  Raises:
    UserError: for another model.
  """
  by_path = {layer.path: layer for layer in layers}
  first = PrunableLayer(layers[0], None)
  if isinstance(model, classifiers.MobileNetV2):
    plan = [first]
    specs = model.block_specs()
    for i, (hidden, features, stride, expansion) in enumerate(specs):
      if expansion != 1:
        producer = f"blocks_{i}/expand"
      elif i == 0 and not (stride == 1 and model.stem_channels == features):
        producer = "stem"  # the stem feeds only this block (no shortcut around it)
      else:
        continue
      plan.append(PrunableLayer(by_path[f"blocks_{i}/project/conv"], producer,
                                (f"blocks_{i}/depthwise",)))
    return plan
  if isinstance(model, classifiers.ResNet50):
    plan = [first]
    for layer in layers:
      module, _, name = layer.path.rpartition("/")[0].rpartition("/")
      if name in ("conv2", "conv3"):
        producer = f"{module}/{'conv1' if name == 'conv2' else 'conv2'}"
        plan.append(PrunableLayer(layer, producer))
    return plan
  if isinstance(model, (classifiers.MobileNetV1, classifiers.PlainCNN)):
    plan, producer, followers = [first], _module_of(layers[0].path), []
    for layer in layers[1:]:
      if layer.depthwise:
        followers.append(_module_of(layer.path))
        continue
      plan.append(PrunableLayer(layer, producer, tuple(followers)))
      producer, followers = (_module_of(layer.path) if layer.kind == "conv" else None), []
    return plan
  raise UserError(f"AMC prunes MobileNetV1, MobileNetV2, ResNet50 and PlainCNN, not "
                  f"{type(model).__name__}.")


def round_width(channels: int, ratio: float, multiple: int = 8) -> int:
  """d' = ceil(c * ratio / multiple) * multiple, at most c (a layer keeps all c rather than
  the reference's floor(c / multiple) * multiple when rounding passes c)."""
  return min(channels, max(1, int(math.ceil(channels * ratio / multiple - 1e-9)) * multiple))


def channel_importance(kernel: np.ndarray) -> np.ndarray:
  """Sum of |W| per input channel: `kernel [..., c_in, c_out]` (HWIO conv, or dense)."""
  kernel = np.abs(np.asarray(kernel, np.float64))
  return kernel.sum(axis=tuple(a for a in range(kernel.ndim) if a != kernel.ndim - 2))


def select_channels(kernel: np.ndarray, keep: int) -> np.ndarray:
  """The `keep` input channels of largest `channel_importance`, in increasing order."""
  order = np.argsort(-channel_importance(kernel), kind="stable")
  return np.sort(order[:keep])


@dataclasses.dataclass
class Features:
  """Sampled features of one layer of the original model.

  Attributes:
    inputs: `[rows, k, k, c_in]` im2col patches (k = 1 for 1x1 convs and dense layers).
    outputs: `[rows, c_out]` the layer's outputs there (dense: minus the bias).
  """
  inputs: np.ndarray
  outputs: np.ndarray


def im2col_rows(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, batch: np.ndarray, *,
                kernel: int, stride: int, padding: Sequence[tuple[int, int]]) -> np.ndarray:
  """The input patches that produce outputs `(batch[n], rows[n], cols[n])` of a conv.

  Args:
    images: `[B, H, W, C]` the conv's input.
    rows, cols, batch: `[n]` output positions and images.
    kernel, stride: the conv's square kernel and stride.
    padding: `((top, bottom), (left, right))` zero padding.

  Returns:
    `[n, kernel, kernel, C]`.
  """
  padded = np.pad(images, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  offsets = np.arange(kernel)
  ii = rows[:, None] * stride + offsets[None, :]
  jj = cols[:, None] * stride + offsets[None, :]
  return padded[batch[:, None, None], ii[:, :, None], jj[:, None, :]]


def _conv_padding(module: nn.Conv) -> tuple[tuple[int, int], tuple[int, int]]:
  padding = module.padding
  if isinstance(padding, str) and padding.upper() == "VALID":
    return ((0, 0), (0, 0))
  if isinstance(padding, Sequence) and len(padding) == 2 and all(
      isinstance(p, Sequence) and len(p) == 2 for p in padding):
    return tuple(tuple(int(v) for v in p) for p in padding)
  raise UserError(f"AMC reconstructs convs with explicit padding pairs or 'VALID', not "
                  f"{padding!r} ({'/'.join(module.path)}).")


def _capture(model: nn.Module, paths: frozenset[str]):
  """A jitted `(variables, images) -> {path: (input, output)}` of the layers in `paths`, plus
  the modules' geometry (filled on the first call)."""
  geometry: dict[str, Any] = {}

  @compiler.jit
  def run(variables, images):
    captured = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      module = context.module
      if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
        path = "/".join(module.path)
        if path in paths:
          captured[path] = (args[0], out)
          geometry[path] = module
      return out

    with nn.intercept_methods(record):
      model.apply(variables, images, train=False)
    return captured

  return run, geometry


def sample_features(model: nn.Module, variables: Any, batches: Iterable[np.ndarray],
                    plan: Sequence[PrunableLayer], *, positions: int, seed: int
                    ) -> dict[str, Features]:
  """Inputs and outputs of every prunable layer but the first, sampled from the original model.

  Args:
    model, variables: the unpruned model.
    batches: image batches `[B, H, W, 3]` (calibration images from the training split).
    plan: `pruning_plan(model, ...)`.
    positions: output positions drawn per image (uniformly, with replacement) for convs;
      dense layers have one row per image.
    seed: draws the positions.

  Returns:
    `{path: Features}`; conv rows are `images * positions`.
  """
  targets = [unit for unit in plan if unit.producer is not None]
  run, geometry = _capture(model, frozenset(unit.path for unit in targets))
  rng = np.random.default_rng(seed)
  parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {unit.path: [] for unit in targets}
  for images in batches:
    captured = jax.device_get(run(variables, jnp.asarray(images)))
    for unit in targets:
      x, y = (np.asarray(v, np.float32) for v in captured[unit.path])
      module = geometry[unit.path]
      if isinstance(module, nn.Dense):
        bias = variables["params"]
        for name in module.path:
          bias = bias[name]
        bias = np.asarray(bias.get("bias", 0.0), np.float32)
        parts[unit.path].append((x[:, None, None, :], y - bias))
        continue
      count = x.shape[0] * positions
      batch = np.repeat(np.arange(x.shape[0]), positions)
      rows = rng.integers(0, y.shape[1], count)
      cols = rng.integers(0, y.shape[2], count)
      patches = im2col_rows(x, rows, cols, batch, kernel=unit.layer.kernel,
                            stride=max(unit.layer.stride, 1), padding=_conv_padding(module))
      parts[unit.path].append((patches, y[batch, rows, cols]))
  return {path: Features(np.concatenate([p[0] for p in chunks]),
                         np.concatenate([p[1] for p in chunks]))
          for path, chunks in parts.items()}


def reconstruct(features: Features, keep: np.ndarray) -> np.ndarray:
  """Least squares (no intercept) from the kept input channels' patches to the outputs.

  Args:
    features: the layer's sampled `inputs [rows, k, k, c_in]` and `outputs [rows, c_out]`.
    keep: `[d]` kept input channels.

  Returns:
    `[k, k, d, c_out]` the refit kernel on the kept channels (HWIO; a dense kernel is its
    `[0, 0]`).
  """
  x = features.inputs[..., keep]
  k = x.shape[1]
  solution, *_ = np.linalg.lstsq(x.reshape(x.shape[0], -1).astype(np.float64),
                                 features.outputs.astype(np.float64), rcond=None)
  return solution.reshape(k, k, len(keep), -1).astype(np.float32)


def _flat(tree: Any) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


class Pruner:
  """Prunes and refits a trained model at any widths (one width per `plan` entry).

  Args:
    variables: the unpruned model's `{"params", "batch_stats"}`.
    plan: `pruning_plan(model, layers)`.
    features: `sample_features(...)` of that model (keyed by path).
  """

  def __init__(self, variables: Any, plan: Sequence[PrunableLayer],
               features: dict[str, Features]):
    self.plan = list(plan)
    self.params = _flat(variables["params"])
    self.batch_stats = _flat(variables.get("batch_stats", {}))
    self.features = features
    self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

  def check_widths(self, widths: Sequence[int]) -> list[int]:
    """`widths` as ints after checking them against the plan (one sentence on a mismatch)."""
    return check_widths(self.plan, widths)

  def layer(self, unit: PrunableLayer, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`(kept channels [d], refit kernel)` of one layer: the kernel has the layer's shape with
    the input axis cut to the kept channels (`[k, k, d, c_out]` or dense `[d, c_out]`)."""
    key = (unit.path, int(width))
    if key not in self._cache:
      kernel = self.params[f"{unit.path}/kernel"]
      if width >= unit.channels or unit.producer is None:
        keep, refit = np.arange(unit.channels), kernel
      else:
        keep = select_channels(kernel, width)
        refit = reconstruct(self.features[unit.path], keep)
        refit = refit.reshape(*kernel.shape[:-2], len(keep), kernel.shape[-1])
      self._cache[key] = (keep, refit)
    return self._cache[key]

  def masked(self, widths: Sequence[int]) -> dict[str, Any]:
    """Variables of the original shapes computing the pruned model: each layer's kernel is
    its refit on the kept inputs and zero on the removed ones."""
    widths = self.check_widths(widths)
    params = dict(self.params)
    for unit, width in zip(self.plan, widths):
      keep, refit = self.layer(unit, width)
      full = np.zeros_like(params[f"{unit.path}/kernel"])
      full[..., keep, :] = refit
      params[f"{unit.path}/kernel"] = full
    return {"params": traverse_util.unflatten_dict(params, sep="/"),
            "batch_stats": traverse_util.unflatten_dict(dict(self.batch_stats), sep="/")}

  def exported(self, widths: Sequence[int]) -> dict[str, Any]:
    """Variables of `pruned_model(model, plan, widths)`: the refit kernels on the kept inputs;
    producers, their BatchNorms and the depthwise convs in between cut to the kept channels."""
    widths = self.check_widths(widths)
    params, stats = dict(self.params), dict(self.batch_stats)
    kept = [self.layer(unit, width) for unit, width in zip(self.plan, widths)]
    for unit, (_, refit) in zip(self.plan, kept):
      params[f"{unit.path}/kernel"] = refit
    for unit, (keep, _) in zip(self.plan, kept):
      if unit.producer is None or len(keep) == unit.channels:
        continue
      for module in (unit.producer, *unit.followers):
        for tree in (params, stats):
          for key in [k for k in tree if k.startswith(f"{module}/")]:
            tree[key] = tree[key][..., keep]
    return {"params": traverse_util.unflatten_dict(params, sep="/"),
            "batch_stats": traverse_util.unflatten_dict(stats, sep="/")}


def check_widths(plan: Sequence[PrunableLayer], widths: Sequence[int]) -> list[int]:
  """`widths` as ints: one per plan entry, each in [1, c], the first (the image's) equal to c."""
  if len(widths) != len(plan):
    raise UserError(f"the channel list has {len(widths)} numbers but the model has "
                    f"{len(plan)} prunable layers; give each layer's kept input channels, the "
                    f"image's {plan[0].channels} first.")
  out = [int(w) for w in widths]
  if out[0] != plan[0].channels:
    raise UserError(f"the first channel count is the image's and must be "
                    f"{plan[0].channels}, got {out[0]}.")
  for unit, width in zip(plan, out):
    if not 1 <= width <= unit.channels:
      raise UserError(f"layer {unit.path} has {unit.channels} input channels; its kept "
                      f"count must be in [1, {unit.channels}], got {width}.")
  return out


def pruned_model(model: nn.Module, plan: Sequence[PrunableLayer],
                 widths: Sequence[int]) -> nn.Module:
  """A new module of the same class with the pruned widths (layer names unchanged)."""
  widths = check_widths(plan, widths)
  by_path = dict(zip((unit.path for unit in plan), widths))
  if isinstance(model, classifiers.MobileNetV2):
    hidden = [by_path.get(f"blocks_{i}/project/conv", h)
              for i, (h, _, _, _) in enumerate(model.block_specs())]
    stem = hidden[0] if "blocks_0/project/conv" in by_path and model.block_specs()[0][3] == 1 \
        else model.stem_channels
    return model.clone(hidden_channels=tuple(hidden), stem_channels=stem)
  if isinstance(model, classifiers.ResNet50):
    inner = [(by_path[unit.path], by_path[plan[i + 1].path])
             for i, unit in enumerate(plan[:-1]) if unit.path.endswith("conv2/conv")]
    return model.clone(inner_channels=tuple(inner))
  if isinstance(model, classifiers.MobileNetV1):
    return model.clone(channels=tuple(widths[1:]))
  if isinstance(model, classifiers.PlainCNN):
    return model.clone(channels=tuple(widths[1:]), width=1.0)
  raise UserError(f"AMC exports MobileNetV1, MobileNetV2, ResNet50 and PlainCNN, not "
                  f"{type(model).__name__}.")
