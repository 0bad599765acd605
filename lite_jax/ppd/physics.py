"""PPD's physical event: primitives on a floor struck by a pendulum ball, simulated in MuJoCo.

`simulate(primitives, pendulum, steps=...)` builds a MuJoCo model (MJCF text, every number
written with Python's round-trip `repr`) and steps it, so the same float inputs always give
the same model and, MuJoCo being deterministic on one machine and build, bit-identical
trajectories: re-simulating a dataset's stored (float32) ground-truth primitives reproduces its
stored trajectory exactly. This is the forward model the physics refinement re-runs with
candidate densities (analysis by synthesis).

The world (SI units, z up): an infinite floor z = 0; each primitive a free rigid body (box or
upright-in-its-frame cylinder, `geometry.Primitives`) of uniform density, mass = density x
volume; every contact with sliding friction `friction` (0.5 by default: wood on wood is
0.25-0.5, our choice; friction is not a primitive parameter); MuJoCo's implicit-fast integrator
at `timestep` = 2 ms; soft contacts with a stiffer time constant than MuJoCo's default
(`CONTACT_TIMECONST`), so that stacked towers rest still. The pendulum (the
paper's real setup: a copper ball on a pendulum) is a sphere of `radius` and `density`
(copper, 8960 kg/m^3) at distance `length` below a hinge at `pivot`, whose horizontal axis is
perpendicular to the swing direction u = (cos azimuth, sin azimuth, 0). It is released at rest
at `angle` from the vertical on the -u side, so at the bottom of its swing it moves along +u.
The rod is massless and does not collide, and the ball does not collide with the floor (a
strike low on a tower would otherwise scrape it).

Trajectories are recorded every `frame_every` physics steps, frame 0 being the initial state:
`[F, P, 7]` per body, position (m, world) then quaternion (w, x, y, z, unit), with
F = steps / frame_every + 1; the ball's centre `[F, 3]` alongside.

The batched path `simulate_densities_mjx` (MJX, `mujoco-mjx`) vmaps one scene over candidate
densities `[B, P]`. MJX's solver and collision code are not MuJoCo's C ones, so its
trajectories approximate `simulate`'s rather than reproduce them; MJX has no box-cylinder
collision, so it takes towers of boxes only or of cylinders only. `mujoco-mjx` is optional
(not in requirements.txt): its newest release, 3.17.0, installs beside our jax pin and
mujoco 4.0.1 without changing either (`pip install mujoco-mjx==3.17.0`), and agrees with the
C path to < 0.2 mm before a strike; after it, contact-rich motion diverges as any two solvers
do. On a 2-core CPU it runs 2.3 scenes/s (batch 16, 2 s events, 29 s to compile) against
MuJoCo's 51 scenes/s: it is for GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import mujoco
import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.ppd.geometry import BOX, CYLINDER, Primitives

TIMESTEP = 0.002  # s
FRAME_EVERY = 20  # physics steps per recorded frame: 25 frames/s at the default timestep
FRICTION = 0.5
COPPER_DENSITY = 8960.0  # kg / m^3
PENETRATION_TOLERANCE = 1e-4  # m: deeper overlaps at the start are collisions
# Contact stiffness (MuJoCo's solref time constant, s; default 0.02): at 2.5 x the timestep
# (MuJoCo's advice: at least 2 x), a resting tower sinks ~0.1 mm and creeps < 0.1 mm/s,
# against ~1-2 mm and up to 2 mm/s with the default (measured on 8 four-block towers).
CONTACT_TIMECONST = 0.005


@dataclasses.dataclass(frozen=True)
class Pendulum:
  """A ball on a hinge (module docstring): pivot `[3]` m; azimuth rad (direction of the swing
  at its bottom); length m (pivot to ball centre); angle rad (release angle from the
  vertical, 0 < angle < pi); radius m; density kg/m^3."""
  pivot: Sequence[float]
  azimuth: float
  length: float
  angle: float
  radius: float = 0.02
  density: float = COPPER_DENSITY

  def __post_init__(self):
    if np.shape(self.pivot) != (3,):
      raise UserError(f"pendulum.pivot must be a point (x, y, z), got shape "
                      f"{np.shape(self.pivot)}.")
    for name in ("length", "radius", "density"):
      if not getattr(self, name) > 0:
        raise UserError(f"pendulum.{name} must be positive, got {getattr(self, name)!r}.")
    if not 0 < self.angle < np.pi:
      raise UserError(f"pendulum.angle must lie in (0, pi) radians, got {self.angle!r}.")

  @property
  def direction(self) -> np.ndarray:
    """float64 `[3]`: u, the ball's direction of motion at the bottom of its swing."""
    return np.array([np.cos(self.azimuth), np.sin(self.azimuth), 0.0])

  @property
  def axis(self) -> np.ndarray:
    """float64 `[3]`: the hinge axis z x u (a positive angle puts the ball on the -u side)."""
    return np.cross([0.0, 0.0, 1.0], self.direction)

  def ball_position(self, angle: float | np.ndarray) -> np.ndarray:
    """float64 `[..., 3]`: the ball's centre at hinge angle(s) `angle`."""
    angle = np.asarray(angle, np.float64)[..., None]
    return (np.asarray(self.pivot, np.float64) - self.length * np.cos(angle) * [0, 0, 1]
            - self.length * np.sin(angle) * self.direction)


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """blocks: float64 `[F, P, 7]` (position m, quaternion w x y z); ball: float64 `[F, 3]`
  (zeros without a pendulum); frame k is at time k * frame_every * timestep."""
  blocks: np.ndarray
  ball: np.ndarray


