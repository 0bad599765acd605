"""FID/KID (`lite_jax.gan_compression.fid`) against independent references.

The network runs on random weights (the real ones are the user's download): shapes, batch
padding, layouts against a numpy convolution in PyTorch's NCHW/OIHW convention. Preprocessing is
checked against a numpy transcription of torch's bilinear `align_corners=False`; the weight
reader against `.pth` files this test writes in both `torch.save` formats with the same pickled
globals torch uses; the distances against closed forms, eigendecompositions and double loops.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import fid


def _randomize_batch_norm(variables, seed: int = 0):
  """Non-trivial BatchNorm scale, bias and running statistics, so layouts and names matter."""
  rng = np.random.default_rng(seed)
  draws = {"scale": lambda s: rng.uniform(0.5, 1.5, s), "bias": lambda s: rng.normal(0, 0.1, s),
           "mean": lambda s: rng.normal(0, 0.1, s), "var": lambda s: rng.uniform(0.5, 1.5, s)}

  def perturb(path, leaf):
    name = path[-1].key
    return np.asarray(leaf) if name == "kernel" else draws[name](leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.fixture(scope="module")
def variables():
  return _randomize_batch_norm(fid.init_inception_variables(jax.random.key(0)))


@pytest.fixture(scope="module")
def evaluator(variables):
  return fid.FidEvaluator(variables=variables, batch_size=2)


@pytest.fixture(scope="module")
def images():
  """Three generator-like outputs in [-1, 1]: `[3, 256, 256, 3]` (odd count: a padded batch)."""
  return np.random.default_rng(1).uniform(-1, 1, (3, 256, 256, 3)).astype(np.float32)


# --- network -----------------------------------------------------------------------------------

def test_features_shape_any_resolution_and_batch_padding(evaluator, images):
  features = evaluator.features(images)
  assert features.shape == (3, fid.FEATURE_DIM) and features.dtype == np.float32
  assert np.isfinite(features).all() and features.std() > 0
  # The last batch is zero-padded; padding must not leak into the real rows.
  np.testing.assert_allclose(evaluator.features(images[2:]), features[2:], rtol=1e-5, atol=1e-6)
  wide = np.random.default_rng(2).uniform(-1, 1, (2, 256, 512, 3)).astype(np.float32)
  wide_features = evaluator.features(wide)
  assert wide_features.shape == (2, fid.FEATURE_DIM) and np.isfinite(wide_features).all()
  uint8_features = evaluator.features(fid.images_to_uint8(images))
  np.testing.assert_allclose(uint8_features, features, rtol=1e-5, atol=1e-6)


def _conv_bn_relu_nchw(x, state_dict, prefix, stride, padding):
  """PyTorch's BasicConv2d in numpy: `x: [N, C, H, W]`, weights OIHW, BatchNorm eps 0.001."""
  weight = state_dict[f"{prefix}.conv.weight"]
  out_channels, _, kernel_h, kernel_w = weight.shape
  x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
  out_h = (x.shape[2] - kernel_h) // stride + 1
  out_w = (x.shape[3] - kernel_w) // stride + 1
  y = np.zeros((x.shape[0], out_channels, out_h, out_w))
  for i in range(kernel_h):
    for j in range(kernel_w):
      patch = x[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
      y += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
  bn = {k: state_dict[f"{prefix}.bn.{k}"][None, :, None, None]
        for k in ("weight", "bias", "running_mean", "running_var")}
  y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + 0.001) * bn["weight"] + bn["bias"]
  return np.maximum(y, 0)


@pytest.mark.parametrize("prefix, features, kernel, stride, padding, in_channels", [
    ("Conv2d_1a_3x3", 32, (3, 3), 2, (0, 0), 3),
    ("Mixed_6b.branch7x7_2", 128, (1, 7), 1, (0, 3), 128),
    ("Mixed_7b.branch3x3_2b", 384, (3, 1), 1, (1, 0), 384),
])
def test_basic_conv_matches_pytorch_layout(variables, prefix, features, kernel, stride, padding,
                                           in_channels):
  state_dict = fid.state_dict_from_variables(variables)
  layer_variables = {collection: variables[collection] for collection in variables}
  for name in prefix.split("."):
    layer_variables = {c: v[name] for c, v in layer_variables.items()}
  x = np.random.default_rng(3).normal(size=(2, in_channels, 9, 11)).astype(np.float32)
  expected = _conv_bn_relu_nchw(x.astype(np.float64), state_dict, prefix, stride, padding)
  layer = fid.BasicConv2d(features, kernel, strides=stride, padding=padding)
  got = layer.apply(layer_variables, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, rtol=1e-4,
                             atol=1e-4)


