"""ONNX export of the GAN generators (`onnx_export`), run by onnxruntime against JAX; the
missing-converter error; the converter leaves `jax.numpy` as it was. Random weights everywhere (biases too), so that a wrong transposed
conv or a dropped bias cannot hide behind the reference's zero-initialised biases."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gan_compress as configs
from lite_jax import core
from lite_jax.gan_compression import onnx_export, pipeline, resnet

_NEEDS_ONNX = "jax2onnx and onnxruntime are not installed (requirements-export.txt)"
_JNP_BEFORE = dict(vars(jnp))  # before any conversion in this process


def _randomized(generator, shape):
  variables = jax.eval_shape(generator.init, jax.random.key(0), jax.ShapeDtypeStruct(shape,
                                                                                    np.float32))
  leaves, tree = jax.tree.flatten(variables)
  rng = np.random.default_rng(0)
  return jax.tree.unflatten(tree, [0.3 * rng.standard_normal(l.shape).astype(np.float32)
                                   for l in leaves])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A tiny ResNet teacher and a mobile (compressed) generator, each converted once."""
  pytest.importorskip("jax2onnx", reason=_NEEDS_ONNX)
  ort = pytest.importorskip("onnxruntime", reason=_NEEDS_ONNX)
  directory = tmp_path_factory.mktemp("onnx")
  nets = {"teacher": resnet.resnet_generator(8, n_blocks=3),
          "compressed": resnet.mobile_resnet_generator((4, 8, 4, 8, 4, 8, 4, 8), n_blocks=3)}
  out = {}
  for name, generator in nets.items():
    variables = _randomized(generator, (1, 16, 12, 3))
    path = onnx_export.export_onnx(generator, variables, str(directory / f"{name}.onnx"),
                                   height=16, width=12)
    out[name] = (generator, variables,
                 ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
  return out


@pytest.mark.parametrize("name", ["teacher", "compressed"])
def test_onnxruntime_matches_jax_at_two_batch_sizes(converted, name):
  generator, variables, session = converted[name]
  (given,), (produced,) = session.get_inputs(), session.get_outputs()
  assert (given.name, given.shape) == ("input", ["batch", 16, 12, 3])
  assert (produced.name, produced.shape) == ("output", ["batch", 16, 12, 3])
  forward = jax.jit(generator.apply)
  for batch in (1, 3):
    # Beyond [-1, 1] too: the generator clamps its input, and so must the ONNX model.
    x = np.random.default_rng(batch).uniform(-1.5, 1.5, (batch, 16, 12, 3)).astype(np.float32)
    (out,) = session.run(None, {"input": x})
    expected = np.asarray(forward(variables, x))
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1e-4


def test_converting_leaves_jax_numpy_as_it_was(converted):
  """jax2onnx 0.17's plugins replace `jnp.cumsum` when a conversion first imports them (the
  replacement rejects a positional axis); `export_onnx` puts the namespace back."""
  changed = sorted(name for name in set(vars(jnp)) | set(_JNP_BEFORE)
                   if vars(jnp).get(name) is not _JNP_BEFORE.get(name))
  assert not changed
  np.testing.assert_array_equal(jnp.cumsum(jnp.ones((2, 3)), 1), [[1, 2, 3], [1, 2, 3]])


def test_missing_converter_is_a_user_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # makes `import jax2onnx` fail
  generator = resnet.resnet_generator(4, n_blocks=1)
  with pytest.raises(core.UserError, match="pip install --no-deps -r requirements-export.txt"):
    onnx_export.export_onnx(generator, {}, str(tmp_path / "g.onnx"), height=8, width=8)
  config = configs.get_config("tiny")
  config.export.onnx = True
  config.subnet.channels = "4_4_4_4_4_4_4_4"
  with pytest.raises(core.UserError, match="ONNX export needs jax2onnx"):
    pipeline.export(config, str(tmp_path))  # before it looks for a trained network
