"""Standalone compact generators on disk: `generator.json` (the module's fields) + weights.

An exported folder needs nothing but this module to run: no super-network, no config, no
training state. `save_generator` writes any generator module of this package (ResNet family or
SPADE family) with its variables (`params`, and `batch_stats` for SPADE's batch norms).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import linen as nn

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import resnet, spade

ARCHITECTURES = {"resnet": resnet.ResnetGenerator, "spade": spade.SpadeGenerator}


def _fields(module: nn.Module) -> dict[str, Any]:
  out = {}
  for field in dataclasses.fields(module):
    if field.name in ("parent", "name"):
      continue
    value = getattr(module, field.name)
    out[field.name] = (jnp.dtype(value).name if field.name == "dtype" else
                       list(value) if isinstance(value, tuple) else value)
  return out


def save_generator(directory: str, generator: nn.Module, variables: dict[str, Any]) -> None:
  """Writes `generator` (its fields as JSON) and `variables` (orbax) into `directory`."""
  names = {cls: name for name, cls in ARCHITECTURES.items()}
  if type(generator) not in names:
    raise UserError(f"cannot export a {type(generator).__name__}; exportable generators: "
                    f"{', '.join(c.__name__ for c in ARCHITECTURES.values())}.")
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  spec = {"architecture": names[type(generator)], "fields": _fields(generator)}
  with open(os.path.join(directory, "generator.json"), "w") as f:
    json.dump(spec, f, indent=1)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, "variables"), jax.device_get(dict(variables)),
                      force=True)


def load_generator(directory: str) -> tuple[nn.Module, dict[str, Any]]:
  """`(generator, variables)` of an exported generator: `generator.apply(variables, x)`."""
  directory = os.path.abspath(directory)
  spec_path = os.path.join(directory, "generator.json")
  if not os.path.exists(spec_path):
    raise UserError(f"{directory} is not an exported generator (no generator.json); run "
                    f"--mode=export first.")
  with open(spec_path) as f:
    spec = json.load(f)
  fields = dict(spec["fields"])
  fields["dtype"] = jnp.dtype(fields["dtype"])
  fields["channels"] = tuple(fields["channels"])
  generator = ARCHITECTURES[spec["architecture"]](**fields)
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.join(directory, "variables"))
  return generator, variables
