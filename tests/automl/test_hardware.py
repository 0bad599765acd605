"""Hardware cost models: the reference table's indexing, the analytic formulas evaluated by
hand, and the device latency table (build, JSON round trip, estimate, mismatch errors)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.automl import hardware
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo, list_layers
from lite_jax.nn.quant import FULL_PRECISION


def _conv(index, c_in=64, c_out=64, kernel=3, side=16, groups=1):
  n_weights = kernel * kernel * c_in // groups * c_out
  return LayerInfo(f"conv{index}", "conv", c_in, c_out, kernel, 1, groups, side * side,
                   side * side, n_weights, n_weights * side * side, index)


def _dense(index, c_in=1024, c_out=1000):
  return LayerInfo(f"fc{index}", "dense", c_in, c_out, 1, 0, 1, 1, 1, c_in * c_out,
                   c_in * c_out, index)


# ------------------------------------------------------------------------------ lookup table


def _reference_table(num_layers=3):
  # Value 100 * layer + 10 * w + a at [layer, w - 1, a - 1]: every entry names its index.
  layer, w, a = np.meshgrid(np.arange(num_layers), np.arange(1, 9), np.arange(1, 9),
                            indexing="ij")
  return (100 * layer + 10 * w + a).astype(np.int64)


def test_lookup_table_indexes_layer_w_minus_1_a_minus_1_and_full_precision_as_7_bits(tmp_path):
  path = tmp_path / "table.npy"
  np.save(path, _reference_table())
  layers = [_conv(0), _conv(1), _dense(2)]
  cost = hardware.LookupTableCost.from_npy(path, layers)
  # The reference's first layer (w8, a = -1) reads a - 1 = -2: the 7-bit column.
  policy = [(8, FULL_PRECISION), (2, 3), (FULL_PRECISION, 8)]
  np.testing.assert_array_equal(cost.layer_costs(layers, policy), [87, 123, 278])
  assert cost.cost(layers, policy) == 87 + 123 + 278


@pytest.mark.parametrize("shape", [(3, 8, 7), (4, 8, 8), (3, 64)])
def test_lookup_table_with_wrong_shape_names_file_shape_and_expected(tmp_path, shape):
  path = tmp_path / "bad.npy"
  np.save(path, np.zeros(shape, np.int64))
  with pytest.raises(UserError) as error:
    hardware.LookupTableCost.from_npy(path, [_conv(0), _conv(1), _dense(2)])
  message = str(error.value)
  assert str(path) in message and str(list(shape)) in message and "[L, 8, 8]" in message


def test_lookup_table_rejects_bits_it_has_no_column_for():
  cost = hardware.LookupTableCost(_reference_table())
  with pytest.raises(UserError, match="9 bits"):
    cost.layer_costs([_conv(0), _conv(1), _dense(2)], [(8, 8), (9, 8), (8, 8)])


# --------------------------------------------------------------------------- analytic models


def _sweep(model, layer):
  return np.array([[model.cost([layer], [(w, a)]) for a in range(1, 9)] for w in range(1, 9)])


@pytest.mark.parametrize("model", [hardware.BitSerialCost("edge"), hardware.BitSerialCost("cloud"),
                                   hardware.BitFusionCost("latency"),
                                   hardware.BitFusionCost("energy"), hardware.SizeCost()])
@pytest.mark.parametrize("layer", [_conv(0), _conv(0, groups=64), _dense(0)])
def test_analytic_costs_do_not_decrease_with_bits(model, layer):
  costs = _sweep(model, layer)
  assert (costs > 0).all()
  assert (np.diff(costs, axis=0) >= 0).all() and (np.diff(costs, axis=1) >= 0).all()
  assert costs[7, 7] > costs[0, 0]


def test_bit_serial_edge_latency_by_hand():
  cost = hardware.BitSerialCost("edge")  # 8 x 256 x 8 array, 200 MHz, 4.26 GB/s, batch 1
  conv = _conv(0)  # GEMM M=256, K=576, N=64: 32 * 3 * 8 = 768 tiles, compute-bound
  assert cost.cost([conv], [(8, 8)]) == pytest.approx(1e3 * 768 * 64 / 200e6)
  assert cost.cost([conv], [(8, 8)]) / cost.cost([conv], [(4, 4)]) == pytest.approx(4)
  fc = _dense(0)  # 1024 x 1000 weights: memory-bound, bytes halve from 8 to 4 bits
  assert cost.cost([fc], [(8, 8)]) == pytest.approx(1e3 * (2024 + 1024000) / 4.26e9)
  assert cost.cost([fc], [(8, 8)]) / cost.cost([fc], [(4, 4)]) == pytest.approx(2)


def test_bit_serial_depthwise_uses_one_column_of_the_array():
  cost = hardware.BitSerialCost("edge")
  # 64 groups of M=256, K=9, N=1: 64 * 32 * 1 * 1 tiles, each w * a cycles.
  depthwise = _conv(0, groups=64)
  assert cost.compute_ms(depthwise, 8, 8) == pytest.approx(1e3 * 64 * 32 * 64 / 200e6)


def test_bit_fusion_latency_and_energy_by_hand():
  conv = _conv(0)  # 9,437,184 MACs per image, batch 16
  macs, bricks_8, bricks_4 = 16 * 9437184, 16, 4
  latency = hardware.BitFusionCost("latency")
  assert latency.cost([conv], [(8, 8)]) == pytest.approx(
      1e3 * macs * bricks_8 / (16 * 512 * 500e6))
  assert latency.cost([conv], [(8, 8)]) / latency.cost([conv], [(4, 4)]) == pytest.approx(4)
  # w3a5 occupies ceil(3/2) * ceil(5/2) = 6 bricks, as many as w4a6.
  assert latency.cost([conv], [(3, 5)]) == pytest.approx(latency.cost([conv], [(4, 6)]))
  energy = hardware.BitFusionCost("energy")
  dram_bytes = lambda bits: (16 * 2 * 256 * 64 * bits + 36864 * bits) / 8
  expected = [1e-9 * (macs * bricks * 0.23 / 16 + dram_bytes(bits) * 160)
              for bits, bricks in ((8, bricks_8), (4, bricks_4))]
  assert energy.unit == "mJ"
  assert energy.cost([conv], [(8, 8)]) == pytest.approx(expected[0])
  assert energy.cost([conv], [(8, 8)]) / energy.cost([conv], [(4, 4)]) == pytest.approx(
      expected[0] / expected[1])


def test_accelerators_run_an_unquantized_operand_in_their_8_bit_mode():
  layers = [_conv(0), _dense(1)]
  for cost in (hardware.BitSerialCost("edge"), hardware.BitFusionCost("energy")):
    assert cost.cost(layers, [(8, FULL_PRECISION), (FULL_PRECISION, 4)]) == pytest.approx(
        cost.cost(layers, [(8, 8), (8, 4)]))


def test_size_is_weight_bytes_and_full_precision_is_four_bytes():
  layers = [_conv(0), _dense(1)]
  cost = hardware.SizeCost()
  assert cost.unit == "bytes"
  assert cost.cost(layers, [(4, 8), (FULL_PRECISION, 8)]) == 36864 / 2 + 1024000 * 4


def test_policy_length_must_match_layers():
  with pytest.raises(UserError, match="2 .* pairs but the model has 1"):
    hardware.SizeCost().cost([_conv(0)], [(8, 8), (8, 8)])


# ------------------------------------------------------------------------ device latency table


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), strides=(2, 2), use_bias=False, name="conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
    return nn.Dense(4, name="fc")(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def tiny():
  model = _Tiny()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  variables = model.init(jax.random.key(1), x)
  layers = list_layers(model, variables, x)
  table = hardware.build_latency_table(layers, batch_size=2, repeats=2, warmup=1, model=model,
                                       variables=variables, x=x)
  return model, variables, x, layers, table


def test_table_times_every_layer_at_every_precision(tiny):
  _, _, _, layers, table = tiny
  assert [e.path for e in table.entries] == ["conv", "fc"]
  assert table.batch_size == 2 and table.platform == jax.devices()[0].platform
  assert table.dtypes["int8"] == "int8 x int8 -> int32"
  for entry in table.entries:
    assert set(entry.ms) == {"f32", "bf16", "int8"}
    assert all(t > 0 for t in entry.ms.values()) and entry.stand_in_ms > 0
  assert table.other_ms > 0


def test_table_json_round_trip(tiny, tmp_path):
  _, _, _, layers, table = tiny
  table.save(tmp_path / "table.json")
  assert hardware.LatencyTable.load(tmp_path / "table.json", layers) == table


def test_table_estimate_is_other_plus_chosen_entries_over_their_stand_ins(tiny):
  _, _, _, layers, table = tiny
  conv, fc = table.entries
  policy = [(8, 8), (FULL_PRECISION, 8)]  # int8, f32
  expected = (table.other_ms + max(conv.ms["int8"] - conv.stand_in_ms, 0)
              + max(fc.ms["f32"] - fc.stand_in_ms, 0))
  assert table.cost(layers, policy) == pytest.approx(expected)
  assert table.precisions(policy) == {"conv": "int8", "fc": "f32"}


@pytest.mark.parametrize("bits,precision", [((8, 8), "int8"), ((2, 5), "int8"),
                                            ((8, 16), "bf16"), ((16, 16), "bf16"),
                                            ((8, 17), "f32"),
                                            ((8, FULL_PRECISION), "f32")])
def test_precision_for(bits, precision):
  assert hardware.LatencyTable.precision_for(*bits) == precision


def test_loading_a_table_for_another_model_is_one_sentence(tiny, tmp_path):
  _, _, _, layers, table = tiny
  table.save(tmp_path / "table.json")
  wider = [layers[0], LayerInfo("fc", "dense", 8, 5, 1, 0, 1, 1, 1, 40, 40, 1)]
  with pytest.raises(UserError, match=r"table\.json' was built for another model: its layer 1"):
    hardware.LatencyTable.load(tmp_path / "table.json", wider)
  with pytest.raises(UserError, match="has 2 layers but the model has 1"):
    hardware.LatencyTable.load(tmp_path / "table.json", layers[:1])


def test_table_without_a_precision_says_to_rebuild(tiny):
  _, _, _, layers, _ = tiny
  table = hardware.build_latency_table(layers, batch_size=2, precisions=("f32",), repeats=1,
                                       warmup=0)
  assert table.other_ms == 0
  with pytest.raises(UserError, match="no 'int8' times"):
    table.cost(layers, [(8, 8), (8, 8)])


def test_measure_model_latency_runs_mixed_precisions(tiny):
  model, variables, x, layers, table = tiny
  ms = hardware.measure_model_latency(model, variables, x,
                                      table.precisions([(8, 8), (16, 16)]), repeats=2)
  assert ms > 0
  with pytest.raises(UserError, match="not conv/dense layers"):
    hardware.measure_model_latency(model, variables, x, {"bn": "f32"}, repeats=1)


def test_intercepted_layers_compute_the_layer_at_each_precision(tiny):
  # The op a latency is measured for is the layer's own computation at that precision.
  model, variables, x, _, _ = tiny
  reference = model.apply(variables, x)
  for precision, tolerance in (("f32", 1e-5), ("bf16", 5e-2), ("int8", 1e-1)):
    stored = hardware._at_precisions(variables, {"conv": precision, "fc": precision})

    def at(next_fun, args, kwargs, context, precision=precision):
      if hardware._is_layer_call(context):
        return hardware._layer_at_precision(context.module, args[0], precision)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(at):
      out = model.apply(stored, x)
    np.testing.assert_allclose(out, reference, atol=tolerance * np.abs(reference).max())


class _Depthwise(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), strides=(2, 2), padding=1, use_bias=False, name="dw",
                feature_group_count=8)(x)
    return nn.Dense(4, name="fc")(jnp.mean(nn.relu(x), axis=(1, 2)))


@pytest.mark.parametrize("precision", ["f32", "bf16", "int8"])
def test_table_times_the_function_the_model_substitutes(precision):
  # A table entry is only comparable with the whole model if both run the same function: the
  # layer from its geometry (`_layer_call`) on the layer's input and stored kernel must give
  # what the model computes for that layer (bias excluded), in the input's dtype.
  model = _Depthwise()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
  variables = model.init(jax.random.key(1), x)
  layers = list_layers(model, variables, x)
  stored = hardware._at_precisions(variables, {l.path: precision for l in layers})
  seen = {}

  def record(next_fun, args, kwargs, context):
    if hardware._is_layer_call(context):
      out = hardware._layer_at_precision(context.module, args[0], precision)
      seen["/".join(context.module.path)] = (args[0], out)
      return out
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(stored, x)
  rng = np.random.default_rng(0)
  for layer in layers:
    fn, _ = hardware._layer_call(layer, precision, 2, jnp.float32, rng)
    params = stored["params"][layer.path]
    layer_in, layer_out = seen[layer.path]
    got = fn(layer_in, params["kernel"], params.get("kernel_scale"))
    assert got.dtype == layer_in.dtype == jnp.float32
    np.testing.assert_allclose(got + params.get("bias", 0), layer_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hardware.chained(fn, hardware._runs_fused(
        hardware._geometry(layer)))(layer_in, params["kernel"], params.get("kernel_scale")),
                               got, rtol=1e-6, atol=1e-6)


def test_int8_depthwise_accumulates_in_int32_like_a_grouped_conv():
  # The shifted multiply-adds widen int8 operands; a grouped int8 conv is the reference.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(-127, 128, (2, 9, 9, 16)), jnp.int8)
  kernel = jnp.asarray(rng.integers(-127, 128, (3, 3, 1, 16)), jnp.int8)
  padding = [(1, 1), (1, 1)]
  got = hardware._conv(x, kernel, (2, 2), padding, (1, 1), 16)
  expected = jax.lax.conv_general_dilated(
      x, kernel, (2, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=16, preferred_element_type=jnp.int32)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, expected)
