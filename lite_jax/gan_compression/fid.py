"""FID and KID as GAN Compression computes them (`metric/fid_score.py`, `metric/__init__.py`).

What matches the reference, and why it matters (FID moves by whole points with preprocessing):

* Network: pytorch-fid's `fid_inception_v3`, the port of the TF Inception graph of 2015-12-05
  that the original FID code uses. It differs from torchvision's Inception3 in Mixed_5b-5d /
  6b-6e / 7b (average pools exclude the padding, `count_include_pad=False`) and Mixed_7c (max
  pool instead of average pool in the pool branch). BasicConv2d = conv (no bias) + BatchNorm
  (eps 0.001, running statistics) + ReLU; the pool3 features are the spatial mean of Mixed_7c,
  `[batch, 2048]`. Layout is NHWC; the parameters carry the PyTorch module names, so the state
  dict of `pt_inception-2015-12-05-6726825d.pth` maps one-to-one (`Mixed_5b.branch1x1.conv.weight`
  -> params `Mixed_5b/branch1x1/conv/kernel`, `...bn.running_mean` -> batch_stats `.../bn/mean`).
* Preprocessing: generator outputs in [-1, 1] go through `tensor2im` ((x + 1) / 2 * 255, clipped,
  *truncated* to uint8, not rounded), then / 255, a bilinear resize to 299 x 299 like
  `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing, also when shrinking,
  which `jax.image.resize` would otherwise do), then 2x - 1. Real images take the same path.
* Statistics and distance: float64 mean and `np.cov(rowvar=False)`; the Frechet distance as
  pytorch-fid (`scipy.linalg.sqrtm` of sigma1 sigma2, an eps offset on the diagonals when the
  root is not finite, a small imaginary part dropped). Reference statistics are `.npz` files with
  `mu` and `sigma`, pytorch-fid's format, so its precomputed files load as they are.
* KID (not in the reference; a lower-variance companion for small test sets): the unbiased
  MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, averaged over random subsets.

The weights are the user's file: the `.pth` is read without torch, in either `torch.save` format
(the zip archive of torch >= 1.6 and the older stream format of files written before it), or an
`.npz` with the same state-dict keys (`save_npz_weights` writes one).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import pickle
import zipfile
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from lite_jax.core import compiler
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import progress

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                         + INCEPTION_WEIGHTS_FILE)
INPUT_SIZE = 299
FEATURE_DIM = 2048


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

def _check_images(images: Any, name: str) -> None:
  shape = getattr(images, "shape", None)
  if shape is None or len(shape) != 4 or shape[-1] != 3:
    raise UserError(f"{name} must be RGB images of shape [batch, height, width, 3], got shape "
                    f"{None if shape is None else tuple(shape)}.")


def images_to_uint8(images: jax.Array) -> jax.Array:
  """The reference's `tensor2im`: `[batch, H, W, 3]` floats in [-1, 1] -> uint8 in [0, 255].

  (x + 1) / 2 * 255 in float32, clipped to [0, 255] and truncated (0.999 -> 254, not 255).
  """
  _check_images(images, "images")
  scaled = (jnp.asarray(images, jnp.float32) + 1) / 2 * 255
  return jnp.clip(scaled, 0, 255).astype(jnp.uint8)


# The reference divides float64 images by 255, then casts to float32; XLA turns a float32
# division by 255 into a product with the reciprocal, 1 ulp off for about half the levels.
_UINT8_TO_UNIT = (np.arange(256) / 255).astype(np.float32)


def _torch_linear_weights(in_size: int, out_size: int):
  """Source indices and weights of torch's bilinear `align_corners=False` along one axis, with
  its float32 arithmetic: src = in / out * (i + 0.5) - 0.5, clamped at 0; `i1` stops at the
  border; equal sizes copy. Returns `(i0, i1, w0, w1)`, each `[out_size]`."""
  if in_size == out_size:
    index = np.arange(out_size)
    return index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
  scale = np.float32(in_size) / np.float32(out_size)
  src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  src = np.maximum(src, np.float32(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  return i0, i0 + (i0 < in_size - 1), np.float32(1) - w1, w1


def resize_bilinear_like_torch(images: jax.Array, height: int, width: int) -> jax.Array:
  """`[batch, H, W, C]` float32 -> `[batch, height, width, C]`, as torch
  `F.interpolate(mode='bilinear', align_corners=False)`: no antialiasing when shrinking, and the
  same float32 source positions and evaluation order h0 * (w0 x00 + w1 x01) + h1 * (...), so
  it is bit-identical to a transcription of torch's CPU kernel (`jax.image.resize` with
  `antialias=False` is ~4e-6 apart; with its default antialiasing it blurs when shrinking)."""
  h0, h1, wh0, wh1 = _torch_linear_weights(images.shape[1], height)
  v0, v1, wv0, wv1 = _torch_linear_weights(images.shape[2], width)

  def along_width(rows: jax.Array) -> jax.Array:
    return rows[:, :, v0] * wv0[:, None] + rows[:, :, v1] * wv1[:, None]

  return (along_width(images[:, h0]) * wh0[:, None, None]
          + along_width(images[:, h1]) * wh1[:, None, None])


def inception_inputs_from_uint8(images: jax.Array) -> jax.Array:
  """`[batch, H, W, 3]` uint8 -> `[batch, 299, 299, 3]` float32 network inputs in [-1, 1]:
  / 255, `resize_bilinear_like_torch` to 299 x 299, 2x - 1 (pytorch-fid's order)."""
  _check_images(images, "images")
  if images.dtype != jnp.uint8:
    raise UserError(f"images must be uint8 for inception_inputs_from_uint8, got {images.dtype}.")
  unit = jnp.asarray(_UINT8_TO_UNIT)[jnp.asarray(images)]
  return 2 * resize_bilinear_like_torch(unit, INPUT_SIZE, INPUT_SIZE) - 1


def inception_inputs(images: jax.Array) -> jax.Array:
  """`[batch, H, W, 3]` generator outputs in [-1, 1] -> `[batch, 299, 299, 3]` network inputs."""
  return inception_inputs_from_uint8(images_to_uint8(images))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm(eps 0.001, running statistics) + ReLU: `[B, H, W, C]`.

  `padding` is PyTorch's symmetric (pad_h, pad_w).
  """
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad_h, pad_w = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=0.001, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3, stride 1, pad 1, padding excluded from the mean (the FID blocks' pool)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3, stride 1, pad 1 (with -inf, as PyTorch): Mixed_7c's pool."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class FIDInceptionA(nn.Module):
  """Mixed_5b/5c/5d: `[B, 35, 35, C] -> [B, 35, 35, 224 + pool_features]`."""
  pool_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    branch1x1 = conv(64, (1, 1), name="branch1x1")(x)
    branch5x5 = conv(48, (1, 1), name="branch5x5_1")(x)
    branch5x5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision's, unchanged): `[B, 35, 35, 288] -> [B, 17, 17, 768]`."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    branch3x3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b-6e, factorized 7x7 convolutions: `[B, 17, 17, 768] -> [B, 17, 17, 768]`."""
  channels_7x7: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    c7 = self.channels_7x7
    branch1x1 = conv(192, (1, 1), name="branch1x1")(x)
    branch7x7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    branch7x7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    branch7x7dbl = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision's, unchanged): `[B, 17, 17, 768] -> [B, 8, 8, 1280]`."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    branch3x3 = conv(192, (1, 1), name="branch3x3_1")(x)
    branch3x3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (`pool="avg"`, pytorch-fid's FIDInceptionE_1: padding excluded from the mean) and
  Mixed_7c (`pool="max"`, FIDInceptionE_2: 3x3 max pool, stride 1, pad 1, likely a slip in
  the TF graph, kept because FID is defined by it): `[B, 8, 8, C] -> [B, 8, 8, 2048]`."""
  pool: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    branch1x1 = conv(320, (1, 1), name="branch1x1")(x)
    branch3x3 = conv(384, (1, 1), name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
    branch3x3dbl = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
    pool = _avg_pool_3x3 if self.pool == "avg" else _max_pool_3x3
    branch_pool = conv(192, (1, 1), name="branch_pool")(pool(x))
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
  """pytorch-fid's FID Inception up to the pool3 features.

  `inputs: [batch, 299, 299, 3]` in [-1, 1] (see `inception_inputs`) -> `[batch, 2048]` float32.
  `dtype` is the compute dtype; parameters are float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    _check_images(inputs, "inputs")
    conv = functools.partial(BasicConv2d, dtype=self.dtype)
    x = jnp.asarray(inputs, self.dtype)
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = FIDInceptionA(32, dtype=self.dtype, name="Mixed_5b")(x)
    x = FIDInceptionA(64, dtype=self.dtype, name="Mixed_5c")(x)
    x = FIDInceptionA(64, dtype=self.dtype, name="Mixed_5d")(x)
    x = InceptionB(dtype=self.dtype, name="Mixed_6a")(x)
    x = FIDInceptionC(128, dtype=self.dtype, name="Mixed_6b")(x)
    x = FIDInceptionC(160, dtype=self.dtype, name="Mixed_6c")(x)
    x = FIDInceptionC(160, dtype=self.dtype, name="Mixed_6d")(x)
    x = FIDInceptionC(192, dtype=self.dtype, name="Mixed_6e")(x)
    x = InceptionD(dtype=self.dtype, name="Mixed_7a")(x)
    x = FIDInceptionE("avg", dtype=self.dtype, name="Mixed_7b")(x)
    x = FIDInceptionE("max", dtype=self.dtype, name="Mixed_7c")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# Weights: PyTorch state dict <-> Flax variables
# ---------------------------------------------------------------------------------------------

# Flax leaf name -> state-dict suffix, per collection.
_LEAF_KEYS = {("params", "kernel"): "weight", ("params", "scale"): "weight",
              ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
              ("batch_stats", "var"): "running_var"}


def _variable_shapes() -> dict[str, Any]:
  inputs = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3().init, jax.random.key(0), inputs)


def _state_dict_key(collection: str, path: Sequence[str]) -> str:
  return ".".join([*path[:-1], _LEAF_KEYS[(collection, path[-1])]])


def _leaves(variables: Mapping[str, Any]):
  """(collection, path, leaf) of `{"params", "batch_stats"}` nested dicts."""
  for collection in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables[collection]))[0]:
      yield collection, tuple(entry.key for entry in path), leaf


