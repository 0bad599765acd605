"""Gradient-inversion attacks: DLG, iDLG and Inverting Gradients, single sample or batch.

Each attack is a pure function of `(victim, observed_grads, key)` that returns an
`AttackResult`; `jax.vmap` over keys and/or observed gradients runs many attacks in one
compiled program (the `experiment` module does exactly that).

  * `dlg` (Zhu et al. 2019): jointly optimise dummy images `x'` and label logits `y'` so the
    squared L2 distance between `∇θ ℓ(F(x'), softmax(y'))` and the observed gradient
    vanishes, with PyTorch-style L-BFGS (`lbfgs.py`).
  * `idlg` (Zhao et al. 2020): read the label off the classifier's weight gradient (a batch's
    labels too, when they are distinct), then optimise the images alone.
  Both take `schedule="joint"` (the whole dummy batch moves every iteration) or `"per_sample"`
  (DLG's batch schedule: one sample moves per outer step, block-coordinate L-BFGS).
  * `inverting_gradients` (Geiping et al. 2020): cosine gradient distance + total variation,
    Adam on the *sign* of the image gradient with step decays at 3/8, 5/8, 7/8 of the budget,
    projection onto the pixel box, several restarts of which the lowest cost wins.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lite_jax.core.errors import UserError
from lite_jax.leakage import lbfgs
from lite_jax.leakage.victims import Params, Victim


class AttackResult(flax.struct.PyTreeNode):
  """What an attack recovered (leading `vmap` axes, if any, come first).

  Attributes:
    images: `[batch, *input_shape]` reconstruction.
    labels: `[batch]` int, the recovered (or given) labels.
    gradient_loss: scalar, the attack's cost at `images` (its only observable success signal).
    losses: `[record]` cost along the run (per L-BFGS outer step, or per Adam iteration).
    snapshots: `[num_snapshots, batch, *input_shape]` reconstructions along the run.
    restarts: scalar int, how many times the run restarted after diverging.
  """
  images: jax.Array
  labels: jax.Array
  gradient_loss: jax.Array
  losses: jax.Array
  snapshots: jax.Array
  restarts: jax.Array


# ---------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------

def l2_distance(grads: Params, target: Params) -> jax.Array:
  """`Σ_layers ‖g - g*‖²`, DLG's unnormalised squared L2 gradient distance."""
  return sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(grads),
                                                   jax.tree.leaves(target)))


def cosine_distance(grads: Params, target: Params) -> jax.Array:
  """`1 - ⟨g, g*⟩ / (‖g‖ ‖g*‖)` with sums over all layers (one global cosine), in [0, 2]."""
  pairs = list(zip(jax.tree.leaves(grads), jax.tree.leaves(target)))
  dot = sum(jnp.sum(a * b) for a, b in pairs)
  norm_a = jnp.sqrt(sum(jnp.sum(a * a) for a, _ in pairs))
  norm_b = jnp.sqrt(sum(jnp.sum(b * b) for _, b in pairs))
  return 1.0 - dot / jnp.maximum(norm_a * norm_b, 1e-12)


def total_variation(images: jax.Array) -> jax.Array:
  """Anisotropic TV of `[batch, height, width, channels]` images: `mean|∂x| + mean|∂y|`."""
  dx = jnp.abs(images[:, :, 1:, :] - images[:, :, :-1, :])
  dy = jnp.abs(images[:, 1:, :, :] - images[:, :-1, :, :])
  return jnp.mean(dx) + jnp.mean(dy)


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

def classifier_kernel_gradient(victim: Victim, grads: Params) -> jax.Array:
  """The gradient of the last layer's kernel, `[features, num_classes]`.

  The 2-D leaf under a module named `classifier` (every built-in victim's last layer), else
  the last 2-D leaf whose trailing dimension is `num_classes` (Flax's `Dense` kernel is
  `[in, out]`).
  """
  kernels = [(jax.tree_util.keystr(path), g)
             for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
             if g.ndim == 2 and g.shape[-1] == victim.num_classes]
  if not kernels:
    raise UserError(f"the gradient has no [features, {victim.num_classes}] classifier kernel, "
                    f"so labels cannot be read off it; pass the labels explicitly.")
  named = [g for path, g in kernels if "classifier" in path]
  return (named or [g for _, g in kernels])[-1]


