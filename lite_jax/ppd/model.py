"""PPD's network: encoders for voxels, image and trajectories, and a recurrent primitive
generator; plus its losses.

  voxels [B, 32, 32, 32] --3-D CNN (+ xyz coordinate channels)--> [B, F_v]
  image [B, S, S, 3] --2-D CNN--> [B, F_i]
  trajectory [B, T, P, 7], ball [B, T, 3] --1-D CNN over time, per block slot, shared
    weights--> per-slot features [B, P, F_s] --Dense--> [B, F_t]   (only with `use_trajectory`)
  concat --Dense--> code [B, C]
  GRU cell, steps t = 0..P-1: input concat(code, one_hot(t), slot feature t) --> hidden
    --heads--> shape logits [B, P, 2], size [B, P, 3], position [B, P, 3] (metres),
    quaternion [B, P, 4] (w, x, y, z; unit), density logits [B, P, 100], stop logit [B, P]

What is observed at inference (our reading of the paper's "object trajectories"): the image
at t = 0, the voxels, each block's tracked trajectory `[T, P, 7]` (position m, quaternion
w x y z) in the tower's bottom-to-top order with empty slots zero, and the ball's trajectory
`[T, 3]`; the pendulum's parameters are known too, but only the physics refinement
(`refine.py`) uses them. The trajectories enter as displacements from frame 0 in decimetres
(quaternions minus their frame-0 value), so the encoder sees motion, not the geometry the
voxels already give.

Ours, beyond the paper's outline (spec §6): the xyz coordinate channels of the voxel encoder
(positions are regressed from a convolutional map); the trajectory encoder's weights shared
by the block slots (a first version that flattened all slots into one 1-D CNN fit the
training scenes' densities, top-1 30 %, and not the validation ones, 5 %); the step one-hot
and slot t's trajectory feature as the GRU's input at step t (block t's own motion is the
evidence for its density; the paper's generator input is not public); sizes and positions are
predicted in decimetres (outputs of order one) and returned in metres.

Stop signal: `stop[t]` is the logit that primitive t does *not* exist (the sequence ended
before it); the target is `t >= count`. A scene's prediction is the primitives before the
first step with sigmoid(stop) > 0.5 (`num_primitives`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.ppd.geometry import VOXEL_BOUNDS

NUM_SHAPES = 2  # box, cylinder
NUM_DENSITY_BINS = 100
METRES_PER_UNIT = 0.1  # sizes and positions are regressed in decimetres
SIZE_OFFSET = 0.7  # dm: a mid-range block side, so the size head starts near the data


def voxel_coordinates(resolution: int) -> np.ndarray:
  """float32 `[r, r, r, 3]`: voxel centres in decimetres (VOXEL_BOUNDS), indexed [x, y, z]."""
  axes = [(lo + (np.arange(resolution) + 0.5) * (hi - lo) / resolution) / METRES_PER_UNIT
          for lo, hi in VOXEL_BOUNDS]
  return np.stack(np.meshgrid(*axes, indexing="ij"), -1).astype(np.float32)


def space_to_depth_3d(x: jax.Array) -> jax.Array:
  """`[B, X, Y, Z, C]` -> `[B, X/2, Y/2, Z/2, 8 C]`: each 2x2x2 block's voxels as channels
  (ordered dx, dy, dz, c)."""
  b, nx, ny, nz, c = x.shape
  x = x.reshape(b, nx // 2, 2, ny // 2, 2, nz // 2, 2, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, nx // 2, ny // 2, nz // 2, 8 * c)


class VoxelEncoder(nn.Module):
  """voxels `[B, r, r, r]` -> features `[B, features]`: 3-D convolutions with 2x2x2 kernels
  and stride 2 (r -> r / 2 per layer), then Dense.

  Each convolution is `space_to_depth_3d` + Dense, the same map as a 2x2x2 stride-2 conv
  (kernel `[2, 2, 2, C, width]` reshaped): XLA:CPU ran a 3x3x3 stride-2 `nn.Conv` stack on
  batch 16 x 32^3 about 100x slower (1.55 s against 15 ms a training step, measured), and
  its 2x2x2 `nn.Conv` 30x slower.
  """
  widths: tuple[int, ...] = (16, 32, 64)
  features: int = 128

  @nn.compact
  def __call__(self, voxels: jax.Array) -> jax.Array:
    r = voxels.shape[-1]
    coords = jnp.broadcast_to(voxel_coordinates(r), (*voxels.shape, 3))
    x = jnp.concatenate([voxels[..., None], coords], -1)
    for width in self.widths:
      x = nn.relu(nn.Dense(width)(space_to_depth_3d(x)))
    return nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))


class ImageEncoder(nn.Module):
  """image `[B, S, S, 3]` -> features `[B, features]`: stride-2 convs, then Dense."""
  widths: tuple[int, ...] = (16, 32, 64, 64)
  features: int = 128

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    x = image
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3), strides=2, padding=1)(x))
    return nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))


def trajectory_inputs(trajectory: jax.Array, ball: jax.Array) -> jax.Array:
  """`[B, P, T, 10]`: per block slot, its displacement from frame 0 (position in dm, then the
  quaternion's change) and the ball's (dm), from trajectory `[B, T, P, 7]` and ball
  `[B, T, 3]`."""
  moved = jnp.asarray(trajectory) - trajectory[:, :1]
  moved = jnp.concatenate([moved[..., :3] / METRES_PER_UNIT, moved[..., 3:]], -1)
  ball = (ball - ball[:, :1]) / METRES_PER_UNIT
  ball = jnp.broadcast_to(ball[:, :, None], (*moved.shape[:3], 3))
  return jnp.concatenate([moved, ball], -1).transpose(0, 2, 1, 3)


class TrajectoryEncoder(nn.Module):
  """(trajectory `[B, T, P, 7]`, ball `[B, T, 3]`) -> (scene features `[B, features]`,
  per-slot features `[B, P, slot_features]`).

  Each slot's own motion with the ball's goes through the same stride-2 convs over time
  (weights shared by the slots: a block's motion means the same whichever slot it is in),
  then Dense to its slot features; the scene features are a Dense of all slots' features.
  """
  widths: tuple[int, ...] = (32, 64, 64)
  features: int = 128
  slot_features: int = 32

  @nn.compact
  def __call__(self, trajectory: jax.Array, ball: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = trajectory_inputs(trajectory, ball)  # [B, P, T, 10]
    batch, slots = x.shape[:2]
    x = x.reshape(batch * slots, *x.shape[2:])
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (5,), strides=2, padding=2)(x))
    per_slot = nn.relu(nn.Dense(self.slot_features)(x.reshape(batch, slots, -1)))
    scene = nn.relu(nn.Dense(self.features)(per_slot.reshape(batch, -1)))
    return scene, per_slot


class PPD(nn.Module):
  """The encoders and the recurrent generator (module docstring).

  Attributes:
    max_primitives: P, the generator's steps (the data's 4 block slots).
    use_trajectory: False is the appearance-only ablation (image + voxels).
    voxel_resolution: the voxel grid the model takes (the paper's 32).
    code_features: C; hidden: the GRU's width; encoder widths as the encoders'.
  """
  max_primitives: int = 4
  use_trajectory: bool = True
  voxel_resolution: int = 32
  code_features: int = 128
  hidden: int = 128
  encoder_features: int = 128
  voxel_widths: tuple[int, ...] = (16, 32, 64)
  image_widths: tuple[int, ...] = (16, 32, 64, 64)
  trajectory_widths: tuple[int, ...] = (32, 64, 64)
  slot_features: int = 32

  @nn.compact
  def __call__(self, image: jax.Array, voxels: jax.Array, trajectory: jax.Array | None = None,
               ball: jax.Array | None = None) -> dict[str, jax.Array]:
    """Args: image `[B, S, S, 3]` in [0, 1]; voxels `[B, r, r, r]`; trajectory `[B, T, P, 7]`
    and ball `[B, T, 3]` (ignored without `use_trajectory`). Returns the dict of the module
    docstring (`shape_logits`, `size`, `position`, `quaternion`, `density_logits`, `stop`)."""
    check_inputs(image, voxels, trajectory if self.use_trajectory else None,
                 self.voxel_resolution, self.max_primitives)
    feats = [VoxelEncoder(self.voxel_widths, self.encoder_features)(voxels),
             ImageEncoder(self.image_widths, self.encoder_features)(image)]
    batch = image.shape[0]
    slots = jnp.zeros((batch, self.max_primitives, 0), image.dtype)
    if self.use_trajectory:
      scene, slots = TrajectoryEncoder(self.trajectory_widths, self.encoder_features,
                                       self.slot_features)(trajectory, ball)
      feats.append(scene)
    code = nn.relu(nn.Dense(self.code_features, name="code")(jnp.concatenate(feats, -1)))
    cell = nn.GRUCell(self.hidden, name="generator")
    carry = nn.tanh(nn.Dense(self.hidden, name="initial_state")(code))
    hiddens = []
    steps = jnp.eye(self.max_primitives, dtype=code.dtype)
    for t in range(self.max_primitives):  # at most 4 steps: a Python loop
      inputs = jnp.concatenate(
          [code, jnp.broadcast_to(steps[t], (batch, self.max_primitives)), slots[:, t]], -1)
      carry, out = cell(carry, inputs)
      hiddens.append(out)
    h = jnp.stack(hiddens, 1)  # [B, P, hidden]
    h = nn.relu(nn.Dense(self.hidden, name="head_hidden")(h))
    quaternion = nn.Dense(4, name="quaternion", bias_init=_identity_quaternion)(h)
    quaternion = quaternion / jnp.maximum(jnp.linalg.norm(quaternion, axis=-1,
                                                          keepdims=True), 1e-6)
    return {
        "shape_logits": nn.Dense(NUM_SHAPES, name="shape")(h),
        "size": (SIZE_OFFSET + nn.Dense(3, name="size")(h)) * METRES_PER_UNIT,
        "position": nn.Dense(3, name="position")(h) * METRES_PER_UNIT,
        "quaternion": quaternion,
        "density_logits": nn.Dense(NUM_DENSITY_BINS, name="density")(h),
        "stop": nn.Dense(1, name="stop")(h)[..., 0],
    }


def _identity_quaternion(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype).at[0].set(1.0)


def check_inputs(image, voxels, trajectory, voxel_resolution: int, max_primitives: int) -> None:
  """One-sentence `UserError`s for inputs of the wrong shape (shapes as `PPD.__call__`)."""
  r = voxel_resolution
  if np.ndim(image) != 4 or np.shape(image)[-1] != 3:
    raise UserError(f"image must be [batch, size, size, 3], got shape {np.shape(image)}.")
  if tuple(np.shape(voxels)[1:]) != (r, r, r) or np.ndim(voxels) != 4:
    raise UserError(f"voxels must be [batch, {r}, {r}, {r}] (the model's voxel grid), got "
                    f"shape {tuple(np.shape(voxels))}.")
  if trajectory is not None and (np.ndim(trajectory) != 4 or np.shape(trajectory)[2:]
                                 != (max_primitives, 7)):
    raise UserError(f"trajectory must be [batch, frames, {max_primitives}, 7], got shape "
                    f"{tuple(np.shape(trajectory))}.")


# ---------------------------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the loss terms (`ppd_loss`); the paper gives none, these are ours."""
  shape: float = 1.0
  size: float = 1.0
  position: float = 1.0
  quaternion: float = 1.0
  density: float = 1.0
  stop: float = 1.0


def quaternion_multiply(a: jax.Array, b: jax.Array) -> jax.Array:
  """Hamilton product `[..., 4]` (w, x, y, z) of broadcastable `a` and `b`."""
  aw, ax, ay, az = jnp.moveaxis(a, -1, 0)
  bw, bx, by, bz = jnp.moveaxis(b, -1, 0)
  return jnp.stack([aw * bw - ax * bx - ay * by - az * bz,
                    aw * bx + ax * bw + ay * bz - az * by,
                    aw * by - ax * bz + ay * bw + az * bx,
                    aw * bz + ax * by - ay * bx + az * bw], -1)


def quaternion_distance(q: jax.Array, target: jax.Array) -> jax.Array:
  """`[...]` 1 - <q, target>^2 = sin^2(angle / 2) of unit quaternions `[..., 4]`: 0 for
  the same rotation whatever the signs (q and -q are one rotation)."""
  return 1.0 - jnp.sum(q * target, -1) ** 2


def _local_z(q: jax.Array) -> jax.Array:
  """`[..., 3]`: the rotated local z axis (third column of the rotation of `q`)."""
  w, x, y, z = jnp.moveaxis(q, -1, 0)
  return jnp.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], -1)


