"""FSDP and tensor parallelism are a change of the rules table (`config.mesh.rules`), not of
model code: the tiny LSRA model gives the data-parallel logits under each, on 8 devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.configs import wmt_lite
from lite_jax import core
from lite_jax.lite_transformer import EncoderDecoder, train


def _flagfile_overrides(name: str) -> dict[str, str]:
  with open(f"experiments/flags/sharding_{name}.flags", encoding="utf-8") as f:
    lines = [l.strip() for l in f if l.startswith("--config.")]
  return dict(l[len("--config."):].split("=", 1) for l in lines)


def _config(sharding: str | None):
  config = wmt_lite.get_config("tiny")
  for key, value in (_flagfile_overrides(sharding) if sharding else {}).items():
    node = config
    *parents, name = key.split(".")
    for parent in parents:
      node = node[parent]
    node[name] = type(node[name])(value)
  return config


def _logits(config, tokens):
  model = EncoderDecoder(train.model_config(config, 64))
  mesh = core.mesh.from_config(config.mesh)
  rules = core.mesh.rules_from_config(config.mesh)
  init = lambda key: model.init(key, tokens, tokens)
  abstract, shardings = core.abstract_sharded_state(init, core.init_key(0), mesh, rules)
  variables = core.init_sharded(init, core.init_key(0), shardings)
  with core.mesh.activate(mesh, rules):
    logits = jax.jit(lambda v, x: model.apply(v, x, x))(variables, tokens)
  return np.asarray(logits), abstract["params"]


@pytest.fixture(scope="module")
def data_parallel():
  tokens = jax.random.randint(jax.random.key(1), (8, 12), 4, 64)
  return tokens, _logits(_config(None), tokens)[0]


@pytest.mark.parametrize("sharding,kernel,spec", [
    ("fsdp", ("encoder", "layer_0", "ffn", "hidden", "kernel"), P("data", None)),
    ("tensor_parallel", ("encoder", "layer_0", "ffn", "hidden", "kernel"), P(None, "model")),
])
def test_sharding_flagfiles_change_layout_not_results(data_parallel, sharding, kernel, spec):
  tokens, expected = data_parallel
  logits, params = _logits(_config(sharding), tokens)
  leaf = params
  for key in kernel:
    leaf = leaf[key]
  assert leaf.sharding.spec == spec
  np.testing.assert_allclose(logits, expected, rtol=2e-5, atol=2e-5)