def idlg_labels(victim: Victim, grads: Params, batch_size: int = 1) -> jax.Array:
  """iDLG's analytic labels: the classes whose kernel-gradient column sums are most negative.

  With softmax cross-entropy the logit gradient is `p - y`, negative only at the true class,
  and the kernel gradient is `hᵀ (p - y)` with non-negative (sigmoid) features `h`; so for one
  sample the true class is the only negative column sum. For a batch this returns the
  `batch_size` most negative columns, exact when the batch's labels are distinct.

  Returns: `[batch_size]` int labels (sorted by column sum, not by position in the batch).
  """
  column_sums = jnp.sum(classifier_kernel_gradient(victim, grads), axis=0)
  return jnp.argsort(column_sums)[:batch_size]


# ---------------------------------------------------------------------------------------------
# DLG / iDLG
# ---------------------------------------------------------------------------------------------

SCHEDULES = ("joint", "per_sample")


def dlg(victim: Victim, observed_grads: Params, key: jax.Array, *, batch_size: int = 1,
        labels: jax.Array | None = None, config: lbfgs.LBFGSConfig = lbfgs.LBFGSConfig(),
        num_snapshots: int = 0, schedule: str = "joint") -> AttackResult:
  """Deep Leakage from Gradients: match the observed gradient with L-BFGS.

  Args:
    victim: the model whose gradient was shared.
    observed_grads: the shared gradient, a pytree like `victim.params`.
    key: PRNG key for the dummy data `x' ~ N(0, 1)`, `y' ~ N(0, 1)` (and restarts).
    batch_size: how many examples the gradient was averaged over.
    labels: `[batch_size]` int labels if known (then only the images are optimised, as in
      iDLG); `None` optimises soft labels `softmax(y')` jointly, as in DLG.
    config: L-BFGS settings (default: the reference's 300 steps x 20 iterations).
    num_snapshots: reconstructions to record along the run (must divide `config.steps`).
    schedule: `joint` moves the whole dummy batch every iteration; `per_sample` (the DLG
      paper's batch schedule) moves one sample's image (and label logits) per outer step,
      round-robin, each sample with its own L-BFGS memory (`lbfgs.minimize_blockwise`).
      Both spend `config.steps * config.max_iter` iterations; for one sample they coincide
      up to the per-sample schedule's re-evaluation at the start of every outer step.
  """
  victim.check_gradient(observed_grads)
  if schedule not in SCHEDULES:
    raise UserError(f"unknown batch schedule {schedule!r}; choose one of {list(SCHEDULES)}.")
  # One sample's variables; the dummy batch is `[batch_size, m]` of them, row b = sample b.
  sample = {"images": jnp.zeros(victim.input_shape)}
  if labels is None:
    sample["label_logits"] = jnp.zeros((victim.num_classes,))
  flat, unravel_one = ravel_pytree(sample)
  unravel = jax.vmap(unravel_one)

  def init_fn(k):
    return jax.random.normal(k, (batch_size,) + flat.shape, flat.dtype)

  def soft_labels(variables):
    if labels is None:
      return jax.nn.softmax(variables["label_logits"], axis=-1)
    return victim.one_hot(labels)

  def cost(z):
    variables = unravel(z)
    return l2_distance(victim.gradient(variables["images"], soft_labels(variables)),
                       observed_grads)

  if schedule == "joint":
    state, losses, snapshots = lbfgs.minimize(
        lambda v: cost(v.reshape(batch_size, -1)), lambda k: init_fn(k).reshape(-1), key,
        config, num_snapshots)
    best_z = state.best_x.reshape(batch_size, -1)
    snapshots = snapshots.reshape((num_snapshots, batch_size) + flat.shape)
  else:
    state, losses, snapshots = lbfgs.minimize_blockwise(cost, init_fn, key, config,
                                                        num_snapshots)
    best_z = state.best_x
  best = unravel(best_z)
  found = (jnp.argmax(best["label_logits"], axis=-1) if labels is None
           else jnp.asarray(labels, jnp.int32))
  return AttackResult(images=best["images"], labels=found, gradient_loss=state.best_loss,
                      losses=losses,
                      snapshots=jax.vmap(lambda z: unravel(z)["images"])(snapshots),
                      restarts=state.restarts)