def _num(value) -> str:
  return repr(float(value))


def _vec(values) -> str:
  return " ".join(_num(v) for v in values)


def check_primitives(primitives: Primitives) -> None:
  """Checks what MuJoCo can simulate: positive densities, circular cylinders."""
  density = np.asarray(primitives.density, np.float64)
  if not (np.isfinite(density) & (density > 0)).all():
    raise UserError(f"every primitive density must be positive (kg/m^3), got "
                    f"{density.tolist()}.")
  size = np.asarray(primitives.size, np.float64)
  cyl = np.asarray(primitives.shape) == CYLINDER
  bad = np.flatnonzero(cyl & ~np.isclose(size[:, 0], size[:, 1], rtol=1e-6, atol=0))
  if bad.size:
    raise UserError(f"cylinder {bad[0] + 1} has sx {size[bad[0], 0]} != sy {size[bad[0], 1]}, "
                    f"but MuJoCo's cylinders are circular (give equal diameters).")


def scene_xml(primitives: Primitives, pendulum: Pendulum | None, *,
              timestep: float = TIMESTEP, friction: float = FRICTION,
              densities: Sequence[float] | None = None) -> str:
  """The MJCF text of a scene (bodies `block1..P`, `pendulum`; geoms `floor`, `geom1..P`,
  `ball`); `densities` `[P]` overrides the primitives' own."""
  density = primitives.density if densities is None else np.asarray(densities, np.float64)
  if np.shape(density) != (len(primitives),):
    raise UserError(f"densities must be [{len(primitives)}] (one per primitive), got shape "
                    f"{np.shape(density)}.")
  check_primitives(dataclasses.replace(primitives, density=density))
  bodies = []
  for i in range(len(primitives)):
    half = np.asarray(primitives.size[i], np.float64) / 2
    if primitives.shape[i] == BOX:
      geom = f'type="box" size="{_vec(half)}"'
    else:
      geom = f'type="cylinder" size="{_num(half[0])} {_num(half[2])}"'
    bodies.append(
        f'<body name="block{i + 1}" pos="{_vec(primitives.position[i])}" '
        f'quat="{_vec(primitives.quaternion[i])}"><freejoint/>'
        f'<geom name="geom{i + 1}" {geom} density="{_num(density[i])}"/></body>')
  if pendulum is not None:
    bodies.append(
        f'<body name="pendulum" pos="{_vec(pendulum.pivot)}">'
        f'<joint name="swing" type="hinge" axis="{_vec(pendulum.axis)}"/>'
        f'<geom name="ball" type="sphere" pos="0 0 {_num(-pendulum.length)}" '
        f'size="{_num(pendulum.radius)}" density="{_num(pendulum.density)}"/></body>')
  exclude = ('<contact><exclude body1="world" body2="pendulum"/></contact>'
             if pendulum is not None else "")
  return (f'<mujoco model="ppd_tower"><option timestep="{_num(timestep)}" '
          f'integrator="implicitfast"/>'
          f'<default><geom friction="{_num(friction)} 0.005 0.0001" '
          f'solref="{_num(CONTACT_TIMECONST)} 1"/></default>'
          f'<worldbody><geom name="floor" type="plane" size="0 0 1"/>{"".join(bodies)}'
          f'</worldbody>{exclude}</mujoco>')


