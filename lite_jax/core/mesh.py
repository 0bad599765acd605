"""Device mesh, logical-axis sharding rules and global batches, all from `config.mesh`.

Models annotate parameters with *logical* axis names (`nn.with_logical_partitioning`) and,
where tensor parallelism needs it, activations (`nn.with_logical_constraint`). The rules
table `config.mesh.rules` maps each logical name to a mesh axis (`data`, `model`) or to ''
(replicated). Data parallelism is the default table; FSDP and tensor parallelism are a change
of rules (`experiments/flags/sharding_*.flags`), not of model code:

    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt14_enfr_lite_d496.flags \
        --flagfile=experiments/flags/sharding_fsdp.flags

Every trainer builds its mesh with `from_config(config.mesh)` and runs under `activate`, which
makes the mesh and the rules current (activation constraints and the Pallas kernels' per-shard
dispatch read them from there).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lite_jax.core.errors import UserError

Rules = Sequence[tuple[str, str | None]]

MESH_AXES = ("data", "model")
# Logical axis names used by the models, and where the default table puts them: the batch
# split over `data`, every parameter replicated.
DATA_PARALLEL = {"batch": "data", "embed": "", "mlp": "", "heads": "", "kv": "", "vocab": "",
                 "length": ""}
# ZeRO-3 / FSDP: parameters also split over `data` along their model dimension.
FSDP = {**DATA_PARALLEL, "embed": "data"}
# Megatron-style: heads, FFN hidden and vocabulary split over `model`.
TENSOR_PARALLEL = {**DATA_PARALLEL, "mlp": "model", "heads": "model", "vocab": "model"}


def mesh_config(rules: Mapping[str, str] = DATA_PARALLEL) -> ml_collections.ConfigDict:
  """The `config.mesh` section every experiment config carries.

  Fields: `num_devices` (0 = all), `model_parallelism` (size of the `model` axis), `rules`
  (logical axis -> mesh axis or ''), and the multi-host settings: `distributed` calls
  `jax.distributed.initialize`, with `coordinator_address` / `num_processes` / `process_id`
  when set (else the cluster's environment: TPU pods, SLURM, Open MPI, ...), and
  `cpu_collectives` ('gloo' lets several CPU processes run collectives, as the tests do).
  """
  c = ml_collections.ConfigDict()
  c.num_devices = 0
  c.model_parallelism = 1
  c.rules = ml_collections.ConfigDict(dict(rules))
  c.distributed = False
  c.coordinator_address = ""
  c.num_processes = 0
  c.process_id = -1
  c.cpu_collectives = ""
  return c


def initialize_distributed(mesh_cfg: ml_collections.ConfigDict) -> None:
  """Joins a multi-host job when `mesh_cfg.distributed`; a no-op otherwise or if joined."""
  if not mesh_cfg.distributed or jax.distributed.is_initialized():
    return
  if mesh_cfg.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", mesh_cfg.cpu_collectives)
  kwargs = {}
  if mesh_cfg.coordinator_address:
    kwargs["coordinator_address"] = mesh_cfg.coordinator_address
  if mesh_cfg.num_processes:
    kwargs["num_processes"] = mesh_cfg.num_processes
  if mesh_cfg.process_id >= 0:
    kwargs["process_id"] = mesh_cfg.process_id
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(model_parallelism: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh `('data', 'model')` over all devices, `model` the fastest-varying axis."""
  devices = list(devices if devices is not None else jax.devices())
  if model_parallelism < 1 or len(devices) % model_parallelism:
    raise UserError(f"mesh.model_parallelism={model_parallelism} must divide the number of "
                    f"devices ({len(devices)}).")
  grid = np.asarray(devices).reshape(len(devices) // model_parallelism, model_parallelism)
  return Mesh(grid, MESH_AXES)


def from_config(mesh_cfg: ml_collections.ConfigDict) -> Mesh:
  """The mesh of `config.mesh` (joining the multi-host job first when it asks to)."""
  initialize_distributed(mesh_cfg)
  devices = jax.devices()
  if mesh_cfg.num_devices:
    if mesh_cfg.num_devices > len(devices):
      raise UserError(f"mesh.num_devices={mesh_cfg.num_devices} but only {len(devices)} "
                      f"devices are visible.")
    devices = devices[:mesh_cfg.num_devices]
  return make_mesh(mesh_cfg.model_parallelism, devices)


def rules_from_config(mesh_cfg: ml_collections.ConfigDict) -> tuple[tuple[str, str | None], ...]:
  """`config.mesh.rules` as flax's `(logical, mesh axis or None)` table."""
  rules = []
  for logical, axis in mesh_cfg.rules.items():
    if axis and axis not in MESH_AXES:
      raise UserError(f"mesh.rules.{logical}={axis!r} is not a mesh axis; use one of "
                      f"{MESH_AXES} or '' (replicated).")
    rules.append((logical, axis or None))
  return tuple(rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = ()) -> Iterator[None]:
  """Makes `mesh` and the logical `rules` current: activation constraints apply and the Pallas
  kernels run per `data` shard (`kernels._dispatch.map_batch_shards`)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def abstract_sharded_state(init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh,
                           rules: Rules) -> tuple[Any, Any]:
  """Shapes, dtypes and shardings of `init_fn(rng)`, without running it.

  Args:
    init_fn: `rng -> state` whose parameters (and hence optimizer moments) may hold
      `nn.LogicallyPartitioned` boxes; their logical axes are mapped by `rules`. Unboxed
      leaves are replicated.
    rng: the key `init_fn` will get.
    mesh, rules: the mesh and the logical-to-mesh rules table.

  Returns:
    `(abstract, shardings)`: the unboxed state as `ShapeDtypeStruct`s that carry their
    shardings (what a checkpoint restore needs), and the `NamedSharding` tree (for
    `jax.jit(out_shardings=)` and `init_sharded`).
  """
  boxed = jax.eval_shape(init_fn, rng)
  shardings = nn.unbox(nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  return abstract, shardings


def init_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array, shardings: Any) -> Any:
  """Runs `init_fn(rng)` straight into `shardings` (no full copy on one device first)."""
  return jax.jit(lambda key: nn.unbox(init_fn(key)), out_shardings=shardings)(rng)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P("data"))


def process_rows(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's contiguous slice of a global batch that every process loaded whole."""
  count, index = jax.process_count(), jax.process_index()
  if count == 1:
    return dict(batch)
  rows = next(iter(batch.values())).shape[0] // count
  return {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}


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
