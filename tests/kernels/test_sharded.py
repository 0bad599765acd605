"""The Pallas paths of the voxel ops under a data-parallel mesh: each device runs the kernel on
its own samples (`kernels._dispatch.map_batch_shards`), with the same values and gradients as
one device and no collective in the compiled program (interpret mode, 8 fake CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kernels import _dispatch
from kernels import devoxelize as devox
from kernels import voxelize as vox

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def mesh_of(data: int, model: int) -> Mesh:
  if jax.device_count() < data * model:
    pytest.skip(f"needs {data * model} devices")
  return Mesh(np.asarray(jax.devices()[:data * model]).reshape(data, model), ("data", "model"))


def loss(features, coords):
  """Voxelize -> scale -> devoxelize, through both kernels and both VJPs."""
  voxels, norm_coords = vox.voxelize(features, coords, 4, normalize=True, interpret=True)
  out = devox.devoxelize_trilinear(2.0 * voxels, norm_coords, interpret=True)
  return jnp.sum(out * features), out


def test_kernels_run_per_data_shard_with_one_device_results():
  mesh = mesh_of(4, 2)
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(8, 30, 8)), jnp.float32)
  coords = jnp.asarray(rng.uniform(-1, 1, (8, 30, 3)), jnp.float32)
  (want_loss, want_out), want_grad = jax.value_and_grad(loss, has_aux=True)(features, coords)

  batch = NamedSharding(mesh, P("data"))
  args = jax.device_put(features, batch), jax.device_put(coords, batch)
  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  with jax.set_mesh(mesh):
    (got_loss, got_out), got_grad = grad_fn(*args)
    hlo = grad_fn.lower(*args).compile().as_text()
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(got_out, want_out, atol=1e-5)
  np.testing.assert_allclose(got_grad, want_grad, atol=1e-5)
  assert got_out.sharding.spec[0] == "data"
  # The final sum over the batch is the only cross-device reduction the program needs.
  kernel_part = jax.jit(lambda f, c: loss(f, c)[1])
  with jax.set_mesh(mesh):
    kernel_hlo = kernel_part.lower(*args).compile().as_text()
  assert not [c for c in COLLECTIVES if c in kernel_hlo], "the kernels exchanged data"
  assert "all-reduce" in hlo  # the loss's sum: the check above can see a collective


def test_without_a_mesh_or_with_an_odd_batch_the_op_runs_whole():
  calls = []

  def fn(x):
    calls.append(x.shape)
    return x + 1

  x = jnp.zeros((6, 2))
  _dispatch.map_batch_shards(fn, x)
  with jax.set_mesh(mesh_of(4, 2)):
    jax.jit(lambda x: _dispatch.map_batch_shards(fn, x))(x)  # 6 rows over 4 shards
    jax.jit(lambda x: _dispatch.map_batch_shards(fn, x))(jnp.zeros((8, 2)))
  assert calls == [(6, 2), (6, 2), (2, 2)]
