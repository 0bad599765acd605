"""PPD physics: determinism, a pendulum against its ODE, heavier towers moving less, and the
start-collision errors."""

import math

import numpy as np
import pytest
from scipy import integrate

from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry as g
from lite_jax.ppd import physics

STEPS = 500  # 1 s


def _tower(densities=(600.0, 600.0), lift=0.0):
  """Two boxes, the upper one turned 0.3 rad and shifted 5 mm; `lift` m drops it onto the
  lower one (negative: into it)."""
  yaw = np.array([0.0, 0.3])
  return g.Primitives(
      np.array([g.BOX, g.BOX]), np.array([[0.06, 0.06, 0.05], [0.05, 0.07, 0.04]]),
      np.array([[0.0, 0.0, 0.025], [0.005, 0.0, 0.07 + lift]]),
      np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1),
      np.asarray(densities, np.float64))


PENDULUM = physics.Pendulum(pivot=(-0.04, 0.0, 0.37), azimuth=0.0, length=0.3, angle=0.6)


@pytest.fixture(scope="module")
def light():
  return physics.simulate(_tower(), PENDULUM, steps=STEPS)


def test_simulation_is_deterministic_and_starts_at_the_inputs(light):
  again = physics.simulate(_tower(), PENDULUM, steps=STEPS)
  np.testing.assert_array_equal(again.blocks, light.blocks)
  np.testing.assert_array_equal(again.ball, light.ball)
  assert light.blocks.shape == (STEPS // physics.FRAME_EVERY + 1, 2, 7)
  np.testing.assert_array_equal(light.blocks[0, :, :3], _tower().position)
  np.testing.assert_allclose(light.blocks[0, :, 3:], _tower().quaternion, atol=1e-15)
  np.testing.assert_allclose(light.ball[0], PENDULUM.ball_position(PENDULUM.angle), atol=1e-12)


def test_struck_tower_moves_and_a_heavier_one_moves_less(light):
  heavy = physics.simulate(_tower((6000.0, 6000.0)), PENDULUM, steps=STEPS)
  def moved(t):
    return np.linalg.norm(t.blocks[-1, :, :3] - t.blocks[0, :, :3], axis=-1).max()
  # Measured: the wooden tower's top block is knocked 15 cm; the ten times denser one's
  # moves 9 mm.
  assert moved(light) > 0.05
  assert moved(heavy) < 0.2 * moved(light)
  # Candidate densities replace the primitives' own (what the physics refinement varies).
  swapped = physics.simulate(_tower(), PENDULUM, steps=STEPS, densities=[6000.0, 6000.0])
  np.testing.assert_array_equal(swapped.blocks, heavy.blocks)


def test_pendulum_swings_as_its_equation_of_motion():
  """The ball alone: a physical pendulum, I theta'' = -m g L sin(theta) with
  I = m L^2 + 2/5 m r^2 (the ball's own inertia), solved by scipy."""
  none = g.Primitives(np.zeros(0, np.int32), np.zeros((0, 3)), np.zeros((0, 3)),
                      np.zeros((0, 4)), np.zeros(0))
  pendulum = physics.Pendulum(pivot=(0.0, 0.0, 0.5), azimuth=0.7, length=0.3, angle=0.5)
  trajectory = physics.simulate(none, pendulum, steps=STEPS)
  r, length = pendulum.radius, pendulum.length
  rate = 9.81 * length / (length ** 2 + 0.4 * r ** 2)
  times = np.arange(len(trajectory.ball)) * physics.FRAME_EVERY * physics.TIMESTEP
  solution = integrate.solve_ivp(lambda t, y: [y[1], -rate * math.sin(y[0])], (0, times[-1]),
                                 [pendulum.angle, 0.0], t_eval=times, rtol=1e-10, atol=1e-12)
  expected = pendulum.ball_position(solution.y[0])
  # Euler-type steps of 2 ms drift slowly in phase: within 2 mm over 1 s (~1.1 swings).
  assert np.abs(trajectory.ball - expected).max() < 2e-3
  assert trajectory.blocks.shape == (len(times), 0, 7)


def test_settle_measures_rest_and_motion():
  shift, rotation = physics.settle(_tower())
  assert shift < 1e-4 and rotation < 1e-3  # measured: 3 um, 5e-6 rad
  floating = _tower(lift=0.05)  # 5 cm above the lower block: it falls
  assert physics.settle(floating)[0] > 0.04


def test_start_collisions_are_user_errors():
  with pytest.raises(UserError, match=r"^block 2 intersects block 1 at the start \(5\.00 mm"):
    physics.simulate(_tower(lift=-0.005), PENDULUM, steps=20)
  sunk = _tower()
  sunk = g.Primitives(sunk.shape, sunk.size, sunk.position - [0, 0, 0.003], sunk.quaternion,
                      sunk.density)
  with pytest.raises(UserError, match=r"^block 1 sinks into the floor at the start"):
    physics.simulate(sunk, None, steps=20)
  inside = physics.Pendulum(pivot=(0.0, 0.0, 0.37), azimuth=0.0, length=0.3, angle=0.05)
  with pytest.raises(UserError, match="the pendulum ball intersects block 2 at the start"):
    physics.simulate(_tower(), inside, steps=20)
  with pytest.raises(UserError, match=r"densities must be \[2\] \(one per primitive\)"):
    physics.simulate(_tower(), PENDULUM, steps=20, densities=[1000.0])
  with pytest.raises(UserError, match="every primitive density must be positive"):
    physics.simulate(_tower(), PENDULUM, steps=20, densities=[1000.0, 0.0])
  with pytest.raises(UserError, match="steps must be a non-negative multiple of frame_every"):
    physics.simulate(_tower(), PENDULUM, steps=25)
  cylinder = g.Primitives(np.array([g.CYLINDER]), np.array([[0.05, 0.06, 0.05]]),
                          np.array([[0, 0, 0.025]]), np.array([[1.0, 0, 0, 0]]), np.ones(1))
  with pytest.raises(UserError, match="cylinder 1 has sx 0.05 != sy 0.06"):
    physics.simulate(cylinder, None, steps=20)


def test_mjx_batch_over_densities_follows_mujoco():
  pytest.importorskip("mujoco.mjx")
  steps = 2 * physics.FRAME_EVERY
  densities = np.array([[600.0, 600.0], [6000.0, 6000.0]])
  batch = np.asarray(physics.simulate_densities_mjx(_tower(), PENDULUM, densities,
                                                    steps=steps))
  assert batch.shape == (2, 3, 2, 7)
  for row, candidate in zip(batch, densities):
    reference = physics.simulate(_tower(), PENDULUM, steps=steps, densities=candidate)
    # Before the strike the tower only settles: MJX's solver agrees to well under a mm.
    np.testing.assert_allclose(row, reference.blocks, atol=2e-4)