def init_inception_variables(key: jax.Array) -> dict[str, Any]:
  """Random `{"params", "batch_stats"}` of `InceptionV3`, for tests and demos without weights.

  Flax's default initializers (truncated LeCun-normal kernels, unit BatchNorm scale and
  variance, zero bias and mean), but all kernels come from one draw scaled per layer:
  XLA:CPU takes ~25 s to compile `InceptionV3().init` with its 94 separate draws.
  """
  shapes = _variable_shapes()
  kernel_sizes = [math.prod(shape.shape) for _, path, shape in _leaves(shapes)
                  if path[-1] == "kernel"]
  # Flax's variance_scaling: a [-2, 2]-truncated normal divided by its std, .8796...
  draws = np.asarray(jax.random.truncated_normal(key, -2, 2, (sum(kernel_sizes),)))
  draws = draws / .87962566103423978
  offset = 0

  def init(path, shape: jax.ShapeDtypeStruct) -> np.ndarray:
    nonlocal offset
    name = path[-1].key
    if name == "kernel":
      size = math.prod(shape.shape)
      fan_in = size // shape.shape[-1]
      kernel = draws[offset:offset + size].reshape(shape.shape) / math.sqrt(fan_in)
      offset += size
      return kernel.astype(np.float32)
    fill = np.ones if name in ("scale", "var") else np.zeros
    return fill(shape.shape, np.float32)

  return jax.tree_util.tree_map_with_path(init, shapes)


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray],
                              source: str = "the state dict") -> dict[str, Any]:
  """pytorch-fid Inception state dict -> `{"params", "batch_stats"}` (float32, conv HWIO).

  Keys the network does not use (`fc.*`, `*.num_batches_tracked`) are ignored.
  """
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for collection, path, shape in _leaves(_variable_shapes()):
    key = _state_dict_key(collection, path)
    if key not in state_dict:
      raise UserError(f"{source} lacks the Inception weight {key!r}; expected the state dict of "
                      f"{INCEPTION_WEIGHTS_FILE}.")
    value = np.asarray(state_dict[key], np.float32)
    if path[-1] == "kernel" and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if value.shape != shape.shape:
      raise UserError(f"{source} has {key!r} of shape {tuple(state_dict[key].shape)}, which does "
                      f"not fit the FID Inception; expected the state dict of "
                      f"{INCEPTION_WEIGHTS_FILE}.")
    node = variables[collection]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return variables


