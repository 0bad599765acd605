"""PSD data: the Shapes generator against spec §4, the tfds round trip and the file loaders."""

import dataclasses
import logging
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from data import shapes_motion as sm
from lite_jax.core.errors import UserError

NUM_SCENES = 2000
SEED = 11


@pytest.fixture(scope="module")
def scenes():
  """2000 scenes at 32 px, shared by the statistical tests (2-4 s)."""
  return sm.generate(NUM_SCENES, SEED, size=32)


def _within_binomial(count, n, p, sigmas=4.5):
  return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_scene_modes_have_the_reference_frequencies_and_objects(scenes):
  mode = scenes["mode"]
  for modes, p in (((0,), .1), ((1, 2), .2), ((3, 4), .2), ((5, 6, 7, 8, 9), .5)):
    count = int(np.isin(mode, modes).sum())
    assert _within_binomial(count, NUM_SCENES, p), (modes, count)
  expected = np.array([[True, m >= 3, m in (1, 2) or m >= 5] for m in mode])
  np.testing.assert_array_equal(scenes["present"], expected)


def test_flow_is_float32_bounded_and_motions_follow_the_hierarchy(scenes):
  flow = scenes["flow"]
  assert flow.dtype == np.float32 and flow.shape == (NUM_SCENES, 32, 32, 2)
  assert np.abs(flow).max() <= 0.2
  paper = sm.generate(2, SEED)["flow"]  # the paper's size by default
  assert paper.dtype == np.float32 and paper.shape == (2, 128, 128, 2)
  assert np.abs(paper).max() <= 0.2
  pixels = np.rint(scenes["motions"] * sm.CANVAS).astype(int)  # motions are integer pixels
  np.testing.assert_allclose(pixels / sm.CANVAS, scenes["motions"], atol=1e-7)
  present = scenes["present"]
  np.testing.assert_array_equal(pixels[~present], 0)
  circle = pixels[:, 0]
  np.testing.assert_array_equal(circle[:, 0], circle[:, 1])  # diagonal
  relative = pixels - circle[:, None]
  square, triangle = relative[present[:, 1], 1], relative[present[:, 2], 2]
  np.testing.assert_array_equal(square[:, 0], 0)  # vertical only
  np.testing.assert_array_equal(triangle[:, 1], 0)  # horizontal only
  # randint(-51, 51) draws -51..50: over ~1000 draws each end appears.
  for r in (circle[:, 0], square[:, 1], triangle[:, 0]):
    assert (r.min(), r.max()) == (-sm.MOTION_RANGE, sm.MOTION_RANGE - 1)


def test_scene_draws_cover_the_reference_ranges():
  draws = [sm.sample_scene(np.random.default_rng([3, i])) for i in range(1500)]
  sizes = np.concatenate([d.sizes[d.present] for d in draws])
  assert (sizes.min(), sizes.max()) == (102, 152)
  circle = np.stack([d.centers[0] for d in draws]) - 256
  children = np.concatenate([d.centers[d.present][1:] - d.centers[0] for d in draws])
  for offsets in (circle, children):
    assert (offsets.min(), offsets.max()) == (-102, 101)
  background = np.stack([d.background for d in draws])
  assert (background.min(), background.max()) == (181, 255)
  # Each object gets one of the bluish / greenish / reddish colours, all three in a scene.
  dominant = np.stack([np.argmax(np.asarray(d.colors, int), axis=1) for d in draws])
  np.testing.assert_array_equal(np.sort(dominant, axis=1), np.tile([0, 1, 2], (1500, 1)))
  assert {tuple(row) for row in dominant} == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0),
                                              (2, 0, 1), (2, 1, 0)}


def _uniform_interior(ids):
  """bool `[N, H-2, W-2]`: pixels whose 3x3 neighbourhood holds one id (away from edges)."""
  h, w = ids.shape[1:]
  centre = ids[:, 1:-1, 1:-1]
  same = np.ones_like(centre, bool)
  for dy in (0, 1, 2):
    for dx in (0, 1, 2):
      same &= ids[:, dy:dy + h - 2, dx:dx + w - 2] == centre
  return same, centre


