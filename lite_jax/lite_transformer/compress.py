"""Compressed Lite Transformer: the paper's pruning + 8-bit quantization, which was never released.

The paper reports an 18.2x smaller model than Transformer-base with "fine-grained sensitivity
pruning" and 8-bit weights; no code exists (mit-han-lab/lite-transformer #4, #11, #26). This is
that pipeline, in the spirit of Deep Compression, on a model `--mode=train` left in the workdir:

1. **Sensitivity.** Every weight tensor type (the same matrix of every layer, e.g.
   'encoder/layer_*/ffn/hidden/kernel', and the embedding table) is pruned alone, element-wise
   by magnitude, at each of `compress.probe_levels` and the validation loss measured on
   `compress.probe_batches` batches. Grouping by type rather than by layer keeps the probes
   few and makes the chosen levels transferable to a deeper or wider model (step 5).
2. **Choice.** Each group gets the largest probed sparsity whose loss rise stays within
   `compress.tolerance` (nats/token), or, with `compress.target_sparsity`, the smallest common
   tolerance whose choices prune that fraction of all weights.
3. **Fine-tuning** through `core.loop` (checkpoints, exact resume, metrics): masks fixed, the
   masked weights re-zeroed after every optimizer step inside the jitted step, and the forward
   pass on the fake-quantized weights (quantization-aware, straight-through rounding), so the
   model learns the exact weights it is evaluated and sized with.
4. **Evaluation** of the pruned + quantized weights: validation loss and test BLEU, and a size
   report that counts exactly those tensors (`nn.sparsity.storage_report`): every kernel and
   the (shared) embedding table stored as a bitmask + 8-bit codes of the nonzeros, or dense
   8-bit codes when that is smaller, plus one float32 scale per tensor (symmetric, per-tensor
   quantization); biases, LayerNorm parameters and lightweight-conv taps (a softmax's inputs,
   where zero is not "off") stay dense float32.
5. **Sizes against Transformer-base** (d 512, FFN 2048, 6+6 layers, fp32) of the same
   vocabulary, built abstractly; and, for `compress.extrapolate_to` (e.g. the paper's
   `wmt14_enfr_lite_d496`), the size its architecture would have at the groups' sparsities
   chosen here: an extrapolation of the pruning level, not a measured BLEU.

Outputs in `<workdir>/compress/`: `checkpoints/` (the fine-tuned float weights, zero where
pruned; quantizing them is deterministic), `metrics.jsonl`, `analysis.json` (the sensitivity
curves and the uncompressed model's scores, reused by a rerun), `sensitivity.png`,
`size_report.json` + `size_report.txt` and `test.hyp`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from matplotlib import colormaps

from data import translation
from lite_jax import core
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import train
from lite_jax.lite_transformer.model import EncoderDecoder
from lite_jax.nn import sparsity

# The paper's claim (arXiv 2004.11886 abstract): Lite Transformer with pruning + 8-bit
# quantization is 18.2x smaller than Transformer-base.
PAPER_SIZE_RATIO = 18.2
TRANSFORMER_BASE = {"kind": "transformer", "d_model": 512, "ffn_dim": 2048, "num_layers": 6,
                    "num_heads": 8, "encoder_attention_heads": 8}


# ------------------------------------------------------------------------------------------
# Which tensors, in which groups
# ------------------------------------------------------------------------------------------


def is_compressible(name: str) -> bool:
  """Kernels and embedding tables, except lightweight-conv taps (softmax inputs)."""
  return sparsity.is_weight(name) and not name.endswith("/conv/kernel")


def group_of(name: str) -> str:
  """The tensor type a leaf belongs to: its name with the layer index replaced by '*'."""
  return re.sub(r"layer_\d+", "layer_*", name)


def weight_groups(params: Any) -> dict[str, list[str]]:
  """group -> the compressible leaf names in it (sorted by group)."""
  groups: dict[str, list[str]] = {}
  for name in sparsity.named_leaves(params):
    if is_compressible(name):
      groups.setdefault(group_of(name), []).append(name)
  return dict(sorted(groups.items()))


def compressed_params(params: Any, masks: Mapping[str, jax.Array], bits: int) -> Any:
  """The weights the compressed model computes with: masked, then quantized to `bits`."""
  return sparsity.quantize_weights(sparsity.apply_masks(params, masks), masks, bits)


def _abstract_params(config: ml_collections.ConfigDict, vocab_size: int) -> Any:
  model = EncoderDecoder(train.model_config(config, vocab_size))
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  return nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens))["params"]


def transformer_base_bytes(config: ml_collections.ConfigDict, vocab_size: int
                           ) -> dict[str, int]:
  """fp32 bytes of Transformer-base with `config`'s vocabulary and embedding sharing: all
  parameters, and without embedding tables (the papers' parameter convention)."""
  base = config.copy_and_resolve_references()
  with base.unlocked():
    base.model.update(TRANSFORMER_BASE)
  counts = train.param_counts(_abstract_params(base, vocab_size))
  return {"all": 4 * counts["params_total"], "no_embeddings": 4 * counts["params"]}


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------


def finetune_step(state: core.TrainState, batch: dict[str, jax.Array],
                  masks: dict[str, jax.Array], *, model: EncoderDecoder, label_smoothing: float,
                  bits: int) -> tuple[core.TrainState, dict[str, jax.Array]]:
  """One micro-batch of quantization-aware training with fixed pruning masks.

  The loss sees the masked, fake-quantized weights (rounding passes gradients straight
  through); after the optimizer step the masked weights are zeroed again, so they stay zero
  whatever the optimizer does with them.
  """
  def loss(params):
    return train.token_loss(compressed_params(params, masks, bits), model, batch,
                       label_smoothing=label_smoothing, dropout_key=state.step_key())
  grads, sums = jax.grad(loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads)
  return state.replace(params=sparsity.apply_masks(state.params, masks)), sums


# ------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Context:
  config: ml_collections.ConfigDict
  workdir: str
  out: str
  task: train.Task
  setup: Any  # train.ModelSetup

  def valid_loss(self, params, batches: int | None = None) -> float:
    config = self.config
    if batches is not None:
      config = config.copy_and_resolve_references()
      with config.unlocked():
        config.train.eval_batches = batches
    return train.validation_loss(params, self.setup, self.task, config)["valid_loss"]

  def bleu(self, params) -> tuple[dict[str, float], list[str]]:
    records = self.task.splits["test"]
    if self.config.eval.max_examples:
      records = [records[i] for i in range(min(self.config.eval.max_examples, len(records)))]
    hyps, refs = train.decode_records(self.config, self.task, self.setup, params, records)
    return train.bleu_scores(hyps, refs, self.config), hyps


def _check_settings(c: ml_collections.ConfigDict) -> None:
  levels = list(c.probe_levels)
  if not levels or levels != sorted(levels) or not 0.0 < levels[0] or levels[-1] >= 1.0:
    raise UserError(f"compress.probe_levels must be ascending sparsities in (0, 1), got "
                    f"{levels}.")
  if not 2 <= c.bits <= 8:
    raise UserError(f"compress.bits must be between 2 and 8 (codes stored in at most a byte), "
                    f"got {c.bits}.")
  if c.finetune_updates < 1 or c.probe_batches < 1:
    raise UserError("compress.finetune_updates and compress.probe_batches must be positive.")
  if not 0.0 <= c.target_sparsity < 1.0 or c.tolerance < 0.0:
    raise UserError(f"compress.target_sparsity must be in [0, 1) and compress.tolerance >= 0, "
                    f"got {c.target_sparsity} and {c.tolerance}.")


def _trained_step(config: ml_collections.ConfigDict, workdir: str) -> int:
  """The finished training run's last step; a `UserError` if there is none (checked before
  any data is prepared)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory) or not os.listdir(directory):
    raise UserError(f"{workdir} holds no trained model to compress; train first "
                    f"(--mode=train) with this workdir and config.")
  with core.Checkpointer(directory) as ckpt:
    step = ckpt.latest_step
  total = config.optim.total_updates * config.optim.grad_accum_steps
  if step is None or step < total:
    raise UserError(f"training in {workdir} stopped at step {step} of {total}; finish it "
                    f"(--mode=train) before compressing.")
  return step


def _analysis(ctx: _Context, trained, groups, trained_step: int) -> dict[str, Any]:
  """Sensitivity curves and the uncompressed model's scores, computed once per settings and
  kept in `analysis.json` (a resumed or repeated compression skips them)."""
  c = ctx.config.compress
  settings = {"probe_levels": list(c.probe_levels), "probe_batches": c.probe_batches,
              "trained_step": trained_step, "groups": list(groups)}
  path = os.path.join(ctx.out, "analysis.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved["settings"] == settings:
      return saved
  probe = functools.partial(ctx.valid_loss, batches=c.probe_batches)
  curves = sparsity.sensitivity_scan(
      trained, groups, c.probe_levels, probe,
      progress=lambda items: core.progress(items, desc="sensitivity"))
  scores, _ = ctx.bleu(trained)
  analysis = {"settings": settings, "probe_baseline_loss": probe(trained), "curves": curves,
              "valid_loss_before": ctx.valid_loss(trained), "bleu_before": scores["bleu"],
              "tok_bleu_before": scores["tok_bleu"]}
  if jax.process_index() == 0:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(analysis, f, indent=1)
  return analysis


def _plot_sensitivity(path: str, levels: Sequence[float], analysis: dict[str, Any],
                      chosen: Mapping[str, float], tolerance: float) -> None:
  figure, ax = core.plots.subplots(figsize=(9, 5))
  ax.set_prop_cycle(color=colormaps["tab20"].colors)  # a color per group (up to 20)
  baseline = analysis["probe_baseline_loss"]
  for group, curve in analysis["curves"].items():
    line, = ax.plot([0.0, *levels], [baseline, *curve], marker=".", linewidth=1,
                    label=f"{group.replace('layer_*/', '')} ({chosen[group]:.0%})")
    ax.plot([chosen[group]], [baseline if chosen[group] == 0 else
                              curve[list(levels).index(chosen[group])]],
            marker="o", color=line.get_color())
  ax.axhline(baseline + tolerance, color="gray", linestyle="--", linewidth=1,
             label=f"tolerance (+{tolerance:.3g})")
  ax.set_yscale("log")
  ax.set_xlabel("sparsity of the group alone (no fine-tuning)")
  ax.set_ylabel("validation loss (nats/token)")
  ax.set_title("Pruning sensitivity per weight type (o = chosen)")
  ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
  core.plots.save(figure, path)


def _check_same_settings(directory: str, config: ml_collections.ConfigDict) -> None:
  """A `UserError` if `directory` holds a fine-tuning begun with other compress settings
  (its masks would not be the ones these settings choose)."""
  if not os.path.isdir(directory) or not os.listdir(directory):
    return
  with core.Checkpointer(directory) as ckpt:
    saved = ckpt.restore_config().get("compress", {}) if ckpt.latest_step is not None else None
  if saved is None:
    return
  current = json.loads(json.dumps(config.compress.to_dict()))
  changed = sorted(k for k in current if k != "extrapolate_to" and saved.get(k) != current[k])
  if changed:
    raise UserError(f"{directory} holds a fine-tuning with other compress settings "
                    f"({', '.join('compress.' + k for k in changed)}); rerun with those, or "
                    f"remove {os.path.dirname(directory)} to compress again.")


def _finetune(ctx: _Context, trained, masks) -> core.LoopResult:
  config, c = ctx.config, ctx.config.compress
  _check_same_settings(os.path.join(ctx.out, "checkpoints"), config)
  optim = config.optim.copy_and_resolve_references()
  optim.update({"schedule": "cosine", "learning_rate": c.learning_rate, "warmup_steps": 0,
                "total_updates": c.finetune_updates})
  tx, schedule = core.make_optimizer(optim)
  dropout_key = core.stream_key(config.seed, 2)
  initial = core.TrainState.create(jax.jit(sparsity.apply_masks)(trained, masks), tx,
                                   dropout_key)
  mesh = ctx.setup.mesh
  batches = translation.make_batches(
      ctx.task.splits["train"], ctx.task.tokenizer, batch_tokens=config.data.batch_tokens,
      max_len=config.data.max_len, bucket_boundaries=config.data.bucket_boundaries,
      batch_multiple=mesh.shape["data"], seed=config.seed + 1,
      process_index=jax.process_index(), process_count=jax.process_count())
  accum = optim.grad_accum_steps
  evaluate = jax.jit(compressed_params, static_argnums=2)
  loop = core.TrainLoop(
      directory=ctx.out,
      step_fn=functools.partial(finetune_step, model=ctx.setup.model,
                                label_smoothing=optim.label_smoothing, bits=c.bits),
      batches=batches, total_steps=c.finetune_updates * accum, intervals=config.train,
      mesh=mesh, rules=ctx.setup.rules, config=config, step_args=(masks,),
      summarize=train.summarize_tokens,
      learning_rate=lambda step: schedule(step // accum),
      evaluate=lambda state: {"valid_loss": ctx.valid_loss(evaluate(state.params, masks,
                                                                    c.bits))},
      per_process_batches=True, name="finetune")
  # Only the schedule differs from training's optimizer, so the fine-tuning state has the
  # training state's structure, and its shapes and shardings on the mesh.
  return core.loop.run(loop, ctx.setup.state.replace(tx=tx), lambda: initial)


def _group_rows(report: Sequence[sparsity.LeafStorage]) -> list[dict[str, Any]]:
  rows: dict[str, dict[str, Any]] = {}
  for leaf in report:
    key = group_of(leaf.name) if is_compressible(leaf.name) else "other (biases, norms: fp32)"
    row = rows.setdefault(key, {"group": key, "elements": 0, "nonzeros": 0, "bytes_fp32": 0,
                                "bytes": 0})
    row["elements"] += int(np.prod(leaf.shape))
    row["nonzeros"] += leaf.nonzeros
    row["bytes_fp32"] += leaf.bytes_fp32
    row["bytes"] += leaf.bytes
  for row in rows.values():
    row["sparsity"] = round(1.0 - row["nonzeros"] / max(row["elements"], 1), 4)
  return sorted(rows.values(), key=lambda r: r["group"].startswith("other"))


def _totals(report: Sequence[sparsity.LeafStorage], *, embeddings: bool = True
            ) -> dict[str, Any]:
  leaves = [x for x in report if embeddings or "embedding" not in x.name]
  weights = [x for x in leaves if is_compressible(x.name)]
  elements = sum(int(np.prod(x.shape)) for x in weights)
  return {"bytes_fp32": sum(x.bytes_fp32 for x in leaves),
          "bytes_compressed": sum(x.bytes for x in leaves),
          "sparsity": 1.0 - sum(x.nonzeros for x in weights) / max(elements, 1)}


def _table(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, Any]) -> str:
  lines = [f"{'weight group':<58} {'elements':>10} {'sparsity':>8} {'fp32 B':>10} "
           f"{'stored B':>10} {'ratio':>6}"]
  for r in [*rows, {"group": "total", "elements": sum(r["elements"] for r in rows),
                    "sparsity": totals["sparsity"], "bytes_fp32": totals["bytes_fp32"],
                    "bytes": totals["bytes_compressed"]}]:
    lines.append(f"{r['group']:<58} {r['elements']:>10} {r['sparsity']:>8.1%} "
                 f"{r['bytes_fp32']:>10} {r['bytes']:>10} "
                 f"{r['bytes_fp32'] / max(r['bytes'], 1):>5.1f}x")
  return "\n".join(lines)


def extrapolate(spec: str, group_sparsity: Mapping[str, float], bits: int) -> dict[str, Any]:
  """The size of the model of config `spec` ('path.py:preset') at these groups' sparsities
  (groups it has that are not listed: quantized, unpruned) and `bits`, against Transformer-base
  fp32 of its vocabulary; nothing is trained or measured."""
  target = core.app.load_config(spec)
  shapes = _abstract_params(target, target.data.vocab_size)
  sparsities = {name: group_sparsity.get(group_of(name), 0.0)
                for names in weight_groups(shapes).values() for name in names}
  report = sparsity.expected_storage(shapes, sparsities, bits)
  base = transformer_base_bytes(target, target.data.vocab_size)
  totals, no_embed = _totals(report), _totals(report, embeddings=False)
  return {"config": spec, "bytes_fp32": totals["bytes_fp32"],
          "bytes_compressed": totals["bytes_compressed"], "sparsity": totals["sparsity"],
          "size_ratio_vs_transformer_base": base["all"] / totals["bytes_compressed"],
          "size_ratio_vs_transformer_base_no_embeddings":
              base["no_embeddings"] / no_embed["bytes_compressed"],
          "paper_size_ratio_vs_transformer_base": PAPER_SIZE_RATIO,
          "note": "extrapolated pruning level (the sparsities chosen here applied to this "
                  "architecture); no model of this config was compressed or evaluated"}


def compress_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Prunes, quantizes, fine-tunes and evaluates the workdir's trained model (see the module
  docstring); outputs go to `<workdir>/compress/`.

  Args:
    config: a `experiments/configs/wmt_lite.py` config (its `compress` section).
    workdir: the training run's workdir; rerunning resumes the fine-tuning.

  Returns:
    bleu_before/after (sacreBLEU; tok_bleu_* too), valid_loss_before/after, bytes_fp32 and
    bytes_compressed of this model, size_ratio, sparsity (of the compressible weights),
    size_ratio_vs_transformer_base and, with `compress.extrapolate_to`, the extrapolated ratio
    of that config next to the paper's 18.2.
  """
  c = config.compress
  _check_settings(c)
  out = os.path.join(workdir, "compress")
  trained_step = _trained_step(config, workdir)
  task = train.prepare_task(config, workdir)
  setup = train.setup_model(config, task.tokenizer.vocab_size)
  trained = train.load_params(config, setup, workdir)
  os.makedirs(out, exist_ok=True)
  ctx = _Context(config, workdir, out, task, setup)
  groups = weight_groups(trained)
  analysis = _analysis(ctx, trained, groups, trained_step)
  leaves = sparsity.named_leaves(trained)
  sizes = {g: sum(leaves[n].size for n in names) for g, names in groups.items()}
  chosen, tolerance = sparsity.choose_sparsities(
      analysis["curves"], list(c.probe_levels), analysis["probe_baseline_loss"],
      tolerance=c.tolerance, sizes=sizes, target_sparsity=c.target_sparsity)
  if jax.process_index() == 0:
    _plot_sensitivity(os.path.join(out, "sensitivity.png"), list(c.probe_levels), analysis,
                      chosen, tolerance)
  masks = sparsity.magnitude_masks(
      trained, {name: chosen[g] for g, names in groups.items() for name in names})
  run = _finetune(ctx, trained, masks)
  total_steps = c.finetune_updates * config.optim.grad_accum_steps
  if run.step < total_steps:
    raise core.StoppedEarly("compress fine-tuning", run.step, total_steps)
  final = jax.device_get(compressed_params(run.state.params, masks, c.bits))
  scores, hyps = ctx.bleu(final)
  report = sparsity.storage_report(final, masks, c.bits)
  totals = _totals(report)
  base = transformer_base_bytes(config, task.tokenizer.vocab_size)
  result = {
      "bleu_before": analysis["bleu_before"], "bleu_after": scores["bleu"],
      "tok_bleu_before": analysis["tok_bleu_before"], "tok_bleu_after": scores["tok_bleu"],
      "valid_loss_before": analysis["valid_loss_before"],
      "valid_loss_after": (run.validation["valid_loss"] if "valid_loss" in run.validation
                           else ctx.valid_loss(final)),
      **totals, "size_ratio": totals["bytes_fp32"] / totals["bytes_compressed"],
      "bytes_transformer_base_fp32": base["all"],
      "size_ratio_vs_transformer_base": base["all"] / totals["bytes_compressed"],
      "bits": c.bits, "tolerance": tolerance, "finetune_steps": run.step}
  extrapolated = extrapolate(c.extrapolate_to, chosen, c.bits) if c.extrapolate_to else None
  if extrapolated:
    result.update({"extrapolated_config": c.extrapolate_to,
                   "extrapolated_size_ratio_vs_transformer_base":
                       extrapolated["size_ratio_vs_transformer_base"],
                   "extrapolated_size_ratio_vs_transformer_base_no_embeddings":
                       extrapolated["size_ratio_vs_transformer_base_no_embeddings"],
                   "paper_size_ratio_vs_transformer_base": PAPER_SIZE_RATIO})
  if jax.process_index() == 0:
    _write_report(out, result, report, chosen, extrapolated, hyps)
  return result


def _write_report(out, result, report, chosen, extrapolated, hyps) -> None:
  rows = _group_rows(report)
  table = _table(rows, result)
  r, e = result, extrapolated
  summary = (f"{r['bytes_fp32']} B fp32 -> {r['bytes_compressed']} B ({r['size_ratio']:.1f}x "
             f"smaller, {r['size_ratio_vs_transformer_base']:.1f}x vs Transformer-base fp32); "
             f"BLEU {r['bleu_before']:.2f} -> {r['bleu_after']:.2f}")
  if e:
    summary += (f"\n{e['config']}: {e['size_ratio_vs_transformer_base']:.1f}x vs "
                f"Transformer-base fp32 ({e['size_ratio_vs_transformer_base_no_embeddings']:.1f}x "
                f"without embeddings) at these sparsities, EXTRAPOLATED (no BLEU measured); "
                f"paper: {PAPER_SIZE_RATIO}x")
  logging.info("compressed model:\n%s\n%s", table, summary)
  with open(os.path.join(out, "size_report.txt"), "w", encoding="utf-8") as f:
    f.write(f"{table}\n{summary}\n")
  storage = ("kernels and embeddings: bitmask (1 bit per element) + the nonzeros' codes, or "
             "dense codes when smaller, + one float32 scale per tensor (symmetric, per-tensor "
             "linear quantization); biases, norms and lightweight-conv taps: dense float32")
  with open(os.path.join(out, "size_report.json"), "w", encoding="utf-8") as f:
    json.dump({"summary": result, "storage_format": storage, "group_sparsity": chosen,
               "groups": rows, "leaves": [dict(dataclasses.asdict(x), sparsity=x.sparsity)
                                          for x in report],
               "extrapolation": extrapolated}, f, indent=1)
  with open(os.path.join(out, "test.hyp"), "w", encoding="utf-8") as f:
    f.writelines(h + "\n" for h in hyps)