def test_pools_exclude_padding_from_means_and_maxima():
  x = -np.random.default_rng(4).uniform(1, 2, size=(1, 4, 5, 2)).astype(np.float32)
  avg = np.asarray(fid._avg_pool_3x3(x))
  np.testing.assert_allclose(avg[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)), rtol=1e-6)
  np.testing.assert_allclose(avg[0, 1, 2], x[0, :3, 1:4].mean(axis=(0, 1)), rtol=1e-6)
  maxima = np.asarray(fid._max_pool_3x3(x))  # All inputs negative: zero padding would win.
  np.testing.assert_array_equal(maxima[0, 0, 0], x[0, :2, :2].max(axis=(0, 1)))
  np.testing.assert_array_equal(maxima[0, 3, 4], x[0, 2:, 3:].max(axis=(0, 1)))
  halved = np.asarray(fid._max_pool_3x3_stride2(x))
  np.testing.assert_array_equal(halved[0, 0, 1], x[0, :3, 2:5].max(axis=(0, 1)))


# --- preprocessing ------------------------------------------------------------------------------

def _torch_bilinear_reference(image: np.ndarray, out_h: int, out_w: int,
                              dtype=np.float32) -> np.ndarray:
  """torch `F.interpolate(mode='bilinear', align_corners=False)` of `image: [H, W, C]`, pixel by
  pixel as its kernels (`area_pixel_compute_source_index`, `guard_index_and_lambda`), with the
  source positions in `dtype` (torch: float32 for float32 images)."""

  def source_index(out_index, in_size, out_size):
    if in_size == out_size:
      return out_index, out_index, 0.0
    scale = dtype(in_size) / dtype(out_size)
    src = max(scale * (dtype(out_index) + dtype(0.5)) - dtype(0.5), dtype(0))
    low = min(int(np.floor(src)), in_size - 1)
    high = low + 1 if low < in_size - 1 else low
    return low, high, min(max(src - dtype(low), dtype(0)), dtype(1))

  in_h, in_w, _ = image.shape
  out = np.zeros((out_h, out_w, image.shape[2]), dtype)
  rows = [source_index(i, in_h, out_h) for i in range(out_h)]
  cols = [source_index(j, in_w, out_w) for j in range(out_w)]
  for i, (h0, h1, h_lambda) in enumerate(rows):
    for j, (w0, w1, w_lambda) in enumerate(cols):
      out[i, j] = ((1 - h_lambda) * ((1 - w_lambda) * image[h0, w0] + w_lambda * image[h0, w1])
                   + h_lambda * ((1 - w_lambda) * image[h1, w0] + w_lambda * image[h1, w1]))
  return out


@pytest.mark.parametrize("height, width", [(13, 17), (600, 450), (100, 512), (299, 40)])
def test_resize_matches_torch_bilinear_without_antialiasing(height, width):
  image = np.random.default_rng(5).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
  got = np.asarray(fid.inception_inputs_from_uint8(image))[0]
  assert got.shape == (fid.INPUT_SIZE, fid.INPUT_SIZE, 3)
  unit = (image[0] / 255).astype(np.float32)
  expected = 2 * _torch_bilinear_reference(unit, fid.INPUT_SIZE, fid.INPUT_SIZE) - 1
  np.testing.assert_allclose(got, expected, atol=1e-6)
  # Exact positions differ from torch's float32 ones by ~1e-5 pixels at ~600 pixels.
  exact = _torch_bilinear_reference(image[0] / 255, fid.INPUT_SIZE, fid.INPUT_SIZE, np.float64)
  np.testing.assert_allclose(got, 2 * exact - 1, atol=3e-4)


def test_tensor2im_truncates_and_clips():
  values = np.array([-1.2, -1.0, -0.5, 0.0, 0.999, 1.0, 1.5], np.float32)
  got = np.asarray(fid.images_to_uint8(np.broadcast_to(values[None, :, None, None], (1, 7, 1, 3))))
  np.testing.assert_array_equal(got[0, :, 0, 0], [0, 0, 63, 127, 254, 255, 255])
  # The reference's float32 numpy arithmetic, bit for bit.
  x = np.random.default_rng(6).uniform(-1.1, 1.1, (2, 8, 8, 3)).astype(np.float32)
  expected = np.clip((x + 1) / 2.0 * 255.0, 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(jax.jit(fid.images_to_uint8)(x)), expected)


