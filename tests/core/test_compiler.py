"""`core.compiler`: the library's XLA options, checked where this jaxlib accepts them, and the
lazy `jit` that applies them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core import compiler


@pytest.fixture
def fresh_options():
  compiler.compiler_options.cache_clear()
  yield
  compiler.compiler_options.cache_clear()


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), "reflect"),
                                      kernel, (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_jit_computes_what_jax_jit_computes_and_forwards_attributes(fresh_options):
  x = jax.random.normal(jax.random.key(0), (1, 12, 12, 8))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 8, 8))
  fast = compiler.jit(_conv)
  np.testing.assert_allclose(fast(x, kernel), jax.jit(_conv)(x, kernel), rtol=1e-5, atol=1e-5)
  assert fast.__name__ == "_conv"
  text = fast.lower(x, kernel).as_text()  # `lower` comes from the jitted function
  assert "convolution" in text


def test_options_are_the_cpu_options_on_this_jaxlib_and_off_by_environment(
    fresh_options, monkeypatch):
  # The pinned jaxlib accepts them; a release that renamed the option would fail here first.
  assert compiler.compiler_options() == compiler.CPU_OPTIONS
  monkeypatch.setenv(compiler.DEFAULTS_ENV, "1")
  compiler.compiler_options.cache_clear()
  assert compiler.compiler_options() is None


def test_a_rejected_option_falls_back_to_xla_defaults(fresh_options, monkeypatch):
  monkeypatch.setattr(compiler, "CPU_OPTIONS",
                      {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_FUSION_TYPE"})
  assert compiler.compiler_options() is None
  assert float(compiler.jit(lambda x: x * 2)(jnp.float32(3))) == 6.0


def test_a_call_inside_another_transformation_compiles_with_the_callers_options(fresh_options):
  """jax refuses compiler options on a nested jit; inside jit, vmap and grad the library's
  jitted functions run as plain nested jits."""
  square = compiler.jit(lambda x: x * x)
  x = jnp.arange(3.0)
  np.testing.assert_allclose(jax.jit(lambda x: square(x) + 1)(x), x * x + 1)
  np.testing.assert_allclose(jax.vmap(square)(x), x * x)
  np.testing.assert_allclose(jax.grad(lambda x: square(x).sum())(x), 2 * x)
