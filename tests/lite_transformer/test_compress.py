"""Tests of pruning, quantization and size accounting (`nn.sparsity`) and of the Lite
Transformer compression mode end to end on the tiny preset."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import wmt_lite
from lite_jax import core
from lite_jax.lite_transformer import compress, train
from lite_jax.nn import sparsity

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(**overrides):
  config = wmt_lite.get_config("tiny")
  # Prune for sure: the tiny model is barely trained, so no tolerance would hold.
  config.update_from_flattened_dict({"compress.target_sparsity": 0.6, **overrides})
  return config


def _launch(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.wmt_lite", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=600)


# --- Masks, quantization, accounting --------------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 0.3, 0.5, 0.75, 0.9, 1.0])
def test_magnitude_mask_prunes_exactly_the_smallest(level):
  # Few distinct magnitudes: ties must not change how many are pruned.
  weight = jax.random.randint(jax.random.PRNGKey(0), (24, 10), -5, 6).astype(jnp.float32)
  mask = np.asarray(sparsity.magnitude_mask(weight, level))
  assert mask.shape == weight.shape
  assert (~mask).sum() == round(level * weight.size)
  magnitudes = np.abs(np.asarray(weight))
  if 0 < level < 1:
    assert magnitudes[~mask].max() <= magnitudes[mask].min()


def test_masks_hit_each_leafs_sparsity_and_zero_only_those():
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  params = {"a": {"kernel": jax.random.normal(keys[0], (16, 12)),
                  "bias": jax.random.normal(keys[1], (12,))},
            "b": {"kernel": jax.random.normal(keys[2], (7, 9))}}
  requested = {"a/kernel": 0.25, "b/kernel": 0.8}
  masks = sparsity.magnitude_masks(params, requested)
  pruned = sparsity.named_leaves(sparsity.apply_masks(params, masks))
  for name, level in requested.items():
    assert (pruned[name] == 0).sum() == round(level * pruned[name].size)
  np.testing.assert_array_equal(pruned["a/bias"], params["a"]["bias"])
  with pytest.raises(ValueError, match="lacks"):
    sparsity.magnitude_masks(params, {"c/kernel": 0.5})


def test_storage_report_matches_a_hand_count():
  kernel = np.zeros((10, 8), np.float32)
  kernel.flat[::4] = 1.5  # 20 of 80 nonzero
  params = {"dense": {"kernel": kernel, "bias": np.ones(8, np.float32)},
            "embed": {"embedding": np.ones((4, 4), np.float32)}}
  report = {x.name: x for x in sparsity.storage_report(
      params, ["dense/kernel", "embed/embedding"], bits=8)}
  # kernel: 80 mask bits = 10 B + 20 one-byte codes + a 4-byte scale (dense would be 84 B).
  assert (report["dense/kernel"].bytes, report["dense/kernel"].format) == (34, "bitmask")
  assert report["dense/kernel"].sparsity == 0.75
  # embedding: nothing pruned, so 16 dense codes + scale beat 2 + 16 + 4.
  assert (report["embed/embedding"].bytes, report["embed/embedding"].format) == (20, "dense")
  assert (report["dense/bias"].bytes, report["dense/bias"].format) == (32, "float32")
  assert sum(x.bytes_fp32 for x in report.values()) == 4 * (80 + 8 + 16)
  four_bit = {x.name: x.bytes for x in sparsity.storage_report(params, ["dense/kernel"], 4)}
  assert four_bit["dense/kernel"] == 10 + 10 + 4
  assert four_bit["embed/embedding"] == 64  # not compressed: fp32
  shapes = jax.eval_shape(lambda: params)
  expected = {x.name: x.bytes for x in sparsity.expected_storage(
      shapes, {"dense/kernel": 0.75, "embed/embedding": 0.0}, 8)}
  assert expected == {k: v.bytes for k, v in report.items()}


def test_8_bit_weights_have_at_most_255_values_on_a_symmetric_grid():
  params = {"w": {"kernel": jax.random.normal(jax.random.PRNGKey(2), (300, 200)) * 3.0}}
  quantized = np.asarray(sparsity.quantize_weights(params, ["w/kernel"], 8)["w"]["kernel"])
  values = np.unique(quantized)
  assert len(values) <= 255
  scale = np.abs(np.asarray(params["w"]["kernel"])).max() / 127
  np.testing.assert_allclose(values / scale, np.round(values / scale), atol=1e-3)
  np.testing.assert_allclose(quantized, params["w"]["kernel"], atol=scale / 2 + 1e-6)


def test_choose_sparsities_by_tolerance_and_by_target():
  levels = [0.5, 0.7, 0.9]
  curves = {"robust": [1.00, 1.01, 1.30], "fragile": [1.20, 2.00, 3.00],
            "bumpy": [1.01, 1.50, 1.02]}
  chosen, tol = sparsity.choose_sparsities(curves, levels, 1.0, tolerance=0.05)
  assert chosen == {"robust": 0.7, "fragile": 0.0, "bumpy": 0.5}  # stops at the first rise
  assert tol == 0.05
  sizes = {"robust": 100, "fragile": 100, "bumpy": 100}
  chosen, tol = sparsity.choose_sparsities(curves, levels, 1.0, tolerance=0.05, sizes=sizes,
                                           target_sparsity=0.5)
  # Rises 0, .01, .02 prune 50, 120, 120 of 300 weights; 0.2 is the first to reach 150.
  assert tol == pytest.approx(0.2)
  assert chosen == {"robust": 0.7, "fragile": 0.5, "bumpy": 0.5}


# --- The compress mode end to end -----------------------------------------------------------


class _Warnings(logging.Handler):
  """Collects the library's absl warnings (the loop reports a resume as one)."""

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
  """A tiny trained model, compressed by a run stopped after 2 of 4 fine-tuning steps (as a
  preempted job) and resumed by a second run. In process: a launcher subprocess would
  compile everything again, and the launcher's result line is tested in `tests/core`."""
  workdir = str(tmp_path_factory.mktemp("compress"))
  train.train_and_evaluate(_tiny(), workdir)
  with pytest.raises(core.StoppedEarly):
    compress.compress_and_evaluate(_tiny(**{"train.steps_per_run": 2}), workdir)
  warnings, absl_logger = _Warnings(), logging.getLogger("absl")
  absl_logger.addHandler(warnings)
  try:
    result = compress.compress_and_evaluate(_tiny(), workdir)
  finally:
    absl_logger.removeHandler(warnings)
  assert any(m.startswith("finetune: resuming from step 2") for m in warnings.messages), (
      warnings.messages)
  return workdir, json.loads(json.dumps(result))


