"""Tests for lite_jax.core: checkpoints, schedules, MAC counting, errors, mesh."""

import asyncio
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict
from orbax.checkpoint._src.path import temporary_paths

from lite_jax import core
from lite_jax.core import macs, train
from lite_jax.core.errors import UserError


def _state(width=4, seed=0):
  params = {"w": jax.random.normal(jax.random.PRNGKey(seed), (3, width)), "b": jnp.zeros(width)}
  return core.TrainState.create(params, optax.adam(1e-3), jax.random.PRNGKey(1))


def test_checkpoint_round_trip_with_data_state(tmp_path):
  ckpt = core.Checkpointer(tmp_path / "ckpt", max_to_keep=2, async_save=False)
  state = _state()
  state = state.apply_gradients(jax.tree.map(jnp.ones_like, state.params))
  ckpt.save(7, state, data_state={"position": 12}, config={"d": 4})
  ckpt.close()
  fresh = core.Checkpointer(tmp_path / "ckpt")  # as a restarted process would
  restored, data_state = fresh.restore_latest(core.abstract_like(state))
  assert data_state == {"position": 12}
  assert fresh.restore_config() == {"d": 4}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_keeps_latest_n_and_averages(tmp_path):
  ckpt = core.Checkpointer(tmp_path, max_to_keep=2, async_save=False)
  state = _state()
  for step, value in [(1, 1.0), (2, 2.0), (3, 4.0)]:
    ckpt.save(step, state.replace(params=jax.tree.map(lambda x: jnp.full_like(x, value),
                                                      state.params)))
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]
  averaged = ckpt.average_params(core.abstract_like(state), last_n=2)
  np.testing.assert_allclose(averaged["w"], 3.0)


def test_checkpoint_from_other_model_is_a_user_error(tmp_path):
  ckpt = core.Checkpointer(tmp_path, async_save=False)
  ckpt.save(1, _state(width=4))
  ckpt.close()
  with pytest.raises(core.UserError, match="does not fit this model"):
    core.Checkpointer(tmp_path).restore_latest(core.abstract_like(_state(width=5)))


def test_closing_a_checkpointer_waits_for_the_cleanup_it_started(tmp_path, monkeypatch):
  """Opening a checkpoint folder starts orbax's background cleanup of unfinished saves, which
  orbax's own close() does not await: a process that found no checkpoint and exited at once
  printed that thread's "cannot schedule new futures" traceback after its error line. A slow
  cleanup here shows that `close` waits for it."""
  finished = []

  async def slow_cleanup(*args, **kwargs):
    await asyncio.sleep(0.5)
    finished.append(True)

  monkeypatch.setattr(temporary_paths, "cleanup_temporary_paths", slow_cleanup)
  with pytest.raises(core.UserError, match="no checkpoint in .*; train first."):
    core.restore_finished(tmp_path / "checkpoints", {"w": 0}, "train")
  assert finished


def test_cosine_schedule_matches_fairseq_recipe():
  schedule = train.warmup_cosine_schedule(peak_lr=1e-3, warmup_steps=5000, total_steps=50000)
  assert float(schedule(0)) == pytest.approx(1e-7)
  assert float(schedule(5000)) == pytest.approx(1e-3)
  assert float(schedule(27500)) == pytest.approx((1e-3 + 1e-7) / 2, rel=1e-5)
  assert float(schedule(50000)) == pytest.approx(1e-7, abs=1e-12)


def test_inverse_sqrt_schedule():
  schedule = train.inverse_sqrt_schedule(peak_lr=5e-4, warmup_steps=4000)
  assert float(schedule(4000)) == pytest.approx(5e-4)
  assert float(schedule(16000)) == pytest.approx(2.5e-4)
  assert float(schedule(2000)) == pytest.approx(1e-7 + (5e-4 - 1e-7) / 2)


def test_gradient_accumulation_equals_big_batch():
  config = ConfigDict(dict(learning_rate=0.1, schedule="constant", clip_norm=0.0,
                           weight_decay=0.0, b1=0.9, b2=0.98, eps=1e-8, grad_accum_steps=2))
  tx, _ = train.make_optimizer(config)
  config.grad_accum_steps = 1
  tx_big, _ = train.make_optimizer(config)
  params = jnp.ones(3)
  g1, g2 = jnp.array([1.0, 2.0, 3.0]), jnp.array([3.0, 0.0, -1.0])
  state = tx.init(params)
  _, state = tx.update(g1, state, params)
  updates, _ = tx.update(g2, state, params)
  big_updates, _ = tx_big.update((g1 + g2) / 2, tx_big.init(params), params)
  np.testing.assert_allclose(updates, big_updates, rtol=1e-6)


