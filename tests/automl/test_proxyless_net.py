"""ProxylessNAS networks: the search space against the reference's shapes and zero rule, derived
networks layer by layer, the released networks against their published sizes, and block
latency tables (built, saved, loaded, read from the reference's yaml format, E[latency]
arithmetic by hand)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.automl import proxyless_net as P
from lite_jax.automl.classifiers import profile_classifier
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import list_layers

# Two searchable blocks: 8 -> 16 stride 2 (no zero), 16 -> 16 stride 1 (zero allowed).
TINY = P.SearchSpace(image_size=8, stem_channels=8, stem_stride=1, first_channels=8,
                     stages=((16, 2, 2),), last_channels=16, candidates=("3x3_MBConv3", "zero"))


def test_paper_space_has_21_blocks_the_reference_shapes_and_zero_rule():
  space = P.SearchSpace()
  blocks = space.blocks()
  assert len(blocks) == 21
  # super_proxyless.py: 32 -> MBConv1 -> 16 at 112x112, stages 24/40/80/96/192/320.
  assert (blocks[0].c_in, blocks[0].c_out, blocks[0].stride, blocks[0].in_size) == (16, 24, 2, 112)
  assert [b.c_out for b in blocks] == [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
  assert [b.index for b in blocks if b.stride == 2] == [0, 4, 8, 16]
  assert [b.in_size for b in blocks[::4]] == [112, 56, 28, 14, 14, 7]
  assert space.final_size == 7
  zero_allowed = [b.index for b in blocks if b.zero_allowed]
  # Stride 1 and same width: every block but each stage's first (block 12: 80 -> 96 at
  # stride 1 changes width; block 20: 192 -> 320).
  assert zero_allowed == [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19]
  for b in blocks:
    assert space.candidates_for(b) == (P.OPS if b.zero_allowed else P.OPS[:-1])
  mask = space.candidate_mask()
  assert mask.shape == (21, 7) and mask[:, :6].all()
  np.testing.assert_array_equal(np.flatnonzero(mask[:, 6]), zero_allowed)


def test_demo_space_is_small_with_stride_1_stem():
  space = P.SearchSpace.demo()
  blocks = space.blocks()
  assert space.image_size == 32 and space.stem_stride == 1 and len(blocks) == 6
  assert [b.index for b in blocks if b.zero_allowed] == [1, 3, 5]
  assert "7x7_MBConv6" not in space.candidates and "zero" in space.candidates


@pytest.mark.parametrize("name, expected", [("3x3_MBConv3", (3, 3)), ("7x7_MBConv6", (7, 6)),
                                            ("5x5_MBConv1", (5, 1)), ("zero", None)])
def test_parse_op(name, expected):
  assert P.parse_op(name) == expected
  if expected is not None:
    assert P.op_name(*expected) == name


@pytest.mark.parametrize("name", ["3x5_MBConv3", "4x4_MBConv3", "MBConv3", "Zero", "identity"])
def test_parse_op_rejects_unknown_names(name):
  with pytest.raises(UserError, match="unknown ProxylessNAS op"):
    P.parse_op(name)


def test_round_channels_is_the_references_make_divisible():
  # make_divisible(v, 8): nearest multiple of 8, >= 8, one step up when more than 10% lost.
  assert [P.round_channels(v) for v in (24 * 1.3, 16 * 0.35, 1280 * 1.4, 12, 19.9, 44)] == [
      32, 8, 1792, 16, 24, 48]
  assert P.round_channels(9.5) == 16 > 9.5 * 0.9  # nearest (8) loses 16%: one step up.
  wide = P.SearchSpace(width=1.4)
  assert (wide.stem_width, wide.first_width, wide.head_width) == (48, 24, 1792)
  assert [b.c_out for b in wide.blocks()][::4] == [32, 56, 112, 136, 272, 448]
  assert P.SearchSpace(width=0.5).head_width == 1280  # the head only grows


def test_space_validates_its_candidates():
  with pytest.raises(UserError, match="unknown ProxylessNAS op"):
    P.SearchSpace(candidates=("3x3_MBConv3", "9x9"))
  with pytest.raises(UserError, match="at least one MBConv"):
    P.SearchSpace(candidates=("zero",))


def test_derive_builds_the_chosen_blocks_and_drops_zero_blocks():
  space = P.SearchSpace.demo()
  choices = ("5x5_MBConv6", "zero", "3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "zero")
  net = space.derive(choices, num_classes=10)
  assert net.blocks == ((5, 6, 16, 2), (3, 3, 24, 2), (3, 6, 24, 1), (5, 3, 32, 2))
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(net.init, jax.random.key(0), images)
  layers = list_layers(net, variables, images)
  got = [(l.path, l.c_in, l.c_out, l.kernel, l.stride, l.groups, l.in_hw) for l in layers]
  # (path, c_in, c_out, kernel, stride, groups, input positions), by hand from the space.
  expected = [("stem/conv", 3, 16, 3, 1, 1, 1024),
              ("first/depthwise/conv", 16, 16, 3, 1, 16, 1024),
              ("first/project/conv", 16, 8, 1, 1, 1, 1024),
              ("blocks_0/expand/conv", 8, 48, 1, 1, 1, 1024),
              ("blocks_0/depthwise/conv", 48, 48, 5, 2, 48, 1024),
              ("blocks_0/project/conv", 48, 16, 1, 1, 1, 256),
              ("blocks_1/expand/conv", 16, 48, 1, 1, 1, 256),
              ("blocks_1/depthwise/conv", 48, 48, 3, 2, 48, 256),
              ("blocks_1/project/conv", 48, 24, 1, 1, 1, 64),
              ("blocks_2/expand/conv", 24, 144, 1, 1, 1, 64),
              ("blocks_2/depthwise/conv", 144, 144, 3, 1, 144, 64),
              ("blocks_2/project/conv", 144, 24, 1, 1, 1, 64),
              ("blocks_3/expand/conv", 24, 72, 1, 1, 1, 64),
              ("blocks_3/depthwise/conv", 72, 72, 5, 2, 72, 64),
              ("blocks_3/project/conv", 72, 32, 1, 1, 1, 16),
              ("head/conv", 32, 128, 1, 1, 1, 16),
              ("classifier", 128, 10, 1, 0, 1, 1)]
  assert got == expected
  assert net.signed_input_layers() == frozenset(
      {f"blocks_{i}/expand/conv" for i in range(4)} | {"head/conv"})
  assert jax.eval_shape(net.apply, variables, images).shape == (2, 10)


def test_derived_block_adds_its_identity_shortcut_exactly_where_zero_is_allowed():
  net = TINY.derive(("3x3_MBConv3", "3x3_MBConv3"), num_classes=3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3)), jnp.float32)
  variables = jax.jit(net.init)(jax.random.key(0), x)
  _, state = jax.jit(functools.partial(net.apply, capture_intermediates=True,
                                       mutable=["intermediates"]))(variables, x)
  inner = state["intermediates"]
  block_in, block_out = inner["blocks_0"]["__call__"][0], inner["blocks_1"]["__call__"][0]
  project = inner["blocks_1"]["project"]["__call__"][0]
  np.testing.assert_allclose(block_out, block_in + project, rtol=1e-6)
  assert inner["blocks_0"]["__call__"][0].shape == (1, 4, 4, 16)  # stride 2: no shortcut


@pytest.mark.parametrize("choices, match", [
    (("zero", "zero"), "cannot be 'zero'"), (("3x3_MBConv3",), "has 2 choices"),
    (("3x3_MBConv3", "5x5_MBConv3"), "candidates are")])
def test_derive_rejects_choices_outside_the_space(choices, match):
  with pytest.raises(UserError, match=match):
    TINY.derive(choices, num_classes=3)


# Published by the reference's logs/imagenet_{gpu,cpu,mobile}_log.txt ("Total training params"
# 7.12M / 4.36M / 4.08M, "Total FLOPs" 465.3M / 439.2M / 320.4M, i.e. multiply-adds of convs and
# FC at 224x224), rounded to 0.01M params and 0.1M MACs: the tolerance is half that last digit.
# The exact parameter counts are those osmr/imgclsmob's port asserts for the same configs.
@pytest.mark.parametrize("name, params, exact_params, macs", [
    ("proxyless_gpu", 7.12e6, 7119848, 465.3e6),
    ("proxyless_cpu", 4.36e6, 4361648, 439.2e6),
    ("proxyless_mobile", 4.08e6, 4080512, 320.4e6)])
def test_released_networks_have_their_published_params_and_macs(name, params, exact_params, macs):
  profile = profile_classifier(P.released(name), 224)
  assert profile["params"] == pytest.approx(params, abs=0.005e6)
  assert profile["params"] == exact_params
  assert profile["macs"] == pytest.approx(macs, abs=0.05e6)
  assert P.RELEASED[name]["params"] == params and P.RELEASED[name]["macs"] == macs


def test_released_rejects_unknown_names():
  with pytest.raises(UserError, match="proxyless_gpu"):
    P.released("proxyless_tpu")


# ------------------------------------------------------------------------------ latency tables


def _hand_table(space, num_classes=10, fixed_ms=1.5):
  """A table whose entry for block b, op (k, e) is b + k / 10 + e / 100."""
  entries = {}
  for b in space.blocks():
    for op in space.candidates_for(b):
      if op != "zero":
        k, e = P.parse_op(op)
        entries[P.block_key(b, op)] = b.index + k / 10 + e / 100
  return P.BlockLatencyTable(entries=entries, fixed_ms=fixed_ms,
                             fixed=P.fixed_keys(space, num_classes), batch_size=1,
                             device={"platform": "hand"})


def test_expected_latency_is_fixed_plus_probability_weighted_entries():
  space = P.SearchSpace.demo()
  table = _hand_table(space)
  mask = space.candidate_mask()
  probs = np.random.default_rng(0).uniform(size=mask.shape) * mask
  probs /= probs.sum(1, keepdims=True)
  expected = 1.5
  for b, row in zip(space.blocks(), probs):
    for op, p in zip(space.candidates, row):
      if op != "zero":
        k, e = P.parse_op(op)
        expected += p * (b.index + k / 10 + e / 100)
  assert table.expected_ms(space, probs) == pytest.approx(expected, rel=1e-12)
  matrix = table.matrix(space)
  assert matrix.shape == mask.shape and (matrix[:, -1] == 0).all()
  choices = ("5x5_MBConv6", "zero", "3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "zero")
  assert table.estimate(space, choices) == pytest.approx(
      1.5 + 0.56 + 2.33 + 3.36 + 4.53, rel=1e-12)
  one_hot = np.array([[op == c for op in space.candidates] for c in choices], np.float64)
  assert table.expected_ms(space, one_hot) == pytest.approx(table.estimate(space, choices))
  with pytest.raises(UserError, match="probs must be"):
    table.expected_ms(space, probs[:, :3])


def test_table_lookup_errors_are_user_errors():
  space = P.SearchSpace.demo()
  table = _hand_table(space)
  block = space.blocks()[0]
  with pytest.raises(UserError, match="unknown ProxylessNAS op"):
    table.latency(block, "9x9_MBConv2x")
  with pytest.raises(UserError, match="no entry"):
    table.latency(block, "7x7_MBConv6")
  with pytest.raises(UserError, match="cannot be 'zero'"):
    table.latency(block, "zero")
  assert table.latency(space.blocks()[1], "zero") == 0.0
  with pytest.raises(UserError, match="build a table for this space"):
    table.matrix(dataclasses.replace(space, image_size=64))


def test_mobile_trim_yaml_reader(tmp_path):
  # The reference's key format (latency_estimator.py), written out by hand for TINY.
  yaml_text = """\
