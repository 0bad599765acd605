"""PPD block towers: 1-4 blocks of random materials struck by a pendulum-mounted copper ball.

Scene i of a seed is a pure function of `(seed, i)` (`np.random.default_rng([seed, i])`);
nothing is downloaded. `load_split(data_config, split)` builds the tfds builder `BlockTowers`
into ArrayRecord once (under `data_config.data_dir`; None: tfds's default) and returns split
"train", "validation" or "test" as a random-access sequence of example dicts. Train holds
scenes `0 .. num_train-1`, validation the next `num_validation`, test the next `num_test`.

Example fields (no batch axis; P = MAX_BLOCKS = 4 primitive slots, bottom block first, slots
past `count` are zero and `valid` False; F = 51 frames; S = data_config.image_size):

  image: float32 `[S, S, 3]` in [0, 1]: the scene at t = 0 (tower, floor, ball and rod),
    rendered by `render` below (stored uint8)
  voxels: float32 `[32, 32, 32]` indexed [x, y, z], 1 where the voxel centre lies inside a
    block (`geometry.voxelize` over `geometry.VOXEL_BOUNDS`: x, y in [-0.25, 0.25] m, z in
    [0, 0.5] m, 1.5625 cm voxels; a fixed world cube, so positions keep their metres)
  trajectory: float32 `[F, P, 7]`: per block, position (m) and unit quaternion (w, x, y, z) at
    t = k / 25 s, k = 0..50 (2 s at 25 frames/s; MuJoCo steps of 2 ms, every 20th recorded)
  ball_trajectory: float32 `[F, 3]`: the ball's centre (m)
  shape: int32 `[P]` (0 box, 1 cylinder); size: float32 `[P, 3]` full extents (sx, sy, sz) m
    (cylinders: diameter, diameter, height); position: float32 `[P, 3]` centre m; quaternion:
    float32 `[P, 4]` (w, x, y, z); density: float32 `[P]` kg/m^3; density_bin: int32 `[P]`
    in 0..99; material: int32 `[P]` (index into MATERIALS); valid: bool `[P]`; count: int32
  ball_pivot float32 `[3]` m, ball_azimuth rad, ball_length m, ball_angle rad (release angle),
    ball_radius m, ball_density kg/m^3 (float32 scalars: `physics.Pendulum`'s fields);
    strike_block int32: the block the ball is aimed at (0-based)
  rejections: int32: towers drawn and rejected before this one (the scene's rejection count)
  settle_shift float32 m, settle_rotation float32 rad: the largest block displacement and
    rotation over 0.5 s of the tower alone (what the rest check measured)

`physics.simulate(geometry.Primitives.from_example(ex), pendulum_from_example(ex),
steps=STEPS)` cast to float32 equals `trajectory` bit for bit: the stored float32 values are
the ones that were simulated.

Choices (the paper's exact ranges are not public; ours, with reasons):
* Blocks: 1-4 uniformly; each a box, or with probability 0.25 an upright cylinder; sides
  sx, sy ~ U[4, 10] cm (a cylinder's diameter is one draw), height ~ U[3, 10] cm; a yaw
  ~ U[0, 90) degrees. Toy-block sizes that a 2 cm ball visibly moves.
* Stacking: each block rests exactly on the one below (faces touch, no overlap), its centre
  shifted horizontally by U[-0.5, 0.5] x the smaller half side of the block below, per axis,
  so some towers overhang and topple: those are rejected by the rest check.
* Density: log-uniform over [100, 10000] kg/m^3, from rigid foam / balsa (~100-250) through
  woods, plastics, stone and iron to copper (8960); 100 bins equally spaced in log density
  (each 4.7 % wide), bin = floor(100 log(rho / 100) / log(100)). Log spacing gives every
  material the same relative resolution. Material follows density (MATERIALS: foam, wood,
  plastic, stone, iron, copper ranges tile [100, 10000]) and sets the colour (jittered +-15 %
  in brightness), so appearance tells the material's range but not the density inside it.
* Pendulum: the paper's real rig, a copper ball (radius 2 cm, 8960 kg/m^3, 0.30 kg) on a
  0.3 m massless rod. It is aimed at a random block's centre +- a quarter of its height,
  swinging along azimuth ~ U[-30, 30] degrees (from the camera's left), with its lowest point
  half a radius inside the block's face, released at rest from U[20, 45] degrees (0.59-1.31
  m/s at the bottom).
* Rest check (all towers start at rest and out of collision): any overlap deeper than 0.1 mm
  at t = 0 (e.g. the ball starting inside a block) or, over 0.5 s without the ball, a block
  moving more than SETTLE_SHIFT (1 mm) or turning more than SETTLE_ROTATION (0.01 rad) rejects
  the draw and the scene draws again from its own generator; `rejections` counts them.
  Measured (seed 0, the first 200 scenes): 12 of 212 draws rejected (5.7 %), all for moving;
  accepted towers move a median 0.014 mm (largest 0.97 mm) in the check: soft contacts
  settling.
* Image: MuJoCo's renderer (`mujoco.Renderer`) does run here with MUJOCO_GL=egl, but only
  through the system's libEGL/Mesa (apt packages libegl1 and libegl-mesa0; osmesa is absent),
  which pip cannot install, and GL output varies with the driver. So `render` is a numpy ray
  caster: pinhole camera at (0, -0.75, 0.35) m looking at (0, 0, 0.16) m, 40 degree vertical
  field of view; Lambert shading (ambient 0.35) with one directional light and hard shadows;
  a grey checkered floor (5 cm squares) and a plain sky; no GL driver in the loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from data import generated
from data.generated import scene_rng
from lite_jax.core.errors import UserError
from lite_jax.ppd import geometry, physics
from lite_jax.ppd.geometry import BOX, CYLINDER, Primitives

MAX_BLOCKS = 4
CYLINDER_PROBABILITY = 0.25
SIDE_RANGE = (0.04, 0.10)  # m
HEIGHT_RANGE = (0.03, 0.10)  # m
OVERHANG = 0.5  # horizontal shift per axis, x the smaller half side below
DENSITY_RANGE = (100.0, 10000.0)  # kg / m^3
NUM_DENSITY_BINS = 100
# (name, lowest density kg/m^3, RGB): consecutive ranges tiling DENSITY_RANGE.
MATERIALS = (("foam", 100.0, (0.93, 0.90, 0.78)), ("wood", 250.0, (0.60, 0.40, 0.20)),
             ("plastic", 1000.0, (0.20, 0.45, 0.85)), ("stone", 2000.0, (0.58, 0.58, 0.55)),
             ("iron", 4000.0, (0.30, 0.32, 0.36)), ("copper", 8000.0, (0.86, 0.50, 0.32)))
BALL_RADIUS = 0.02  # m
ROD_LENGTH = 0.3  # m
ROD_RADIUS = 0.003  # m, drawn only
AZIMUTH_RANGE = (-math.pi / 6, math.pi / 6)
RELEASE_RANGE = (math.radians(20), math.radians(45))
STEPS = 1000  # 2 s of 2 ms physics steps
FRAMES = STEPS // physics.FRAME_EVERY + 1  # 51 frames at 25 frames/s
SETTLE_SECONDS = 0.5
SETTLE_SHIFT = 1e-3  # m
SETTLE_ROTATION = 0.01  # rad
MAX_DRAWS = 1000  # draws per scene before giving up (a bug, not bad luck)
SPLITS = generated.SPLITS

CAMERA = ((0.0, -0.75, 0.35), (0.0, 0.0, 0.16), 40.0)  # position, target (m), vertical FOV deg
LIGHT = np.array([0.45, -0.55, 1.0]) / np.linalg.norm([0.45, -0.55, 1.0])  # towards the light
AMBIENT = 0.35
SKY = (0.80, 0.87, 0.95)
FLOOR_COLORS = ((0.78, 0.78, 0.76), (0.66, 0.66, 0.64))
FLOOR_SQUARE = 0.05  # m
BALL_COLOR = (0.80, 0.45, 0.25)
ROD_COLOR = (0.25, 0.25, 0.25)


# ---------------------------------------------------------------------------------------------
# Densities and materials.
# ---------------------------------------------------------------------------------------------


def density_bin(density: np.ndarray) -> np.ndarray:
  """int32 bins 0..99 of densities (kg/m^3), log-spaced over DENSITY_RANGE (clipped)."""
  lo, hi = DENSITY_RANGE
  position = np.log(np.asarray(density, np.float64) / lo) / np.log(hi / lo)
  return np.clip(np.floor(position * NUM_DENSITY_BINS), 0, NUM_DENSITY_BINS - 1).astype(
      np.int32)


def bin_density(bins: np.ndarray) -> np.ndarray:
  """float64 densities (kg/m^3) at the bins' centres (geometric mean of their edges)."""
  lo, hi = DENSITY_RANGE
  return lo * (hi / lo) ** ((np.asarray(bins, np.float64) + 0.5) / NUM_DENSITY_BINS)


