"""PPD's network: encoders for voxels, image and trajectories, and a recurrent primitive
generator; plus its losses.

  voxels [B, 32, 32, 32] --3-D CNN (+ xyz coordinate channels)--> [B, F_v]
  image [B, S, S, 3] --2-D CNN--> [B, F_i]
  trajectory [B, T, P, 7], ball [B, T, 3] --1-D CNN over time, per block slot, shared
    weights--> per-slot features [B, P, F_s] --Dense--> [B, F_t]   (only with `use_trajectory`)
  concat --Dense--> code [B, C]
  GRU cell, steps t = 0..P-1: input concat(code, one_hot(t), slot feature t, what step t - 1
    read) --> hidden --heads--> shape logits [B, P, 2], size [B, P, 3], position [B, P, 3]
    (metres), quaternion [B, P, 4] (w, x, y, z; unit), density logits [B, P, 100], stop
    logit [B, P]

Attention readout (`readout="attention"`, ours; "global" is the outline above alone): at
step t the GRU state attends over the grid's occupied voxels (at most `max_points` `[B, K]`),
whose keys are the voxel's centre, its coarse voxel-map cell and its height level's
features (`LevelEncoder`: 1-D convs over the per-level cross-section statistics and their
cumulative sum, so a level knows which block of the stack it is in). The heads then also see
the attended voxels' moments (`voxel_moment_features`: centre, sqrt(12 var) per axis,
covariance, two yaw estimates) and the image at the cells those voxels project to through
the data's camera (features, pixel colour), and the position is the attended centre plus a
learned correction. Training adds `attention_loss`: KL(uniform over block t's voxels ||
step t's attention) (`ppd_loss`). A global code regresses positions and sizes of blocks a few
voxels wide poorly and overfits 2,000 scenes (shape F1 0.53 and 0.41 after 2,000 and 6,000
steps of the demo); the readout gives each step the block's own voxels and pixels.

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
from lite_jax.ppd import geometry
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
  def __call__(self, voxels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (features `[B, features]`, the last map `[B, r', r', r', widths[-1]]`)."""
    r = voxels.shape[-1]
    coords = jnp.broadcast_to(voxel_coordinates(r), (*voxels.shape, 3))
    x = jnp.concatenate([voxels[..., None], coords], -1)
    for width in self.widths:
      x = nn.relu(nn.Dense(width)(space_to_depth_3d(x)))
    return nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1))), x


