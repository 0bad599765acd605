"""lite_jax: efficient-deep-learning papers in JAX/Flax with Pallas kernels.

Each paper lives in its own subpackage (`lite_jax.lite_transformer`, ...); shared plumbing in
`lite_jax.core` and shared layers in `lite_jax.nn`.
"""

from lite_jax import core
from lite_jax import nn

__version__ = "0.1.0"