def bin_edges() -> np.ndarray:
  """float64 `[101]` bin edges in kg/m^3."""
  lo, hi = DENSITY_RANGE
  return lo * (hi / lo) ** (np.arange(NUM_DENSITY_BINS + 1) / NUM_DENSITY_BINS)


def material_of(density: np.ndarray) -> np.ndarray:
  """int32 index into MATERIALS of each density."""
  starts = np.array([m[1] for m in MATERIALS])
  return (np.searchsorted(starts, np.asarray(density, np.float64), side="right") - 1).clip(
      0).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Scene draws.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tower:
  """One drawn scene: the blocks (float32 values), their materials `[P]` and colours
  `[P, 3]`, the pendulum (float32 values) and the aimed-at block."""
  primitives: Primitives
  material: np.ndarray
  colors: np.ndarray
  pendulum: physics.Pendulum
  strike_block: int


def _yaw_quaternion(yaw: np.ndarray) -> np.ndarray:
  return np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1)


def _extent_along(primitives: Primitives, i: int, direction: np.ndarray) -> float:
  """Half extent of upright block i along a horizontal unit direction (support distance)."""
  half = np.asarray(primitives.size[i], np.float64) / 2
  if primitives.shape[i] == CYLINDER:
    return float(half[0])
  axes = geometry.quaternion_to_matrix(primitives.quaternion[i])[:, :2]  # local x, y in world
  return float(abs(axes[:, 0] @ direction) * half[0] + abs(axes[:, 1] @ direction) * half[1])