def test_flow_is_the_motion_of_the_object_under_each_pixel(scenes):
  same, ids = _uniform_interior(scenes["object_ids"])
  table = np.concatenate([np.zeros((NUM_SCENES, 1, 2), np.float32), scenes["motions"]], 1)
  expected = np.take_along_axis(table, ids.reshape(NUM_SCENES, -1, 1), 1).reshape(
      ids.shape + (2,))
  flow = scenes["flow"][:, 1:-1, 1:-1]
  np.testing.assert_allclose(flow[same], expected[same], atol=1e-6)
  background = same & (ids == 0)
  assert background.sum() > NUM_SCENES * 100
  np.testing.assert_array_equal(flow[background], 0)  # background flow is exactly 0
  assert set(np.unique(ids[same])) == {0, 1, 2, 3}


def _alone(kind, center, size):
  """A scene holding only object `kind` at `center`."""
  present, centers, sizes = np.zeros(3, bool), np.zeros((3, 2), int), np.zeros(3, int)
  present[kind], centers[kind], sizes[kind] = True, center, size
  return sm.Scene(mode=9, present=present, colors=np.zeros((3, 3), np.uint8),
                  background=np.zeros(3, np.uint8), centers=centers, sizes=sizes,
                  motions=np.zeros((3, 2), int))


def test_canvas_raster_matches_closed_forms():
  grid = np.arange(sm.CANVAS)
  for size in (102, 127, 152):
    r = size // 2  # Gauss circle count: lattice points with dx^2 + dy^2 <= r^2
    circle = sm.label_map(_alone(0, (200, 300), size), 0, grid, grid)
    assert (circle == 1).sum() == sum(2 * math.isqrt(r * r - dy * dy) + 1
                                      for dy in range(-r, r + 1))
    square = sm.label_map(_alone(1, (250, 260), size), 0, grid, grid)
    ys, xs = np.nonzero(square == 2)
    assert (xs.min(), xs.max(), ys.min(), ys.max(), len(xs)) == (
        250 - r, 250 + r, 260 - r, 260 + r, (2 * r + 1) ** 2)
    triangle = sm.label_map(_alone(2, (256, 256), size), 0, grid, grid) == 3
    ys, xs = np.nonzero(triangle)
    top, base = int(256 - size * math.sqrt(3) / 3), int(256 + size * math.sqrt(3) / 6)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (256 - r, 256 + r, top, base)
    assert triangle[top, 256] and triangle[base, 256 - r] and not triangle[top, 255]
    # Area s^2 sqrt(3) / 4; the lattice count differs by about half the perimeter.
    assert abs(len(xs) - size * size * math.sqrt(3) / 4) < 2 * size
  # Drawing order circle, square, triangle: later objects occlude earlier ones.
  stacked = sm.Scene(mode=9, present=np.ones(3, bool), colors=np.zeros((3, 3), np.uint8),
                     background=np.zeros(3, np.uint8), centers=np.full((3, 2), 256),
                     sizes=np.array([152, 102, 102]), motions=np.zeros((3, 2), int))
  labels = sm.label_map(stacked, 0, grid, grid)
  assert (labels[256, 256 + 60], labels[256 + 45, 256 + 45], labels[256, 256]) == (1, 2, 3)
  # Objects off the canvas are clipped, not wrapped.
  clipped = sm.label_map(_alone(0, (-20, 5), 102), 0, grid, grid)
  assert clipped[:, 40:].sum() == 0 and clipped[0, 0] == 1 and clipped[-1].sum() == 0


def test_scene_at_canvas_size_has_the_drawn_colours_and_motions():
  # At canvas size nothing blends: each pixel has its topmost object's colour and motion.
  example = sm.render_scene(sm.scene_rng(5, 3), sm.CANVAS)
  scene = sm.sample_scene(sm.scene_rng(5, 3))  # render_scene draws the same scene first
  ids = example["object_ids"]
  assert set(np.unique(ids)) == {0, *(1 + np.nonzero(scene.present)[0])}
  colours = np.concatenate([scene.background[None], scene.colors]).astype(np.float32)
  np.testing.assert_array_equal(example["image1"] * 255, colours[ids])
  motions = np.concatenate([np.zeros((1, 2)), scene.motions]) / sm.CANVAS
  np.testing.assert_allclose(example["flow"], motions[ids], atol=1e-7)
  # Frame 2: every object moved by its own absolute motion (drawing order kept).
  grid = np.arange(sm.CANVAS)
  for k in np.nonzero(scene.present)[0]:
    alone = dataclasses.replace(scene, present=np.arange(3) == k)
    before = sm.label_map(alone, 0, grid, grid)
    after = sm.label_map(alone, 1, grid, grid)
    dx, dy = scene.motions[k]
    shifted = np.zeros_like(before)
    shifted[max(dy, 0):sm.CANVAS + min(dy, 0), max(dx, 0):sm.CANVAS + min(dx, 0)] = before[
        max(-dy, 0):sm.CANVAS - max(dy, 0), max(-dx, 0):sm.CANVAS - max(dx, 0)]
    inner = (slice(110, -110),) * 2  # away from where the object could enter from off-canvas
    np.testing.assert_array_equal(after[inner], shifted[inner])
  np.testing.assert_array_equal(
      example["image2"] * 255,
      colours[sm.label_map(scene, 1, grid, grid)])


