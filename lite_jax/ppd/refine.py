"""Physics refinement: re-simulating candidate densities and keeping those whose trajectory
matches the observed one (analysis by synthesis, the simulator in the loop).

Predicted primitives cannot go into `physics.simulate` as they come out of the network: a
few millimetres of overlap is a collision at the start (the simulator refuses it) and a gap
is a drop. `physical_primitives` projects them onto what the block towers are (our prior,
stated): upright (each quaternion replaced by its yaw about z), cylinders circular (diameter
the mean of sx and sy), and stacked, bottom first, each resting on the one below (block 0
on the floor), horizontal positions kept.

`refine_densities` then searches coordinate-wise, bottom to top: for primitive i it simulates
each of its top-k density bins with the others at their current choice and keeps the bin whose
trajectory is closest to the observed one (`displacement_error`); passes repeat until one
changes nothing (at most `sweeps`), because a block's best density depends on the others'
(one pass picked a wrong density for a lower block while the upper one was still wrong). A
pass costs at most n (k - 1) new simulations (results are cached by bins).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data import block_towers
from lite_jax.core.errors import UserError
from lite_jax.ppd import physics
from lite_jax.ppd.geometry import CYLINDER, Primitives


def physical_primitives(primitives: Primitives) -> Primitives:
  """Predicted primitives projected onto simulable, touching, upright towers (module
  docstring); densities unchanged."""
  q = np.asarray(primitives.quaternion, np.float64)
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  w, x, y, z = np.moveaxis(q, -1, 0)
  yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
  quaternion = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1)
  size = np.array(primitives.size, np.float64)
  cylinder = np.asarray(primitives.shape) == CYLINDER
  size[cylinder, :2] = size[cylinder, :2].mean(-1, keepdims=True)
  position = np.array(primitives.position, np.float64)
  top = 0.0
  for i in range(len(size)):
    position[i, 2] = top + size[i, 2] / 2
    top += size[i, 2]
  return Primitives(np.asarray(primitives.shape), size, position, quaternion,
                    np.asarray(primitives.density, np.float64))


def displacement_error(simulated: np.ndarray, observed: np.ndarray) -> float:
  """Mean absolute error (m) of block displacements from frame 0: simulated `[F, n, 7]`
  against observed `[F, m, 7]` over the first min(n, m) blocks (the same bottom-to-top order),
  frames and axes; nan when either has no block."""
  n = min(simulated.shape[1], observed.shape[1])
  if n == 0:
    return float("nan")
  move = lambda t: t[:, :n, :3] - t[:1, :n, :3]
  return float(np.abs(move(simulated) - move(observed)).mean())


def position_error(simulated: np.ndarray, observed: np.ndarray) -> float:
  """Mean absolute error (m) of block positions, as `displacement_error` but absolute (it
  includes the geometry's error at frame 0)."""
  n = min(simulated.shape[1], observed.shape[1])
  if n == 0:
    return float("nan")
  return float(np.abs(simulated[:, :n, :3] - observed[:, :n, :3]).mean())


@dataclasses.dataclass
class Simulator:
  """Simulates one predicted scene (`physical_primitives` already applied) under density bins,
  caching by bins. A start in collision (the projection cannot always prevent it: the ball can
  start inside an oversized block) counts as a failure and leaves the blocks where they are."""
  primitives: Primitives
  pendulum: physics.Pendulum
  steps: int
  failures: int = 0

  def __post_init__(self):
    self._cache: dict[tuple[int, ...], np.ndarray] = {}

  def __call__(self, bins) -> np.ndarray:
    """float64 `[F, n, 7]` block trajectories with densities at the centres of `bins` `[n]`."""
    key = tuple(int(b) for b in bins)
    if key not in self._cache:
      densities = block_towers.bin_density(np.asarray(key))
      try:
        blocks = physics.simulate(self.primitives, self.pendulum, steps=self.steps,
                                  densities=densities).blocks
      except UserError:
        self.failures += 1
        start = np.concatenate([self.primitives.position, self.primitives.quaternion], -1)
        blocks = np.repeat(start[None], self.steps // physics.FRAME_EVERY + 1, 0)
      self._cache[key] = blocks
    return self._cache[key]

  @property
  def simulations(self) -> int:
    return len(self._cache)


def refine_densities(simulator: Simulator, candidates: np.ndarray, observed: np.ndarray, *,
                     sweeps: int = 3) -> tuple[np.ndarray, float]:
  """Coordinate-wise search over density candidates (module docstring).

  Args:
    simulator: the scene's `Simulator`.
    candidates: int `[n, k]` density bins per primitive, best first (the network's top-k);
      column 0 is the starting point.
    observed: `[F, m, 7]` the observed block trajectories.
    sweeps: passes over the primitives at most (a pass that changes nothing ends early).

  Returns:
    (chosen bins `[n]`, their `displacement_error`).
  """
  candidates = np.asarray(candidates)
  if candidates.ndim != 2 or len(candidates) != len(simulator.primitives):
    raise UserError(f"candidates must be [{len(simulator.primitives)}, k] bins, got shape "
                    f"{candidates.shape}.")
  chosen = candidates[:, 0].copy()
  best = displacement_error(simulator(chosen), observed)
  for _ in range(sweeps):
    before = chosen.copy()
    for i in range(len(chosen)):
      for bin_ in candidates[i]:
        trial = chosen.copy()
        trial[i] = bin_
        error = displacement_error(simulator(trial), observed)
        if error < best:  # strictly: a tie keeps the earlier (the network's) choice
          chosen, best = trial, error
    if np.array_equal(chosen, before):
      break
  return chosen, best
