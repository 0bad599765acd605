"""PPD block towers: determinism, exact re-simulation, the generator's statistics, the rest
check, the renderer and the tfds round trip."""

import math

import numpy as np
import pytest

from data import block_towers as bt
from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry as g
from lite_jax.ppd import physics

SEED = 5
SIZE = 32
SPLIT = {"num_train": 3, "num_validation": 2, "num_test": 1}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  """The three splits of a tiny builder (6 scenes at 32 px, ~1 s)."""
  config = bt.default_data_config(data_dir=str(tmp_path_factory.mktemp("towers")),
                                  image_size=SIZE, seed=SEED, **SPLIT)
  return {split: bt.load_split(config, split) for split in bt.SPLITS}


def test_splits_hold_consecutive_scenes_with_documented_fields(records):
  assert [len(records[s]) for s in bt.SPLITS] == [3, 2, 1]
  example = records["validation"][1]
  expected = bt.generate(1, SEED, image_size=SIZE, start=4)  # train 0-2, validation 3-4
  assert sorted(example) == sorted(expected)
  for key, value in example.items():
    np.testing.assert_array_equal(value, expected[key][0], err_msg=key)
  p, f = bt.MAX_BLOCKS, bt.FRAMES
  shapes = {"image": (SIZE, SIZE, 3), "voxels": (32, 32, 32), "trajectory": (f, p, 7),
            "ball_trajectory": (f, 3), "size": (p, 3), "quaternion": (p, 4), "valid": (p,),
            "density_bin": (p,), "count": ()}
  for key, shape in shapes.items():
    assert example[key].shape == shape, key
  assert example["image"].dtype == np.float32 and 0 <= example["image"].min()
  assert example["image"].max() <= 1 and example["voxels"].dtype == np.float32
  count = int(example["count"])
  np.testing.assert_array_equal(example["valid"], np.arange(p) < count)
  np.testing.assert_array_equal(example["trajectory"][:, count:], 0)
  with pytest.raises(IndexError):
    records["test"][1]
  with pytest.raises(UserError, match="split 'val' is not one of train, validation, test"):
    bt.load_split(bt.default_data_config(), "val")


def test_scenes_are_deterministic_by_seed(records):
  first = bt.make_scene(bt.scene_rng(SEED, 0), SIZE)
  again = bt.make_scene(bt.scene_rng(SEED, 0), SIZE)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  other = bt.make_scene(bt.scene_rng(SEED + 1, 0), SIZE)
  assert not np.array_equal(first["size"], other["size"])


def test_resimulating_the_ground_truth_reproduces_the_trajectory(records):
  for split in bt.SPLITS:
    for example in records[split]:
      primitives = g.Primitives.from_example(example)
      trajectory = physics.simulate(primitives, bt.pendulum_from_example(example),
                                    steps=bt.STEPS)
      count = int(example["count"])
      mae = np.abs(trajectory.blocks.astype(np.float32) - example["trajectory"][:, :count])
      assert mae.mean() == 0.0
      np.testing.assert_array_equal(trajectory.ball.astype(np.float32),
                                    example["ball_trajectory"])


def test_towers_start_at_rest_and_the_ball_moves_them(records):
  examples = [e for s in bt.SPLITS for e in records[s]]
  for example in examples:
    primitives = g.Primitives.from_example(example)
    # Independent of the generator's 0.5 s check: 1 s of the tower alone.
    alone = physics.simulate(primitives, None, steps=500, frame_every=500).blocks
    assert np.abs(alone[-1, :, :3] - alone[0, :, :3]).max() < 2 * bt.SETTLE_SHIFT
    assert example["settle_shift"] <= bt.SETTLE_SHIFT
    # Stacked exactly: each block's bottom is the top of the one below.
    bottom = primitives.position[:, 2] - primitives.size[:, 2] / 2
    top = primitives.position[:, 2] + primitives.size[:, 2] / 2
    np.testing.assert_allclose(bottom, np.concatenate([[0], top[:-1]]), atol=1e-6)
  moved = [np.abs(e["trajectory"][-1, :, :3] - e["trajectory"][0, :, :3]).max()
           for e in examples]
  assert max(moved) > 0.01  # some strike knocks a block by more than a centimetre


def test_generator_statistics():
  """2000 draws (no simulation): counts, shapes, sizes and density bins over their ranges."""
  towers = [bt.sample_tower(bt.scene_rng(SEED, i)) for i in range(2000)]
  counts = np.array([len(t.primitives) for t in towers])
  for c in range(1, 5):  # uniform over 1..4: 500 expected, 4.5 sigma = 87
    assert abs((counts == c).sum() - 500) < 90
  blocks = [t.primitives for t in towers]
  density = np.concatenate([b.density for b in blocks])
  bins = bt.density_bin(density)
  assert set(bins.tolist()) == set(range(bt.NUM_DENSITY_BINS))
  assert 100 <= density.min() and density.max() <= 10000
  edges = bt.bin_edges()
  assert np.all((edges[bins] <= density * (1 + 1e-6)) & (density <= edges[bins + 1] * (1 + 1e-6)))
  np.testing.assert_allclose(bt.density_bin(bt.bin_density(np.arange(100))), np.arange(100))
  assert math.isclose(edges[1] / edges[0], 100 ** 0.01)
  shape = np.concatenate([b.shape for b in blocks])
  assert abs((shape == g.CYLINDER).mean() - bt.CYLINDER_PROBABILITY) < 0.03
  size = np.concatenate([b.size for b in blocks])
  assert size[:, :2].min() >= 0.04 and size[:, :2].max() <= 0.10
  assert size[:, 2].min() >= 0.03 and size[:, 2].max() <= 0.10
  cyl = size[shape == g.CYLINDER]
  np.testing.assert_array_equal(cyl[:, 0], cyl[:, 1])
  materials = np.concatenate([t.material for t in towers])
  assert set(materials.tolist()) == set(range(len(bt.MATERIALS)))