def test_resize_matches_jax_and_the_scene_is_the_resized_canvas():
  import jax
  rng = np.random.default_rng(0)
  for shape, out in (((40, 24, 3), (10, 8)), ((6, 10, 2), (15, 17))):
    array = rng.normal(size=shape)
    expected = jax.image.resize(array, out + shape[2:], "linear", antialias=False)
    np.testing.assert_allclose(sm.resize_bilinear(array, *out), expected, atol=1e-5)
  # The generator rasterizes only the pixels that the resize reads: same result.
  full = sm.render_scene(sm.scene_rng(2, 7), sm.CANVAS)
  small = sm.render_scene(sm.scene_rng(2, 7), 32)
  np.testing.assert_array_equal(
      small["image1"] * 255, np.floor(sm.resize_bilinear(full["image1"] * 255, 32, 32) + 0.5))
  np.testing.assert_allclose(small["flow"], sm.resize_bilinear(full["flow"], 32, 32), atol=1e-7)


def test_generate_is_deterministic_and_scene_i_depends_only_on_seed_and_i():
  ten = sm.generate(10, 7, size=16)
  part = sm.generate(4, 7, size=16, start=3)
  again = sm.generate(10, 7, size=16)
  for key in ten:
    np.testing.assert_array_equal(part[key], ten[key][3:7])
    np.testing.assert_array_equal(again[key], ten[key])
  other = sm.generate(10, 8, size=16)
  assert not np.array_equal(other["image1"], ten["image1"])
  assert ten["image1"].dtype == np.float32 and ten["object_ids"].dtype == np.int32


def test_builder_round_trip_equals_generate(tmp_path):
  config = sm.default_data_config(image_size=16, num_train=5, num_validation=3, num_test=2,
                                  seed=4, data_dir=str(tmp_path))
  starts = {"train": 0, "validation": 5, "test": 8}  # disjoint scene ranges
  for split, start in starts.items():
    records = sm.load_split(config, split)
    expected = sm.generate(config[f"num_{split}"], 4, size=16, start=start)
    assert len(records) == config[f"num_{split}"]
    for i in range(len(records)):
      item = records[i]
      assert sorted(item) == ["flow", "image1", "image2", "object_ids"]
      for key, value in item.items():
        assert value.dtype == expected[key].dtype
        np.testing.assert_array_equal(value, expected[key][i])
  builder = sm.shapes_builder(config)
  assert builder.data_dir.endswith("size16_train5_val3_test2_seed4/1.0.0")
  with pytest.raises(IndexError):
    records[len(records)]


def test_opening_a_generated_split_does_not_warn_about_its_custom_config(tmp_path, caplog):
  """tfds warns "Using custom data configuration" for every config it does not list; the
  generated datasets are all such configs by design, so `data` filters that warning out."""
  config = sm.default_data_config(image_size=16, num_train=2, num_validation=1, num_test=1,
                                  seed=5, data_dir=str(tmp_path))
  with caplog.at_level(logging.INFO):
    sm.load_split(config, "test")
    logging.getLogger("absl").warning("another absl warning")
  messages = [r.getMessage() for r in caplog.records]
  assert "another absl warning" in messages
  assert not [m for m in messages if m.startswith("Using custom data configuration")]


def _save_png(path, array):
  Image.fromarray(array).save(path)


