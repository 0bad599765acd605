"""Mixed-precision linear quantization of any Flax model's conv and dense layers (HAQ's).

HAQ searches a bit width per layer, so the quantizer must not be baked into the model: a policy
`{layer_path: (w_bits, a_bits)}` names layers by `LayerInfo.path` (see `nn.introspect`), and
`quantized_apply` fake-quantizes those layers' kernels and input activations from outside the
model (`flax.linen.intercept_methods` for the inputs, a rewritten parameter tree for the
kernels). Nothing in the model changes, so every classifier built from `nn.Conv` / `nn.Dense`
can be quantized.

Bit widths travel as data (`bits_arrays`: int32 arrays), never as Python constants, so one
compiled train or eval step serves every policy the agent proposes; a policy change is a new
input, not a recompilation. For the same reason `calibrate` returns a clip for every layer, in
the policy or not, so the `qstate` tree keeps one structure across policies.

The quantizers follow the reference (`lib/utils/quantize_utils.py`):
- Weights: symmetric signed grid on [-c, c], step c / (2^(b-1) - 1). Below 5 bits c is the
  KL-calibrated threshold of the kernel, fixed after calibration (the reference's
  `weight_range` has no gradient); from 5 bits on c is the kernel's live max|W|, which equals
  the reference's calibrated max at calibration and keeps following the weights as they train.
- Activations (a layer's input): half-wave [0, c], step c / (2^b - 1), or the signed grid for
  inputs the model declares signed (MobileNetV2's expansion 1x1 and final 1x1). c is calibrated
  (KL below 5 bits, else max, capped at 6) and trainable, PACT-style.
- Biases stay in full precision, and the sizes here count kernels only (HAQ's model size counts
  weights).
- Rounding passes gradients straight through; clipping passes the gradient to the clip.

Calibration (`kl_threshold`, `calibrate_clip`, `calibrate`) runs eagerly with numpy on one
batch, as the reference calibrates on one training batch.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo, list_layers

# The bit width that means "not quantized" in a policy (HAQ's first layer keeps its input in
# full precision: the reference writes a = -1 for it). Cost models and quantizers both read it.
FULL_PRECISION = 32
MAX_BITS = 8
# Below this many bits the clip is the KL threshold; from here on it is max|x| (reference).
KL_BELOW_BITS = 5

Policy = Mapping[str, tuple[int, int]]
QState = dict[str, dict[str, jax.Array]]


def quant_levels(bits: jax.Array | int, signed: bool) -> jax.Array:
  """The largest integer code: 2^(bits-1) - 1 signed (symmetric), 2^bits - 1 unsigned."""
  bits = jnp.asarray(bits, jnp.float32)
  return jnp.exp2(bits - 1) - 1 if signed else jnp.exp2(bits) - 1


def fake_quant(x: jax.Array, bits: jax.Array | int, clip: jax.Array | float, *,
               signed: bool) -> jax.Array:
  """`x` quantized to `bits` on [-clip, clip] (signed) or [0, clip] (unsigned).

  Signed: step clip / (2^(bits-1) - 1), codes -(2^(bits-1) - 1) .. 2^(bits-1) - 1 (symmetric,
  as the reference's weights). Unsigned: step clip / (2^bits - 1), 2^bits codes on [0, clip]
  (half-wave, as its post-ReLU activations). Signed 1-bit has no nonzero code; use >= 2.

  Gradients are the reference's straight-through estimator on the clipped value: d/dx is 1
  inside the range (bounds included) and 0 outside; d/dclip is 1 for values above clip, -1 for
  values below -clip (signed), 0 inside (PACT); the step size passes no gradient.

  Args:
    x: any shape.
    bits: integer bit width (a Python int or a traced scalar).
    clip: the positive range limit (scalar or broadcastable to `x`); differentiable.
    signed: symmetric signed grid (weights, signed activations) or unsigned grid.

  Returns:
    The fake-quantized `x`, same shape and dtype, exactly on the grid.
  """
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  clip = jnp.maximum(jnp.asarray(clip, jnp.float32), 1e-8)
  low = -clip if signed else jnp.zeros_like(clip)
  clipped = jnp.where(x32 > clip, clip, jnp.where(x32 < low, low, x32))
  scale = jax.lax.stop_gradient(clip / quant_levels(bits, signed))
  on_grid = jnp.round(jax.lax.stop_gradient(clipped) / scale) * scale
  # The value is exactly `on_grid` (clipped - clipped == 0); the gradient is the clipped one's.
  return (on_grid + (clipped - jax.lax.stop_gradient(clipped))).astype(dtype)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _check_bits(bits: Any, what: str) -> None:
  if (not isinstance(bits, numbers.Integral) or isinstance(bits, bool)
      or not (1 <= bits <= MAX_BITS or bits == FULL_PRECISION)):
    raise UserError(f"{what} is {bits!r}; bits must be an integer in 1-{MAX_BITS}, or "
                    f"FULL_PRECISION ({FULL_PRECISION}) for no quantization.")


def _as_float_array(values: Any, name: str) -> np.ndarray:
  array = np.asarray(values)
  if array.size == 0:
    raise UserError(f"{name} is empty; calibration needs at least one value.")
  if not np.issubdtype(array.dtype, np.floating):
    array = array.astype(np.float32)
  if not np.all(np.isfinite(array)):
    raise UserError(f"{name} holds non-finite values; calibration needs finite values.")
  return array.ravel()


def kl_threshold(values: np.ndarray, bits: int, *, num_bins: int = 2048) -> float:
  """The clipping threshold of |values| that minimises the KL divergence (TensorRT-style).

  The histogram of |x| on [0, max|x|] has `num_bins` bins. For every candidate threshold (the
  upper edge of bin i, i = L .. num_bins, with L = 2^(bits-1) quantization bins as the
  reference's `_compute_threshold` uses for every grid), the reference distribution P is
  bins 0..i-1 with the outliers beyond folded into bin i-1, and the candidate Q merges bins
  0..i-1 into L groups and spreads each group's count evenly over its bins where P is nonzero.
  The candidate with the smallest KL(P || Q) wins (the lowest on ties); a Q that gives zero
  probability to mass of P is rejected.

  Every KL is computed in closed form from cumulative sums (sum p log p minus the group terms),
  so all candidates take one vectorized pass instead of a loop.

  Args:
    values: any shape; only magnitudes count.
    bits: the grid's bit width, 1-8.
    num_bins: histogram resolution.

  Returns:
    The threshold (0.0 when every value is 0; max|x| when L >= num_bins).
  """
  _check_bits(bits, "bits")
  if bits == FULL_PRECISION:
    raise UserError("bits is FULL_PRECISION; a KL threshold needs a quantized width (1-8).")
  if num_bins < 1:
    raise UserError(f"num_bins is {num_bins}; it must be at least 1.")
  magnitudes = np.abs(_as_float_array(values, "values"))
  top = float(magnitudes.max())
  groups = 2 ** (bits - 1)
  if top == 0.0 or groups >= num_bins:
    return top
  hist = np.histogram(magnitudes, bins=num_bins, range=(0.0, top))[0].astype(np.float64)
  total = hist.sum()
  cum = np.concatenate([[0.0], np.cumsum(hist)])
  cum_plogp = np.concatenate([[0.0], np.cumsum(_xlogx(hist))])
  cum_support = np.concatenate([[0], np.cumsum(hist > 0)])

  ends = np.arange(groups, num_bins + 1)                    # candidate i: bins 0..i-1 kept
  tail = total - cum[ends]                                  # outliers folded into bin i-1
  last = hist[ends - 1]
  # Group k of candidate i covers bins [ceil(k i / L), ceil((k+1) i / L)): never empty.
  bounds = -(-np.arange(groups + 1)[None, :] * ends[:, None] // groups)
  mass = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]           # [candidates, L], Q before spreading
  support = (cum_support[bounds[:, 1:]] - cum_support[bounds[:, :-1]]).astype(np.float64)
  support[:, -1] += (last == 0) & (tail > 0)                # the folded bin joins P's support
  p_mass = mass.copy()
  p_mass[:, -1] += tail
  plogp = cum_plogp[ends - 1] + _xlogx(last + tail)
  with np.errstate(divide="ignore", invalid="ignore"):
    per_bin_q = np.where(p_mass > 0, np.log(mass / support), 0.0)
    cross = np.sum(np.where(p_mass > 0, p_mass * per_bin_q, 0.0), axis=1)
    kl = (plogp - cross) / total - np.log(total) + np.log(cum[ends])
  kl = np.where(np.all((mass > 0) | (p_mass == 0), axis=1), kl, np.inf)
  return float(ends[np.argmin(kl)] * top / num_bins)


def _xlogx(x: np.ndarray) -> np.ndarray:
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def calibrate_clip(values: np.ndarray, bits: int, *, signed: bool,
                   cap: float | None = None) -> float:
  """A quantizer's clip c from sample values: below 5 bits the KL threshold of the nonzero
  samples (never below their 99th percentile; see the comment inside), else the maximum.

  Args:
    values: samples of the quantized tensor (a kernel, or a layer's inputs on a batch).
    bits: the policy's bit width (1-8, or FULL_PRECISION: the maximum).
    signed: a signed grid calibrates on |x|; an unsigned one on max(x, 0), the part its grid
      [0, c] represents (the same as |x| for post-ReLU inputs).
    cap: upper bound on c (the reference caps activations at 6); None for none.

  Returns:
    c >= 0.
  """
  _check_bits(bits, "bits")
  samples = _as_float_array(values, "values")
  magnitudes = np.abs(samples) if signed else np.maximum(samples, 0)
  if bits < KL_BELOW_BITS:
    # Zeros are exact under every clip; after a ReLU they are a large share of the samples, and
    # that spike in the first bin drives the KL search to a degenerate near-zero threshold.
    nonzero = magnitudes[magnitudes > 0]
    if nonzero.size:
      # A histogram needs samples: small tensors (a depthwise kernel has 9 per channel) get
      # ~16 samples per bin. On few-valued inputs (an image's constant background) the KL
      # search can still clip most samples, so the clip never falls below the 99th
      # percentile, a floor that well-behaved data never reaches (the 2-bit KL threshold of a
      # Gaussian is at its 99.3rd).
      bins = int(np.clip(nonzero.size // 16, 2 ** bits, 2048))
      clip = max(kl_threshold(nonzero, bits, num_bins=bins), float(np.percentile(nonzero, 99)))
    else:
      clip = 0.0
  else:
    clip = float(magnitudes.max())
  return clip if cap is None else min(clip, float(cap))


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


def _unknown_layer(path: str, layer_paths: Sequence[str], what: str) -> UserError:
  close = difflib.get_close_matches(path, layer_paths, n=3, cutoff=0.5)
  hint = (f"closest: {', '.join(close)}" if close
          else f"its layers start with {', '.join(list(layer_paths)[:3])}")
  return UserError(f"{what} {path!r} is not a conv or dense layer of the model; {hint}.")


def validate_policy(policy: Policy, layer_paths: Iterable[str], *,
                    signed_inputs: Collection[str] = frozenset(), linear: bool = False) -> None:
  """Raises `UserError` (one sentence) unless `policy` is a valid policy for these layers.

  Args:
    policy: `{layer_path: (w_bits, a_bits)}`, bits in 1-8 or FULL_PRECISION.
    layer_paths: the model's layer paths (`LayerInfo.path`).
    signed_inputs: paths whose inputs use the signed grid.
    linear: the policy drives the linear quantizer (`quantized_apply`), whose symmetric signed
      grids (every kernel, signed inputs) need >= 2 bits (`bits_arrays` and `calibrate` check
      this); False (k-means, cost counting) accepts 1-bit weights.
  """
  paths = list(dict.fromkeys(layer_paths))
  if not isinstance(policy, Mapping):
    raise UserError(f"policy must map layer paths to (w_bits, a_bits) pairs, got "
                    f"{type(policy).__name__}.")
  known = set(paths)
  for path, entry in policy.items():
    if path not in known:
      raise _unknown_layer(path, paths, "policy layer")
    if (not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 2
        or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in entry)):
      raise UserError(f"policy[{path!r}] is {entry!r}; each entry must be a pair "
                      f"(w_bits, a_bits) of integers.")
    w_bits, a_bits = entry
    _check_bits(w_bits, f"policy[{path!r}] w_bits")
    _check_bits(a_bits, f"policy[{path!r}] a_bits")
    if linear and (w_bits == 1 or (a_bits == 1 and path in signed_inputs)):
      which = "w_bits" if w_bits == 1 else "a_bits (a signed input)"
      raise UserError(f"policy[{path!r}] {which} is 1; a symmetric signed grid has no nonzero "
                      f"code at 1 bit, so linear quantization needs >= 2.")


def bits_arrays(policy: Policy, layer_paths: Iterable[str], *,
                signed_inputs: Collection[str] = frozenset()) -> dict[str, jax.Array]:
  """The policy as data for `quantized_apply`: `{path: int32 [w_bits, a_bits]}`.

  Every layer gets an entry (FULL_PRECISION for layers outside the policy), so every policy
  has the same pytree structure and one compiled step serves them all.

  Args:
    policy: `{layer_path: (w_bits, a_bits)}` (validated for the linear quantizer).
    layer_paths: the model's layer paths (`LayerInfo.path`).
    signed_inputs: paths whose inputs use the signed grid (they need >= 2 a_bits).
  """
  paths = list(dict.fromkeys(layer_paths))
  validate_policy(policy, paths, signed_inputs=signed_inputs, linear=True)
  return {path: jnp.asarray(policy.get(path, (FULL_PRECISION, FULL_PRECISION)), jnp.int32)
          for path in paths}


# --------------------------------------------------------------------------------------------
# Kernels by path
# --------------------------------------------------------------------------------------------


def _kernel_paths(params: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
  found = ["/".join(prefix)] if "kernel" in params else []
  for key, value in params.items():
    if isinstance(value, Mapping):
      found += _kernel_paths(value, prefix + (key,))
  return found


def _node(params: Mapping[str, Any], path: str) -> Mapping[str, Any]:
  node: Any = params
  for key in path.split("/"):
    if not isinstance(node, Mapping) or key not in node:
      raise _unknown_layer(path, _kernel_paths(params), "layer path")
    node = node[key]
  if not isinstance(node, Mapping) or "kernel" not in node:
    raise _unknown_layer(path, _kernel_paths(params), "layer path")
  return node


def kernel_at(params: Mapping[str, Any], path: str) -> jax.Array:
  """The kernel of the layer at `path` ("/"-joined keys of the `params` collection)."""
  kernel = _node(params, path)["kernel"]
  return kernel.unbox() if isinstance(kernel, nn.meta.AxisMetadata) else kernel


def with_kernel(params: Mapping[str, Any], path: str, kernel: jax.Array) -> Any:
  """`params` with the kernel at `path` replaced (a copy along the path; boxes and FrozenDicts
  are kept, so the tree structure, e.g. an optimizer state's, still matches)."""
  _node(params, path)
  keys = path.split("/")

  def put(node: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
    copy = dict(node)
    if depth == len(keys):
      old = copy["kernel"]
      copy["kernel"] = (old.replace_boxed(kernel) if isinstance(old, nn.meta.AxisMetadata)
                        else kernel)
    else:
      copy[keys[depth]] = put(node[keys[depth]], depth + 1)
    return flax.core.FrozenDict(copy) if isinstance(node, flax.core.FrozenDict) else copy

  return put(params, 0)


# --------------------------------------------------------------------------------------------
# Calibrated, quantized application
# --------------------------------------------------------------------------------------------


def _layer_call(context: Any) -> str | None:
  """The path of an intercepted `nn.Conv` / `nn.Dense` call, else None."""
  if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
    return "/".join(context.module.path)
  return None


def calibrate(model: nn.Module, variables: Any, batch_args: Sequence[Any], policy: Policy, *,
              signed_inputs: Collection[str] = frozenset(), cap: float = 6.0,
              **apply_kwargs) -> QState:
  """The quantizers' clips from one eager run of the model on a calibration batch.

  Each conv/dense layer's input and kernel go through `calibrate_clip` at the policy's bits
  (layers outside the policy at FULL_PRECISION, i.e. their maximum, so `qstate` has the same
  structure for every policy). Activation clips are capped at `cap`, signed ones too, as the
  reference caps every activation range; kernels are not capped. A layer called several times
  keeps the largest of its calls' activation clips. Each input is reduced to a clip as soon as
  it is seen, so only one layer's activations are on the host at a time. The policy is checked
  against the model's layers (an abstract trace) before anything runs. Not jittable: the
  clips are computed on the host.

  Args:
    model: a Flax module built from `nn.Conv` / `nn.Dense`.
    variables: its variables.
    batch_args: the positional inputs of `model.apply`, e.g. `(images,)` with images
      `[batch, height, width, channels]` (the reference uses one training batch).
    policy: `{layer_path: (w_bits, a_bits)}`.
    signed_inputs: paths whose inputs use the signed grid.
    cap: upper bound of activation clips.
    **apply_kwargs: passed to `model.apply` (e.g. `train=False`, `mutable=`).

  Returns:
    `{path: {"w_clip": f32 scalar, "a_clip": f32 scalar}}` for every conv/dense layer.
  """
  clips: dict[str, dict[str, float]] = {}

  def record(next_fun, args, kwargs, context):
    path = _layer_call(context)
    if path is not None:
      w_bits, a_bits = policy.get(path, (FULL_PRECISION, FULL_PRECISION))
      a_clip = calibrate_clip(np.asarray(args[0]), a_bits, signed=path in signed_inputs,
                              cap=cap)
      entry = clips.setdefault(path, {"a_clip": a_clip})
      entry["a_clip"] = max(entry["a_clip"], a_clip)
      if "w_clip" not in entry:
        entry["w_clip"] = calibrate_clip(np.asarray(kernel_at(variables["params"], path)),
                                         w_bits, signed=True)
    return next_fun(*args, **kwargs)

  layers = list_layers(model, variables, *batch_args, **apply_kwargs)
  validate_policy(policy, [layer.path for layer in layers], signed_inputs=signed_inputs,
                  linear=True)
  with nn.intercept_methods(record):
    model.apply(variables, *batch_args, **apply_kwargs)
  return {path: {name: jnp.asarray(value, jnp.float32) for name, value in entry.items()}
          for path, entry in clips.items()}


def _quantized_kernel(kernel: jax.Array, w_bits: jax.Array, w_clip: jax.Array) -> jax.Array:
  """The kernel on its signed grid: live max|W| from 5 bits, the calibrated clip below."""
  live_max = jax.lax.stop_gradient(jnp.max(jnp.abs(kernel)))
  clip = jnp.where(w_bits >= KL_BELOW_BITS, live_max, jax.lax.stop_gradient(w_clip))
  return jnp.where(w_bits == FULL_PRECISION, kernel,
                   fake_quant(kernel, w_bits, clip, signed=True))


def quantized_apply(model: nn.Module, signed_inputs: Collection[str] = frozenset()
                    ) -> Callable[..., Any]:
  """`model.apply` with the layers of a policy fake-quantized.

  The returned `apply(variables, qstate, bits, *args, **kwargs)` runs
  `model.apply(variables, *args, **kwargs)` (`mutable=`, `rngs=`, `method=` pass through) with,
  for every path in `bits` (from `bits_arrays`):
  - the layer's input through `fake_quant(x, a_bits, qstate[path]["a_clip"], signed=...)`,
    unless a_bits == FULL_PRECISION;
  - its kernel through `fake_quant(kernel, w_bits, clip, signed=True)`, unless w_bits ==
    FULL_PRECISION, with clip = the live max|kernel| from 5 bits and the calibrated
    `qstate[path]["w_clip"]` below (fixed: it receives no gradient).
  Bits are traced, so the same jitted function serves every policy. Gradients: straight
  through for params; `a_clip` is trainable (values clipped at c have gradient 1 w.r.t. c).

  Args:
    model: a Flax module built from `nn.Conv` / `nn.Dense`.
    signed_inputs: paths whose inputs use the signed grid [-c, c].

  Returns:
    The apply function; it raises `UserError` for a path in `bits` without a `qstate` entry.
  """
  signed_inputs = frozenset(signed_inputs)

  def apply(variables: Any, qstate: QState, bits: Mapping[str, jax.Array], *args, **kwargs):
    missing = sorted(set(bits) - set(qstate))
    if missing:
      raise UserError(f"qstate has no clips for layers {missing}; calibrate with the same "
                      f"model before quantizing.")
    params = variables["params"]
    for path, layer_bits in bits.items():
      params = with_kernel(params, path, _quantized_kernel(
          kernel_at(params, path), layer_bits[0], qstate[path]["w_clip"]))
    variables = {**variables, "params": params}

    def quantize_input(next_fun, call_args, call_kwargs, context):
      path = _layer_call(context)
      if path is None or path not in bits:
        return next_fun(*call_args, **call_kwargs)
      x, a_bits = call_args[0], bits[path][1]
      quantized = fake_quant(x, a_bits, qstate[path]["a_clip"], signed=path in signed_inputs)
      x = jnp.where(a_bits == FULL_PRECISION, x, quantized)
      return next_fun(x, *call_args[1:], **call_kwargs)

    with nn.intercept_methods(quantize_input):
      return model.apply(variables, *args, **kwargs)

  return apply


# --------------------------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------------------------


def _bits_of(policy: Policy, path: str) -> tuple[int, int]:
  return tuple(policy.get(path, (FULL_PRECISION, FULL_PRECISION)))


def model_size_bits(layers: list[LayerInfo], policy: Policy) -> int:
  """Kernel storage in bits: each layer's `n_weights * w_bits` (32 outside the policy).

  Biases are not counted (HAQ's model size counts weights); a layer called several times is
  stored once.
  """
  validate_policy(policy, [layer.path for layer in layers])
  unique = {layer.path: layer for layer in layers}
  return sum(layer.n_weights * _bits_of(policy, path)[0] for path, layer in unique.items())


def bitops(layers: list[LayerInfo], policy: Policy) -> int:
  """BitOPs of one example: the sum over layer calls of `macs * w_bits * a_bits`
  (FULL_PRECISION and layers outside the policy count as 32 bits)."""
  validate_policy(policy, [layer.path for layer in layers])
  total = 0
  for layer in layers:
    w_bits, a_bits = _bits_of(policy, layer.path)
    total += layer.macs * w_bits * a_bits
  return total