def state_dict_from_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`{"params", "batch_stats"}` -> PyTorch state-dict keys and layouts (conv OIHW)."""
  state_dict = {}
  for collection, path, leaf in _leaves(variables):
    value = np.asarray(leaf, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    state_dict[_state_dict_key(collection, path)] = value
  return state_dict


def save_npz_weights(variables: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes `variables` as an `.npz` keyed like the PyTorch state dict (loadable as weights)."""
  np.savez(path, **state_dict_from_variables(variables))


def load_inception_variables(path: str | os.PathLike) -> dict[str, Any]:
  """`{"params", "batch_stats"}` from the FID Inception weights (`.pth` or state-dict `.npz`)."""
  return variables_from_state_dict(read_state_dict(path), source=os.fspath(path))


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch.serialization.MAGIC_NUMBER


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands for `torch.FloatStorage` & co. in the unpickled object graph."""
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageSlice:
  """A storage by key (elements `[offset, offset + numel)` of it, for legacy views)."""
  key: str
  offset: int
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRecord:
  """`torch._utils._rebuild_tensor_v2` arguments; materialized once the storages are read."""
  storage: _StorageSlice
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRecord:
  # Signature of torch._utils._rebuild_tensor and _rebuild_tensor_v2 (requires_grad,
  # backward_hooks and metadata follow; a state dict needs none of them).
  del unused
  return _TensorRecord(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _UnknownGlobal(Exception):
  pass


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a `torch.save`d state dict into `_TensorRecord`s, refusing any other global.

  `storages` collects `key -> (dtype, element count)` of every storage the tensors refer to.
  """

  def __init__(self, file):
    super().__init__(file)
    self.storages: dict[str, tuple[np.dtype, int]] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
      return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    raise _UnknownGlobal(f"{module}.{name}")

  def persistent_load(self, pid: Any) -> _StorageSlice:
    # Zip format: ('storage', type, key, location, numel); the legacy format appends
    # view_metadata = None or (view_key, offset, numel) for a slice of the storage.
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage" or not isinstance(pid[1], _StorageType):
      raise _UnknownGlobal(f"persistent id {typename!r}")
    dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
    self.storages[key] = (dtype, numel)
    if len(pid) > 5 and pid[5] is not None:
      _, view_offset, view_numel = pid[5]
      return _StorageSlice(key, int(view_offset), int(view_numel))
    return _StorageSlice(key, 0, numel)