class ImageEncoder(nn.Module):
  """image `[B, S, S, 3]` -> features `[B, features]`: stride-2 convs, then Dense."""
  widths: tuple[int, ...] = (16, 32, 64, 64)
  features: int = 128

  @nn.compact
  def __call__(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (features `[B, features]`, the map after the first two convs
    `[B, S/4, S/4, widths[1]]`, or after the first if there is one)."""
    x, maps = image, []
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3), strides=2, padding=1)(x))
      maps.append(x)
    return nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1))), maps[min(1, len(maps) - 1)]


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


def level_statistics(voxels: jax.Array) -> jax.Array:
  """`[B, r, 7]`: per height level z of `voxels [B, r, r, r]` (indexed [x, y, z]), its occupied
  fraction, then the occupied voxels' mean x, y and their xx, yy, xy second moments (dm and
  dm^2, zero for an empty level), and whether it is occupied. A tower's blocks change the
  cross-section where one ends and the next begins."""
  r = voxels.shape[-1]
  xy = jnp.asarray(voxel_coordinates(r)[:, :, 0, :2])  # [r, r, 2] dm
  count = voxels.sum((1, 2))  # [B, r]
  safe = jnp.maximum(count, 1.0)
  mean = jnp.einsum("bxyz,xyc->bzc", voxels, xy) / safe[..., None]
  second = jnp.einsum("bxyz,xyc,xyd->bzcd", voxels, xy, xy) / safe[..., None, None]
  cov = second - mean[..., :, None] * mean[..., None, :]
  return jnp.concatenate([count[..., None] / r ** 2, mean, cov[..., 0, :], cov[..., 1, 1:],
                          (count > 0)[..., None].astype(voxels.dtype)], -1)


class LevelEncoder(nn.Module):
  """`level_statistics [B, r, 7]` -> per-level features `[B, r, features]`: two 1-D convs over
  height (kernel 3: a level sees its neighbours, so a change of cross-section shows), and
  the cumulative sum of their output from the bottom up (a level's features then count the
  changes below it: which block of the stack it is in)."""
  features: int = 32

  @nn.compact
  def __call__(self, stats: jax.Array) -> jax.Array:
    x = nn.relu(nn.Conv(self.features, (3,), padding=1)(stats))
    x = nn.relu(nn.Conv(self.features, (3,), padding=1)(x))
    return nn.relu(nn.Dense(self.features)(jnp.concatenate([x, jnp.cumsum(x, axis=1) / 4], -1)))


class AttentionReadout(nn.Module):
  """Additive attention of one query per sample over N positions: `query [B, Q]`,
  `keys [B, N, K]`, `mask [B, N]` (bool: positions that may be attended) -> weights `[B, N]`.

  The score is `w . relu(W_q q + W_k k)`, a one-hidden-layer MLP, not a dot product: it can
  pick a band of heights (one block of a tower), which a score linear in the keys cannot.
  `claimed [B, N]` (optional) enters the hidden layer too: how much earlier steps attended
  each position, so a step can pass over the blocks already read.
  """
  hidden: int = 32

  @nn.compact
  def __call__(self, query: jax.Array, keys: jax.Array, mask: jax.Array,
               claimed: jax.Array | None = None) -> jax.Array:
    hidden = nn.Dense(self.hidden, name="query")(query)[:, None] + nn.Dense(
        self.hidden, use_bias=False, name="key")(keys)
    if claimed is not None:
      hidden = hidden + nn.Dense(self.hidden, use_bias=False, name="claimed")(claimed[..., None])
    scores = nn.Dense(1, name="score")(nn.relu(hidden))[..., 0]
    return jax.nn.softmax(jnp.where(mask, scores, -1e9), -1)


MOMENT_FEATURES = 14
# Outputs of the attention readout that only the loss reads.
ATTENTION_OUTPUTS = ("voxel_attention", "voxel_points", "voxel_real")


def voxel_moment_features(weights: jax.Array, points: jax.Array) -> jax.Array:
  """`[B, MOMENT_FEATURES]`: what the attended voxels say about one block, from `weights
  [B, N]` over `points [B, N, 3]` (dm).

  Mean (3: the centre), sqrt(12 var) per axis (3: a box's sides when axis-aligned), the
  covariance's off-diagonal terms x 12 (3), and two yaw estimates as the quaternion halves
  (cos, sin)(psi / 2) of a turn psi about z: psi_2 = arg E[(dx + i dy)^2] / 2 (the long side's
  direction, modulo 180 degrees) and psi_4 = arg -E[(dx + i dy)^4] / 4 (a square's, modulo 90:
  E[(x + i y)^4] = E[x^4 - 6 x^2 y^2 + y^4] is negative for an unturned square);
  the magnitude of E[(dx + i dy)^4] / E[dx^2 + dy^2]^2 (1: near 0 for a disk, larger for
  a square) tells a cylinder from a box.
  """
  mean, cov = attended_moments(weights, points)
  spread = jnp.sqrt(12 * jnp.maximum(jnp.diagonal(cov, 0, 1, 2), 0) + 1e-6)
  d = points - mean[:, None]
  c = d[..., 0] + 1j * d[..., 1]
  second = jnp.einsum("bn,bn->b", weights.astype(c.dtype), c ** 2)
  fourth = jnp.einsum("bn,bn->b", weights.astype(c.dtype), c ** 4)
  radial = cov[:, 0, 0] + cov[:, 1, 1] + 1e-6
  half = lambda z, k: jnp.stack([jnp.cos(jnp.angle(z) / (2 * k)),
                                 jnp.sin(jnp.angle(z) / (2 * k))], -1)
  return jnp.concatenate([mean, spread, 12 * cov[:, 0, 1:], 12 * cov[:, 1, 2:],
                          half(second, 2), half(-fourth, 4),
                          (jnp.abs(fourth) / radial ** 2)[:, None]], -1)


def attended_moments(weights: jax.Array, points: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean `[B, 3]`, covariance `[B, 3, 3]`) of `points [B, N, 3]` under `weights [B, N]`.

  Attention spread evenly over one box's voxels gives its centre and, per axis of the box,
  a variance of side^2 / 12 (the box's yaw turns the covariance's x-y block).
  """
  mean = jnp.einsum("bn,bni->bi", weights, points)
  centred = points - mean[:, None]
  return mean, jnp.einsum("bn,bni,bnj->bij", weights, centred, centred)


class PPD(nn.Module):
  """The encoders and the recurrent generator (module docstring).

  Attributes:
    max_primitives: P, the generator's steps (the data's 4 block slots).
    use_trajectory: False is the appearance-only ablation (image + voxels).
    voxel_resolution: the voxel grid the model takes (the paper's 32).
    code_features: C; hidden: the GRU's width; encoder widths as the encoders'.
    readout: "attention" (ours; module docstring): each step attends over the occupied
      voxels (keyed by centre, coarse map cell, height-level features and what earlier steps
      attended), and its heads see what it attended (`voxel_moment_features`) and the image
      there; "global": the heads see the GRU state alone (the paper's outline: encoders ->
      one code -> recurrent generator).
    camera: the data's pinhole camera `(position, target, fov)` (`geometry.camera_frame`):
      with it, a step reads the image at the cells its attended voxels project to; without,
      it has a second attention over the image's cells.
    max_points: K, the occupied voxels a step may attend over (the first ones in index order;
      generated towers occupy a median 189 and at most 612 of 32^3, measured over 2,000
      scenes; `train` refuses a scene with more than its config's `max_points`).
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
  readout: str = "attention"
  max_points: int = 2048
  camera: Any = None

  @nn.compact
  def __call__(self, image: jax.Array, voxels: jax.Array, trajectory: jax.Array | None = None,
               ball: jax.Array | None = None) -> dict[str, jax.Array]:
    """Args: image `[B, S, S, 3]` in [0, 1]; voxels `[B, r, r, r]`; trajectory `[B, T, P, 7]`
    and ball `[B, T, 3]` (ignored without `use_trajectory`). Returns the dict of the module
    docstring (`shape_logits`, `size`, `position`, `quaternion`, `density_logits`, `stop`),
    with the attention readout also `voxel_attention [B, P, K]`, `voxel_points [B, K, 3]` (m)
    and `voxel_real [B, K]` (ATTENTION_OUTPUTS, for the loss)."""
    check_inputs(image, voxels, trajectory if self.use_trajectory else None,
                 self.voxel_resolution, self.max_primitives)
    if self.readout not in ("attention", "global"):
      raise UserError(f"model.readout must be 'attention' or 'global', got {self.readout!r}.")
    voxel_features, voxel_map = VoxelEncoder(self.voxel_widths, self.encoder_features)(voxels)
    image_features, image_map = ImageEncoder(self.image_widths, self.encoder_features)(image)
    feats = [voxel_features, image_features]
    batch = image.shape[0]
    slots = jnp.zeros((batch, self.max_primitives, 0), image.dtype)
    if self.use_trajectory:
      scene, slots = TrajectoryEncoder(self.trajectory_widths, self.encoder_features,
                                       self.slot_features)(trajectory, ball)
      feats.append(scene)
    code = nn.relu(nn.Dense(self.code_features, name="code")(jnp.concatenate(feats, -1)))
    cell = nn.GRUCell(self.hidden, name="generator")
    carry = nn.tanh(nn.Dense(self.hidden, name="initial_state")(code))
    attend = self.readout == "attention"
    if attend:
      levels = LevelEncoder(self.slot_features or 32)(level_statistics(voxels))
      voxel_keys, points, occupied = _voxel_keys(voxels, voxel_map, levels, self.max_points)
      image_keys = _image_keys(image, image_map)
      voxel_attention = AttentionReadout(self.slot_features or 32, name="voxel_attention")
      claimed = jnp.zeros(occupied.shape, code.dtype)
      if self.camera is None:
        image_attention = AttentionReadout(self.slot_features or 32, name="image_attention")
        everywhere = jnp.ones(image_keys.shape[:2], bool)
      else:  # each voxel's image cell: the block's pixels are where its voxels project
        uv = geometry.project(points * METRES_PER_UNIT, self.camera)
        cells = _image_cells(uv, image_map.shape[1:3])
        pixels = _image_cells(uv, image.shape[1:3])
        voxel_pixels = jnp.concatenate([
            jnp.take_along_axis(image_keys, cells[..., None], 1),
            jnp.take_along_axis(image.reshape(batch, -1, 3), pixels[..., None], 1)], -1)
    hiddens, attention, last = [], [], jnp.zeros((batch, MOMENT_FEATURES), code.dtype)
    steps = jnp.eye(self.max_primitives, dtype=code.dtype)
    for t in range(self.max_primitives):  # at most 4 steps: a Python loop
      inputs = [code, jnp.broadcast_to(steps[t], (batch, self.max_primitives)), slots[:, t]]
      carry, out = cell(carry, jnp.concatenate(inputs + ([last] if attend else []), -1))
      if attend:
        weights = voxel_attention(out, voxel_keys, occupied, claimed)
        # Each earlier step's attention scaled to a peak of 1 (about 1 over the block it read).
        claimed = claimed + weights / jnp.max(weights, -1, keepdims=True)
        if self.camera is None:
          seen = jnp.einsum("bn,bnc->bc", image_attention(out, image_keys, everywhere),
                            image_keys)
        else:
          seen = jnp.einsum("bn,bnc->bc", weights, voxel_pixels)
        last = voxel_moment_features(weights, points)
        attention.append(weights)
        out = jnp.concatenate([out, last, seen], -1)
      hiddens.append(out)
    h = jnp.stack(hiddens, 1)  # [B, P, hidden (+ MOMENT_FEATURES + image features)]
    features = nn.relu(nn.Dense(self.hidden, name="head_hidden")(h))
    position = nn.Dense(3, name="position", kernel_init=nn.initializers.zeros if attend
                        else nn.initializers.lecun_normal())(features)
    if attend:  # the attended voxels' mean is the position; the head corrects it
      position = position + h[..., self.hidden:self.hidden + 3]
    h = features
    quaternion = nn.Dense(4, name="quaternion", bias_init=_identity_quaternion)(h)
    quaternion = quaternion / jnp.maximum(jnp.linalg.norm(quaternion, axis=-1,
                                                          keepdims=True), 1e-6)
    outputs = {
        "size": (SIZE_OFFSET + nn.Dense(3, name="size")(h)) * METRES_PER_UNIT,
        "position": position * METRES_PER_UNIT,
        "quaternion": quaternion,
        "density_logits": nn.Dense(NUM_DENSITY_BINS, name="density")(h),
        "stop": nn.Dense(1, name="stop")(h)[..., 0],
        "shape_logits": nn.Dense(NUM_SHAPES, name="shape")(h),
    }
    if attend:  # for the attention loss (`ppd_loss`); `predict` drops them
      outputs.update(voxel_attention=jnp.stack(attention, 1), voxel_real=occupied,
                     voxel_points=points * METRES_PER_UNIT)
    return outputs


def _voxel_keys(voxels: jax.Array, voxel_map: jax.Array, levels: jax.Array, max_points: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The occupied voxels of `[B, r, r, r]`, at most `max_points` per scene (the first in
  x, y, z index order): keys `[B, K, 3 + C + L]` (the voxel's centre in dm, the coarse map
  cell `[B, r', r', r', C]` it lies in and its level's features `levels [B, r, L]`),
  centres `[B, K, 3]` dm, and which of the K are real
  `[B, K]`. Attending over these instead of all r^3 voxels is 16x cheaper at r = 32."""
  batch, r, coarse = voxels.shape[0], voxels.shape[-1], voxel_map.shape[1]
  occupied = voxels.reshape(batch, -1) > 0.5
  index = jax.vmap(lambda o: jnp.nonzero(o, size=max_points, fill_value=0)[0])(occupied)
  real = jnp.take_along_axis(occupied, index, 1)
  x, y, z = index // (r * r), index // r % r, index % r
  up = r // coarse
  cell = ((x // up) * coarse + y // up) * coarse + z // up
  features = jnp.take_along_axis(voxel_map.reshape(batch, coarse ** 3, -1), cell[..., None], 1)
  points = jnp.asarray(voxel_coordinates(r).reshape(-1, 3))[index]
  level = jnp.take_along_axis(levels, z[..., None], 1)
  return jnp.concatenate([points, features, level], -1), points, real


def _image_cells(uv: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """int `[B, K]`: the flat index into an `[H', W']` map over the whole image of the cell that
  holds each image point `uv [B, K, 2]` (`geometry.project`; clipped to the image)."""
  h, w = shape
  col = jnp.clip(jnp.floor((uv[..., 0] + 1) / 2 * w), 0, w - 1).astype(jnp.int32)
  row = jnp.clip(jnp.floor((uv[..., 1] + 1) / 2 * h), 0, h - 1).astype(jnp.int32)
  return row * w + col


def _image_keys(image: jax.Array, image_map: jax.Array) -> jax.Array:
  """`[B, H' W', C + 3 + 2]` per cell of an image feature map `[B, H', W', C]`: its
  features, the image's mean colour over the cell and the cell's centre in [-1, 1]."""
  b, h, w, _ = image_map.shape
  s = image.shape[1] // h
  colour = image[:, :h * s, :w * s].reshape(b, h, s, w, s, 3).mean((2, 4))
  ys, xs = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1,
                       indexing="ij")
  where = jnp.broadcast_to(jnp.asarray(np.stack([ys, xs], -1), image.dtype), (b, h, w, 2))
  return jnp.concatenate([image_map, colour, where], -1).reshape(b, h * w, -1)


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
  attention: float = 1.0


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
    (every slot has a target);
  * attention (with the attention readout's outputs `voxel_attention [B, P, K]`,
    `voxel_points [B, K, 3]`, `voxel_real [B, K]`): KL(u_t || a_t) of the uniform distribution
    u_t over the voxels inside block t (`inside_primitives`) from step t's attention a_t,
    mean over valid slots: zero when step t attends to all of block t evenly; 0 otherwise.
  """
  valid = targets["valid"].astype(jnp.float32)
  num_valid = jnp.maximum(valid.sum(), 1.0)
  mean_valid = lambda x: jnp.sum(x * valid) / num_valid
  geometry = geometry_terms(outputs, targets)
  shape_ce = -jnp.take_along_axis(jax.nn.log_softmax(outputs["shape_logits"]),
                                  targets["shape"][..., None], -1)[..., 0]
  density_ce = -jnp.take_along_axis(jax.nn.log_softmax(outputs["density_logits"]),
                                    targets["density_bin"][..., None], -1)[..., 0]
  attention = jnp.zeros(())
  if "voxel_attention" in outputs:
    # KL(uniform over block t's voxels || step t's attention): all the mass on the block, and
    # spread evenly over it (so the attended mean and spread are the block's).
    inside = inside_primitives(outputs["voxel_points"], targets)  # [B, P, K]
    inside = inside * outputs["voxel_real"][:, None]
    uniform = inside / jnp.maximum(inside.sum(-1, keepdims=True), 1.0)
    kl = jnp.sum(uniform * (jnp.log(jnp.maximum(uniform, 1e-12))
                            - jnp.log(outputs["voxel_attention"] + 1e-12)), -1)
    attention = mean_valid(kl)
  steps = jnp.arange(outputs["stop"].shape[1])
  stop_target = (steps[None] >= targets["count"][:, None]).astype(jnp.float32)
  stop_bce = jnp.mean(_sigmoid_bce(outputs["stop"], stop_target))
  terms = {"shape_loss": mean_valid(shape_ce), "size_loss": mean_valid(geometry["size"]),
           "position_loss": mean_valid(geometry["position"]),
           "quaternion_loss": mean_valid(geometry["quaternion"]),
           "density_loss": mean_valid(density_ce), "stop_loss": stop_bce,
           "attention_loss": attention}
  total = sum(getattr(weights, name[:-len("_loss")]) * value for name, value in terms.items())
  density_hit = jnp.argmax(outputs["density_logits"], -1) == targets["density_bin"]
  return total, {"loss": total, **terms, "density_top1": mean_valid(density_hit)}


def inside_primitives(points: jax.Array, targets: dict[str, jax.Array]) -> jax.Array:
  """float `[B, P, K]`: 1 where point k `[B, K, 3]` (m) lies inside primitive p of `targets`
  (shape `[B, P]`, size / position `[B, P, 3]` m, quaternion `[B, P, 4]`), as
  `geometry.inside_local` decides (boxes: |local| <= size / 2; cylinders: an elliptic disk
  in local x-y and |z| <= sz / 2)."""
  w, x, y, z = jnp.moveaxis(targets["quaternion"], -1, 0)
  rotation = jnp.stack([
      jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)],
      -2)  # [B, P, 3, 3]
  offset = points[:, None] - targets["position"][:, :, None]  # [B, P, K, 3]
  local = jnp.einsum("bpji,bpkj->bpki", rotation, offset)  # R^T (point - centre)
  half = targets["size"][:, :, None] / 2
  box = jnp.all(jnp.abs(local) <= half, -1)
  disk = (local[..., 0] / half[..., 0]) ** 2 + (local[..., 1] / half[..., 1]) ** 2 <= 1
  cylinder = disk & (jnp.abs(local[..., 2]) <= half[..., 2])
  return jnp.where(targets["shape"][..., None] == 1, cylinder, box).astype(points.dtype)


def _sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def num_primitives(stop_logits: np.ndarray) -> np.ndarray:
  """int `[B]`: the steps before the first with sigmoid(stop) > 0.5, from `[B, P]` logits."""
  stop = np.asarray(stop_logits) > 0
  return np.where(stop.any(-1), stop.argmax(-1), stop.shape[-1])


def loss_weights(config: Any) -> LossWeights:
  """`LossWeights` from a config section with the same field names."""
  return LossWeights(**{f.name: float(config[f.name]) for f in dataclasses.fields(LossWeights)})
