"""L-BFGS that behaves like `torch.optim.LBFGS(lr=1, max_iter=20, history_size=100)`, batched.

Why not `optax.lbfgs`: the DLG reference runs PyTorch's L-BFGS *without a line search*, and
two details of PyTorch's version are what keep that stable enough to work at all:
  * a curvature pair (s, y) enters the memory only if `yᵀs > 1e-10` (optax stores every pair,
    so without a line search a negative-curvature pair makes the inverse-Hessian estimate
    indefinite and the step points uphill);
  * the very first step is scaled by `min(1, 1/‖g‖₁)` (optax uses the L2 norm).
Everything else is textbook L-BFGS with `H₀ = (yᵀs / yᵀy) I`, computed in the compact
matrix form rather than the two-loop recursion (same `H`, far fewer sequential steps).

PyTorch's `step()` runs up to `max_iter` iterations and keeps its memory across calls, so
`steps` outer steps are `steps * max_iter` iterations of one loop; its early exits
(`|Δloss| < tolerance_change`, ...) only end a `step()` call and the next call continues from
the same state, so they change nothing here. The exits that do matter are kept: an iterate
whose `max|g| <= tolerance_grad`, or whose direction is not a descent direction, stays put.

Divergence. Plain PyTorch L-BFGS without a line search fails on some DLG seeds (dlg#9,
iDLG#6): one huge quasi-Newton step lands where the sigmoids saturate, the loss jumps by orders
of magnitude and the iterate never comes back (or turns NaN), or the run crawls through a bad
basin. Two safeguards, both off with `divergence_factor=inf, patience=0`:
  * a rejected step: a step whose loss is non-finite or more than `divergence_factor` times the
    loss it started from is undone, the memory is cleared and the next step is the cautious
    first step again (steepest descent of L1 length `lr`);
  * restarts: a run that has not converged (loss above `converged_fraction` of its starting
    loss) and is stuck (it did not move during a whole outer step, or its loss did not halve in
    `patience` outer steps) restarts from a fresh random point `init_fn(key)`. The best iterate
    over all restarts is returned.
A run is finished when it stops moving (a fixed point of the iteration), or when it has
converged and an outer step improves it by less than 0.1%: `minimize` is a `while_loop` that
ends when every run in the (vmapped) batch is finished or the budget is spent.

Everything is a pure function of arrays, so `jax.vmap` over keys or targets runs many attacks
in one program and `jax.jit` compiles the whole optimisation loop once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import jax.scipy.linalg

# PyTorch skips curvature pairs with yᵀs at or below this.
_CURVATURE_EPS = 1e-10
# A converged run is finished once an outer step improves its best loss by less than this.
_PLATEAU = 1e-3


@dataclasses.dataclass(frozen=True)
class LBFGSConfig:
  """How the optimiser runs; the defaults are the DLG reference's budget and PyTorch's defaults.

  Attributes:
    learning_rate: fixed step length `lr` (no line search).
    steps: outer `optimizer.step()` calls (the reference runs 300).
    max_iter: iterations per outer step (PyTorch's default 20).
    history_size: curvature pairs kept (the reference's 100).
    tolerance_grad: an iterate with `max|g|` at or below this has converged and stays put.
    tolerance_change: a direction with `gᵀd > -tolerance_change` is not followed.
    divergence_factor: a step whose loss exceeds this times the loss it started from (or is
      NaN/inf) is rejected; `inf` turns this safeguard off.
    patience: outer steps in which an unconverged run must halve its loss, else it restarts
      (it also restarts as soon as it stops moving); 0 never restarts.
    converged_fraction: a run whose loss is below this fraction of the first starting loss has
      converged: it never restarts, and it is finished once an outer step barely improves it.
  """
  learning_rate: float = 1.0
  steps: int = 300
  max_iter: int = 20
  history_size: int = 100
  tolerance_grad: float = 1e-7
  tolerance_change: float = 1e-9
  divergence_factor: float = 10.0
  patience: int = 50
  converged_fraction: float = 1e-6


class LBFGSState(flax.struct.PyTreeNode):
  """One L-BFGS run over a flat vector of `n` variables (all leaves unbatched).

  `x, loss, grad`: the current iterate and its value and gradient. `direction, step`: the last
  step taken (`s = step * direction`), `prev_grad` the gradient before it. `s_hist, y_hist`
  `[history_size, n]` form a ring buffer whose next slot is `head`; `sy, yy [history_size,
  history_size]` hold their inner products `s_i·y_j`, `y_i·y_j` (slot order; an empty slot
  has `sy[i, i] = 0`). `fresh`: the memory is empty and the next step is the scaled
  first step. `evaluated`: `loss, grad` belong to `x` (a new or restarted run is evaluated by
  its first iteration, so the loss graph appears once in the compiled loop). `rejected`: steps
  rejected since the last outer step. `best_*`: the lowest
  loss over all restarts; `run_best` the lowest of the current run and `checkpoint_loss` its
  value at the last progress check.
  """
  x: jax.Array
  loss: jax.Array
  grad: jax.Array
  direction: jax.Array
  step: jax.Array
  prev_grad: jax.Array
  s_hist: jax.Array
  y_hist: jax.Array
  sy: jax.Array
  yy: jax.Array
  head: jax.Array
  h_diag: jax.Array
  fresh: jax.Array
  evaluated: jax.Array
  rejected: jax.Array
  best_x: jax.Array
  best_loss: jax.Array
  run_best: jax.Array
  checkpoint_loss: jax.Array
  initial_loss: jax.Array
  restarts: jax.Array
  key: jax.Array


def _finite_or_inf(loss):
  return jnp.where(jnp.isfinite(loss), loss, jnp.inf)


def _fresh_run(x, loss, grad, history_size):
  """The fields that start over at a point: empty memory, scaled first step."""
  n = x.shape[0]
  zeros = jnp.zeros_like(x)
  return dict(x=x, loss=loss, grad=grad, direction=zeros, step=jnp.zeros((), x.dtype),
              prev_grad=zeros, s_hist=jnp.zeros((history_size, n), x.dtype),
              y_hist=jnp.zeros((history_size, n), x.dtype),
              sy=jnp.zeros((history_size, history_size), x.dtype),
              yy=jnp.zeros((history_size, history_size), x.dtype), head=jnp.zeros((), jnp.int32),
              h_diag=jnp.ones((), x.dtype), fresh=jnp.ones((), bool))


def _unevaluated_run(x, history_size):
  """A new run at `x`, to be evaluated by the next iteration."""
  inf = jnp.full((), jnp.inf, x.dtype)
  return dict(**_fresh_run(x, inf, jnp.zeros_like(x), history_size),
              evaluated=jnp.zeros((), bool), run_best=inf, checkpoint_loss=inf)


def init(x0: jax.Array, key: jax.Array, config: LBFGSConfig) -> LBFGSState:
  """A run starting at `x0 [n]` (evaluated by the first `iteration`); `key` seeds restarts."""
  return LBFGSState(**_unevaluated_run(x0, config.history_size),
                    rejected=jnp.zeros((), jnp.int32), best_x=x0,
                    best_loss=jnp.full((), jnp.inf, x0.dtype),
                    initial_loss=jnp.full((), jnp.inf, x0.dtype),
                    restarts=jnp.zeros((), jnp.int32), key=key)


def inverse_hessian_product(grad: jax.Array, s_hist: jax.Array, y_hist: jax.Array,
                            sy: jax.Array, yy: jax.Array, head: jax.Array,
                            h_diag: jax.Array) -> jax.Array:
  """`H grad` for the L-BFGS inverse-Hessian estimate, in the compact form.

  The same `H` as the two-loop recursion (Nocedal & Wright, Alg. 7.4) written with matrices
  (Byrd, Nocedal & Schnabel 1994, eq. 3.1): with S, Y the pairs oldest first, R the upper
  triangle of SᵀY and D its diagonal,
      H g = γ g + S p - γ Y u,  u = R⁻¹ Sᵀg,  p = R⁻ᵀ((D + γ YᵀY) u - γ Yᵀg).
  Two matrix-vector products each way and two small triangular solves replace the two-loop's
  2m dependent steps, which on an accelerator are 2m tiny kernel launches per iteration.

  Args:
    grad: `[n]`. s_hist, y_hist: `[m, n]` ring buffer, next slot `head`. sy, yy: `[m, m]`
      slot-order inner products (an empty slot is all zeros). h_diag: γ.
  """
  m = sy.shape[0]
  order = (head + jnp.arange(m)) % m  # Oldest first; empty slots (never written) lead.
  sy_chrono = sy[order][:, order]
  empty = jnp.diag(sy_chrono) == 0
  # Unit diagonal on empty slots keeps R invertible; their s, y are zero so they add nothing.
  r = jnp.triu(sy_chrono) + jnp.diag(empty.astype(grad.dtype))
  d = jnp.diag(jnp.diag(sy_chrono))
  s_g = (s_hist @ grad)[order]
  y_g = (y_hist @ grad)[order]
  u = jax.scipy.linalg.solve_triangular(r, s_g, lower=False)
  p = jax.scipy.linalg.solve_triangular(
      r, (d + h_diag * yy[order][:, order]) @ u - h_diag * y_g, trans="T", lower=False)
  slot_of = jnp.argsort(order)
  return h_diag * grad + p[slot_of] @ s_hist - h_diag * (u[slot_of] @ y_hist)


def _select(pred, on_true: dict, on_false: dict) -> dict:
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _remember_last_step(state: LBFGSState, config: LBFGSConfig) -> dict:
  """The memory fields after adding the pair of the step that led to `state.x`.

  PyTorch skips the pair when yᵀs <= 1e-10 (a zero step adds nothing).
  """
  y = state.grad - state.prev_grad
  s = state.step * state.direction
  ys = jnp.dot(y, s)
  keep_pair = jnp.logical_not(state.fresh) & (ys > _CURVATURE_EPS)
  slot = state.head
  s_hist = state.s_hist.at[slot].set(jnp.where(keep_pair, s, state.s_hist[slot]))
  y_hist = state.y_hist.at[slot].set(jnp.where(keep_pair, y, state.y_hist[slot]))
  # Row and column `slot` of the Gram matrices, against the updated buffers.
  s_y, y_s, y_y = y_hist @ s, s_hist @ y, y_hist @ y
  sy = jnp.where(keep_pair, state.sy.at[slot, :].set(s_y).at[:, slot].set(y_s), state.sy)
  yy = jnp.where(keep_pair, state.yy.at[slot, :].set(y_y).at[:, slot].set(y_y), state.yy)
  head = jnp.where(keep_pair, (slot + 1) % config.history_size, slot)
  h_diag = jnp.where(keep_pair, ys / jnp.dot(y, y), state.h_diag)
  return dict(s_hist=s_hist, y_hist=y_hist, sy=sy, yy=yy, head=head, h_diag=h_diag)


def iteration(state: LBFGSState, value_and_grad: Callable, config: LBFGSConfig) -> LBFGSState:
  """One PyTorch L-BFGS iteration (memory update, direction, fixed step), with step rejection."""
  memory = _remember_last_step(state, config)
  s_hist, y_hist, sy, yy = memory["s_hist"], memory["y_hist"], memory["sy"], memory["yy"]
  head, h_diag = memory["head"], memory["h_diag"]
  direction = -inverse_hessian_product(state.grad, s_hist, y_hist, sy, yy, head, h_diag)
  first_scale = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(state.grad)))
  converged = jnp.max(jnp.abs(state.grad)) <= config.tolerance_grad
  descent = jnp.dot(state.grad, direction) <= -config.tolerance_change
  # A point that does not move is a fixed point of this map: s = 0 adds no pair next time.
  moves = descent & jnp.logical_not(converged) & state.evaluated
  step = jnp.where(moves, config.learning_rate * jnp.where(state.fresh, first_scale, 1.0), 0.0)

  x_new = jnp.where(moves, state.x + step * direction, state.x)  # Also keeps NaN directions out.
  loss_new, grad_new = value_and_grad(x_new)
  finite = jnp.isfinite(loss_new) & jnp.all(jnp.isfinite(grad_new))
  rejected = (step > 0) & (jnp.logical_not(finite)
                           | (loss_new > config.divergence_factor * state.loss))
  if math.isinf(config.divergence_factor):  # Plain PyTorch: NaN and all.
    rejected = jnp.zeros((), bool)

  pending = jnp.logical_not(state.evaluated)
  accepted = dict(x=x_new, loss=loss_new, grad=grad_new, direction=direction, step=step,
                  prev_grad=state.grad, s_hist=s_hist, y_hist=y_hist, sy=sy, yy=yy, head=head,
                  h_diag=h_diag, fresh=pending)
  # A rejected step stays at the old iterate with an empty memory, so the next step is the
  # cautious first step again.
  new = _select(rejected, _fresh_run(state.x, state.loss, state.grad, config.history_size),
                accepted)
  loss_seen = jnp.where(rejected, jnp.inf, _finite_or_inf(loss_new))
  improved = loss_seen < state.best_loss
  return state.replace(**new, evaluated=jnp.ones((), bool),
                       rejected=state.rejected + rejected.astype(jnp.int32),
                       best_x=jnp.where(improved, x_new, state.best_x),
                       best_loss=jnp.where(improved, loss_new, state.best_loss),
                       run_best=jnp.minimum(state.run_best, loss_seen),
                       checkpoint_loss=jnp.where(pending, loss_seen, state.checkpoint_loss),
                       initial_loss=jnp.where(jnp.isinf(state.initial_loss), loss_seen,
                                              state.initial_loss))


def outer_step(state: LBFGSState, count: jax.Array, value_and_grad: Callable,
               init_fn: Callable, config: LBFGSConfig) -> tuple[LBFGSState, jax.Array]:
  """`max_iter` iterations (one PyTorch `step()`), then the restart check.

  Returns the new state and whether the run is finished: it no longer moves, or it has
  converged and an outer step no longer improves it.
  `count` is the number of outer steps done before this one.
  """
  start = state.replace(rejected=jnp.zeros((), jnp.int32))
  state = jax.lax.fori_loop(0, config.max_iter,
                            lambda _, st: iteration(st, value_and_grad, config), start)
  # A run that started unevaluated spends one iteration evaluating: with max_iter = 1 that
  # outer step cannot move, and is not a sign of being stuck.
  stuck = start.evaluated & jnp.all(state.x == start.x) & (state.rejected == 0)
  converged = state.best_loss <= config.converged_fraction * state.initial_loss
  # Past convergence, float32 round-off stalls progress; more iterations change nothing.
  plateau = state.best_loss >= (1.0 - _PLATEAU) * start.best_loss
  finished = stuck | (converged & plateau)
  if config.patience <= 0:
    return state, finished
  check = (count + 1) % config.patience == 0
  no_progress = check & (state.run_best > 0.5 * state.checkpoint_loss)
  restart = jnp.logical_not(converged) & (stuck | no_progress)

  key, restart_key = jax.random.split(state.key)
  restarted = state.replace(**_unevaluated_run(init_fn(restart_key), config.history_size),
                            restarts=state.restarts + 1)
  state = state.replace(checkpoint_loss=jnp.where(check, state.run_best,
                                                  state.checkpoint_loss))
  state = jax.tree.map(lambda a, b: jnp.where(restart, a, b), restarted, state)
  return state.replace(key=key), finished & jnp.logical_not(restart)


def _record_snapshot(snapshots: jax.Array, count: jax.Array, every: int,
                     best_x: jax.Array) -> jax.Array:
  """Writes `best_x` after outer step `count` into slot `count // every`.

  Written every step without a select (a select would copy the whole buffer each step): the
  last write into a slot is the one after its `every`-th step, the value it should hold.
  """
  if not snapshots.shape[0]:
    return snapshots
  return snapshots.at[jnp.minimum(count // every, snapshots.shape[0] - 1)].set(best_x)


def _outer_loop(state, outer: Callable, steps: int, num_snapshots: int):
  """Runs `outer(state, count) -> (state, finished)` until every run finished or `steps`.

  Returns `(state, losses [steps], snapshots [num_snapshots, *best_x.shape])`: the loss after
  each outer step and `best_x` every `steps // num_snapshots` steps; a run that finished early
  stays where it is for the rest of the budget.
  """
  every = steps // max(num_snapshots, 1)
  losses = jnp.zeros((steps,), state.loss.dtype)
  snapshots = jnp.zeros((num_snapshots,) + state.best_x.shape, state.best_x.dtype)

  def not_finished(carry):
    count, finished = carry[:2]
    return (count < steps) & jnp.logical_not(finished)

  def body(carry):
    count, _, state, losses, snapshots = carry
    state, finished = outer(state, count)
    losses = losses.at[count].set(state.loss)
    snapshots = _record_snapshot(snapshots, count, every, state.best_x)
    return count + 1, finished, state, losses, snapshots

  count, _, state, losses, snapshots = jax.lax.while_loop(
      not_finished, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), state, losses,
                           snapshots))
  losses = jnp.where(jnp.arange(steps) < count, losses, state.loss)
  taken = ((jnp.arange(num_snapshots) + 1) * every <= count).reshape(
      (num_snapshots,) + (1,) * state.best_x.ndim)
  return state, losses, jnp.where(taken, snapshots, state.best_x)


def minimize(fun: Callable[[jax.Array], jax.Array], init_fn: Callable[[jax.Array], jax.Array],
             key: jax.Array, config: LBFGSConfig, num_snapshots: int = 0
             ) -> tuple[LBFGSState, jax.Array, jax.Array]:
  """Minimises `fun` from `init_fn(key)` for up to `config.steps * config.max_iter` iterations.

  Args:
    fun: `x [n] -> scalar` loss, differentiable and >= 0 like every gradient distance
      (convergence is judged as a fraction of the starting loss).
    init_fn: `key -> x0 [n]`, also used for restarts.
    key: PRNG key.
    config: the optimiser settings.
    num_snapshots: how many evenly spaced best iterates to return (must divide `steps`).

  Returns:
    `(state, losses [steps], snapshots [num_snapshots, n])`: the final state (`best_x` is the
    answer), the current loss after each outer step, and the best iterate after every
    `steps / num_snapshots` outer steps (a run that finished early repeats its last values).
  """
  if num_snapshots and config.steps % num_snapshots:
    raise ValueError(f"num_snapshots={num_snapshots} must divide steps={config.steps}.")
  value_and_grad = jax.value_and_grad(fun)
  init_key, run_key = jax.random.split(key)
  state = init(init_fn(init_key), run_key, config)
  return _outer_loop(state, lambda st, count: outer_step(st, count, value_and_grad, init_fn,
                                                           config), config.steps, num_snapshots)



# ---------------------------------------------------------------------------------------------
# Block-coordinate L-BFGS: one block (one sample of a batch) moves per outer step
# ---------------------------------------------------------------------------------------------

class BlockwiseState(flax.struct.PyTreeNode):
  """Block-coordinate L-BFGS over `x [num_blocks, m]` (all leaves unbatched by `vmap`).

  `blocks`: one `LBFGSState` per block, stacked (`[num_blocks, ...]` leaves), each with its
  own curvature memory: a pair built while block b moved says nothing about block c.
  `x, loss`: the current point and the full cost there. `best_x, best_loss`: the lowest full
  cost seen after an outer step, over all restarts. `initial_loss`: the first run's starting
  cost. `round_start`: `best_loss` when the current round (one visit of every block) began.
  `run_best, checkpoint_loss`: the current run's lowest cost and its value at the last progress
  check. `moved`: whether any block moved (or had a step rejected) in the current round.
  """
  blocks: LBFGSState
  x: jax.Array
  loss: jax.Array
  best_x: jax.Array
  best_loss: jax.Array
  initial_loss: jax.Array
  round_start: jax.Array
  run_best: jax.Array
  checkpoint_loss: jax.Array
  moved: jax.Array
  restarts: jax.Array
  key: jax.Array


def _blockwise_start(fun: Callable, x0: jax.Array, key: jax.Array,
                     config: LBFGSConfig) -> dict:
  """The fields of a (re)started blockwise run at `x0 [num_blocks, m]`."""
  loss = _finite_or_inf(fun(x0))
  blocks = jax.vmap(lambda xb, kb: init(xb, kb, config))(x0, jax.random.split(key, len(x0)))
  return dict(blocks=blocks, x=x0, loss=loss, run_best=loss, checkpoint_loss=loss)


def blockwise_outer_step(state: BlockwiseState, count: jax.Array, fun: Callable,
                         init_fn: Callable, config: LBFGSConfig
                         ) -> tuple[BlockwiseState, jax.Array]:
  """Outer step `count`: `max_iter` iterations of block `count mod num_blocks` alone.

  The block's cost is the full cost with every other block held where it is. The other
  blocks moved since this block's last visit, so its loss and gradient are re-evaluated first
  (one extra evaluation per outer step). The pair of the block's own last step is added to
  its memory then (both its gradients are from the last visit), the context switch adds none,
  and the block keeps its step length: the cautious scaled first step comes only on its first
  visit or after a rejected step. With one block this is exactly `minimize`'s iteration.

  After the last block of a round: the run is finished when it has converged
  (`best_loss <= converged_fraction * initial_loss`) and the round improved `best_loss` by less
  than 0.1%, or when no block moved in the round; an unconverged run restarts every block
  from `init_fn` when no block moved, or when it did not halve its cost in `patience` rounds.

  Returns the new state and whether the run is finished.
  """
  num_blocks = state.x.shape[0]
  b = count % num_blocks
  block = jax.tree.map(lambda a: a[b], state.blocks)
  others = state.x

  def block_cost(xb):
    return fun(others.at[b].set(xb))

  value_and_grad = jax.value_and_grad(block_cost)
  loss, grad = value_and_grad(block.x)
  # The pair of the block's last step (both gradients from its last visit's context) is
  # stored now; the context switch itself (prev_grad = grad, zero step) adds none.
  block = block.replace(**_remember_last_step(block, config), loss=loss, grad=grad,
                        prev_grad=grad, step=jnp.zeros_like(block.step),
                        evaluated=jnp.ones((), bool), rejected=jnp.zeros((), jnp.int32))
  start_x = block.x
  block = jax.lax.fori_loop(0, config.max_iter,
                            lambda _, st: iteration(st, value_and_grad, config), block)
  moved = state.moved | jnp.any(block.x != start_x) | (block.rejected > 0)
  x = state.x.at[b].set(block.x)
  loss = _finite_or_inf(block.loss)
  improved = loss < state.best_loss
  state = state.replace(
      blocks=jax.tree.map(lambda a, v: a.at[b].set(v), state.blocks, block), x=x, loss=loss,
      best_x=jnp.where(improved, x, state.best_x),
      best_loss=jnp.where(improved, loss, state.best_loss),
      run_best=jnp.minimum(state.run_best, loss), moved=moved)

  round_end = b == num_blocks - 1
  converged = state.best_loss <= config.converged_fraction * state.initial_loss
  plateau = state.best_loss >= (1.0 - _PLATEAU) * state.round_start
  stuck = jnp.logical_not(moved)
  finished = round_end & (stuck | (converged & plateau))
  next_round = dict(round_start=jnp.where(round_end, state.best_loss, state.round_start),
                    moved=jnp.where(round_end, False, moved))
  if config.patience <= 0:
    return state.replace(**next_round), finished
  rounds = count // num_blocks + 1
  check = round_end & (rounds % config.patience == 0)
  no_progress = check & (state.run_best > 0.5 * state.checkpoint_loss)
  restart = round_end & jnp.logical_not(converged) & (stuck | no_progress)
  key, restart_key, init_key = jax.random.split(state.key, 3)
  state = state.replace(**next_round, key=key,
                        checkpoint_loss=jnp.where(check, state.run_best, state.checkpoint_loss))
  restarted = state.replace(**_blockwise_start(fun, init_fn(init_key), restart_key, config),
                            restarts=state.restarts + 1)
  state = jax.tree.map(lambda a, c: jnp.where(restart, a, c), restarted, state)
  return state, finished & jnp.logical_not(restart)


def minimize_blockwise(fun: Callable[[jax.Array], jax.Array],
                       init_fn: Callable[[jax.Array], jax.Array], key: jax.Array,
                       config: LBFGSConfig, num_snapshots: int = 0
                       ) -> tuple[BlockwiseState, jax.Array, jax.Array]:
  """Minimises `fun` over `x [num_blocks, m]` moving one block per outer step, round-robin.

  The per-sample schedule of DLG on batches (Zhu et al. 2019: "one sample of the dummy batch
  per iteration"): outer step k runs `config.max_iter` L-BFGS iterations on block
  `k mod num_blocks` only (`blockwise_outer_step`), so `config.steps * config.max_iter` is
  the total iteration count, each iteration moving one block. `config.patience` counts rounds
  (visits of every block).

  Args:
    fun: `x [num_blocks, m] -> scalar` loss, >= 0 (convergence is relative to the start).
    init_fn: `key -> x0 [num_blocks, m]`, also used for restarts.
    key: PRNG key.
    config: the optimiser settings.
    num_snapshots: how many evenly spaced best points to return (must divide `steps`).

  Returns:
    `(state, losses [steps], snapshots [num_snapshots, num_blocks, m])` as in `minimize`:
    `state.best_x` is the answer; `losses` the full cost after each outer step.
  """
  if num_snapshots and config.steps % num_snapshots:
    raise ValueError(f"num_snapshots={num_snapshots} must divide steps={config.steps}.")
  init_key, run_key, restart_key = jax.random.split(key, 3)
  x0 = init_fn(init_key)
  start = _blockwise_start(fun, x0, run_key, config)
  false = jnp.zeros((), bool)
  state = BlockwiseState(**start, best_x=x0, best_loss=start["loss"],
                         initial_loss=start["loss"], round_start=start["loss"], moved=false,
                         restarts=jnp.zeros((), jnp.int32), key=restart_key)
  return _outer_loop(state, lambda st, count: blockwise_outer_step(st, count, fun, init_fn,
                                                                     config),
                     config.steps, num_snapshots)
