"""Device mesh, logical-axis sharding rules and global batches.

Models annotate parameters with *logical* axis names (`nn.with_logical_partitioning`); a rules
table maps them to the mesh axes `data` and `model`. Data parallelism is the default table;
FSDP or tensor parallelism is a different table, not different model code.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lite_jax.core.errors import UserError

Rules = Sequence[tuple[str, str | None]]

# Parameters replicated, batch split over `data`.
DATA_PARALLEL_RULES: Rules = (
    ("batch", "data"),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("kv", None),
    ("vocab", None),
    ("length", None),
)
# Parameters split along their model dimension over `data` too (ZeRO-3 / FSDP).
FSDP_RULES: Rules = (("batch", "data"), ("embed", "data"), ("mlp", None), ("heads", None),
                     ("kv", None), ("vocab", None), ("length", None))
# Megatron-style: heads and FFN hidden split over `model`.
TENSOR_PARALLEL_RULES: Rules = (("batch", "data"), ("embed", None), ("mlp", "model"),
                                ("heads", "model"), ("kv", None), ("vocab", "model"),
                                ("length", None))
RULES = {"data_parallel": DATA_PARALLEL_RULES, "fsdp": FSDP_RULES,
         "tensor_parallel": TENSOR_PARALLEL_RULES}


def initialize_distributed(enabled: bool) -> None:
  """Joins a multi-host job (TPU pod, multi-node GPU); environment-driven, no-op if off."""
  if enabled:
    jax.distributed.initialize()
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(model_parallelism: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh `('data', 'model')` over all devices, `model` the fastest-varying axis."""
  devices = list(devices if devices is not None else jax.devices())
  if model_parallelism < 1 or len(devices) % model_parallelism:
    raise UserError(f"model_parallelism={model_parallelism} must divide the number of devices "
                    f"({len(devices)}).")
  grid = np.asarray(devices).reshape(len(devices) // model_parallelism, model_parallelism)
  return Mesh(grid, ("data", "model"))


def rules_by_name(name: str) -> Rules:
  """The logical-axis rules table called `name` (one of `RULES`)."""
  if name not in RULES:
    raise UserError(f"unknown sharding rules {name!r}; choose one of {sorted(RULES)}.")
  return RULES[name]


def abstract_sharded_state(init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh,
                           rules: Rules) -> tuple[Any, Any]:
  """Shapes, dtypes and shardings of `init_fn(rng)`, without running it.

  Args:
    init_fn: `rng -> state` whose parameters (and hence optimizer moments) may hold
      `nn.LogicallyPartitioned` boxes; their logical axes are mapped by `rules`.
    rng: the key `init_fn` will get.
    mesh, rules: the mesh and the logical-to-mesh rules table.

  Returns:
    `(abstract, shardings)`: the unboxed state as `ShapeDtypeStruct`s that carry their
    shardings (what a checkpoint restore needs), and the `NamedSharding` tree (for
    `jax.jit(in_shardings=/out_shardings=)` and `init_sharded`).
  """
  boxed = jax.eval_shape(init_fn, rng)
  shardings = nn.unbox(nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  return abstract, shardings


def init_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, shardings: Any) -> Any:
  """Runs `init_fn(rng)` straight into `shardings` (no full copy on one device first)."""
  return jax.jit(lambda key: nn.unbox(init_fn(key)), out_shardings=shardings)(rng)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P("data"))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of a batch into global arrays sharded over `data`.

  Each process passes the rows it loaded; the global batch is their concatenation.
  """
  sharding = batch_sharding(mesh)
  data_size = mesh.shape["data"]
  out = {}
  for key, value in batch.items():
    global_rows = value.shape[0] * jax.process_count()
    if global_rows % data_size:
      raise UserError(f"the global batch of {global_rows} rows ({key!r}) does not split over "
                      f"{data_size} data-parallel devices; make the batch a multiple of it.")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