def _write_reference_folder(folder, rng, size=8):
  folder.mkdir()
  arrays = {}
  for i in (1, 2, 3, 4):
    im1, im2 = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    flow = rng.uniform(-0.2, 0.2, (2, size, size)).astype(np.float32)
    _save_png(folder / f"{i}_im1.png", im1)
    _save_png(folder / f"{i}_im2.png", im2)
    np.save(folder / f"{i}_f.npy", flow)
    arrays[i] = (im1, im2, flow)
  (folder / "train.txt").write_text("1\n2\n3\n")
  (folder / "test.txt").write_text("4\n")
  return arrays


def test_reference_layout_loader(tmp_path):
  arrays = _write_reference_folder(tmp_path / "ref", np.random.default_rng(1))
  config = sm.default_data_config(source="reference", path=str(tmp_path / "ref"), image_size=8)
  train = sm.load_split(config, "train")
  assert len(train) == 3 and len(sm.load_split(config, "test")) == 1
  for i, item in zip((1, 2, 3), train):
    im1, im2, flow = arrays[i]
    np.testing.assert_allclose(item["image1"], im1 / 255, atol=1e-7)
    np.testing.assert_allclose(item["image2"], im2 / 255, atol=1e-7)
    np.testing.assert_array_equal(item["flow"], flow.transpose(1, 2, 0))
    np.testing.assert_array_equal(item["object_ids"], -1)
    assert item["flow"].dtype == np.float32 and item["object_ids"].dtype == np.int32
  # Another size: resized bilinearly, relative flow values unchanged.
  upsampled = sm.load_split(sm.default_data_config(
      source="reference", path=str(tmp_path / "ref"), image_size=16), "test")
  np.testing.assert_allclose(upsampled[0]["flow"],
                             sm.resize_bilinear(arrays[4][2].transpose(1, 2, 0), 16, 16),
                             atol=1e-6)
  # train.txt and test.txt take every id: no validation split is left.
  with pytest.raises(UserError, match=r"holds no validation examples .*validation\.txt"):
    sm.load_split(config, "validation")
  # Without lists, ids split by crc32 into disjoint train / validation / test.
  for name in ("train.txt", "test.txt"):
    (tmp_path / "ref" / name).unlink()
  share = {i: {0: "test", 1: "validation"}.get(zlib.crc32(str(i).encode()) % 10, "train")
           for i in (1, 2, 3, 4)}
  for split in sm.SPLITS:
    expected = [str(tmp_path / "ref" / f"{i}_f.npy") for i in share if share[i] == split]
    if expected:
      assert [p.flow for p in sm.load_split(config, split).pairs] == expected
    else:
      with pytest.raises(UserError, match=f"holds no {split} examples"):
        sm.load_split(config, split)


def _write_flo(path, flow_pixels):
  h, w, _ = flow_pixels.shape
  with open(path, "wb") as f:
    f.write(struct.pack("<fii", 202021.25, w, h))
    f.write(np.asarray(flow_pixels, "<f4").tobytes())


