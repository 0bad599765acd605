"""Portable artifacts (`lite_jax.core.export`): what is written, what comes back, and the loader
running alone in an interpreter that cannot import lite_jax."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.core import UserError
from lite_jax.core import export as portable


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, state):
    h = nn.relu(nn.Conv(4, (3, 3))(x)).mean(axis=(1, 2))
    return {"logits": nn.Dense(3)(h) + state["bias"], "count": state["count"] + 1}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
  """A conv net with a pytree state input and a dict output, symbolic batch."""
  net = _Net()
  x = jnp.ones((1, 8, 8, 2))
  state = {"bias": jnp.zeros((1, 3)), "count": jnp.zeros((1,), jnp.int32)}
  variables = net.init(jax.random.PRNGKey(0), x, state)
  fn = lambda x, state: net.apply(variables, x, state)
  directory = str(tmp_path_factory.mktemp("export"))
  path = portable.export(
      fn, {"images": portable.Spec(("batch", 8, 8, 2)),
           "state": {"bias": portable.Spec(("batch", 3)),
                     "count": portable.Spec(("batch",), "int32")}},
      directory, "net", platforms=("cpu", "cuda"), description="a test net",
      metadata={"width": 4})
  return path, fn


def _inputs(batch: int):
  rng = np.random.RandomState(batch)
  return (rng.randn(batch, 8, 8, 2).astype(np.float32),
          {"bias": rng.randn(batch, 3).astype(np.float32),
           "count": np.arange(batch, dtype=np.int32)})


def test_writes_the_artifact_its_signature_and_the_loader(artifact):
  path, _ = artifact
  directory = os.path.dirname(path)
  assert sorted(os.listdir(directory)) == ["net.jaxexport", "net.json", "run_exported.py"]
  with open(os.path.join(directory, "net.json")) as f:
    signature = json.load(f)
  assert signature["platforms"] == ["cpu", "cuda"]
  assert signature["metadata"] == {"width": 4}
  assert [e["name"] for e in signature["inputs"]] == ["images", "state"]
  assert signature["inputs"][0]["leaves"] == [{"path": "", "shape": ["batch", 8, 8, 2],
                                               "dtype": "float32"}]
  assert {o["path"]: o["shape"] for o in signature["outputs"]} == {
      "['count']": ["batch"], "['logits']": ["batch", 3]}


@pytest.mark.parametrize("batch", [1, 3])
def test_the_loaded_artifact_equals_the_function_at_any_batch(artifact, batch):
  path, fn = artifact
  model = portable.load(path)
  x, state = _inputs(batch)
  got, want = model(x, state), fn(x, state)
  np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got["count"], want["count"])
  by_name = model(state=state, images=x)
  np.testing.assert_array_equal(by_name["logits"], got["logits"])


def test_wrong_inputs_are_one_sentence_errors(artifact):
  model = portable.load(artifact[0])
  x, state = _inputs(2)
  with pytest.raises(ValueError, match=r"input images must be float32\['batch', 8, 8, 2\]"):
    model(x[:, :4], state)
  with pytest.raises(ValueError, match="must be int32"):
    model(x, {**state, "count": state["count"].astype(np.float32)})
  with pytest.raises(ValueError, match=r"state\['bias'\] has batch = 3, but an input before it "
                     r"has batch = 2"):
    model(x, _inputs(3)[1])
  with pytest.raises(TypeError, match="takes 2 inputs"):
    model(x)
  with pytest.raises(UserError, match="portable.Spec"):
    portable.export(lambda x: x, {"x": (2, 3)}, "/tmp/unused", "bad")


def test_the_loader_runs_alone_without_lite_jax(artifact):
  path, fn = artifact
  x, state = _inputs(2)
  outputs = portable.run_standalone(path, {"images": x, "state": state})
  want = fn(x, state)
  np.testing.assert_allclose(outputs["['logits']"], want["logits"], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(outputs["['count']"], want["count"])
  signature = subprocess.run([sys.executable, "-I", os.path.join(os.path.dirname(path),
                                                                 "run_exported.py"), path],
                             capture_output=True, text=True, check=True).stdout
  assert "input  images: float32['batch', 8, 8, 2]" in signature
  assert "output ['logits']: float32['batch', 3]" in signature