def _sgd(**fields):
  return ConfigDict(dict(optimizer="sgd", momentum=0.9, learning_rate=0.5, schedule="cosine",
                         warmup_steps=0, warmup_init_lr=0.0, min_lr=0.01, total_updates=4,
                         weight_decay=0.0, clip_norm=0.0, grad_accum_steps=1) | fields)


def _run(tx, state, grads, params):
  out = []
  for g in grads:
    updates, state = tx.update(g, state, params)
    out.append(np.asarray(updates))
  return out


def test_nesterov_sgd_matches_pytorch_formula():
  tx, schedule = train.make_optimizer(_sgd(nesterov=True))
  params = jnp.zeros(2)
  grads = [jnp.array([1.0, -2.0]), jnp.array([0.5, 1.0]), jnp.array([-1.0, 0.0])]
  velocity, expected = np.zeros(2), []
  for i, g in enumerate(grads):  # torch.optim.SGD(nesterov=True), dampening 0
    velocity = 0.9 * velocity + np.asarray(g)
    expected.append(-float(schedule(i)) * (np.asarray(g) + 0.9 * velocity))
  np.testing.assert_allclose(_run(tx, tx.init(params), grads, params), expected, rtol=1e-6)


def test_schedule_in_state_equals_the_schedule_and_serves_any_length():
  params = jnp.zeros(2)
  grads = [jnp.array([1.0, -2.0])] * 6
  plain, _ = train.make_optimizer(_sgd(nesterov=True))
  in_state, _ = train.make_optimizer(_sgd(nesterov=True, schedule_in_state=True,
                                          learning_rate=123.0, total_updates=99))
  state = train.with_schedule(in_state.init(params), peak=0.5, total=4, floor=0.01)
  np.testing.assert_allclose(_run(in_state, state, grads, params),
                             _run(plain, plain.init(params), grads, params), rtol=1e-6)
  # Another peak and length: same transformation object, a different state.
  plain_longer, _ = train.make_optimizer(_sgd(nesterov=True, learning_rate=0.2,
                                              total_updates=6))
  state = train.with_schedule(in_state.init(params), peak=0.2, total=6, floor=0.01)
  np.testing.assert_allclose(_run(in_state, state, grads, params),
                             _run(plain_longer, plain_longer.init(params), grads, params),
                             rtol=1e-6)
  with pytest.raises(UserError, match="schedule_in_state needs"):
    train.make_optimizer(_sgd(schedule_in_state=True, warmup_steps=2))


def test_check_finite():
  core.check_finite(1.0, 3)
  with pytest.raises(core.NonFiniteError, match="step 3"):
    core.check_finite(float("nan"), 3)
def test_count_macs_against_closed_forms():
  f32 = jnp.float32
  dense = lambda x, w: jnp.einsum("btd,df->btf", x, w)
  assert core.count_macs(dense, jax.ShapeDtypeStruct((2, 3, 4), f32),
                         jax.ShapeDtypeStruct((4, 5), f32)) == 2 * 3 * 4 * 5
  # Batched attention-style matmul: [b, h, q, d] x [b, h, k, d] -> b*h*q*k*d.
  scores = lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k)
  assert core.count_macs(scores, jax.ShapeDtypeStruct((2, 4, 5, 8), f32),
                         jax.ShapeDtypeStruct((2, 4, 7, 8), f32)) == 2 * 4 * 5 * 7 * 8
  # Depthwise conv: out elements x kernel taps.
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=6)
  assert core.count_macs(conv, jax.ShapeDtypeStruct((2, 10, 6), f32),
                         jax.ShapeDtypeStruct((3, 1, 6), f32)) == 2 * 10 * 6 * 3
  assert core.count_macs(conv, jax.ShapeDtypeStruct((2, 10, 6), f32),
                         jax.ShapeDtypeStruct((3, 1, 6), f32),
                         convention=macs.LITE_TRANSFORMER) == 0
  # Transposed conv (input dilation) counted at output resolution.
  tconv = lambda x, w: jax.lax.conv_transpose(x, w, (2, 2), "SAME",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out = jax.eval_shape(tconv, jax.ShapeDtypeStruct((1, 4, 4, 3), f32),
                       jax.ShapeDtypeStruct((3, 3, 3, 8), f32))
  assert core.count_macs(tconv, jax.ShapeDtypeStruct((1, 4, 4, 3), f32),
                         jax.ShapeDtypeStruct((3, 3, 3, 8), f32)) == np.prod(out.shape) * 27
  # Loops: scan multiplies by its length; cond counts the dearer branch.
  looped = lambda x, w: jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)[0]
  assert core.count_macs(jax.jit(looped), jax.ShapeDtypeStruct((2, 4), f32),
                         jax.ShapeDtypeStruct((4, 4), f32)) == 3 * 2 * 4 * 4
  branchy = lambda p, x, w: jax.lax.cond(p, lambda: x @ w @ w, lambda: x @ w)
  assert core.count_macs(branchy, True, jax.ShapeDtypeStruct((2, 4), f32),
                         jax.ShapeDtypeStruct((4, 4), f32)) == 2 * 2 * 4 * 4