def test_pairs_loader_reads_flo_and_npy_and_rescales_squashed_frames(tmp_path):
  rng = np.random.default_rng(2)
  frames = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  _save_png(tmp_path / "a.png", frames[0])
  _save_png(tmp_path / "b.png", frames[1])
  flow_pixels = rng.uniform(-3, 3, (8, 8, 2)).astype(np.float32)
  _write_flo(tmp_path / "ab.flo", flow_pixels)
  # A wide .flo pair (6 x 10): pixels / width, then squashed to 8 x 8.
  _save_png(tmp_path / "e.png", rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
  wide_flo = rng.uniform(-3, 3, (6, 10, 2)).astype(np.float32)
  _write_flo(tmp_path / "ee.flo", wide_flo)
  # A wide pair (8 x 16) with constant flow, given channels first.
  wide = rng.integers(0, 256, (2, 8, 16, 3), dtype=np.uint8)
  _save_png(tmp_path / "c.png", wide[0])
  _save_png(tmp_path / "d.png", wide[1])
  np.save(tmp_path / "cd.npy", np.stack([np.full((8, 16), 0.05), np.full((8, 16), -0.02)]))
  (tmp_path / "train.txt").write_text("# frame1 frame2 flow\na.png b.png ab.flo\n\n"
                                      "c.png d.png cd.npy\ne.png e.png ee.flo\n")
  config = sm.default_data_config(source="pairs", path=str(tmp_path), image_size=8)
  first, second, third = sm.load_split(config, "train")
  np.testing.assert_allclose(
      third["flow"], sm.resize_bilinear(wide_flo / 10, 8, 8) * [1, 10 / 6], rtol=1e-5)
  np.testing.assert_allclose(first["flow"], flow_pixels / 8, rtol=1e-6)  # pixels / width
  np.testing.assert_allclose(first["image1"], frames[0] / 255, atol=1e-7)
  np.testing.assert_array_equal(first["object_ids"], -1)
  # Squashed to 8 x 8: x keeps its value in widths, y (measured in widths) doubles.
  np.testing.assert_allclose(second["flow"][..., 0], 0.05, rtol=1e-6)
  np.testing.assert_allclose(second["flow"][..., 1], -0.04, rtol=1e-6)
  assert second["image1"].shape == (8, 8, 3)
  # One list file: its lines split by crc32 into disjoint train / validation / test.
  lines = [f"{i}/../a.png b.png ab.flo" for i in range(40)]
  for i in range(40):
    (tmp_path / str(i)).mkdir()
  (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
  (tmp_path / "train.txt").unlink()
  single = sm.default_data_config(source="pairs", path=str(tmp_path / "all.txt"), image_size=8)
  splits = {s: sm.load_split(single, s).pairs for s in sm.SPLITS}
  names = [{p.image1 for p in pairs} for pairs in splits.values()]
  assert sum(map(len, names)) == 40 and len(set.union(*names)) == 40
  assert len(names[0]) > len(names[1]) and len(names[0]) > len(names[2])


def _reference_with(tmp_path, flow):
  folder = tmp_path / "bad"
  folder.mkdir(exist_ok=True)
  image = np.zeros((8, 8, 3), np.uint8)
  _save_png(folder / "1_im1.png", image)
  _save_png(folder / "1_im2.png", image)
  np.save(folder / "1_f.npy", flow)
  (folder / "train.txt").write_text("1\n")
  return sm.default_data_config(source="reference", path=str(folder), image_size=8)


def test_bad_inputs_are_one_sentence_naming_the_file(tmp_path):
  wrong_shape = _reference_with(tmp_path, np.zeros((3, 8, 8), np.float32))
  with pytest.raises(UserError, match=r"1_f\.npy has shape \(3, 8, 8\), not \(2, H, W\)"):
    sm.load_split(wrong_shape, "train")
  mismatch = _reference_with(tmp_path, np.zeros((2, 6, 6), np.float32))
  with pytest.raises(UserError, match=r"1_f\.npy is 6x6 but its frames are 8x8"):
    sm.load_split(mismatch, "train")
  (tmp_path / "bad" / "1_im2.png").unlink()
  with pytest.raises(UserError, match=r"image file .*1_im2\.png is missing\."):
    sm.load_split(mismatch, "train")
  _save_png(tmp_path / "bad" / "1_im2.png", np.zeros((9, 8, 3), np.uint8))
  with pytest.raises(UserError, match=r"frames .*1_im1\.png \(8x8\) and .*1_im2\.png \(9x8\)"):
    sm.load_split(mismatch, "train")
  (tmp_path / "x.flo").write_bytes(b"FLOW" + bytes(8))  # "PIEH" is the magic
  _save_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
  (tmp_path / "pairs.txt").write_text("x.png x.png x.flo\n")
  pairs = sm.default_data_config(source="pairs", path=str(tmp_path / "pairs.txt"))
  with pytest.raises(UserError, match=r"x\.flo is not a Middlebury \.flo file"):
    [sm.load_split(pairs, s) for s in sm.SPLITS]
  (tmp_path / "pairs.txt").write_text("x.png x.png\n")
  with pytest.raises(UserError, match=r"pairs\.txt has the line 'x\.png x\.png', not"):
    [sm.load_split(pairs, s) for s in sm.SPLITS]
  with pytest.raises(UserError, match=r"data\.source 'video' is not one of shapes, "):
    sm.load_split(sm.default_data_config(source="video"), "train")
  with pytest.raises(UserError, match=r"split 'val' is not one of"):
    sm.load_split(sm.default_data_config(), "val")
  with pytest.raises(UserError, match=r"'size' is not a data config field"):
    sm.default_data_config(size=64)
  with pytest.raises(UserError, match=r"data\.num_train must be a positive integer"):
    sm.shapes_builder(sm.default_data_config(num_train=0, data_dir=str(tmp_path)))