def build_model(primitives: Primitives, pendulum: Pendulum | None, **kwargs
                ) -> tuple[mujoco.MjModel, mujoco.MjData]:
  """The compiled model and its initial data (ball at its release angle), kinematics done.

  kwargs: `scene_xml`'s timestep, friction, densities.
  """
  model = mujoco.MjModel.from_xml_string(scene_xml(primitives, pendulum, **kwargs))
  data = mujoco.MjData(model)
  if pendulum is not None:
    data.qpos[model.jnt_qposadr[model.joint("swing").id]] = pendulum.angle
  mujoco.mj_forward(model, data)
  return model, data


def _label(model: mujoco.MjModel, geom: int) -> str:
  name = model.geom(geom).name
  return {"floor": "the floor", "ball": "the pendulum ball"}.get(
      name, name.replace("geom", "block "))


def start_penetrations(model: mujoco.MjModel, data: mujoco.MjData,
                       tolerance: float = PENETRATION_TOLERANCE
                       ) -> list[tuple[str, str, float]]:
  """(first, second, depth m) of every contact deeper than `tolerance` in `data`'s state,
  the later body first ("block 2", "block 1"), deepest first."""
  found = []
  for contact in data.contact[:data.ncon]:
    if contact.dist < -tolerance:
      a, b = sorted((int(contact.geom1), int(contact.geom2)), reverse=True)
      found.append((_label(model, a), _label(model, b), -float(contact.dist)))
  return sorted(found, key=lambda item: -item[2])


def check_start(model: mujoco.MjModel, data: mujoco.MjData,
                tolerance: float = PENETRATION_TOLERANCE) -> None:
  """Raises a one-sentence `UserError` for the deepest overlap at the start, if any."""
  found = start_penetrations(model, data, tolerance)
  if found:
    a, b, depth = found[0]
    verb = "sinks into" if b == "the floor" else "intersects"
    raise UserError(f"{a} {verb} {b} at the start ({depth * 1e3:.2f} mm deep); place the "
                    f"primitives so that they at most touch.")


def simulate(primitives: Primitives, pendulum: Pendulum | None, *, steps: int,
             frame_every: int = FRAME_EVERY, timestep: float = TIMESTEP,
             friction: float = FRICTION, densities: Sequence[float] | None = None,
             penetration_tolerance: float = PENETRATION_TOLERANCE) -> Trajectory:
  """Simulates `steps` physics steps from rest (module docstring), recording F = steps /
  frame_every + 1 frames; raises `UserError` if the primitives start in collision.

  Args:
    primitives: P primitives (`geometry.Primitives`, cylinders circular); pendulum: the ball,
      or None for the tower alone (the settle check); steps: a multiple of frame_every;
    densities: `[P]` kg/m^3 replacing `primitives.density` (candidate densities).

  Returns:
    `Trajectory`: blocks float64 `[F, P, 7]`, ball float64 `[F, 3]`.
  """
  if not isinstance(frame_every, (int, np.integer)) or frame_every < 1:
    raise UserError(f"frame_every must be a positive integer, got {frame_every!r}.")
  if not isinstance(steps, (int, np.integer)) or steps < 0 or steps % frame_every:
    raise UserError(f"steps must be a non-negative multiple of frame_every ({frame_every}), "
                    f"got {steps!r}.")
  model, data = build_model(primitives, pendulum, timestep=timestep, friction=friction,
                            densities=densities)
  check_start(model, data, penetration_tolerance)
  adr = [model.jnt_qposadr[model.body(f"block{i + 1}").jntadr[0]]
         for i in range(len(primitives))]
  rows = np.array([[a + k for k in range(7)] for a in adr], np.int64).reshape(-1, 7)
  ball = model.geom("ball").id if pendulum is not None else None
  frames = steps // frame_every + 1
  blocks, ball_xyz = np.zeros((frames, len(primitives), 7)), np.zeros((frames, 3))
  for frame in range(frames):
    if frame:
      mujoco.mj_step(model, data, nstep=frame_every)
      if ball is not None:
        mujoco.mj_kinematics(model, data)  # mj_step leaves positions of the previous state
    blocks[frame] = data.qpos[rows]
    if ball is not None:
      ball_xyz[frame] = data.geom_xpos[ball]
  return Trajectory(blocks, ball_xyz)


