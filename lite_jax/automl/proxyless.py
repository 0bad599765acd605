"""ProxylessNAS: path-binarized differentiable search over MBConv candidates, with a latency
loss from a lookup table; then the derived network is trained, evaluated and profiled.

The super-network (`SuperNet`) holds, for every searchable block of a `SearchSpace`, one
`classifiers.InvertedResidual` per candidate (kernel 3/5/7 x expansion 3/6) under
`blocks_{i}/<op name>`, plus `zero` where the block may be skipped; its fixed parts (`stem`,
`first`, `head`, `classifier`) have the parameter paths of the derived `ProxylessNet`, so a
candidate's trained weights copy straight into the derived network (`derive_variables`).

Binarized paths (spec §4, the reference's `MixedEdge`):

* Per block, the architecture parameters alpha (one row of `[num_blocks, len(space.candidates)]`,
  columns that are not the block's candidates masked out) give p = softmax(alpha). One path is
  sampled (`full`), or two without replacement and then one of them by their renormalized
  probabilities (`two`); the binary gates g are its one-hot vector.
* Only the active candidate runs forward (`lax.switch` over the block's candidates, one
  compiled step for every sampled architecture). The gate gradient is a `jax.custom_vjp`
  (`mixed_op`): its backward returns the input and weight cotangents of the active path only,
  and dL/dg_j = <o_j(x), dL/dy> for every candidate j, recomputing the candidates' outputs in
  the backward pass instead of storing them (the reference's `full_v2`). A candidate's output
  o_j here includes the block's identity shortcut (InvertedResidual adds it; `zero` is the
  identity): that shifts every dL/dg_j by the same <x, dL/dy>, which the alpha gradient below
  ignores because sum_j p_j (delta_ij - p_i) = 0.
* The gates' own backward (`binary_gates`) maps dL/dg to dL/dalpha_i = sum_j dL/dg_j p_j
  (delta_ij - p_i), over all candidates (`full`) or over the two sampled ones with p
  renormalized over them (`two`), after which those two alphas are shifted to keep their
  log-sum-exp (`preserve_logsumexp`), as the reference's `rescale_updated_arch_param`.

Losses. E[lat] = fixed + sum_blocks sum_ops p_op LUT(op) (`expected_latency`, the table from
`proxyless_net.BlockLatencyTable`); `mul#log`: 0.2 CE (log E[lat] / log ref)^0.3, `add#linear`:
CE + 0.1 (E[lat] - ref) / ref (`latency_loss`); CE is the plain cross-entropy of a batch held out
from train.

Schedule, all in one jitted step per phase (`make_search_step`). The batch dict carries a
training batch (`image`, `label`) and a held-out batch (`arch_image`, `arch_label`); every step
updates the weights (SGD Nesterov, cosine, label smoothing) on one sampled path, and when the
updated step count is a multiple of `arch_every` (5), `lax.cond` runs one architecture update
(Adam, beta1 = 0, lr 1e-3) on the held-out batch. The warm-up phase (`<workdir>/warmup`) trains
the weights only, paths sampled uniformly; each latency target then searches from the warm-up
weights in `<workdir>/search_<target>`. Path-sampling keys are `fold_in(state.dropout_key,
step)`, so a resumed search samples the same paths as an uninterrupted one.

Pipeline (each phase resumable in its folder; `run_all` chains them): `build_latency_table`,
`search`, `derive` (argmax alpha per block; `derived_<target>/export.msgpack` holds the derived
module's variables copied from the super-network), `train` (from those weights or from scratch:
`train.init`), `evaluate` (test top-1 / top-5), `profile` (params, MACs, table estimate and
measured latency).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.serialization
import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import image_classification as image_data
from lite_jax import core
from lite_jax.automl import classifiers, hardware, proxyless_net, training
from lite_jax.automl.classifiers import ConvBN, InvertedResidual
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import read_metrics
from lite_jax.nn import losses

LOSSES = ("mul#log", "add#linear")
MODES = ("full", "two")


# ---------------------------------------------------------------------------------------------
# Binarized gates and the mixed operation.
# ---------------------------------------------------------------------------------------------


def masked_probs(alpha: jax.Array, mask: jax.Array) -> jax.Array:
  """softmax over the columns where `mask` is True (zero elsewhere), along the last axis.

  alpha, mask: [..., K] -> [..., K].
  """
  return jax.nn.softmax(jnp.where(mask, alpha, -jnp.inf), axis=-1)


def alpha_grad_from_gates(gate_grad: jax.Array, probs: jax.Array) -> jax.Array:
  """dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i), along the last axis.

  gate_grad, probs: [..., K] (probs zero outside the involved candidates) -> [..., K].
  """
  return probs * (gate_grad - jnp.sum(gate_grad * probs, axis=-1, keepdims=True))


@jax.custom_vjp
def binary_gates(alpha: jax.Array, active: jax.Array, involved: jax.Array) -> jax.Array:
  """The one-hot gates of the active paths, with the ProxylessNAS gradient to alpha.

  Args:
    alpha: [num_blocks, K] architecture parameters.
    active: int [num_blocks], the column each block runs.
    involved: bool [num_blocks, K], the candidates the alpha gradient spans (all of the block's
      candidates in `full` mode, the two sampled ones in `two` mode).

  Returns:
    float [num_blocks, K] one-hot gates; their cotangent becomes `alpha_grad_from_gates`.
  """
  return jax.nn.one_hot(active, alpha.shape[-1], dtype=alpha.dtype)


def _gates_fwd(alpha, active, involved):
  return binary_gates(alpha, active, involved), (masked_probs(alpha, involved),)


def _gates_bwd(residuals, gate_grad):
  (probs,) = residuals
  return alpha_grad_from_gates(gate_grad, probs), None, None


binary_gates.defvjp(_gates_fwd, _gates_bwd)


def sample_paths(key: jax.Array, alpha: jax.Array, mask: jax.Array, mode: str
                 ) -> tuple[jax.Array, jax.Array]:
  """Samples each block's active path from p = softmax(alpha) over its candidates.

  `full`: one path from p. `two`: two distinct paths from p (Gumbel top-2), then one of them by
  their renormalized probabilities. (Uniform sampling: pass zeros as alpha.)

  Args:
    key: a PRNG key.
    alpha, mask: [num_blocks, K] parameters and the blocks' candidate columns.
    mode: "full" or "two".

  Returns:
    (active int [num_blocks], involved bool [num_blocks, K]): the column each block runs and
    the candidates its alpha gradient spans.
  """
  if mode not in MODES:
    raise UserError(f"unknown binarization mode {mode!r}; choose one of {MODES}.")
  logits = jnp.where(mask, alpha, -jnp.inf)
  keys = jax.random.split(key, 2)
  if mode == "full":
    return jax.random.categorical(keys[0], logits, axis=-1), mask
  gumbel = jax.random.gumbel(keys[0], logits.shape)
  _, two = jax.lax.top_k(logits + gumbel, 2)  # [num_blocks, 2], without replacement
  pick = jax.random.categorical(keys[1], jnp.take_along_axis(logits, two, axis=-1), axis=-1)
  active = jnp.take_along_axis(two, pick[:, None], axis=-1)[:, 0]
  involved = jnp.any(jax.nn.one_hot(two, alpha.shape[-1], dtype=bool), axis=1)
  return active, involved


def preserve_logsumexp(old: jax.Array, new: jax.Array, involved: jax.Array) -> jax.Array:
  """`new` with its involved entries shifted so that, per row, their log-sum-exp equals that of
  `old`'s involved entries (the `two` mode's rescaling); other entries unchanged.

  old, new: [num_blocks, K]; involved: bool [num_blocks, K].
  """
  def lse(a):
    return jax.nn.logsumexp(jnp.where(involved, a, -jnp.inf), axis=-1, keepdims=True)
  return jnp.where(involved, new - (lse(new) - lse(old)), new)


Branch = Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]]


def mixed_op(branches: Sequence[Branch | None]) -> Callable:
  """The binarized mixed operation of one block.

  Args:
    branches: one per column of alpha: `(x, block_params, block_stats) -> (o_j(x),
      block_stats updated by candidate j)`, or None for a column that is not a candidate.

  Returns:
    `(gates [K], active int [], x [B, H, W, C], block_params, block_stats) ->
    (gates[active] * o_active(x), block_stats)`. Only the active candidate runs forward (one
    `lax.switch`); the backward gives x and the weights the active path's cotangents and each
    gate dL/dg_j = <o_j(x), dL/dy> (candidates recomputed; 0 for non-candidate columns).
  """
  allowed = [j for j, b in enumerate(branches) if b is not None]
  if not allowed:
    raise ValueError("a mixed operation needs at least one candidate.")
  switch = [b if b is not None else branches[allowed[0]] for b in branches]

  def forward(active, x, params, stats):
    return jax.lax.switch(active, switch, x, params, stats)

  @jax.custom_vjp
  def op(gates, active, x, params, stats):
    y, new_stats = forward(active, x, params, stats)
    return gates[active] * y, new_stats

  def fwd(gates, active, x, params, stats):
    y, vjp, new_stats = jax.vjp(lambda x_, p_: forward(active, x_, p_, stats), x, params,
                                has_aux=True)
    return (gates[active] * y, new_stats), (gates, active, x, params, stats, vjp)

  def bwd(residuals, cotangents):
    gates, active, x, params, stats, vjp = residuals
    y_bar, _ = cotangents
    x_bar, params_bar = vjp(gates[active] * y_bar)
    gate_bar = [jnp.zeros((), y_bar.dtype)] * len(branches)
    for j in allowed:  # recomputed, as `full_v2`: the candidates' outputs are never stored
      gate_bar[j] = jnp.sum(branches[j](x, params, stats)[0] * y_bar)
    return jnp.stack(gate_bar), None, x_bar, params_bar, None

  op.defvjp(fwd, bwd)
  return op


# ---------------------------------------------------------------------------------------------
# The super-network.
# ---------------------------------------------------------------------------------------------


def candidate_module(block: Any, op: str) -> nn.Module | None:
  """The `InvertedResidual` of candidate `op` in `block` (None for `zero`)."""
  parsed = proxyless_net.parse_op(op)
  if parsed is None:
    return None
  kernel, expand = parsed
  return InvertedResidual(block.c_in * expand, block.c_out, block.stride, expand=expand != 1,
                          kernel_size=kernel)


def _apply_bn_module(module: nn.Module, params: Any, stats: Any, x: jax.Array, train: bool
                     ) -> tuple[jax.Array, Any]:
  """`module(x)` with its own params and BatchNorm statistics (updated when training)."""
  variables = {"params": params, "batch_stats": stats}
  if not train:
    return module.apply(variables, x, train=False), stats
  y, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
  return y, updates["batch_stats"]


class SuperNet:
  """The ProxylessNAS over-parameterized network of a `proxyless_net.SearchSpace`.

  Variables: `{"params": {...}, "batch_stats": {...}}` with `stem`, `first`, `blocks_{i}`
  (`{op name: InvertedResidual variables}` for every non-zero candidate of block i), `head`
  and `classifier` (params only). Not a Flax module: the blocks apply their candidates
  functionally inside `mixed_op`'s `lax.switch`.

  Attributes:
    space: the search space.
    num_classes: logits per image.
    columns: the op of each column of alpha (`space.candidates`).
    mask: bool [num_blocks, K], True where the column is one of the block's candidates.
  """

  def __init__(self, space: Any, num_classes: int):
    self.space, self.num_classes = space, num_classes
    self.blocks = list(space.blocks())
    self.columns = tuple(space.candidates)
    self.mask = np.array([[op in space.candidates_for(b) for op in self.columns]
                          for b in self.blocks], dtype=bool)
    relu6 = jax.nn.relu6
    self.stem = ConvBN(space.stem_width, 3, space.stem_stride, activation=relu6)
    self.first = InvertedResidual(space.stem_width, space.first_width, 1, expand=False,
                                  kernel_size=3)
    self.candidates = [{op: candidate_module(b, op) for op in space.candidates_for(b)
                        if proxyless_net.parse_op(op) is not None} for b in self.blocks]
    self.head = ConvBN(space.head_width, 1, activation=relu6)
    self.classifier = nn.Dense(num_classes, kernel_init=nn.initializers.normal(0.01))
    self._mixed = {}

  @property
  def num_blocks(self) -> int:
    return len(self.blocks)

  def init(self, key: jax.Array, image_size: int | None = None) -> dict[str, Any]:
    """Variables for `image_size`^2 RGB images (default: the space's)."""
    size = image_size or self.space.image_size
    params, stats = {}, {}
    keys = iter(jax.random.split(key, 4 + sum(len(c) for c in self.candidates)))
    x = jnp.zeros((1, size, size, 3), jnp.float32)

    def fixed(name, module, x):
      variables = module.init(next(keys), x, train=False)
      params[name], stats[name] = variables["params"], variables["batch_stats"]
      return module.apply(variables, x, train=False)

    x = fixed("stem", self.stem, x)
    x = fixed("first", self.first, x)
    for i, candidates in enumerate(self.candidates):
      name = f"blocks_{i}"
      params[name], stats[name] = {}, {}
      y = x
      for op, module in candidates.items():
        variables = module.init(next(keys), x, train=False)
        params[name][op], stats[name][op] = variables["params"], variables["batch_stats"]
        y = module.apply(variables, x, train=False)
      x = y
    x = fixed("head", self.head, x)
    params["classifier"] = self.classifier.init(next(keys), jnp.mean(x, (1, 2)))["params"]
    return {"params": params, "batch_stats": stats}

  def branches(self, index: int, train: bool) -> list[Branch | None]:
    """Block `index`'s candidates as `mixed_op` branches, one per column."""
    out = []
    for op in self.columns:
      if op not in self.space.candidates_for(self.blocks[index]):
        out.append(None)
      elif proxyless_net.parse_op(op) is None:  # zero: the block's shortcut alone
        out.append(lambda x, params, stats: (x, stats))
      else:
        module = self.candidates[index][op]

        def branch(x, params, stats, op=op, module=module):
          y, new = _apply_bn_module(module, params[op], stats[op], x, train)
          return y, {**stats, op: new}
        out.append(branch)
    return out

  def mixed(self, index: int, train: bool) -> Callable:
    if (index, train) not in self._mixed:
      self._mixed[index, train] = mixed_op(self.branches(index, train))
    return self._mixed[index, train]

  def apply(self, params: Any, stats: Any, images: jax.Array, active: jax.Array,
            gates: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
    """The network with each block's active candidate.

    Args:
      params, stats: the variables' `params` and `batch_stats`.
      images: [batch, height, width, 3].
      active: int [num_blocks], each block's column.
      gates: [num_blocks, K] binary gates (the one-hot of `active`, possibly from
        `binary_gates` to carry the alpha gradient).
      train: BatchNorm on batch statistics (updated and returned) or running ones.

    Returns:
      (logits float32 [batch, num_classes], updated batch_stats).
    """
    new = {}
    x, new["stem"] = _apply_bn_module(self.stem, params["stem"], stats["stem"], images, train)
    x, new["first"] = _apply_bn_module(self.first, params["first"], stats["first"], x, train)
    for i in range(self.num_blocks):
      name = f"blocks_{i}"
      x, new[name] = self.mixed(i, train)(gates[i], active[i], x, params[name], stats[name])
    x, new["head"] = _apply_bn_module(self.head, params["head"], stats["head"], x, train)
    logits = self.classifier.apply({"params": params["classifier"]}, jnp.mean(x, (1, 2)))
    return logits.astype(jnp.float32), new

  def columns_of(self, choices: Sequence[str]) -> np.ndarray:
    """int [num_blocks]: the column of each block's op."""
    return np.array([self.columns.index(op) for op in choices], np.int32)


# ---------------------------------------------------------------------------------------------
# Architectures (choices) and the derived network.
# ---------------------------------------------------------------------------------------------


def parse_arch(text: str, space: Any) -> list[str]:
  """The op of every searchable block from 'op,op,...' (one per block, in order)."""
  ops = [op.strip() for op in text.split(",") if op.strip()]
  blocks = list(space.blocks())
  if len(ops) != len(blocks):
    raise UserError(f"the architecture lists {len(ops)} ops but the search space has "
                    f"{len(blocks)} searchable blocks; give one op per block, separated by ','.")
  space.check_choices(ops)  # an unknown op, or zero where the block changes shape
  return ops


def format_arch(choices: Sequence[str]) -> str:
  return ",".join(choices)


def argmax_arch(supernet: SuperNet, alpha: np.ndarray) -> list[str]:
  """Each block's most probable candidate."""
  masked = np.where(supernet.mask, np.asarray(alpha), -np.inf)
  return [supernet.columns[j] for j in np.argmax(masked, axis=-1)]


def derive_variables(supernet: SuperNet, variables: Any, choices: Sequence[str]) -> Any:
  """The derived network's variables: the fixed parts and each chosen candidate's weights.

  Blocks that chose `zero` are dropped from the derived network, so its `blocks_{k}` are the
  non-zero choices in order.
  """
  out = {}
  for collection in ("params", "batch_stats"):
    tree = variables[collection]
    part = {name: tree[name] for name in ("stem", "first", "head", "classifier") if name in tree}
    k = 0
    for i, op in enumerate(choices):
      if proxyless_net.parse_op(op) is not None:
        part[f"blocks_{k}"] = tree[f"blocks_{i}"][op]
        k += 1
    out[collection] = jax.tree.map(jnp.array, part)
  return out


def derived_model(space: Any, choices: Sequence[str], num_classes: int) -> nn.Module:
  return space.derive(list(choices), num_classes)


# ---------------------------------------------------------------------------------------------
# Latency and the losses.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatencyLUT:
  """A table's numbers as the search uses them: `matrix` float32 [num_blocks, K] ms per block
  and candidate (0 where not a candidate), `fixed_ms` for the fixed parts."""
  matrix: np.ndarray
  fixed_ms: float

  @classmethod
  def from_table(cls, table: Any, supernet: SuperNet) -> "LatencyLUT":
    matrix = np.asarray(table.matrix(supernet.space), np.float64)
    if matrix.shape != supernet.mask.shape:
      raise UserError(f"the latency table's matrix is {list(matrix.shape)}, the search space "
                      f"needs {list(supernet.mask.shape)} (blocks x candidates); rebuild it.")
    matrix = np.where(supernet.mask, matrix, 0.0)
    return cls(matrix.astype(np.float32), float(table.fixed_ms))

  def step_args(self) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, fixed_ms) as `make_search_step`'s arguments."""
    return self.matrix, np.float32(self.fixed_ms)

  def estimate(self, columns: Sequence[int]) -> float:
    """Latency (ms) of the architecture with these columns."""
    return self.fixed_ms + float(sum(self.matrix[i, j] for i, j in enumerate(columns)))

  def range_ms(self, mask: np.ndarray) -> tuple[float, float]:
    """(fastest, slowest) architecture latency of the space."""
    lo = np.where(mask, self.matrix, np.inf).min(-1).sum()
    hi = np.where(mask, self.matrix, -np.inf).max(-1).sum()
    return self.fixed_ms + float(lo), self.fixed_ms + float(hi)


def expected_latency(alpha: jax.Array, mask: jax.Array, lut_matrix: jax.Array,
                     fixed_ms: float) -> jax.Array:
  """E[lat] = fixed + sum_blocks sum_ops p_op LUT(op), p = softmax(alpha) per block.

  alpha, mask, lut_matrix: [num_blocks, K] -> scalar ms.
  """
  return fixed_ms + jnp.sum(masked_probs(alpha, mask) * jnp.where(mask, lut_matrix, 0.0))


def latency_loss(ce: jax.Array, expected: jax.Array, ref: Any, kind: str) -> jax.Array:
  """The architecture loss: `mul#log` 0.2 CE (log E / log ref)^0.3, `add#linear` CE + 0.1
  (E - ref) / ref (the reference's `reg_loss_type`s, alpha 0.2 / beta 0.3 / lambda 0.1)."""
  if kind == "mul#log":
    return 0.2 * ce * (jnp.log(expected) / jnp.log(ref)) ** 0.3
  if kind == "add#linear":
    return ce + 0.1 * (expected - ref) / ref
  raise UserError(f"unknown latency loss {kind!r}; choose one of {LOSSES}.")


def check_loss(kind: str, ref_ms: float) -> None:
  if kind not in LOSSES:
    raise UserError(f"unknown config.latency.loss {kind!r}; choose one of {LOSSES}.")
  if ref_ms <= 0 or (kind == "mul#log" and ref_ms <= 1.0):
    raise UserError(f"the latency reference is {ref_ms:.4g} ms; mul#log needs it above 1 ms "
                    f"(log ref must be positive), use add#linear for faster targets.")


# ---------------------------------------------------------------------------------------------
# The search state and its one jitted step.
# ---------------------------------------------------------------------------------------------


class SearchState(training.ClassifierState):
  """`ClassifierState` of the super-network plus the architecture parameters `alpha`
  [num_blocks, K] and their Adam state (`alpha_tx`), the latency target `ref_ms` and whether
  the architecture is searched (`searching`; False: the warm-up). Target and phase are data,
  so the warm-up and every target's search share one compiled step."""
  alpha: Any = None
  alpha_opt_state: Any = None
  ref_ms: Any = None
  searching: Any = None
  alpha_tx: Any = flax.struct.field(pytree_node=False, default=None)


@functools.lru_cache(maxsize=None)
def arch_optimizer(learning_rate: float, b1: float = 0.0, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam on alpha; the reference's betas (0, 0.999): no first moment. One object per setting
  (cached): it is static in `SearchState`, so a new object would make the warm-up, every
  target's search and a resumed search in the same process each retrace their step."""
  return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def search_state(supernet: SuperNet, variables: Any, tx: optax.GradientTransformation,
                 alpha_tx: optax.GradientTransformation, dropout_key: jax.Array, *,
                 ref_ms: float = 1.0, searching: bool = True) -> SearchState:
  """Step 0, copies of `variables`, fresh optimizers, alpha zeros (uniform paths)."""
  base = training.state_from_variables(variables, tx, dropout_key)
  alpha = jnp.zeros(supernet.mask.shape, jnp.float32)
  return SearchState(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                     alpha=alpha, alpha_opt_state=core.init_optimizer(alpha_tx, alpha),
                     ref_ms=jnp.float32(ref_ms), searching=jnp.bool_(searching),
                     alpha_tx=alpha_tx)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """What a search step needs besides the network and the state: binarization `mode`,
  weight-step `label_smoothing`, `arch_every`, the loss `loss` and the table `lut`."""
  lut: LatencyLUT
  mode: str = "two"
  label_smoothing: float = 0.1
  arch_every: int = 5
  loss: str = "mul#log"


def make_search_step(supernet: SuperNet, settings: SearchSettings) -> Callable:
  """`(state, batch[, lut_matrix, fixed_ms]) -> (state, metrics)`: one weight step on a
  sampled path, then, when `state.searching` and the new step count is a multiple of
  `arch_every`, one architecture step on the held-out batch against `state.ref_ms`. In the
  warm-up (`searching` False) paths are sampled uniformly and alpha stays.

  batch: `image` [B, H, W, 3], `label` [B] (train); `arch_image`, `arch_label` (held out, read
  on architecture steps only). `lut_matrix` [num_blocks, K] and `fixed_ms` [] default to
  `settings.lut`'s numbers, compiled in as constants; the pipeline passes them as arguments, so
  its compiled step does not depend on measured timings and a later process (a resumed run,
  the tests) finds it in the persistent compilation cache.
  """
  mask = jnp.asarray(supernet.mask)

  def step(state: SearchState, batch: dict[str, jax.Array], lut_matrix: Any = None,
           fixed_ms: Any = None):
    lut = jnp.asarray(settings.lut.matrix if lut_matrix is None else lut_matrix)
    fixed = settings.lut.fixed_ms if fixed_ms is None else fixed_ms
    weight_key, arch_key = jax.random.split(state.step_key())
    alpha = jnp.where(state.searching, state.alpha, 0.0)  # warm-up: uniform paths
    active, _ = sample_paths(weight_key, alpha, mask, settings.mode)
    gates = jax.nn.one_hot(active, mask.shape[-1])

    def weight_loss(params):
      logits, stats = supernet.apply(params["model"], state.batch_stats, batch["image"],
                                     active, gates, train=True)
      loss = losses.mean_cross_entropy(logits, batch["label"], settings.label_smoothing)
      return loss, (logits, stats)

    (loss, (logits, stats)), grads = jax.value_and_grad(weight_loss, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads).replace(batch_stats=stats)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    def arch_step(state):
      arch_active, involved = sample_paths(arch_key, state.alpha, mask, settings.mode)
      model = jax.lax.stop_gradient(state.params["model"])

      def arch_loss(alpha):
        arch_gates = binary_gates(alpha, arch_active, involved)
        logits, _ = supernet.apply(model, state.batch_stats, batch["arch_image"], arch_active,
                                   arch_gates, train=True)
        ce = losses.mean_cross_entropy(logits, batch["arch_label"])
        expected = expected_latency(alpha, mask, lut, fixed)
        return latency_loss(ce, expected, state.ref_ms, settings.loss), ce

      (value, ce), grad = jax.value_and_grad(arch_loss, has_aux=True)(state.alpha)
      updates, opt_state = state.alpha_tx.update(grad, state.alpha_opt_state, state.alpha)
      alpha = optax.apply_updates(state.alpha, updates)
      if settings.mode == "two":
        alpha = preserve_logsumexp(state.alpha, alpha, involved)
      return alpha, opt_state, {"arch_loss": value, "arch_ce": ce, "arch_updates": 1.0}

    def no_step(state):
      zero = jnp.zeros((), jnp.float32)
      return state.alpha, state.alpha_opt_state, {"arch_loss": zero, "arch_ce": zero,
                                                  "arch_updates": zero}

    alpha, opt_state, arch_metrics = jax.lax.cond(
        state.searching & (state.step % settings.arch_every == 0), arch_step, no_step, state)
    state = state.replace(alpha=alpha, alpha_opt_state=opt_state)
    metrics.update(arch_metrics)
    metrics["expected_latency_ms"] = expected_latency(alpha, mask, lut, fixed)
    return state, metrics

  return step


def summarize_search(sums: dict[str, float], steps: int) -> dict[str, float]:
  """A log window: weight metrics averaged over steps, arch metrics over arch updates."""
  updates = sums.get("arch_updates", 0.0)
  out = {}
  for k, v in sums.items():
    if k in ("arch_loss", "arch_ce"):
      if updates:
        out[k] = v / updates
    elif k == "arch_updates":
      out[k] = v
    else:
      out[k] = v / steps
  return out


# ---------------------------------------------------------------------------------------------
# Pipeline: configuration, data, latency tables.
# ---------------------------------------------------------------------------------------------

SPACES = ("paper", "demo", "tiny")


def tiny_space() -> Any:
  """Two searchable blocks (one may be zero), 3x3/5x5 x expansion 3 plus zero: for tests."""
  return proxyless_net.SearchSpace(
      image_size=16, stem_channels=8, stem_stride=1, first_channels=8,
      stages=((8, 1, 1), (16, 1, 2)), last_channels=32,
      candidates=("3x3_MBConv3", "5x5_MBConv3", proxyless_net.ZERO))


def search_space(config) -> Any:
  """`config.space.name`'s space at `config.data.image_size` and `config.space.width`."""
  spaces = {"paper": proxyless_net.SearchSpace, "demo": proxyless_net.SearchSpace.demo,
            "tiny": tiny_space}
  if config.space.name not in spaces:
    raise UserError(f"unknown config.space.name {config.space.name!r}; choose one of "
                    f"{SPACES}.")
  return dataclasses.replace(spaces[config.space.name](), image_size=config.data.image_size,
                             width=config.space.width)


def _num_classes(config) -> int:
  """The classes of the configured data, known without loading it (for profiles)."""
  if config.data.source in ("digits", "synthetic", "tfds:cifar10"):
    return 10
  return 1000


def load_data(config, workdir: str) -> image_data.ClassificationData:
  return image_data.load_classification(
      config.data.source, image_size=config.data.image_size,
      holdout_size=config.data.holdout_size,
      data_dir=config.data.data_dir or os.path.join(workdir, "data"), seed=config.seed)


def table_path(config, workdir: str) -> str:
  return config.latency.table or os.path.join(workdir, "latency_table.json")


def load_table(config, space: Any, workdir: str, num_classes: int) -> Any:
  """The block latency table the search uses: this device's (`latency.kind=device`, built by
  `--mode=build_latency_table`) or the reference's `mobile_trim.yaml` (`mobile_trim`)."""
  kind, path = config.latency.kind, table_path(config, workdir)
  if kind == "mobile_trim":
    if not config.latency.table:
      raise UserError("config.latency.kind is mobile_trim but config.latency.table is empty; "
                      "pass --config.latency.table=/path/to/mobile_trim.yaml.")
    return proxyless_net.BlockLatencyTable.from_mobile_trim_yaml(path, space, num_classes)
  if kind != "device":
    raise UserError(f"unknown config.latency.kind {kind!r}; choose device or mobile_trim.")
  if not os.path.exists(path):
    raise UserError(f"no block latency table at {path}; build it with "
                    f"--mode=build_latency_table first.")
  return proxyless_net.BlockLatencyTable.load(path)


def build_latency_table(config, workdir: str) -> dict[str, Any]:
  """Times every candidate block of the space and its fixed part on this device, saves the
  table (`latency.table` or `<workdir>/latency_table.json`) and checks its predictions against
  `latency.check_archs` sampled networks timed end to end."""
  space = search_space(config)
  num_classes = _num_classes(config)
  lat = config.latency
  table, predicted, measured, _ = proxyless_net.check_block_latency_table(
      space, None, num_archs=lat.check_archs, seed=config.seed, batch_size=lat.batch_size,
      num_classes=num_classes, repeats=lat.repeats)
  path = table_path(config, workdir)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  table.save(path)
  errors = [(p - m) / m for p, m in zip(predicted, measured)]
  supernet = SuperNet(space, num_classes)
  lo, hi = LatencyLUT.from_table(table, supernet).range_ms(supernet.mask)
  return {"table": path, "device": jax.devices()[0].device_kind, "blocks": len(space.blocks()),
          "entries": len(table.entries), "fixed_ms": table.fixed_ms, "fastest_ms": lo,
          "slowest_ms": hi, "predicted_ms": predicted, "measured_ms": measured,
          "max_abs_rel_error": max(abs(e) for e in errors)}


def latency_targets(config, lut: LatencyLUT, supernet: SuperNet) -> list[tuple[str, float]]:
  """(name, ref ms) of each search: `latency.ref_fractions` of the slowest architecture's
  latency, or the one `latency.ref_ms`.

  Both losses only push E[lat] down, with a strength that falls as ref grows (`add#linear`:
  dL/dE = 0.1 / ref): ref is a normalizer, not a constraint, so targets are spread as
  multiples of one latency rather than inside the fastest-slowest range (where a large fixed
  part would leave them almost equal)."""
  text = config.latency.ref_fractions.strip()
  if not text:
    return [(f"ref{config.latency.ref_ms:g}ms", float(config.latency.ref_ms))]
  try:
    fractions = [float(f) for f in text.split(",")]
  except ValueError:
    raise UserError(f"config.latency.ref_fractions must be numbers separated by ',', got "
                    f"{text!r}.") from None
  if min(fractions) <= 0:
    raise UserError(f"config.latency.ref_fractions must be positive, got {text!r}.")
  _, slowest = lut.range_ms(supernet.mask)
  return [(f"frac{f:g}", f * slowest) for f in fractions]


# ---------------------------------------------------------------------------------------------
# Phases on the shared loop.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def weight_optimizer(weight_decay: float, momentum: float, nesterov: bool
                     ) -> optax.GradientTransformation:
  """The reference's weight optimizer: L2 weight decay added to the gradient, SGD momentum
  (Nesterov), a cosine to 0 whose peak and length live in the optimizer state
  (`core.make_optimizer` with `schedule_in_state`); one object per setting, so every phase
  with these settings shares one compiled step."""
  optim = ml_collections.ConfigDict(dict(
      optimizer="sgd", momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
      learning_rate=0.0, schedule="cosine", schedule_in_state=True, warmup_steps=0,
      warmup_init_lr=0.0, min_lr=0.0, total_updates=1, clip_norm=0.0, grad_accum_steps=1))
  return core.make_optimizer(optim)[0]


def phase_optimizer(phase, total_steps: int) -> tuple[optax.GradientTransformation,
                                                      optax.Schedule]:
  """`phase.optim`'s optimizer and its schedule (cosine from `optim.learning_rate` to 0 over
  `total_steps`; states must be made by `phase_state`)."""
  optim = phase.optim
  tx = weight_optimizer(float(optim.weight_decay), float(optim.momentum), bool(optim.nesterov))
  return tx, optax.cosine_decay_schedule(optim.learning_rate, max(total_steps, 1))


def phase_state(state: Any, phase, total_steps: int) -> Any:
  """`state` (fresh optimizer state) with `phase`'s schedule over `total_steps`."""
  return state.replace(opt_state=core.with_schedule(
      state.opt_state, phase.optim.learning_rate, total_steps))


def search_batches(data: image_data.ClassificationData, config, batch_size: int,
                   total_steps: int, *, with_arch: bool) -> grain.MapDataset:
  """Step i's batch: training batch i (`image`, `label`) and, on the steps that update the
  architecture (`with_arch` and i + 1 a multiple of `search.arch_every`), a batch of the
  held-out split (`arch_image`, `arch_label`, test transform); zeros of the same shapes on the
  others, which the step never reads."""
  size = config.data.image_size
  train = image_data.train_batches(data.train, batch_size=batch_size,
                                   num_steps=total_steps, seed=config.seed,
                                   augment=data.augment, image_size=size)
  arch_batch = config.search.arch_batch_size
  if len(data.holdout) < arch_batch:
    raise UserError(f"the held-out split ({len(data.holdout)} examples) is smaller than one "
                    f"architecture batch ({arch_batch}); raise config.data.holdout_size.")
  held = image_data.train_batches(data.holdout, batch_size=arch_batch,
                                  num_steps=total_steps, seed=config.seed + 1, augment="none",
                                  image_size=size)
  every = config.search.arch_every
  shape = (arch_batch, size, size, 3)

  def combine(i):
    batch = dict(train[i])
    if with_arch and (i + 1) % every == 0:
      arch = held[(i + 1) // every - 1]
      batch["arch_image"], batch["arch_label"] = arch["image"], arch["label"]
    else:
      batch["arch_image"] = np.zeros(shape, np.float32)
      batch["arch_label"] = np.zeros(shape[:1], np.int32)
    return batch

  return grain.MapDataset.range(total_steps).map(combine)


@dataclasses.dataclass
class Setup:
  """What the phases share (`step`: the one search step of warm-up and searches)."""
  space: Any
  supernet: SuperNet
  data: image_data.ClassificationData | None
  num_classes: int
  mesh: Any
  step: Callable | None = None

  def search_step(self, config, lut: LatencyLUT) -> Callable:
    if self.step is None:
      self.step = make_search_step(self.supernet, SearchSettings(
          lut=lut, mode=config.search.mode, label_smoothing=config.search.label_smoothing,
          arch_every=config.search.arch_every, loss=config.latency.loss))
    return self.step


def setup(config, workdir: str, *, with_data: bool = True) -> Setup:
  if config.search.mode not in MODES:
    raise UserError(f"unknown config.search.mode {config.search.mode!r}; choose one of "
                    f"{MODES}.")
  space = search_space(config)
  data = load_data(config, workdir) if with_data else None
  num_classes = data.num_classes if data is not None else _num_classes(config)
  return Setup(space, SuperNet(space, num_classes), data, num_classes,
               core.mesh.from_config(config.mesh))


def _fresh_search_state(s: Setup, config, variables: Any, tx, ref_ms: float = 1.0,
                        searching: bool = True) -> SearchState:
  return search_state(s.supernet, variables, tx, arch_optimizer(config.search.arch_lr),
                      core.stream_key(config.seed, 1), ref_ms=ref_ms, searching=searching)


def warmup(s: Setup, config, workdir: str, lut: LatencyLUT) -> SearchState:
  """Weights only, paths sampled uniformly (`<workdir>/warmup`)."""
  phase = config.warmup
  total = training.num_steps(len(s.data.train), phase)
  tx, schedule = phase_optimizer(phase, total)
  return training.run_phase(
      config=config, phase=phase, directory=os.path.join(workdir, "warmup"), name="warmup",
      step_fn=s.search_step(config, lut), batches=search_batches(
          s.data, config, phase.batch_size, total, with_arch=False),
      total_steps=total, schedule=schedule, mesh=s.mesh, summarize=summarize_search,
      step_args=lut.step_args(), initial=lambda: phase_state(_fresh_search_state(
          s, config, jax.jit(s.supernet.init, static_argnums=1)(core.init_key(config.seed),
                                                                config.data.image_size), tx,
          searching=False), phase, total))


def search_one(s: Setup, config, workdir: str, warm: SearchState, name: str, ref_ms: float,
               lut: LatencyLUT) -> tuple[SearchState, dict[str, Any]]:
  """One latency target's search from the warm-up weights (`<workdir>/search_<name>`); writes
  `arch.json` (argmax architecture, probabilities, latencies) and `search.png`."""
  check_loss(config.latency.loss, ref_ms)
  phase = config.search
  total = training.num_steps(len(s.data.train), phase)
  tx, schedule = phase_optimizer(phase, total)
  directory = os.path.join(workdir, f"search_{name}")
  variables = {"params": warm.params["model"], "batch_stats": warm.batch_stats}
  state = training.run_phase(
      config=config, phase=phase, directory=directory, name=f"search {name}",
      step_fn=s.search_step(config, lut), batches=search_batches(
          s.data, config, phase.batch_size, total, with_arch=True),
      total_steps=total, schedule=schedule, mesh=s.mesh, summarize=summarize_search,
      step_args=lut.step_args(),
      initial=lambda: phase_state(_fresh_search_state(s, config, variables, tx, ref_ms),
                                  phase, total))
  return state, write_search_result(s, state, directory, name, ref_ms, lut)


def write_search_result(s: Setup, state: SearchState, directory: str, name: str,
                        ref_ms: float, lut: LatencyLUT) -> dict[str, Any]:
  alpha = np.asarray(state.alpha)
  probs = np.asarray(masked_probs(jnp.asarray(alpha), jnp.asarray(s.supernet.mask)))
  choices = argmax_arch(s.supernet, alpha)
  result = {"target": name, "ref_ms": ref_ms, "arch": format_arch(choices),
            "expected_latency_ms": lut.estimate(s.supernet.columns_of(choices)),
            "search_expected_latency_ms": float(expected_latency(
                jnp.asarray(alpha), jnp.asarray(s.supernet.mask), jnp.asarray(lut.matrix),
                lut.fixed_ms)),
            "columns": list(s.supernet.columns), "probs": probs.round(6).tolist()}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "arch.json"), "w") as f:
    json.dump(result, f, indent=1)
  result["plot"] = plot_search(s.supernet, probs, read_metrics(directory), ref_ms,
                               os.path.join(directory, "search.png"), name)
  return result