def test_uint8_levels_scale_like_the_reference():
  # The reference divides float64 images by 255, then casts to float32; at 299 x 299 the resize
  # is the identity, so every level must come out as 2 * float32(u / 255) - 1.
  levels = np.resize(np.arange(256, dtype=np.uint8), (1, 299, 299, 3))
  got = np.asarray(jax.jit(fid.inception_inputs_from_uint8)(levels))
  expected = 2 * (levels / 255).astype(np.float32) - 1
  np.testing.assert_array_equal(got, expected)


# --- weights ------------------------------------------------------------------------------------

def test_npz_round_trip_gives_identical_features(tmp_path, variables, evaluator, images):
  path = tmp_path / "inception.npz"
  fid.save_npz_weights(variables, path)
  with np.load(path) as saved:
    assert saved["Mixed_5b.branch1x1.conv.weight"].shape == (64, 192, 1, 1)
    assert saved["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
  loaded = fid.FidEvaluator(path, batch_size=2)
  np.testing.assert_array_equal(loaded.features(images), evaluator.features(images))


@dataclasses.dataclass
class _View:
  """A tensor as torch.save sees it: `shape` and `stride` (elements) over storage `key`."""
  key: str
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]
  storage_view: tuple[int, int] | None = None  # Legacy (offset, numel) slice of the storage.


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage"}


def _fake_torch_modules() -> dict[str, types.ModuleType]:
  """`torch` and `torch._utils` stand-ins, so pickle writes the globals torch.save writes."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def rebuild(*args):
    raise AssertionError("pickled by name only")

  rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = rebuild
  torch._utils = utils
  for name in _STORAGE_NAMES.values():
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  return {"torch": torch, "torch._utils": utils}


class _StorageRef:
  def __init__(self, view: _View):
    self.view = view


class _TorchStylePickler(pickle.Pickler):
  """torch.save's pickling: tensors reduce to `_rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad, backward_hooks)`, storages become persistent ids."""

  def __init__(self, file, torch, storages, legacy: bool):
    super().__init__(file, protocol=2)
    self.torch, self.storages, self.legacy = torch, storages, legacy

  def reducer_override(self, obj):
    if isinstance(obj, _View):
      args = (_StorageRef(obj), obj.offset, obj.shape, obj.stride, False,
              collections.OrderedDict())
      return self.torch._utils._rebuild_tensor_v2, args
    return NotImplemented

  def persistent_id(self, obj):
    if not isinstance(obj, _StorageRef):
      return None
    data = self.storages[obj.view.key]
    pid = ("storage", getattr(self.torch, _STORAGE_NAMES[data.dtype]), obj.view.key, "cpu",
           data.size)
    if not self.legacy:
      return pid
    view = obj.view.storage_view
    return pid + ((None if view is None else (f"{obj.view.key}_view", *view)),)


