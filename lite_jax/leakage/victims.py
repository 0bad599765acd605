"""Victim models whose shared gradients the attacks invert, and the gradient they share.

A `Victim` bundles a pure `apply_fn(params, x) -> logits`, its parameters, the per-example
input shape and a loss of `(logits, soft_labels)`. The gradient it shares is
`∇θ mean_b loss(F(x_b), y_b)` over one batch; attacks differentiate through that gradient
(double backprop), which is why every model here is smooth (sigmoid, no ReLU kinks).

Images are NHWC (`[batch, height, width, channels]`, values in [0, 1], unnormalised as in the
DLG reference). Any Flax model works through `Victim.from_module`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lite_jax.core.errors import UserError

Params = Any
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


# Initialisers draw a flat vector and reshape it: on CPU, XLA takes seconds to compile threefry
# for a 4-D conv-kernel shape (several times longer than for the same count in 1-D).

def uniform_init(scale: float = 0.5) -> nn.initializers.Initializer:
  """U(-scale, scale), the DLG reference's `weights_init` for every weight and bias."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, (math.prod(shape),), dtype, -scale, scale).reshape(shape)
  return init


def lecun_uniform(key, shape, dtype=jnp.float32):
  """U(±sqrt(3 / fan_in)), i.e. variance 1 / fan_in, with fan_in = prod(shape[:-1])."""
  bound = math.sqrt(3.0 / math.prod(shape[:-1]))
  return uniform_init(bound)(key, shape, dtype)


def soft_cross_entropy(logits: jax.Array, soft_labels: jax.Array) -> jax.Array:
  """Batch mean of `Σ_c -y_c log softmax(logits)_c` (the reference's `cross_entropy_for_onehot`).

  Args:
    logits: `[batch, classes]`.
    soft_labels: `[batch, classes]`, rows on the simplex (one-hot for real data).
  """
  return jnp.mean(jnp.sum(-soft_labels * jax.nn.log_softmax(logits, axis=-1), axis=-1))


class LeNet(nn.Module):
  """The DLG reference's sigmoid LeNet: three k5 convs (strides 2, 2, 1) and one linear layer.

  With 3x32x32 inputs and 100 classes it has 85,036 parameters and a 768-wide flatten; with
  1x28x28 inputs the flatten is 588 (iDLG's MNIST variant).
  """
  num_classes: int = 100
  width: int = 12
  init_scale: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[batch, height, width, channels]` -> logits `[batch, num_classes]`."""
    init = uniform_init(self.init_scale)
    for stride in (2, 2, 1):
      # PyTorch pads 2 on both sides; Flax 'SAME' would pad (1, 2) at stride 2 and shift the grid.
      x = nn.Conv(self.width, (5, 5), strides=stride, padding=((2, 2), (2, 2)),
                  kernel_init=init, bias_init=init)(x)
      x = nn.sigmoid(x)
    # Flatten in NCHW order so the classifier matches a ported PyTorch checkpoint.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=init, bias_init=init, name="classifier")(x)


class SigmoidResidualBlock(nn.Module):
  """Two 3x3 convs with sigmoid activations and an identity (or 1x1 projection) shortcut."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(nn.Conv, self.features, kernel_init=lecun_uniform)
    y = nn.sigmoid(conv((3, 3), self.stride, padding=((1, 1), (1, 1)))(x))
    y = conv((3, 3), padding=((1, 1), (1, 1)))(y)
    if x.shape[-1] != self.features or self.stride != 1:
      x = conv((1, 1), self.stride, name="shortcut")(x)
    return nn.sigmoid(x + y)


class SigmoidResNet(nn.Module):
  """A CIFAR ResNet (6n+2 layers) with ReLU -> sigmoid, as in the DLG paper's image experiments.

  The paper also removes the strides (the attack needs a twice-differentiable model with
  enough spatial resolution); `strided=False` does that. No batch norm: the shared gradient is
  that of a model in evaluation mode, so normalization would be a fixed affine map anyway.
  `blocks_per_stage=9` is ResNet-56; the default 1 (ResNet-8) keeps CPU runs short.
  """
  num_classes: int = 100
  blocks_per_stage: int = 1
  widths: Sequence[int] = (16, 32, 64)
  strided: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[batch, height, width, channels]` -> logits `[batch, num_classes]`."""
    x = nn.sigmoid(nn.Conv(self.widths[0], (3, 3), padding=((1, 1), (1, 1)),
                           kernel_init=lecun_uniform)(x))
    for stage, features in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        stride = 2 if self.strided and stage > 0 and block == 0 else 1
        x = SigmoidResidualBlock(features, stride)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=lecun_uniform, name="classifier")(x)


class MLP(nn.Module):
  """Flatten, sigmoid hidden layers, linear classifier."""
  num_classes: int = 10
  hidden: Sequence[int] = (256,)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `[batch, ...]` -> logits `[batch, num_classes]`."""
    x = x.reshape(x.shape[0], -1)
    for features in self.hidden:
      x = nn.sigmoid(nn.Dense(features, kernel_init=lecun_uniform)(x))
    return nn.Dense(self.num_classes, kernel_init=lecun_uniform, name="classifier")(x)