def sample_tower(rng: np.random.Generator) -> Tower:
  """Draws one tower and pendulum (module docstring), before the rest check; every number
  is rounded to float32 first, so what is stored is what is simulated."""
  count = int(rng.integers(1, MAX_BLOCKS + 1))
  shape = np.where(rng.random(count) < CYLINDER_PROBABILITY, CYLINDER, BOX).astype(np.int32)
  sides = rng.uniform(*SIDE_RANGE, (count, 2))
  sides[shape == CYLINDER, 1] = sides[shape == CYLINDER, 0]
  size = np.concatenate([sides, rng.uniform(*HEIGHT_RANGE, (count, 1))], -1).astype(np.float32)
  yaw = rng.uniform(0, math.pi / 2, count)
  quaternion = _yaw_quaternion(yaw).astype(np.float32)
  lo, hi = DENSITY_RANGE
  density = (lo * (hi / lo) ** rng.random(count)).astype(np.float32)
  shifts = rng.uniform(-OVERHANG, OVERHANG, (count, 2))
  position = np.zeros((count, 3), np.float64)
  for i in range(count):
    below = i - 1
    if i:
      # Centres come from the stored float32 sizes and are then rounded to float32 too: faces
      # meet to ~1e-8 m, far inside the 0.1 mm collision tolerance.
      reach = float(size[below, :2].min()) / 2
      position[i, :2] = position[below, :2] + shifts[i] * reach
      position[i, 2] = position[below, 2] + float(size[below, 2]) / 2 + float(size[i, 2]) / 2
    else:
      position[i, 2] = float(size[i, 2]) / 2
  position = position.astype(np.float32)
  primitives = Primitives(shape, size, position, quaternion, density)
  material = material_of(density)
  brightness = rng.uniform(0.85, 1.15, (count, 1))
  colors = np.clip(np.array([MATERIALS[m][2] for m in material]) * brightness, 0, 1)

  strike = int(rng.integers(count))
  height = float(position[strike, 2]) + rng.uniform(-0.25, 0.25) * float(size[strike, 2])
  height = max(height, BALL_RADIUS + 0.005)
  azimuth = float(np.float32(rng.uniform(*AZIMUTH_RANGE)))
  direction = np.array([math.cos(azimuth), math.sin(azimuth), 0.0])
  reach = _extent_along(primitives, strike, direction) + 0.5 * BALL_RADIUS
  bottom = np.asarray(position[strike], np.float64) - reach * direction
  pivot = np.array([bottom[0], bottom[1], height + ROD_LENGTH], np.float32)
  angle = float(np.float32(rng.uniform(*RELEASE_RANGE)))
  pendulum = physics.Pendulum(pivot=tuple(float(v) for v in pivot), azimuth=azimuth,
                              length=float(np.float32(ROD_LENGTH)), angle=angle,
                              radius=float(np.float32(BALL_RADIUS)),
                              density=float(np.float32(physics.COPPER_DENSITY)))
  return Tower(primitives, material, colors, pendulum, strike)