class _PlainUnpickler(pickle.Unpickler):
  """For the legacy format's header pickles (numbers, dicts, lists of strings only)."""

  def find_class(self, module: str, name: str) -> Any:
    raise _UnknownGlobal(f"{module}.{name}")


def _storage_array(data: bytes, dtype: np.dtype, numel: int, big_endian: bool,
                   source: str) -> np.ndarray:
  if len(data) < numel * dtype.itemsize:
    raise UserError(f"{source} is truncated: a tensor storage holds {len(data)} bytes of "
                    f"{numel * dtype.itemsize}.")
  stored = dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype
  return np.frombuffer(data, stored, count=numel).astype(dtype)


def _read_torch_zip(archive: zipfile.ZipFile, pickle_name: str, source: str):
  """torch.save since 1.6: `<name>/data.pkl` and one record `<name>/data/<key>` per storage."""
  prefix = pickle_name[:-len("data.pkl")]
  with archive.open(pickle_name) as f:
    unpickler = _TorchUnpickler(f)
    obj = unpickler.load()
  names = set(archive.namelist())
  big_endian = (prefix + "byteorder" in names
                and archive.read(prefix + "byteorder").strip() == b"big")
  storages = {}
  for key, (dtype, numel) in unpickler.storages.items():
    name = f"{prefix}data/{key}"
    if name not in names:
      raise UserError(f"{source} is truncated: it lacks the tensor storage {name!r}.")
    storages[key] = _storage_array(archive.read(name), dtype, numel, big_endian, source)
  return obj, storages