def test_compress_writes_the_report_and_the_result_line(compressed):
  workdir, result = compressed
  out = os.path.join(workdir, "compress")
  for name in ("size_report.json", "size_report.txt", "sensitivity.png", "analysis.json",
               "metrics.jsonl", "test.hyp"):
    assert os.path.isfile(os.path.join(out, name)), name
  with open(os.path.join(out, "size_report.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert sum(x["bytes"] for x in report["leaves"]) == result["bytes_compressed"]
  assert sum(x["bytes_fp32"] for x in report["leaves"]) == result["bytes_fp32"]
  assert result["size_ratio"] == pytest.approx(result["bytes_fp32"] / result["bytes_compressed"])
  assert result["sparsity"] >= 0.6
  assert result["size_ratio"] > 4.0  # 8-bit alone gives < 4x; the masks must count
  # Transformer-base at d 512 dwarfs the tiny model.
  assert result["size_ratio_vs_transformer_base"] > 1000
  assert result["finetune_steps"] == 4
  assert 0.0 <= result["bleu_after"] <= 100.0 and 0.0 <= result["bleu_before"] <= 100.0
  with core.Checkpointer(os.path.join(out, "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [2, 4]


def _restored(workdir):
  config = _tiny()
  setup = train.setup_model(config, train.prepare_task(config, workdir).tokenizer.vocab_size)
  trained = train.load_params(config, setup, workdir)
  finetuned = core.restore_finished(os.path.join(workdir, "compress", "checkpoints"),
                                    setup.state, "compress").params
  return trained, finetuned


def test_pruned_weights_stay_zero_after_finetuning_and_are_8_bit(compressed):
  workdir, _ = compressed
  with open(os.path.join(workdir, "compress", "size_report.json"), encoding="utf-8") as f:
    chosen = json.load(f)["group_sparsity"]
  trained, finetuned = _restored(workdir)
  groups = compress.weight_groups(trained)
  masks = sparsity.magnitude_masks(
      trained, {n: chosen[g] for g, names in groups.items() for n in names})
  tuned = sparsity.named_leaves(finetuned)
  before = sparsity.named_leaves(trained)
  final = sparsity.named_leaves(compress.compressed_params(finetuned, masks, 8))
  for name, mask in masks.items():
    mask = np.asarray(mask)
    assert not np.asarray(tuned[name])[~mask].any(), name
    assert (~mask).sum() == round(chosen[compress.group_of(name)] * mask.size)
    assert len(np.unique(np.asarray(final[name]))) <= 255, name
  assert any(not np.allclose(tuned[n], before[n]) for n in masks)  # fine-tuning moved them


def test_compress_without_a_trained_model_is_one_sentence_and_exit_2(tmp_path):
  run = _launch("--config=experiments/configs/wmt_lite.py:tiny", f"--workdir={tmp_path}",
                "--mode=compress")
  assert run.returncode == 2
  assert run.stderr.strip().splitlines() == [
      f"error: {tmp_path} holds no trained model to compress; train first (--mode=train) "
      f"with this workdir and config."]


def test_transformer_base_and_extrapolated_sizes():
  config = _tiny()
  base = compress.transformer_base_bytes(config, 160)
  assert base["no_embeddings"] == pytest.approx(4 * 44.1e6, rel=0.01)  # the paper's count
  assert base["all"] - base["no_embeddings"] == 4 * 160 * 512  # one shared table
  unpruned = compress.extrapolate(f"{REPO}/experiments/configs/wmt_lite.py:tiny", {}, 8)
  # 8-bit, unpruned: just under 4x smaller than the same model in fp32 (fp32 biases, norms).
  assert 3.0 < unpruned["bytes_fp32"] / unpruned["bytes_compressed"] < 4.0
  assert unpruned["sparsity"] == 0.0
  assert unpruned["size_ratio_vs_transformer_base"] == pytest.approx(
      base["all"] / unpruned["bytes_compressed"])


def test_resuming_with_other_compress_settings_is_refused(compressed):
  workdir, _ = compressed
  with pytest.raises(core.UserError, match=r"other compress settings \(compress.tolerance\)"):
    compress.compress_and_evaluate(_tiny(**{"compress.tolerance": 0.5}), workdir)