class Victim(flax.struct.PyTreeNode):
  """A model whose per-batch parameter gradient is shared (and attacked).

  Attributes:
    params: the parameter pytree the gradient is taken with respect to.
    apply_fn: `(params, x [batch, *input_shape]) -> logits [batch, num_classes]`.
    input_shape: one example's shape, e.g. `(32, 32, 3)`.
    num_classes: width of the logits and of the (soft) labels.
    loss_fn: `(logits, soft_labels) -> scalar`, averaged over the batch.
  """
  params: Params
  apply_fn: Callable[[Params, jax.Array], jax.Array] = flax.struct.field(pytree_node=False)
  input_shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  num_classes: int = flax.struct.field(pytree_node=False)
  loss_fn: LossFn = flax.struct.field(pytree_node=False, default=soft_cross_entropy)

  @classmethod
  def from_module(cls, module: nn.Module, key: jax.Array, input_shape: Sequence[int],
                  num_classes: int, *, params: Params | None = None,
                  loss_fn: LossFn = soft_cross_entropy) -> "Victim":
    """Wraps any Flax module; initialises it from `key` unless `params` are given."""
    input_shape = tuple(int(d) for d in input_shape)
    if params is None:
      params = jax.jit(module.init)(key, jnp.zeros((1,) + input_shape))["params"]
    apply_fn = lambda p, x: module.apply({"params": p}, x)
    return cls(params=params, apply_fn=apply_fn, input_shape=input_shape,
               num_classes=num_classes, loss_fn=loss_fn)

  def loss(self, params: Params, x: jax.Array, soft_labels: jax.Array) -> jax.Array:
    return self.loss_fn(self.apply_fn(params, x), soft_labels)

  def gradient(self, x: jax.Array, soft_labels: jax.Array) -> Params:
    """The shared gradient `∇θ loss` for a batch.

    Args:
      x: `[batch, *input_shape]`.
      soft_labels: `[batch, num_classes]` (one-hot for real data).
    """
    return jax.grad(self.loss)(self.params, x, soft_labels)

  def one_hot(self, labels: jax.Array) -> jax.Array:
    """`[batch]` int labels -> `[batch, num_classes]` one-hot floats."""
    return jax.nn.one_hot(labels, self.num_classes)

  def check_inputs(self, x: Any, name: str = "images") -> None:
    """Raises `UserError` unless `x` is `[batch, *input_shape]`."""
    shape = tuple(np.shape(x))
    if len(shape) != len(self.input_shape) + 1 or shape[1:] != self.input_shape:
      raise UserError(f"{name} have shape {list(shape)} but this victim takes "
                      f"[batch, {', '.join(map(str, self.input_shape))}]; resize the images or "
                      f"build the victim for this input shape.")

  def check_gradient(self, grads: Params, name: str = "the observed gradient") -> None:
    """Raises `UserError` unless `grads` has the params' structure and shapes and is finite.

    The finiteness check needs values, so it is skipped for traced (jit/vmap) gradients.
    """
    expected = jax.tree_util.tree_structure(self.params)
    got = jax.tree_util.tree_structure(grads)
    if got != expected:
      raise UserError(f"{name} does not match the model's parameters (its tree is {got}, the "
                      f"model's is {expected}); pass the gradient of this victim's params.")
    for (path, g), p in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                            jax.tree.leaves(self.params)):
      if np.shape(g) != np.shape(p):
        raise UserError(f"{name} has shape {list(np.shape(g))} at "
                        f"{jax.tree_util.keystr(path)} where the model has {list(p.shape)}.")
    if not any(isinstance(g, jax.core.Tracer) for g in jax.tree.leaves(grads)):
      if not all(bool(np.all(np.isfinite(np.asarray(g)))) for g in jax.tree.leaves(grads)):
        raise UserError(f"{name} contains NaN or inf; a finite gradient is needed to attack it.")


