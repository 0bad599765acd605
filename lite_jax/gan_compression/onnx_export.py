"""GAN generators as ONNX models (`jax2onnx`), for runtimes outside JAX such as onnxruntime.

    from lite_jax.gan_compression import onnx_export, standalone
    generator, variables = standalone.load_generator("runs/h2z/export")
    onnx_export.export_onnx(generator, variables, "runs/h2z/export/generator.onnx",
                            height=256, width=256)

    import onnxruntime as ort
    session = ort.InferenceSession("generator.onnx", providers=["CPUExecutionProvider"])
    (images,) = session.run(None, {"input": x})   # x: float32 [batch, 256, 256, 3] in [-1, 1]

The converter is an optional extra (`requirements-export.txt`, installed with `--no-deps`:
jax2onnx pins an older orbax-checkpoint than this library needs). The generator's weights
become the model's initializers; the batch dimension is symbolic (`batch`), height and width
are fixed. Layouts stay NHWC as in JAX.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

import jax
from flax import linen as nn

from lite_jax.core.errors import UserError

INPUT_NAME, OUTPUT_NAME = "input", "output"


def require_converter():
  """`jax2onnx`, or a `UserError` saying how to install the optional extra."""
  try:
    import jax2onnx  # the optional extra; it imports onnx and onnx_ir
  except ImportError:
    raise UserError("ONNX export needs jax2onnx and onnx: pip install --no-deps -r "
                    "requirements-export.txt.") from None
  # jax2onnx imports its example plugins for other libraries (equinox, dm_pix) and logs a
  # traceback for each one that is missing; none of them is used here.
  logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
  return jax2onnx


def export_onnx(generator: nn.Module, variables: dict[str, Any], path: str, *, height: int,
                width: int, input_channels: int = 3, depthwise_impl: str | None = "conv"
                ) -> str:
  """Writes `generator.apply(variables, x)` as an ONNX model (opset 23) at `path`.

  Args:
    generator: a generator of this package (`ResnetGenerator`, or `SpadeGenerator` whose input
      is the one-hot semantic map, `spade_recipe.semantic_input`).
    variables: its variables (`params`, and `batch_stats` for SPADE), baked into the model.
    path: the `.onnx` file to write (its folder is created).
    height, width: the input size the model is fixed to.
    input_channels: channels of the input (3 for images, `semantic_nc` for label maps).
    depthwise_impl: how the mobile generators' depthwise convs are written into the graph
      (`layers.DepthwiseConv`): `conv`, one grouped `Conv` node, for which ONNX runtimes have
      kernels; `shifts`, the XLA:CPU form, becomes k^2 slices and multiply-adds each. None
      keeps the generator's. The parameters are the same either way.

  Returns:
    `path`. The model's input `input` is float32 `[batch, height, width, input_channels]`
    (symbolic `batch`), its output `output` float32 `[batch, height, width, 3]`.
  """
  jax2onnx = require_converter()
  if depthwise_impl is not None:
    generator = generator.clone(depthwise_impl=depthwise_impl)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with _jax_namespaces_restored():
    jax2onnx.to_onnx(lambda x: generator.apply(variables, x),
                     inputs=[("batch", height, width, input_channels)],
                     model_name=type(generator).__name__, input_names=[INPUT_NAME],
                     output_names=[OUTPUT_NAME], return_mode="file", output_path=path)
  return path


# The jax namespaces whose functions jax2onnx's plugins may replace when they are imported.
_PATCHED_NAMESPACES = (jax.numpy, jax.lax, jax.nn, jax.numpy.linalg, jax.random)


@contextlib.contextmanager
def _jax_namespaces_restored() -> Iterator[None]:
  """Undoes what converting changed in `jax.numpy`, `jax.lax`, ... when it returns.

  jax2onnx imports its plugins during the first conversion, and some replace a jax function
  for the rest of the process (0.17: `jnp.cumsum` becomes a wrapper that rejects a
  positional `axis`), so code that runs after an export would run on the converter's
  version. The namespaces' attributes are put back as they were before the conversion.
  """
  saved = [(module, dict(vars(module))) for module in _PATCHED_NAMESPACES]
  try:
    yield
  finally:
    for module, attributes in saved:
      for name in set(vars(module)) - set(attributes):
        delattr(module, name)
      for name, value in attributes.items():
        if vars(module).get(name) is not value:
          setattr(module, name, value)
