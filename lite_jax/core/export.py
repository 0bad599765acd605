"""Portable artifacts: a model as serialized StableHLO that runs with plain JAX.

`export` traces a function once with `jax.export` (symbolic dimensions where the shape says a
name, e.g. `"batch"`), lowers it for every platform asked for, and writes three files:

    <directory>/<name>.jaxexport   the serialized `jax.export.Exported` (parameters inside)
    <directory>/<name>.json        its signature: input names, shapes, dtypes, outputs, platforms
    <directory>/run_exported.py    the loader (`exported_runtime.py`: jax + numpy only)

so a user ships the folder and runs `python run_exported.py <name>.jaxexport --input ...` or
`run_exported.load(path)(x)` without this library. Functions close over their parameters, so the
artifact is the model; the exporting code decides what is deployable (eval mode, the XLA path
of the kernels so the one artifact lowers for cpu, cuda and tpu).

    from lite_jax.core import export as portable
    portable.export(lambda x: model.apply(variables, x),
                    {"images": portable.Spec(("batch", 256, 256, 3), "float32")},
                    "runs/x/export", "generator", description="compressed generator")
"""

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax import export as jax_export

from lite_jax.core import exported_runtime
from lite_jax.core.errors import UserError

RUNTIME_FILE = "run_exported.py"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


@dataclasses.dataclass(frozen=True)
class Spec:
  """One input array: `shape` entries are sizes or names of symbolic dimensions."""
  shape: tuple[int | str, ...]
  dtype: str = "float32"


def _is_spec(x) -> bool:
  return isinstance(x, Spec)


def _abstract(inputs: Mapping[str, Any], scope: jax_export.SymbolicScope) -> list:
  """Specs -> `jax.ShapeDtypeStruct`s whose named dimensions share one symbolic scope."""
  def to_struct(spec: Spec):
    dims = ", ".join(str(d) for d in spec.shape)
    shape = jax_export.symbolic_shape(dims, scope=scope) if spec.shape else ()
    return jax.ShapeDtypeStruct(shape, np.dtype(spec.dtype))
  return [jax.tree_util.tree_map(to_struct, tree, is_leaf=_is_spec) for tree in inputs.values()]


def _leaves(tree, is_leaf=None) -> list[dict[str, Any]]:
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return [{"path": jax.tree_util.keystr(path), "shape": [d if isinstance(d, int) else str(d)
                                                         for d in leaf.shape],
           "dtype": str(np.dtype(leaf.dtype))} for path, leaf in flat]


def export(fn: Callable[..., Any], inputs: Mapping[str, Any], directory: str, name: str, *,
           platforms: Sequence[str] = DEFAULT_PLATFORMS, constraints: Sequence[str] = (),
           description: str = "", metadata: Mapping[str, Any] | None = None) -> str:
  """Serializes `fn(*inputs.values())` for `platforms`; returns the `.jaxexport` path.

  Args:
    fn: a function of the inputs, positionally in `inputs`' order; it closes over its
      parameters. Outputs may be any pytree of arrays.
    inputs: name -> a `Spec` or a pytree (dict/list/tuple) of `Spec`s.
    directory: where the artifact, its signature and `run_exported.py` are written.
    name: the file stem.
    platforms: lowering targets; one artifact serves all of them.
    constraints: bounds on the symbolic dimensions the function's shape checks need, e.g.
      `("src_len <= 256",)` (`jax.export.SymbolicScope`); a call outside them is refused.
    description, metadata: recorded in the signature (metadata must be JSON-serializable).
  """
  if not inputs:
    raise UserError(f"export {name!r} needs at least one input.")
  bad = [n for n, tree in inputs.items()
         if not all(_is_spec(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=_is_spec))]
  if bad:
    raise UserError(f"export inputs {bad} must be portable.Spec values (or pytrees of them).")
  scope = jax_export.SymbolicScope(tuple(constraints))
  exported = jax_export.export(jax.jit(fn), platforms=tuple(platforms))(
      *_abstract(inputs, scope))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}.jaxexport")
  with open(path, "wb") as f:
    f.write(exported.serialize())
  out_tree = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
  signature = {
      "name": name, "description": description,
      "inputs": [{"name": n, "leaves": _leaves(tree, _is_spec)} for n, tree in inputs.items()],
      "outputs": _leaves(out_tree),
      "platforms": list(exported.platforms), "constraints": list(constraints),
      "jax_version": jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "metadata": dict(metadata or {}),
  }
  with open(os.path.join(directory, f"{name}.json"), "w") as f:
    json.dump(signature, f, indent=1)
  shutil.copyfile(exported_runtime.__file__, os.path.join(directory, RUNTIME_FILE))
  return path


def load(path: str) -> exported_runtime.ExportedModel:
  """The artifact at `path`, callable like the exported function (what `run_exported.py` does)."""
  return exported_runtime.load(path)


def run_standalone(artifact: str, inputs: Mapping[str, Any], *,
                   timeout: float = 600) -> dict[str, np.ndarray]:
  """Runs `run_exported.py` beside `artifact` in a fresh isolated interpreter (`python -I`: no
  PYTHONPATH, no current directory on the path) and returns its outputs keyed by leaf path.

  This is how a user without this library runs the model; the subprocess also fails if anything
  imported `lite_jax`. `inputs`: name -> array, or a pytree of arrays (written as `.npz`).
  """
  directory = os.path.dirname(os.path.abspath(artifact))
  with tempfile.TemporaryDirectory() as tmp:
    args = []
    for n, value in inputs.items():
      if isinstance(value, (np.ndarray, jax.Array)):
        file = os.path.join(tmp, f"{n}.npy")
        np.save(file, np.asarray(value))
      else:
        file = os.path.join(tmp, f"{n}.npz")
        np.savez(file, **exported_runtime.flatten_outputs(value))
      args += ["--input", f"{n}={file}"]
    out = os.path.join(tmp, "out.npz")
    runner = ("import runpy, sys; sys.argv = sys.argv[1:]; code = 0\n"
              "try: runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "except SystemExit as e: code = e.code\n"
              "assert not [m for m in sys.modules if m.split('.')[0] == 'lite_jax']\n"
              "sys.exit(code)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-I", "-c", runner, os.path.join(directory, RUNTIME_FILE),
               os.path.abspath(artifact), *args, "--output", out]
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
      raise RuntimeError(f"run_exported.py failed ({done.returncode}): {done.stderr[-2000:]}")
    with np.load(out) as archive:
      return {k: archive[k] for k in archive.files}