Conv-input:8x8x3-output:8x8x8: {mean: 0.5, std: 0.01}
expanded_conv-input:8x8x8-output:8x8x8-expand:1-kernel:3-stride:1-idskip:0: {mean: 0.25}
expanded_conv-input:8x8x8-output:4x4x16-expand:3-kernel:3-stride:2-idskip:0: {mean: 2.0}
expanded_conv-input:4x4x16-output:4x4x16-expand:3-kernel:3-stride:1-idskip:1: {mean: 3.0}
expanded_conv-input:4x4x16-output:4x4x16-expand:6-kernel:7-stride:1-idskip:1: {mean: 9.0}
Conv_1-input:4x4x16-output:4x4x16: {mean: 0.125}
Logits-input:4x4x16-output:3: {mean: 0.0625}
"""
  path = tmp_path / "mobile_trim.yaml"
  path.write_text(yaml_text)
  table = P.BlockLatencyTable.from_mobile_trim_yaml(path, TINY, num_classes=3)
  assert table.fixed_ms == 0.5 + 0.25 + 0.125 + 0.0625
  assert len(table.entries) == 2  # only what TINY's candidates need
  assert table.estimate(TINY, ("3x3_MBConv3", "zero")) == 0.9375 + 2.0
  assert table.estimate(TINY, ("3x3_MBConv3", "3x3_MBConv3")) == 0.9375 + 5.0
  with pytest.raises(UserError, match="Logits-input:4x4x16-output:1000"):
    P.BlockLatencyTable.from_mobile_trim_yaml(path, TINY)  # 1000 classes: no such entry
  path.write_text(yaml_text.replace("stride:1-idskip:1: {mean: 3.0}", "stride:1-idskip:0: {}"))
  with pytest.raises(UserError, match="idskip:1"):
    P.BlockLatencyTable.from_mobile_trim_yaml(path, TINY, num_classes=3)


@pytest.fixture(scope="module")
def measured():
  """A table of TINY built in the same rounds as two whole networks (few repeats: shapes and
  bookkeeping are tested here, accuracy in the report)."""
  return P.check_block_latency_table(TINY, None, num_archs=2, seed=0, batch_size=2,
                                     num_classes=3, repeats=3, warmup=1,
                                     archs=[("3x3_MBConv3", "zero"),
                                            ("3x3_MBConv3", "3x3_MBConv3")])


def test_built_table_round_trips_through_json(measured, tmp_path):
  table = measured[0]
  blocks = TINY.blocks()
  assert set(table.entries) == {P.block_key(b, "3x3_MBConv3") for b in blocks}
  assert all(v >= 0 for v in table.entries.values()) and table.fixed_ms > 0
  assert table.batch_size == 2 and table.device["platform"] == jax.devices()[0].platform
  assert {"jax", "flax", "device_kind"} <= set(table.device)
  path = tmp_path / "table.json"
  table.save(path)
  loaded = P.BlockLatencyTable.load(path)
  assert loaded == table
  np.testing.assert_array_equal(loaded.matrix(TINY), table.matrix(TINY))
  path.write_text('{"entries": {}}')
  with pytest.raises(UserError, match="not a block latency table"):
    P.BlockLatencyTable.load(path)


def test_check_returns_table_predictions_and_measurements(measured):
  table, predicted, measured_ms, archs = measured
  assert archs == [("3x3_MBConv3", "zero"), ("3x3_MBConv3", "3x3_MBConv3")]
  assert predicted == [table.estimate(TINY, a) for a in archs]
  assert len(measured_ms) == 2 and min(measured_ms) > 0
  with pytest.raises(UserError, match="batch 2, not 1"):
    P.check_block_latency_table(TINY, table, num_archs=1, batch_size=1, num_classes=3)
  with pytest.raises(UserError, match="with 5 classes"):
    P.check_block_latency_table(TINY, table, num_archs=1, batch_size=2, num_classes=5)


def test_smallest_architecture_skips_what_it_can_and_takes_the_cheapest_mbconv():
  demo = P.SearchSpace.demo()
  assert demo.smallest() == ("3x3_MBConv3", "zero") * 3
  space = P.SearchSpace(candidates=("7x7_MBConv6", "5x5_MBConv6", "7x7_MBConv3"))
  assert set(space.smallest()) == {"7x7_MBConv3"}


def test_sample_draws_allowed_ops_reproducibly():
  space = P.SearchSpace()
  first = [space.sample(np.random.default_rng(3)) for _ in range(2)]
  assert first[0] == first[1]
  many = [space.sample(np.random.default_rng(s)) for s in range(30)]
  for arch in many:
    space.check_choices(arch)
  assert {a[1] for a in many} == set(P.OPS)  # zero is drawn where allowed