def settle(primitives: Primitives, *, seconds: float = 0.5, timestep: float = TIMESTEP,
           friction: float = FRICTION) -> tuple[float, float]:
  """(largest displacement m, largest rotation rad) of any block over `seconds` of the tower
  alone, from its placed state: how far it is from rest."""
  steps = int(round(seconds / timestep))
  trajectory = simulate(primitives, None, steps=steps, frame_every=steps or 1,
                        timestep=timestep, friction=friction)
  start, end = trajectory.blocks[0], trajectory.blocks[-1]
  shift = np.linalg.norm(end[:, :3] - start[:, :3], axis=-1)
  dot = np.clip(np.abs((end[:, 3:] * start[:, 3:]).sum(-1)), 0, 1)
  return float(shift.max(initial=0)), float((2 * np.arccos(dot)).max(initial=0))


# ---------------------------------------------------------------------------------------------
# The batched MJX path (optional dependency mujoco-mjx).
# ---------------------------------------------------------------------------------------------


def simulate_densities_mjx(primitives: Primitives, pendulum: Pendulum,
                           densities: np.ndarray, *, steps: int,
                           frame_every: int = FRAME_EVERY, timestep: float = TIMESTEP,
                           friction: float = FRICTION):
  """One scene under B candidate densities at once, in MJX (vmapped, jitted).

  Args:
    densities: `[B, P]` kg/m^3; the rest as `simulate`.

  Returns:
    jax float32 `[B, F, P, 7]` block trajectories (position, quaternion), as `simulate`'s
    up to MJX's differences (module docstring).
  """
  import jax  # the C path does not need jax
  from mujoco import mjx

  densities = np.asarray(densities, np.float64)
  if densities.ndim != 2 or densities.shape[1] != len(primitives) or not len(densities):
    raise UserError(f"densities must be [B, {len(primitives)}] (candidates x primitives), got "
                    f"shape {densities.shape}.")
  if len(set(np.asarray(primitives.shape).tolist())) > 1:
    raise UserError("MJX has no box-cylinder collision; simulate towers that mix boxes and "
                    "cylinders with simulate().")
  if steps % frame_every or steps < 0:
    raise UserError(f"steps must be a non-negative multiple of frame_every ({frame_every}), "
                    f"got {steps!r}.")
  built = [build_model(primitives, pendulum, timestep=timestep, friction=friction,
                       densities=row) for row in densities]
  check_start(*built[0])
  # Density moves the mass, inertia and the constants MuJoCo derives from them: the leaves
  # that change when every density doubles are batched over the candidates, the rest shared.
  probe = mjx.put_model(build_model(primitives, pendulum, timestep=timestep,
                                    friction=friction, densities=2 * densities[0])[0])
  models = [mjx.put_model(model) for model, _ in built]
  leaves, treedef = jax.tree_util.tree_flatten(models[0])
  per_model = [jax.tree_util.tree_flatten(m)[0] for m in models]
  batched, axes = [], []
  for k, (leaf, other) in enumerate(zip(leaves, jax.tree_util.tree_flatten(probe)[0])):
    varies = not np.array_equal(np.asarray(leaf), np.asarray(other))
    batched.append(jax.numpy.stack([m[k] for m in per_model]) if varies else leaf)
    axes.append(0 if varies else None)
  model = jax.tree_util.tree_unflatten(treedef, batched)
  data = mjx.put_data(*built[0])
  adr = [int(built[0][0].jnt_qposadr[built[0][0].body(f"block{i + 1}").jntadr[0]])
         for i in range(len(primitives))]
  run = _mjx_runner(steps // frame_every, frame_every, tuple(adr), treedef, tuple(axes))
  return run(model, data)


@functools.lru_cache(maxsize=16)
def _mjx_runner(frames: int, frame_every: int, qpos_addresses: tuple[int, ...],
                treedef, axes: tuple):
  """The jitted, vmapped event of a model structure: (batched model, data) -> `[B, F, P, 7]`;
  cached so that a physics refinement's repeated calls compile once."""
  import jax
  from mujoco import mjx

  rows = np.asarray(qpos_addresses, np.int64).reshape(-1, 1) + np.arange(7)

  def run(model, data):
    def frame(d, _):
      d = jax.lax.fori_loop(0, frame_every, lambda _, x: mjx.step(model, x), d)
      return d, d.qpos[rows]
    _, trajectory = jax.lax.scan(frame, data, None, length=frames)
    return jax.numpy.concatenate([data.qpos[rows][None], trajectory])
  in_axes = jax.tree_util.tree_unflatten(treedef, list(axes))
  return jax.jit(jax.vmap(run, in_axes=(in_axes, None)))