def _write_torch_file(path, state_dict, storages=None, legacy=False):
  """Writes `state_dict` (name -> array or `_View` into `storages`) as torch.save would."""
  storages = dict(storages or {})
  entries = collections.OrderedDict()
  for name, value in state_dict.items():
    if isinstance(value, np.ndarray):
      key = str(len(storages))
      storages[key] = np.ascontiguousarray(value).ravel()
      strides = tuple(s // value.itemsize for s in np.empty_like(value, order="C").strides)
      value = _View(key, 0, value.shape, strides)
    entries[name] = value
  entries._metadata = collections.OrderedDict({"": {"version": 1}})  # As in torch state dicts.
  buffer = io.BytesIO()
  modules = _fake_torch_modules()
  with pytest.MonkeyPatch.context() as patch:
    for name, module in modules.items():
      patch.setitem(sys.modules, name, module)
    _TorchStylePickler(buffer, modules["torch"], storages, legacy).dump(entries)
  if legacy:
    with open(path, "wb") as f:
      for header in (fid._LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, f, protocol=2)
      f.write(buffer.getvalue())
      pickle.dump(sorted(storages), f, protocol=2)
      for key in sorted(storages):
        f.write(np.int64(storages[key].size).tobytes() + storages[key].tobytes())
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("inception/data.pkl", buffer.getvalue())
      archive.writestr("inception/byteorder", "little")
      for key, data in storages.items():
        archive.writestr(f"inception/data/{key}", data.tobytes())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pth_reader_rebuilds_strided_typed_tensors(tmp_path, legacy):
  rng = np.random.default_rng(7)
  shared = rng.normal(size=40).astype(np.float32)
  state_dict = {
      "a.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
      "half": rng.normal(size=(5,)).astype(np.float16),
      "double": rng.normal(size=(2, 3)).astype(np.float64),
      "bn.num_batches_tracked": np.array(7, np.int64),
      "transposed": _View("shared", 4, (3, 5), (1, 3)),  # A transposed [5, 3] from element 4.
      "contiguous": _View("shared", 20, (2, 10), (10, 1)),
  }
  path = tmp_path / "weights.pth"
  _write_torch_file(path, state_dict, {"shared": shared}, legacy=legacy)
  loaded = fid.read_state_dict(path)
  assert set(loaded) == set(state_dict)
  for name in ("a.weight", "half", "double", "bn.num_batches_tracked"):
    assert loaded[name].dtype == state_dict[name].dtype
    np.testing.assert_array_equal(loaded[name], state_dict[name])
  np.testing.assert_array_equal(loaded["transposed"], shared[4:19].reshape(5, 3).T)
  np.testing.assert_array_equal(loaded["contiguous"], shared[20:].reshape(2, 10))


def test_legacy_storage_view(tmp_path):
  storage = np.arange(12, dtype=np.float32)
  path = tmp_path / "weights.pth"
  view = _View("0", 1, (2, 2), (2, 1), storage_view=(3, 6))  # Elements 3..8, from the 2nd.
  _write_torch_file(path, {"w": view}, {"0": storage}, legacy=True)
  np.testing.assert_array_equal(fid.read_state_dict(path)["w"], [[4, 5], [6, 7]])


def test_full_state_dict_pth_loads_to_the_same_variables(tmp_path, variables):
  state_dict = fid.state_dict_from_variables(variables)
  state_dict["fc.weight"] = np.zeros((1008, 2048), np.float32)  # In the file, unused for pool3.
  state_dict["fc.bias"] = np.zeros((1008,), np.float32)
  state_dict["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
  path = tmp_path / fid.INCEPTION_WEIGHTS_FILE
  _write_torch_file(path, state_dict)
  loaded = fid.load_inception_variables(path)
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_weights_errors_name_the_problem(tmp_path, variables):
  missing = tmp_path / "nowhere.pth"
  with pytest.raises(UserError, match=r"FID needs the Inception weights file "
                                      r"pt_inception-2015-12-05-6726825d\.pth; pass its path"):
    fid.FidEvaluator(missing)
  state_dict = fid.state_dict_from_variables(variables)
  del state_dict["Mixed_6e.branch_pool.bn.running_var"]
  np.savez(tmp_path / "partial.npz", **state_dict)
  with pytest.raises(UserError, match=r"lacks the Inception weight "
                                      r"'Mixed_6e\.branch_pool\.bn\.running_var'"):
    fid.load_inception_variables(tmp_path / "partial.npz")
  state_dict = fid.state_dict_from_variables(variables)
  state_dict["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  np.savez(tmp_path / "wrong.npz", **state_dict)
  with pytest.raises(UserError, match=r"'Conv2d_1a_3x3\.conv\.weight' of shape \(32, 3, 5, 5\)"):
    fid.load_inception_variables(tmp_path / "wrong.npz")
  (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
  with pytest.raises(UserError, match="could not be read"):
    fid.read_state_dict(tmp_path / "garbage.pth")
  with zipfile.ZipFile(tmp_path / "foreign.pth", "w") as archive:
    archive.writestr("foreign/data.pkl", pickle.dumps(collections.Counter(), protocol=2))
  with pytest.raises(UserError, match=r"holds a collections\.Counter object"):
    fid.read_state_dict(tmp_path / "foreign.pth")


def test_image_validation_names_the_argument(evaluator):
  with pytest.raises(UserError, match=r"images must be RGB images of shape"):
    evaluator.features(np.zeros((2, 8, 8), np.float32))
  with pytest.raises(UserError, match=r"images must be RGB images .* got shape \(2, 8, 8, 4\)"):
    evaluator.features(np.zeros((2, 8, 8, 4), np.float32))
  with pytest.raises(UserError, match="images must be uint8 or floats"):
    evaluator.features(np.zeros((2, 8, 8, 3), np.int32))
  with pytest.raises(UserError, match="exactly one of weights_path or variables"):
    fid.FidEvaluator()


# --- statistics ---------------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero():
  features = np.random.default_rng(8).normal(size=(300, 16)) * np.arange(1, 17)
  mu, sigma = fid.feature_statistics(features)
  np.testing.assert_allclose(mu, features.mean(axis=0))
  np.testing.assert_allclose(sigma, np.cov(features.T))
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def _random_spd(rng, dim):
  a = rng.normal(size=(dim, dim))
  return a @ a.T + 0.1 * np.eye(dim)


def test_frechet_distance_against_eigendecomposition_and_diagonal_closed_form():
  rng = np.random.default_rng(9)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  sigma1, sigma2 = _random_spd(rng, 6), _random_spd(rng, 6)
  # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the latter symmetric positive definite.
  eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
  root1 = eigenvectors @ np.diag(np.sqrt(eigenvalues)) @ eigenvectors.T
  trace_root = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1)).sum()
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
  np.testing.assert_allclose(fid.frechet_distance(mu1, sigma1, mu2, sigma2), expected, rtol=1e-9)
  var1, var2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
  expected = np.sum((mu1[:5] - mu2[:5]) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  np.testing.assert_allclose(
      fid.frechet_distance(mu1[:5], np.diag(var1), mu2[:5], np.diag(var2)), expected, rtol=1e-9)


def test_frechet_distance_of_singular_covariances_is_finite():
  rng = np.random.default_rng(10)
  stats1 = fid.feature_statistics(rng.normal(size=(3, 8)))
  stats2 = fid.feature_statistics(rng.normal(size=(3, 8)))
  assert np.isfinite(fid.frechet_distance(*stats1, *stats2))
  with pytest.raises(UserError, match=r"sigma2 must have shape \[8, 8\]"):
    fid.frechet_distance(*stats1, stats2[0], np.eye(7))


def _kid_double_loop(x, y):
  m, dim = x.shape
  kernel = lambda a, b: (a @ b / dim + 1) ** 3
  within = sum(kernel(x[i], x[j]) + kernel(y[i], y[j])
               for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
  return within - 2 * across


def test_kid_against_double_loop():
  rng = np.random.default_rng(11)
  x, y = rng.normal(size=(8, 5)), rng.normal(0.5, 1, size=(8, 5))
  # Subsets of all 8 rows are permutations, which leave MMD^2 unchanged.
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=1000, seed=0)
  np.testing.assert_allclose(mean, _kid_double_loop(x, y), rtol=1e-10)
  assert std < 1e-10
  same = fid.kernel_inception_distance(rng.normal(size=(200, 5)), rng.normal(size=(300, 5)),
                                       num_subsets=20, subset_size=100)
  shifted = fid.kernel_inception_distance(rng.normal(size=(200, 5)),
                                          rng.normal(1, 1, size=(300, 5)), num_subsets=20,
                                          subset_size=100)
  assert abs(same[0]) < 3 * same[1] + 1e-3 and shifted[0] > 10 * abs(same[0])


def test_statistics_files_and_evaluator_fid_inputs(tmp_path, monkeypatch, evaluator, images):
  mu, sigma = evaluator.statistics(images)
  np.testing.assert_array_equal(mu, evaluator.features(images).astype(np.float64).mean(axis=0))
  path = tmp_path / "real_stats.npz"
  fid.save_statistics(path, mu, sigma)
  loaded = fid.load_statistics(path)
  np.testing.assert_array_equal(loaded[0], mu)
  np.testing.assert_array_equal(loaded[1], sigma)
  # A 2048-d matrix root takes ~15 s on 2 CPU cores; check what reaches the distance instead.
  monkeypatch.setattr(fid, "frechet_distance", lambda *stats: stats)
  for real in ((mu, sigma), path, images):
    real_mu, real_sigma, fake_mu, fake_sigma = evaluator.fid(images[:2], real)
    np.testing.assert_allclose(real_mu, mu, rtol=1e-6)
    np.testing.assert_allclose(real_sigma, sigma, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(fake_mu, fid.feature_statistics(
        evaluator.features(images[:2]))[0], rtol=1e-6)
  np.savez(tmp_path / "bad_stats.npz", mean=mu)
  with pytest.raises(UserError, match="must be an .npz with arrays 'mu' and 'sigma'"):
    fid.load_statistics(tmp_path / "bad_stats.npz")
  with pytest.raises(UserError, match="does not exist"):
    evaluator.fid(images, tmp_path / "missing.npz")
