"""Runs a model exported by `lite_jax.core.export` with plain JAX: no `lite_jax` import.

This file imports only the standard library, numpy and jax, so it runs wherever `pip install jax`
does. `lite_jax.core.export.export` copies it next to every artifact as `run_exported.py`:

    python run_exported.py model.jaxexport                       # prints the signature
    python run_exported.py model.jaxexport --input images=x.npy --output out.npz

or from Python, with the file on the path:

    import run_exported
    model = run_exported.load("model.jaxexport")
    y = model(x)                       # positional, in the order the signature lists them
    y = model(images=x)                # or by name

An artifact is a `jax.export.Exported` serialized to `<name>.jaxexport` (StableHLO with the
parameters inside), with `<name>.json` beside it: the input names, shapes (a string is a symbolic
dimension, e.g. "batch": any size, the same in every input that names it), dtypes, the outputs,
the platforms it was lowered for and the JAX version that wrote it. An input or output may be a
pytree (a decoding cache); on the command line such an input is an `.npz` whose keys are the
leaves' paths as the signature prints them, and outputs are written to one `.npz` keyed by path
(`output` when the result is a single array).
"""

import argparse
import json
import os
import sys

import jax
import numpy as np
from jax import export as jax_export


class ExportedModel:
  """A deserialized artifact: call it like the function that was exported."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no exported model at {path}.")
    with open(path, "rb") as f:
      self.exported = jax_export.deserialize(bytearray(f.read()))
    signature_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(signature_path):
      raise FileNotFoundError(f"the signature {signature_path} must sit next to {path}.")
    with open(signature_path) as f:
      self.signature = json.load(f)
    self.input_names = [entry["name"] for entry in self.signature["inputs"]]
    args_tree = self.exported.in_tree.children()[0]
    self._input_trees = args_tree.children()

  def __call__(self, *args, **kwargs):
    if kwargs:
      unknown = sorted(set(kwargs) - set(self.input_names))
      if unknown or args:
        raise TypeError(f"pass the inputs {self.input_names} either all by position or all by "
                        f"name, got positional {len(args)} and names {sorted(kwargs)}.")
      missing = [n for n in self.input_names if n not in kwargs]
      if missing:
        raise TypeError(f"missing inputs {missing}; the model takes {self.input_names}.")
      args = tuple(kwargs[n] for n in self.input_names)
    if len(args) != len(self.input_names):
      raise TypeError(f"the model takes {len(self.input_names)} inputs {self.input_names}, "
                      f"got {len(args)}.")
    sizes: dict = {}
    for name, value, entry in zip(self.input_names, args, self.signature["inputs"]):
      _check_leaves(name, value, entry["leaves"], sizes)
    _check_constraints(self.signature.get("constraints", ()), sizes)
    return self.exported.call(*args)

  def describe(self) -> str:
    """The signature as lines of text."""
    lines = [f"{self.signature['name']}: {self.signature['description']}",
             f"  platforms {', '.join(self.exported.platforms)}; written by jax "
             f"{self.signature.get('jax_version', '?')}"]
    if self.signature.get("constraints"):
      lines.append(f"  constraints {', '.join(self.signature['constraints'])}")
    for entry in self.signature["inputs"]:
      for leaf in entry["leaves"]:
        lines.append(f"  input  {entry['name']}{leaf['path']}: {leaf['dtype']}{leaf['shape']}")
    for leaf in self.signature["outputs"]:
      lines.append(f"  output {leaf['path'] or 'output'}: {leaf['dtype']}{leaf['shape']}")
    return "\n".join(lines)

  def input_from_file(self, index: int, path: str):
    """Input `index` read from `.npy` (an array) or `.npz` (a pytree keyed by leaf path)."""
    tree = self._input_trees[index]
    if path.endswith(".npy"):
      if tree.num_leaves != 1 or tree.num_nodes != 1:
        raise ValueError(f"input {self.input_names[index]} is a pytree: give an .npz keyed by "
                         f"leaf path.")
      return np.load(path)
    with np.load(path) as archive:
      template = jax.tree_util.tree_unflatten(tree, range(tree.num_leaves))
      paths = [jax.tree_util.keystr(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(template)[0]]
      missing = [p for p in paths if p not in archive]
      if missing:
        raise ValueError(f"{path} lacks the leaves {missing[:5]} of input "
                         f"{self.input_names[index]}.")
      return jax.tree_util.tree_unflatten(tree, [archive[p] for p in paths])


def _check_leaves(name: str, value, leaves: list, sizes: dict) -> None:
  """Shapes and dtypes against the signature; `sizes` collects each symbolic dimension's size
  so that every input agrees on it."""
  flat = jax.tree_util.tree_leaves(value)
  if len(flat) != len(leaves):
    raise ValueError(f"input {name} must have {len(leaves)} arrays, got {len(flat)}.")
  for array, leaf in zip(flat, leaves):
    shape, want = np.shape(array), leaf["shape"]
    dtype = str(getattr(array, "dtype", None) or np.asarray(array).dtype)
    fits = len(shape) == len(want) and all(isinstance(w, str) or w == s
                                           for w, s in zip(want, shape))
    if not fits or dtype != leaf["dtype"]:
      raise ValueError(f"input {name}{leaf['path']} must be {leaf['dtype']}{want} (a string is "
                       f"any size), got {dtype}{list(shape)}.")
    for symbol, size in zip(want, shape):
      if isinstance(symbol, str) and sizes.setdefault(symbol, size) != size:
        raise ValueError(f"input {name}{leaf['path']} has {symbol} = {size}, but an input "
                         f"before it has {symbol} = {sizes[symbol]}.")


def _check_constraints(constraints, sizes: dict) -> None:
  """The signature's simple bounds (`name <= N`, `name >= N`) with a clear message; anything
  else is left to `jax.export`'s own shape refinement."""
  for constraint in constraints:
    parts = constraint.split()
    if len(parts) != 3 or parts[0] not in sizes or parts[1] not in ("<=", ">="):
      continue
    size, bound = sizes[parts[0]], int(parts[2])
    if (size > bound) if parts[1] == "<=" else (size < bound):
      raise ValueError(f"{parts[0]} = {size} breaks the exported bound {constraint}.")


