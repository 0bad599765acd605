"""Train-state and optimizer helpers shared by every paper's trainer.

The step counter counts *micro-batches*; with gradient accumulation (`optax.MultiSteps`) the
optimizer updates every `grad_accum_steps` of them, and schedules count updates.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from lite_jax.core.errors import UserError


@functools.partial(jax.jit, static_argnums=0)
def init_optimizer(tx: optax.GradientTransformation, params: Any) -> Any:
  """`tx.init(params)` as one compiled program. Eagerly, an optimizer's zeros dispatch (and
  compile, on first use) one XLA op per leaf shape: 37 programs for the GauGAN phases' Adam."""
  return tx.init(params)


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes. Dropout keys are `fold_in(dropout_key, step)`: reproducible
  from the seed and identical after a resume."""
  step: jax.Array
  params: Any
  opt_state: Any
  dropout_key: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation, dropout_key: jax.Array):
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=init_optimizer(tx, params), dropout_key=dropout_key, tx=tx)

  def apply_gradients(self, grads: Any) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(self.dropout_key, self.step)


def warmup_cosine_schedule(*, peak_lr: float, warmup_steps: int, total_steps: int,
                           warmup_init_lr: float = 1e-7, min_lr: float = 1e-7) -> optax.Schedule:
  """fairseq `cosine`: linear warmup init->peak, then one half-cosine to `min_lr` at the end."""
  if total_steps <= warmup_steps:
    raise UserError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")
  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warm = warmup_init_lr + (peak_lr - warmup_init_lr) * count / max(warmup_steps, 1)
    progress = jnp.clip((count - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    cosine = min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(count < warmup_steps, warm, cosine)
  return schedule


def inverse_sqrt_schedule(*, peak_lr: float, warmup_steps: int,
                          warmup_init_lr: float = 1e-7) -> optax.Schedule:
  """fairseq `inverse_sqrt`: linear warmup, then `peak_lr * sqrt(warmup / step)`."""
  def schedule(count):
    count = jnp.maximum(jnp.asarray(count, jnp.float32), 1.0)
    warm = warmup_init_lr + (peak_lr - warmup_init_lr) * count / max(warmup_steps, 1)
    return jnp.where(count < warmup_steps, warm, peak_lr * jnp.sqrt(warmup_steps / count))
  return schedule


def make_schedule(optim_config) -> optax.Schedule:
  """The learning-rate schedule named by `optim_config.schedule`."""
  name = optim_config.schedule
  if name == "cosine":
    return warmup_cosine_schedule(peak_lr=optim_config.learning_rate,
                                  warmup_steps=optim_config.warmup_steps,
                                  total_steps=optim_config.total_updates,
                                  warmup_init_lr=optim_config.warmup_init_lr,
                                  min_lr=optim_config.min_lr)
  if name == "inverse_sqrt":
    return inverse_sqrt_schedule(peak_lr=optim_config.learning_rate,
                                 warmup_steps=optim_config.warmup_steps,
                                 warmup_init_lr=optim_config.warmup_init_lr)
  if name == "constant":
    return optax.constant_schedule(optim_config.learning_rate)
  raise UserError(f"unknown learning-rate schedule {name!r}; choose cosine, inverse_sqrt or "
                  f"constant.")


class CosineState(NamedTuple):
  """`scale_by_cosine_in_state`'s state: the update count and the schedule itself, as data."""
  count: jax.Array
  peak: jax.Array
  total: jax.Array
  floor: jax.Array


def scale_by_cosine_in_state() -> optax.GradientTransformation:
  """Scales updates by -lr, lr = floor + (peak - floor) (1 + cos(pi min(count / total, 1))) / 2,
  with peak, total and floor read from the optimizer state (`with_schedule`).

  The schedule is data, not part of the transformation, so phases with different schedules
  (a warm-up, a search, a final training) share one optimizer object and therefore one
  compiled step (a train state holds its optimizer as a static field).
  """
  def init(params):
    del params
    return CosineState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32),
                       jnp.ones([], jnp.float32), jnp.zeros([], jnp.float32))

  def update(updates, state, params=None):
    del params
    progress = jnp.minimum(state.count / state.total, 1.0)
    lr = state.floor + 0.5 * (state.peak - state.floor) * (1.0 + jnp.cos(jnp.pi * progress))
    return (jax.tree.map(lambda u: -lr * u, updates),
            state._replace(count=state.count + 1))

  return optax.GradientTransformation(init, update)


def with_schedule(opt_state: Any, peak: float, total: int, floor: float = 0.0) -> Any:
  """`opt_state` with its `CosineState` set to a cosine from `peak` to `floor` over `total`
  updates, the count restarted."""
  def set_(node):
    if isinstance(node, CosineState):
      return CosineState(jnp.zeros([], jnp.int32), jnp.float32(peak),
                         jnp.float32(max(total, 1)), jnp.float32(floor))
    return node
  return jax.tree.map(set_, opt_state, is_leaf=lambda n: isinstance(n, CosineState))


# `optimizer_config`'s fields: every config holds these, with these defaults (the values most
# presets use).
_OPTIM_DEFAULTS = dict(learning_rate=1e-3, schedule="cosine", warmup_steps=0,
                       warmup_init_lr=0.0, min_lr=0.0, weight_decay=0.0, clip_norm=0.0,
                       grad_accum_steps=1)