def plot_search(supernet: SuperNet, probs: np.ndarray, records: list[dict[str, Any]],
                ref_ms: float, path: str, title: str) -> str:
  """The final path probabilities per block (heatmap) and E[latency] over the search."""
  fig, (heat_ax, lat_ax) = core.plots.subplots(1, 2, figsize=(13, 4))
  shown = np.where(supernet.mask, probs, np.nan).T
  image = heat_ax.imshow(shown, aspect="auto", cmap="viridis", vmin=0, vmax=1)
  heat_ax.set(xlabel="searchable block", yticks=range(len(supernet.columns)),
              yticklabels=supernet.columns, title=f"path probabilities ({title})")
  fig.colorbar(image, ax=heat_ax)
  points = [(r["step"], r["expected_latency_ms"]) for r in records
            if "expected_latency_ms" in r]
  if points:
    lat_ax.plot(*zip(*points), label="E[latency]")
  lat_ax.axhline(ref_ms, color="0.5", ls="--", label="ref")
  lat_ax.set(xlabel="step", ylabel="ms", title="expected latency during the search")
  lat_ax.legend(fontsize=8)
  return core.plots.save(fig, path)


def search(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Warm-up, then one search per latency target; their architectures."""
  s = setup_ or setup(config, workdir)
  lut = LatencyLUT.from_table(load_table(config, s.space, workdir, s.num_classes), s.supernet)
  for _, ref_ms in latency_targets(config, lut, s.supernet):
    check_loss(config.latency.loss, ref_ms)
  warm = warmup(s, config, workdir, lut)
  results = {}
  for name, ref_ms in latency_targets(config, lut, s.supernet):
    _, result = search_one(s, config, workdir, warm, name, ref_ms, lut)
    results[name] = {k: result[k] for k in ("arch", "ref_ms", "expected_latency_ms",
                                            "search_expected_latency_ms", "plot")}
  return {"targets": results}


# ---------------------------------------------------------------------------------------------
# Derive, train, evaluate, profile.
# ---------------------------------------------------------------------------------------------


def _searched_state(s: Setup, config, workdir: str, name: str) -> SearchState:
  tx, _ = phase_optimizer(config.search, 1)
  abstract = jax.eval_shape(lambda: _fresh_search_state(
      s, config, s.supernet.init(jax.random.key(0), config.data.image_size), tx))
  return core.restore_finished(os.path.join(workdir, f"search_{name}", "checkpoints"),
                               abstract, f"the search for {name} (--mode=search)")


def _target_names(config, s: Setup, workdir: str) -> list[tuple[str, float]]:
  lut = LatencyLUT.from_table(load_table(config, s.space, workdir, s.num_classes), s.supernet)
  return latency_targets(config, lut, s.supernet)


def derive(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Each target's argmax architecture as a plain `ProxylessNet` with the super-network's
  weights: `<workdir>/derived_<target>/{arch.json, export.msgpack}` (the msgpack holds the
  derived module's `{"params", "batch_stats"}`; `load_export` reads it back)."""
  s = setup_ or setup(config, workdir, with_data=False)
  out = {}
  for name, _ in _target_names(config, s, workdir):
    state = _searched_state(s, config, workdir, name)
    choices = argmax_arch(s.supernet, np.asarray(state.alpha))
    variables = derive_variables(
        s.supernet, {"params": state.params["model"], "batch_stats": state.batch_stats}, choices)
    directory = os.path.join(workdir, f"derived_{name}")
    os.makedirs(directory, exist_ok=True)
    export = os.path.join(directory, "export.msgpack")
    with open(export, "wb") as f:
      f.write(flax.serialization.msgpack_serialize(jax.device_get(variables)))
    model = derived_model(s.space, choices, s.num_classes)
    with open(os.path.join(directory, "arch.json"), "w") as f:
      json.dump({"arch": format_arch(choices), "blocks": [list(b) for b in model.blocks],
                 "num_classes": s.num_classes, "image_size": config.data.image_size}, f,
                indent=1)
    out[name] = {"arch": format_arch(choices), "export": export}
  return {"targets": out}


def load_export(path: str) -> dict[str, Any]:
  """The `{"params", "batch_stats"}` a `derive` export holds."""
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())