# Turns about the local z axis by 0, 90, 180, 270 degrees: a box looks the same after them
# with (sx, sy) swapped at 90 and 270.
_Z_TURNS = np.stack([[np.cos(a / 2), 0.0, 0.0, np.sin(a / 2)]
                     for a in np.arange(4) * np.pi / 2]).astype(np.float32)


def geometry_terms(outputs: dict[str, jax.Array], targets: dict[str, jax.Array]
                   ) -> dict[str, jax.Array]:
  """Per-slot geometry errors `[B, P]`, each the best over the target's symmetric copies.

  size, position: L1 in decimetres summed over the three axes. quaternion: boxes,
  `quaternion_distance` (sign-invariant) to the closest of the four z-turned copies of the
  target, whose size term swaps sx and sy for the 90 / 270 degree turns (both terms are taken
  from the same copy); cylinders (symmetric about their axis, so their yaw is not
  observable): 1 - cos of the angle between the predicted and true axes.
  """
  unit = METRES_PER_UNIT
  turned = quaternion_multiply(targets["quaternion"][:, :, None], _Z_TURNS)  # [B, P, 4, 4]
  size = targets["size"]
  swapped = size[..., jnp.array([1, 0, 2])]
  sizes = jnp.stack([size, swapped, size, swapped], 2)  # [B, P, 4, 3]
  size_err = jnp.abs(outputs["size"][:, :, None] - sizes).sum(-1) / unit
  quat_err = quaternion_distance(outputs["quaternion"][:, :, None], turned)
  best = jnp.argmin(size_err + quat_err, -1)
  pick = lambda a: jnp.take_along_axis(a, best[..., None], -1)[..., 0]
  cylinder = targets["shape"] == 1
  axis_err = 1.0 - jnp.sum(_local_z(outputs["quaternion"]) * _local_z(targets["quaternion"]),
                           -1)
  # A cylinder's sx and sy are its diameter twice: the unturned copy's size term is exact.
  return {"size": jnp.where(cylinder, size_err[..., 0], pick(size_err)),
          "quaternion": jnp.where(cylinder, axis_err, pick(quat_err)),
          "position": jnp.abs(outputs["position"] - targets["position"]).sum(-1) / unit}