def test_rest_check_rejects_toppling_and_colliding_towers():
  tower = bt.sample_tower(bt.scene_rng(SEED, 0))
  two = g.Primitives(np.array([g.BOX, g.BOX]), np.array([[0.05, 0.05, 0.05]] * 2),
                     np.array([[0, 0, 0.025], [0.04, 0, 0.075]]),  # centre past the edge
                     np.array([[1.0, 0, 0, 0]] * 2), np.array([500.0, 500.0]))
  toppling = bt.Tower(two, np.zeros(2, int), np.ones((2, 3)), tower.pendulum, 0)
  ok, shift, _ = bt.rest_check(toppling)
  assert not ok and shift > 0.01
  inside = physics.Pendulum(pivot=(0.0, 0.0, 0.33), azimuth=0.0, length=0.3, angle=0.01)
  assert not bt.rest_check(bt.Tower(two, np.zeros(2, int), np.ones((2, 3)), inside, 0))[0]
  # Rejections are counted in the records: the first scenes of seed 0 rejected some draws.
  rejections = [bt.draw_tower(bt.scene_rng(0, i))[1] for i in range(12)]
  assert sum(rejections) > 0


def test_render_draws_the_scene(records):
  example = records["train"][0]
  primitives = g.Primitives.from_example(example)
  colors = np.tile([[1.0, 0.0, 1.0]], (len(primitives), 1))  # magenta: no other object has it
  image = bt.render(primitives, colors, bt.pendulum_from_example(example), 48)
  assert image.shape == (48, 48, 3) and image.dtype == np.uint8
  magenta = (image[..., 1] < 10) & (image[..., 0] > 60) & (image[..., 0] == image[..., 2])
  assert magenta.sum() > 10
  # The ball is drawn where the camera sees its centre (a pinhole projection by hand).
  eye, target, fov = (np.asarray(v, np.float64) for v in bt.CAMERA)
  ball = bt.pendulum_from_example(example).ball_position(float(example["ball_angle"]))
  forward = (target - eye) / np.linalg.norm(target - eye)
  right = np.cross(forward, [0, 0, 1.0])
  right /= np.linalg.norm(right)
  up = np.cross(right, forward)
  rel = ball - eye
  scale = math.tan(math.radians(float(fov)) / 2) * (rel @ forward)
  col = int(((rel @ right) / scale + 1) / 2 * 48)
  row = int((1 - (rel @ up) / scale) / 2 * 48)
  np.testing.assert_allclose(image[row, col] / 255, bt.BALL_COLOR, atol=0.5)
  assert image[row, col, 0] > image[row, col, 2]  # copper, not the sky
  with pytest.raises(UserError, match="image size must be a positive integer"):
    bt.render(primitives, colors, None, 0)


def test_voxels_match_the_blocks_volume(records):
  for example in records["train"]:
    volume = g.volumes(g.Primitives.from_example(example)).sum()
    cell = (0.5 / 32) ** 3
    assert abs(example["voxels"].sum() * cell / volume - 1) < 0.35


def test_config_errors():
  with pytest.raises(UserError, match="'image' is not a data config field"):
    bt.default_data_config(image=3)
  with pytest.raises(UserError, match="data.num_train must be a positive integer"):
    bt.towers_builder(bt.default_data_config(num_train=0))


def test_mirror_reflects_the_scene_in_x(records):
  example = records["train"][0]
  mirrored = bt.mirror_x(example)
  n = int(example["count"])
  prims = g.Primitives.from_example(example)
  reflected = g.Primitives(prims.shape, prims.size, mirrored["position"][:n].astype(np.float64),
                           mirrored["quaternion"][:n].astype(np.float64), prims.density)
  # The mirrored voxels are the mirrored blocks' voxelization, and rotations are M R M.
  np.testing.assert_array_equal(mirrored["voxels"] > 0.5, g.voxelize(reflected))
  m = np.diag([-1.0, 1.0, 1.0])
  np.testing.assert_allclose(g.quaternion_to_matrix(reflected.quaternion),
                             m @ g.quaternion_to_matrix(prims.quaternion) @ m, atol=1e-6)
  np.testing.assert_array_equal(mirrored["image"], example["image"][:, ::-1])
  assert mirrored["trajectory"][0, 0, 0] == -example["trajectory"][0, 0, 0]
  again = bt.mirror_x(mirrored)
  for key in bt.MIRRORED:
    np.testing.assert_array_equal(again[key], example[key])