def rest_check(tower: Tower) -> tuple[bool, float, float]:
  """(at rest and out of collision, largest shift m, largest rotation rad) of a drawn tower."""
  model, data = physics.build_model(tower.primitives, tower.pendulum)
  if physics.start_penetrations(model, data):
    return False, math.inf, math.inf
  shift, rotation = physics.settle(tower.primitives, seconds=SETTLE_SECONDS)
  return shift <= SETTLE_SHIFT and rotation <= SETTLE_ROTATION, shift, rotation


def draw_tower(rng: np.random.Generator) -> tuple[Tower, int, float, float]:
  """(tower, rejections, shift, rotation): draws until a tower passes `rest_check`."""
  for rejections in range(MAX_DRAWS):
    tower = sample_tower(rng)
    ok, shift, rotation = rest_check(tower)
    if ok:
      return tower, rejections, shift, rotation
  raise RuntimeError(f"no tower passed the rest check in {MAX_DRAWS} draws")


def pendulum_from_example(example: dict[str, Any]) -> physics.Pendulum:
  """The stored pendulum of an example (its float32 fields as Python floats)."""
  return physics.Pendulum(
      pivot=tuple(float(v) for v in example["ball_pivot"]),
      azimuth=float(example["ball_azimuth"]), length=float(example["ball_length"]),
      angle=float(example["ball_angle"]), radius=float(example["ball_radius"]),
      density=float(example["ball_density"]))


# ---------------------------------------------------------------------------------------------
# The numpy ray caster.
# ---------------------------------------------------------------------------------------------


def camera_rays(size: int) -> tuple[np.ndarray, np.ndarray]:
  """(origin `[3]`, unit directions `[size * size, 3]`, row-major from the top-left pixel)."""
  eye, (right, up, forward), extent = geometry.camera_frame(CAMERA)
  coords = ((np.arange(size) + 0.5) / size * 2 - 1) * extent
  u, v = np.meshgrid(coords, -coords)  # v: +extent at the top row
  directions = forward + u[..., None] * right + v[..., None] * up
  directions = directions.reshape(-1, 3)
  return eye, directions / np.linalg.norm(directions, axis=-1, keepdims=True)