@dataclasses.dataclass(frozen=True)
class Network:
  """A network to train, evaluate or profile: a searched target's derived network, a released
  one, or a given architecture; `export` is the derived weights' file (None: from scratch)."""
  name: str
  space: Any
  choices: tuple[str, ...]
  export: str | None = None

  def model(self, num_classes: int) -> nn.Module:
    return derived_model(self.space, self.choices, num_classes)


def networks(config, workdir: str, space: Any) -> list[Network]:
  """`train.arch` (a released name or 'op,op,...' of the space), else every derived target
  in the workdir."""
  arch = config.train.arch
  if arch in proxyless_net.RELEASED:
    preset = proxyless_net.RELEASED[arch]
    released_space = dataclasses.replace(preset["space"], image_size=config.data.image_size)
    return [Network(arch, released_space, tuple(preset["choices"]))]
  if arch:
    return [Network("arch", space, tuple(parse_arch(arch, space)))]
  found = []
  for entry in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
    path = os.path.join(workdir, entry, "arch.json")
    if entry.startswith("derived_") and os.path.exists(path):
      with open(path) as f:
        choices = tuple(parse_arch(json.load(f)["arch"], space))
      export = os.path.join(workdir, entry, "export.msgpack")
      found.append(Network(entry[len("derived_"):], space, choices,
                           export if config.train.init == "supernet" else None))
  if not found:
    raise UserError(f"no derived network in {workdir}; run --mode=derive (or all) first, or "
                    f"give one with --arch=proxyless_gpu|proxyless_cpu|proxyless_mobile|"
                    f"'op,op,...'.")
  return found