def test_counted_calls_convention():
  @macs.counted_call
  def modulate(x, y):
    return x * y + x

  conv = macs.MacsConvention("with_modulate", counted_calls=(("modulate", 2),))
  f = lambda x, y, w: modulate(x, y) @ w + x * y  # The bare multiply is never charged.
  args = jnp.ones((3, 5)), jnp.ones((3, 5)), jnp.ones((5, 5))
  assert core.count_macs(f, *args, convention=conv) == 2 * 15 + 3 * 5 * 5
  assert core.count_macs(f, *args) == 3 * 5 * 5


def test_make_mesh_and_shard_batch():
  mesh = core.make_mesh(model_parallelism=2)
  assert dict(mesh.shape) == {"data": jax.device_count() // 2, "model": 2}
  batch = core.shard_batch({"x": np.arange(8 * 3).reshape(8, 3)}, core.make_mesh())
  assert batch["x"].shape == (8, 3)
  assert len(batch["x"].sharding.device_set) == jax.device_count()
  with pytest.raises(core.UserError, match="does not split"):
    core.shard_batch({"x": np.zeros((3, 2))}, core.make_mesh())
  with pytest.raises(core.UserError, match="must divide"):
    core.make_mesh(model_parallelism=3)


def test_metric_writer_and_result_line(tmp_path, capsys):
  writer = core.MetricWriter(tmp_path, tensorboard=False)
  writer.write(3, {"loss": jnp.float32(1.5), "bad": float("nan")})
  writer.close()
  assert core.read_metrics(tmp_path) == [
      {"step": 3, "time": core.read_metrics(tmp_path)[0]["time"], "loss": 1.5, "bad": "nan"}]
  core.print_result({"bleu": np.float32(51.25)})
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"bleu": 51.25}


def test_sharded_state_follows_the_rules_table():
  import flax.linen as nn
  from jax.sharding import PartitionSpec as P

  model = nn.Dense(16, kernel_init=nn.with_logical_partitioning(
      nn.initializers.lecun_normal(), ("embed", "mlp")))
  tx = optax.adam(1e-3)
  init_fn = lambda key: core.TrainState.create(
      model.init(key, jnp.ones((1, 8)))["params"], tx, key)
  mesh = core.make_mesh()
  key = jax.random.PRNGKey(0)
  for table, kernel_spec in [(core.mesh.DATA_PARALLEL, P(None, None)),
                             (core.mesh.FSDP, P("data", None))]:
    rules = core.mesh.rules_from_config(core.mesh_config(table))
    abstract, shardings = core.abstract_sharded_state(init_fn, key, mesh, rules)
    assert abstract.params["kernel"].shape == (8, 16)
    assert abstract.params["kernel"].sharding.spec == kernel_spec
    state = core.init_sharded(init_fn, key, shardings)
    # Adam's moments are laid out like the parameters they belong to.
    assert state.opt_state[0].mu["kernel"].sharding.spec == kernel_spec
    assert state.params["kernel"].sharding.spec == kernel_spec


@pytest.mark.parametrize("min_bytes", [None, 0])
def test_small_replicated_arrays_are_saved_without_compiling_slices(tmp_path, monkeypatch,
                                                                   caplog, min_bytes):
  """Below `REPLICA_PARALLEL_MIN_BYTES` per replica one replica writes a replicated array whole:
  orbax's replica-parallel split (forced here with 0) compiles an eager `slice` per shape.
  Otherwise the layout is orbax's default one, its per-array metadata included."""
  from lite_jax.core import checkpoint  # pylint: disable=g-import-not-at-top
  if min_bytes is not None:
    monkeypatch.setattr(checkpoint, "REPLICA_PARALLEL_MIN_BYTES", min_bytes)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Shapes no other test uses, so no slice program is in jax's caches already.
  state = {f"w{i}": jax.device_put(jnp.full((6, 5 + i), float(i)), replicated)
           for i in range(3 if min_bytes is None else 1)}
  with caplog.at_level("WARNING"), jax.log_compiles(True):
    with core.Checkpointer(tmp_path, async_save=False) as ckpt:
      ckpt.save(1, state)
      restored, _ = ckpt.restore(1, core.abstract_like(state))
  slices = [r for r in caplog.records if "Compiling jit(slice)" in r.getMessage()]
  assert (len(slices) == 0) == (min_bytes is None), [r.getMessage() for r in slices]
  assert (tmp_path / "1" / "state" / "array_metadatas").is_dir()
  for name, array in state.items():
    np.testing.assert_array_equal(restored[name], array)
    assert restored[name].sharding.is_equivalent_to(replicated, array.ndim)