def ppd_loss(outputs: dict[str, jax.Array], targets: dict[str, jax.Array],
             weights: LossWeights) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss and its terms (scalars).

  Targets (the dataset's fields, batched): shape `[B, P]`, size / position `[B, P, 3]` m,
  quaternion `[B, P, 4]`, density_bin `[B, P]`, valid `[B, P]`, count `[B]`. Slot t of the
  generator is trained against block t in the generator's stored order (bottom to top).

  * geometry = shape (cross-entropy over box / cylinder) + size + position + quaternion
    (`geometry_terms`), each a mean over the valid slots of the batch;
  * physics = density: cross-entropy over the 100 log-spaced bins, mean over valid slots;
  * stop: binary cross-entropy of `stop[t]` against `t >= count`, mean over all B x P slots
    (every slot has a target).
  """
  valid = targets["valid"].astype(jnp.float32)
  num_valid = jnp.maximum(valid.sum(), 1.0)
  mean_valid = lambda x: jnp.sum(x * valid) / num_valid
  geometry = geometry_terms(outputs, targets)
  shape_ce = -jnp.take_along_axis(jax.nn.log_softmax(outputs["shape_logits"]),
                                  targets["shape"][..., None], -1)[..., 0]
  density_ce = -jnp.take_along_axis(jax.nn.log_softmax(outputs["density_logits"]),
                                    targets["density_bin"][..., None], -1)[..., 0]
  steps = jnp.arange(outputs["stop"].shape[1])
  stop_target = (steps[None] >= targets["count"][:, None]).astype(jnp.float32)
  stop_bce = jnp.mean(_sigmoid_bce(outputs["stop"], stop_target))
  terms = {"shape_loss": mean_valid(shape_ce), "size_loss": mean_valid(geometry["size"]),
           "position_loss": mean_valid(geometry["position"]),
           "quaternion_loss": mean_valid(geometry["quaternion"]),
           "density_loss": mean_valid(density_ce), "stop_loss": stop_bce}
  total = sum(getattr(weights, name[:-len("_loss")]) * value for name, value in terms.items())
  density_hit = jnp.argmax(outputs["density_logits"], -1) == targets["density_bin"]
  return total, {"loss": total, **terms, "density_top1": mean_valid(density_hit)}


def _sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def num_primitives(stop_logits: np.ndarray) -> np.ndarray:
  """int `[B]`: the steps before the first with sigmoid(stop) > 0.5, from `[B, P]` logits."""
  stop = np.asarray(stop_logits) > 0
  return np.where(stop.any(-1), stop.argmax(-1), stop.shape[-1])


def loss_weights(config: Any) -> LossWeights:
  """`LossWeights` from a config section with the same field names."""
  return LossWeights(**{f.name: float(config[f.name]) for f in dataclasses.fields(LossWeights)})