def idlg(victim: Victim, observed_grads: Params, key: jax.Array, *, batch_size: int = 1,
         config: lbfgs.LBFGSConfig = lbfgs.LBFGSConfig(), num_snapshots: int = 0,
         schedule: str = "joint") -> AttackResult:
  """Improved DLG: the labels from `idlg_labels`, then DLG on the images alone.

  For a batch the labels are the `batch_size` most negative kernel-gradient columns, exact when
  the batch's labels are distinct; dummy sample b gets the b-th of them, so scoring must match
  reconstructions to originals (`metrics.match_order`), not compare by position.
  """
  victim.check_gradient(observed_grads)
  return dlg(victim, observed_grads, key, batch_size=batch_size,
             labels=idlg_labels(victim, observed_grads, batch_size), config=config,
             num_snapshots=num_snapshots, schedule=schedule)


# ---------------------------------------------------------------------------------------------
# Inverting Gradients
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InvertingGradientsConfig:
  """Geiping et al.'s recipe; defaults are `inversefed`'s DEFAULT_CONFIG (4,800 iterations).

  Attributes:
    iterations: Adam iterations per restart (the paper's CLI default is 24,000).
    learning_rate: Adam step before the decays (x0.1 at 3/8, 5/8 and 7/8 of `iterations`).
    tv_weight: weight of the total-variation prior.
    restarts: independent runs; the one with the lowest cost wins.
    box: valid pixel range the image is projected onto after every step.
  """
  iterations: int = 4800
  learning_rate: float = 0.1
  tv_weight: float = 0.1
  restarts: int = 1
  box: tuple[float, float] = (0.0, 1.0)


def inverting_gradients_schedule(config: InvertingGradientsConfig) -> optax.Schedule:
  """The MultiStepLR schedule: x0.1 at 3/8, 5/8 and 7/8 of the iterations."""
  n = config.iterations
  return optax.piecewise_constant_schedule(
      config.learning_rate, {n * 3 // 8: 0.1, n * 5 // 8: 0.1, n * 7 // 8: 0.1})


def inverting_gradients(victim: Victim, observed_grads: Params, key: jax.Array, *,
                        batch_size: int = 1, labels: jax.Array | None = None,
                        config: InvertingGradientsConfig = InvertingGradientsConfig(),
                        num_snapshots: int = 0) -> AttackResult:
  """Inverting Gradients: cosine distance + TV, signed Adam, box projection, restarts.

  Args:
    victim, observed_grads, key, batch_size: as in `dlg`.
    labels: `[batch_size]` int labels; `None` reads them off the gradient (`idlg_labels`).
    config: the recipe.
    num_snapshots: reconstructions to record along the best restart (must divide iterations).
  """
  victim.check_gradient(observed_grads)
  if labels is None:
    labels = idlg_labels(victim, observed_grads, batch_size)
  if num_snapshots and config.iterations % num_snapshots:
    raise UserError(f"num_snapshots={num_snapshots} must divide "
                    f"iterations={config.iterations}.")
  one_hot = victim.one_hot(labels)
  low, high = config.box
  tx = optax.adam(inverting_gradients_schedule(config))

  def cost(images):
    distance = cosine_distance(victim.gradient(images, one_hot), observed_grads)
    return distance + config.tv_weight * total_variation(images)

  def run(run_key):
    shape = (batch_size,) + victim.input_shape
    images = jax.random.normal(run_key, (math.prod(shape),)).reshape(shape)  # See victims.py.

    def adam_step(carry, _):
      images, opt_state = carry
      loss, grad = jax.value_and_grad(cost)(images)
      updates, opt_state = tx.update(jnp.sign(grad), opt_state)
      images = jnp.clip(optax.apply_updates(images, updates), low, high)
      return (images, opt_state), loss

    def chunk(carry, _):
      carry, losses = jax.lax.scan(adam_step, carry, length=config.iterations // chunks)
      return carry, (losses, carry[0])

    chunks = max(num_snapshots, 1)
    (images, _), (losses, snapshots) = jax.lax.scan(chunk, (images, tx.init(images)),
                                                    length=chunks)
    return images, cost(images), losses.reshape(-1), snapshots[:num_snapshots]

  images, final_costs, losses, snapshots = jax.vmap(run)(jax.random.split(key,
                                                                          config.restarts))
  best = jnp.argmin(jnp.where(jnp.isfinite(final_costs), final_costs, jnp.inf))
  return AttackResult(images=images[best], labels=jnp.asarray(labels, jnp.int32),
                      gradient_loss=final_costs[best], losses=losses[best],
                      snapshots=snapshots[best], restarts=jnp.zeros((), jnp.int32))