def _read_torch_legacy(f, source: str):
  """torch.save before 1.6 (the published FID weights): magic number, protocol and system
  pickles, the object pickle, the list of storage keys, then per key an int64 element count
  and the raw storage bytes."""
  header = _PlainUnpickler(f)
  if header.load() != _LEGACY_MAGIC:
    raise UserError(f"{source} is neither a PyTorch checkpoint nor an .npz state dict.")
  header.load()  # Serialization protocol version.
  big_endian = not header.load().get("little_endian", True)
  unpickler = _TorchUnpickler(f)
  obj = unpickler.load()
  storages = {}
  for key in _PlainUnpickler(f).load():
    dtype, _ = unpickler.storages[str(key)]
    count = f.read(8)
    if len(count) < 8:
      raise UserError(f"{source} is truncated: it ends inside its tensor storages.")
    numel = int(np.frombuffer(count, ">i8" if big_endian else "<i8")[0])
    storages[str(key)] = _storage_array(f.read(numel * dtype.itemsize), dtype, numel,
                                        big_endian, source)
  return obj, storages


def _materialize(name: str, record: _TensorRecord, storages: Mapping[str, np.ndarray],
                 source: str) -> np.ndarray:
  view = record.storage
  base = storages[view.key][view.offset:view.offset + view.numel]
  if 0 in record.size:
    return np.zeros(record.size, base.dtype)
  last = record.offset + sum((n - 1) * s for n, s in zip(record.size, record.stride))
  if record.offset < 0 or min(record.stride, default=0) < 0 or last >= base.size:
    raise UserError(f"{source} is corrupt: tensor {name!r} reaches outside its storage.")
  strides = [s * base.itemsize for s in record.stride]
  return np.lib.stride_tricks.as_strided(base[record.offset:], record.size, strides).copy()


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A PyTorch state dict as numpy arrays, without torch.

  Reads `torch.save` files (zip or legacy format; only tensors and OrderedDicts are unpickled,
  any other object is refused) and `.npz` files of state-dict keys.
  """
  source = os.fspath(path)
  if not os.path.isfile(source):
    raise UserError(f"FID needs the Inception weights file {INCEPTION_WEIGHTS_FILE}; pass its path "
                    f"as weights_path ({source!r} does not exist; download: "
                    f"{INCEPTION_WEIGHTS_URL}).")
  try:
    if zipfile.is_zipfile(source):
      with zipfile.ZipFile(source) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.rsplit("/", 1)[-1] == "data.pkl"]
        if pickles:
          obj, storages = _read_torch_zip(archive, pickles[0], source)
        elif names and all(n.endswith(".npy") for n in names):
          with np.load(source, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
        else:
          raise UserError(f"{source} is a zip archive but neither a PyTorch checkpoint nor an "
                          ".npz state dict.")
    else:
      with open(source, "rb") as f:
        obj, storages = _read_torch_legacy(f, source)
    if not isinstance(obj, Mapping):
      raise UserError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors.")
    return {str(key): _materialize(str(key), value, storages, source)
            for key, value in obj.items() if isinstance(value, _TensorRecord)}
  except UserError:
    raise
  except _UnknownGlobal as e:
    raise UserError(f"{source} holds a {e} object, which a state dict of tensors does not; "
                    f"expected {INCEPTION_WEIGHTS_FILE} or an .npz state dict.") from None
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
          KeyError, IndexError, AttributeError) as e:
    raise UserError(f"{source} could not be read as a PyTorch checkpoint or .npz state dict "
                    f"({type(e).__name__}: {e}).") from None


# ---------------------------------------------------------------------------------------------
# Statistics and distances
# ---------------------------------------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`features: [num, dim]` -> (mu `[dim]`, sigma `[dim, dim]`), float64, unbiased covariance."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise UserError(f"features must have shape [num >= 2, dim], got {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as pytorch-fid computes it.

  `mu*: [dim]`, `sigma*: [dim, dim]`. When the matrix root is not finite (singular product),
  `eps` is added to both diagonals; a small imaginary part of the root is dropped.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise UserError(f"mu1 and mu2 must be vectors of the same length, got {mu1.shape} and "
                    f"{mu2.shape}.")
  dim = mu1.shape[0]
  for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
    if sigma.shape != (dim, dim):
      raise UserError(f"{name} must have shape [{dim}, {dim}] to match the means, got "
                      f"{sigma.shape}.")
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(dim) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise UserError(f"the Frechet distance has an imaginary component of "
                      f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are too "
                      "ill-conditioned, use more images.")
    covmean = covmean.real
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of `x, y: [m, dim]` with the kernel (a.b / dim + 1)^3."""
  m, dim = x.shape
  k_xx = (x @ x.T / dim + 1) ** 3
  k_yy = (y @ y.T / dim + 1) ** 3
  k_xy = (x @ y.T / dim + 1) ** 3
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2 * k_xy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray,
                              num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
  """KID: mean and std over `num_subsets` random subsets (drawn without replacement, of
  `min(subset_size, num1, num2)` rows from each set) of the polynomial-kernel unbiased MMD^2.

  `features1: [num1, dim]`, `features2: [num2, dim]`.
  """
  x, y = (np.asarray(f, np.float64) for f in (features1, features2))
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise UserError(f"features1 and features2 must have shapes [num, dim] with the same dim, got "
                    f"{x.shape} and {y.shape}.")
  size = min(subset_size, x.shape[0], y.shape[0])
  if size < 2:
    raise UserError(f"KID needs at least 2 feature rows per set, got {x.shape[0]} and "
                    f"{y.shape[0]}.")
  rng = np.random.default_rng(seed)
  values = [_polynomial_mmd2(x[rng.choice(x.shape[0], size, replace=False)],
                             y[rng.choice(y.shape[0], size, replace=False)])
            for _ in progress(range(num_subsets), desc="KID subsets")]
  return float(np.mean(values)), float(np.std(values))


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes reference statistics as pytorch-fid does: an `.npz` with `mu` and `sigma`."""
  np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """(mu `[dim]`, sigma `[dim, dim]`) from an `.npz` with keys `mu` and `sigma`."""
  source = os.fspath(path)
  if not os.path.isfile(source):
    raise UserError(f"the FID reference statistics file {source!r} does not exist.")
  try:
    stats = np.load(source, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise UserError(f"{source} could not be read as an .npz of FID statistics ({e}).") from None
  message = f"{source} must be an .npz with arrays 'mu' and 'sigma'."
  if not isinstance(stats, np.lib.npyio.NpzFile):
    raise UserError(message)
  with stats:
    if not {"mu", "sigma"} <= set(stats.files):
      raise UserError(message)
    return np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)


# ---------------------------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------------------------

@functools.partial(compiler.jit, static_argnums=0)
def _pool3_features(model: InceptionV3, variables: Any, inputs: jax.Array) -> jax.Array:
  return model.apply(variables, inputs)


_inputs_from_float = compiler.jit(inception_inputs)
_inputs_from_uint8 = compiler.jit(inception_inputs_from_uint8)


class FidEvaluator:
  """Inception features, FID and KID of image sets, in fixed-size batches.

  Give either `weights_path` (the `.pth` of pytorch-fid or a state-dict `.npz`) or `variables`
  (`{"params", "batch_stats"}`, e.g. `init_inception_variables` for tests). The network is
  compiled once per `(batch_size, dtype)`: the last batch is zero-padded to `batch_size`, and
  inputs of any resolution are resized to 299 x 299 before it.
  """

  def __init__(self, weights_path: str | os.PathLike | None = None, *,
               variables: Mapping[str, Any] | None = None, batch_size: int = 50,
               dtype: Any = jnp.float32):
    if (weights_path is None) == (variables is None):
      raise UserError("FidEvaluator needs exactly one of weights_path or variables.")
    if batch_size < 1:
      raise UserError(f"batch_size must be positive, got {batch_size}.")
    if variables is None:
      variables = load_inception_variables(weights_path)
    self.variables = jax.device_put(dict(variables))
    self.model = InceptionV3(dtype=dtype)
    self.batch_size = batch_size

  def features(self, images: np.ndarray | jax.Array,
               desc: str = "Inception features") -> np.ndarray:
    """`images: [num, height, width, 3]` -> pool3 features `[num, 2048]` float32.

    Float images are generator outputs in [-1, 1] (they go through `tensor2im`); uint8 images
    are taken as already converted. For sets too large for memory, call this per chunk and
    concatenate the features.
    """
    _check_images(images, "images")
    if images.dtype == jnp.uint8:
      prepare = _inputs_from_uint8
    elif jnp.issubdtype(images.dtype, jnp.floating):
      prepare = _inputs_from_float
    else:
      raise UserError(f"images must be uint8 or floats in [-1, 1], got dtype {images.dtype}.")
    num = images.shape[0]
    if num == 0:
      raise UserError("images must hold at least one image.")
    features = np.empty((num, FEATURE_DIM), np.float32)

    def fetch(start: int, count: int, batch_features: jax.Array) -> None:
      features[start:start + count] = np.asarray(batch_features)[:count]

    pending = None  # The previous batch is fetched while the next one runs.
    for start in progress(range(0, num, self.batch_size), desc=desc):
      batch = jnp.asarray(images[start:start + self.batch_size])
      count = batch.shape[0]
      if count < self.batch_size:
        padding = jnp.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)
        batch = jnp.concatenate([batch, padding])
      batch_features = _pool3_features(self.model, self.variables, prepare(batch))
      if pending is not None:
        fetch(*pending)
      pending = (start, count, batch_features)
    fetch(*pending)
    return features

  def statistics(self, images: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """(mu `[2048]`, sigma `[2048, 2048]`) of `images: [num, height, width, 3]`."""
    return feature_statistics(self.features(images))

  def fid(self, fake_images: np.ndarray | jax.Array,
          real: tuple[np.ndarray, np.ndarray] | str | os.PathLike | np.ndarray | jax.Array
          ) -> float:
    """FID of `fake_images: [num, height, width, 3]` against `real`: a `(mu, sigma)` pair, the
    path of a statistics `.npz`, or real images `[num, height, width, 3]`."""
    if isinstance(real, (str, os.PathLike)):
      real_mu, real_sigma = load_statistics(real)
    elif isinstance(real, tuple):
      real_mu, real_sigma = real
    else:
      real_mu, real_sigma = self.statistics(real)
    return frechet_distance(real_mu, real_sigma, *self.statistics(fake_images))

  def kid(self, fake_images: np.ndarray | jax.Array, real_images: np.ndarray | jax.Array, *,
          num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) KID of `fake_images` against `real_images`, both `[num, height, width, 3]`."""
    return kernel_inception_distance(self.features(real_images), self.features(fake_images),
                                     num_subsets=num_subsets, subset_size=subset_size, seed=seed)