def load(path: str) -> ExportedModel:
  """The artifact at `path` (`.jaxexport`, with its `.json` beside it), ready to call."""
  return ExportedModel(path)


def flatten_outputs(outputs) -> dict:
  """Outputs as {leaf path: numpy array} (`output` for a single array)."""
  flat = jax.tree_util.tree_flatten_with_path(outputs)[0]
  return {(jax.tree_util.keystr(p) or "output"): np.asarray(v) for p, v in flat}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Run a lite_jax export with plain JAX.")
  parser.add_argument("artifact", help="the .jaxexport file")
  parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                      help="an input as .npy (array) or .npz (pytree keyed by leaf path)")
  parser.add_argument("--output", help="write the outputs to this .npz")
  args = parser.parse_args(argv)
  model = load(args.artifact)
  if not args.input:
    print(model.describe())
    return 0
  given = dict(item.split("=", 1) for item in args.input)
  unknown = sorted(set(given) - set(model.input_names))
  missing = [n for n in model.input_names if n not in given]
  if unknown or missing:
    print(f"error: the model takes inputs {model.input_names}; unknown {unknown}, missing "
          f"{missing}.", file=sys.stderr)
    return 2
  inputs = [model.input_from_file(i, given[n]) for i, n in enumerate(model.input_names)]
  outputs = flatten_outputs(model(*inputs))
  if args.output:
    np.savez(args.output, **outputs)
  for key, value in outputs.items():
    print(f"{key}: {value.dtype}{list(value.shape)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
