"""PPD model, losses, metrics and physics refinement, each against an independent reference
(numpy formulas, hand-built scenes simulated with `physics.simulate`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import block_towers
from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry as g
from lite_jax.ppd import metrics, model, physics, refine

B, S, P, F = 2, 16, 4, 6


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((B, S, S, 3), np.float32), (rng.random((B, 32, 32, 32)) > 0.9)
          .astype(np.float32), rng.normal(size=(B, F, P, 7)).astype(np.float32),
          rng.normal(size=(B, F, 3)).astype(np.float32))


def _tiny(use_trajectory, readout="attention", camera=block_towers.CAMERA):
  return model.PPD(use_trajectory=use_trajectory, code_features=8, hidden=8,
                   encoder_features=8, voxel_widths=(4,), image_widths=(4,),
                   trajectory_widths=(4,), slot_features=2, readout=readout, camera=camera,
                   max_points=K)


K = 4096  # attended voxels: the random grids of `_inputs` occupy ~3,300


@pytest.fixture(scope="module")
def applied():
  """{use_trajectory: (apply, params)} of two tiny models, jitted once each."""
  out = {}
  for use in (True, False):
    net = _tiny(use)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), *_inputs())
    out[use] = (jax.jit(net.apply), params)
  return out


def test_output_shapes_and_unit_quaternions(applied):
  apply, params = applied[True]
  out = apply(params, *_inputs())
  expected = {"shape_logits": (B, P, 2), "size": (B, P, 3), "position": (B, P, 3),
              "quaternion": (B, P, 4), "density_logits": (B, P, 100), "stop": (B, P),
              "voxel_attention": (B, P, K), "voxel_points": (B, K, 3), "voxel_real": (B, K)}
  assert {k: v.shape for k, v in out.items()} == expected
  np.testing.assert_allclose(np.linalg.norm(out["quaternion"], axis=-1), 1.0, atol=1e-5)
  # Attention is a distribution over the occupied voxels only, which are the grid's.
  attention, real = np.asarray(out["voxel_attention"]), np.asarray(out["voxel_real"])
  np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
  assert attention[np.broadcast_to(~real[:, None], attention.shape)].max() < 1e-12
  voxels = _inputs()[1]
  assert real.sum(-1).tolist() == voxels.reshape(B, -1).sum(-1).astype(int).tolist()
  occupied = g.voxel_centres()[voxels[0] > 0.5]  # [x, y, z] index order, as the model's
  np.testing.assert_allclose(out["voxel_points"][0][real[0]], occupied, atol=1e-6)


@pytest.mark.parametrize("readout,camera", [("global", None), ("attention", None)])
def test_the_other_readouts_run_with_the_same_heads(readout, camera):
  net = _tiny(True, readout, camera)
  out = jax.eval_shape(net.init_with_output, jax.random.PRNGKey(0), *_inputs())[0]
  assert out["size"].shape == (B, P, 3)
  assert ("voxel_attention" in out) == (readout == "attention")
  with pytest.raises(UserError, match=r"^model.readout must be 'attention' or 'global', "):
    _tiny(True, "slots").init(jax.random.PRNGKey(0), *_inputs())


def test_projection_inverts_the_renderers_rays():
  eye, directions = block_towers.camera_rays(6)
  uv = g.project(eye + 0.6 * directions, block_towers.CAMERA).reshape(6, 6, 2)
  centres = (np.arange(6) + 0.5) / 6 * 2 - 1
  np.testing.assert_allclose(uv[..., 0], np.broadcast_to(centres, (6, 6)), atol=1e-9)
  np.testing.assert_allclose(uv[..., 1], np.broadcast_to(centres[:, None], (6, 6)), atol=1e-9)


def _box_scene(shape, size, yaw, position=(0.01, -0.02, 0.06)):
  prims = g.Primitives(np.array([shape]), np.array([size]), np.array([position]),
                       np.array([_yaw(yaw)], np.float64), np.array([500.0]))
  return prims, g.voxel_centres()[g.voxelize(prims)]


def test_attention_on_a_blocks_voxels_gives_its_centre_sides_and_yaw():
  features = {}
  for name, shape, size, yaw in (("long", g.BOX, (0.10, 0.05, 0.06), 0.5),
                                 ("square", g.BOX, (0.09, 0.09, 0.06), 0.3),
                                 ("disk", g.CYLINDER, (0.09, 0.09, 0.06), 0.0)):
    prims, points = _box_scene(shape, size, yaw)
    weights = np.full((1, len(points)), 1 / len(points), np.float32)
    f = np.asarray(model.voxel_moment_features(weights, points[None] / model.METRES_PER_UNIT
                                               ).astype(np.float32))[0]
    features[name] = f
    np.testing.assert_allclose(f[:3] * model.METRES_PER_UNIT, prims.position[0], atol=0.004)
    assert abs(f[5] * model.METRES_PER_UNIT - size[2]) < 0.016  # height, within a voxel
  # psi_2 (cos, sin of psi / 2) of the long box, modulo 180 degrees; psi_4 of the square,
  # modulo 90 degrees.
  long_half = math.atan2(features["long"][10], features["long"][9]) * 2
  assert abs((long_half - 0.5 + math.pi / 2) % math.pi - math.pi / 2) < 0.12
  square_half = math.atan2(features["square"][12], features["square"][11]) * 2
  assert abs((square_half - 0.3 + math.pi / 4) % (math.pi / 2) - math.pi / 4) < 0.12
  assert features["disk"][13] < 0.5 * features["square"][13]  # |E[(dx + i dy)^4]| / E[r^2]^2


def test_inside_primitives_agrees_with_the_numpy_geometry():
  rng = np.random.default_rng(4)
  shape = np.array([g.BOX, g.CYLINDER, g.BOX])
  size = rng.uniform(0.04, 0.1, (3, 3))
  size[1, 1] = size[1, 0]
  position = rng.uniform(-0.05, 0.05, (3, 3)) + [0, 0, 0.1]
  quaternion = np.array([_yaw(0.4), _yaw(-1.1), [0.9, 0.3, 0.1, 0.2]], np.float64)
  quaternion /= np.linalg.norm(quaternion, axis=-1, keepdims=True)
  prims = g.Primitives(shape, size, position, quaternion, np.full(3, 500.0))
  points = rng.uniform([-0.1, -0.1, 0.0], [0.1, 0.1, 0.2], (4000, 3))
  targets = {"shape": jnp.asarray(shape)[None], "size": jnp.asarray(size, jnp.float32)[None],
             "position": jnp.asarray(position, jnp.float32)[None],
             "quaternion": jnp.asarray(quaternion, jnp.float32)[None]}
  ours = np.asarray(model.inside_primitives(jnp.asarray(points, jnp.float32)[None], targets))[0]
  reference = g.contains(prims, points)
  assert reference.sum() > 300 and (ours != reference).mean() < 1e-3  # float32 at the faces


def test_level_statistics_against_numpy():
  voxels = _inputs()[1]
  stats = np.asarray(model.level_statistics(jnp.asarray(voxels)))
  xy = g.voxel_centres()[:, :, 0, :2] / model.METRES_PER_UNIT
  for b, z in ((0, 3), (1, 20)):
    level = voxels[b, :, :, z] > 0.5
    pts = xy[level]
    np.testing.assert_allclose(stats[b, z, 0], level.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats[b, z, 1:3], pts.mean(0), rtol=1e-4, atol=1e-5)
    cov = np.cov(pts.T, bias=True)
    np.testing.assert_allclose(stats[b, z, 3:6], [cov[0, 0], cov[0, 1], cov[1, 1]],
                               rtol=1e-3, atol=1e-4)


def test_attention_loss_is_zero_only_for_even_attention_on_the_block():
  prims, points = _box_scene(g.BOX, (0.08, 0.06, 0.05), 0.2)
  _, other = _box_scene(g.BOX, (0.05, 0.05, 0.04), 0.0, position=(0.0, 0.0, 0.12))
  world = np.concatenate([points, other]).astype(np.float32)
  n = len(points)
  targets = _targets([g.BOX], prims.size, prims.position, prims.quaternion, [3], 1)
  out = _outputs(prims.size, prims.position, prims.quaternion, [-9])
  out.update(voxel_points=jnp.asarray(world)[None],
             voxel_real=jnp.ones((1, len(world)), bool))
  losses = []
  for on_block in (np.full(n, 1 / n), np.linspace(1, 2, n) / np.linspace(1, 2, n).sum(),
                   np.full(n, 0.9 / n)):
    attention = np.concatenate([on_block, np.full(len(other), (1 - on_block.sum())
                                                  / len(other))])
    out["voxel_attention"] = jnp.asarray(attention, jnp.float32)[None, None]
    losses.append(float(_loss(out, targets, W)[1]["attention_loss"]))
  assert losses[0] == pytest.approx(0, abs=1e-4)
  assert losses[1] > 0.01 and losses[2] == pytest.approx(-math.log(0.9), rel=1e-3)


def test_appearance_only_model_ignores_the_trajectories(applied):
  image, voxels, trajectory, ball = _inputs()
  for use, changes in ((False, False), (True, True)):
    apply, params = applied[use]
    a = apply(params, image, voxels, trajectory, ball)["density_logits"]
    b = apply(params, image, voxels, trajectory * 2 + 1, ball)["density_logits"]
    assert (not np.allclose(a, b)) == changes
  assert "TrajectoryEncoder_0" not in applied[False][1]["params"]


def test_a_voxel_grid_of_the_wrong_size_is_one_sentence():
  image, voxels, trajectory, ball = _inputs()
  with pytest.raises(UserError, match=r"^voxels must be \[batch, 32, 32, 32\].*\(2, 16, 16, 16\)"):
    _tiny(True).init(jax.random.PRNGKey(0), image, voxels[:, :16, :16, :16], trajectory, ball)


def test_voxel_convolution_is_a_2x2x2_stride_2_convolution():
  x = np.random.default_rng(2).normal(size=(2, 4, 6, 8, 3)).astype(np.float32)
  kernel = np.random.default_rng(3).normal(size=(2, 2, 2, 3, 5)).astype(np.float32)
  reference = jax.lax.conv_general_dilated(x, kernel, (2, 2, 2), "VALID",
                                           dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  ours = model.space_to_depth_3d(jnp.asarray(x)) @ kernel.reshape(-1, 5)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def _yaw(angle):
  return np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], np.float32)


def _targets(shape, size, position, quaternion, bins, count):
  n = len(shape)
  valid = np.arange(n) < count
  return {"shape": jnp.asarray([shape]), "size": jnp.asarray([size], jnp.float32),
          "position": jnp.asarray([position], jnp.float32),
          "quaternion": jnp.asarray([quaternion], jnp.float32),
          "density_bin": jnp.asarray([bins]), "valid": jnp.asarray([valid]),
          "count": jnp.asarray([count])}


def _outputs(size, position, quaternion, stop, density_logits=None, shape_logits=None):
  n = len(size)
  return {"size": jnp.asarray([size], jnp.float32),
          "position": jnp.asarray([position], jnp.float32),
          "quaternion": jnp.asarray([quaternion], jnp.float32),
          "stop": jnp.asarray([stop], jnp.float32),
          "density_logits": jnp.zeros((1, n, 100)) if density_logits is None
          else jnp.asarray([density_logits], jnp.float32),
          "shape_logits": jnp.zeros((1, n, 2)) if shape_logits is None
          else jnp.asarray([shape_logits], jnp.float32)}


W = model.LossWeights()
_loss = jax.jit(model.ppd_loss, static_argnums=2)  # one program per slot count, not per op


def test_geometry_loss_is_invariant_to_quaternion_sign_and_box_symmetry():
  size = [[0.06, 0.08, 0.05], [0.05, 0.05, 0.04]]
  position = [[0.0, 0.0, 0.025], [0.01, 0.0, 0.07]]
  q = [_yaw(0.3), _yaw(1.0)]
  targets = _targets([g.BOX, g.CYLINDER], size, position, q, [3, 70], 2)
  exact = _loss(_outputs(size, position, q, [-9, -9]), targets, W)[1]
  assert float(exact["quaternion_loss"]) == pytest.approx(0, abs=1e-6)
  assert float(exact["size_loss"]) == pytest.approx(0, abs=1e-6)
  # -q; the box turned 90 degrees with sx and sy swapped; the cylinder at any yaw.
  same = [[-v for v in q[0]], _yaw(2.5)]
  turned = [_yaw(0.3 + math.pi / 2), _yaw(-2.0)]
  for other, other_size in ((same, size), (turned, [[0.08, 0.06, 0.05], size[1]])):
    terms = _loss(_outputs(other_size, position, other, [-9, -9]), targets, W)[1]
    for name in ("quaternion_loss", "size_loss", "position_loss"):
      assert float(terms[name]) == pytest.approx(float(exact[name]), abs=1e-6), name
  # A box turned 0.4 rad: sin^2(0.2) over the two valid slots.
  off = _loss(_outputs(size, position, [_yaw(0.7), q[1]], [-9, -9]), targets, W)[1]
  assert float(off["quaternion_loss"]) == pytest.approx(math.sin(0.2) ** 2 / 2, rel=1e-4)


def test_stop_and_density_terms_against_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(P, 100)).astype(np.float32)
  stop = np.array([-2.0, 0.5, 1.5, -0.3], np.float32)
  bins, count = [5, 99, 0, 0], 2
  ones = [[0.05] * 3] * P
  targets = _targets([0] * P, ones, ones, [_yaw(0.0)] * P, bins, count)
  terms = _loss(_outputs(ones, ones, [_yaw(0.0)] * P, stop, logits), targets, W)[1]
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert float(terms["density_loss"]) == pytest.approx(
      -(log_softmax[0, 5] + log_softmax[1, 99]) / 2, rel=1e-5)
  target = (np.arange(P) >= count).astype(np.float64)
  prob = 1 / (1 + np.exp(-stop.astype(np.float64)))
  bce = -(target * np.log(prob) + (1 - target) * np.log(1 - prob)).mean()
  assert float(terms["stop_loss"]) == pytest.approx(bce, rel=1e-5)


def test_the_stop_signal_sets_the_count():
  logits = np.array([[-1, -1, 2, -3], [3, -1, -1, -1], [-1, -1, -1, -1], [-1, 2, 2, 2.0]])
  np.testing.assert_array_equal(model.num_primitives(logits), [2, 0, 4, 1])


def test_density_metrics_are_in_bins_and_top_k_counts_a_hit_anywhere_in_k():
  pred, true = np.array([10, 20, 30]), np.array([10, 23, 26])
  got = metrics._density_metrics(pred, true, block_towers.bin_density(true), "")
  assert got["density_top1"] == pytest.approx(1 / 3)
  assert got["density_rmse"] == pytest.approx(math.sqrt((0 + 9 + 16) / 3))
  logits = np.zeros((2, 100))
  logits[0, [7, 8, 9]] = [3, 2, 1]
  logits[1, [40, 41, 42]] = [3, 2, 1]
  np.testing.assert_array_equal(metrics.top_k_bins(logits, 3), [[7, 8, 9], [40, 41, 42]])
  # Bins are log-spaced: the centre of bin b is 100 * 100^((b + 0.5) / 100) kg/m^3.
  assert block_towers.bin_density(np.array([0]))[0] == pytest.approx(100 * 100 ** 0.005)


# ---------------------------------------------------------------------------------------------
# Physics refinement.
# ---------------------------------------------------------------------------------------------


def _tower(sink=0.0):
  """Two boxes, the upper one struck by the ball; `sink` m pushes it into the lower one."""
  return g.Primitives(np.array([g.BOX, g.BOX]), np.array([[0.08, 0.08, 0.05],
                                                          [0.05, 0.06, 0.04]]),
                      np.array([[0.0, 0.0, 0.025], [0.004, -0.003, 0.07 - sink]]),
                      np.stack([_yaw(0.0), _yaw(0.4)]).astype(np.float64),
                      np.array([1.0, 1.0]))


PENDULUM = physics.Pendulum(pivot=(-0.041, 0.0, 0.375), azimuth=0.0, length=0.3, angle=0.6)
STEPS = 400


def test_physical_primitives_stack_upright_blocks_that_touch():
  tilted = _tower(sink=0.006)
  tilted = g.Primitives(tilted.shape, tilted.size, tilted.position,
                        np.array([[1.0, 0.05, 0.0, 0.0], [0.98, 0.0, 0.03, 0.2]]),
                        tilted.density)
  fixed = refine.physical_primitives(tilted)
  np.testing.assert_allclose(fixed.position[:, 2], [0.025, 0.05 + 0.02])
  np.testing.assert_allclose(fixed.position[:, :2], tilted.position[:, :2])
  np.testing.assert_allclose(fixed.quaternion[:, 1:3], 0, atol=1e-12)
  # The yaw survives: the upper block's yaw is atan2(2 (w z + x y), 1 - 2 (y^2 + z^2)).
  w, x, y, z = tilted.quaternion[1] / np.linalg.norm(tilted.quaternion[1])
  yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
  assert 2 * math.atan2(fixed.quaternion[1, 3], fixed.quaternion[1, 0]) == pytest.approx(yaw)
  physics.simulate(fixed, PENDULUM, steps=20)  # starts out of collision


def test_refinement_picks_the_true_density_among_the_candidates():
  tower = _tower()
  true_bins = np.array([60, 30])
  observed = physics.simulate(tower, PENDULUM, steps=STEPS,
                              densities=block_towers.bin_density(true_bins)).blocks
  simulator = refine.Simulator(tower, PENDULUM, STEPS)
  # The network's favourite is wrong for the struck upper block (the true bin is third); a
  # first pass, with it still wrong, also moves the lower block away from its true bin.
  candidates = np.array([[60, 85, 10], [5, 50, 30]])
  chosen, error = refine.refine_densities(simulator, candidates, observed)
  np.testing.assert_array_equal(chosen, true_bins)
  assert error == 0.0
  assert simulator.simulations <= 1 + 3 * 2 * 2  # three passes over two blocks at most
  wrong = refine.displacement_error(simulator(candidates[:, 0]), observed)
  assert wrong > 1e-4  # the struck block's motion does depend on its density

  # One block struck and sliding: its own density decides its motion.
  block = tower.take([0])
  strike = physics.Pendulum(pivot=(-0.05, 0.0, 0.325), azimuth=0.0, length=0.3, angle=0.6)
  observed = physics.simulate(block, strike, steps=STEPS,
                              densities=block_towers.bin_density(np.array([40]))).blocks
  chosen, error = refine.refine_densities(refine.Simulator(block, strike, STEPS),
                                          np.array([[70, 10, 40]]), observed)
  assert chosen.tolist() == [40] and error == 0.0