# The chosen optimizer's own fields and defaults, present only with that optimizer (a lone
# Adam field in an SGD config would be an option nobody reads) unless passed explicitly.
_OPTIMIZER_DEFAULTS = {"adam": dict(b1=0.9, b2=0.999, eps=1e-8), "sgd": dict(momentum=0.9)}
# Fields make_optimizer reads when present and defaults when absent: kept only when passed.
_OPTIM_OPTIONAL = ("optimizer", "total_updates", "nesterov", "schedule_in_state")
_OPTIM_FIELDS = (tuple(_OPTIM_DEFAULTS) + tuple(_OPTIM_OPTIONAL)
                 + tuple(k for d in _OPTIMIZER_DEFAULTS.values() for k in d))
_FLOAT_FIELDS = ("learning_rate", "warmup_init_lr", "min_lr", "weight_decay", "clip_norm",
                 "b1", "b2", "eps", "momentum")


def optimizer_config(*, extra: Mapping[str, Any] | None = None, **overrides: Any
                     ) -> ml_collections.ConfigDict:
  """A config's optimizer section: `make_optimizer`'s fields with the defaults below, then
  `overrides`, then the paper-specific keys of `extra` (read by a paper's own code, e.g.
  `label_smoothing`, `stage2_learning_rate`).

  Defaults (what most presets use): Adam with b1 0.9, b2 0.999, eps 1e-8 (fields present only
  when `optimizer` is absent or "adam"); `optimizer="sgd"` gives `momentum` 0.9 instead;
  learning_rate 1e-3 with schedule "cosine", warmup_steps 0, warmup_init_lr 0.0, min_lr 0.0;
  weight_decay 0.0 (L2 added to the gradient), clip_norm 0.0 (off), grad_accum_steps 1.
  `optimizer`, `total_updates` (a cosine needs it: trainers set it from their step count),
  `nesterov` and `schedule_in_state` appear only when passed. A float field given an int is
  stored as a float, so a later `--config.optim.learning_rate=0.5` type-checks.

  The section is not locked: presets may set or add fields afterwards. An override that is
  not a field (a typo) or an `extra` key that is one raises `UserError`.
  """
  for key in overrides:
    if key not in _OPTIM_FIELDS:
      close = difflib.get_close_matches(key, _OPTIM_FIELDS, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise UserError(f"optimizer_config has no field {key!r}{hint}; pass paper-specific keys "
                      f"in extra=.")
  for key in extra or {}:
    if key in _OPTIM_FIELDS:
      raise UserError(f"optimizer_config's extra key {key!r} is an optimizer field; pass it "
                      f"as {key}= instead.")
  name = overrides.get("optimizer", "adam")
  if name not in _OPTIMIZER_DEFAULTS:
    raise UserError(f"unknown optimizer {name!r}; choose adam or sgd.")
  fields = {**_OPTIM_DEFAULTS, **_OPTIMIZER_DEFAULTS[name], **overrides}
  for key in _FLOAT_FIELDS:
    if isinstance(fields.get(key), int) and not isinstance(fields[key], bool):
      fields[key] = float(fields[key])
  return ml_collections.ConfigDict({**fields, **(extra or {})})


def make_optimizer(optim_config, *, decay_mask: Any = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam (or SGD with momentum) with optional clipping, wrapped in `optax.MultiSteps` for
  gradient accumulation.

  `optim_config` (built by `optimizer_config`, which documents the defaults) fields:
  learning_rate, schedule, warmup_steps, warmup_init_lr, min_lr, total_updates, b1, b2, eps,
  weight_decay, clip_norm (0 = off), grad_accum_steps;
  `optimizer` ("adam" when absent, or "sgd" with `momentum` and optional `nesterov`).
  `schedule_in_state` (optional, cosine without warm-up only): the schedule lives in the
  optimizer state (`scale_by_cosine_in_state`), so one optimizer object serves any peak and
  length; the state this optimizer's `init` makes must be given its schedule by
  `with_schedule` (the returned schedule is the one for `learning_rate` / `total_updates`,
  for logging). `decay_mask` (a pytree of bools, or a function of the params giving one)
  limits weight decay to some leaves.
  """
  schedule = make_schedule(optim_config)
  in_state = optim_config.get("schedule_in_state", False)
  if in_state and (optim_config.schedule != "cosine" or optim_config.warmup_steps):
    raise UserError("schedule_in_state needs schedule='cosine' without warmup_steps.")
  parts = []
  if optim_config.clip_norm:
    parts.append(optax.clip_by_global_norm(optim_config.clip_norm))
  # fairseq's Adam adds weight decay to the gradient (L2), not decoupled AdamW.
  if optim_config.weight_decay:
    parts.append(optax.add_decayed_weights(optim_config.weight_decay, mask=decay_mask))
  name = optim_config.get("optimizer", "adam")
  if name == "adam":
    parts.append(optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2,
                                     eps=optim_config.eps))
  elif name == "sgd":  # PyTorch's SGD: v = m*v + g; p -= lr*v (or lr*(g + m*v), Nesterov)
    parts.append(optax.trace(decay=optim_config.momentum,
                             nesterov=bool(optim_config.get("nesterov", False))))
  else:
    raise UserError(f"unknown optimizer {name!r}; choose adam or sgd.")
  parts.append(scale_by_cosine_in_state() if in_state else
               optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  if optim_config.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim_config.grad_accum_steps)
  return tx, schedule


def init_key(seed: int) -> jax.Array:
  """The key every model's parameters are drawn from.

  An RBG key: as reproducible as threefry, and XLA:CPU compiles an `init` about twice as fast
  with it (threefry unrolls its rounds per parameter).
  """
  return jax.random.key(seed, impl="rbg")


def stream_key(seed: int, stream: int) -> jax.Array:
  """A raw uint32 key for the per-step randomness of stream `stream` (dropout, sampled
  sub-networks, ...): `fold_in(key, step)` of it is a step's key. Raw keys checkpoint as
  plain arrays."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), stream)