def make_victim(name: str, key: jax.Array, *, input_shape: Sequence[int],
                num_classes: int, width: int = 12) -> Victim:
  """One of the built-in victims by name: `lenet`, `resnet` (sigmoid ResNet-8) or `mlp`.

  `width`: the LeNet's channels (the reference's 12). Its gradient pins down only a few
  images: at 32x32 a batch of 2 has a 240-dim null space at width 12 and none at 24
  (lite_jax/leakage/README.md, "Batches"), so batch attacks need a wider LeNet.
  """
  if name != "lenet" and width != 12:
    raise UserError(f"width={width} applies to the lenet victim only, not {name!r}.")
  if width < 1:
    raise UserError(f"the LeNet width must be at least 1, not {width}.")
  modules = {"lenet": lambda: LeNet(num_classes=num_classes, width=width),
             "resnet": lambda: SigmoidResNet(num_classes=num_classes),
             "mlp": lambda: MLP(num_classes=num_classes)}
  if name not in modules:
    raise UserError(f"unknown victim {name!r}; choose one of {sorted(modules)}.")
  return Victim.from_module(modules[name](), key, input_shape, num_classes)


def gradient_singular_values(victim: Victim, x: jax.Array, soft_labels: jax.Array,
                             chunk: int = 256) -> np.ndarray:
  """Singular values of `J = d(shared gradient) / d(images)` at `x`, largest first.

  Zeros (relative to the largest) are directions along which the batch can move without
  changing its gradient to first order: no gradient-matching attack can tell those batches
  apart (README, "Batches"). `JᵀJ` is built column block by column block (`chunk` jvp/vjp
  pairs at a time), so memory is `[n, n]` with `n = x.size`, never `[n, params]`. Run under
  `jax_enable_x64` with float64 params and images to resolve values below ~1e-4 x the largest.

  Args:
    x: `[batch, *input_shape]` images; soft_labels: `[batch, num_classes]`.
  Returns:
    `[x.size]` singular values (float64 numpy).
  """
  shape, n = x.shape, x.size

  def flat_gradient(v):
    leaves = jax.tree.leaves(victim.gradient(v.reshape(shape), soft_labels))
    return jnp.concatenate([leaf.ravel() for leaf in leaves])

  _, jvp = jax.linearize(flat_gradient, x.ravel())
  vjp = jax.linear_transpose(jvp, x.ravel())
  gram_columns = jax.jit(jax.vmap(lambda e: vjp(jvp(e))[0]))
  eye = jnp.eye(n, dtype=x.dtype)
  gram = np.concatenate([np.asarray(gram_columns(eye[i:i + chunk]), np.float64)
                         for i in range(0, n, chunk)])
  eigenvalues = np.linalg.eigvalsh(0.5 * (gram + gram.T))[::-1]
  return np.sqrt(np.clip(eigenvalues, 0.0, None))