def _train_state(net: Network, model: nn.Module, config, tx) -> training.ClassifierState:
  key = core.stream_key(config.seed, 3)
  if net.export is not None:
    return training.state_from_variables(load_export(net.export), tx, key)
  variables = training.init_variables(model, config.data.image_size, core.init_key(config.seed))
  return training.state_from_variables(variables, tx, key)


def train(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Trains each network (`networks`) into `<workdir>/train_<name>`; test accuracy."""
  if config.train.init not in ("supernet", "scratch"):
    raise UserError(f"unknown config.train.init {config.train.init!r}; choose supernet or "
                    f"scratch.")
  s = setup_ or setup(config, workdir)
  out = {}
  for net in networks(config, workdir, s.space):
    model = net.model(s.num_classes)
    phase = config.train
    total = training.num_steps(len(s.data.train), phase)
    tx, schedule = phase_optimizer(phase, total)
    batches = image_data.train_batches(
        s.data.train, batch_size=phase.batch_size, num_steps=total, seed=config.seed,
        augment=s.data.augment, image_size=config.data.image_size)
    state = training.run_phase(
        config=config, phase=phase, directory=os.path.join(workdir, f"train_{net.name}"),
        name=f"train {net.name}", step_fn=training.make_step(
            model, label_smoothing=phase.label_smoothing), batches=batches, total_steps=total,
        schedule=schedule, mesh=s.mesh,
        initial=lambda: phase_state(_train_state(net, model, config, tx), phase, total))
    out[net.name] = {"arch": format_arch(net.choices), **_test_accuracy(s, config, model,
                                                                         state)}
  return {"networks": out}


def _test_accuracy(s: Setup, config, model: nn.Module, state) -> dict[str, float]:
  predict = training.make_predict(model)
  batches = training.CachedBatches(lambda: training.eval_batches(s.data, config, "test"),
                                   training.split_bytes(s.data.test, config.data.image_size))
  return {"acc": training.accuracy(predict, state, batches),
          "acc_top5": training.accuracy(predict, state, batches, top_k=5)}


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Test top-1 / top-5 of each trained network in the workdir."""
  s = setup(config, workdir)
  out = {}
  for net in networks(config, workdir, s.space):
    model = net.model(s.num_classes)
    tx, _ = phase_optimizer(config.train, 1)
    abstract = jax.eval_shape(lambda: _train_state(
        dataclasses.replace(net, export=None), model, config, tx))
    state = core.restore_finished(os.path.join(workdir, f"train_{net.name}", "checkpoints"),
                                  abstract, f"training {net.name} (--mode=train)")
    out[net.name] = {"arch": format_arch(net.choices), **_test_accuracy(s, config, model,
                                                                         state)}
  return {"networks": out}


def measure(config, workdir: str, nets: Sequence[Network], num_classes: int
            ) -> list[dict[str, float]]:
  """End-to-end latency of each network on this device and, for networks of the searched
  space, the block table's estimate of it.

  With a table of this device (`latency.kind=device`), the table is timed again in the same
  interleaved rounds as the networks (`check_block_latency_table` with no table): on a machine
  whose speed drifts (a shared VM: sub-millisecond calls varied 2x between minutes on our 2-core
  CPU), an estimate and a measurement taken minutes apart differ by the drift, not by the
  table's error. The search's own table then gives `search_table_latency_ms`. A table of
  another device (`mobile_trim.yaml`) predicts that device, so only the measurement is made.
  """
  lat = config.latency
  by_space: dict[Any, list[int]] = {}
  for i, net in enumerate(nets):
    by_space.setdefault(net.space, []).append(i)
  results: dict[int, dict[str, float]] = {}
  for space, indices in by_space.items():
    archs = [nets[i].choices for i in indices]
    batch = lat.batch_size
    searched_table = None
    if lat.kind == "device" and space == search_space(config):
      try:
        searched_table = load_table(config, space, workdir, num_classes)
        batch = searched_table.batch_size
      except UserError:
        searched_table = None
    if searched_table is not None:
      _, predicted, measured, _ = proxyless_net.check_block_latency_table(
          space, None, num_archs=len(archs), archs=archs, seed=config.seed, batch_size=batch,
          num_classes=num_classes, repeats=lat.repeats)
    else:
      predicted = [None] * len(archs)
      measured = [_measure_alone(space, a, num_classes, lat) for a in archs]
    for i, arch, p, m in zip(indices, archs, predicted, measured):
      results[i] = {"measured_latency_ms": m}
      if p is not None:
        results[i].update(expected_latency_ms=p, estimate_error=(p - m) / m,
                          search_table_latency_ms=searched_table.estimate(space, arch))
  return [results[i] for i in range(len(nets))]


def _measure_alone(space: Any, choices: Sequence[str], num_classes: int, lat) -> float:
  model = derived_model(space, choices, num_classes)
  variables = training.init_variables(model, space.image_size, jax.random.key(0))
  x = jnp.zeros((lat.batch_size, space.image_size, space.image_size, 3), jnp.float32)
  return hardware.measure_model_latency(model, variables, x, {}, repeats=lat.repeats,
                                        apply_kwargs={"train": False})


def profile(config, workdir: str) -> dict[str, Any]:
  """Parameters, MACs, table-estimated and measured latency of each network (no data)."""
  s = setup(config, workdir, with_data=False)
  nets = networks(config, workdir, s.space)
  latencies = measure(config, workdir, nets, s.num_classes)
  out = {}
  for net, latency in zip(nets, latencies):
    model = net.model(s.num_classes)
    out[net.name] = {"arch": format_arch(net.choices),
                     **classifiers.profile_classifier(model, config.data.image_size),
                     **latency}
  return {"image_size": config.data.image_size, "batch_size": config.latency.batch_size,
          "device": jax.devices()[0].device_kind, "networks": out}


def run_all(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """The demo pipeline: a latency table of this device (unless the workdir has one), a search
  per latency target, derive, measure the derived networks end to end, train, evaluate.
  `setup_` (default: a new `setup`) lets a run resumed in the same process reuse the traced
  search step, as `search` and the other phases do."""
  s = setup_ or setup(config, workdir)
  table_info = {}
  if config.latency.kind == "device" and not os.path.exists(table_path(config, workdir)):
    table_info = build_latency_table(config, workdir)
  searched = search(config, workdir, s)["targets"]
  derive(config, workdir, s)
  nets = [n for n in networks(config, workdir, s.space) if n.name in searched]
  latencies = measure(config, workdir, nets, s.num_classes)
  trained = train(config, workdir, s)["networks"]
  targets = {}
  for net, latency in zip(nets, latencies):
    found = searched[net.name]
    targets[net.name] = {"arch": found["arch"], "ref_ms": found["ref_ms"],
                         "expected_latency_ms": latency.get("expected_latency_ms"),
                         "measured_latency_ms": latency["measured_latency_ms"],
                         "estimate_error": latency.get("estimate_error"),
                         "search_table_latency_ms": latency.get("search_table_latency_ms"),
                         "search_expected_latency_ms": found["search_expected_latency_ms"],
                         "acc": trained[net.name]["acc"],
                         "acc_top5": trained[net.name]["acc_top5"], "plot": found["plot"]}
  out = {"targets": targets}
  by_ref = sorted(targets.values(), key=lambda t: t["ref_ms"])
  if len(by_ref) > 1:
    out["lower_target_measured_faster"] = bool(
        by_ref[0]["measured_latency_ms"] < by_ref[-1]["measured_latency_ms"])
  errors = [abs(t["estimate_error"]) for t in targets.values()
            if t["estimate_error"] is not None]
  if errors:
    out["max_abs_estimate_error"] = max(errors)
  if table_info:
    out["table_check_max_abs_rel_error"] = table_info["max_abs_rel_error"]
  return out