def _hit_primitives(primitives: Primitives, origins: np.ndarray, directions: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(t `[P, N]` (inf: miss), world normals `[P, N, 3]`) of rays against boxes/cylinders."""
  rotation = geometry.quaternion_to_matrix(primitives.quaternion)  # [P, 3, 3]
  o = np.einsum("pnj,pji->pni", origins[None] - np.asarray(primitives.position,
                                                           np.float64)[:, None], rotation)
  d = np.einsum("nj,pji->pni", directions, rotation)
  d = np.where(np.abs(d) < 1e-12, 1e-12, d)
  half = np.asarray(primitives.size, np.float64)[:, None] / 2  # [P, 1, 3]
  eps = 1e-9
  # Boxes: slabs.
  t1, t2 = (-half - o) / d, (half - o) / d
  near, far = np.minimum(t1, t2), np.maximum(t1, t2)
  t_near, t_far = near.max(-1), far.min(-1)
  box_t = np.where((t_near <= t_far) & (t_near > eps), t_near, np.inf)
  box_n = np.eye(3)[near.argmax(-1)] * -np.sign(d)
  # Cylinders: the side (an elliptic quadratic) and the two caps.
  a, b = half[..., 0], half[..., 1]
  qa = (d[..., 0] / a) ** 2 + (d[..., 1] / b) ** 2
  qb = 2 * (o[..., 0] * d[..., 0] / a ** 2 + o[..., 1] * d[..., 1] / b ** 2)
  qc = (o[..., 0] / a) ** 2 + (o[..., 1] / b) ** 2 - 1
  disc = qb ** 2 - 4 * qa * qc
  root = np.sqrt(np.maximum(disc, 0))
  side_t = (-qb - root) / (2 * qa)
  side_z = o[..., 2] + side_t * d[..., 2]
  side_ok = (disc >= 0) & (side_t > eps) & (np.abs(side_z) <= half[..., 2])
  side_t = np.where(side_ok, side_t, np.inf)
  cap_t = np.minimum(*((s * half[..., 2] - o[..., 2]) / d[..., 2] for s in (-1, 1)))
  cap_p = o + cap_t[..., None] * d
  cap_ok = (cap_t > eps) & ((cap_p[..., 0] / a) ** 2 + (cap_p[..., 1] / b) ** 2 <= 1)
  cap_t = np.where(cap_ok, cap_t, np.inf)
  side_p = o + np.where(side_ok, side_t, 0)[..., None] * d
  side_n = np.stack([side_p[..., 0] / a ** 2, side_p[..., 1] / b ** 2, 0 * side_p[..., 2]], -1)
  cap_n = np.zeros_like(o)
  cap_n[..., 2] = -np.sign(d[..., 2])
  cyl_t = np.minimum(side_t, cap_t)
  cyl_n = np.where((side_t <= cap_t)[..., None], side_n, cap_n)
  is_cyl = (np.asarray(primitives.shape) == CYLINDER)[:, None]
  t = np.where(is_cyl, cyl_t, box_t)
  normal = np.where(is_cyl[..., None], cyl_n, box_n)
  normal = np.einsum("pij,pnj->pni", rotation, normal)
  return t, normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)


def _hit_sphere(centre: np.ndarray, radius: float, origins: np.ndarray,
                directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(t `[N]`, normals `[N, 3]`) of rays against a sphere."""
  oc = origins - centre
  b = (oc * directions).sum(-1)
  disc = b * b - ((oc * oc).sum(-1) - radius * radius)
  t = -b - np.sqrt(np.maximum(disc, 0))
  t = np.where((disc >= 0) & (t > 1e-9), t, np.inf)
  points = origins + np.where(np.isfinite(t), t, 0)[:, None] * directions
  return t, (points - centre) / radius


def _rod(pendulum: physics.Pendulum) -> Primitives:
  """The drawn rod: a thin cylinder from the pivot to the ball's centre at release."""
  pivot = np.asarray(pendulum.pivot, np.float64)
  axis = pivot - pendulum.ball_position(pendulum.angle)
  axis /= np.linalg.norm(axis)
  # The rotation taking local z onto `axis` (a rotation about z x axis).
  half_angle = math.acos(float(np.clip(axis[2], -1, 1))) / 2
  turn = np.cross([0.0, 0.0, 1.0], axis)
  turn = turn / max(np.linalg.norm(turn), 1e-12) * math.sin(half_angle)
  centre = pivot - axis * pendulum.length / 2
  return Primitives(np.array([CYLINDER]), np.array([[2 * ROD_RADIUS, 2 * ROD_RADIUS,
                                                      pendulum.length]]),
                    centre[None], np.array([[math.cos(half_angle), *turn]]), np.ones(1))


def _nearest(primitives: Primitives, pendulum: physics.Pendulum | None, origins: np.ndarray,
             directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(t `[N]`, normal `[N, 3]`, object id `[N]`) of the nearest hit: blocks 0..P-1, rod P,
  ball P + 1, floor P + 2, sky -1."""
  ts, normals = [], []
  if len(primitives):
    t, n = _hit_primitives(primitives, origins, directions)
    ts.extend(t)
    normals.extend(n)
  empty = np.full(len(directions), np.inf)
  if pendulum is not None:
    t, n = _hit_primitives(_rod(pendulum), origins, directions)
    ts.append(t[0])
    normals.append(n[0])
    t, n = _hit_sphere(pendulum.ball_position(pendulum.angle), pendulum.radius, origins,
                       directions)
    ts.append(t)
    normals.append(n)
  else:
    ts.extend([empty, empty])
    normals.extend([np.zeros_like(directions)] * 2)
  down = directions[:, 2] < -1e-12
  floor_t = np.where(down, -origins[:, 2] / np.where(down, directions[:, 2], -1), np.inf)
  ts.append(np.where(floor_t > 1e-9, floor_t, np.inf))
  normals.append(np.broadcast_to([0.0, 0.0, 1.0], directions.shape))
  ts, normals = np.stack(ts), np.stack(normals)
  which = ts.argmin(0)
  t = ts[which, np.arange(len(which))]
  return t, normals[which, np.arange(len(which))], np.where(np.isfinite(t), which, -1)


def render(primitives: Primitives, colors: np.ndarray, pendulum: physics.Pendulum | None,
           size: int = 128) -> np.ndarray:
  """uint8 `[size, size, 3]`: the scene at t = 0 (module docstring).

  Args:
    primitives: P blocks; colors: `[P, 3]` RGB in [0, 1]; pendulum: the ball (at its release
      angle) and rod, or None.
  """
  if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
    raise UserError(f"image size must be a positive integer, got {size!r}.")
  eye, directions = camera_rays(size)
  origins = np.broadcast_to(eye, directions.shape)
  t, normal, which = _nearest(primitives, pendulum, origins, directions)
  p = len(primitives)
  table = np.concatenate([np.asarray(colors, np.float64).reshape(-1, 3),
                          [ROD_COLOR, BALL_COLOR]])
  points = origins + np.where(np.isfinite(t), t, 0)[:, None] * directions
  checker = (np.floor(points[:, 0] / FLOOR_SQUARE) + np.floor(points[:, 1] / FLOOR_SQUARE)) % 2
  base = np.where((which == p + 2)[:, None], np.asarray(FLOOR_COLORS)[checker.astype(int)],
                  table[np.clip(which, 0, p + 1)])
  # Hard shadows: a point is lit when nothing lies between it and the light.
  start = points + normal * 1e-6
  _, _, blocker = _nearest(primitives, pendulum, start, np.broadcast_to(LIGHT, start.shape))
  lit = (blocker < 0) | (blocker == p + 2)  # the floor cannot shade: the light is above it
  diffuse = np.clip(normal @ LIGHT, 0, 1) * lit
  shaded = base * (AMBIENT + (1 - AMBIENT) * diffuse)[:, None]
  image = np.where((which < 0)[:, None], np.asarray(SKY), shaded)
  return np.floor(np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(size, size, 3)


# ---------------------------------------------------------------------------------------------
# Scenes as records.
# ---------------------------------------------------------------------------------------------


def _padded(values: np.ndarray, dtype) -> np.ndarray:
  values = np.asarray(values)
  out = np.zeros((MAX_BLOCKS, *values.shape[1:]), dtype)
  out[:len(values)] = values
  return out


def make_scene(rng: np.random.Generator, image_size: int = 128) -> dict[str, np.ndarray]:
  """One scene as the ArrayRecord files store it (image and voxels uint8; module docstring)."""
  tower, rejections, shift, rotation = draw_tower(rng)
  prims, pendulum = tower.primitives, tower.pendulum
  trajectory = physics.simulate(prims, pendulum, steps=STEPS)
  count = len(prims)
  blocks = np.zeros((FRAMES, MAX_BLOCKS, 7), np.float32)
  blocks[:, :count] = trajectory.blocks
  return {
      "image": render(prims, tower.colors, pendulum, image_size),
      "voxels": geometry.voxelize(prims).astype(np.uint8),
      "trajectory": blocks,
      "ball_trajectory": trajectory.ball.astype(np.float32),
      "shape": _padded(prims.shape, np.int32), "size": _padded(prims.size, np.float32),
      "position": _padded(prims.position, np.float32),
      "quaternion": _padded(prims.quaternion, np.float32),
      "density": _padded(prims.density, np.float32),
      "density_bin": _padded(density_bin(prims.density), np.int32),
      "material": _padded(tower.material, np.int32),
      "valid": np.arange(MAX_BLOCKS) < count, "count": np.int32(count),
      "ball_pivot": np.asarray(pendulum.pivot, np.float32),
      "ball_azimuth": np.float32(pendulum.azimuth), "ball_length": np.float32(pendulum.length),
      "ball_angle": np.float32(pendulum.angle), "ball_radius": np.float32(pendulum.radius),
      "ball_density": np.float32(pendulum.density),
      "strike_block": np.int32(tower.strike_block), "rejections": np.int32(rejections),
      "settle_shift": np.float32(shift), "settle_rotation": np.float32(rotation)}


def _float_example(record: dict[str, Any]) -> dict[str, np.ndarray]:
  """A stored record with the image in [0, 1] and the voxels as float32."""
  example = {k: np.asarray(v) for k, v in record.items()}
  example["image"] = example["image"].astype(np.float32) / 255
  example["voxels"] = example["voxels"].astype(np.float32)
  return example


# The fields `mirror_x` turns (the model's inputs and geometry targets).
MIRRORED = ("image", "voxels", "trajectory", "ball_trajectory", "position", "quaternion")


def mirror_x(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The scene reflected in the plane x = 0 (a training augmentation), on the fields of
  MIRRORED: the camera sits on that plane, so the image flips left-right; the voxel grid
  (symmetric in x) flips along x; positions and the ball's x change sign; each rotation R
  becomes M R M with M = diag(-1, 1, 1), which is (w, x, y, z) -> (w, x, -y, -z). Sizes,
  shapes and densities are unchanged. Not mirrored: the light (it then falls from the other
  side), the floor's checker parity, and the pendulum's parameters (re-simulation must use the
  original scene)."""
  out = dict(example)
  flip = np.array([-1.0, 1.0, 1.0], np.float32)
  turn = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
  out["image"] = example["image"][:, ::-1]
  out["voxels"] = example["voxels"][::-1]
  out["trajectory"] = example["trajectory"] * np.concatenate([flip, turn])
  out["ball_trajectory"] = example["ball_trajectory"] * flip
  out["position"] = example["position"] * flip
  out["quaternion"] = example["quaternion"] * turn
  return out


def generate(num: int, seed: int, image_size: int = 128, start: int = 0
             ) -> dict[str, np.ndarray]:
  """Scenes `start .. start + num - 1` as float examples, stacked on a leading axis."""
  generated.check_generate_args(num, start, seed)
  scenes = [_float_example(make_scene(scene_rng(seed, i), image_size))
            for i in range(start, start + num)]
  return {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}


# ---------------------------------------------------------------------------------------------
# tfds builder: generated scenes -> ArrayRecord.
# ---------------------------------------------------------------------------------------------


def towers_config(image_size: int = 128, num_train: int = 10000, num_validation: int = 1000,
                  num_test: int = 1000, seed: int = 0) -> generated.GeneratedConfig:
  """The builder config of a setting; its name keys the cache folder."""
  return generated.generated_config("Block towers", image_size, num_train, num_validation,
                                    num_test, seed)


class BlockTowers(generated.GeneratedBuilder):
  """Generated block towers, example i of a split = scene `start + i` (no shuffling).

  Stored as `make_scene` returns them: image uint8 and voxels uint8 zlib-compressed, the rest
  raw (fields in the module docstring).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [towers_config()]

  make_example = staticmethod(make_scene)

  def _info(self) -> tfds.core.DatasetInfo:
    s, p = self.builder_config.image_size, MAX_BLOCKS
    r = geometry.VOXEL_RESOLUTION
    tensor = tfds.features.Tensor
    features = {
        "image": tensor(shape=(s, s, 3), dtype=np.uint8, encoding="zlib"),
        "voxels": tensor(shape=(r, r, r), dtype=np.uint8, encoding="zlib"),
        "trajectory": tensor(shape=(FRAMES, p, 7), dtype=np.float32),
        "ball_trajectory": tensor(shape=(FRAMES, 3), dtype=np.float32),
        "shape": tensor(shape=(p,), dtype=np.int32),
        "size": tensor(shape=(p, 3), dtype=np.float32),
        "position": tensor(shape=(p, 3), dtype=np.float32),
        "quaternion": tensor(shape=(p, 4), dtype=np.float32),
        "density": tensor(shape=(p,), dtype=np.float32),
        "density_bin": tensor(shape=(p,), dtype=np.int32),
        "material": tensor(shape=(p,), dtype=np.int32),
        "valid": tensor(shape=(p,), dtype=np.bool_),
        "count": np.int32, "ball_pivot": tensor(shape=(3,), dtype=np.float32),
        "strike_block": np.int32, "rejections": np.int32}
    for name in ("ball_azimuth", "ball_length", "ball_angle", "ball_radius", "ball_density",
                 "settle_shift", "settle_rotation"):
      features[name] = np.float32
    return tfds.core.DatasetInfo(
        builder=self, description="PPD block towers struck by a pendulum ball.",
        features=tfds.features.FeaturesDict(features), disable_shuffling=True)

def towers_builder(data_config: ml_collections.ConfigDict) -> BlockTowers:
  """The prepared `BlockTowers` builder of `data_config` (generated on first use)."""
  return generated.prepare(BlockTowers, data_config, "Block towers")


def default_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The data fields; defaults: 128 px images, 10k / 1k / 1k scenes, seed 0."""
  return generated.data_config({}, overrides)


def load_split(data_config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
  """Split `split` as a random-access sequence of example dicts (module docstring)."""
  generated.check_split(split)
  return generated.Records(towers_builder(data_config).as_data_source(split=split),
                           _float_example)
