"""Dense layer with fairseq's initialisation and logical axis names."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def dense(features: int, logical_axes: tuple[str | None, str | None], *,
          use_bias: bool = True, kernel_init: Any = nn.initializers.xavier_uniform(),
          dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
          name: str | None = None) -> nn.Dense:
  """An `nn.Dense` like fairseq's `Linear` (Xavier-uniform kernel, zero bias).

  The kernel `[in, out]` carries `logical_axes` and the bias the output axis, so one
  sharding rules table covers both. Create it inside an `nn.compact` method.
  """
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, logical_axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             (logical_axes[1],)))
